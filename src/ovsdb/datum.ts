/** RFC 7047 section 5.1 values: atoms, ["set", [...]], ["map", [[k, v], ...]], ["uuid", U]. */

export type Row = Record<string, unknown>;

export function uuidOf(v: unknown): string | undefined {
  return Array.isArray(v) && v[0] === 'uuid' && typeof v[1] === 'string' ? v[1] : undefined;
}

/** The elements of a set (a bare atom is a one-element set). */
export function setOf(v: unknown): unknown[] {
  if (Array.isArray(v) && v[0] === 'set' && Array.isArray(v[1])) return v[1] as unknown[];
  if (v === undefined || v === null) return [];
  return [v];
}

export function uuidSet(v: unknown): string[] {
  return setOf(v)
    .map(uuidOf)
    .filter((u): u is string => u !== undefined);
}

/** The one element of an optional value (set of 0 or 1), or undefined. */
export function optional<T>(v: unknown): T | undefined {
  const s = setOf(v);
  return s.length > 0 ? (s[0] as T) : undefined;
}

export function mapOf(v: unknown): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (Array.isArray(v) && v[0] === 'map' && Array.isArray(v[1])) {
    for (const kv of v[1] as unknown[]) if (Array.isArray(kv) && kv.length === 2) out.set(String(kv[0]), kv[1]);
  }
  return out;
}

export function strMap(v: unknown): Map<string, string> {
  const m = new Map<string, string>();
  for (const [k, x] of mapOf(v)) m.set(k, String(x));
  return m;
}

export const mkSet = (xs: unknown[]): unknown => ['set', xs];
export const mkMap = (o: Record<string, string | number>): unknown => ['map', Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))];
export const mkUuid = (u: string): unknown => ['uuid', u];
export const mkOptional = (v: unknown): unknown => (v === undefined || v === null ? ['set', []] : v);
export const whereUuid = (u: string): unknown[] => [['_uuid', '==', ['uuid', u]]];

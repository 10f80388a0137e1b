/**
 * Command-line option checking shared by every command (cli/, daemon/main.ts,
 * app/): the usage error type and the one numeric option parser. A leaf module
 * (imports nothing), so any layer's entry point may use it without an import
 * circle through src/cli.
 */

/** A bad command line: reported with the command's usage, exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Option --name as a number in min..max (an integer unless `integer` is false);
 * `dflt` when the option is absent. Throws UsageError naming the option.
 */
export function numberOption(v: unknown, name: string, min: number, max: number, dflt?: number, integer = true): number | undefined {
  if (v === undefined || v === null) return dflt;
  const n = typeof v === 'string' && v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}, got '${String(v)}'`);
  }
  return n;
}

/** Integer option --name in min..max, or dflt when absent. */
export function intOption(v: unknown, name: string, min: number, max: number, dflt: number): number;
export function intOption(v: unknown, name: string, min: number, max: number): number | undefined;
export function intOption(v: unknown, name: string, min: number, max: number, dflt?: number): number | undefined {
  return numberOption(v, name, min, max, dflt, true);
}

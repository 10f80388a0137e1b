/**
 * What the rest of the switch needs to know about tunnels without the VXLAN port itself (src/port/vxlan.ts,
 * loaded only when a vxlan port is opened): the default UDP port, the outer header's size, IPv4 text, and the
 * per-buffer tunnel metadata the datapath reads and writes. A leaf of the port layer.
 */
import type { Mempool } from '../mem/mempool.js';

export const VXLAN_DEFAULT_PORT = 4789;
/** Outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8). */
export const VXLAN_OVERHEAD = 50;
/** Dotted quad -> u32 (throws on bad input: control path). */
export function parseIpv4(s: string, what = 'address'): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s.trim());
  if (m === null) throw new RangeError(`${what} '${s}' is not an IPv4 address`);
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const b = Number(m[i]);
    if (b > 255) throw new RangeError(`${what} '${s}' is not an IPv4 address`);
    v = v * 256 + b;
  }
  return v >>> 0;
}

export function formatIpv4(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/**
 * Per-buffer tunnel metadata, indexed by pool handle: views of the pool's user words 0..2 in shared
 * memory, so a tunnel id set in one PMD thread (set_field:N->tun_id) reaches a tunnel port polled by
 * another with the handle. Written by a tunnel port's rx (decap) and by the datapath (0 for frames of
 * other ports, the program's id after set_tunnel); read by the datapath's flow key and a key=flow
 * port's tx.
 */
export class TunnelMeta {
  readonly tunId: Uint32Array;
  readonly tunSrc: Uint32Array;
  readonly tunDst: Uint32Array;
  constructor(pool: Mempool) {
    const u32 = (a: Int32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);
    this.tunId = u32(pool.user[0]);
    this.tunSrc = u32(pool.user[1]);
    this.tunDst = u32(pool.user[2]);
  }
}

const metaByPool = new WeakMap<Mempool, TunnelMeta>();
/** The tunnel metadata views for this pool object (one per thread; all over the same memory). */
export function tunnelMeta(pool: Mempool): TunnelMeta {
  let m = metaByPool.get(pool);
  if (m === undefined) {
    m = new TunnelMeta(pool);
    metaByPool.set(pool, m);
  }
  return m;
}


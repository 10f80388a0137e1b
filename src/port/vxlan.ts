/**
 * VXLAN tunnel port (RFC 7348): a Port whose frames travel inside
 * outer Ethernet/IPv4/UDP/VXLAN headers over an underlay kernel interface
 * (an AF_PACKET socket on a veth end or NIC, see af-packet.ts).
 *
 *   new VxlanPort(name, pool, { iface, remoteIp, localIp, key, dstPort?, nextHop?, netns? })
 *
 * The switch owns `localIp` on the underlay (the interface itself should have
 * no address): the port answers ARP requests for it and resolves the next
 * hop's MAC (the remote, or `nextHop` when a router is in between) by ARP,
 * also learning it from the outer source MAC of tunnel packets that come from
 * the next hop. Until the next hop is known, frames to send are dropped as
 * 'tx-neigh-unresolved' and an ARP request goes out (at most every 200 ms),
 * as OVS's tnl-neigh-cache does.
 *
 * rx: underlay frames that are IPv4 (no options, not fragmented) UDP from
 * remoteIp to localIp:dstPort with the VXLAN I flag and the port's VNI are
 * decapsulated in place (the inner frame starts 50 bytes later in the same
 * buffer); the outer source/destination and the VNI stay in the buffer's
 * metadata for the flow key (tun_src, tun_dst, tun_id; see lastTunnel). Anything else is counted
 * and freed: 'rx-not-tunnel' (not IPv4/UDP to our address and port: other
 * traffic on the underlay), 'rx-ip-options', 'rx-ip-fragment', 'rx-wrong-remote'
 * (another source address), 'rx-bad-vxlan' (I flag missing or too short),
 * 'rx-wrong-vni', 'rx-arp' (ARP handled here: not counted as received traffic).
 *
 * tx: the outer header (50 bytes) is written into the buffer's headroom (or
 * the frame moves forward when the headroom is short: 'tx-no-room' when
 * neither fits), the UDP source port is a hash of the inner Ethernet/IPv4/L4
 * header (49152..65535, so the underlay can spread flows), the outer IPv4
 * checksum is computed, the UDP checksum is 0 (allowed for IPv4, what Linux
 * sends by default). The DF bit is not set; frames longer than the underlay's
 * MTU allows (inner IP packet > underlay MTU - 50) are refused by the
 * underlay ('tx-too-big' here, counted before sending).
 * With `key: 'flow'` the VNI of each frame is taken from the pool's per-buffer
 * metadata (set by the datapath from set_field:N->tun_id), else it is the port's key.
 *
 * No allocation and no exceptions on the hot path.
 */
import type { Mempool } from '../mem/mempool.js';
import { AfPacketPort, finishL4Checksum } from './af-packet.js';
import { checksumFold, formatMacWords, onesComplementSum } from '../util/net.js';
import { countRxDrop, countTxDrop, newPortStats, PKT_F_CSUM_PARTIAL, type DropReason, type LinkState, type Port, type PortStats } from './port.js';
import { VXLAN_DEFAULT_PORT, VXLAN_OVERHEAD, parseIpv4, formatIpv4, tunnelMeta, type TunnelMeta } from './tunnel.js';

export { VXLAN_DEFAULT_PORT, VXLAN_OVERHEAD, parseIpv4, formatIpv4, TunnelMeta, tunnelMeta } from './tunnel.js';

/** Seconds-free ARP pacing: at most one request per this many ms while unresolved. */
const ARP_RETRY_MS = 200;

export interface VxlanPortOptions {
  /** Underlay kernel interface. */
  iface: string;
  /** Its network namespace (default: ours). */
  netns?: string;
  remoteIp: string;
  localIp: string;
  /** VNI (0..2^24-1), or 'flow': per packet from set_field:N->tun_id. Default 0. */
  key?: number | 'flow';
  /** UDP destination port (default 4789). */
  dstPort?: number;
  /** Next hop (a router) when the remote is not on the underlay's link (default: the remote). */
  nextHop?: string;
}

export class VxlanPort implements Port {
  readonly type = 'vxlan';
  readonly name: string;
  readonly nQueues = 1;
  readonly stats: PortStats = newPortStats();
  readonly remoteIp: number;
  readonly localIp: number;
  readonly nextHop: number;
  /** -1: VNI from per-packet metadata (key=flow). */
  readonly vni: number;
  readonly dstPort: number;
  readonly underlay: AfPacketPort;
  /** Inner MTU that fits the underlay without fragmentation (underlay MTU - 50). */
  readonly mtu: number;
  /** Tunnel metadata of received frames (pool handle -> tun_id/tun_src/tun_dst). */
  readonly meta: TunnelMeta;
  /** ARP: requests sent, replies sent, whether/when the next hop was resolved. */
  readonly arp = { requestsSent: 0, repliesSent: 0, resolved: false, learnedFrom: '' as '' | 'arp' | 'tunnel' };
  private readonly pool: Mempool;
  /** Next hop's MAC (valid when arp.resolved): high 16 bits, low 32 bits. */
  private nhHi = 0;
  private nhLo = 0;
  private readonly ourMac: Uint8Array;
  /** Outer header template (eth + ip + udp + vxlan). */
  private readonly tmpl = new Uint8Array(VXLAN_OVERHEAD);
  /** One's-complement sum of the template's IPv4 header without total length, id and checksum. */
  private ipSumBase = 0;
  private ipId = 0;
  private lastArpMs = 0;
  private readonly one = new Int32Array(1);
  private txLens = new Int32Array(64);
  private closed = false;
  /** Inner checksums finished on rx (the sender left them to offload). */
  csumFinished = 0;

  constructor(name: string, pool: Mempool, opts: VxlanPortOptions) {
    this.name = name;
    this.pool = pool;
    this.remoteIp = parseIpv4(opts.remoteIp, 'remote_ip');
    this.localIp = parseIpv4(opts.localIp, 'local_ip');
    this.nextHop = opts.nextHop !== undefined ? parseIpv4(opts.nextHop, 'next hop') : this.remoteIp;
    const key = opts.key ?? 0;
    if (key !== 'flow' && !(Number.isInteger(key) && key >= 0 && key < 1 << 24)) throw new RangeError(`key ${String(key)} must be a VNI in 0..16777215 or 'flow'`);
    this.vni = key === 'flow' ? -1 : key;
    const dp = opts.dstPort ?? VXLAN_DEFAULT_PORT;
    if (!(Number.isInteger(dp) && dp > 0 && dp < 65536)) throw new RangeError(`dst_port ${dp} must be in 1..65535`);
    this.dstPort = dp;
    if (pool.headroom < VXLAN_OVERHEAD) throw new RangeError(`pool headroom ${pool.headroom} is smaller than the ${VXLAN_OVERHEAD}-byte VXLAN header`);
    this.underlay = new AfPacketPort(`${name}-underlay`, pool, { iface: opts.iface, netns: opts.netns });
    this.ourMac = this.underlay.mac;
    this.mtu = this.underlay.mtu - VXLAN_OVERHEAD;
    this.meta = tunnelMeta(pool);
    this.buildTemplate();
  }

  private buildTemplate(): void {
    const t = this.tmpl;
    t.set(this.ourMac, 6);
    t[12] = 0x08; t[13] = 0x00;
    t[14] = 0x45; t[15] = 0; // IPv4, IHL 5, TOS 0
    // 16-17 total length, 18-19 id: per packet
    t[20] = 0; t[21] = 0; // no DF, offset 0
    t[22] = 64; t[23] = 17; // TTL, UDP
    // 24-25 checksum: per packet
    wr32(t, 26, this.localIp);
    wr32(t, 30, this.remoteIp);
    // 34-35 UDP source port: per packet
    t[36] = this.dstPort >>> 8; t[37] = this.dstPort & 255;
    // 38-39 UDP length: per packet; 40-41 checksum 0
    t[42] = 0x08; // I flag
    if (this.vni >= 0) { t[46] = this.vni >>> 16; t[47] = (this.vni >>> 8) & 255; t[48] = this.vni & 255; }
    // the header's sum with total length, id and checksum still 0: tx adds the first two per frame
    this.ipSumBase = onesComplementSum(t, 14, 20, 0);
  }

  get link(): LinkState {
    return this.closed ? 'down' : this.underlay.link;
  }

  get status(): string {
    const nh = formatIpv4(this.nextHop);
    const u = `underlay ${this.underlay.ifname}${this.underlay.netns !== undefined ? ` in ${this.underlay.netns}` : ''}`;
    return `${u}, ${this.arp.resolved ? `next hop ${nh} at ${formatMacWords(this.nhHi, this.nhLo)} (${this.arp.learnedFrom})` : `next hop ${nh} not resolved (ARP)`}`;
  }

  /** Underlay fd (readable when frames wait). */
  get fds(): readonly number[] {
    return this.underlay.fds;
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    if (q !== 0 || this.closed) return 0;
    const n = this.underlay.rxBurst(0, out, max);
    if (n === 0) return 0;
    const pool = this.pool;
    const d = pool.data;
    const meta = this.meta;
    const st = this.stats;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const h = out[i];
      const off = pool.dataOffset(h);
      const len = pool.dataLen[h];
      const why = this.classify(d, off, len, h);
      if (why === null) {
        const vni = (d[off + 46] << 16) | (d[off + 47] << 8) | d[off + 48];
        meta.tunId[h] = vni;
        meta.tunSrc[h] = rd32(d, off + 26);
        meta.tunDst[h] = rd32(d, off + 30);
        pool.dataOff[h] += VXLAN_OVERHEAD;
        pool.dataLen[h] = len - VXLAN_OVERHEAD;
        pool.pktLen[h] = len - VXLAN_OVERHEAD;
        // the remote's kernel left the inner checksum to offload (veth underlay): finish it as a NIC would
        if ((pool.flags[h] & PKT_F_CSUM_PARTIAL) !== 0) {
          pool.flags[h] &= ~PKT_F_CSUM_PARTIAL;
          if (finishL4Checksum(d, off + VXLAN_OVERHEAD, len - VXLAN_OVERHEAD)) this.csumFinished++;
        }
        st.rxPackets++;
        st.rxBytes += len - VXLAN_OVERHEAD;
        out[k++] = h;
      } else if (why !== '') {
        countRxDrop(st, why, 1);
        pool.freeOne(h);
      }
      // '' : consumed (ARP reply sent with this buffer, or freed)
    }
    return k;
  }

  /** null: a tunnel frame for us; '' : ARP, handled; else the drop reason. */
  private classify(d: Uint8Array, off: number, len: number, h: number): DropReason | '' | null {
    if (len < 14) return 'rx-not-tunnel';
    const type = (d[off + 12] << 8) | d[off + 13];
    if (type === 0x0806) {
      this.onArp(d, off, len, h);
      return '';
    }
    if (type !== 0x0800 || len < 34) return 'rx-not-tunnel';
    if (d[off + 23] !== 17 || rd32(d, off + 30) !== this.localIp) return 'rx-not-tunnel';
    if (d[off + 14] !== 0x45) return (d[off + 14] >>> 4) === 4 ? 'rx-ip-options' : 'rx-not-tunnel';
    if ((((d[off + 20] << 8) | d[off + 21]) & 0x3fff) !== 0) return 'rx-ip-fragment';
    if (len < 42 || ((d[off + 36] << 8) | d[off + 37]) !== this.dstPort) return 'rx-not-tunnel';
    if (rd32(d, off + 26) !== this.remoteIp) return 'rx-wrong-remote';
    if (len < VXLAN_OVERHEAD + 14 || (d[off + 42] & 0x08) === 0) return 'rx-bad-vxlan';
    if (this.vni >= 0 && ((d[off + 46] << 16) | (d[off + 47] << 8) | d[off + 48]) !== this.vni) return 'rx-wrong-vni';
    // learn the next hop's MAC from its tunnel traffic
    if (!this.arp.resolved && this.nextHop === this.remoteIp) {
      this.nhHi = (d[off + 6] << 8) | d[off + 7];
      this.nhLo = rd32(d, off + 8);
      this.arp.resolved = true;
      this.arp.learnedFrom = 'tunnel';
    }
    return null;
  }

  /** ARP on the underlay: learn the next hop, answer requests for our address (reusing buffer h). */
  private onArp(d: Uint8Array, off: number, len: number, h: number): void {
    const p = off + 14;
    if (len < 42 || ((d[p] << 8) | d[p + 1]) !== 1 || ((d[p + 2] << 8) | d[p + 3]) !== 0x0800 || d[p + 4] !== 6 || d[p + 5] !== 4) {
      this.pool.freeOne(h);
      return;
    }
    const op = (d[p + 6] << 8) | d[p + 7];
    const spa = rd32(d, p + 14);
    const tpa = rd32(d, p + 24);
    if (spa === this.nextHop && spa !== 0) {
      this.nhHi = (d[p + 8] << 8) | d[p + 9];
      this.nhLo = rd32(d, p + 10);
      this.arp.resolved = true;
      this.arp.learnedFrom = 'arp';
    }
    if (op !== 1 || tpa !== this.localIp) {
      this.pool.freeOne(h);
      return;
    }
    // the request becomes the reply: eth dst = requester, eth src = us; op 2; tha = sha, sha = us; tpa = spa, spa = us
    d.copyWithin(off, p + 8, p + 14);
    d.set(this.ourMac, off + 6);
    d[p + 7] = 2;
    d.copyWithin(p + 18, p + 8, p + 14);
    d.set(this.ourMac, p + 8);
    wr32(d, p + 24, spa);
    wr32(d, p + 14, this.localIp);
    this.pool.dataLen[h] = 42;
    this.pool.pktLen[h] = 42;
    this.one[0] = h;
    if (this.underlay.txBurst(0, this.one, 1) === 1) this.arp.repliesSent++;
    else this.pool.freeOne(h);
  }

  /** Broadcast an ARP request for the next hop (at most every ARP_RETRY_MS). */
  private sendArpRequest(): void {
    const now = Date.now();
    if (now - this.lastArpMs < ARP_RETRY_MS) return;
    this.lastArpMs = now;
    const pool = this.pool;
    const h = pool.allocOne();
    if (h < 0) return;
    const d = pool.data;
    const off = pool.dataOffset(h);
    d.fill(0xff, off, off + 6);
    d.set(this.ourMac, off + 6);
    d[off + 12] = 0x08; d[off + 13] = 0x06;
    const p = off + 14;
    d[p] = 0; d[p + 1] = 1; d[p + 2] = 0x08; d[p + 3] = 0; d[p + 4] = 6; d[p + 5] = 4; d[p + 6] = 0; d[p + 7] = 1;
    d.set(this.ourMac, p + 8);
    wr32(d, p + 14, this.localIp);
    d.fill(0, p + 18, p + 24);
    wr32(d, p + 24, this.nextHop);
    d.fill(0, p + 28, p + 46); // pad to 60 bytes
    pool.dataLen[h] = 60;
    pool.pktLen[h] = 60;
    this.one[0] = h;
    if (this.underlay.txBurst(0, this.one, 1) === 1) this.arp.requestsSent++;
    else pool.freeOne(h);
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    if (this.closed || q !== 0) {
      countTxDrop(this.stats, 'tx-closed', n);
      return 0;
    }
    if (!this.arp.resolved) {
      this.sendArpRequest();
      countTxDrop(this.stats, 'tx-neigh-unresolved', n);
      return 0;
    }
    if (n > this.txLens.length) this.txLens = new Int32Array(n);
    const pool = this.pool;
    const d = pool.data;
    const t = this.tmpl;
    const maxInner = this.mtu + 14;
    const flowVni = this.vni < 0;
    const tunId = this.meta.tunId;
    // encapsulate every frame; ones that cannot be are dropped here and the rest moved down
    let m = 0;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const h = handles[i];
      let inner = pool.dataLen[h];
      if (pool.next[h] >= 0 || inner !== pool.pktLen[h]) { this.txFree(h, 'tx-chained'); continue; }
      if (inner > maxInner) { this.txFree(h, 'tx-too-big'); continue; }
      if (inner < 14) { this.txFree(h, 'tx-runt'); continue; }
      let doff = pool.dataOff[h];
      if (doff < VXLAN_OVERHEAD) {
        // move the frame forward to make room in front (a frame that grew into the headroom)
        if (VXLAN_OVERHEAD + inner > pool.bufSize) { this.txFree(h, 'tx-no-room'); continue; }
        const b = pool.bufAddrOffset(h);
        d.copyWithin(b + VXLAN_OVERHEAD, b + doff, b + doff + inner);
        doff = VXLAN_OVERHEAD;
      }
      const innerOff = pool.bufAddrOffset(h) + doff;
      const hash = innerHash(d, innerOff, inner);
      const off = innerOff - VXLAN_OVERHEAD;
      d.set(t, off);
      d[off] = this.nhHi >>> 8; d[off + 1] = this.nhHi & 255; wr32(d, off + 2, this.nhLo);
      const totLen = inner + 36;
      const id = (this.ipId = (this.ipId + 1) & 0xffff);
      d[off + 16] = totLen >>> 8; d[off + 17] = totLen & 255;
      d[off + 18] = id >>> 8; d[off + 19] = id & 255;
      const cs = checksumFold(this.ipSumBase + totLen + id);
      d[off + 24] = cs >>> 8; d[off + 25] = cs & 255;
      const sport = 0xc000 | (hash & 0x3fff);
      d[off + 34] = sport >>> 8; d[off + 35] = sport & 255;
      const ulen = inner + 16;
      d[off + 38] = ulen >>> 8; d[off + 39] = ulen & 255;
      if (flowVni) { const v = tunId[h]; d[off + 46] = (v >>> 16) & 255; d[off + 47] = (v >>> 8) & 255; d[off + 48] = v & 255; }
      pool.dataOff[h] = doff - VXLAN_OVERHEAD;
      pool.dataLen[h] = inner + VXLAN_OVERHEAD;
      pool.pktLen[h] = inner + VXLAN_OVERHEAD;
      bytes += inner;
      this.txLens[m] = inner;
      handles[m++] = h;
    }
    if (m === 0) return n;
    const sent = this.underlay.txBurst(0, handles, m);
    const st = this.stats;
    st.txPackets += sent;
    if (sent === m) st.txBytes += bytes;
    else {
      let b = 0;
      for (let i = 0; i < sent; i++) b += this.txLens[i];
      st.txBytes += b;
      // every handle is ours now: the ones the underlay did not take are freed here
      for (let i = sent; i < m; i++) pool.freeOne(handles[i]);
      countTxDrop(st, 'tx-underlay-busy', m - sent);
    }
    return n;
  }

  private txFree(h: number, reason: DropReason): void {
    this.pool.freeOne(h);
    countTxDrop(this.stats, reason, 1);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.underlay.close();
  }
}

/** Flow hash of an inner frame: MACs, and IPv4 addresses and L4 ports when present (UDP source port entropy). */
function innerHash(d: Uint8Array, off: number, len: number): number {
  let h = Math.imul(rd32(d, off) ^ rd32(d, off + 4), 0x9e3779b1) ^ rd32(d, off + 8);
  if (len >= 38 && d[off + 12] === 0x08 && d[off + 13] === 0 && (d[off + 14] & 0xf0) === 0x40) {
    const ihl = (d[off + 14] & 15) * 4;
    h = Math.imul(h ^ rd32(d, off + 26), 0x85ebca6b);
    h = Math.imul(h ^ rd32(d, off + 30), 0xc2b2ae35);
    const proto = d[off + 23];
    if ((proto === 6 || proto === 17) && len >= 14 + ihl + 4) h = Math.imul(h ^ rd32(d, off + 14 + ihl), 0x27d4eb2f);
    h ^= proto;
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h >>> 0;
}

function rd32(d: Uint8Array, p: number): number {
  return ((d[p] << 24) | (d[p + 1] << 16) | (d[p + 2] << 8) | d[p + 3]) >>> 0;
}

function wr32(d: Uint8Array, p: number, v: number): void {
  d[p] = v >>> 24; d[p + 1] = (v >>> 16) & 255; d[p + 2] = (v >>> 8) & 255; d[p + 3] = v & 255;
}

/**
 * virtio-user port: our virtio-net driver (DPDK's virtio-pmd without a VM)
 * talking to a vhost-user backend through {@link VhostUserFrontend}.
 *
 * Memory shared with the backend: one memfd region for all rings (allocated
 * once, big enough for either ring kind; every (re)connect builds fresh rings
 * in it) plus the mempool's own memfd region. Packet buffers are handed to
 * the backend by address (our virtual address: the frontend's "guest
 * physical" space is ours): zero copy both ways. The burst data path is
 * {@link VirtioNetPort}'s (src/port/virtio-net-port.ts), shared with virtio-pci.
 *
 * Where it runs: in the PMD worker that polls the port (the daemon), rings and the vhost-user
 * frontend alike.
 */
import type { LinkState } from './port.js';
import { parseMac } from '../util/net.js';
import { BURST } from './port.js';
import { VirtioNetPort } from './virtio-net-port.js';
import { Mempool } from '../mem/mempool.js';
import { SharedRegion } from '../mem/region.js';
import { GuestMemory } from '../mem/guest-memory.js';
import { VhostUserFrontend, type FrontendDevice, type FrontendSetup, type NegotiatedConfig, type VringAddrs } from '../vhost/frontend.js';
import type { Logger } from '../vhost/connection.js';
import { createDriverQueue, type DriverQueue } from '../virtio/index.js';
import { vringSize, vringLayout, packedVringSize, packedLayout } from '../virtio/layout.js';
import { driverIndirectSize } from '../virtio/driver-queue.js';

export interface VirtioUserOptions {
  /** Port name (default 'virtio-user0'). */
  name?: string;
  /** vhost-user socket path. */
  path: string;
  /** We listen, the backend connects (DPDK `server=1`). */
  server?: boolean;
  /** Queue pairs (default 1). */
  queues?: number;
  /** Packed rings (default false: split). */
  packed?: boolean;
  /** MAC address "aa:bb:cc:dd:ee:ff" (default: random, locally administered). */
  mac?: string;
  /** Ring size (default 256). */
  queueSize?: number;
  /** Negotiate MRG_RXBUF (default true). */
  mrgRxbuf?: boolean;
  eventIdx?: boolean;
  /**
   * Offer VIRTIO_F_IN_ORDER (default true, as DPDK's virtio-user): with it the
   * TX ring needs no free list and is reclaimed by count.
   */
  inOrder?: boolean;
  indirect?: boolean;
  /** Use this pool (must outlive the port); default: the port creates its own. */
  pool?: Mempool;
  /** Buffers in the port's own pool (default max(4096, 4 * queues * queueSize + 1024)). */
  poolSize?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Drop the connection when a reply takes longer (default 5000 ms). */
  replyTimeoutMs?: number;
  logger?: Logger;
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

export { parseMac };

function randomMac(): Uint8Array {
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0] & 0xfe) | 0x02;
  return b;
}

export class VirtioUserPort extends VirtioNetPort implements FrontendDevice {
  readonly type = 'virtio-user';
  readonly frontend: VhostUserFrontend;
  readonly mac: Uint8Array;
  readonly queueSize: number;

  private readonly rings: SharedRegion;
  private readonly vqStride: number;
  private readonly mem: GuestMemory;
  private readonly indirect: boolean;

  constructor(o: VirtioUserOptions) {
    const queues = o.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 127) throw new RangeError(`queues ${queues} must be in 1..127`);
    const qs = o.queueSize ?? 256;
    const name = o.name ?? 'virtio-user0';
    const pool = o.pool ?? Mempool.create({ name, count: o.poolSize ?? Math.max(4096, 4 * queues * qs + 1024) });
    try {
      super(name, queues, pool, !o.pool);
    } catch (e) {
      if (!o.pool) pool.close();
      throw e;
    }
    this.queueSize = qs;
    this.mac = o.mac ? parseMac(o.mac) : randomMac();
    this.indirect = o.indirect ?? false;
    // the backend sees our virtual addresses
    for (let h = 0; h < pool.count; h++) this.bufIova[h] = pool.bufAddr(h);
    // one slot per vring, big enough for either ring kind (+ indirect tables)
    const ringBytes = Math.max(vringSize(qs), packedVringSize(qs)) + (this.indirect ? driverIndirectSize(qs) + 16 : 0);
    this.vqStride = alignUp(ringBytes, 4096);
    try {
      // sealable: the backend may seal it against shrinking (as QEMU's memfd backend is)
      this.rings = SharedRegion.create(`tsvs-virtio-user-${this.name}`, this.vqStride * 2 * this.queues, { sealable: true });
      this.mem = new GuestMemory([
        this.rings.asGuestRegion(this.rings.addr),
        this.pool.region.asGuestRegion(this.pool.region.addr),
      ]);
      this.frontend = new VhostUserFrontend(
        {
          path: o.path,
          server: o.server,
          queuePairs: this.queues,
          queueSize: qs,
          packed: o.packed,
          mrgRxbuf: o.mrgRxbuf,
          eventIdx: o.eventIdx,
          inOrder: o.inOrder ?? true,
          indirect: this.indirect,
          reconnectMinMs: o.reconnectMinMs,
          reconnectMaxMs: o.reconnectMaxMs,
          replyTimeoutMs: o.replyTimeoutMs,
          logger: o.logger,
        },
        this,
      );
      this.frontend.start();
    } catch (e) {
      (this as unknown as { frontend?: VhostUserFrontend }).frontend?.close();
      (this as unknown as { rings?: SharedRegion }).rings?.close();
      if (this.ownsPool) this.pool.close();
      throw e;
    }
  }

  get link(): LinkState {
    return this.active ? 'up' : 'down';
  }

  get nQueues(): number {
    return this.active ? this.nq : this.queues;
  }

  get status(): string {
    if (this.closed) return 'closed';
    if (this.active) return this.queueStatus();
    const st = this.frontend.state;
    return this.frontend.lastError ? `${st}: ${this.frontend.lastError}` : st;
  }

  /** Resolve once the backend has accepted the rings. */
  waitUp(ms = 10000): Promise<void> {
    return this.frontend.waitUp(ms);
  }

  // ------------------------------------------------------------ FrontendDevice

  setup(cfg: NegotiatedConfig): FrontendSetup {
    const qs = cfg.queueSize;
    const vrings: VringAddrs[] = [];
    const rxq: DriverQueue[] = [];
    const txq: DriverQueue[] = [];
    for (let i = 0; i < 2 * cfg.queuePairs; i++) {
      const base = this.rings.addr + i * this.vqStride;
      let a: VringAddrs;
      let ringLen: number;
      if (cfg.packed) {
        const l = packedLayout(base, qs);
        a = { descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr };
        ringLen = packedVringSize(qs);
      } else {
        const l = vringLayout(base, qs);
        a = { descAddr: l.descAddr, availAddr: l.availAddr, usedAddr: l.usedAddr };
        ringLen = vringSize(qs);
      }
      const q = createDriverQueue(this.mem, {
        size: qs,
        features: cfg.features,
        descAddr: a.descAddr,
        availAddr: a.availAddr,
        usedAddr: a.usedAddr,
        indirectAddr: this.indirect ? alignUp(base + ringLen, 16) : undefined,
      });
      // we poll: ask the backend not to signal the call eventfd
      q.setInterrupts(false);
      vrings.push(a);
      (i & 1 ? txq : rxq).push(q);
    }
    // RX rings full before the backend sees them
    this.installQueues(rxq, txq, cfg.hdrLen);
    return {
      regions: [
        { fd: this.rings.fd, addr: this.rings.addr, size: this.rings.size },
        { fd: this.pool.region.fd, addr: this.pool.region.addr, size: this.pool.region.size },
      ],
      vrings,
    };
  }

  up(): void {
    this.active = true;
    for (let q = 0; q < this.nq; q++) this.frontend.kick(2 * q);
  }

  down(reason: string): void {
    void reason;
    this.dropQueues();
  }

  protected notify(vq: number): void {
    this.frontend.kick(vq);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.frontend.close();
    this.dropQueues();
    this.rings.close();
    if (this.ownsPool) this.pool.close();
  }
}

export { BURST };

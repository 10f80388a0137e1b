/**
 * testpmd on the tsvs library: open ports, run a forwarding engine on a
 * worker thread (busy polling, optionally pinned), report stats.
 * The worker owns the ports; the main thread only starts, watches and stops it.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Mempool, DEFAULT_BUF_SIZE, DEFAULT_HEADROOM, type MempoolAttachInfo } from '../mem/mempool.js';
import { openPort, portInfo, type PortSpec, type PortInfo } from '../dp/port-factory.js';
import type { Port } from '../port/port.js';
import { PCI_BUF_SIZE } from '../port/virtio-pci.js';
import * as libc from '../sys/libc.js';
import { TrafficGen, TxStream, checkFrame, macSwap, CHECK_BAD } from './traffic.js';

/** txrx: port 0 transmits like txonly, every other port receives and verifies like rxonly (a generator and a sink in one thread). */
export type FwdMode = 'io' | 'txonly' | 'rxonly' | 'macswap' | 'mac' | 'txrx';
export const FWD_MODES: readonly FwdMode[] = ['io', 'txonly', 'rxonly', 'macswap', 'mac', 'txrx'];

export class PortSpecSyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PortSpecSyntaxError';
  }
}

/**
 * Parse `vhost-user:path=SOCK[,client=1][,queues=N]`, `virtio-user:path=SOCK[,server=1][,queues=N][,packed=1]`
 * or `virtio-pci:ADDR[,packed=1]` (ADDR a PCI address such as 0000:00:02.0, also `addr=ADDR`).
 */
export function parsePortArg(s: string, index: number): PortSpec {
  const colon = s.indexOf(':');
  const kind = colon < 0 ? s : s.slice(0, colon);
  const kv = new Map<string, string>();
  let rest = colon < 0 ? '' : s.slice(colon + 1);
  if (kind === 'virtio-pci') {
    // the PCI address itself has colons: it is the first item unless given as addr=
    const m = /^((?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])(?:,|$)/i.exec(rest);
    if (m) {
      kv.set('addr', m[1]);
      rest = rest.slice(m[0].length);
    }
  }
  if (colon >= 0) {
    for (const part of rest.split(',')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      if (eq <= 0) throw new PortSpecSyntaxError(`--port ${s}: expected key=value, got '${part}'`);
      kv.set(part.slice(0, eq), part.slice(eq + 1));
    }
  }
  const allowed: Record<string, string[]> = {
    'vhost-user': ['path', 'client', 'queues', 'mac', 'name'],
    'virtio-user': ['path', 'server', 'queues', 'packed', 'mac', 'name'],
    'virtio-pci': ['addr', 'packed', 'name'],
  };
  if (!(kind in allowed)) throw new PortSpecSyntaxError(`--port ${s}: unknown port kind '${kind}' (vhost-user, virtio-user or virtio-pci)`);
  for (const k of kv.keys()) if (!allowed[kind].includes(k)) throw new PortSpecSyntaxError(`--port ${s}: unknown option '${k}' for ${kind} (allowed: ${allowed[kind].join(', ')})`);
  const flag = (k: string): boolean => {
    const v = kv.get(k);
    if (v === undefined || v === '0') return false;
    if (v === '1') return true;
    throw new PortSpecSyntaxError(`--port ${s}: ${k} must be 0 or 1`);
  };
  if (kind === 'virtio-pci') {
    const addr = kv.get('addr');
    if (!addr) throw new PortSpecSyntaxError(`--port ${s}: a PCI address is required (virtio-pci:0000:00:02.0)`);
    return { name: kv.get('name') ?? `port${index}`, type: 'virtio-pci', pci: addr, packed: flag('packed') };
  }
  const path = kv.get('path');
  if (!path) throw new PortSpecSyntaxError(`--port ${s}: path=SOCK is required`);
  const q = kv.get('queues');
  const queues = q === undefined ? 1 : Number(q);
  if (!Number.isInteger(queues) || queues < 1 || queues > 16) throw new PortSpecSyntaxError(`--port ${s}: queues must be 1..16`);
  const name = kv.get('name') ?? `port${index}`;
  if (kind === 'vhost-user') return { name, type: flag('client') ? 'vhost-user-client' : 'vhost-user', path, queues, mac: kv.get('mac') };
  return { name, type: 'virtio-user', path, queues, server: flag('server'), packed: flag('packed'), mac: kv.get('mac') };
}

export interface TestpmdOptions {
  ports: PortSpec[];
  fwd: FwdMode;
  txpkts: number;
  burst: number;
  flows: number;
  cpu?: number;
  poolSize?: number;
  /**
   * txonly: buffers each stream keeps and replays, rewriting only the sequence
   * and check words (like a hardware generator; default 1024 when the pool can
   * spare them); 0 allocates, fills and frees a buffer for every frame, as
   * DPDK's txonly does.
   */
  txBuffers?: number;
}

export interface PortReport {
  name: string;
  rx_packets: number;
  tx_packets: number;
  rx_bytes: number;
  tx_bytes: number;
  rx_dropped: number;
  tx_dropped: number;
  rx_bad: number;
  /** Frames the port refused for lack of room and testpmd sent again later (txonly). */
  tx_refused: number;
  link: string;
  drops: Record<string, number>;
}

/**
 * A port's counters as testpmd reports them. `retried` frames were refused by
 * the port (it counts them in txDropped) but kept and sent again, so they are
 * not drops from the application's point of view; `discarded` were given up.
 */
function report(p: Port, rxBad: number, retried = 0, discarded = 0): PortReport {
  const s = p.stats;
  return {
    name: p.name, rx_packets: s.rxPackets, tx_packets: s.txPackets, rx_bytes: s.rxBytes, tx_bytes: s.txBytes,
    rx_dropped: s.rxDropped, tx_dropped: Math.max(0, s.txDropped - retried) + discarded, tx_refused: retried,
    rx_bad: rxBad, link: p.link, drops: { ...s.drops },
  };
}

// ---------------- worker ----------------

async function workerMain(opts: TestpmdOptions & { pool: MempoolAttachInfo }): Promise<void> {
  const pp = parentPort!;
  if (opts.cpu !== undefined) libc.setAffinity([opts.cpu]);
  const pool = Mempool.attach(opts.pool);
  if (opts.txpkts > pool.bufSize - pool.headroom) {
    pp.postMessage({ t: 'error', message: `--txpkts ${opts.txpkts} does not fit a ${pool.bufSize - pool.headroom}-byte packet buffer` });
    return;
  }
  const ports: Port[] = [];
  try {
    for (const spec of opts.ports) ports.push(await openPort(spec, pool));
  } catch (e) {
    for (const p of ports) p.close();
    pp.postMessage({ t: 'error', message: (e as Error).message });
    return;
  }
  pp.postMessage({ t: 'ready', ports: ports.map(portInfo) });
  const n = ports.length;
  const burst = opts.burst;
  const bufs = new Int32Array(32);
  const rxBad = new Float64Array(n);
  const gen = new TrafficGen({ size: opts.txpkts, flows: opts.flows });
  // one txonly stream per port queue (index i * 16 + q); each replays a kept
  // set of buffers (see TxStream) when the pool can spare a quarter of itself
  let txQueues = 0;
  for (let i = 0; i < n; i++) if (opts.fwd === 'txonly' || (opts.fwd === 'txrx' && i === 0)) txQueues += Math.min(16, ports[i].nQueues);
  let keep = txQueues > 0 ? Math.min(opts.txBuffers ?? 1024, Math.floor(pool.count / (4 * txQueues))) : 0;
  if (keep < Math.min(512, opts.txBuffers ?? 512)) keep = 0;
  const streams: TxStream[] = Array.from({ length: n * 16 }, () => new TxStream(pool, gen, burst, keep));
  const retried = (i: number): number => {
    let r = 0;
    for (let q = 0; q < 16; q++) r += streams[i * 16 + q].retried;
    return r;
  };
  const discarded = new Float64Array(n);
  let stop = false;
  let stopDeadline = 0;
  pp.on('message', (m: { t: string }) => {
    if (m.t === 'stop') stop = true;
    if (m.t === 'stats') pp.postMessage({ t: 'stats', ports: ports.map((p, i) => report(p, rxBad[i], retried(i), discarded[i])) });
  });
  const fwd = opts.fwd;
  let lastRx = 0;
  /** Frames of `got` in bufs received on port i: checked (damaged ones counted) and freed. */
  const sink = (i: number, got: number): void => {
    for (let j = 0; j < got; j++) {
      const h = bufs[j];
      if (checkFrame(pool.data, pool.dataOffset(h), pool.dataLen[h]) === CHECK_BAD) rxBad[i]++;
    }
    if (got > 0) pool.free(bufs, got);
  };
  /** One rx pass over the receiving ports (rxonly, txrx's second port); returns frames taken. */
  const receiveOnce = (): number => {
    let taken = 0;
    for (let i = fwd === 'txrx' ? 1 : 0; i < n; i++) {
      const port = ports[i];
      if (port.link !== 'up') continue;
      for (let q = 0; q < port.nQueues; q++) {
        const got = port.rxBurst(q, bufs, burst);
        sink(i, got);
        taken += got;
      }
    }
    return taken;
  };
  const peerOf = (i: number): number => (n === 1 ? 0 : (i ^ 1) < n ? i ^ 1 : i);

  const slice = (): void => {
    if (stop) {
      for (let x = 0; x < streams.length; x++) discarded[x >> 4] += streams[x].discard();
      // Let the peer take what is still in our tx rings before closing (else it is counted sent but never arrives).
      if (stopDeadline === 0) {
        stopDeadline = performance.now() + 1000;
        lastRx = performance.now();
      }
      let inFlight = 0;
      for (const p of ports) {
        const f = (p as Port & { txInFlight?: (q: number) => number }).txInFlight;
        if (f === undefined || p.link !== 'up') continue;
        for (let q = 0; q < p.nQueues; q++) {
          inFlight += f.call(p, q);
        }
      }
      // receivers keep receiving meanwhile, until nothing has come for 20 ms: what the peer delivers
      // after our tx rings drained (e.g. a switch's queues) is counted, not left in our rx rings
      const now = performance.now();
      if ((fwd === 'rxonly' || fwd === 'txrx') && receiveOnce() > 0) lastRx = now;
      if ((inFlight > 0 || now - lastRx < 20) && now < stopDeadline) {
        setTimeout(slice, 1);
        return;
      }
      const final = ports.map((p, i) => report(p, rxBad[i], retried(i), discarded[i]));
      for (const p of ports) p.close();
      for (const st of streams) st.close();
      pp.postMessage({ t: 'final', ports: final });
      return;
    }
    const end = performance.now() + 2;
    let passes = 0;
    do {
      for (let i = 0; i < n; i++) {
        const port = ports[i];
        if (port.link !== 'up') continue;
        for (let q = 0; q < port.nQueues; q++) {
          if (fwd === 'txonly' || (fwd === 'txrx' && i === 0)) {
            streams[i * 16 + q].step(port, q);
            continue;
          }
          const got = port.rxBurst(q, bufs, burst);
          if (got === 0) continue;
          if (fwd === 'rxonly' || fwd === 'txrx') {
            sink(i, got);
            continue;
          }
          if (fwd === 'macswap' || fwd === 'mac') {
            for (let j = 0; j < got; j++) macSwap(pool.data, pool.dataOffset(bufs[j]));
          }
          const out = ports[peerOf(i)];
          const sent = out.link === 'up' ? out.txBurst(q < out.nQueues ? q : 0, bufs, got) : 0;
          if (sent < got) pool.free(bufs, got - sent, sent);
        }
      }
      // the clock is read every 16 passes (performance.now() costs about as much as a short pass)
    } while ((++passes & 15) !== 0 || performance.now() < end);
    setImmediate(slice);
  };
  setImmediate(slice);
}

if (!isMainThread && (workerData as { testpmd?: boolean } | undefined)?.testpmd) {
  void workerMain((workerData as { opts: TestpmdOptions & { pool: MempoolAttachInfo } }).opts);
}

// ---------------- main side ----------------

export class Testpmd {
  private readonly worker: Worker;
  readonly pool: Mempool;
  readonly ready: Promise<PortInfo[]>;
  private statsWaiters: ((r: PortReport[]) => void)[] = [];
  private finalWaiter: ((r: PortReport[]) => void) | null = null;
  private exited: Promise<void>;

  constructor(opts: TestpmdOptions) {
    if (opts.ports.length === 0) throw new PortSpecSyntaxError('at least one --port is needed');
    // buffers big enough for one txonly frame (plus headroom for the virtio-net header)
    let bufSize = Math.max(DEFAULT_BUF_SIZE, DEFAULT_HEADROOM + Math.ceil(opts.txpkts / 64) * 64);
    // a PCI device does DMA: buffers in hugepages, none straddling two of them (a power-of-2 size)
    const hugepages = opts.ports.some((p) => p.type === 'virtio-pci');
    if (hugepages) bufSize = 1 << Math.ceil(Math.log2(Math.max(PCI_BUF_SIZE, DEFAULT_HEADROOM + Math.ceil(opts.txpkts / 64) * 64)));
    this.pool = Mempool.create({ name: 'testpmd', count: opts.poolSize ?? 8192, bufSize, hugepages });
    this.worker = new Worker(fileURLToPath(import.meta.url), { workerData: { testpmd: true, opts: { ...opts, pool: this.pool.attachInfo() } } });
    this.ready = new Promise((resolve, reject) => {
      this.worker.on('message', (m: { t: string; ports?: unknown; message?: string }) => {
        if (m.t === 'ready') resolve(m.ports as PortInfo[]);
        else if (m.t === 'error') reject(new Error(m.message));
        else if (m.t === 'stats') this.statsWaiters.shift()?.(m.ports as PortReport[]);
        else if (m.t === 'final') this.finalWaiter?.(m.ports as PortReport[]);
      });
      this.worker.on('error', reject);
    });
    this.exited = new Promise((r) => this.worker.on('exit', () => r()));
  }

  stats(): Promise<PortReport[]> {
    return new Promise((resolve) => {
      this.statsWaiters.push(resolve);
      this.worker.postMessage({ t: 'stats' });
    });
  }

  async stop(): Promise<PortReport[]> {
    const final = new Promise<PortReport[]>((resolve) => (this.finalWaiter = resolve));
    this.worker.postMessage({ t: 'stop' });
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([final, new Promise<PortReport[]>((res) => (timer = setTimeout(() => res([]), 5000)))]);
    clearTimeout(timer);
    await this.worker.terminate();
    await this.exited;
    this.pool.close();
    return r;
  }
}

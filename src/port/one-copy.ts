/**
 * One copy guest-to-guest (issue 15): a frame a guest sends on a vhost-user port
 * and the switch forwards to another vhost-user port polled by the same PMD
 * thread is copied once, from the source guest's TX buffer straight into the
 * destination guest's RX buffer, instead of twice (guest -> mempool buffer ->
 * guest, as OVS-DPDK does).
 *
 * Design
 *
 *  - The private part. On rx (VhostUserPort.rxBurst, DeviceQueue
 *    dequeueBurstDeferred) the first {@link ONE_COPY_PRIVATE} bytes of a frame
 *    are copied into its mempool buffer as today; the rest, the tail, stays in
 *    the guest's buffer and is described per mempool handle here (window bytes,
 *    offset, length). dataLen is the whole frame's length. Frames of at most
 *    ONE_COPY_PRIVATE bytes, and every chain the ring kind's fast path does not
 *    take (several descriptors, indirect, unaligned, bad: validated and counted
 *    by the general path exactly as before), are copied whole: tail length 0.
 *
 *  - Classification only ever reads the private part. The flow key is taken
 *    from the mempool buffer; the datapath keeps a tail only for frames whose
 *    key extractKey takes from the first 38 bytes (IPv4 without options,
 *    TCP/UDP, not a fragment: flow-key.ts keyFitsPrefix, checked on the private
 *    copy); any other frame gets its tail copied in (materialized) before its
 *    key is extracted. The bytes delivered for the headers are the private
 *    copy's: a guest that rewrites its buffer after sending cannot change what
 *    was classified nor what the destination receives for those bytes; it can
 *    only change its own payload (bytes ONE_COPY_PRIVATE.. of the frame), which
 *    is its to send anyway.
 *
 *  - Deferred release. The source chains are not returned to the guest (split:
 *    used index not published; packed: descriptors not marked used) until every
 *    frame of the rx burst has been delivered, materialized or dropped: the
 *    datapath flushes the tx batches at the end of each such burst and then
 *    calls rxRelease(q) on the source port (which also signals the guest).
 *    Until then the guest may still rewrite the tail (allowed, above) but the
 *    memory stays mapped: a port with chains held does not give up its data
 *    path (VhostUserPort.active), and the control side unmaps only after the
 *    data path has let go (ring-lease.ts).
 *
 *  - Where a tail may go. Per output the datapath decides in enqueueTx: a port
 *    that took this table (useOneCopy: local vhost-user ports) gets the frame
 *    with its tail; any other port (afpacket, tap, virtio-user, a port of
 *    another PMD thread behind a cross-PMD ring) gets it materialized. Action
 *    programs other than a single output (rewrites, several outputs), upcalls
 *    (held packets, the slow path reads the frame), packet capture: the tail is
 *    materialized first, and the pool path runs unchanged.
 *
 *  - Batched per output port. The destination port's txBurst hands the whole
 *    batch to DeviceQueue.enqueueBurstTails: the ring kind's fast path (one
 *    device-writable descriptor that holds the frame) writes net header +
 *    private part + tail, the tail straight from the source guest's window;
 *    other chains (MRG_RXBUF spans, several descriptors, dirty logging on)
 *    materialize the tail into the mempool buffer and take the ordinary path,
 *    so live-migration logging marks exactly what is written, as before.
 *
 *  - Lifetime of a tail description: set by the rx port for every handle it
 *    returns; cleared by materialize() and, for every handle of the burst, by
 *    the datapath after the burst (clearBurst). Handles the datapath allocates
 *    inside a burst (copies for several outputs) are cleared when allocated.
 *    Nothing here allocates per packet or throws.
 *
 *  - Counters: `one-copy` packets in pmd-stats are frames whose tail went
 *    straight into the destination guest (DeviceQueue.lastDirect); tails copied
 *    in for the pool path are counted as `materialized` here (not shown).
 *
 * Where it runs: one table per PMD thread (datapath.ts), shared by the
 * vhost-user ports that thread polls.
 */
import { copyBytes } from '../mem/copy.js';

/** Bytes of each frame copied into the switch's own buffer on rx (the headers; a multiple of 4). */
export const ONE_COPY_PRIVATE = 64;

export class OneCopyTails {
  /** Per mempool handle: the source guest's window bytes holding the tail (valid while len > 0). */
  readonly win: (Uint8Array | null)[];
  /** Its word view (null if unaligned). */
  readonly w32: (Int32Array | null)[];
  /** Offset of the tail in win, and its length (0: no tail, the whole frame is in the buffer). */
  readonly off: Int32Array;
  readonly len: Int32Array;
  /** Frames whose tail was written straight into a destination guest (ports add, the datapath takes). */
  direct = 0;
  /** Tails copied into their mempool buffer (the pool path). */
  materialized = 0;

  constructor(handles: number) {
    this.win = new Array<Uint8Array | null>(handles).fill(null);
    this.w32 = new Array<Int32Array | null>(handles).fill(null);
    this.off = new Int32Array(handles);
    this.len = new Int32Array(handles);
  }

  /**
   * Copy handle h's tail into its buffer: data[at, at+len) where `at` is the
   * buffer's data offset + ONE_COPY_PRIVATE (the buffer has room: the frame was
   * sized to it). Then h is an ordinary packet.
   */
  materialize(h: number, data: Uint8Array, dataW32: Int32Array | null, at: number): void {
    const n = this.len[h];
    if (n <= 0) return;
    this.len[h] = 0;
    const w = this.win[h];
    const o = this.off[h];
    if (w === null || !(o >= 0 && o + n <= w.length && at >= 0 && at + n <= data.length)) return;
    copyBytes(data, dataW32, at, w, this.w32[h], o, n);
    this.materialized++;
  }

  /** Forget the tails of handles[0..n) (the end of a burst: all delivered, copied in or dropped). */
  clearBurst(handles: Int32Array, n: number): void {
    const len = this.len;
    for (let i = 0; i < n; i++) len[handles[i]] = 0;
  }
}

/** A port that can take frames with tails (vhost-user) and defer the release of its rx chains. */
export interface OneCopyPort {
  /** Use this table (null: stop); returns whether the port takes part. */
  useOneCopy(t: OneCopyTails | null): boolean;
  /** Return to the guest the chains the last rxBurst of queue q kept (and signal it). */
  rxRelease(q: number): void;
}

export function isOneCopyPort(p: object): p is OneCopyPort {
  return typeof (p as Partial<OneCopyPort>).useOneCopy === 'function' && typeof (p as Partial<OneCopyPort>).rxRelease === 'function';
}

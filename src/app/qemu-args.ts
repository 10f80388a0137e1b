/**
 * QEMU command-line fragments for guests that use tsvs (or the kernel path) as their network.
 *
 * Pure functions: no I/O, no environment lookups. `tsvs qemu-args` prints these; the test
 * harness (test/harness/qemu.ts) spawns QEMU with them.
 *
 * Facts these encode (QEMU 7.2, docs/interop.md#qemu-72-tcg):
 * - vhost-user needs guest RAM in a shared memfd (`share=on`), else the guest boots and the
 *   backend can never see its buffers.
 * - `vectors=0` on the virtio-net-pci device: QEMU 7.2 under TCG crashes when MSI-X is used
 *   with vhost-user, so the device runs on legacy INTx.
 * - `romfile=`: Debian's qemu-system-x86 ships no efi-virtio.rom; we boot with -kernel anyway.
 */

import { tryParseMac, formatMac } from '../util/net.js';

/** Thrown for arguments that would make QEMU fail or silently misbehave. */
export class QemuArgsError extends Error {
  override readonly name = "QemuArgsError";
}

export interface VhostUserNicOptions {
  /** QEMU creates and listens on the socket (`server=on,wait=off`); else QEMU connects. Default false. */
  server?: boolean;
  /** Number of queue pairs; > 1 enables multiqueue (`mq=on`). Default 1. */
  queues?: number;
  /** Guest MAC, `xx:xx:xx:xx:xx:xx`. Default: derived from `index` (52:54:00:74:73:NN). */
  mac?: string;
  /** Suffix for the chardev/netdev ids (`c<index>`, `n<index>`), so several NICs can coexist. Default 0. */
  index?: number;
  /**
   * Client mode only: seconds between QEMU's attempts to (re)connect (`reconnect=N`). Without it
   * QEMU exits at startup when the backend's socket is not there yet, and never reconnects.
   */
  reconnect?: number;
  /** Packed virtqueues (`packed=on`; the backend must offer VIRTIO_F_RING_PACKED). Default false (split). */
  packed?: boolean;
  /** `mrg_rxbuf=off` when false: no mergeable receive buffers (each frame in one buffer). Default QEMU's (on). */
  mrgRxbuf?: boolean;
}

export interface TapNicOptions {
  /** Guest MAC. Default: derived from `index`. */
  mac?: string;
  /** Id suffix as for vhost-user. Default 0. */
  index?: number;
  /** Use the in-kernel vhost-net accelerator. Default false (there is no /dev/vhost-net here). */
  vhostNet?: boolean;
}

export interface MemoryOptions {
  /** Guest RAM in MiB. Default 256. */
  sizeMiB?: number;
  /** Back RAM with a shared memfd (required for vhost-user). Default true. */
  share?: boolean;
}

/** Characters QEMU's option parser treats specially (`,` separates options). */
const BAD_PATH_RE = /[,\n\0]/;

/** Default locally administered MAC for NIC number `index` (0..255): 52:54:00:74:73:NN ("ts"). */
export function defaultMac(index: number): string {
  checkIndex(index);
  return `52:54:00:74:73:${index.toString(16).padStart(2, "0")}`;
}

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index > 255) {
    throw new QemuArgsError(`NIC index must be an integer in 0..255, got ${index}`);
  }
}

function checkMac(mac: string): string {
  const b = tryParseMac(mac);
  if (!b) throw new QemuArgsError(`invalid MAC address ${JSON.stringify(mac)}`);
  if ((b[0] & 1) !== 0) {
    throw new QemuArgsError(`MAC ${mac} is a multicast address; a NIC needs a unicast one`);
  }
  return formatMac(b);
}

function checkOptValue(what: string, v: string): string {
  if (v.length === 0) throw new QemuArgsError(`${what} must not be empty`);
  if (BAD_PATH_RE.test(v)) throw new QemuArgsError(`${what} ${JSON.stringify(v)} contains ',' or a control character`);
  return v;
}

/**
 * The QEMU arguments for one virtio-net NIC backed by a vhost-user socket.
 * Combine with {@link qemuMemoryArgs} (share=on) or the guest will move no packets.
 */
export function qemuVhostUserArgs(socketPath: string, opts: VhostUserNicOptions = {}): string[] {
  const index = opts.index ?? 0;
  checkIndex(index);
  const queues = opts.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > 256) {
    throw new QemuArgsError(`queues must be an integer in 1..256, got ${queues}`);
  }
  const mac = checkMac(opts.mac ?? defaultMac(index));
  const path = checkOptValue("socket path", socketPath);
  if (opts.reconnect !== undefined) {
    if (opts.server) throw new QemuArgsError("reconnect applies to client mode only (server: false)");
    if (!Number.isInteger(opts.reconnect) || opts.reconnect < 1) {
      throw new QemuArgsError(`reconnect must be a positive integer number of seconds, got ${opts.reconnect}`);
    }
  }
  const chardev = `socket,id=c${index},path=${path}` + (opts.server ? ",server=on,wait=off" : "") +
    (opts.reconnect !== undefined ? `,reconnect=${opts.reconnect}` : "");
  const netdev = `vhost-user,id=n${index},chardev=c${index}` + (queues > 1 ? `,queues=${queues}` : "");
  const device = `virtio-net-pci,netdev=n${index},mac=${mac}` + (queues > 1 ? ",mq=on" : "") +
    (opts.packed ? ",packed=on" : "") + (opts.mrgRxbuf === false ? ",mrg_rxbuf=off" : "") + ",vectors=0,romfile=";
  return ["-chardev", chardev, "-netdev", netdev, "-device", device];
}

/** The QEMU arguments for one virtio-net NIC on an existing tap device (kernel path). */
export function qemuTapArgs(ifname: string, opts: TapNicOptions = {}): string[] {
  const index = opts.index ?? 0;
  checkIndex(index);
  const mac = checkMac(opts.mac ?? defaultMac(index));
  const name = checkOptValue("tap name", ifname);
  if (name.length > 15) throw new QemuArgsError(`tap name ${name} is longer than IFNAMSIZ-1 (15)`);
  const netdev = `tap,id=n${index},ifname=${name},script=no,downscript=no,vhost=${opts.vhostNet ? "on" : "off"}`;
  return ["-netdev", netdev, "-device", `virtio-net-pci,netdev=n${index},mac=${mac},romfile=`];
}

/** Guest RAM arguments: a memfd memory backend (shared unless `share: false`) on the `pc` machine. */
export function qemuMemoryArgs(opts: MemoryOptions = {}): string[] {
  const size = opts.sizeMiB ?? 256;
  if (!Number.isInteger(size) || size < 16 || size > 1024 * 1024) {
    throw new QemuArgsError(`memory size must be an integer number of MiB in 16..1048576, got ${size}`);
  }
  const share = opts.share ?? true;
  return [
    "-m", `${size}M`,
    "-object", `memory-backend-memfd,id=mem,size=${size}M,share=${share ? "on" : "off"}`,
    "-machine", "pc,memory-backend=mem",
  ];
}

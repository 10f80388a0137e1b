/**
 * Who is on the other end of a vhost-user socket, and does it really share
 * guest memory with us. A frontend that maps its RAM privately (QEMU
 * `memory-backend-*,share=off`) still sends the memfd, but its guest writes
 * land in copy-on-write pages we never see: nothing can move. We detect it
 * exactly: SO_PEERCRED gives the peer's pid, and in /proc/PID/maps the
 * mapping holding a region's user address is `rw-p` instead of `rw-s`.
 */
import * as fs from 'node:fs';
import { koffi } from '../sys/libc.js';

const libc = koffi.load('libc.so.6');
const c_getsockopt = libc.func('getsockopt', 'int', ['int', 'int', 'int', '_Out_ uint8_t *', '_Inout_ uint32_t *']);
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

/** The peer process id of a connected unix socket, or -1. */
export function peerPid(fd: number): number {
  const buf = new Uint8Array(12);
  const len = [12];
  if (c_getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) < 0) return -1;
  const pid = new DataView(buf.buffer).getInt32(0, true);
  return pid > 0 ? pid : -1;
}

export type Sharing = 'shared' | 'private' | 'unknown';

/**
 * How process `pid` maps [uaddr, uaddr+size): 'private' if any mapping
 * overlapping it is MAP_PRIVATE, 'shared' if all are shared, 'unknown' if
 * /proc is unreadable or nothing covers it (another pid namespace ...).
 */
export function mappingSharing(pid: number, uaddr: number, size: number): Sharing {
  if (pid <= 0) return 'unknown';
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return 'unknown';
  }
  const end = uaddr + size;
  let covered = false;
  for (const line of text.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp < 0) continue;
    const dash = line.indexOf('-');
    const a = parseInt(line.slice(0, dash), 16);
    const b = parseInt(line.slice(dash + 1, sp), 16);
    if (!(b > uaddr && a < end)) continue;
    covered = true;
    if (line[sp + 4] === 'p') return 'private';
  }
  return covered ? 'shared' : 'unknown';
}

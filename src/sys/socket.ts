/**
 * Unix stream sockets with file-descriptor passing (SCM_RIGHTS), non-blocking.
 * The msghdr/cmsg structures are built by hand in a native scratch block, as
 * vhost-user needs exactly what a C program sends: a message plus up to 8 fds.
 */
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { koffi, SysError, EAGAIN, EINTR, closeQuiet } from './libc.js';

const libc = koffi.load('libc.so.6');
const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_bind = libc.func('int bind(int fd, const uint8_t *addr, uint32_t len)');
const c_listen = libc.func('int listen(int fd, int backlog)');
const c_accept4 = libc.func('int accept4(int fd, void *addr, void *len, int flags)');
const c_connect = libc.func('int connect(int fd, const uint8_t *addr, uint32_t len)');
const c_sendmsg = libc.func('sendmsg', 'long', ['int', 'uint64_t', 'int']);
const c_recvmsg = libc.func('recvmsg', 'long', ['int', 'uint64_t', 'int']);
const c_socketpair = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
const c_shutdown = libc.func('int shutdown(int fd, int how)');

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;

/** Most fds one vhost-user message may carry. */
export const MAX_FDS = 8;
/** Largest payload one sendmsg/recvmsg moves through the scratch block. */
export const MAX_MSG = 65536;

// Native scratch: msghdr(56) | iovec(16) | cmsg (16 + 4*MAX_FDS) | data.
const MSGHDR = 0;
const IOV = 56;
const CMSG = 72;
const CMSG_SPACE = 16 + 4 * MAX_FDS;
const DATA = CMSG + CMSG_SPACE;
const SCRATCH = DATA + MAX_MSG;
const scratchPtr = koffi.alloc('uint8_t', SCRATCH);
const scratchAddr = Number(koffi.address(scratchPtr));
const scratch = new Uint8Array(koffi.view(scratchPtr, SCRATCH));
const sdv = new DataView(scratch.buffer);

function setAddr(off: number, v: number): void {
  sdv.setBigUint64(off, BigInt(v), true);
}

function prepareMsghdr(len: number, ctrlLen: number): void {
  scratch.fill(0, 0, DATA);
  setAddr(MSGHDR + 16, scratchAddr + IOV); // msg_iov
  setAddr(MSGHDR + 24, 1); // msg_iovlen
  if (ctrlLen > 0) {
    setAddr(MSGHDR + 32, scratchAddr + CMSG); // msg_control
    setAddr(MSGHDR + 40, ctrlLen); // msg_controllen
  }
  setAddr(IOV, scratchAddr + DATA);
  setAddr(IOV + 8, len);
}

function sockaddrUn(path: string): Uint8Array {
  const p = Buffer.from(path);
  if (p.length >= 108) throw new SysError('sockaddr_un', osConstants.errno.ENAMETOOLONG, path);
  const a = new Uint8Array(110);
  a[0] = AF_UNIX;
  a.set(p, 2);
  return a;
}

function fail(call: string, detail?: string): never {
  throw new SysError(call, koffi.errno(), detail);
}

/** A connected unix stream socket (non-blocking, close-on-exec). */
export class UnixSocket {
  fd: number;
  constructor(fd: number) {
    this.fd = fd;
  }

  /** Connect to a listening socket at path. Throws SysError (ENOENT, ECONNREFUSED, ...). */
  static connect(path: string): UnixSocket {
    const addr = sockaddrUn(path);
    const fd = c_socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail('socket');
    if (c_connect(fd, addr, addr.length) < 0) {
      const e = koffi.errno();
      closeQuiet(fd);
      throw new SysError('connect', e, path);
    }
    return new UnixSocket(fd);
  }

  /** A connected pair (for tests and in-process links). */
  static pair(): [UnixSocket, UnixSocket] {
    const sv = [0, 0];
    if (c_socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) fail('socketpair');
    return [new UnixSocket(sv[0]), new UnixSocket(sv[1])];
  }

  /**
   * Send data (at most MAX_MSG bytes) with up to MAX_FDS fds attached.
   * Returns bytes sent, or -1 if the socket would block. Throws SysError
   * (EPIPE, ECONNRESET, ...) when the peer is gone.
   */
  send(data: Uint8Array, fds: readonly number[] = []): number {
    if (data.length > MAX_MSG) throw new SysError('sendmsg', osConstants.errno.EMSGSIZE, `${data.length} bytes`);
    if (fds.length > MAX_FDS) throw new SysError('sendmsg', osConstants.errno.EINVAL, `${fds.length} fds (max ${MAX_FDS})`);
    const ctrl = fds.length > 0 ? CMSG_SPACE : 0;
    prepareMsghdr(data.length, ctrl);
    if (fds.length > 0) {
      // CMSG_LEN(n*4) = 16 + 4n; CMSG_SPACE rounds to 8.
      sdv.setBigUint64(CMSG, BigInt(16 + 4 * fds.length), true);
      sdv.setInt32(CMSG + 8, SOL_SOCKET, true);
      sdv.setInt32(CMSG + 12, SCM_RIGHTS, true);
      for (let i = 0; i < fds.length; i++) sdv.setInt32(CMSG + 16 + 4 * i, fds[i], true);
      setAddr(MSGHDR + 40, (16 + 4 * fds.length + 7) & ~7);
    }
    scratch.set(data, DATA);
    for (;;) {
      const r = c_sendmsg(this.fd, scratchAddr + MSGHDR, MSG_NOSIGNAL);
      if (r >= 0) return r;
      const e = koffi.errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return -1;
      throw new SysError('sendmsg', e, `fd ${this.fd}`);
    }
  }

  /** Send all of data; the first chunk carries the fds. Throws on EAGAIN mid-way (the peer is stuck). */
  sendAll(data: Uint8Array, fds: readonly number[] = []): void {
    let off = 0;
    let first = true;
    let spins = 0;
    while (off < data.length || first) {
      const n = this.send(data.subarray(off), first ? fds : []);
      if (n < 0) {
        if (++spins > 100000) throw new SysError('sendmsg', EAGAIN, 'peer not reading');
        continue;
      }
      first = false;
      off += n;
      if (data.length === 0) break;
    }
  }

  /**
   * Receive up to buf.length bytes; fds that came with them are appended to
   * fdsOut. Returns bytes received, 0 at EOF, -1 if nothing is ready.
   * `lastTruncated` tells whether the kernel dropped fds (too many sent).
   */
  lastTruncated = false;
  recv(buf: Uint8Array, fdsOut: number[]): number {
    const len = Math.min(buf.length, MAX_MSG);
    prepareMsghdr(len, CMSG_SPACE);
    for (;;) {
      const r = c_recvmsg(this.fd, scratchAddr + MSGHDR, MSG_CMSG_CLOEXEC);
      if (r < 0) {
        const e = koffi.errno();
        if (e === EINTR) continue;
        if (e === EAGAIN) return -1;
        throw new SysError('recvmsg', e, `fd ${this.fd}`);
      }
      const flags = sdv.getInt32(MSGHDR + 48, true);
      this.lastTruncated = (flags & MSG_CTRUNC) !== 0;
      const ctrlLen = Number(sdv.getBigUint64(MSGHDR + 40, true));
      let off = 0;
      while (off + 16 <= ctrlLen) {
        const cl = Number(sdv.getBigUint64(CMSG + off, true));
        const level = sdv.getInt32(CMSG + off + 8, true);
        const type = sdv.getInt32(CMSG + off + 12, true);
        if (cl < 16) break;
        if (level === SOL_SOCKET && type === SCM_RIGHTS) {
          const n = (cl - 16) >> 2;
          for (let i = 0; i < n; i++) fdsOut.push(sdv.getInt32(CMSG + off + 16 + 4 * i, true));
        }
        off += (cl + 7) & ~7;
      }
      buf.set(scratch.subarray(DATA, DATA + r), 0);
      return r;
    }
  }

  shutdown(): void {
    if (this.fd >= 0) c_shutdown(this.fd, 2);
  }

  close(): void {
    if (this.fd >= 0) {
      closeQuiet(this.fd);
      this.fd = -1;
    }
  }
}

/** A listening unix socket. */
export class UnixListener {
  fd: number;
  readonly path: string;
  private constructor(fd: number, path: string) {
    this.fd = fd;
    this.path = path;
  }

  /**
   * Listen at path. A stale socket file (nobody listening) is replaced; a live
   * one gives EADDRINUSE.
   */
  static listen(path: string, backlog = 16): UnixListener {
    const addr = sockaddrUn(path);
    try {
      if (fs.lstatSync(path).isSocket()) {
        let live = false;
        try {
          UnixSocket.connect(path).close();
          live = true;
        } catch {
          /* stale */
        }
        if (live) throw new SysError('bind', osConstants.errno.EADDRINUSE, path);
        fs.unlinkSync(path);
      }
    } catch (e) {
      if (e instanceof SysError) throw e;
    }
    const fd = c_socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail('socket');
    if (c_bind(fd, addr, addr.length) < 0) {
      const e = koffi.errno();
      closeQuiet(fd);
      throw new SysError('bind', e, path);
    }
    if (c_listen(fd, backlog) < 0) {
      const e = koffi.errno();
      closeQuiet(fd);
      throw new SysError('listen', e, path);
    }
    return new UnixListener(fd, path);
  }

  /** Accept one pending connection, or null if none is waiting. */
  accept(): UnixSocket | null {
    const fd = c_accept4(this.fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const e = koffi.errno();
      if (e === EAGAIN || e === EINTR) return null;
      throw new SysError('accept4', e, this.path);
    }
    return new UnixSocket(fd);
  }

  /** Close and remove the socket file. */
  close(): void {
    if (this.fd >= 0) {
      closeQuiet(this.fd);
      this.fd = -1;
      try {
        fs.unlinkSync(this.path);
      } catch {
        /* already gone */
      }
    }
  }
}

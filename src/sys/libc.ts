/**
 * libc through koffi: the few system calls a vhost-user switch needs.
 *
 * Every failure becomes a {@link SysError} naming the call and errno; no
 * negative return value leaks upward. Addresses are plain numbers (user-space
 * addresses on x86-64 Linux fit in 47 bits, so they are exact doubles).
 */
import koffi from 'koffi';
import { constants as osConstants } from 'node:os';

const libc = koffi.load('libc.so.6');

const errnoNames: Record<number, string> = {};
for (const [name, num] of Object.entries(osConstants.errno)) {
  if (errnoNames[num] === undefined) errnoNames[num] = name;
}

/** Name of an errno value, e.g. 98 -> 'EADDRINUSE'. */
export function errnoName(errno: number): string {
  return errnoNames[errno] ?? `E${errno}`;
}

/** A failed system call: which call, which errno. */
export class SysError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;
  constructor(call: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${call}${detail ? ` (${detail})` : ''} failed: ${code}`);
    this.name = 'SysError';
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}

export const EAGAIN = osConstants.errno.EAGAIN;
export const EINTR = osConstants.errno.EINTR;
export const EINPROGRESS = osConstants.errno.EINPROGRESS;

// --- raw bindings (private) ---
const c_memfd_create = libc.func('int memfd_create(const char *name, unsigned int flags)');
const c_ftruncate = libc.func('int ftruncate(int fd, int64_t length)');
const c_mmap = libc.func('mmap', 'uint64_t', ['uint64_t', 'size_t', 'int', 'int', 'int', 'int64_t']);
const c_munmap = libc.func('munmap', 'int', ['uint64_t', 'size_t']);
// memmove(dst, src, 0) returns dst: the one portable way to turn an address into a koffi pointer.
const c_ptr = libc.func('memmove', 'void *', ['uint64_t', 'uint64_t', 'size_t']);
// glibc only (absent from musl): looked up once, null when missing
const c_malloc_trim = ((): ((pad: number) => number) | null => {
  try {
    return libc.func('int malloc_trim(size_t pad)') as (pad: number) => number;
  } catch {
    return null;
  }
})();
const c_execve = libc.func('int execve(const char *path, const char **argv, const char **envp)');
const c_close = libc.func('int close(int fd)');
const c_dup = libc.func('int dup(int fd)');
const c_eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
const c_read = libc.func('long read(int fd, _Out_ uint8_t *buf, size_t count)');
const c_write = libc.func('long write(int fd, const uint8_t *buf, size_t count)');
const c_sched_setaffinity = libc.func('int sched_setaffinity(int pid, size_t size, const uint8_t *mask)');
const c_fstat_size = libc.func('lseek', 'int64_t', ['int', 'int64_t', 'int']);
const c_sched_yield = libc.func('int sched_yield(void)');
const c_poll = libc.func('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)');
const c_mmap_anon = libc.func('mmap', 'uint64_t', ['uint64_t', 'size_t', 'int', 'int', 'int', 'int64_t']);
const c_mprotect = libc.func('mprotect', 'int', ['uint64_t', 'size_t', 'int']);
// fcntl is variadic; the seal commands take an int (passed like a fixed third argument on x86-64 and arm64)
const c_fcntl_int = libc.func('int fcntl(int fd, int cmd, int arg)');
const c_fstat = libc.func('int fstat(int fd, _Out_ uint8_t *st)');
const c_fstatfs = libc.func('int fstatfs(int fd, _Out_ uint8_t *st)');

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_ANONYMOUS = 0x20;
/** fcntl file seals (memfd). */
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 1;
export const F_SEAL_SHRINK = 2;
export const F_SEAL_GROW = 4;
export const F_SEAL_WRITE = 8;
export const MFD_CLOEXEC = 1;
/** memfd_create: back the file with hugetlb pages (reserved in the kernel's pool). */
export const MFD_HUGETLB = 4;
/** With MFD_HUGETLB: 2 MiB pages (log2 21 in bits 26..31). */
export const MFD_HUGE_2MB = 21 << 26;
export const MFD_ALLOW_SEALING = 2;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
const MAP_FAILED_BIG = 0xffffffffffffffffn;

function check(call: string, rc: number, detail?: string): number {
  if (rc < 0) throw new SysError(call, koffi.errno(), detail);
  return rc;
}

/** Create an anonymous memory file (close-on-exec; `flags` adds e.g. MFD_HUGETLB | MFD_HUGE_2MB, MFD_ALLOW_SEALING). */
export function memfdCreate(name: string, flags = 0): number {
  return check('memfd_create', c_memfd_create(name, MFD_CLOEXEC | flags));
}

export function ftruncate(fd: number, size: number): void {
  check('ftruncate', c_ftruncate(fd, size), `fd ${fd}, size ${size}`);
}

/** Size of a file descriptor's file (lseek SEEK_END). */
export function fdSize(fd: number): number {
  const r = Number(c_fstat_size(fd, 0, 2));
  return check('lseek', r, `fd ${fd}`);
}

/** mmap(MAP_SHARED, read+write) of [offset, offset+size) of fd; returns the address. */
export function mmap(fd: number, size: number, offset = 0): number {
  if (!(size > 0) || !Number.isInteger(size)) throw new SysError('mmap', osConstants.errno.EINVAL, `bad size ${size}`);
  if (!(offset >= 0) || !Number.isInteger(offset) || offset % 4096 !== 0) {
    throw new SysError('mmap', osConstants.errno.EINVAL, `bad offset ${offset}`);
  }
  const r = c_mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset) as number | bigint;
  if (typeof r === 'bigint') {
    if (r === MAP_FAILED_BIG) throw new SysError('mmap', koffi.errno(), `fd ${fd}, size ${size}, offset ${offset}`);
    throw new SysError('mmap', osConstants.errno.EOVERFLOW, 'address beyond 2^53');
  }
  return r;
}

/** Anonymous private mapping of `size` bytes (zero-filled) with protection `prot`; returns the address. */
export function mmapAnon(size: number, prot = PROT_READ | PROT_WRITE): number {
  const r = c_mmap_anon(0, size, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) as number | bigint;
  if (typeof r === 'bigint') {
    if (r === MAP_FAILED_BIG) throw new SysError('mmap', koffi.errno(), `anonymous, size ${size}`);
    throw new SysError('mmap', osConstants.errno.EOVERFLOW, 'address beyond 2^53');
  }
  return r;
}

export function mprotect(addr: number, size: number, prot: number): void {
  check('mprotect', c_mprotect(addr, size, prot), `0x${addr.toString(16)}+${size}`);
}

/** The seals of a memfd (F_GET_SEALS); throws SysError (EINVAL) for files that have none (not a memfd). */
export function getSeals(fd: number): number {
  return check('fcntl(F_GET_SEALS)', c_fcntl_int(fd, F_GET_SEALS, 0), `fd ${fd}`);
}

/** Add seals to a memfd (F_ADD_SEALS): EPERM if it is sealed against new seals (created without MFD_ALLOW_SEALING) or not writable. */
export function addSeals(fd: number, seals: number): void {
  check('fcntl(F_ADD_SEALS)', c_fcntl_int(fd, F_ADD_SEALS, seals), `fd ${fd}`);
}

const statBuf = new Uint8Array(256);
const statView = new DataView(statBuf.buffer);

/** fstat: size and preferred I/O block size (hugetlbfs: the huge page size). x86-64 and arm64 layouts. */
/** statfs f_type of the filesystem holding fd's file. */
export function fsType(fd: number): number {
  check('fstatfs', c_fstatfs(fd, statBuf), `fd ${fd}`);
  return Number(statView.getBigUint64(0, true) & 0xffffffffn);
}

/** statfs f_type of hugetlbfs (also memfds made with MFD_HUGETLB). */
export const HUGETLBFS_MAGIC = 0x958458f6;

export function fstat(fd: number): { size: number; blksize: number } {
  check('fstat', c_fstat(fd, statBuf), `fd ${fd}`);
  if (process.arch === 'x64') return { size: Number(statView.getBigInt64(48, true)), blksize: Number(statView.getBigInt64(56, true)) };
  // generic (asm-generic/stat.h, arm64): st_size at 48, st_blksize (int) at 56
  return { size: Number(statView.getBigInt64(48, true)), blksize: statView.getInt32(56, true) };
}

export function munmap(addr: number, size: number): void {
  check('munmap', c_munmap(addr, size));
}

/**
 * A zero-copy ArrayBuffer over [addr, addr+len) of mapped memory. Keep len at
 * most 1 GiB (koffi aborts beyond 4 GiB). Release every view (drop all
 * references) before munmap of that range.
 */
export function view(addr: number, len: number): ArrayBuffer {
  if (len > 1 << 30) throw new RangeError(`view of ${len} bytes: map in windows of at most 1 GiB`);
  return koffi.view(c_ptr(addr, addr, 0), len);
}

export function close(fd: number): void {
  check('close', c_close(fd), `fd ${fd}`);
}

/** close() that ignores errors, for cleanup paths. */
export function closeQuiet(fd: number): void {
  if (fd >= 0) c_close(fd);
}

export function dup(fd: number): number {
  return check('dup', c_dup(fd), `fd ${fd}`);
}

/** A non-blocking, close-on-exec eventfd. */
export function eventfd(initval = 0): number {
  return check('eventfd', c_eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC));
}

const evBuf = new Uint8Array(8);
const evView = new DataView(evBuf.buffer);

/** Add v to an eventfd counter (wakes a waiter). Returns false if it would block. */
export function eventfdWrite(fd: number, v = 1): boolean {
  evView.setBigUint64(0, BigInt(v), true);
  const r = c_write(fd, evBuf, 8);
  if (r < 0) {
    const e = koffi.errno();
    if (e === EAGAIN) return false;
    throw new SysError('write(eventfd)', e, `fd ${fd}`);
  }
  return true;
}

/** Read and reset an eventfd counter; 0 if nothing pending. */
export function eventfdRead(fd: number): number {
  const r = c_read(fd, evBuf, 8);
  if (r < 0) {
    const e = koffi.errno();
    if (e === EAGAIN) return 0;
    throw new SysError('read(eventfd)', e, `fd ${fd}`);
  }
  return Number(evView.getBigUint64(0, true));
}

/** read() into buf; returns bytes, 0 at EOF, -1 if it would block. */
export function read(fd: number, buf: Uint8Array, len = buf.length): number {
  const r = c_read(fd, buf, len);
  if (r < 0) {
    const e = koffi.errno();
    if (e === EAGAIN) return -1;
    throw new SysError('read', e, `fd ${fd}`);
  }
  return r;
}

/** write() from buf; returns bytes written, -1 if it would block. */
export function write(fd: number, buf: Uint8Array, len = buf.length): number {
  const r = c_write(fd, buf, len);
  if (r < 0) {
    const e = koffi.errno();
    if (e === EAGAIN) return -1;
    throw new SysError('write', e, `fd ${fd}`);
  }
  return r;
}

/** poll(2) event bits (struct pollfd: int fd; short events; short revents; 8 bytes each). */
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLRDHUP = 0x2000;

/**
 * poll(2) over `n` struct pollfd in `fds` (revents written back) with `timeoutMs` (0: do not
 * wait). Returns how many have events; -1 on failure (errno left for the caller to ignore or read).
 */
export function pollFds(fds: Uint8Array, n: number, timeoutMs = 0): number {
  return c_poll(fds, n, timeoutMs) as number;
}

/** Give the CPU away (e.g. while waiting for a preempted peer of a ring). */
export function schedYield(): void {
  c_sched_yield();
}

/** Pin the calling thread (main or worker) to the given CPUs. */
export function setAffinity(cpus: number[]): void {
  const mask = new Uint8Array(128);
  for (const c of cpus) {
    if (c < 0 || c >= 1024) throw new SysError('sched_setaffinity', osConstants.errno.EINVAL, `cpu ${c}`);
    mask[c >> 3] |= 1 << (c & 7);
  }
  check('sched_setaffinity', c_sched_setaffinity(0, mask.length, mask), `cpus ${cpus.join(',')}`);
}

export { koffi };

const F_SETFD = 2;

/**
 * Replace this process's program with `file` (execve(2)): the same PID, parent and open stdio; returns
 * only by throwing. Node marks fds 0-2 close-on-exec at start, so they are made inheritable again first;
 * every other descriptor Node or this code opened is close-on-exec and goes away. Call it before any
 * thread of the program's own is started (execve ends every thread).
 */
export function execve(file: string, argv: string[], env: Record<string, string | undefined>): never {
  for (let fd = 0; fd <= 2; fd++) c_fcntl_int(fd, F_SETFD, 0);
  const envp: (string | null)[] = Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
  c_execve(file, [...argv, null], [...envp, null]);
  throw new SysError('execve', koffi.errno(), file);
}

/**
 * glibc's malloc_trim(0): give the free memory inside malloc's arenas (every thread's) back to the
 * kernel. glibc keeps freed chunks mapped (and resident) for reuse; after a burst of short-lived
 * native allocations (message and socket buffers, ArrayBuffer backing stores of churned connections)
 * that is RSS the process no longer uses. Returns whether anything was released; false without glibc.
 */
export function mallocTrim(): boolean {
  return c_malloc_trim !== null && c_malloc_trim(0) === 1;
}

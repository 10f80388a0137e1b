/**
 * A process-wide SIGBUS guard for memory another process can shrink under us.
 *
 * A vhost-user frontend shares its guest memory as a file (memfd, hugetlbfs).
 * If it truncates that file, our next load from the mapping raises SIGBUS and
 * the default action kills the whole switch. When a memfd can be sealed
 * against shrinking (F_SEAL_SHRINK) the kernel forbids the truncation; for
 * files that cannot be sealed this guard turns the fault into a record:
 *
 *  - a tiny x86-64 signal handler (machine code below, in its own read+execute
 *    page; no compiler needed at run time) looks the fault address up in a
 *    table of guarded ranges. Inside one, it maps a private zero page over the
 *    faulting page (mmap MAP_FIXED, at the range's page size: huge pages for
 *    hugetlbfs), counts the fault and its address in the range's slot, and
 *    returns: the load retries and reads zeros, the thread goes on;
 *  - outside every guarded range (or a SIGBUS that is not a fault on a
 *    mapping: kill(2), hardware errors), it chains to the handler that was
 *    installed before, or restores the default action and re-raises it, so
 *    the process dies exactly as it would have without the guard;
 *  - the owner of a range (the vhost-user backend) polls its slot's fault
 *    count ({@link SigbusGuard.watch}), drops that guest memory and reports
 *    why. Nothing is checked on the packet path.
 *
 * Signal handlers are per process: the guard is installed once (by whichever
 * thread first asks, normally the main thread at start) and found again by
 * other threads (workers) through sigaction(): the installed handler's page
 * starts with a magic word and the address of the shared table.
 *
 * Other architectures have no guard ({@link sigbusGuard} returns null): the
 * backend then refuses guest memory it cannot seal.
 */
import { koffi } from './libc.js';
import * as libc from './libc.js';

const lib = koffi.load('libc.so.6');
const c_sigaction = lib.func('int sigaction(int sig, const uint8_t *act, _Out_ uint8_t *old)');

const SIGBUS = 7;
const SA_SIGINFO = 4;
const SA_ONSTACK = 0x08000000;
/** glibc struct sigaction on Linux x86-64: handler @0, sa_mask (128 B) @8, sa_flags @136, sa_restorer @144. */
const SIGACTION_SIZE = 152;

/*
 * The handler, assembled from this source (GNU as, --64, Intel syntax) and
 * kept as bytes; offsets are from the start of the code page.
 *
 *   0  .quad 0x5355424753565354   magic "TSVSGBUS"
 *   8  .quad 1                    layout version
 *  16  data_ptr: .quad 0          address of the table (written at install)
 *  24  .quad 0, 0, 0, 0, 0        pad to 64
 *  64  handler:                   void h(int sig, siginfo_t *info, void *uc)
 *    mov r8, [rip + data_ptr]
 *    cmp dword ptr [rsi + 8], 2   si_code == BUS_ADRERR (access beyond the file)
 *    jne fallback
 *    mov rax, [rsi + 16]          si_addr
 *    mov ecx, [r8 + 64]           slots in use
 *    lea r9, [r8 + 128]
 *  scan: test ecx, ecx ; jz fallback
 *    cmp rax, [r9] ; jb next      start
 *    cmp rax, [r9 + 8] ; jae next end
 *    lock inc qword ptr [r9 + 24] slot faults
 *    mov [r9 + 32], rax           slot fault address
 *    lock inc qword ptr [r8 + 8]  total faults
 *    mov [r8 + 16], rax
 *    mov rsi, [r9 + 16] ; mov rdi, rsi ; neg rdi ; and rdi, rax   page base
 *    mov edx, 3 ; mov r10d, 0x32 ; mov r8, -1 ; xor r9d, r9d
 *    mov eax, 9 ; syscall         mmap(base, page, RW, PRIVATE|FIXED|ANON, -1, 0)
 *    cmp rax, -4095 ; jae die
 *    ret                          the access retries and reads zeros
 *  next: add r9, 64 ; dec ecx ; jmp scan
 *  fallback:
 *    mov rax, [r8 + 24] ; cmp rax, 1 ; jbe die   previous handler (SIG_DFL/SIG_IGN: none)
 *    jmp rax                      chain, same arguments
 *  die:
 *    mov r8, [rip + data_ptr] ; lea rsi, [r8 + 32]   zeroed kernel sigaction = SIG_DFL
 *    mov edi, 7 ; xor edx, edx ; mov r10d, 8 ; mov eax, 13 ; syscall   rt_sigaction
 *    mov eax, 39 ; syscall ; mov edi, eax            getpid
 *    mov eax, 186 ; syscall ; mov esi, eax           gettid
 *    mov edx, 7 ; mov eax, 234 ; syscall             tgkill(SIGBUS): delivered on return
 *    ret
 */
const CODE_HEX =
  '5453565347425553010000000000000000000000000000000000000000000000' +
  '0000000000000000000000000000000000000000000000000000000000000000' +
  '4c8b05c9ffffff837e0802756a488b4610418b48404d8d888000000085c97457' +
  '493b01724a493b41087344f049ff411849894120f049ff400849894010498b71' +
  '104889f748f7df4821c7ba0300000041ba3200000049c7c0ffffffff4531c9b8' +
  '090000000f05483d01f0ffff7315c34983c140ffc9eba5498b40184883f80176' +
  '02ffe04c8b0546ffffff498d7020bf0700000031d241ba08000000b80d000000' +
  '0f05b8270000000f0589c7b8ba0000000f0589c6ba07000000b8ea0000000f05' +
  'c3';
const HANDLER_OFF = 64;
const DATA_PTR_OFF = 16;
const MAGIC = 0x5355424753565354n;
const VERSION = 1n;

// Table layout (bytes).
const D_MAGIC = 0;
const D_TOTAL = 8;
const D_LAST = 16;
const D_PREV = 24;
// 32..64: zeroed kernel sigaction used to restore SIG_DFL
const D_USED = 64;
const D_SLOTS = 128;
const SLOT = 64;
const S_START = 0;
const S_END = 8;
const S_PAGE = 16;
const S_FAULTS = 24;
const S_ADDR = 32;
const S_CLAIM = 40;
/** Guarded ranges at once, process-wide (one per mapped guest memory region). */
export const SIGBUS_GUARD_SLOTS = 4096;
const DATA_SIZE = D_SLOTS + SLOT * SIGBUS_GUARD_SLOTS;

/** A fault the guard absorbed in a range. */
export interface GuardFault {
  /** Faults absorbed in the range so far. */
  count: number;
  /** Address of the last one. */
  addr: number;
}

/** This thread's handle on the process-wide guard table. */
export class SigbusGuard {
  /** Address of the table (shared by every thread). */
  readonly table: number;
  private readonly u64: BigUint64Array;
  private readonly i32: Int32Array;
  private readonly watchers = new Map<number, (f: GuardFault) => void>();
  private timer: NodeJS.Timeout | null = null;
  private seenTotal = 0n;

  constructor(table: number) {
    this.table = table;
    const ab = libc.view(table, DATA_SIZE);
    this.u64 = new BigUint64Array(ab);
    this.i32 = new Int32Array(ab);
  }

  /** Faults absorbed process-wide. */
  get totalFaults(): number {
    return Number(Atomics.load(this.u64, D_TOTAL / 8));
  }

  /**
   * Guard [addr, addr+size), a mapping whose pages are `pageSize` bytes (the
   * mapping starts on a page boundary and its VMA covers whole pages: a fault
   * replaces the whole page, so give more than 4096 only for hugetlbfs).
   * Returns the slot, or -1 if the table is full.
   */
  register(addr: number, size: number, pageSize = 4096): number {
    if (!(pageSize >= 4096) || (pageSize & (pageSize - 1)) !== 0 || addr % pageSize !== 0) pageSize = 4096;
    for (let i = 0; i < SIGBUS_GUARD_SLOTS; i++) {
      const claim = (D_SLOTS + i * SLOT + S_CLAIM) / 4;
      if (Atomics.compareExchange(this.i32, claim, 0, 1) !== 0) continue;
      const b = (D_SLOTS + i * SLOT) / 8;
      Atomics.store(this.u64, b + S_END / 8, 0n);
      Atomics.store(this.u64, b + S_FAULTS / 8, 0n);
      Atomics.store(this.u64, b + S_ADDR / 8, 0n);
      Atomics.store(this.u64, b + S_PAGE / 8, BigInt(pageSize));
      Atomics.store(this.u64, b + S_START / 8, BigInt(addr));
      Atomics.store(this.u64, b + S_END / 8, BigInt(addr + size));
      // slots in use: a high-water mark the handler scans up to
      for (;;) {
        const used = Atomics.load(this.i32, D_USED / 4);
        if (used > i || Atomics.compareExchange(this.i32, D_USED / 4, used, i + 1) === used) break;
      }
      return i;
    }
    return -1;
  }

  /** Stop guarding a slot (after its mapping is gone). */
  unregister(slot: number): void {
    if (!(slot >= 0 && slot < SIGBUS_GUARD_SLOTS)) return;
    this.watchers.delete(slot);
    if (this.watchers.size === 0) this.stopTimer();
    const b = (D_SLOTS + slot * SLOT) / 8;
    Atomics.store(this.u64, b + S_END / 8, 0n);
    Atomics.store(this.u64, b + S_START / 8, 0n);
    Atomics.store(this.i32, (D_SLOTS + slot * SLOT + S_CLAIM) / 4, 0);
  }

  /** Faults absorbed in a slot. */
  fault(slot: number): GuardFault {
    const b = (D_SLOTS + slot * SLOT) / 8;
    return { count: Number(Atomics.load(this.u64, b + S_FAULTS / 8)), addr: Number(Atomics.load(this.u64, b + S_ADDR / 8)) };
  }

  /**
   * Call `cb` (once) when a fault is absorbed in `slot`. Polled every
   * `periodMs` on this thread's event loop while any slot is watched.
   */
  watch(slot: number, cb: (f: GuardFault) => void, periodMs = 20): void {
    this.watchers.set(slot, cb);
    if (!this.timer) {
      this.timer = setInterval(() => this.poll(), periodMs);
      this.timer.unref();
    }
  }

  /** Check watched slots now (also run by the timer). */
  poll(): void {
    const total = Atomics.load(this.u64, D_TOTAL / 8);
    if (total === this.seenTotal) return;
    this.seenTotal = total;
    for (const [slot, cb] of [...this.watchers]) {
      const f = this.fault(slot);
      if (f.count === 0) continue;
      this.watchers.delete(slot);
      try {
        cb(f);
      } catch {
        /* a watcher's failure must not stop the others */
      }
    }
    if (this.watchers.size === 0) this.stopTimer();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

let guard: SigbusGuard | null = null;
let unavailable: string | null = null;

/** Can this platform have the guard at all? */
export function sigbusGuardSupported(): boolean {
  return process.platform === 'linux' && process.arch === 'x64';
}

function currentHandler(): number {
  const old = new Uint8Array(SIGACTION_SIZE);
  if (c_sigaction(SIGBUS, null, old) !== 0) return 0;
  return Number(new DataView(old.buffer).getBigUint64(0, true));
}

/** The table of an installed tsvs guard whose handler is at h, or 0. */
function tableOf(h: number): number {
  if (h <= 1 || h % 4096 !== HANDLER_OFF) return 0;
  // the handler's own page (mapped: the kernel just gave us its address as the live handler)
  const hdr = new BigUint64Array(libc.view(h - HANDLER_OFF, 24));
  if (hdr[0] !== MAGIC || hdr[1] !== VERSION) return 0;
  return Number(hdr[2]);
}

function install(): SigbusGuard {
  const prev = currentHandler();
  const existing = tableOf(prev);
  if (existing) return new SigbusGuard(existing);
  const table = libc.mmapAnon(DATA_SIZE);
  const code = libc.mmapAnon(4096);
  {
    const t = new BigUint64Array(libc.view(table, D_SLOTS));
    t[D_MAGIC / 8] = MAGIC;
    t[D_PREV / 8] = BigInt(prev);
    const page = new Uint8Array(libc.view(code, 4096));
    page.set(Buffer.from(CODE_HEX, 'hex'));
    new DataView(page.buffer).setBigUint64(DATA_PTR_OFF, BigInt(table), true);
    libc.mprotect(code, 4096, libc.PROT_READ | libc.PROT_EXEC);
    const act = new Uint8Array(SIGACTION_SIZE);
    const dv = new DataView(act.buffer);
    dv.setBigUint64(0, BigInt(code + HANDLER_OFF), true);
    dv.setInt32(136, SA_SIGINFO | SA_ONSTACK, true);
    const old = new Uint8Array(SIGACTION_SIZE);
    if (c_sigaction(SIGBUS, act, old) !== 0) throw new libc.SysError('sigaction', koffi.errno(), 'SIGBUS');
  }
  return new SigbusGuard(table);
}

/**
 * The process's SIGBUS guard (installed now if no thread has yet), or null
 * where there is none (not x86-64 Linux, or installing failed: see
 * {@link sigbusGuardProblem}).
 */
export function sigbusGuard(): SigbusGuard | null {
  if (guard || unavailable !== null) return guard;
  if (!sigbusGuardSupported()) {
    unavailable = `no SIGBUS guard on ${process.platform}/${process.arch} (x86-64 Linux only)`;
    return null;
  }
  try {
    const t = tableOf(currentHandler());
    guard = t ? new SigbusGuard(t) : install();
  } catch (e) {
    unavailable = `SIGBUS guard not installed: ${(e as Error).message}`;
  }
  return guard;
}

/** Why {@link sigbusGuard} returned null, or null. */
export function sigbusGuardProblem(): string | null {
  sigbusGuard();
  return unavailable;
}

/** Install the guard at process start (main thread), so every worker finds it. Returns false where unsupported. */
export function installSigbusGuard(): boolean {
  return sigbusGuard() !== null;
}

/**
 * Where the benchmark stands with the CPU scheduler.
 *
 * With the kernel's autogroup scheduling on (/proc/sys/kernel/sched_autogroup_enabled = 1, the
 * default of most distributions and of these machines), every session (setsid) is a task group of
 * its own, and the CFS shares the CPU between the groups first: a process's nice value only weighs
 * against the processes of its own session. Measured here (2026-12-03, one CPU, 2.5 s): a busy loop
 * at nice 19 in another session got 141 ticks, one at nice 0 in ours 130: `nice` did nothing. So a
 * benchmark at `nice -n -19` still gets only half a CPU next to another shell's `nice 19` compile;
 * that is how the latency tool came to stall for 1.2-2.3 s of every 3 s in the 2026-12-03 full run.
 *
 * The remedy is the autogroup's own nice value (/proc/PID/autogroup, see sched(7)): run.ts puts the
 * benchmark into a session of its own (re-exec with setsid) and gives that session's group the nice
 * value TSVS_BENCH_AUTOGROUP_NICE (default -19; 'off': stay in the caller's session). With -19 the
 * same busy loop got 258 ticks against the other session's 2.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

/** The session id of a process (field 6 of /proc/PID/stat), or NaN. */
export function sessionOf(pid: number | 'self' = 'self'): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[3]);
  } catch {
    return NaN;
  }
}

/** Autogroup scheduling is on (every session its own task group). */
export function autogroupEnabled(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

/** `/autogroup-N nice K` of a process, parsed, or null (no autogroups). */
export function autogroupOf(pid: number | 'self' = 'self'): { group: string; nice: number } | null {
  try {
    const m = /^(\S+)\s+nice\s+(-?\d+)/.exec(fs.readFileSync(`/proc/${pid}/autogroup`, 'utf8'));
    return m ? { group: m[1], nice: Number(m[2]) } : null;
  } catch {
    return null;
  }
}

/** Set the nice value of the autogroup (session) of `pid`; throws as the kernel refuses (EPERM, EINVAL). */
export function setAutogroupNice(pid: number, nice: number): void {
  fs.writeFileSync(`/proc/${pid}/autogroup`, String(nice));
}

/**
 * TSVS_BENCH_AUTOGROUP_NICE: a nice value in -20..19 (default -19), or null for 'off'.
 * Throws on anything else.
 */
export function wantedAutogroupNice(env: NodeJS.ProcessEnv = process.env): number | null {
  const v = env.TSVS_BENCH_AUTOGROUP_NICE;
  if (v === undefined || v === '') return -19;
  if (v === 'off') return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < -20 || n > 19) throw new Error(`TSVS_BENCH_AUTOGROUP_NICE must be an integer in -20..19 or 'off', got '${v}'`);
  return n;
}

/** One line for the report: how this process stands with the scheduler. */
export function schedLine(): string {
  const ag = autogroupOf();
  const own = sessionOf() === process.pid;
  let nice = NaN;
  try {
    nice = os.getPriority();
  } catch {
    /* no getpriority */
  }
  if (!autogroupEnabled() || ag === null) return `process nice ${nice}; autogroup scheduling off`;
  return `process nice ${nice}; ${own ? 'own session' : "the caller's session"}, ${ag.group} nice ${ag.nice}` +
    (ag.nice >= 0 ? ' (other sessions get an equal share of a CPU whatever their nice value: see bench/sched.ts)' : '');
}

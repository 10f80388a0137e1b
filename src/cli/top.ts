/**
 * `tsvs top`: a live view of the switch over the control socket, refreshed
 * every second: per port packet/bit rates and drop rates by reason, per PMD
 * thread busy %, ns per packet and cache-hit ratios, and the busiest datapath
 * flows. Keys (on a terminal): r/t/d/n sort ports by rx, tx, drops, name;
 * j/k or the arrows pick a port (its drops by reason and flows are shown);
 * Esc clears the pick; q quits. When stdout is not a terminal it prints
 * plain text frames (--count of them, default 1) and exits.
 */
import { rpcCall } from '../daemon/control.js';
import { runPaths } from '../daemon/run-dir.js';
import type { SwitchView, DpFlowRow } from '../metrics/view.js';
import { computeRates, type Sample, type Rates, type PortRate } from '../metrics/rates.js';
import { UsageError } from '../util/options.js';

/** 1234567 -> "1.23M" (SI, 3 significant digits). */
export function si(n: number): string {
  if (!Number.isFinite(n) || n === 0) return '0';
  const units = ['', 'k', 'M', 'G', 'T'];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 999.5 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return (n < 0 ? '-' : '') + (v >= 100 || i === 0 ? Math.round(v).toString() : v.toFixed(v >= 10 ? 1 : 2)) + units[i];
}

export type SortKey = 'rx' | 'tx' | 'drops' | 'name';

export interface TopState {
  sort: SortKey;
  /** Selected port name (null: none). */
  pick: string | null;
}

function cell(s: string, w: number, right = true): string {
  if (s.length > w) s = s.slice(0, w - 1) + '~';
  return right ? s.padStart(w) : s.padEnd(w);
}

export function sortPorts(ports: PortRate[], key: SortKey): PortRate[] {
  const by: Record<SortKey, (a: PortRate, b: PortRate) => number> = {
    rx: (a, b) => b.rxPps - a.rxPps || a.name.localeCompare(b.name),
    tx: (a, b) => b.txPps - a.txPps || a.name.localeCompare(b.name),
    drops: (a, b) => b.dropPps - a.dropPps || a.name.localeCompare(b.name),
    name: (a, b) => a.name.localeCompare(b.name),
  };
  return [...ports].sort(by[key]);
}

/** One screen of text. `tty` adds reverse video for the picked port and the key help. */
export function renderTop(r: Rates, st: TopState, o: { width: number; height: number; tty: boolean; runDir: string; time: Date }): string {
  const w = Math.max(60, o.width);
  const lines: string[] = [];
  const inv = (s: string): string => (o.tty ? `\x1b[7m${s}\x1b[0m` : s);
  const bold = (s: string): string => (o.tty ? `\x1b[1m${s}\x1b[0m` : s);
  lines.push(bold(`tsvs top - ${o.time.toISOString().slice(11, 19)} UTC - ${o.runDir}`) +
    `   buffers ${r.pool.count - r.pool.free}/${r.pool.count} in use   datapath flows ${r.totalFlows}`);
  lines.push('');
  lines.push(bold('PMD  CPU   BUSY%   NS/PKT    RX PPS   EMC%  MEGAFLOW%  UPCALLS/S  FLOWS  HELD'));
  for (const p of r.pmds) {
    lines.push(
      `${cell(String(p.id), 3)}  ${cell(p.cpu === null ? 'any' : String(p.cpu), 3)}  ${cell(p.busyPct.toFixed(1), 6)}  ${cell(p.nsPerPacket.toFixed(0), 7)}  ${cell(si(p.rxPps), 8)}  ${cell(p.emcPct.toFixed(1), 5)}  ${cell(p.megaflowPct.toFixed(1), 9)}  ${cell(si(p.upcallPps), 9)}  ${cell(String(p.flows), 5)}  ${cell(String(p.pendingUpcalls), 4)}`,
    );
  }
  lines.push('');
  const sortMark = (k: SortKey, label: string): string => (st.sort === k ? `${label}*` : label);
  lines.push(bold(`${cell(sortMark('name', 'PORT'), 16, false)} ${cell('BRIDGE', 8, false)} LINK  ${cell(sortMark('rx', 'RX PPS'), 9)} ${cell('RX BPS', 8)} ${cell(sortMark('tx', 'TX PPS'), 9)} ${cell('TX BPS', 8)} ${cell(sortMark('drops', 'DROP/S'), 8)}  DROPS BY REASON /s`));
  const ports = sortPorts(r.ports, st.sort);
  for (const p of ports) {
    const reasons = Object.entries(p.drops).map(([k, v]) => `${k}=${si(v)}`).join(' ');
    let line = `${cell(p.name, 16, false)} ${cell(p.bridge, 8, false)} ${cell(p.link, 4, false)}  ${cell(si(p.rxPps), 9)} ${cell(si(p.rxBps), 8)} ${cell(si(p.txPps), 9)} ${cell(si(p.txBps), 8)} ${cell(si(p.dropPps), 8)}  ${reasons}`;
    if (line.length > w) line = line.slice(0, w);
    lines.push(st.pick === p.name ? inv(line.padEnd(Math.min(w, line.length))) : line);
  }
  const picked = st.pick !== null ? r.ports.find((p) => p.name === st.pick) : undefined;
  if (picked) {
    lines.push('');
    lines.push(bold(`port ${picked.name}: rx ${picked.rxTotal} packets, tx ${picked.txTotal} packets in all; polled by pmd ${picked.pmd}`));
  }
  lines.push('');
  const flows = picked ? r.flows.filter((f) => new RegExp(`(^|,)in_port=${escapeRe(picked.name)}(,|$)`).test(f.match)) : r.flows;
  lines.push(bold(`${picked ? `FLOWS FROM ${picked.name}` : 'TOP FLOWS'} ${cell('PPS', 9)} ${cell('BPS', 8)}  MATCH -> ACTIONS`));
  const room = Math.max(3, o.height - lines.length - (o.tty ? 2 : 0));
  for (const f of flows.slice(0, o.tty ? room : 10)) {
    let line = `pmd ${cell(String(f.pmd), 2)}       ${cell(si(f.pps), 9)} ${cell(si(f.bps), 8)}  ${f.match} -> ${f.actions}`;
    if (line.length > w) line = line.slice(0, w);
    lines.push(line);
  }
  if (flows.length === 0) lines.push('(no datapath flows)');
  if (o.tty) {
    while (lines.length < o.height - 1) lines.push('');
    lines.length = Math.min(lines.length, o.height - 1);
    lines.push(inv(' q quit  r/t/d/n sort by rx/tx/drops/name  j/k or arrows pick a port  Esc clear '.slice(0, w)));
  }
  return lines.join('\n');
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function sample(ctl: string): Promise<Sample> {
  const r = (await rpcCall(ctl, 'observe', { flows: true }, 10000)) as { data: { view: SwitchView; flows?: DpFlowRow[] } };
  return { view: r.data.view, flows: r.data.flows ?? [] };
}

export async function run(values: Record<string, unknown>): Promise<number> {
  const ctl = runPaths((values['run-dir'] as string | undefined) ?? undefined).control;
  const runDir = runPaths((values['run-dir'] as string | undefined) ?? undefined).dir;
  const interval = values.interval === undefined ? 1 : Number(values.interval);
  if (!(interval >= 0.1 && interval <= 3600)) throw new UsageError(`--interval must be 0.1..3600 seconds, got '${String(values.interval)}'`);
  const tty = process.stdout.isTTY === true && values.plain !== true;
  const count = values.count === undefined ? (tty ? Infinity : 1) : Number(values.count);
  if (!(Number.isInteger(count) && count >= 1) && count !== Infinity) throw new UsageError(`--count must be an integer >= 1, got '${String(values.count)}'`);
  const st: TopState = { sort: 'rx', pick: null };
  const sortArg = values.sort as string | undefined;
  if (sortArg !== undefined) {
    if (!['rx', 'tx', 'drops', 'name'].includes(sortArg)) throw new UsageError(`--sort must be rx, tx, drops or name, got '${sortArg}'`);
    st.sort = sortArg as SortKey;
  }
  let prev = await sample(ctl);
  let last: Rates | null = null;
  if (!tty) {
    // plain text: frames of rates over `interval`
    for (let i = 0; i < count; i++) {
      await new Promise((r) => setTimeout(r, interval * 1000));
      const cur = await sample(ctl);
      const r = computeRates(prev, cur);
      prev = cur;
      process.stdout.write(renderTop(r, st, { width: 200, height: 1000, tty: false, runDir, time: new Date(cur.view.timeMs) }) + '\n' + (i + 1 < count ? '\n' : ''));
    }
    return 0;
  }
  const out = process.stdout;
  const stdin = process.stdin;
  return new Promise<number>((resolve) => {
    let frames = 0;
    let timer: NodeJS.Timeout | null = null;
    let ended = false;
    const draw = (): void => {
      if (!last) return;
      out.write('\x1b[H\x1b[2J' + renderTop(last, st, { width: out.columns ?? 120, height: out.rows ?? 40, tty: true, runDir, time: new Date() }));
    };
    const finish = (code: number, msg?: string): void => {
      if (ended) return;
      ended = true;
      if (timer) clearTimeout(timer);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      out.write('\x1b[?25h\x1b[?1049l');
      if (msg) process.stderr.write(msg + '\n');
      resolve(code);
    };
    const tick = (): void => {
      sample(ctl).then(
        (cur) => {
          if (ended) return;
          last = computeRates(prev, cur);
          prev = cur;
          draw();
          frames++;
          if (frames >= count) finish(0);
          else timer = setTimeout(tick, interval * 1000);
        },
        (e: Error) => finish(1, `tsvs top: ${e.message}`),
      );
    };
    out.write('\x1b[?1049h\x1b[?25l');
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.setEncoding('utf8');
    stdin.resume();
    stdin.on('data', (k: string) => {
      const names = last ? sortPorts(last.ports, st.sort).map((p) => p.name) : [];
      const move = (by: number): void => {
        if (names.length === 0) return;
        const i = st.pick === null ? (by > 0 ? -1 : names.length) : names.indexOf(st.pick);
        st.pick = names[Math.max(0, Math.min(names.length - 1, i + by))];
      };
      if (k === 'q' || k === 'Q' || k === '\x03') return finish(0);
      else if (k === 'r') st.sort = 'rx';
      else if (k === 't') st.sort = 'tx';
      else if (k === 'd') st.sort = 'drops';
      else if (k === 'n') st.sort = 'name';
      else if (k === 'j' || k === '\x1b[B') move(1);
      else if (k === 'k' || k === '\x1b[A') move(-1);
      else if (k === '\x1b') st.pick = null;
      else return;
      draw();
    });
    process.once('SIGTERM', () => finish(0));
    out.on('resize', draw);
    timer = setTimeout(tick, interval * 1000);
    out.write('\x1b[H\x1b[2Jtsvs top: measuring...');
  });
}

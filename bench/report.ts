/**
 * Benchmark results: collecting repeated measurements per (case, metric,
 * subject), and writing latest.json, latest.md (summary tables) and one SVG
 * bar chart per scenario (hand-written SVG, no dependencies).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { summarize, ratioOfMedians, fmt, type Summary } from './stats.js';
import { schedLine } from './sched.js';

export interface LossSummary {
  runs: number;
  sent: number;
  lost: number;
  /** Largest per-run lost/sent. */
  maxFraction: number;
}

export interface Row {
  case: string;
  metric: string;
  subject: string;
  unit: string;
  summary: Summary;
  loss?: LossSummary;
  /**
   * Runs that did not measure what the row says (the scenario's own checks failed: a load that
   * fell short of its rate, a tool that was not running), with the reason of each; they are not
   * in the summary. A row with no valid run has an empty summary and says "invalid".
   */
  invalid?: string[];
}

export interface RatioRow {
  case: string;
  metric: string;
  /** e.g. 'tsvs/ovs-dpdk' */
  label: string;
  value: number;
  /** Why there is no ratio: a side whose every run was invalid (value is NaN). */
  invalid?: string;
}

export type ScenarioStatus = 'ok' | 'partial' | 'unavailable' | 'failed';

export interface ScenarioResult {
  name: string;
  title: string;
  status: ScenarioStatus;
  /** subject (or '*') -> why it could not run. */
  unavailable: Record<string, string>;
  rows: Row[];
  ratios: RatioRow[];
  notes: string[];
  seconds: number;
}

export interface Machine {
  nproc: number;
  model: string;
  kernel: string;
  node: string;
  load: string;
  /** How the run stood with the scheduler (bench/sched.ts: nice, session, autogroup). */
  sched?: string;
}

export interface BenchReport {
  date: string;
  machine: Machine;
  git: string;
  options: { reps: number; seconds: number; warmup: number; quick: boolean; scenarios: string[] };
  scenarios: ScenarioResult[];
}

/** Accumulates one scenario's measurements across repetitions. */
/** One row of a Collector: its runs' values, end-to-end loss and invalid runs' reasons. */
interface Entry {
  c: string;
  m: string;
  s: string;
  unit: string;
  v: number[];
  loss?: LossSummary;
  invalid?: string[];
}

export class Collector {
  private readonly vals = new Map<string, Entry>();
  private readonly order: string[] = [];
  readonly unavailable: Record<string, string> = {};
  readonly notes: string[] = [];
  readonly ratioSpecs: { case?: string; metric?: string; a: string; b: string; label?: string }[] = [];
  private readonly extraRatios: RatioRow[] = [];
  private readonly t0 = Date.now();

  constructor(
    readonly name: string,
    readonly title: string,
  ) {}

  private key(c: string, m: string, s: string): string {
    return `${c}\u0000${m}\u0000${s}`;
  }

  /** Record one measurement; `sent/received` (optional) are this run's end-to-end counts. */
  /** The row of (case, metric, subject), made on first use. */
  private entry(c: string, metric: string, subject: string, unit: string): Entry {
    const k = this.key(c, metric, subject);
    let e = this.vals.get(k);
    if (!e) {
      e = { c, m: metric, s: subject, unit, v: [] };
      this.vals.set(k, e);
      this.order.push(k);
    }
    return e;
  }

  add(c: string, metric: string, subject: string, unit: string, value: number, counts?: { sent: number; received: number }): void {
    const e = this.entry(c, metric, subject, unit);
    e.v.push(value);
    if (counts) {
      const lost = Math.max(0, counts.sent - counts.received);
      e.loss ??= { runs: 0, sent: 0, lost: 0, maxFraction: 0 };
      e.loss.runs++;
      e.loss.sent += counts.sent;
      e.loss.lost += lost;
      e.loss.maxFraction = Math.max(e.loss.maxFraction, counts.sent > 0 ? lost / counts.sent : 0);
    }
  }

  /**
   * A run of (case, metric, subject) measured something else than the row means (the
   * scenario's validity check failed): kept out of the summary, its reason shown with the row.
   */
  invalid(c: string, metric: string, subject: string, unit: string, reason: string): void {
    const e = this.entry(c, metric, subject, unit);
    (e.invalid ??= []).push(reason.split('\n')[0].slice(0, 300));
  }

  private readonly failures = new Map<string, string[]>();

  /**
   * A run of `subject` failed for a reason that may not repeat (noisy shared
   * machine, a peer that crashed once): noted, and the subject stays in later
   * repetitions. A subject with failures and no measurement ends up unavailable.
   */
  fail(subject: string, rep: number, reason: string): void {
    const r = reason.split('\n')[0].slice(0, 400);
    const list = this.failures.get(subject) ?? [];
    list.push(r);
    this.failures.set(subject, list);
    this.note(`${subject}: run ${rep + 1} failed: ${r}`);
  }

  /** Mark a subject unavailable (first reason wins). */
  markUnavailable(subject: string, reason: string): void {
    this.unavailable[subject] ??= reason.split('\n')[0].slice(0, 400);
  }

  isUnavailable(subject: string): boolean {
    return subject in this.unavailable;
  }

  note(s: string): void {
    if (!this.notes.includes(s)) this.notes.push(s);
  }

  /** Report median(a)/median(b) for every case/metric both have (optionally restricted). */
  ratio(a: string, b: string, o: { case?: string; metric?: string; label?: string } = {}): void {
    this.ratioSpecs.push({ ...o, a, b });
  }

  /** A ratio between two arbitrary rows (e.g. across scenarios' metrics). */
  ratioRows(label: string, c: string, metric: string, a: { case: string; metric: string; subject: string }, b: { case: string; metric: string; subject: string }): void {
    const ra = this.vals.get(this.key(a.case, a.metric, a.subject));
    const rb = this.vals.get(this.key(b.case, b.metric, b.subject));
    this.extraRatios.push({ case: c, metric, label, value: ratioOfMedians(ra && summarize(ra.v), rb && summarize(rb.v)) });
  }

  result(): ScenarioResult {
    const rows: Row[] = this.order.map((k) => {
      const e = this.vals.get(k)!;
      return { case: e.c, metric: e.m, subject: e.s, unit: e.unit, summary: summarize(e.v), loss: e.loss, ...(e.invalid ? { invalid: e.invalid.slice() } : {}) };
    });
    const ratios: RatioRow[] = [];
    for (const sp of this.ratioSpecs) {
      for (const ra of rows) {
        if (ra.subject !== sp.a || (sp.case && ra.case !== sp.case) || (sp.metric && ra.metric !== sp.metric)) continue;
        const rb = rows.find((r) => r.subject === sp.b && r.case === ra.case && r.metric === ra.metric);
        if (!rb) continue;
        const label = sp.label ?? `${sp.a}/${sp.b}`;
        const bad = [ra, rb].filter((r) => r.summary.n === 0 && r.invalid?.length);
        if (bad.length) ratios.push({ case: ra.case, metric: ra.metric, label, value: NaN, invalid: bad.map((r) => `${r.subject}: every run invalid`).join('; ') });
        else ratios.push({ case: ra.case, metric: ra.metric, label, value: ratioOfMedians(ra.summary, rb.summary) });
      }
    }
    ratios.push(...this.extraRatios);
    const subjects = new Set(rows.map((r) => r.subject));
    for (const [subj, why] of this.failures) if (!subjects.has(subj)) this.markUnavailable(subj, `every run failed: ${why[0]}`);
    const nUnavail = Object.keys(this.unavailable).length;
    const anyInvalid = rows.some((r) => r.invalid?.length);
    const status: ScenarioStatus = rows.length === 0 ? (nUnavail ? 'unavailable' : 'failed') : nUnavail || this.failures.size || anyInvalid ? 'partial' : 'ok';
    return { name: this.name, title: this.title, status, unavailable: { ...this.unavailable }, rows, ratios, notes: this.notes.slice(), seconds: Math.round((Date.now() - this.t0) / 1000) };
  }
}

export function machineInfo(): Machine {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    /* no /proc */
  }
  return {
    nproc: os.availableParallelism(),
    model,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    load: os.loadavg().map((x) => x.toFixed(2)).join(' '),
    sched: schedLine(),
  };
}

export function gitCommit(cwd: string): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

// ---------------- Markdown ----------------

function lossText(l: LossSummary | undefined): string {
  if (!l) return '';
  if (l.lost === 0) return '0';
  return `${(100 * (l.lost / Math.max(1, l.sent))).toFixed(3)}% (max ${(100 * l.maxFraction).toFixed(3)}%)`;
}

function digitsFor(unit: string): number {
  return unit === 'Mpps' ? 3 : unit === 'ms' || unit === 'us' ? 3 : unit === 'MiB' ? 1 : 2;
}

export function toMarkdown(r: BenchReport): string {
  const L: string[] = [];
  L.push('# tsvs benchmark results', '');
  L.push(`- Date: ${r.date}`);
  L.push(`- Machine: ${r.machine.nproc} CPUs (\`nproc\`), ${r.machine.model}; ${r.machine.kernel}; Node ${r.machine.node}; load average at start ${r.machine.load}${r.machine.sched ? `; scheduler: ${r.machine.sched}` : ''}`);
  L.push(`- Commit: ${r.git}`);
  L.push(`- Method: ${r.options.reps} repetition(s), subjects interleaved within each repetition, ${r.options.warmup} s warm-up excluded, ${r.options.seconds} s measured per run; median [min–max] of the runs; ratios are ratios of medians. Loss = sent − received end to end (never counted as throughput).${r.options.quick ? ' **Quick mode** (1 repetition, short runs): indicative only.' : ''}`);
  L.push('');
  for (const s of r.scenarios) {
    L.push(`## ${s.name}: ${s.title}`, '');
    L.push(`Status: **${s.status}** (${s.seconds} s)`, '');
    for (const [subj, why] of Object.entries(s.unavailable)) L.push(`- unavailable: ${subj === '*' ? 'scenario' : subj}: ${why}`);
    if (Object.keys(s.unavailable).length) L.push('');
    if (s.rows.length) {
      L.push('| case | metric | subject | median | min | max | runs | loss |', '|---|---|---|---:|---:|---:|---:|---|');
      for (const row of s.rows) {
        const d = digitsFor(row.unit);
        const nInv = row.invalid?.length ?? 0;
        const runs = nInv ? `${row.summary.n} (+${nInv} invalid)` : `${row.summary.n}`;
        if (row.summary.n === 0 && nInv) L.push(`| ${row.case} | ${row.metric} (${row.unit}) | ${row.subject} | **invalid** | | | ${runs} | ${lossText(row.loss)} |`);
        else L.push(`| ${row.case} | ${row.metric} (${row.unit}) | ${row.subject} | ${fmt(row.summary.median, d)} | ${fmt(row.summary.min, d)} | ${fmt(row.summary.max, d)} | ${runs} | ${lossText(row.loss)} |`);
      }
      L.push('');
      const inv = s.rows.filter((r) => r.invalid?.length);
      if (inv.length) {
        L.push('Invalid runs (not in the summaries above):');
        for (const r of inv) L.push(`- ${r.case} · ${r.metric} · ${r.subject}: ${[...new Set(r.invalid)].join('; ')}`);
        L.push('');
      }
    }
    if (s.ratios.length) {
      L.push('| case | metric | ratio | value |', '|---|---|---|---:|');
      for (const q of s.ratios) L.push(`| ${q.case} | ${q.metric} | ${q.label} | ${q.invalid ? `**invalid** (${q.invalid})` : fmt(q.value, 3)} |`);
      L.push('');
    }
    if (s.rows.length) L.push(`![${s.name}](${s.name}.svg)`, '');
    for (const n of s.notes) L.push(`- ${n}`);
    if (s.notes.length) L.push('');
  }
  return L.join('\n');
}

// ---------------- SVG ----------------

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

/** Short axis label: 0.51, 14, 6.8k, 2.3M. */
export function tick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  return fmt(v, a < 10 ? 2 : 0);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Grouped bar chart: one group per (case, metric), one bar per subject (median, min–max whisker). */
/**
 * Rows of one unit whose groups (case · metric) differ by more than 20x in
 * size go to two panels, split at the widest gap (on a log scale) between
 * group maxima (and again while a part still spans more than 20x), so small
 * values are not flattened by large ones (e.g. µs round trips next to a
 * ping's hundreds of µs).
 */
export function splitByMagnitude(perUnit: Row[][]): Row[][] {
  const out: Row[][] = [];
  for (const rs of perUnit) {
    const key = (r: Row): string => `${r.case} · ${r.metric}`;
    const gmax = new Map<string, number>();
    for (const r of rs) gmax.set(key(r), Math.max(gmax.get(key(r)) ?? 0, r.summary.median));
    const vals = [...gmax.values()].filter((v) => v > 0).sort((a, b) => a - b);
    if (vals.length < 2 || vals[vals.length - 1] / vals[0] <= 20) {
      out.push(rs);
      continue;
    }
    let cut = vals[1];
    let best = 0;
    for (let i = 1; i < vals.length; i++) {
      const g = Math.log(vals[i] / vals[i - 1]);
      if (g > best) {
        best = g;
        cut = vals[i];
      }
    }
    const small = rs.filter((r) => (gmax.get(key(r)) ?? 0) < cut);
    const large = rs.filter((r) => (gmax.get(key(r)) ?? 0) >= cut);
    // each side may still span more than 20x: split it again
    for (const part of [small, large]) if (part.length) out.push(...splitByMagnitude([part]));
  }
  return out;
}

export function toSvg(s: ScenarioResult): string | null {
  const rows = s.rows.filter((r) => r.summary.n > 0);
  if (rows.length === 0) return null;
  const units = [...new Set(rows.map((r) => r.unit))];
  const subjects = [...new Set(rows.map((r) => r.subject))];
  const color = (subj: string): string => PALETTE[subjects.indexOf(subj) % PALETTE.length];
  const barW = 22;
  const gap = 26;
  const panelH = 220;
  const left = 60;
  const top = 40;
  const panels = splitByMagnitude(units.map((u) => rows.filter((r) => r.unit === u))).map((rs) => {
    const u = rs[0].unit;
    const groups = [...new Set(rs.map((r) => `${r.case} · ${r.metric}`))];
    const maxLen = Math.max(...groups.map((g) => g.length));
    // labels are rotated -35 degrees and end under their group: room to the left and below
    const labelW = maxLen * 6 * Math.cos((35 * Math.PI) / 180);
    const labelH = maxLen * 6 * Math.sin((35 * Math.PI) / 180) + 20;
    const width = groups.reduce((w, g) => w + rs.filter((r) => `${r.case} · ${r.metric}` === g).length * barW + gap, 0);
    return { u, rs, groups, labelW, labelH, width };
  });
  const titleText = `${s.name}: ${s.title}`;
  const width = Math.max(420, left + titleText.length * 8, left + subjects.length * 150, ...panels.map((p) => left + Math.max(10, p.labelW - 20) + p.width + 20));
  const legendH = 24;
  const height = top + legendH + panels.reduce((h, p) => h + panelH + p.labelH + 20, 0);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${Math.ceil(width)}" height="${Math.ceil(height)}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(titleText)}</text>`);
  subjects.forEach((subj, i) => {
    const x = left + i * 150;
    out.push(`<rect x="${x}" y="26" width="10" height="10" fill="${color(subj)}"/><text x="${x + 14}" y="35">${esc(subj)}</text>`);
  });
  let y0 = top + legendH;
  for (const p of panels) {
    const maxV = Math.max(...p.rs.map((r) => (Number.isFinite(r.summary.max) ? r.summary.max : r.summary.median))) || 1;
    const yOf = (v: number): number => y0 + panelH - (v / maxV) * panelH;
    const x0 = left + Math.max(10, p.labelW - 20);
    out.push(`<line x1="${left}" y1="${y0}" x2="${left}" y2="${y0 + panelH}" stroke="black"/>`);
    out.push(`<line x1="${left}" y1="${y0 + panelH}" x2="${Math.ceil(width) - 10}" y2="${y0 + panelH}" stroke="black"/>`);
    for (let t = 0; t <= 4; t++) {
      const v = (maxV * t) / 4;
      const y = yOf(v);
      out.push(`<line x1="${left - 4}" y1="${y}" x2="${left}" y2="${y}" stroke="black"/><text x="${left - 6}" y="${y + 4}" text-anchor="end">${esc(tick(v))}</text>`);
    }
    out.push(`<text x="14" y="${y0 + panelH / 2}" transform="rotate(-90 14 ${y0 + panelH / 2})" text-anchor="middle">${esc(p.u)}</text>`);
    let x = x0;
    for (const g of p.groups) {
      const gr = p.rs.filter((r) => `${r.case} · ${r.metric}` === g);
      const gx = x;
      for (const r of gr) {
        const m = r.summary.median;
        out.push(`<rect x="${x}" y="${yOf(m)}" width="${barW - 4}" height="${y0 + panelH - yOf(m)}" fill="${color(r.subject)}"><title>${esc(`${r.subject} ${g}: ${fmt(m, 3)} ${r.unit} [${fmt(r.summary.min, 3)}–${fmt(r.summary.max, 3)}]`)}</title></rect>`);
        if (r.summary.n > 1) {
          const cx = x + (barW - 4) / 2;
          out.push(`<line x1="${cx}" y1="${yOf(r.summary.min)}" x2="${cx}" y2="${yOf(r.summary.max)}" stroke="black"/>`);
        }
        x += barW;
      }
      const cx = (gx + x - 4) / 2;
      out.push(`<text x="${cx}" y="${y0 + panelH + 14}" text-anchor="end" transform="rotate(-35 ${cx} ${y0 + panelH + 14})">${esc(g)}</text>`);
      x += gap;
    }
    y0 += panelH + p.labelH + 20;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Write latest.json, latest.md and <scenario>.svg into dir. */
/** The report in dir/latest.json, or null if there is none (or it is not a report). */
export function readReport(dir: string): BenchReport | null {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, 'latest.json'), 'utf8')) as BenchReport;
    return Array.isArray(r.scenarios) ? r : null;
  } catch {
    return null;
  }
}

export function writeReport(dir: string, r: BenchReport): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const w = (name: string, text: string): void => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    files.push(p);
  };
  w('latest.json', JSON.stringify(r, null, 2) + '\n');
  w('latest.md', toMarkdown(r));
  for (const s of r.scenarios) {
    const svg = toSvg(s);
    if (svg) w(`${s.name}.svg`, svg);
  }
  return files;
}

/**
 * Statistics and parsers for the benchmark suite: summaries of repeated
 * measurements, ratios of medians, percentiles, and parsers for the text the
 * peers print (dpdk-testpmd port stats, ping, trafgen, ip -s -j link).
 */

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  values: number[];
}

/** Median/min/max of finite values (NaN entries ignored); n = 0 gives NaNs. */
export function summarize(values: number[]): Summary {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN, values: [] };
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { n: v.length, median, min: v[0], max: v[v.length - 1], values: values.slice() };
}

/** Percentile p in [0,100] by linear interpolation between closest ranks. */
export function percentile(values: number[], p: number): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  if (v.length === 1) return v[0];
  const r = (Math.min(100, Math.max(0, p)) / 100) * (v.length - 1);
  const lo = Math.floor(r);
  const hi = Math.ceil(r);
  return v[lo] + (v[hi] - v[lo]) * (r - lo);
}

/** Ratio of medians a/b (NaN when either is missing or b is 0). */
export function ratioOfMedians(a: Summary | undefined, b: Summary | undefined): number {
  if (!a || !b || a.n === 0 || b.n === 0 || b.median === 0) return NaN;
  return a.median / b.median;
}

/** Rate per second of a counter between two snapshots. */
export function rate(c0: number, c1: number, ms: number): number {
  if (!(ms > 0)) return NaN;
  return ((c1 - c0) * 1000) / ms;
}

export interface Loss {
  sent: number;
  received: number;
  lost: number;
  /** lost / sent (0 when nothing was sent). */
  fraction: number;
}

export function loss(sent: number, received: number): Loss {
  const lost = Math.max(0, sent - received);
  return { sent, received, lost, fraction: sent > 0 ? lost / sent : 0 };
}

// ---------------- dpdk-testpmd ----------------

export interface TestpmdPortStats {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
}

/** Parse `show port stats all` (one block per port). */
export function parseTestpmdPortStats(out: string): TestpmdPortStats[] {
  const res: TestpmdPortStats[] = [];
  const re = /NIC statistics for port (\d+)\s*#+\s*\n([\s\S]*?)#{20,}/g;
  const num = (s: string, r: RegExp): number => {
    const m = r.exec(s);
    return m ? Number(m[1]) : NaN;
  };
  for (let m = re.exec(out); m; m = re.exec(out)) {
    const b = m[2];
    res.push({
      port: Number(m[1]),
      rxPackets: num(b, /RX-packets:\s+(\d+)/),
      rxMissed: num(b, /RX-missed:\s+(\d+)/),
      rxErrors: num(b, /RX-errors:\s+(\d+)/),
      rxNombuf: num(b, /RX-nombuf:\s+(\d+)/),
      txPackets: num(b, /TX-packets:\s+(\d+)/),
      txErrors: num(b, /TX-errors:\s+(\d+)/),
    });
  }
  return res;
}

export interface TestpmdFwdStats {
  /** Per port, from the "Forward statistics for port N" blocks. */
  ports: { port: number; rxPackets: number; rxDropped: number; txPackets: number; txDropped: number }[];
  total: { rxPackets: number; rxDropped: number; txPackets: number; txDropped: number };
}

/** Parse the statistics testpmd prints on `stop` (or on exit). */
export function parseTestpmdFwdStats(out: string): TestpmdFwdStats {
  const ports: TestpmdFwdStats['ports'] = [];
  const re = /Forward statistics for port (\d+)\s*-+\s*\n\s*RX-packets:\s+(\d+)\s+RX-dropped:\s+(\d+)[^\n]*\n\s*TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)/g;
  for (let m = re.exec(out); m; m = re.exec(out)) {
    ports.push({ port: Number(m[1]), rxPackets: Number(m[2]), rxDropped: Number(m[3]), txPackets: Number(m[4]), txDropped: Number(m[5]) });
  }
  const i = out.lastIndexOf('Accumulated forward statistics');
  let total = { rxPackets: NaN, rxDropped: NaN, txPackets: NaN, txDropped: NaN };
  if (i >= 0) {
    const b = out.slice(i);
    const rx = /RX-packets:\s+(\d+)\s+RX-dropped:\s+(\d+)/.exec(b);
    const tx = /TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)/.exec(b);
    if (rx && tx) total = { rxPackets: Number(rx[1]), rxDropped: Number(rx[2]), txPackets: Number(tx[1]), txDropped: Number(tx[2]) };
  }
  if (ports.length === 0 && Number.isNaN(total.rxPackets)) throw new Error(`no forward statistics in testpmd output:\n${out.slice(-1500)}`);
  return { ports, total };
}

// ---------------- ping ----------------

export interface PingResult {
  transmitted: number;
  received: number;
  rttsMs: number[];
}

/** Parse `ping` output: each `time=X ms` line and the transmitted/received summary. */
export function parsePing(out: string): PingResult {
  const rtts: number[] = [];
  const re = /time[=<]([\d.]+) ?ms/g;
  for (let m = re.exec(out); m; m = re.exec(out)) rtts.push(Number(m[1]));
  const s = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(out);
  return { transmitted: s ? Number(s[1]) : rtts.length, received: s ? Number(s[2]) : rtts.length, rttsMs: rtts };
}

// ---------------- kernel interface counters ----------------

export interface LinkCounters {
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
}

/** Parse `ip -s -j link show DEV` (JSON array with stats64). */
export function parseIpLinkStats(json: string): LinkCounters {
  const a = JSON.parse(json) as { stats64?: { rx: Record<string, number>; tx: Record<string, number> } }[];
  const s = a[0]?.stats64;
  if (!s) throw new Error(`no stats64 in ip -s -j link output: ${json.slice(0, 200)}`);
  return { rxPackets: s.rx.packets, txPackets: s.tx.packets, rxDropped: s.rx.dropped, txDropped: s.tx.dropped };
}

// ---------------- formatting ----------------

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '–';
  return x.toFixed(digits);
}

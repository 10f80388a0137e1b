/**
 * `tsvs capture PORT [-w FILE|-] [-c N] [--direction rx|tx|both] [FILTER]`:
 * copies of a port's frames, as a pcap file (or pcap on stdout with `-w -`,
 * for `| tcpdump -r -`), or one summary line per frame. FILTER is an
 * ovs-ofctl match (e.g. `udp,tp_dst=53`). The switch copies frames into a
 * bounded ring; a full ring drops copies (never packets) and the count is
 * reported at the end.
 */
import * as fs from 'node:fs';
import { rpcCall } from '../daemon/control.js';
import { runPaths } from '../daemon/run-dir.js';
import { pcapHeader, pcapRecord, frameSummary } from '../capture/pcap.js';
import { UsageError } from '../util/options.js';

interface ReadResult {
  frames: { ts: number; dir: string; len: number; data: string }[];
  overflow: number;
  seen: number;
  filtered: number;
  delivered: number;
  done: boolean;
  reason?: string;
}

export async function run(values: Record<string, unknown>, pos: string[]): Promise<number> {
  if (pos.length < 1) throw new UsageError('missing PORT');
  const ctl = runPaths((values['run-dir'] as string | undefined) ?? undefined).control;
  const count = values.count === undefined ? 0 : Number(values.count);
  if (!Number.isInteger(count) || count < 0) throw new UsageError(`-c must be a count >= 0, got '${String(values.count)}'`);
  const direction = String(values.direction ?? 'both');
  if (!['rx', 'tx', 'both'].includes(direction)) throw new UsageError(`--direction must be rx, tx or both, got '${direction}'`);
  const snaplen = values.snaplen === undefined ? undefined : Number(values.snaplen);
  const buffer = values.buffer === undefined ? undefined : Number(values.buffer);
  const filter = pos.slice(1).join(' ');
  const file = values.write as string | undefined;
  const started = (await rpcCall(ctl, 'capture-start', { port: pos[0], direction, filter, count, snaplen, buffer })) as { id: number; snaplen: number };
  let fd: number | null = null;
  const toStdout = file === '-';
  if (file !== undefined && !toStdout) fd = fs.openSync(file, 'w');
  let stop = false;
  let broken = false;
  const write = async (b: Buffer | string): Promise<void> => {
    if (fd !== null) {
      if (typeof b === 'string') fs.writeSync(fd, b);
      else fs.writeSync(fd, b);
      return;
    }
    if (broken) return;
    if (!process.stdout.write(b)) await new Promise<void>((r) => process.stdout.once('drain', r));
  };
  process.stdout.on('error', () => {
    broken = true; // reader went away (| head): stop quietly
    stop = true;
  });
  const onSig = (): void => {
    stop = true;
  };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  if (file !== undefined) await write(pcapHeader(started.snaplen));
  else process.stderr.write(`tsvs capture: ${pos[0]} (${direction})${filter ? ` matching ${filter}` : ''}; Ctrl-C to stop\n`);
  let last: ReadResult | null = null;
  try {
    while (!stop) {
      const r = (await rpcCall(ctl, 'capture-read', { id: started.id })) as ReadResult;
      last = r;
      for (const f of r.frames) {
        const data = Buffer.from(f.data, 'base64');
        if (file !== undefined) await write(pcapRecord(f.ts, data, f.len));
        else {
          const t = new Date(f.ts);
          const us = String(Math.round((f.ts % 1000) * 1000)).padStart(6, '0');
          await write(`${t.toISOString().slice(11, 19)}.${us} ${f.dir} ${f.len} bytes ${frameSummary(data)}\n`);
        }
      }
      if (r.done) break;
      if (r.frames.length === 0) await new Promise((res) => setTimeout(res, 50));
    }
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    if (!last?.done) await rpcCall(ctl, 'capture-stop', { id: started.id }).catch(() => undefined);
    if (fd !== null) fs.closeSync(fd);
  }
  if (last) {
    process.stderr.write(
      `tsvs capture: ${last.delivered} frames captured${last.filtered ? `, ${last.filtered} did not match the filter` : ''}, ${last.overflow} copies dropped (capture ring full)${last.reason ? ` (${last.reason})` : ''}\n`,
    );
  }
  return 0;
}

/** `tsvs testpmd`: the command-line face of src/app/testpmd.ts. */
import { Testpmd, parsePortArg, FWD_MODES, type FwdMode, type PortReport } from './testpmd.js';
import { UsageError, numberOption } from '../util/options.js';

function int(v: unknown, name: string, min: number, max: number, dflt: number): number {
  // --duration and --stats-period take fractions of a second
  return numberOption(v, name, min, max, dflt, name !== 'duration' && name !== 'stats-period')!;
}

function line(r: PortReport[], dt: number, prev: PortReport[] | null): string {
  return r
    .map((p, i) => {
      const pr = prev?.[i];
      const rxr = pr ? (p.rx_packets - pr.rx_packets) / dt : 0;
      const txr = pr ? (p.tx_packets - pr.tx_packets) / dt : 0;
      return `${p.name}[${p.link}] rx ${p.rx_packets} (${(rxr / 1e6).toFixed(3)} Mpps) tx ${p.tx_packets} (${(txr / 1e6).toFixed(3)} Mpps) drop ${p.rx_dropped}/${p.tx_dropped}${p.rx_bad ? ` bad ${p.rx_bad}` : ''}`;
    })
    .join(' | ');
}

export async function run(values: Record<string, unknown>): Promise<number> {
  const portArgs = (values.port as string[] | undefined) ?? [];
  if (portArgs.length === 0) throw new UsageError('at least one --port is required');
  let ports;
  try {
    ports = portArgs.map((s, i) => parsePortArg(s, i));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const fwd = String(values.fwd ?? 'io') as FwdMode;
  if (!FWD_MODES.includes(fwd)) throw new UsageError(`--fwd must be one of ${FWD_MODES.join(', ')}`);
  const duration = int(values.duration, 'duration', 0, 86400, 0);
  const period = int(values['stats-period'], 'stats-period', 0, 3600, 0);
  const tp = new Testpmd({
    ports,
    fwd,
    txpkts: int(values.txpkts, 'txpkts', 64, 9000, 64),
    burst: int(values.burst, 'burst', 1, 32, 32),
    flows: int(values.flows, 'flows', 1, 1 << 24, 1),
    txBuffers: int(values['tx-buffers'], 'tx-buffers', 0, 4096, 1024),
    cpu: values.cpu !== undefined ? int(values.cpu, 'cpu', 0, 1023, 0) : undefined,
  });
  const t0 = performance.now();
  await tp.ready;
  let prev: PortReport[] | null = null;
  let prevT = performance.now();
  const timer =
    period > 0
      ? setInterval(() => {
          void tp.stats().then((r) => {
            const now = performance.now();
            process.stderr.write(line(r, (now - prevT) / 1000, prev) + '\n');
            prev = r;
            prevT = now;
          });
        }, period * 1000)
      : null;
  await new Promise<void>((resolve) => {
    if (duration > 0) setTimeout(resolve, duration * 1000);
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  if (timer) clearInterval(timer);
  const final = await tp.stop();
  const dur = (performance.now() - t0) / 1000;
  if (values.json) {
    process.stdout.write(JSON.stringify({ duration_s: Number(dur.toFixed(3)), fwd, ports: final }) + '\n');
  } else {
    for (const p of final) {
      process.stdout.write(
        `---- ${p.name} ----\n  RX-packets: ${p.rx_packets}  RX-bytes: ${p.rx_bytes}  RX-dropped: ${p.rx_dropped}  RX-bad: ${p.rx_bad}\n  TX-packets: ${p.tx_packets}  TX-bytes: ${p.tx_bytes}  TX-dropped: ${p.tx_dropped}\n`,
      );
    }
  }
  return 0;
}

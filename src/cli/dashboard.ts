/**
 * `tsvs dashboard [--listen ADDR:PORT]`: the web dashboard of a running
 * daemon, served by this process (samples come over the control socket), for
 * a daemon started without --web.
 */
import { rpcCall } from '../daemon/control.js';
import { runPaths } from '../daemon/run-dir.js';
import { parseListen } from '../metrics/listen.js';
import type { SwitchView, DpFlowRow } from '../metrics/view.js';
import { startWebServer } from '../web/server.js';
import { UsageError } from '../util/options.js';

export async function run(values: Record<string, unknown>): Promise<number> {
  const ctl = runPaths((values['run-dir'] as string | undefined) ?? undefined).control;
  let at: { host: string; port: number };
  try {
    at = parseListen(String(values.listen ?? '127.0.0.1:8080'), '--listen');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // fail early when no daemon answers
  await rpcCall(ctl, 'observe', {}, 10000);
  const w = await startWebServer(async () => {
    const r = (await rpcCall(ctl, 'observe', { flows: true }, 10000)) as { data: { view: SwitchView; flows?: DpFlowRow[] } };
    return { view: r.data.view, flows: r.data.flows ?? [] };
  }, at.host, at.port);
  process.stderr.write(`tsvs dashboard at ${w.url} (Ctrl-C to stop)\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await w.close();
  return 0;
}

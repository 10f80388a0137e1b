/**
 * The web dashboard (`tsvs daemon --web ADDR:PORT`): one page with live plots
 * (uPlot, served from the package, no CDN), the bridge/port topology with link
 * states and the datapath flow table, updated once a second over server-sent
 * events. While at least one page is open the server takes a view of the
 * switch every second (shared-memory counters) and the datapath flow table
 * (one dump per PMD thread, as revalidation does twice a second).
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import type { ObservableSwitch } from '../metrics/view.js';
import { computeRates, type Sample } from '../metrics/rates.js';
import { dpFlows } from '../metrics/observe-methods.js';
import { listen } from '../metrics/listen.js';
import { PAGE } from './page.js';

const require = createRequire(import.meta.url);

function asset(rel: string): Buffer {
  return fs.readFileSync(require.resolve(rel));
}

export interface DashboardUpdate {
  time: number;
  bridges: ReturnType<ObservableSwitch['view']>['bridges'];
  rates: ReturnType<typeof computeRates>;
}

/** Where the dashboard's samples come from: the switch in this process, or a daemon's control socket. */
export type SampleSource = () => Promise<Sample>;

/** Samples of a switch in this process (tsvs daemon --web). */
export function localSource(sw: ObservableSwitch): SampleSource {
  return async () => {
    const view = sw.view();
    return { view, flows: await dpFlows(sw).catch(() => []) };
  };
}

export async function startWebServer(source: SampleSource, host: string, port: number, periodMs = 1000): Promise<{ url: string; close(): Promise<void> }> {
  const uplotJs = asset('uplot/dist/uPlot.iife.min.js');
  const uplotCss = asset('uplot/dist/uPlot.min.css');
  const clients = new Set<http.ServerResponse>();
  let prev: Sample | null = null;
  let timer: NodeJS.Timeout | null = null;
  let last: string | null = null;

  const sampleOnce = async (): Promise<void> => {
    const cur = await source();
    const rates = computeRates(prev, cur);
    prev = cur;
    const msg: DashboardUpdate = { time: cur.view.timeMs, bridges: cur.view.bridges, rates };
    last = `data: ${JSON.stringify(msg)}\n\n`;
    for (const c of clients) c.write(last);
  };
  const loop = (): void => {
    timer = setTimeout(() => {
      void sampleOnce().catch(() => undefined).finally(() => {
        if (clients.size > 0) loop();
        else timer = null;
      });
    }, periodMs);
  };

  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    const send = (type: string, body: string | Buffer): void => {
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache' }).end(body);
    };
    switch (url) {
      case '/':
        return send('text/html; charset=utf-8', PAGE);
      case '/uplot.js':
        return send('text/javascript; charset=utf-8', uplotJs);
      case '/uplot.css':
        return send('text/css; charset=utf-8', uplotCss);
      case '/events': {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        res.write('retry: 2000\n\n');
        if (last) res.write(last);
        clients.add(res);
        req.on('close', () => clients.delete(res));
        if (timer === null) {
          // the first rates need two samples: take one now
          void sampleOnce().catch(() => undefined);
          loop();
        }
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  const a = await listen(server, host, port);
  return {
    url: `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/`,
    close: () =>
      new Promise((r) => {
        if (timer) clearTimeout(timer);
        for (const c of clients) c.end();
        clients.clear();
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

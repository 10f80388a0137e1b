/**
 * ADDR:PORT options and listening, for the observers' HTTP servers (`--metrics`, `--web`, `tsvs dashboard`).
 * A module of its own so that the daemon checks its options without loading prom-client or node:http
 * (the servers are loaded only when asked for).
 */
import type { Server } from 'node:http';

/** Parse ADDR:PORT, [v6]:PORT or PORT (then 127.0.0.1). */
export function parseListen(s: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+))?:?(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`${flag}: expected ADDR:PORT or PORT (e.g. 127.0.0.1:9477), got '${s}'`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

/** Listen on host:port; resolves with the bound address. */
export function listen(server: Server, host: string, port: number): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve({ host, port: typeof a === 'object' && a ? a.port : port });
    });
  });
}

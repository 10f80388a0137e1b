/**
 * The one accept/reconnect loop (src/vhost/endpoint.ts) from both ends, in one process: our
 * frontend as the server and our backend as the client (as QEMU server=on / virtio-user
 * server=1 with a vhost-user-client port), then the other way round. The client retries while
 * nobody listens, connects when the server appears, and again after the server restarts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { waitFor } from '../harness/wait.js';

const quiet = { log(): void {} };

for (const backendIsClient of [true, false]) {
  test(`${backendIsClient ? 'backend client, frontend server' : 'backend server, frontend client'}: the client retries until the server listens, and reconnects after the server restarts`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-endpoint-'));
    const sock = path.join(dir, 's');
    const pool = Mempool.create({ count: 2048 });
    const lines: string[] = [];
    const log = { log: (level: string, msg: string): void => void lines.push(`${level}: ${msg}`) };
    let port: VhostUserPort | null = null;
    let fe: VirtioUserPort | null = null;
    t.after(async () => {
      fe?.close();
      await port?.closeAsync();
      pool.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const newBackend = (): VhostUserPort =>
      new VhostUserPort({ path: sock, mempool: pool, client: backendIsClient, logger: log, reconnectMaxMs: 40 });
    const newFrontend = (): VirtioUserPort =>
      new VirtioUserPort({ path: sock, server: backendIsClient, logger: quiet, poolSize: 1024, reconnectMinMs: 5, reconnectMaxMs: 40 });
    // the client starts first: nobody listens yet
    if (backendIsClient) {
      port = newBackend();
      await waitFor(() => lines.some((l) => /connect .* failed.*retry in \d+ ms/.test(l)), { what: 'the backend to retry while nobody listens', describe: () => lines.join('\n') });
      fe = newFrontend();
    } else {
      fe = newFrontend();
      await waitFor(() => /^connect .* failed/.test(fe!.frontend.lastError), { what: 'the frontend to retry while nobody listens', describe: () => fe!.frontend.lastError });
      port = newBackend();
    }
    await waitFor(() => port!.link === 'up' && fe!.link === 'up', { what: 'both links up' });
    // the server goes away and comes back on the same path: the client connects again
    if (backendIsClient) {
      fe.close();
      await waitFor(() => port!.link === 'down', { what: 'backend link down' });
      fs.rmSync(sock, { force: true });
      fe = newFrontend();
    } else {
      await port.closeAsync();
      await waitFor(() => fe!.link === 'down', { what: 'frontend link down' });
      port = newBackend();
    }
    await waitFor(() => port!.link === 'up' && fe!.link === 'up', { what: 'both links up again' });
    assert.equal(fe.frontend.connects, backendIsClient ? 1 : 2, 'the frontend negotiated once per connection');
  });
}

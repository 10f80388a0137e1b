/** Control socket and configuration database: bad input gets clear errors and never takes the daemon down. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ControlServer, rpcCall, RpcError } from '../../src/daemon/control.js';
import { ConfigDb, ConfigError } from '../../src/daemon/config-db.js';
import { CLI, startDaemon } from '../harness/daemon.js';

function tmp(t: { after(fn: () => void): void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-ctl-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function rawRequest(sock: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock, () => c.write(text));
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) {
        c.end();
        resolve(buf.trim());
      }
    });
    c.on('error', reject);
  });
}

test('control socket: malformed requests get JSON-RPC errors; the server keeps serving', async (t) => {
  const dir = tmp(t);
  const srv = new ControlServer(path.join(dir, 'c.ctl'));
  srv.on('echo', (p) => p);
  srv.on('boom', () => {
    throw new Error('handler failed on purpose');
  });
  await srv.listen();
  t.after(() => srv.close());
  assert.equal(fs.statSync(srv.path).mode & 0o777, 0o600, 'owner-only socket');
  assert.match(await rawRequest(srv.path, 'not json\n'), /"code":-32700/);
  assert.match(await rawRequest(srv.path, '{"params":{}}\n'), /"code":-32600/);
  assert.match(await rawRequest(srv.path, '{"method":"nope"}\n'), /unknown method 'nope'/);
  assert.match(await rawRequest(srv.path, '{"method":"echo","params":[1]}\n'), /params must be an object/);
  await assert.rejects(rpcCall(srv.path, 'boom'), (e: unknown) => e instanceof RpcError && /on purpose/.test(e.message));
  assert.deepEqual(await rpcCall(srv.path, 'echo', { a: 1 }), { a: 1 });
  await assert.rejects(rpcCall(path.join(dir, 'missing.ctl'), 'echo'), /cannot reach the tsvs daemon/);
});

test('config database: atomic save, corrupt or invalid files are refused with the reason', (t) => {
  const dir = tmp(t);
  const f = path.join(dir, 'conf.json');
  const db = ConfigDb.open(f);
  db.config.bridges.push({ name: 'br0', ports: [{ name: 'p1', type: 'vhost-user', ofport: 1, path: '/x' }], flows: ['actions=NORMAL'] });
  db.save();
  assert.deepEqual(fs.readdirSync(dir), ['conf.json'], 'no temp file left behind');
  assert.deepEqual(ConfigDb.open(f).config, db.config);
  fs.writeFileSync(f, '{"version":1,"bridges":[');
  assert.throws(() => ConfigDb.open(f), (e: unknown) => e instanceof ConfigError && /not valid JSON/.test(e.message));
  fs.writeFileSync(f, JSON.stringify({ version: 1, bridges: [{ name: 'br0', ports: [{ name: 'p', type: 'warp', ofport: 1 }], flows: [] }] }));
  assert.throws(() => ConfigDb.open(f), /unknown type "warp"/);
});

test('the daemon refuses a corrupt database at start with a clear error, and rejects bad CLI input without dying', async (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'conf.json'), 'garbage');
  const r = spawnSync(process.execPath, [CLI, 'daemon', '--run-dir', dir], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /config database .* is not valid JSON/);
  const bad = spawnSync(process.execPath, [CLI, 'daemon', '--run-dir', dir, '--pmd-cpus', 'x'], { encoding: 'utf8', timeout: 20000 });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--pmd-cpus: bad CPU list 'x'/);

  const d = await startDaemon();
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  const cases: [string[], RegExp][] = [
    [['add-br', 'bad name!'], /bad bridge name/],
    [['add-port', 'nobr', 'p1', '--type', 'tap'], /no bridge named 'nobr'/],
    [['add-flow', 'nobr', 'actions=drop'], /no bridge named/],
    [['add-port', 'br0'], /missing BR NAME/],
    [['del-port', 'br0', 'ghost'], /no bridge named 'br0'|has no port/],
    [['port-stats', 'ghost'], /no port named 'ghost'/],
    [['qemu-args', 'ghost'], /no port named 'ghost'/],
  ];
  for (const [args, re] of cases) {
    const out = await d.cli(...args);
    assert.notEqual(out.code, 0, args.join(' '));
    assert.match(out.stderr, re, args.join(' '));
  }
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  const flowErr = await d.cli('add-flow', 'br0', 'priority=1,nw_src=10.0.0.300,actions=drop');
  assert.notEqual(flowErr.code, 0);
  assert.match(flowErr.stderr, /column \d+/);
  assert.equal((await d.cli('show')).code, 0, 'still serving after all of that');
});

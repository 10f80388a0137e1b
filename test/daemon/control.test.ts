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
import { waitFor } from '../harness/wait.js';
import { DAEMON_SEMI_SPACE_MIB, DAEMON_V8_POOL_SIZE, DAEMON_MALLOC_ARENA_MAX, missingRuntimeSettings } from '../../src/daemon/heap-limits.js';
import type { MemoryReport } from '../../src/util/memory.js';

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
  fs.writeFileSync(f, '[1,2]');
  assert.throws(() => ConfigDb.open(f), (e: unknown) => e instanceof ConfigError && /expected \{"version":1/.test(e.message));
  // a bad entry is skipped with the reason (issue 18: one bad port must not keep the switch from starting)
  const bad = { version: 1, bridges: [{ name: 'br0', ports: [
    { name: 'p', type: 'warp', ofport: 1 }, { name: 'z', type: 'tap', ofport: 0 }, { name: 'big', type: 'tap', ofport: 65280 },
    { name: 'ok', type: 'tap', ofport: 2 }, { name: 'dup', type: 'tap', ofport: 2 },
  ], flows: ['actions=NORMAL', 7] }, { name: 'bad name!', ports: [], flows: [] }] };
  fs.writeFileSync(f, JSON.stringify(bad));
  const db2 = ConfigDb.open(f);
  assert.deepEqual(db2.config.bridges.map((b) => [b.name, b.ports.map((p) => p.name), b.flows]), [['br0', ['ok'], ['actions=NORMAL']]]);
  assert.equal(db2.skipped.length, 6, db2.skipped.join('\n'));
  assert.match(db2.skipped.join('\n'), /port p: unknown type "warp"/);
  assert.match(db2.skipped.join('\n'), /port z: port number 0 is out of range \(an integer in 1\.\.65279\)/);
  assert.match(db2.skipped.join('\n'), /port big: port number 65280 is out of range/);
  assert.match(db2.skipped.join('\n'), /port dup: port number 2 is used twice/);
  assert.deepEqual(JSON.parse(fs.readFileSync(db2.keptAs!, 'utf8')), bad, 'the file as it was is kept');
  // stale temp files of dead writers go; a live writer's stays
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const stale = path.join(dir, `.conf.json.${dead.stdout}.tmp`);
  const live = path.join(dir, `.conf.json.${process.ppid}.tmp`);
  fs.writeFileSync(stale, '{');
  fs.writeFileSync(live, '{');
  assert.deepEqual(ConfigDb.open(f).removedTemps, [path.basename(stale)]);
  assert.ok(!fs.existsSync(stale) && fs.existsSync(live));
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
    [['set-port', 'ghost', 'tag=5'], /no port 'ghost'/],
    [['set-port', 'ghost', 'tag=5000'], /--tag 5000|tag.*4095/],
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
  assert.equal((await d.cli('add-port', 'br0', 't1', '--type', 'tap', '--tag', '7')).code, 0);
  for (const [args, re] of [
    [['set-port', 't1', 'vlan_mode=native-tagged', 'tag='], /vlan_mode native-tagged needs a tag/],
    [['set-port', 't1', 'trunks=3'], /access port takes no trunks/],
    [['set-port', 't1', 'vlan_mode=qinq'], /vlan_mode 'qinq' must be one of/],
    [['add-port', 'br0', 't2', '--type', 'tap', '--vlan-mode', 'native-untagged'], /cannot add port t2: vlan_mode native-untagged needs a tag/],
  ] as [string[], RegExp][]) {
    const out = await d.cli(...args);
    assert.notEqual(out.code, 0, args.join(' '));
    assert.match(out.stderr, re, args.join(' '));
  }
  const t1 = (JSON.parse((await d.cli('show', '--json')).stdout) as { ports: { name: string; vlan?: string }[] }[])[0].ports.find((p) => p.name === 't1');
  assert.equal(t1?.vlan, 'tag=7', 'a refused change leaves the role as it was');
  assert.equal((await d.cli('show')).code, 0, 'still serving after all of that');
});

test('ofport range: the RPC refuses 0 and 65280; a database with a bad entry and a stale temp file still starts (issue 18 defects 7, 9)', async (t) => {
  const dir = tmp(t);
  const good = { name: 'vm1', type: 'vhost-user', ofport: 3, path: path.join(dir, 'vm1.sock') };
  fs.writeFileSync(path.join(dir, 'conf.json'), JSON.stringify({ version: 1, bridges: [{ name: 'br0', ports: [{ name: 'vm0', type: 'vhost-user', ofport: 0, path: path.join(dir, 'vm0.sock') }, good], flows: ['priority=0,actions=NORMAL', 'actions=output:999999'] }] }));
  fs.writeFileSync(path.join(dir, '.conf.json.999999999.tmp'), '{"version":1');
  const d = await startDaemon({ runDir: dir });
  t.after(() => d.stop());
  const show = await d.cli('show');
  assert.equal(show.code, 0, d.log());
  assert.match(show.stdout, /Port vm1 {2}ofport=3/);
  assert.doesNotMatch(show.stdout, /vm0/);
  assert.match(d.log(), /port vm0: port number 0 is out of range \(an integer in 1\.\.65279\): port skipped/);
  assert.match(d.log(), /stored rule 'actions=output:999999' no longer parses: output: port 999999 out of range/);
  assert.match(d.log(), /removed \.conf\.json\.999999999\.tmp/);
  assert.ok(!fs.existsSync(path.join(dir, '.conf.json.999999999.tmp')));
  // qemu-args: the daemon describes the port, the CLI renders QEMU's arguments
  const qa = await d.cli('qemu-args', 'vm1');
  assert.match(qa.stdout, /-chardev 'socket,id=\w+,path=\S*vm1\.sock'/);
  const qaJson = JSON.parse((await d.cli('qemu-args', 'vm1', '--json')).stdout) as string[];
  assert.ok(Array.isArray(qaJson) && qaJson.includes('-chardev'), JSON.stringify(qaJson));
  const ctl = path.join(dir, 'tsvs.ctl');
  for (const ofport of [0, 65280, -1, 1.5, 'x']) {
    await assert.rejects(rpcCall(ctl, 'add-port', { bridge: 'br0', name: 'p9', type: 'vhost-user', ofport }), /ofport: port number .* is out of range/, String(ofport));
  }
  await assert.rejects(rpcCall(ctl, 'add-flow', { bridge: 'br0', flow: 'actions=output:999999' }), /output: port 999999 out of range/);
  // what the RPC accepted is saved, and the daemon starts again from it
  await rpcCall(ctl, 'add-port', { bridge: 'br0', name: 'p9', type: 'vhost-user', ofport: 65279 });
  await d.stop();
  const d2 = await startDaemon({ runDir: dir });
  t.after(() => d2.stop());
  assert.match((await d2.cli('show')).stdout, /Port p9 {2}ofport=65279/);
  assert.doesNotMatch(d2.log(), /skipped/);
});

test('control socket: handler exceptions of any kind, unserialisable answers and odd JSON become JSON-RPC errors', async (t) => {
  const dir = tmp(t);
  const srv = new ControlServer(path.join(dir, 'c.ctl'));
  srv.on('echo', (p) => p);
  srv.on('throw-null', () => {
    throw null; // eslint-disable-line no-throw-literal
  });
  srv.on('throw-string', () => {
    throw 'just a string'; // eslint-disable-line no-throw-literal
  });
  srv.on('reject-undefined', () => Promise.reject(undefined));
  srv.on('bigint', () => ({ n: 1n }));
  srv.on('circular', () => {
    const o: Record<string, unknown> = {};
    o.self = o;
    return o;
  });
  await srv.listen();
  t.after(() => srv.close());
  const ask = async (line: string): Promise<{ id: unknown; error?: { code: number; message: string } }> => JSON.parse(await rawRequest(srv.path, line + '\n'));
  for (const m of ['throw-null', 'throw-string', 'reject-undefined']) {
    const r = await ask(JSON.stringify({ id: 7, method: m }));
    assert.equal(r.id, 7, m);
    assert.equal(r.error?.code, -32000, m);
  }
  assert.match((await ask('{"id":1,"method":"throw-string"}')).error!.message, /just a string/);
  for (const m of ['bigint', 'circular']) assert.equal((await ask(JSON.stringify({ id: 2, method: m }))).error?.code, -32603, m);
  for (const line of ['null', '[]', '5', '"x"', '{"method":"__proto__"}', '{"method":"toString"}']) {
    const r = await ask(line);
    assert.ok(r.error, `${line} -> ${JSON.stringify(r)}`);
    assert.ok(r.id === null, `${line}: an id that is not a string or number is answered as null`);
  }
  assert.equal((await ask('{"method":"echo","id":{"x":1}}')).id, null, 'an object id is answered as null');
  // many requests in one write, answered in order
  const many = await new Promise<string[]>((resolve, reject) => {
    const c = net.createConnection(srv.path, () => c.write(Array.from({ length: 300 }, (_, i) => JSON.stringify({ id: i, method: i % 3 ? 'echo' : 'throw-null', params: { i } })).join('\n') + '\n'));
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n').filter((l) => l);
      if (lines.length >= 300 && buf.endsWith('\n')) {
        c.end();
        resolve(lines);
      }
    });
    c.on('error', reject);
  });
  assert.deepEqual(many.map((l) => (JSON.parse(l) as { id: number }).id), Array.from({ length: 300 }, (_, i) => i));
  assert.deepEqual(await rpcCall(srv.path, 'echo', { ok: true }), { ok: true });
});

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

test('control socket backpressure: a client that pipelines 200k requests and never reads holds bounded memory; others are served; the young generation of the main thread stays capped', async (t) => {
  const d = await startDaemon({ nodeArgs: [] }); // started as a user would: it runs itself again with its heap limits
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  const ctl = path.join(d.runDir, 'tsvs.ctl');
  const show = (): Promise<unknown> => rpcCall(ctl, 'show');
  for (let i = 0; i < 20; i++) await show(); // warm the daemon's code paths up
  const rss0 = rssKiB(d.proc.pid!);
  const flood = net.createConnection(ctl);
  t.after(() => flood.destroy());
  await new Promise<void>((resolve, reject) => { flood.once('connect', resolve); flood.once('error', reject); });
  flood.pause(); // never read an answer
  const line = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'show' }) + '\n';
  const N = 200_000;
  flood.write(line.repeat(N));
  // the daemon stops reading: what the flood wrote stays queued on our side, unchanged across round trips of other clients
  let last = -1;
  let same = 0;
  await waitFor(async () => {
    await show(); // another client is served meanwhile
    const wl = flood.writableLength;
    same = wl === last ? same + 1 : 0;
    last = wl;
    return same >= 5;
  }, { what: 'the flood connection to stop draining', timeout: 60000, describe: () => `writableLength ${flood.writableLength}` });
  assert.ok(flood.writableLength > line.length * N * 0.5, `the daemon stopped reading the flood (still queued here: ${flood.writableLength} of ${line.length * N} bytes)`);
  const rss1 = rssKiB(d.proc.pid!);
  assert.ok(rss1 - rss0 < 40 * 1024, `daemon RSS ${rss0} -> ${rss1} KiB while holding a never-reading client`);
  // the flooder reads at last: it gets answers, in order, then it goes away and the daemon still serves
  flood.setEncoding('utf8');
  let got = 0;
  flood.on('data', (s: string) => { for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1)) got++; });
  flood.resume();
  await waitFor(() => got >= 1000, { what: 'the flooder to receive answers once it reads', timeout: 60000, describe: () => `${got} answers` });
  flood.destroy();
  assert.equal((await d.cli('show')).code, 0);
  // the daemon ran itself again with its young-generation cap (same PID: the one we spawned answers), and the burst left the main thread's
  // young generation within it (without the cap V8 grows it to 32 MiB under this flood and keeps it)
  const cmdline = fs.readFileSync(`/proc/${d.proc.pid}/cmdline`, 'utf8').split('\0');
  assert.ok(cmdline.includes(`--max-semi-space-size=${DAEMON_SEMI_SPACE_MIB}`), cmdline.join(' '));
  // ... and with its V8 thread pool and malloc arenas (README, Memory)
  assert.ok(cmdline.includes(`--v8-pool-size=${DAEMON_V8_POOL_SIZE}`) && cmdline.includes('--no-short-builtin-calls'), cmdline.join(' '));
  const environ = fs.readFileSync(`/proc/${d.proc.pid}/environ`, 'utf8').split('\0');
  assert.ok(environ.includes(`MALLOC_ARENA_MAX=${DAEMON_MALLOC_ARENA_MAX}`), 'MALLOC_ARENA_MAX not set');
  const main = ((await rpcCall(ctl, 'memory')) as { data: { main: MemoryReport } }).data.main;
  const young = main.spaces.find((s) => s.name === 'new_space')!.committed;
  assert.ok(young <= 2 * DAEMON_SEMI_SPACE_MIB * 2 ** 20, `main thread's young generation ${(young / 2 ** 20).toFixed(1)} MiB committed`);
});

test('tsvs daemon runs itself again only with the memory settings it was not given (a node option or environment variable given is kept)', () => {
  const all = missingRuntimeSettings([], {});
  assert.deepEqual(all.nodeArgs, [`--max-semi-space-size=${DAEMON_SEMI_SPACE_MIB}`, `--v8-pool-size=${DAEMON_V8_POOL_SIZE}`, '--no-short-builtin-calls']);
  assert.deepEqual(all.env, { MALLOC_ARENA_MAX: String(DAEMON_MALLOC_ARENA_MAX) });
  const some = missingRuntimeSettings(['--max-semi-space-size=16', '--short_builtin_calls'], { NODE_OPTIONS: '--v8-pool-size=8', MALLOC_ARENA_MAX: '4' });
  assert.deepEqual(some, { nodeArgs: [], env: {} });
  assert.deepEqual(missingRuntimeSettings(['--v8-pool-size', '3', '--no-short-builtin-calls'], {}).nodeArgs, [`--max-semi-space-size=${DAEMON_SEMI_SPACE_MIB}`]);
});

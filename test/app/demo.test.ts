/**
 * `npm run demo`, the README's main command, run as a user runs it (the CLI in a child process, on its
 * built-in defaults): it must start a switch, move frames through two vhost-user ports, account for
 * every frame (received, or dropped by the switch with a reason) and clean up after itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

test('tsvs demo --json: frames move and every one is accounted for; the run dir is removed', () => {
  const before = new Set(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('tsvs-demo-')));
  const r = spawnSync(process.execPath, [CLI, 'demo', '--duration', '1', '--json'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}`);
  const d = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    sent: number; received: number; bad: number; dropped: number; drops: Record<string, number>; unaccounted: number;
    pmd: { rxPackets: number }[]; ports: { port: string; rxPackets: number; txPackets: number }[];
  };
  assert.ok(d.received > 0, 'frames arrived');
  assert.equal(d.bad, 0);
  assert.equal(d.unaccounted, 0);
  assert.equal(d.sent, d.received + d.dropped);
  const vm1 = d.ports.find((p) => p.port === 'vm1')!;
  const vm2 = d.ports.find((p) => p.port === 'vm2')!;
  assert.equal(vm1.rxPackets, d.sent, 'the switch took every frame the generator sent');
  assert.equal(vm2.txPackets, d.received, 'the receiver got every frame the switch delivered');
  const after = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('tsvs-demo-') && !before.has(n));
  assert.deepEqual(after, [], 'the demo removes its run directory');
});

test('tsvs demo: a bad option is a clear error, not a crash', () => {
  const r = spawnSync(process.execPath, [CLI, 'demo', '--duration', 'soon'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--duration must be in \(0, 3600\] seconds, got 'soon'/);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
});

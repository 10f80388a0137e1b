/**
 * No new fixed sleeps in tests (issue 17): a test waits for the state it needs
 * (test/harness/wait.ts waitFor), not for a time. This counts awaited sleeps per
 * file of test/ (`await new Promise((r) => setTimeout(r, N))`, `await sleep(`,
 * `await delay(`) and compares with test/health/sleep-allowlist.json, where
 * each file with sleeps is listed with its count and the reason. A file over
 * its count, or a new file with a sleep, fails; a file under its count is
 * reported so that the list shrinks as sleeps are replaced.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SLEEP = /await\s+(?:new\s+Promise(?:<void>)?\(\s*\(?\s*(?:r|res|resolve)\s*\)?\s*=>\s*setTimeout\(\s*(?:r|res|resolve)\s*,|sleep\(|delay\()/g;

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

export function countSleeps(text: string): number {
  return (text.match(SLEEP) ?? []).length;
}

test('the sleep pattern matches the forms used and not waitFor', () => {
  assert.equal(countSleeps('await new Promise((r) => setTimeout(r, 800));'), 1);
  assert.equal(countSleeps('await new Promise<void>((resolve) => setTimeout(resolve, 5));'), 1);
  assert.equal(countSleeps('await sleep(300); await delay(1)'), 2);
  assert.equal(countSleeps("await waitFor(() => x > 1, { what: 'x' }); const t = setTimeout(() => p.kill(), 8000);"), 0);
});

test('no fixed sleep in test/ beyond the reviewed allowlist', () => {
  const allow = JSON.parse(fs.readFileSync(path.join(root, 'test/health/sleep-allowlist.json'), 'utf8')) as Record<string, { count: number; reason: string }>;
  const over: string[] = [];
  const under: string[] = [];
  for (const f of files(path.join(root, 'test'))) {
    const rel = path.relative(root, f);
    if (rel === 'test/health/no-sleep.test.ts') continue;
    const n = countSleeps(fs.readFileSync(f, 'utf8'));
    const a = allow[rel];
    if (n > (a?.count ?? 0)) over.push(`${rel}: ${n} awaited sleeps, ${a?.count ?? 0} allowed`);
    else if (a && n < a.count) under.push(`${rel}: ${n} (allowlist says ${a.count}: lower it)`);
  }
  if (under.length) console.log(`sleeps replaced since the allowlist was written:\n  ${under.join('\n  ')}`);
  assert.deepEqual(over, [], 'wait for the state instead (test/harness/wait.ts waitFor), or add the file to test/health/sleep-allowlist.json with the reason the pause is pacing, not synchronisation');
  for (const [f, a] of Object.entries(allow)) assert.ok(a.reason.length > 10, `${f}: give a reason`);
});

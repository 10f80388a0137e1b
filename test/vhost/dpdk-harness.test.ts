/**
 * The DPDK test harness reads testpmd's stdout and stderr apart: a stderr line
 * that lands inside the `testpmd> ` prompt in the interleaved output (seen in
 * CI: `test` + "Error during enabling promiscuous mode ... - ignore" + `pmd> `)
 * must not hide the prompt. A stand-in script plays testpmd's part, printing the
 * prompt in two pieces with the error line between them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

test('Testpmd harness: a stderr line inside the prompt does not hide it', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-fake-testpmd-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'fake-testpmd');
  const err = 'Error during enabling promiscuous mode for port 0: Operation not supported - ignore';
  // each piece is flushed by its own printf; stdbuf (used by the harness) keeps them unbuffered
  fs.writeFileSync(
    script,
    `#!/bin/sh\nprintf 'test'\nprintf '${err}\\n' >&2\nprintf 'pmd> '\nwhile read -r line; do\n  [ "$line" = quit ] && exit 0\n  printf 'test'\n  printf 'noise\\n' >&2\n  printf 'pmd> '\ndone\n`,
    { mode: 0o755 },
  );
  process.env.TSVS_TESTPMD = script;
  const { Testpmd } = await import('../harness/dpdk.js');
  const tp = Testpmd.start({ vdev: 'net_null0' });
  t.after(() => tp.kill());
  await tp.waitFor(/testpmd> /, 5000);
  await tp.waitFor(/Error during enabling promiscuous mode/, 1, 0).then(
    () => assert.fail('stderr is not matched as testpmd output'),
    (e: Error) => assert.match(e.message, /timeout/),
  );
  assert.ok(tp.stderr.includes(err), 'stderr kept apart for diagnostics');
  const out = await tp.run('show port info 0', /testpmd> $/, 5000);
  assert.equal(out, 'testpmd> ');
  await tp.quit();
  assert.equal(tp.exitCode, 0);
});

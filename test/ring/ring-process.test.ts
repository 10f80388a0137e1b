// Rings across processes: the memfd is inherited by child processes as fd 3.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Ring } from '../../src/ring/ring.js';
import { SharedRegion } from '../../src/mem/region.js';

const CHILD = fileURLToPath(new URL('../fixtures/ring-child.js', import.meta.url));
const LONG = process.env.TSVS_LONG === '1';

function runChild(region: SharedRegion, args: (string | number)[], kids: ChildProcess[]): Promise<any> {
  const child = spawn(process.execPath, [CHILD, ...args.map(String)], { stdio: ['ignore', 'pipe', 'inherit', region.fd] });
  kids.push(child);
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, sig) => {
      if (code !== 0) return reject(new Error(`child ${args[0]} exited with ${code ?? sig}`));
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(`child ${args[0]} printed ${JSON.stringify(out)}`));
      }
    });
  });
}

function killAll(kids: ChildProcess[]): void {
  for (const k of kids) if (k.exitCode === null && k.signalCode === null && k.pid !== undefined) process.kill(k.pid, 'SIGKILL');
}

test(`SPSC across two processes over a memfd: ${LONG ? 20 : 2} M handles in order`, { timeout: 60000 }, async (t) => {
  const n = (LONG ? 20 : 2) * 1000 * 1000;
  const off = 128;
  const region = SharedRegion.create('ring-proc', off + Ring.bytesNeeded(1024));
  const kids: ChildProcess[] = [];
  t.after(() => {
    killAll(kids);
    region.close();
  });
  Ring.init(region.bytes, off, 1024, 'spsc');
  const [cons, prod] = await Promise.all([runChild(region, ['consume-spsc', off, n], kids), runChild(region, ['produce', off, 0, n], kids)]);
  assert.equal(prod.ok, true);
  assert.deepEqual(cons.errors, []);
  assert.equal(cons.got, n);
  t.diagnostic(`consumer loop ${(n / cons.ms / 1000).toFixed(1)} M handles/s (incl. waiting for the producer to start)`);
});

test('MPMC across two processes, each producing and consuming: nothing lost or duplicated', { timeout: 60000 }, async (t) => {
  const nProd = 2;
  const per = (LONG ? 5000 : 500) * 1000;
  const total = nProd * per;
  const ringOff = 0;
  const doneOff = Ring.bytesNeeded(256);
  const seenOff = doneOff + 64;
  const region = SharedRegion.create('ring-proc-mpmc', seenOff + total);
  const kids: ChildProcess[] = [];
  t.after(() => {
    killAll(kids);
    region.close();
  });
  Ring.init(region.bytes, ringOff, 256, 'mpmc');
  const rs = await Promise.all(
    [0, 1].map((id) => runChild(region, ['mpmc', ringOff, id, per, nProd, seenOff, doneOff], kids)),
  );
  for (const r of rs) {
    assert.deepEqual(r.errors, []);
    assert.equal(r.produced, per);
  }
  assert.equal(rs[0].got + rs[1].got, total);
  t.diagnostic(`consumer split ${rs[0].got} / ${rs[1].got}`);
  const seen = region.bytes.subarray(seenOff, seenOff + total);
  let bad = 0;
  for (let i = 0; i < total; i++) if (seen[i] !== 1) bad++;
  assert.equal(bad, 0, 'every handle seen exactly once');
  assert.equal(Ring.attach(region.bytes, ringOff).count(), 0);
});

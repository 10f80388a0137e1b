/**
 * idle-alloc: what an idle PMD pass allocates. Two vhost-user ports with connected virtio-user
 * frontends in a Datapath, no traffic; runs pollOnce (plus the PMD loop's clock reads) under V8's
 * sampling heap profiler with collected objects kept, and prints the allocation sites.
 *   node dist/bench/tools/idle-alloc.js [passes]
 */
import { Session } from 'node:inspector/promises';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { Datapath } from '../../src/dp/datapath.js';

const passes = Number(process.argv[2] ?? 3_000_000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-idle-alloc-'));
const quiet = { log: () => {} };
const pool = Mempool.create({ count: 4096 });
const p1 = new VhostUserPort({ name: 'vm1', path: path.join(dir, 'vm1'), mempool: pool, logger: quiet });
const p2 = new VhostUserPort({ name: 'vm2', path: path.join(dir, 'vm2'), mempool: pool, logger: quiet });
const dp = new Datapath(pool, { upcall: () => {} });
dp.addPort(1, p1);
dp.addPort(2, p2);
const f1 = new VirtioUserPort({ name: 'f1', path: path.join(dir, 'vm1') });
const f2 = new VirtioUserPort({ name: 'f2', path: path.join(dir, 'vm2') });
const t0 = Date.now();
while (p1.link !== 'up' || p2.link !== 'up' || f1.link !== 'up' || f2.link !== 'up') {
  if (Date.now() - t0 > 10000) throw new Error('ports did not come up');
  await new Promise((r) => setTimeout(r, 10));
}

function idle(n: number): number {
  let t = 0;
  for (let i = 0; i < n; i++) {
    dp.pollOnce();
    if ((i & 31) === 0) t += performance.now();
  }
  dp.tick(Date.now());
  return t;
}

idle(passes); // JIT warm-up
const s = new Session();
s.connect();
await s.post('HeapProfiler.enable');
await s.post('HeapProfiler.startSampling', { samplingInterval: 32, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
const tA = performance.now();
idle(passes);
const ms = performance.now() - tA;
const { profile } = (await s.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: Node } };
interface Node { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] }
const sites = new Map<string, number>();
let total = 0;
const walk = (n: Node, stack: string[]): void => {
  const here = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber + 1}`;
  const st = [...stack, here];
  if (n.selfSize > 0) {
    const k = st.slice(-3).join(' < ');
    sites.set(k, (sites.get(k) ?? 0) + n.selfSize);
    total += n.selfSize;
  }
  for (const c of n.children) walk(c, st);
};
walk(profile.head, []);
console.log(`${passes} idle passes in ${ms.toFixed(0)} ms: ~${(total / passes).toFixed(2)} bytes sampled per pass (${(total / 1024).toFixed(0)} KiB)`);
for (const [k, v] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${(v / 1024).toFixed(1).padStart(8)} KiB  ${k}`);
f1.close();
f2.close();
await Promise.all([p1.closeAsync(), p2.closeAsync()]);
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);

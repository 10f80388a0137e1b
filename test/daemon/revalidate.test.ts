/**
 * Rule changes reach the datapath before the RPC answers (revalidation
 * sequence numbers, as OVS): a request pipelined right behind `add-flow` on the
 * same connection, and traffic sent right after its answer, see the new rule;
 * no sleep in between. The periodic revalidation is set to an hour so that only
 * the change-triggered passes can do it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { pino } from 'pino';
import { Switch } from '../../src/daemon/switch.js';
import { rpcCall } from '../../src/daemon/control.js';
import { Testpmd } from '../../src/app/testpmd.js';
import { waitFor } from '../harness/wait.js';

/** Send several requests in one write; resolve with the answers in arrival order. */
function pipelined(sock: string, reqs: { method: string; params?: Record<string, unknown> }[]): Promise<{ id: number; result?: unknown; error?: { message: string } }[]> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock, () => c.write(reqs.map((r, i) => JSON.stringify({ jsonrpc: '2.0', id: i + 1, ...r }) + '\n').join('')));
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n').filter((l) => l !== '');
      if (buf.endsWith('\n') && lines.length >= reqs.length) {
        c.end();
        resolve(lines.map((l) => JSON.parse(l)));
      }
    });
    c.on('error', reject);
  });
}

interface DpFlow { match: string; actions: string }

test('add-flow and del-flows answer once the datapath reflects them; revalidate-wait', async (t) => {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-reval-'));
  t.after(() => fs.rmSync(runDir, { recursive: true, force: true }));
  const sw = await Switch.start({ runDir, log: pino({ level: 'silent' }), poolSize: 4096, pmdSleepMaxUs: 0, revalidateMs: 3_600_000 });
  t.after(() => sw.stop());
  const ctl = sw.paths.control;
  await rpcCall(ctl, 'add-br', { bridge: 'br0' });
  const s1 = path.join(runDir, 'vm1.sock');
  const s2 = path.join(runDir, 'vm2.sock');
  await rpcCall(ctl, 'add-port', { bridge: 'br0', name: 'vm1', type: 'vhost-user', path: s1 });
  await rpcCall(ctl, 'add-port', { bridge: 'br0', name: 'vm2', type: 'vhost-user', path: s2 });
  await rpcCall(ctl, 'add-flow', { bridge: 'br0', flow: 'priority=10,in_port=vm1,actions=output:vm2' });
  const gen = new Testpmd({
    ports: [
      { name: 'vm1-guest', type: 'virtio-user', path: s1 },
      { name: 'vm2-guest', type: 'virtio-user', path: s2 },
    ],
    fwd: 'txrx', txpkts: 64, burst: 32, flows: 1,
  });
  t.after(() => gen.stop());
  await gen.ready;
  const rx = async (): Promise<number> => (await gen.stats())[1].rx_packets;
  const tx = async (): Promise<number> => (await gen.stats())[0].tx_packets;
  await waitFor(async () => (await rx()) > 1000, { what: 'traffic vm1 -> vm2 through the output rule', describe: async () => JSON.stringify(await gen.stats()) });

  // add a drop rule and, pipelined right behind it, dump the datapath: the old output flow must be gone
  const [added, dumped] = await pipelined(ctl, [
    { method: 'add-flow', params: { bridge: 'br0', flow: 'priority=20,in_port=vm1,actions=drop' } },
    { method: 'dump-dp-flows' },
  ]);
  assert.equal(added.id, 1, 'answers come in request order');
  assert.equal(added.error, undefined);
  const flows = (dumped.result as { data: DpFlow[] }).data;
  assert.ok(flows.every((f) => f.actions === 'drop'), `no datapath flow still outputs after add-flow answered: ${JSON.stringify(flows)}`);

  // traffic right after the answer: the receiver gets at most what was already in flight
  const r0 = await rx();
  const t0 = await tx();
  await waitFor(async () => (await tx()) > t0 + 20000, { what: 'the generator to send 20000 more frames' });
  const r1 = await rx();
  assert.ok(r1 - r0 <= 512, `after add-flow drop answered, ${r1 - r0} more frames arrived (only those in flight may)`);

  // del-flows: the drop rule goes, and again a pipelined dump sees only the output action
  const [deleted, dumped2] = await pipelined(ctl, [
    { method: 'del-flows', params: { bridge: 'br0', match: 'priority=20,in_port=vm1', strict: true } },
    { method: 'dump-dp-flows' },
  ]);
  assert.deepEqual((deleted.result as { data: unknown }).data, { deleted: 1 });
  const flows2 = (dumped2.result as { data: DpFlow[] }).data;
  assert.ok(flows2.every((f) => f.actions !== 'drop'), `no datapath flow still drops after del-flows answered: ${JSON.stringify(flows2)}`);
  const r2 = await rx();
  await waitFor(async () => (await rx()) > r2 + 1000, { what: 'traffic to flow again after del-flows' });

  // revalidate-wait: each call waits for a pass that started after it
  const a = (await rpcCall(ctl, 'revalidate-wait')) as { data: { passes: number } };
  const b = (await rpcCall(ctl, 'revalidate-wait')) as { data: { passes: number } };
  assert.ok(b.data.passes > a.data.passes, `a second revalidate-wait ran another pass (${a.data.passes} -> ${b.data.passes})`);
  // many concurrent waiters share passes and all resolve
  await Promise.all(Array.from({ length: 20 }, () => sw.waitRevalidated()));

  // issue 18 defect 6: 40 tables of resubmit(,T+1),resubmit(,T+1) (2^40 lookups) are cut off at
  // MAX_RESUBMITS; the packets are dropped and counted, and the main thread keeps answering
  const fan = Array.from({ length: 40 }, (_, i) => ({ method: 'add-flow', params: { bridge: 'br0', flow: `table=${i},priority=30,actions=resubmit(,${i + 1}),resubmit(,${i + 1})` } }));
  const answers = await pipelined(ctl, [{ method: 'del-flows', params: { bridge: 'br0' } }, ...fan, { method: 'add-flow', params: { bridge: 'br0', flow: 'table=40,actions=output:vm2' } }]);
  assert.ok(answers.every((a) => a.error === undefined), JSON.stringify(answers.filter((a) => a.error)));
  const shown = await waitFor(async () => {
    const data = ((await rpcCall(ctl, 'show', {}, 5000)) as { data: { xlateErrors: Record<string, number> }[] }).data;
    return data[0].xlateErrors.too_many_resubmits >= 1 && data[0].xlateErrors;
  }, { what: 'a fanned-out translation counted as too_many_resubmits', timeout: 20000 });
  assert.equal(shown.too_deep, 0);
  const text = ((await rpcCall(ctl, 'show', {}, 5000)) as { text: string }).text;
  assert.match(text, /translations cut off and dropped: too_many_resubmits=\d+/);
  const r3 = await rx();
  const t3 = await tx();
  await waitFor(async () => (await tx()) > t3 + 5000, { what: 'the generator to keep sending' });
  assert.ok((await rx()) - r3 <= 512, 'the fanned-out flow is dropped');
});

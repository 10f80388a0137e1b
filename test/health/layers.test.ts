/**
 * The layering of src/ holds (issue 17): dependency-cruiser with
 * .dependency-cruiser.cjs: a module imports only from its own layer or below
 * (util/sys, ring, mem, virtio, vhost, pmd, dp, ofproto, protocol folders,
 * daemon, app, cli), no import circles, no folder outside the list. Also a
 * check that the checker catches a violation, so this test cannot pass vacuously.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const depcruise = path.join(root, 'node_modules', '.bin', 'depcruise');

function cruise(...targets: string[]): { status: number | null; out: string } {
  const r = spawnSync(depcruise, [...targets, '--config', '.dependency-cruiser.cjs', '--output-type', 'err'], { cwd: root, encoding: 'utf8', timeout: 120000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('src/ imports only downward and has no import circles (dependency-cruiser)', () => {
  assert.ok(fs.existsSync(depcruise), `${depcruise} missing: npm install (dependency-cruiser is a devDependency)`);
  const r = cruise('src');
  assert.equal(r.status, 0, r.out);
});

test('the layering check catches an upward import and a circle', (t) => {
  const dir = path.join(root, 'src', 'ring');
  const up = path.join(dir, 'zz-layer-probe.ts');
  const a = path.join(dir, 'zz-circle-a.ts');
  const b = path.join(dir, 'zz-circle-b.ts');
  t.after(() => [up, a, b].forEach((f) => fs.rmSync(f, { force: true })));
  fs.writeFileSync(up, "import { Switch } from '../daemon/switch.js';\nexport const probe = Switch;\n");
  fs.writeFileSync(a, "import { b } from './zz-circle-b.js';\nexport const a = (): unknown => b;\n");
  fs.writeFileSync(b, "import { a } from './zz-circle-a.js';\nexport const b = (): unknown => a;\n");
  const r = cruise(up, a, b);
  assert.notEqual(r.status, 0);
  assert.match(r.out, /layer-ring: src\/ring\/zz-layer-probe\.ts → src\/daemon\/switch\.ts/);
  assert.match(r.out, /no-circular: src\/ring\/zz-circle-a\.ts/);
});

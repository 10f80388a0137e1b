/**
 * IovaMap: physical-address translation of our memory for DMA. With a table
 * of "physical" pages (contiguous runs merged, holes split, a range across
 * two non-adjacent pages refused, non-hugepage memory detected), and with the
 * real /proc/self/pagemap on a plain 4 KiB memfd mapping (root: the same page
 * mapped twice has one physical address; distinct pages have distinct ones).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IovaMap, IovaError, type PhysSource } from '../../src/mem/iova.js';
import { SharedRegion } from '../../src/mem/region.js';
import { Pagemap } from '../../src/sys/pagemap.js';
import * as libc from '../../src/sys/libc.js';

const MB2 = 2 * 1024 * 1024;

/** Fake area of n 2 MiB pages at va; page i is at phys[i] (4 KiB pages inside contiguous unless broken). */
function fakeArea(va: number, n: number): { addr: number; size: number; views: Uint8Array[] } {
  return { addr: va, size: n * MB2, views: [new Uint8Array(n * MB2)] };
}

function table(va: number, phys: number[], broken = -1): PhysSource {
  return {
    physOf(a: number): number {
      const i = Math.floor((a - va) / MB2);
      const off = a - va - i * MB2;
      if (i === broken && off > 0) return phys[i] + off + 0x40000000; // the last 4K page is elsewhere
      return phys[i] + off;
    },
  };
}

test('IovaMap merges adjacent pages, splits at holes, refuses ranges across them', () => {
  const va = 0x7f0000000000;
  // pages 0,1 adjacent; page 2 elsewhere; page 3 right after page 2
  const phys = [0x40000000, 0x40200000, 0x10000000, 0x10200000];
  const m = IovaMap.build([fakeArea(va, 4)], table(va, phys));
  assert.equal(m.mem.windows.length, 2);
  assert.equal(m.iova(va + 100, 64), 0x40000000 + 100);
  assert.equal(m.iova(va + MB2 - 32, 64), 0x40000000 + MB2 - 32); // across pages 0|1: contiguous
  assert.equal(m.iova(2 * MB2 + va - 32, 64), -1); // across pages 1|2: not contiguous
  assert.equal(m.iova(va + 3 * MB2 + 5, 10), 0x10200000 + 5);
  assert.equal(m.iova(va + 4 * MB2, 1), -1); // outside
  // the driver queues' view: gpa (= IOVA) -> our bytes
  const bytes = m.mem.slice(0x10200000 + 5, 3);
  bytes[0] = 0xab;
  assert.equal(m.mem.slice(0x10200000 + 5, 1)[0], 0xab);
});

test('IovaMap refuses memory that is not hugepage-contiguous and misaligned areas', () => {
  const va = 0x7f0000000000;
  assert.throws(() => IovaMap.build([fakeArea(va, 2)], table(va, [0x40000000, 0x40200000], 1)), (e: Error) => e instanceof IovaError && /not backed by hugepages/.test(e.message));
  assert.throws(() => IovaMap.build([fakeArea(va + 4096, 1)], table(va, [0])), /whole 2097152-byte pages/);
  assert.throws(() => IovaMap.build([], table(va, [])), /no memory/);
});

test('real pagemap on a plain mapping: one physical page behind two mappings of a memfd', () => {
  const r = SharedRegion.create('iova-test', 4 * 4096);
  const pm = new Pagemap();
  let second = 0;
  try {
    for (let i = 0; i < 4; i++) r.bytes[i * 4096] = i + 1; // resident
    second = libc.mmap(r.fd, r.size, 0);
    const v2 = new Uint8Array(libc.view(second, r.size));
    for (let i = 0; i < 4; i++) assert.equal(v2[i * 4096], i + 1); // resident in the second mapping too
    const m = IovaMap.build([r], pm, 4096);
    const m2 = IovaMap.build([{ addr: second, size: r.size, views: [v2] }], pm, 4096);
    const seen = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const p = m.iova(r.addr + i * 4096 + 8, 8);
      assert.ok(p > 0 && p % 4096 === 8, `page ${i}: ${p}`);
      assert.equal(m2.iova(second + i * 4096 + 8, 8), p, 'same page, same physical address');
      seen.add(p);
      // and the driver queues reach the same bytes through the physical address
      assert.equal(m.mem.slice(p - 8, 1)[0], i + 1);
    }
    assert.equal(seen.size, 4);
    assert.throws(() => pm.physOf(-1), /bad virtual address/);
  } finally {
    pm.close();
    if (second) libc.munmap(second, r.size);
    r.close();
  }
});

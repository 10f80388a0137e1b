/** Layout sizes, feature names, net header encoding. */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  featureNames,
  F_VERSION_1,
  NET_F_MRG_RXBUF,
  RING_F_EVENT_IDX,
  VHOST_USER_F_PROTOCOL_FEATURES,
  F_IN_ORDER,
  RING_F_INDIRECT_DESC,
  F_RING_PACKED,
} from '../../src/virtio/features.js';
import {
  needEvent,
  packedIsAvail,
  packedIsUsed,
  packedAvailBits,
  packedUsedBits,
  splitAvailSize,
  splitUsedSize,
  vringLayout,
  vringSize,
  packedVringSize,
} from '../../src/virtio/layout.js';
import { getNumBuffers, netHdrLen, readNetHdr, writeNetHdr, initNetHdr } from '../../src/virtio/net-header.js';

test('feature bits and names', () => {
  assert.equal(F_VERSION_1, 1n << 32n);
  assert.equal(F_RING_PACKED, 1n << 34n);
  assert.equal(VHOST_USER_F_PROTOCOL_FEATURES, 1n << 30n);
  // what DPDK virtio-user asks for (docs/interop.md#dpdk-2211)
  assert.equal(NET_F_MRG_RXBUF | RING_F_INDIRECT_DESC | VHOST_USER_F_PROTOCOL_FEATURES | F_VERSION_1 | F_IN_ORDER, 0x950008000n);
  assert.deepEqual(featureNames(0x950008000n), [
    'NET_F_MRG_RXBUF',
    'RING_F_INDIRECT_DESC',
    'VHOST_USER_F_PROTOCOL_FEATURES',
    'F_VERSION_1',
    'F_IN_ORDER',
  ]);
  assert.deepEqual(featureNames((1n << 4n) | RING_F_EVENT_IDX), ['bit4', 'RING_F_EVENT_IDX']);
});

test('split ring sizes match vring_size()', () => {
  assert.equal(vringSize(256), 10246);
  assert.equal(vringSize(1024), 28678);
  assert.equal(splitAvailSize(8), 22);
  assert.equal(splitAvailSize(8, false), 20);
  assert.equal(splitUsedSize(8), 70);
  const l = vringLayout(0x1000, 256);
  assert.deepEqual(l, { descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
  assert.equal(packedVringSize(5), 88);
});

test('packed avail/used bits', () => {
  for (const w of [0, 1]) {
    assert.equal(packedIsAvail(packedAvailBits(w), w), true);
    assert.equal(packedIsAvail(packedAvailBits(w), w ^ 1), false);
    assert.equal(packedIsUsed(packedUsedBits(w), w), true);
    assert.equal(packedIsUsed(packedAvailBits(w), w), false);
    assert.equal(packedIsUsed(packedUsedBits(w), w ^ 1), false);
  }
  assert.equal(packedIsAvail(0, 1), false, 'a zeroed ring has nothing available');
  assert.equal(needEvent(0xffff, 0, 0xffff), true);
});

test('net header: lengths and encoding', () => {
  assert.equal(netHdrLen(0n), 10);
  assert.equal(netHdrLen(NET_F_MRG_RXBUF), 12);
  assert.equal(netHdrLen(F_VERSION_1), 12);
  const b = new Uint8Array(16).fill(0xff);
  writeNetHdr(b, 2, 12, { flags: 1, gsoType: 4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 3 });
  assert.deepEqual([...b.subarray(2, 14)], [1, 4, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 3, 0]);
  assert.deepEqual(readNetHdr(b, 2, 12), { flags: 1, gsoType: 4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 3 });
  assert.equal(readNetHdr(b, 2, 10).numBuffers, 0);
  initNetHdr(b, 2, 12, 7);
  assert.equal(getNumBuffers(b, 2), 7);
  assert.deepEqual([...b.subarray(2, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  initNetHdr(b, 0, 10, 9);
  assert.equal(b[10], 0, 'a 10-byte header has no num_buffers');
});

/**
 * The hot paths' copies (src/mem/copy.ts). copyDoubles moves frame bytes as
 * Float64Array elements: that is only a byte copy if V8 never changes a NaN's
 * bits on the way (no canonicalization, signalling NaNs kept), in the
 * interpreter and in optimized code alike. Checked here, so a V8 that did
 * would fail this test before it corrupted frames.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyBytes, copyDoubles, copyWords } from '../../src/mem/copy.js';

/** Random bytes where every 8-byte word is a NaN of some kind (quiet, signalling, either sign, any payload). */
function nanBytes(words: number, seed: number): Uint8Array {
  const b = new Uint8Array(words * 8);
  const u = new Uint32Array(b.buffer);
  let x = seed >>> 0;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let i = 0; i < words; i++) {
    const lo = next();
    let hi = next();
    hi = (hi & 0x800fffff) | 0x7ff00000; // exponent all ones
    if ((hi & 0xfffff) === 0 && lo === 0) hi |= 1; // not an infinity
    if (i % 3 === 0) hi &= ~0x00080000; // signalling (quiet bit clear), payload kept non-zero below
    if ((hi & 0xfffff) === 0 && lo === 0) hi |= 2;
    u[2 * i] = lo;
    u[2 * i + 1] = hi;
  }
  return b;
}

test('copyDoubles copies every bit pattern exactly, NaNs included, cold and after optimization', () => {
  const words = 4096;
  const src = nanBytes(words, 12345);
  const s64 = new Float64Array(src.buffer);
  const dst = new Uint8Array(words * 8 + 64);
  const d64 = new Float64Array(dst.buffer);
  // cold: the first calls run in the interpreter
  copyDoubles(d64, 1, s64, 0, words);
  assert.deepEqual(dst.subarray(8, 8 + words * 8), src);
  // hot: many short copies (a 64-byte frame is 8 words) until V8 optimizes, every one checked
  for (let rep = 0; rep < 200_000; rep++) {
    const s8 = (rep * 8) % (words - 16);
    const n = 1 + (rep % 15);
    copyDoubles(d64, 2, s64, s8, n);
    if (rep % 997 === 0 || rep > 199_000) {
      for (let k = 0; k < n * 8; k++) {
        if (dst[16 + k] !== src[s8 * 8 + k]) assert.fail(`rep ${rep}: byte ${k} is ${dst[16 + k]}, expected ${src[s8 * 8 + k]}`);
      }
    }
  }
});

test('copyDoubles, copyWords and copyBytes agree with TypedArray.set for every length and tail', () => {
  const src = new Uint8Array(1024);
  for (let i = 0; i < src.length; i++) src[i] = (i * 151 + 7) & 0xff;
  for (let n = 0; n <= 600; n++) {
    const want = new Uint8Array(1024);
    want.set(src.subarray(8, 8 + n), 16);
    const a = new Uint8Array(1024);
    copyDoubles(new Float64Array(a.buffer), 2, new Float64Array(src.buffer), 1, n >> 3);
    for (let k = n & ~7; k < n; k++) a[16 + k] = src[8 + k];
    assert.deepEqual(a, want, `copyDoubles, ${n} bytes`);
    const b = new Uint8Array(1024);
    copyWords(new Int32Array(b.buffer), 4, new Int32Array(src.buffer), 2, n >> 2);
    for (let k = n & ~3; k < n; k++) b[16 + k] = src[8 + k];
    assert.deepEqual(b, want, `copyWords, ${n} bytes`);
    const c = new Uint8Array(1024);
    copyBytes(c, new Int32Array(c.buffer), 16, src, new Int32Array(src.buffer), 8, n);
    assert.deepEqual(c, want, `copyBytes, ${n} bytes`);
  }
});

/**
 * Word copies for the hot paths: small frames move between guest memory and
 * packet buffers 32 bits at a time, four words per loop step (measured ~2x
 * faster than one word per step, and faster than TypedArray.set over a
 * subarray up to ~512 bytes, which also allocates a view per copy), or 64
 * bits at a time where both sides are 8-byte aligned ({@link copyDoubles}).
 */

/** Frames up to this many bytes are copied with {@link copyWords}; larger ones with TypedArray.set. */
export const WORD_COPY_MAX = 512;

/** dst[d4 .. d4+nw) = src[s4 .. s4+nw) (32-bit words; the ranges must not overlap). */
export function copyWords(dst: Int32Array, d4: number, src: Int32Array, s4: number, nw: number): void {
  const e = d4 + (nw & ~3);
  while (d4 < e) {
    dst[d4] = src[s4];
    dst[d4 + 1] = src[s4 + 1];
    dst[d4 + 2] = src[s4 + 2];
    dst[d4 + 3] = src[s4 + 3];
    d4 += 4;
    s4 += 4;
  }
  for (let k = nw & 3; k > 0; k--) dst[d4++] = src[s4++];
}

/**
 * dst[d, d+n) = src[s, s+n) between two different arrays (the caller checked both ranges):
 * by words when both offsets are 4-aligned, both arrays have word views and n is small, else
 * TypedArray.set over a subarray (one view per call: the large-copy case, as the fast paths do).
 */
export function copyBytes(dst: Uint8Array, dw: Int32Array | null, d: number, src: Uint8Array, sw: Int32Array | null, s: number, n: number): void {
  if (n <= WORD_COPY_MAX && dw !== null && sw !== null && ((d | s) & 3) === 0) {
    const nw = n >> 2;
    copyWords(dw, d >> 2, sw, s >> 2, nw);
    for (let k = nw << 2; k < n; k++) dst[d + k] = src[s + k];
  } else {
    dst.set(src.subarray(s, s + n), d);
  }
}

/**
 * dst[d8 .. d8+n) = src[s8 .. s8+n) in 64-bit words (Float64Array views; the ranges must not
 * overlap). Half the loads and stores of {@link copyWords}: a burst's stores into another CPU's
 * lines queue up half as long (p2p 64 B +3%, 256 B +12-40% measured, 2026-12-03). V8 moves a
 * Float64Array element to another as its raw 64 bits, NaN payloads and signalling NaNs included,
 * in every tier (test/mem/copy.test.ts checks it, so a V8 that canonicalized would fail there).
 */
export function copyDoubles(dst: Float64Array, d8: number, src: Float64Array, s8: number, n: number): void {
  const e = d8 + (n & ~3);
  while (d8 < e) {
    dst[d8] = src[s8];
    dst[d8 + 1] = src[s8 + 1];
    dst[d8 + 2] = src[s8 + 2];
    dst[d8 + 3] = src[s8 + 3];
    d8 += 4;
    s8 += 4;
  }
  for (let k = n & 3; k > 0; k--) dst[d8++] = src[s8++];
}

/**
 * ggml's K-quants (Q2_K … Q6_K): super-blocks of 256 weights split into
 * sub-blocks of 16 or 32, each with its own scale (and min) quantized
 * against one f16 super-block scale. Encoders follow llama.cpp's
 * `quantize_row_q*_K_ref` (no importance matrix) step by step, so the bytes
 * equal ggml's; decoders follow `dequantize_row_q*_K`. The same float32
 * rules as ggml-legacy.ts apply (see there); docs/ggml-formats.md has the
 * layouts and the fitting each format does.
 */
import { QkdError } from '../errors.js';
import { blockCount, checkEncoded, f, floatToHalf, halfToFloat, signedMax } from './ggml-legacy.js';

/** Weights per super-block. */
export const QK_K = 256;
/** Below this a group is treated as all zero (ggml's GROUP_MAX_EPS). */
const GROUP_MAX_EPS = f(1e-15);

const nearestScratch = new Float32Array(1);
const nearestBits = new Int32Array(nearestScratch.buffer);
/**
 * ggml's nearest_int: adding 1.5·2²³ in float32 rounds to an integer
 * (half to even), read back from the mantissa bits.
 */
export function nearestInt(x: number): number {
  nearestScratch[0] = x + 12582912;
  return (nearestBits[0]! & 0x007fffff) - 0x00400000;
}

const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);

/**
 * Per-element importance of a fit: `imp[impAt + i]` multiplies element i's
 * weight in the fit (importance-weighted quantization); null: all 1.
 */
export interface Importance {
  imp: Float32Array | null;
  impAt: number;
}

const NO_IMPORTANCE: Importance = { imp: null, impAt: 0 };

/**
 * Symmetric fit of n values to integers in [−nmax, nmax−1] (rmse_type 1:
 * weights x² (times the importance), and 18 trial scales around nmax/max).
 * Writes L + nmax into L; returns the scale.
 */
function makeQxQuants(n: number, nmax: number, x: Float32Array, at: number, L: Uint8Array, lAt: number, im: Importance): number {
  const { amax, max } = signedMax(x, at, n);
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lAt, lAt + n);
    return 0;
  }
  let iscale = f(-nmax / max);
  let { sumlx, suml2 } = symmetricFit(x, at, n, nmax, iscale, L, lAt, nmax, im);
  let scale = suml2 !== 0 ? f(sumlx / suml2) : 0;
  let best = f(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = f(-f(nmax + f(f(0.1) * is)) / max);
    ({ sumlx, suml2 } = symmetricFit(x, at, n, nmax, iscale, null, 0, 0, im));
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      symmetricFit(x, at, n, nmax, iscale, L, lAt, nmax, im);
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

/** The fit weight of value v at position i: v², times its importance when given. */
function squareWeight(v: number, im: Importance, i: number): number {
  return im.imp === null ? f(v * v) : f(im.imp[im.impAt + i]! * f(v * v));
}

/**
 * Levels round(iscale·x) clamped to [−nmax, nmax−1] and their x²-weighted
 * sums Σ w·x·l and Σ w·l² (float32, in order); writes l + offset into L
 * when given.
 */
function symmetricFit(x: Float32Array, at: number, n: number, nmax: number, iscale: number, L: Uint8Array | Int8Array | null, lAt: number, offset: number, im: Importance): { sumlx: number; suml2: number } {
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[at + i]!;
    const l = clamp(nearestInt(f(iscale * v)), -nmax, nmax - 1);
    if (L !== null) L[lAt + i] = l + offset;
    const w = squareWeight(v, im, i);
    sumlx = f(sumlx + f(f(w * v) * l));
    suml2 = f(suml2 + f(f(w * l) * l));
  }
  return { sumlx, suml2 };
}

/**
 * Q3_K's symmetric fit: start at −nmax/max, then up to 5 passes that move
 * single values to the level that most improves the x²-weighted fit. Writes
 * L + nmax; returns the scale.
 */
function makeQ3Quants(n: number, nmax: number, x: Float32Array, at: number, L: Int8Array, lAt: number, im: Importance): number {
  const { amax, max } = signedMax(x, at, n);
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lAt, lAt + n);
    return 0;
  }
  let { sumlx, suml2 } = symmetricFit(x, at, n, nmax, f(-nmax / max), L, lAt, 0, im);
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = x[at + i]!;
      const li = L[lAt + i]!;
      const w = squareWeight(v, im, i);
      let slx = f(sumlx - f(f(w * v) * li));
      if (slx > 0) {
        let sl2 = f(suml2 - f(f(w * li) * li));
        const nl = clamp(nearestInt(f(f(v * sl2) / slx)), -nmax, nmax - 1);
        if (nl !== li) {
          slx = f(slx + f(f(w * v) * nl));
          sl2 = f(sl2 + f(f(w * nl) * nl));
          if (sl2 > 0 && f(f(slx * slx) * suml2) > f(f(sumlx * sumlx) * sl2)) {
            L[lAt + i] = nl;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (changed === 0) break;
  }
  for (let i = 0; i < n; i++) L[lAt + i] = L[lAt + i]! + nmax;
  return suml2 > 0 ? f(sumlx / suml2) : 0;
}

/**
 * Affine fit of n values to levels 0..nmax with a min ≤ 0 (llama.cpp's
 * make_qkx2_quants): the range fit, then nstep+1 trial scales solved by
 * weighted least squares for scale and min, keeping the lowest weighted
 * error (absolute when useMad). Writes levels into L; returns the scale and
 * −min.
 */
function makeQkx2Quants(n: number, nmax: number, x: Float32Array, at: number, weights: Float32Array, L: Uint8Array, lAt: number, laux: Uint8Array, rmin: number, rdelta: number, nstep: number, useMad: boolean): { scale: number; min: number } {
  let min = x[at]!;
  let max = x[at]!;
  let sumW = weights[0]!;
  let sumX = f(sumW * x[at]!);
  for (let i = 1; i < n; i++) {
    const v = x[at + i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    const w = weights[i]!;
    sumW = f(sumW + w);
    sumX = f(sumX + f(w * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lAt, lAt + n);
    return { scale: 0, min: -min };
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  const error = (s: number, m: number, levels: Uint8Array, levelsAt: number): number => {
    let e = 0;
    for (let i = 0; i < n; i++) {
      let diff = f(f(f(s * levels[levelsAt + i]!) + m) - x[at + i]!);
      diff = useMad ? Math.abs(diff) : f(diff * diff);
      e = f(e + f(weights[i]! * diff));
    }
    return e;
  };
  for (let i = 0; i < n; i++) L[lAt + i] = clamp(nearestInt(f(iscale * f(x[at + i]! - min))), 0, nmax);
  bestError = error(scale, min, L, lAt);
  if (nstep < 1) return { scale, min: -min };
  for (let is = 0; is <= nstep; is++) {
    // min moves to each accepted fit, and the next trial's grid starts from it (as in ggml).
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = x[at + i]!;
      const l = clamp(nearestInt(f(iscale * f(v - min))), 0, nmax);
      laux[i] = l;
      const w = weights[i]!;
      sumL = f(sumL + f(w * l));
      sumL2 = f(sumL2 + f(f(w * l) * l));
      sumXL = f(sumXL + f(f(w * l) * v));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      const curError = error(thisScale, thisMin, laux, 0);
      if (curError < bestError) {
        L.set(laux.subarray(0, n), lAt);
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return { scale, min: -min };
}

/** Q4_K/Q5_K's 12 bytes of eight 6-bit scales and mins. */
function packScalesMins(out: Uint8Array, at: number, ls: Uint8Array, lm: Uint8Array): void {
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      out[at + j] = ls[j]!;
      out[at + j + 4] = lm[j]!;
    } else {
      out[at + j + 4] = (ls[j]! & 0xf) | ((lm[j]! & 0xf) << 4);
      out[at + j - 4] = out[at + j - 4]! | ((ls[j]! >> 4) << 6);
      out[at + j] = out[at + j]! | ((lm[j]! >> 4) << 6);
    }
  }
}

/** Scale and min j of Q4_K/Q5_K's packed 12 bytes (ggml's get_scale_min_k4). */
function scaleMin(bytes: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [bytes[at + j]! & 63, bytes[at + j + 4]! & 63];
  return [(bytes[at + j + 4]! & 0xf) | ((bytes[at + j - 4]! >> 6) << 4), (bytes[at + j + 4]! >> 4) | ((bytes[at + j]! >> 6) << 4)];
}

/** Packs 2-bit levels: byte l of each 32-byte run holds elements l, l+32, l+64, l+96 of a 128-run. */
function pack2bit(out: Uint8Array, at: number, L: ArrayLike<number>): void {
  for (let j = 0; j < QK_K; j += 128) {
    for (let l = 0; l < 32; l++) out[at + j / 4 + l] = L[j + l]! | (L[j + l + 32]! << 2) | (L[j + l + 64]! << 4) | (L[j + l + 96]! << 6);
  }
}

// ---------------------------------------------------------------------------
// Q2_K: scales[16] (4-bit scale | 4-bit min), qs[64], f16 d, f16 dmin — 84 bytes.

/**
 * The importance of a whole tensor's elements: one weight per column (the
 * mean square of that input feature over calibration text), repeated on
 * every row. Blocks never straddle rows, so block b's importance starts at
 * column (b · blockSize) mod cols.
 */
export function blockImportance(importance: Float32Array | undefined, format: string, count: number, blockSize: number): (block: number) => Importance {
  if (importance === undefined) return () => NO_IMPORTANCE;
  const cols = importance.length;
  if (cols === 0 || cols % blockSize !== 0 || count % cols !== 0) {
    throw new QkdError('SHAPE', `${format}: an importance vector of ${cols} values does not fit rows of a ${count}-element tensor in blocks of ${blockSize}`, { field: 'importance', hint: `one value per column; the row length a multiple of ${blockSize}` });
  }
  // A zero weight over a whole sub-block would zero its scale, a negative or NaN one would invert the fit.
  const bad = importance.findIndex((v) => !(v > 0 && v < Infinity));
  if (bad >= 0) throw new QkdError('ARGUMENT', `${format}: importance[${bad}] is ${importance[bad]}; every column's importance must be positive and finite`, { field: 'importance', hint: 'floor it (collectImportance floors at 0.001)' });
  const im: Importance = { imp: importance, impAt: 0 };
  return (block) => {
    im.impAt = (block * blockSize) % cols;
    return im;
  };
}

export function encodeQ2_K(x: Float32Array, importance?: Float32Array): Uint8Array {
  const blocks = blockCount('Q2_K', x.length, QK_K);
  const out = new Uint8Array(blocks * 84);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const laux = new Uint8Array(16);
  const weights = new Float32Array(16);
  const scales = new Float32Array(16);
  const mins = new Float32Array(16);
  const q4scale = 15;
  const importanceOf = blockImportance(importance, 'Q2_K', x.length, QK_K);
  for (let b = 0; b < blocks; b++) {
    const xb = b * QK_K;
    const o = b * 84;
    const { imp, impAt } = importanceOf(b);
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) weights[l] = imp === null ? Math.abs(x[xb + 16 * j + l]!) : f(imp[impAt + 16 * j + l]! * Math.abs(x[xb + 16 * j + l]!));
      const r = makeQkx2Quants(16, 3, x, xb + 16 * j, weights, L, 16 * j, laux, f(-0.5), f(0.1), 15, true);
      scales[j] = r.scale;
      mins[j] = r.min;
      if (scales[j]! > maxScale) maxScale = scales[j]!;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    if (maxScale > 0) {
      const iscale = f(q4scale / maxScale);
      for (let j = 0; j < 16; j++) out[o + j] = nearestInt(f(iscale * scales[j]!)) & 0xff;
      view.setUint16(o + 80, floatToHalf(f(maxScale / q4scale)), true);
    } else view.setUint16(o + 80, 0, true);
    if (maxMin > 0) {
      const iscale = f(q4scale / maxMin);
      for (let j = 0; j < 16; j++) out[o + j] = (out[o + j]! | (nearestInt(f(iscale * mins[j]!)) << 4)) & 0xff;
      view.setUint16(o + 82, floatToHalf(f(maxMin / q4scale)), true);
    } else view.setUint16(o + 82, floatToHalf(0), true);
    const d = halfToFloat(view.getUint16(o + 80, true));
    const dmin = halfToFloat(view.getUint16(o + 82, true));
    for (let j = 0; j < 16; j++) {
      const dj = f(d * (out[o + j]! & 0xf));
      if (dj === 0) continue;
      const dm = f(dmin * (out[o + j]! >> 4));
      for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = clamp(nearestInt(f(f(x[xb + 16 * j + ii]! + dm) / dj)), 0, 3);
    }
    pack2bit(out, o + 16, L);
  }
  return out;
}

export function decodeQ2_K(bytes: Uint8Array, count: number): Float32Array {
  const blocks = checkEncoded('Q2_K', bytes, count, QK_K, 84);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let b = 0; b < blocks; b++) {
    const o = b * 84;
    const d = halfToFloat(view.getUint16(o + 80, true));
    const dmin = halfToFloat(view.getUint16(o + 82, true));
    let y = b * QK_K;
    let is = 0;
    for (let n = 0; n < QK_K; n += 128) {
      const q = o + 16 + n / 4;
      for (let shift = 0; shift < 8; shift += 2) {
        for (const half of [0, 16]) {
          const sc = bytes[o + is++]!;
          const dl = f(d * (sc & 0xf));
          const ml = f(dmin * (sc >> 4));
          for (let l = 0; l < 16; l++) out[y++] = f(dl * ((bytes[q + half + l]! >> shift) & 3)) - ml;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales), f16 d — 110 bytes.

export function encodeQ3_K(x: Float32Array, importance?: Float32Array): Uint8Array {
  const blocks = blockCount('Q3_K', x.length, QK_K);
  const out = new Uint8Array(blocks * 110);
  const view = new DataView(out.buffer);
  const L = new Int8Array(QK_K);
  const scales = new Float32Array(16);
  const importanceOf = blockImportance(importance, 'Q3_K', x.length, QK_K);
  const sub: Importance = { imp: null, impAt: 0 };
  for (let b = 0; b < blocks; b++) {
    const xb = b * QK_K;
    const o = b * 110;
    const sc = o + 96;
    const im = importanceOf(b);
    let maxScale = 0;
    let amax = 0;
    for (let j = 0; j < 16; j++) {
      sub.imp = im.imp;
      sub.impAt = im.impAt + 16 * j;
      scales[j] = makeQ3Quants(16, 4, x, xb + 16 * j, L, 16 * j, sub);
      const s = Math.abs(scales[j]!);
      if (s > amax) {
        amax = s;
        maxScale = scales[j]!;
      }
    }
    if (maxScale !== 0) {
      const iscale = f(-32 / maxScale);
      for (let j = 0; j < 16; j++) {
        // (int8_t) of the int, clamped to [−32, 31], shifted to 0..63.
        let l = clamp((nearestInt(f(iscale * scales[j]!)) << 24) >> 24, -32, 31) + 32;
        if (j < 8) out[sc + j] = l & 0xf;
        else out[sc + j - 8] = out[sc + j - 8]! | ((l & 0xf) << 4);
        l >>= 4;
        out[sc + 8 + (j % 4)] = out[sc + 8 + (j % 4)]! | (l << (2 * Math.floor(j / 4)));
      }
      view.setUint16(o + 108, floatToHalf(f(1 / iscale)), true);
    } else view.setUint16(o + 108, floatToHalf(0), true);
    const d = halfToFloat(view.getUint16(o + 108, true));
    for (let j = 0; j < 16; j++) {
      const dj = f(d * q3Scale(out, sc, j));
      if (dj === 0) continue;
      for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = clamp(nearestInt(f(x[xb + 16 * j + ii]! / dj)), -4, 3) + 4;
    }
    // High bits: element j's third bit goes to hmask[j mod 32], bit ⌊j/32⌋.
    for (let j = 0; j < QK_K; j++) {
      if (L[j]! > 3) {
        out[o + (j % 32)] = out[o + (j % 32)]! | (1 << Math.floor(j / 32));
        L[j] = L[j]! - 4;
      }
    }
    pack2bit(out, o + 32, L);
  }
  return out;
}

/** Scale j (−32..31) of Q3_K's 12 scale bytes at `sc`. */
function q3Scale(bytes: Uint8Array, sc: number, j: number): number {
  const low = j < 8 ? bytes[sc + j]! & 0xf : bytes[sc + j - 8]! >> 4;
  return (low | (((bytes[sc + 8 + (j % 4)]! >> (2 * Math.floor(j / 4))) & 3) << 4)) - 32;
}

export function decodeQ3_K(bytes: Uint8Array, count: number): Float32Array {
  const blocks = checkEncoded('Q3_K', bytes, count, QK_K, 110);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let b = 0; b < blocks; b++) {
    const o = b * 110;
    const dAll = halfToFloat(view.getUint16(o + 108, true));
    let y = b * QK_K;
    let is = 0;
    let m = 1;
    for (let n = 0; n < QK_K; n += 128) {
      const q = o + 32 + n / 4;
      for (let shift = 0; shift < 8; shift += 2) {
        for (const half of [0, 16]) {
          const dl = f(dAll * q3Scale(bytes, o + 96, is++));
          for (let l = 0; l < 16; l++) {
            const level = ((bytes[q + half + l]! >> shift) & 3) - (bytes[o + half + l]! & m ? 0 : 4);
            out[y++] = dl * level;
          }
        }
        m <<= 1;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Q4_K: f16 d, f16 dmin, scales[12] (eight 6-bit scales and mins), qs[128] — 144 bytes.
// Q5_K: the same plus qh[32] (fifth bits) before qs — 176 bytes.

function encodeQ45K(format: 'Q4_K' | 'Q5_K', x: Float32Array, importance?: Float32Array): Uint8Array {
  const five = format === 'Q5_K';
  const size = five ? 176 : 144;
  const nmax = five ? 31 : 15;
  const blocks = blockCount(format, x.length, QK_K);
  const out = new Uint8Array(blocks * size);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const laux = new Uint8Array(32);
  const weights = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  const ls = new Uint8Array(8);
  const lm = new Uint8Array(8);
  const importanceOf = blockImportance(importance, format, x.length, QK_K);
  for (let b = 0; b < blocks; b++) {
    const xb = b * QK_K;
    const o = b * size;
    const { imp, impAt } = importanceOf(b);
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(x[xb + 32 * j + l]! * x[xb + 32 * j + l]!));
      const avX = f(Math.sqrt(f(sumX2 / 32)));
      for (let l = 0; l < 32; l++) {
        const w = f(avX + Math.abs(x[xb + 32 * j + l]!));
        weights[l] = imp === null ? w : f(imp[impAt + 32 * j + l]! * w);
      }
      const r = five
        ? makeQkx2Quants(32, 31, x, xb + 32 * j, weights, L, 32 * j, laux, f(-0.5), f(0.1), 15, false)
        : makeQkx2Quants(32, 15, x, xb + 32 * j, weights, L, 32 * j, laux, -1, f(0.1), 20, false);
      scales[j] = r.scale;
      mins[j] = r.min;
      if (scales[j]! > maxScale) maxScale = scales[j]!;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
    for (let j = 0; j < 8; j++) {
      ls[j] = Math.min(63, nearestInt(f(invScale * scales[j]!)) & 0xff);
      lm[j] = Math.min(63, nearestInt(f(invMin * mins[j]!)) & 0xff);
    }
    packScalesMins(out, o + 4, ls, lm);
    view.setUint16(o, floatToHalf(f(maxScale / 63)), true);
    view.setUint16(o + 2, floatToHalf(f(maxMin / 63)), true);
    const d = halfToFloat(view.getUint16(o, true));
    const dmin = halfToFloat(view.getUint16(o + 2, true));
    for (let j = 0; j < 8; j++) {
      const [s, m] = scaleMin(out, o + 4, j);
      const dj = f(d * s);
      if (dj === 0) continue;
      const dm = f(dmin * m);
      for (let ii = 0; ii < 32; ii++) L[32 * j + ii] = clamp(nearestInt(f(f(x[xb + 32 * j + ii]! + dm) / dj)), 0, nmax);
    }
    const qh = o + 16;
    const qs = o + 16 + (five ? 32 : 0);
    for (let n = 0, m1 = 1, m2 = 2; n < QK_K; n += 64, m1 <<= 2, m2 <<= 2) {
      for (let j = 0; j < 32; j++) {
        let l1 = L[n + j]!;
        let l2 = L[n + j + 32]!;
        if (l1 > 15) {
          l1 -= 16;
          out[qh + j] = out[qh + j]! | m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          out[qh + j] = out[qh + j]! | m2;
        }
        out[qs + n / 2 + j] = l1 | (l2 << 4);
      }
    }
  }
  return out;
}

function decodeQ45K(format: 'Q4_K' | 'Q5_K', bytes: Uint8Array, count: number): Float32Array {
  const five = format === 'Q5_K';
  const size = five ? 176 : 144;
  const blocks = checkEncoded(format, bytes, count, QK_K, size);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let b = 0; b < blocks; b++) {
    const o = b * size;
    const d = halfToFloat(view.getUint16(o, true));
    const dmin = halfToFloat(view.getUint16(o + 2, true));
    const qh = o + 16;
    const qs = o + 16 + (five ? 32 : 0);
    let y = b * QK_K;
    for (let j = 0, is = 0, u1 = 1, u2 = 2; j < QK_K; j += 64, is += 2, u1 <<= 2, u2 <<= 2) {
      const [s1, m1] = scaleMin(bytes, o + 4, is);
      const [s2, m2] = scaleMin(bytes, o + 4, is + 1);
      const d1 = f(d * s1);
      const mm1 = f(dmin * m1);
      const d2 = f(d * s2);
      const mm2 = f(dmin * m2);
      const q = qs + j / 2;
      for (let l = 0; l < 32; l++) out[y++] = f(d1 * ((bytes[q + l]! & 0xf) + (five && bytes[qh + l]! & u1 ? 16 : 0))) - mm1;
      for (let l = 0; l < 32; l++) out[y++] = f(d2 * ((bytes[q + l]! >> 4) + (five && bytes[qh + l]! & u2 ? 16 : 0))) - mm2;
    }
  }
  return out;
}

export const encodeQ4_K = (x: Float32Array, importance?: Float32Array): Uint8Array => encodeQ45K('Q4_K', x, importance);
export const encodeQ5_K = (x: Float32Array, importance?: Float32Array): Uint8Array => encodeQ45K('Q5_K', x, importance);
export const decodeQ4_K = (bytes: Uint8Array, count: number): Float32Array => decodeQ45K('Q4_K', bytes, count);
export const decodeQ5_K = (bytes: Uint8Array, count: number): Float32Array => decodeQ45K('Q5_K', bytes, count);

// ---------------------------------------------------------------------------
// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), f16 d — 210 bytes.

export function encodeQ6_K(x: Float32Array, importance?: Float32Array): Uint8Array {
  const blocks = blockCount('Q6_K', x.length, QK_K);
  const out = new Uint8Array(blocks * 210);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const scales = new Float32Array(16);
  const importanceOf = blockImportance(importance, 'Q6_K', x.length, QK_K);
  const sub: Importance = { imp: null, impAt: 0 };
  for (let b = 0; b < blocks; b++) {
    const xb = b * QK_K;
    const o = b * 210;
    const im = importanceOf(b);
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      sub.imp = im.imp;
      sub.impAt = im.impAt + 16 * ib;
      const scale = makeQxQuants(16, 32, x, xb + 16 * ib, L, 16 * ib, sub);
      scales[ib] = scale;
      if (Math.abs(scale) > maxAbsScale) {
        maxAbsScale = Math.abs(scale);
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // an all-zero block: every byte 0, d = +0
    const iscale = f(-128 / maxScale);
    view.setUint16(o + 208, floatToHalf(f(1 / iscale)), true);
    for (let ib = 0; ib < 16; ib++) view.setInt8(o + 192 + ib, Math.min(127, nearestInt(f(iscale * scales[ib]!))));
    const d = halfToFloat(view.getUint16(o + 208, true));
    for (let j = 0; j < 16; j++) {
      const dj = f(d * view.getInt8(o + 192 + j));
      if (dj === 0) continue;
      for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = clamp(nearestInt(f(x[xb + 16 * j + ii]! / dj)), -32, 31) + 32;
    }
    for (let j = 0; j < QK_K; j += 128) {
      const ql = o + j / 2;
      const qh = o + 128 + j / 4;
      for (let l = 0; l < 32; l++) {
        const [a, bb, c, e] = [L[j + l]!, L[j + l + 32]!, L[j + l + 64]!, L[j + l + 96]!];
        out[ql + l] = (a & 0xf) | ((c & 0xf) << 4);
        out[ql + l + 32] = (bb & 0xf) | ((e & 0xf) << 4);
        out[qh + l] = (a >> 4) | ((bb >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
      }
    }
  }
  return out;
}

export function decodeQ6_K(bytes: Uint8Array, count: number): Float32Array {
  const blocks = checkEncoded('Q6_K', bytes, count, QK_K, 210);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let b = 0; b < blocks; b++) {
    const o = b * 210;
    const d = halfToFloat(view.getUint16(o + 208, true));
    for (let n = 0; n < QK_K; n += 128) {
      const ql = o + n / 2;
      const qh = o + 128 + n / 4;
      const sc = o + 192 + n / 16;
      const y = b * QK_K + n;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = bytes[qh + l]!;
        const q1 = ((bytes[ql + l]! & 0xf) | ((h & 3) << 4)) - 32;
        const q2 = ((bytes[ql + l + 32]! & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((bytes[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((bytes[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        out[y + l] = f(d * view.getInt8(sc + is)) * q1;
        out[y + l + 32] = f(d * view.getInt8(sc + is + 2)) * q2;
        out[y + l + 64] = f(d * view.getInt8(sc + is + 4)) * q3;
        out[y + l + 96] = f(d * view.getInt8(sc + is + 6)) * q4;
      }
    }
  }
  return out;
}

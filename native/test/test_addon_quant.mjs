// Checks the version-3 exports of the addon (fake quantization) from Node,
// bit for bit against the definition written here in plain JS numbers (the
// arithmetic of the TypeScript quantizeDequantize): bits 2, 3, 4, 8 ×
// symmetric or not × granularity 0, 1, 2 × groupSize 32, 64, 128 ×
// clipRatio 1 and 0.5 on shapes 1×1, 3×7, 5×200, 64×1000 and (threaded)
// 2048×704, with constant, all-zero, tie, NaN and ±Inf groups; subarrays of
// arenas (non-zero byteOffset), EMPTY_U8 masks, in-place calls, boolean and
// 0/1 flags; the backward; and the argument errors. Every existing export
// must still be there.
//
// Run after `npx node-gyp rebuild` (from the repository root):
//   node native/test/test_addon_quant.mjs              # every ISA path, one child process each
//   QKD_ISA=avx2 node native/test/test_addon_quant.mjs   # one path
import { runPerIsa, loadAddon, check, expectThrow, finish, random } from './harness.mjs';

runPerIsa(import.meta.url);
const native = loadAddon();
const EMPTY_U8 = new Uint8Array(0);

check(native.info().version === 4, 'info().version is 4');
for (const name of ['info', 'sgemm', 'softmaxForward', 'softmaxBackward', 'rmsnormForward', 'rmsnormBackward',
  'swigluForward', 'swigluBackward', 'rope', 'adamw', 'crossEntropyForward', 'crossEntropyBackward', 'klForward',
  'klBackward', 'causalSoftmaxForward', 'causalSoftmaxBackward', 'addInto', 'add', 'fakeQuantForward',
  'fakeQuantBackward']) {
  check(typeof native[name] === 'function', `export ${name}`);
}

// ---- the definition ------------------------------------------------------------------

function roundHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function reference(w, rows, cols, bits, symmetric, granularity, groupSize, clipRatio) {
  const out = new Float32Array(rows * cols);
  const mask = new Uint8Array(rows * cols);
  const run = (start, len) => {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = start; i < start + len; i += 1) {
      if (w[i] < lo) lo = w[i];
      if (w[i] > hi) hi = w[i];
    }
    lo *= clipRatio;
    hi *= clipRatio;
    let scale, zero, qmin, qmax;
    if (symmetric) {
      scale = Math.max(Math.abs(lo), Math.abs(hi)) / (2 ** (bits - 1) - 1);
      zero = 0;
      qmin = -(2 ** (bits - 1));
      qmax = 2 ** (bits - 1) - 1;
    } else {
      scale = (hi - lo) / (2 ** bits - 1);
      zero = scale > 0 ? roundHalfEven(-lo / scale) : 0;
      qmin = 0;
      qmax = 2 ** bits - 1;
    }
    if (!(scale > 0) || !Number.isFinite(scale)) {
      for (let i = start; i < start + len; i += 1) {
        out[i] = w[i];
        mask[i] = 1;
      }
      return;
    }
    for (let i = start; i < start + len; i += 1) {
      const q = roundHalfEven(w[i] / scale) + zero;
      const inside = q >= qmin && q <= qmax;
      const qc = inside ? q : q < qmin ? qmin : qmax;
      out[i] = (qc - zero) * scale;
      mask[i] = inside ? 1 : 0;
    }
  };
  if (granularity === 0) {
    run(0, rows * cols);
  } else {
    const span = granularity === 1 ? cols : Math.min(groupSize, cols);
    for (let r = 0; r < rows; r += 1) {
      for (let begin = 0; begin < cols; begin += span) run(r * cols + begin, Math.min(span, cols - begin));
    }
  }
  return { out, mask };
}

// ---- data ------------------------------------------------------------------------------

// A Float32Array view at an odd offset of a larger arena.
function floatView(n) {
  return new Float32Array(n + 8).subarray(3, 3 + n);
}
function byteView(n) {
  return new Uint8Array(n + 8).fill(9).subarray(5, 5 + n);
}

function makeWeights(rows, cols, special) {
  const w = floatView(rows * cols);
  for (let r = 0; r < rows; r += 1) {
    const scale = 2 ** (random() * 9 - 4);
    for (let c = 0; c < cols; c += 1) w[r * cols + c] = random() * 2 * scale;
  }
  const n = rows * cols;
  if (n >= 4) {
    w[n - 2] = 9.5; // the extremes late in the buffer (past the first thread's part)
    w[Math.floor((n * 3) / 4)] = -9.25;
  }
  if (!special) return w;
  for (let r = 0; r < rows; r += 1) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    switch (r % 7) {
      case 0: row.fill(0.75); break; // constant
      case 1: for (let c = 0; c < cols; c += 1) row[c] = c % 2 ? -0 : 0; break; // zeros
      case 2: // dyadic values: exact .5 ties
        for (let c = 0; c < cols; c += 1) row[c] = 0.25 * (Math.floor((random() + 0.5) * 17) - 8);
        row[0] = -2;
        row[cols - 1] = 2;
        break;
      case 3: for (let c = 0; c < cols; c += 5) row[c] = NaN; break;
      case 4: if (rows > 7) row[Math.floor(cols / 2)] = r % 2 ? -Infinity : Infinity; break;
      case 5: for (let c = 0; c < cols; c += 1) row[c] = 1000 + Math.abs(row[c]); break;
      default: break;
    }
  }
  return w;
}

function sameBits(a, b) {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i += 1) if (x[i] !== y[i]) return i;
  return -1;
}
function sameBytes(a, b) {
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return i;
  return -1;
}

// ---- forward sweep ---------------------------------------------------------------------

let configs = 0;
for (const [rows, cols] of [[1, 1], [3, 7], [5, 200], [64, 1000], [2048, 704]]) {
  const big = rows * cols >= 32768;
  for (const special of [false, true]) {
    const w = makeWeights(rows, cols, special);
    for (const bits of [2, 3, 4, 8]) {
      if (big && (bits === 3 || (special && bits === 2))) continue; // keep the threaded shape to a few seconds
      for (const symmetric of [false, true]) {
        for (const granularity of [0, 1, 2]) {
          for (const groupSize of granularity === 2 ? [32, 64, 128] : [64]) {
            for (const clipRatio of [1, 0.5]) {
              const tag = `${rows}x${cols} ${special ? 'special' : 'random'} bits ${bits} ${symmetric ? 'sym' : 'asym'} gran ${granularity} group ${groupSize} clip ${clipRatio}`;
              const want = reference(w, rows, cols, bits, symmetric, granularity, groupSize, clipRatio);
              const out = floatView(rows * cols).fill(NaN);
              const mask = byteView(rows * cols);
              // Flags alternate between booleans and 0/1.
              const flag = configs % 2 === 0 ? symmetric : symmetric ? 1 : 0;
              native.fakeQuantForward(w, out, mask, rows, cols, bits, flag, granularity, groupSize, clipRatio);
              let at = sameBits(out, want.out);
              check(at < 0, `${tag}: out[${at}] = ${out[at]}, want ${want.out[at]}`);
              at = sameBytes(mask, want.mask);
              check(at < 0, `${tag}: mask[${at}] = ${mask[at]}, want ${want.mask[at]}`);
              if (!big || configs % 4 === 0) {
                const inPlace = floatView(rows * cols);
                inPlace.set(w);
                native.fakeQuantForward(inPlace, inPlace, EMPTY_U8, rows, cols, bits, flag, granularity, groupSize, clipRatio);
                at = sameBits(inPlace, want.out);
                check(at < 0, `${tag}: in place with EMPTY_U8 mask: out[${at}]`);
              }
              configs += 1;
            }
          }
        }
      }
    }
  }
}
console.log(`[${process.env.QKD_ISA}] fakeQuantForward: ${configs} configurations`);

// Constant and all-zero tensors are copied with mask 1.
for (const fill of [0, -1.5]) {
  const w = floatView(10).fill(fill);
  const out = floatView(10);
  const mask = byteView(10);
  native.fakeQuantForward(w, out, mask, 2, 5, 4, false, 0, 128, 1);
  check(sameBits(out, w) < 0 && mask.every((m) => m === 1), `constant ${fill}: copied with mask 1`);
}
// Nothing to do: zero rows or columns touch nothing (EMPTY buffers allowed).
native.fakeQuantForward(new Float32Array(0), new Float32Array(0), EMPTY_U8, 0, 5, 4, true, 1, 32, 1);
native.fakeQuantForward(new Float32Array(0), new Float32Array(0), EMPTY_U8, 3, 0, 4, true, 2, 32, 1);
check(true, 'empty tensors');

// ---- backward ------------------------------------------------------------------------------

for (const n of [1, 7, 16, 17, 33, 1000, 2048 * 704 + 3]) {
  const dy = floatView(n);
  const dw = floatView(n);
  const mask = byteView(n);
  for (let i = 0; i < n; i += 1) {
    dy[i] = random();
    dw[i] = i % 7 === 3 ? -0 : random();
    const f = Math.floor((random() + 0.5) * 6);
    mask[i] = f === 0 || f === 3 ? 0 : f === 2 ? 255 : 1;
    if (mask[i] === 0 && i % 5 === 1) dy[i] = NaN;
  }
  const want = Float32Array.from(dw);
  for (let i = 0; i < n; i += 1) if (mask[i]) want[i] += dy[i];
  native.fakeQuantBackward(dy, mask, dw, n);
  const at = sameBits(dw, want);
  check(at < 0, `fakeQuantBackward n ${n}: dw[${at}] = ${dw[at]}, want ${want[at]}`);
}

// ---- argument errors -------------------------------------------------------------------------

{
  const f = (n) => new Float32Array(n);
  const u = (n) => new Uint8Array(n);
  const fq = (...over) => {
    const args = [f(6), f(6), u(6), 2, 3, 4, false, 2, 32, 1];
    for (const [i, v] of over) args[i] = v;
    return () => native.fakeQuantForward(...args);
  };
  expectThrow(fq([5, 1]), /^qkd_native\.fakeQuantForward: argument bits must be an integer from 2 to 8, got 1$/, 'bits 1');
  expectThrow(fq([5, 9]), /fakeQuantForward: argument bits must be an integer from 2 to 8, got 9/, 'bits 9');
  expectThrow(fq([5, 2.5]), /fakeQuantForward: argument bits must be an integer/, 'bits 2.5');
  expectThrow(fq([7, 3]), /^qkd_native\.fakeQuantForward: argument granularity must be 0 \(tensor\), 1 \(channel\) or 2 \(group\), got 3$/, 'granularity 3');
  expectThrow(fq([7, -1]), /fakeQuantForward: argument granularity must be a non-negative integer/, 'granularity -1');
  expectThrow(fq([8, 0]), /^qkd_native\.fakeQuantForward: argument groupSize must be a positive integer, got 0$/, 'groupSize 0');
  expectThrow(fq([9, 0]), /^qkd_native\.fakeQuantForward: argument clipRatio must be in \(0, 1\], got 0$/, 'clipRatio 0');
  expectThrow(fq([9, 1.5]), /fakeQuantForward: argument clipRatio must be in \(0, 1\], got 1\.5/, 'clipRatio 1.5');
  expectThrow(fq([9, NaN]), /fakeQuantForward: argument clipRatio must be in \(0, 1\], got nan/, 'clipRatio NaN');
  expectThrow(fq([9, '1']), /fakeQuantForward: argument clipRatio must be a number/, 'clipRatio string');
  expectThrow(fq([6, 2]), /fakeQuantForward: argument symmetric must be a boolean or 0\/1/, 'symmetric 2');
  expectThrow(fq([0, f(5)]), /^qkd_native\.fakeQuantForward: argument w \(Float32Array\) has 5 elements, needs at least 6$/, 'short w');
  expectThrow(fq([1, f(5)]), /^qkd_native\.fakeQuantForward: argument out \(Float32Array\) has 5 elements, needs at least 6$/, 'short out');
  expectThrow(fq([2, u(5)]), /^qkd_native\.fakeQuantForward: argument mask \(Uint8Array\) has 5 elements, needs at least 6$/, 'short mask');
  expectThrow(fq([2, new Int8Array(6)]), /fakeQuantForward: argument mask must be a Uint8Array/, 'Int8Array mask');
  expectThrow(fq([2, f(6)]), /fakeQuantForward: argument mask must be a Uint8Array/, 'Float32Array mask');
  expectThrow(fq([0, new Float64Array(6)]), /fakeQuantForward: argument w must be a Float32Array/, 'Float64Array w');
  expectThrow(() => native.fakeQuantForward(f(6), f(6), u(6), 2, 3, 4, false, 2, 32), /fakeQuantForward: expected 10 arguments, got 9/, 'argument count');
  const arena = f(12);
  expectThrow(fq([0, arena.subarray(0, 6)], [1, arena.subarray(2, 8)]),
    /fakeQuantForward: arguments w and out overlap without being the same elements/, 'partially overlapping w and out');
  const shared = f(16);
  expectThrow(fq([0, shared.subarray(0, 6)], [2, new Uint8Array(shared.buffer, 8, 6)]),
    /^qkd_native\.fakeQuantForward: arguments mask and w must not overlap$/, 'mask inside w');
  expectThrow(fq([1, shared.subarray(8, 14)], [2, new Uint8Array(shared.buffer, 40, 6)]),
    /fakeQuantForward: arguments mask and out must not overlap/, 'mask inside out');
  native.fakeQuantForward(shared.subarray(0, 6), shared.subarray(6, 12), new Uint8Array(shared.buffer, 48, 6), 2, 3, 4, 1, 1, 1, 0.5);
  check(true, 'w, out and mask side by side in one ArrayBuffer are accepted');

  expectThrow(() => native.fakeQuantBackward(f(6), u(5), f(6), 6),
    /^qkd_native\.fakeQuantBackward: argument mask \(Uint8Array\) has 5 elements, needs at least 6$/, 'backward short mask');
  expectThrow(() => native.fakeQuantBackward(f(6), u(6), f(5), 6),
    /^qkd_native\.fakeQuantBackward: argument dw \(Float32Array\) has 5 elements, needs at least 6$/, 'backward short dw');
  expectThrow(() => native.fakeQuantBackward(f(5), u(6), f(6), 6),
    /^qkd_native\.fakeQuantBackward: argument dy \(Float32Array\) has 5 elements, needs at least 6$/, 'backward short dy');
  expectThrow(() => native.fakeQuantBackward(f(6), f(6), f(6), 6),
    /fakeQuantBackward: argument mask must be a Uint8Array/, 'backward Float32Array mask');
  expectThrow(() => native.fakeQuantBackward(f(6), new Uint8Array(shared.buffer, 4, 6), shared.subarray(0, 6), 6),
    /fakeQuantBackward: arguments mask and dw must not overlap/, 'backward mask inside dw');
  expectThrow(() => native.fakeQuantBackward(f(6), u(6), f(6), 1.5),
    /fakeQuantBackward: argument n must be a non-negative integer/, 'backward fractional n');
  const g = f(4).fill(1);
  native.fakeQuantBackward(g, new Uint8Array([1, 0, 1, 0]), g, 4);
  check(g.join() === '2,1,2,1', 'backward in place (dw === dy)');
}

finish();

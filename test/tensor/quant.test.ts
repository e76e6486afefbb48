// Fake quantization (SPEC section 2): error bounds per format, level counts,
// straight-through gradients, and argument errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { blockFakeQuantize } from '../../src/tensor/ops/quant.js';
import { mul } from '../../src/tensor/ops/elementwise.js';
import { sumAll } from '../../src/tensor/ops/reduce.js';
import { roundTrip } from '../../src/quant/ggml-formats.js';
import { Rng, Tensor, backward, fakeQuantize, floatFrom, nativeStatus, quantizeDequantize, roundHalfEven, withBackend, type FakeQuantOptions } from '../../src/tensor/index.js';

function weights(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * 0.05 * (1 + (i % cols) / cols);
  return w;
}

/** The groups of a [rows, cols] matrix as [start, length] runs. */
function groups(rows: number, cols: number, o: FakeQuantOptions): [number, number][] {
  if (o.granularity === 'tensor') return [[0, rows * cols]];
  const span = o.granularity === 'group' ? o.groupSize ?? 128 : cols;
  const out: [number, number][] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c += span) out.push([r * cols + c, Math.min(span, cols - c)]);
  return out;
}

describe('quantizeDequantize', () => {
  const rows = 6;
  const cols = 200; // groups of 64 leave a partial last group of 8
  const w = weights(rows, cols, 3);
  for (const bits of [2, 3, 4, 8]) {
    for (const symmetric of [false, true]) {
      for (const granularity of ['tensor', 'channel', 'group'] as const) {
        const o: FakeQuantOptions = { bits, symmetric, granularity, groupSize: 64 };
        it(`${bits}-bit ${symmetric ? 'sym' : 'asym'} per-${granularity}: |ŵ − w| ≤ step/2 and ≤ 2^b levels per group`, () => {
          const out = new Float32Array(w.length);
          const mask = new Uint8Array(w.length);
          quantizeDequantize(w, rows, cols, o, out, mask);
          for (const [start, len] of groups(rows, cols, o)) {
            let lo = Infinity, hi = -Infinity;
            for (let i = start; i < start + len; i++) { lo = Math.min(lo, w[i]!); hi = Math.max(hi, w[i]!); }
            const step = symmetric ? Math.max(-lo, hi) / (2 ** (bits - 1) - 1) : (hi - lo) / (2 ** bits - 1);
            const levels = new Set<number>();
            for (let i = start; i < start + len; i++) {
              // asymmetric: zero-point rounding shifts the grid by up to step/2 at the range ends
              const bound = (symmetric ? 0.5 : 1) * step * (1 + 1e-5);
              assert.ok(Math.abs(out[i]! - w[i]!) <= bound, `element ${i}: ${w[i]} → ${out[i]} (step ${step})`);
              levels.add(out[i]!);
            }
            assert.ok(levels.size <= 2 ** bits, `${levels.size} levels for ${bits} bits`);
          }
        });
      }
    }
  }
  it('relative RMSE per format stays under its bound', () => {
    // Bounds sit ~15% above the uniform-noise prediction step/√12 relative to
    // the RMS (Gaussian rows of 200: range ≈ 5.5σ; measured 0.0065, 0.113, 0.079, 0.399).
    const bounds: [FakeQuantOptions, number][] = [
      [{ bits: 8, granularity: 'channel' }, 0.0075],
      [{ bits: 4, granularity: 'channel' }, 0.13],
      [{ bits: 4, granularity: 'group', groupSize: 32 }, 0.09],
      [{ bits: 2, granularity: 'group', groupSize: 32 }, 0.45],
    ];
    for (const [o, bound] of bounds) {
      const out = new Float32Array(w.length);
      quantizeDequantize(w, rows, cols, o, out, null);
      let num = 0, den = 0;
      for (let i = 0; i < w.length; i++) { num += (out[i]! - w[i]!) ** 2; den += w[i]! ** 2; }
      const rel = Math.sqrt(num / den);
      assert.ok(rel < bound, `${JSON.stringify(o)}: relative RMSE ${rel} ≥ ${bound}`);
    }
  });
  it('symmetric maps zero to zero and a constant group exactly', () => {
    const data = Float32Array.from([0, 0.5, -0.25, 1, 3, 3, 3, 3]);
    const out = new Float32Array(8);
    quantizeDequantize(data, 2, 4, { bits: 4, symmetric: true, granularity: 'channel' }, out, null);
    assert.equal(out[0], 0);
    assert.deepEqual(Array.from(out.subarray(4)), [3, 3, 3, 3]);
    quantizeDequantize(data, 2, 4, { bits: 4, granularity: 'channel' }, out, null);
    assert.deepEqual(Array.from(out.subarray(4)), [3, 3, 3, 3]);
  });
  it('rounds half to even', () => {
    assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, -0, -2, 2, 3]);
  });
  it('rejects bad options naming the field', () => {
    const out = new Float32Array(4);
    assert.throws(() => quantizeDequantize(w, 1, 4, { bits: 9 }, out, null), /bits must be an integer from 2 to 8, got 9.*field: bits/);
    assert.throws(() => quantizeDequantize(w, 1, 4, { bits: 4, clipRatio: 0 }, out, null), /clipRatio/);
    assert.throws(() => quantizeDequantize(w, 1, 4, { bits: 4, granularity: 'row' as never }, out, null), /unknown granularity 'row'/);
  });
});

describe('fakeQuantize (straight-through estimator)', () => {
  it('passes the gradient unchanged inside the range', () => {
    const w = new Tensor([4, 8], floatFrom(weights(4, 8, 9)), true);
    const y = fakeQuantize(w, { bits: 4 });
    const seed = floatFrom(Array.from({ length: 32 }, (_, i) => i - 16));
    backward(y, seed);
    assert.deepEqual(Array.from(w.grad!), Array.from(seed));
  });
  it('blocks the gradient where clipping (clipRatio < 1) cut the weight', () => {
    const w = new Tensor([1, 6], floatFrom([-1, -0.2, 0, 0.1, 0.3, 1]), true);
    const y = fakeQuantize(w, { bits: 4, symmetric: true, granularity: 'tensor', clipRatio: 0.5 });
    backward(y, floatFrom([1, 1, 1, 1, 1, 1]));
    assert.deepEqual(Array.from(w.grad!), [0, 1, 1, 1, 1, 0]);
    assert.equal(y.data[5], 0.5); // clipped to the range end
  });
});

describe('fake quantization: native against reference', () => {
  it('gives bit-identical values and masks', { skip: !nativeStatus().loaded && 'native addon not loaded' }, () => {
    const shapes: [number, number][] = [[1, 1], [3, 7], [5, 200], [64, 1000], [2048, 704]];
    for (const [rows, cols] of shapes) {
      const w = weights(rows, cols, rows + cols);
      if (rows === 5) w.fill(0.25, 0, 200); // a constant row
      for (const bits of [2, 3, 4, 8]) {
        for (const symmetric of [false, true]) {
          for (const granularity of ['tensor', 'channel', 'group'] as const) {
            for (const clipRatio of [1, 0.5]) {
              const o: FakeQuantOptions = { bits, symmetric, granularity, groupSize: 64, clipRatio };
              const run = (backend: 'reference' | 'native') => {
                const out = new Float32Array(w.length);
                const mask = new Uint8Array(w.length);
                withBackend(backend, () => quantizeDequantize(w, rows, cols, o, out, mask));
                return { out, mask };
              };
              const ref = run('reference');
              const nat = run('native');
              for (let i = 0; i < w.length; i++) {
                if (ref.out[i] !== nat.out[i] || ref.mask[i] !== nat.mask[i]) {
                  assert.fail(`${rows}x${cols} ${JSON.stringify(o)}: element ${i}: native ${nat.out[i]}/${nat.mask[i]} vs reference ${ref.out[i]}/${ref.mask[i]}`);
                }
              }
            }
          }
        }
      }
    }
  });
});

describe('blockFakeQuantize', () => {
  it('forwards the codec round trip and passes the gradient straight through', () => {
    const w = new Tensor([2, 32], Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 0.1), true);
    const y = blockFakeQuantize(w, (x) => roundTrip('Q4_0', x));
    assert.deepEqual(Array.from(y.data), Array.from(roundTrip('Q4_0', w.data as Float32Array)));
    backward(sumAll(mul(y, new Tensor([2, 32], Float32Array.from({ length: 64 }, (_, i) => i)))));
    assert.deepEqual(Array.from(w.grad!), Array.from({ length: 64 }, (_, i) => i));
  });
});

// Round-to-nearest PTQ (SPEC section 2, stored form): error bounds per
// format, code / zero-point ranges, f16-exact scales, the fast error
// function, edge groups and argument errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dequantize, quantizationError, rtnQuantize, type QuantizedTensor } from '../../src/quant/rtn.js';
import { groupsPerRow, type QuantScheme } from '../../src/quant/scheme.js';
import { QkdError } from '../../src/errors.js';
import { Rng, fromF16, roundHalfEven, toF16 } from '../../src/tensor/index.js';

function gaussian(rows: number, cols: number, seed: number, std = 0.05): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: rows * cols }, () => rng.normal() * std);
}

/** The groups of a [rows, cols] matrix as [start, length] runs. */
function groupRuns(rows: number, cols: number, s: QuantScheme): [number, number][] {
  if (s.perTensor) return [[0, rows * cols]];
  const span = s.groupSize > 0 ? s.groupSize : cols;
  const out: [number, number][] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c += span) out.push([r * cols + c, Math.min(span, cols - c)]);
  return out;
}

/** The step SPEC 2 gives a group (range extended to include 0 when asymmetric). */
function step(w: Float32Array, start: number, len: number, bits: number, symmetric: boolean): number {
  let lo = 0, hi = 0;
  for (let i = start; i < start + len; i++) { lo = Math.min(lo, w[i]!); hi = Math.max(hi, w[i]!); }
  return symmetric ? Math.max(-lo, hi) / (2 ** (bits - 1) - 1) : (hi - lo) / (2 ** bits - 1);
}

function relError(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / den);
}

const SCHEMES: [string, QuantScheme][] = [
  ['per-tensor', { groupSize: 0, symmetric: false, perTensor: true }],
  ['per-channel', { groupSize: 0, symmetric: false }],
  ['group 32', { groupSize: 32, symmetric: false }],
  ['group 64', { groupSize: 64, symmetric: false }],
  ['group 128', { groupSize: 128, symmetric: false }],
];

describe('rtnQuantize', () => {
  const rows = 8;
  const cols = 200; // groups of 64 and 128 leave a partial last group
  const w = gaussian(rows, cols, 1);
  for (const bits of [2, 3, 4, 8]) {
    for (const symmetric of [false, true]) {
      for (const [label, base] of SCHEMES) {
        const scheme = { ...base, symmetric };
        it(`${bits}-bit ${symmetric ? 'sym' : 'asym'} ${label}: codes in range, |ŵ − w| ≤ step/2, RMSE ≤ 1.2·step/√12`, () => {
          const q = rtnQuantize(w, rows, cols, bits, scheme);
          const groups = groupsPerRow(cols, scheme.groupSize);
          assert.equal(q.scales.length, rows * groups);
          assert.equal(q.zeros === null, symmetric);
          assert.ok(q.codes.every((c) => c < 2 ** bits));
          if (q.zeros) assert.ok(q.zeros.every((z) => z < 2 ** bits));
          assert.deepEqual(fromF16(toF16(q.scales)), q.scales, 'scales are f16-exact');
          const out = dequantize(q);
          let mse = 0, predicted = 0;
          for (const [start, len] of groupRuns(rows, cols, scheme)) {
            const s = step(w, start, len, bits, symmetric);
            // clamping at the range ends adds at most the f16 rounding of the scale times the top code
            const bound = s * (0.5 + 2 ** bits * 2 ** -11) * (1 + 1e-6);
            for (let i = start; i < start + len; i++) {
              assert.ok(Math.abs(out[i]! - w[i]!) <= bound, `element ${i}: ${w[i]} → ${out[i]} (step ${s})`);
              mse += (out[i]! - w[i]!) ** 2;
            }
            predicted += (len * s * s) / 12;
          }
          assert.ok(Math.sqrt(mse) <= 1.2 * Math.sqrt(predicted), `RMSE ${Math.sqrt(mse / w.length)} vs step/√12 ${Math.sqrt(predicted / w.length)}`);
          if (scheme.perTensor) {
            assert.ok(q.scales.every((s) => s === q.scales[0]), 'one scale replicated per row');
            if (q.zeros) assert.ok(q.zeros.every((z) => z === q.zeros![0]));
          }
        });
      }
    }
  }

  it('8-bit error is far below 4-bit error (per-channel)', () => {
    const e8 = quantizationError(w, rows, cols, 8, { groupSize: 0, symmetric: false });
    const e4 = quantizationError(w, rows, cols, 4, { groupSize: 0, symmetric: false });
    assert.ok(e8 < 0.01 && e8 < e4 / 12, `8-bit ${e8}, 4-bit ${e4}`);
    const e2 = quantizationError(w, rows, cols, 2, { groupSize: 0, symmetric: false });
    assert.ok(e4 < e2);
  });

  it('quantizationError equals the error of dequantize(rtnQuantize(w)) for every format', () => {
    for (const bits of [2, 3, 4, 5, 8]) {
      for (const symmetric of [false, true]) {
        for (const [, base] of [...SCHEMES, ['group 7', { groupSize: 7, symmetric: false }] as [string, QuantScheme]]) {
          const scheme = { ...base, symmetric };
          const direct = relError(dequantize(rtnQuantize(w, rows, cols, bits, scheme)), w);
          const fast = quantizationError(w, rows, cols, bits, scheme);
          assert.ok(Math.abs(direct - fast) <= 1e-12 * direct, `${bits} ${JSON.stringify(scheme)}: ${direct} vs ${fast}`);
        }
      }
    }
  });

  it('codes follow SPEC 2 with half-to-even rounding, ties included', () => {
    // Values on exact half steps of a power-of-two scale exercise the ties.
    const data = Float32Array.from({ length: 64 }, (_, i) => (i - 32) * 0.125 + (i % 3 === 0 ? 0.0625 : 0));
    for (const symmetric of [false, true]) {
      for (const bits of [3, 4, 8]) {
        const q = rtnQuantize(data, 4, 16, bits, { groupSize: 8, symmetric });
        for (let i = 0; i < data.length; i++) {
          const gi = Math.floor(i / 8);
          const zero = q.zeros ? q.zeros[gi]! : 2 ** (bits - 1);
          const expected = Math.min(Math.max(roundHalfEven(data[i]! / q.scales[gi]!) + zero, 0), 2 ** bits - 1);
          assert.equal(q.codes[i], expected, `${bits}-bit ${symmetric} element ${i}`);
        }
      }
    }
  });

  it('zero stays exactly zero; all-zero groups and all-zero tensors are exact', () => {
    const data = Float32Array.from([0, 0.5, -0.25, 0.125, 0, 0, 0, 0, 0.3, 0.3, 0.3, 0.3]);
    for (const symmetric of [false, true]) {
      for (const bits of [2, 3, 4, 8]) {
        const q = rtnQuantize(data, 3, 4, bits, { groupSize: 0, symmetric });
        const out = dequantize(q);
        assert.equal(out[0], 0);
        assert.deepEqual(Array.from(out.subarray(4, 8)), [0, 0, 0, 0]);
        assert.equal(q.scales[1], 1, 'all-zero row gets scale 1');
        // a non-zero constant row: reproduced to the f16 precision of its scale
        for (const v of out.subarray(8)) assert.ok(Math.abs(v - 0.3) <= 0.3 * 2 ** -10, `${v}`);
      }
    }
    const zeros = new Float32Array(6);
    assert.equal(quantizationError(zeros, 2, 3, 4, { groupSize: 0, symmetric: false }), 0);
    assert.deepEqual(dequantize(rtnQuantize(zeros, 2, 3, 4, { groupSize: 2, symmetric: false })), zeros);
  });

  it('asymmetric zero points land in [0, 2^b − 1] for all-positive and all-negative groups', () => {
    const data = Float32Array.from([1, 2, 3, 4, -1, -2, -3, -4]);
    const q = rtnQuantize(data, 2, 4, 4, { groupSize: 0, symmetric: false });
    assert.deepEqual(Array.from(q.zeros!), [0, 15]);
    const out = dequantize(q);
    for (let i = 0; i < 8; i++) assert.ok(Math.abs(out[i]! - data[i]!) <= 4 / 15 / 2 + 1e-6, `${i}: ${out[i]}`);
  });

  it('symmetric codes are the signed values offset by 2^(b−1)', () => {
    const data = Float32Array.from([-1, -0.5, 0, 0.5, 1]);
    const q: QuantizedTensor = rtnQuantize(data, 1, 5, 3, { groupSize: 0, symmetric: true });
    // scale = 1/3 (f16-rounded): signed q = [−3, −2, 0, 2, 3] (±0.5/0.33325 = ±1.5004)
    assert.deepEqual(Array.from(q.codes), [1, 2, 4, 6, 7]);
    assert.equal(q.granularity, 'channel');
  });

  it('names the bad argument', () => {
    const data = new Float32Array(8);
    const s = { groupSize: 0, symmetric: false };
    const field = (f: string) => (err: unknown) => err instanceof QkdError && err.field === f;
    assert.throws(() => rtnQuantize(data, 2, 4, 1, s), field('bits'));
    assert.throws(() => rtnQuantize(data, 2, 4, 9, s), field('bits'));
    assert.throws(() => rtnQuantize(data, 3, 4, 4, s), field('shape'));
    assert.throws(() => rtnQuantize(data, 2, 4, 4, { groupSize: -1, symmetric: false }), field('groupSize'));
    assert.throws(() => rtnQuantize(data, 2, 4, 4, { groupSize: 2, symmetric: false, perTensor: true }), field('groupSize'));
    assert.throws(() => quantizationError(Float32Array.from([0, NaN]), 1, 2, 4, s), field('weights'));
    assert.throws(() => rtnQuantize(Float32Array.from([1e9, -1e9]), 1, 2, 2, s), field('weights'));
  });
});

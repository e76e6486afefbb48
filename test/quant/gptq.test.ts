// GPTQ: lower output error than RTN on correlated inputs, exactly RTN when
// H = I, dead columns, act-order, the Hessian accumulator and the inverse
// Cholesky factor.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HessianAccumulator, gptqQuantize, inverseCholeskyUpper } from '../../src/quant/gptq.js';
import { dequantize, rtnQuantize, type QuantizedTensor } from '../../src/quant/rtn.js';
import type { QuantScheme } from '../../src/quant/scheme.js';
import { QkdError } from '../../src/errors.js';
import { Rng } from '../../src/tensor/index.js';

const rows = 24;
const cols = 48;
const tokens = 400;

/** Inputs with correlated channels of unequal scale: x = z·A, some channels loud. */
function correlatedInputs(seed: number, n = tokens): Float32Array {
  const rng = new Rng(seed);
  const k = 12; // latent factors: strong correlation between the channels
  const a = Float64Array.from({ length: k * cols }, () => rng.normal());
  const loud = Float64Array.from({ length: cols }, (_, c) => (c % 7 === 0 ? 4 : 1));
  const x = new Float32Array(n * cols);
  for (let t = 0; t < n; t++) {
    const z = Array.from({ length: k }, () => rng.normal());
    for (let c = 0; c < cols; c++) {
      let s = 0.3 * rng.normal();
      for (let j = 0; j < k; j++) s += z[j]! * a[j * cols + c]!;
      x[t * cols + c] = s * loud[c]!;
    }
  }
  return x;
}

function gaussian(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal() * 0.1);
}

/** ‖X Wᵀ − X Ŵᵀ‖_F / ‖X Wᵀ‖_F in float64. */
function outputError(x: Float32Array, w: Float32Array, q: QuantizedTensor): number {
  const wh = dequantize(q);
  const n = x.length / cols;
  let num = 0, den = 0;
  for (let t = 0; t < n; t++) {
    for (let r = 0; r < rows; r++) {
      let y = 0, yh = 0;
      for (let c = 0; c < cols; c++) { y += x[t * cols + c]! * w[r * cols + c]!; yh += x[t * cols + c]! * wh[r * cols + c]!; }
      num += (y - yh) ** 2;
      den += y * y;
    }
  }
  return Math.sqrt(num / den);
}

function hessianOf(x: Float32Array): Float64Array {
  const acc = new HessianAccumulator(cols);
  acc.add(x);
  return acc.hessian();
}

function identity(n: number): Float64Array {
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++) h[i * n + i] = 1;
  return h;
}

describe('gptqQuantize', () => {
  const x = correlatedInputs(1);
  const w = gaussian(rows * cols, 2);
  const h = hessianOf(x);
  const schemes: [string, QuantScheme][] = [
    ['per-channel asym', { groupSize: 0, symmetric: false }],
    ['per-channel sym', { groupSize: 0, symmetric: true }],
    ['group 16 asym', { groupSize: 16, symmetric: false }],
  ];
  for (const bits of [3, 4]) {
    for (const [label, scheme] of schemes) {
      for (const actOrder of [false, true]) {
        it(`${bits}-bit ${label}${actOrder ? ' act-order' : ''}: output error below RTN's, codes in range`, () => {
          const rtn = outputError(x, w, rtnQuantize(w, rows, cols, bits, scheme));
          const q = gptqQuantize(w, rows, cols, h, bits, scheme, { blockSize: 16, actOrder });
          const gptq = outputError(x, w, q);
          assert.ok(gptq < 0.85 * rtn, `GPTQ ${gptq.toFixed(4)} vs RTN ${rtn.toFixed(4)}`);
          assert.ok(q.codes.every((c) => c < 2 ** bits));
          if (q.zeros) assert.ok(q.zeros.every((z) => z < 2 ** bits));
          assert.equal(q.scales.length, rows * (scheme.groupSize ? Math.ceil(cols / scheme.groupSize) : 1));
          assert.equal(q.zeros === null, scheme.symmetric);
        });
      }
    }
  }

  it('with H = I equals RTN exactly', () => {
    for (const bits of [2, 3, 4, 8]) {
      for (const scheme of [{ groupSize: 0, symmetric: false }, { groupSize: 0, symmetric: true }, { groupSize: 16, symmetric: false }, { groupSize: 20, symmetric: true }, { groupSize: 0, symmetric: false, perTensor: true }] as QuantScheme[]) {
        for (const blockSize of [7, 128]) {
          const g = gptqQuantize(w, rows, cols, identity(cols), bits, scheme, { blockSize });
          const r = rtnQuantize(w, rows, cols, bits, scheme);
          assert.deepEqual(g.codes, r.codes, `${bits} bits ${JSON.stringify(scheme)} block ${blockSize}`);
          assert.deepEqual(g.scales, r.scales);
          assert.deepEqual(g.zeros, r.zeros);
        }
      }
    }
  });

  it('does not depend on the block size beyond float32 rounding', () => {
    const scheme = { groupSize: 0, symmetric: false };
    const a = outputError(x, w, gptqQuantize(w, rows, cols, h, 4, scheme, { blockSize: 128 }));
    const b = outputError(x, w, gptqQuantize(w, rows, cols, h, 4, scheme, { blockSize: 5 }));
    assert.ok(Math.abs(a - b) <= 0.02 * a, `${a} vs ${b}`);
  });

  it('zeroes dead columns (H_jj = 0) and still quantizes the rest', () => {
    const xd = Float32Array.from(x);
    const dead = [3, 17, 40];
    for (let t = 0; t < tokens; t++) for (const c of dead) xd[t * cols + c] = 0;
    const hd = hessianOf(xd);
    for (const scheme of [{ groupSize: 0, symmetric: false }, { groupSize: 16, symmetric: true }]) {
      for (const actOrder of [false, true]) {
        const q = gptqQuantize(w, rows, cols, hd, 3, scheme, { actOrder });
        const wh = dequantize(q);
        for (let r = 0; r < rows; r++) for (const c of dead) assert.equal(wh[r * cols + c], 0, `row ${r} col ${c}`);
        assert.ok(wh.every(Number.isFinite));
        const rtn = outputError(xd, w, rtnQuantize(w, rows, cols, 3, scheme));
        assert.ok(outputError(xd, w, q) < rtn);
      }
    }
  });

  it('raises the dampening when H is singular (fewer tokens than columns)', () => {
    const few = correlatedInputs(3, 10);
    const q = gptqQuantize(w, rows, cols, hessianOf(few), 4, { groupSize: 0, symmetric: false }, { dampening: 0 });
    assert.ok(dequantize(q).every(Number.isFinite));
  });

  it('names bad arguments', () => {
    const s = { groupSize: 0, symmetric: false };
    const field = (f: string) => (e: unknown) => e instanceof QkdError && e.field === f;
    assert.throws(() => gptqQuantize(w, rows, cols, new Float64Array(4), 4, s), field('hessian'));
    assert.throws(() => gptqQuantize(w, rows, cols, h, 4, s, { blockSize: 0 }), field('blockSize'));
    assert.throws(() => gptqQuantize(w, rows, cols, h, 4, s, { dampening: -1 }), field('dampening'));
    assert.throws(() => gptqQuantize(w, rows, cols, h, 9, s), field('bits'));
    const nanH = Float64Array.from(h);
    nanH[5] = NaN;
    assert.throws(() => gptqQuantize(w, rows, cols, nanH, 4, s), field('hessian'));
  });
});

describe('HessianAccumulator', () => {
  it('is 2/N Σ x xᵀ over all batches (float64 oracle)', () => {
    const x = correlatedInputs(4, 90);
    const acc = new HessianAccumulator(cols);
    acc.add(x.subarray(0, 30 * cols));
    acc.add(x.subarray(30 * cols));
    assert.equal(acc.samples, 90);
    const hAcc = acc.hessian();
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        let s = 0;
        for (let t = 0; t < 90; t++) s += x[t * cols + i]! * x[t * cols + j]!;
        const expected = (2 / 90) * s;
        assert.ok(Math.abs(hAcc[i * cols + j]! - expected) <= 1e-5 * (Math.abs(expected) + 1), `H[${i},${j}]`);
      }
    }
    assert.throws(() => new HessianAccumulator(3).hessian(), (e: unknown) => e instanceof QkdError && e.code === 'STATE');
    assert.throws(() => acc.add(new Float32Array(cols + 1)), (e: unknown) => e instanceof QkdError && e.code === 'SHAPE');
  });
});

describe('inverseCholeskyUpper', () => {
  it('gives upper U with UᵀU = H⁻¹, and null for an indefinite H', () => {
    const n = 9;
    const rng = new Rng(7);
    const a = Float64Array.from({ length: n * n }, () => rng.normal());
    const h = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = i === j ? 0.5 : 0;
      for (let k = 0; k < n; k++) s += a[i * n + k]! * a[j * n + k]!;
      h[i * n + j] = s;
    }
    const u = inverseCholeskyUpper(h, n)!;
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(u[i * n + j], 0, 'upper triangular');
    for (let i = 0; i < n; i++) assert.ok(u[i * n + i]! > 0);
    // (UᵀU) H = I
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) {
        let hinv = 0;
        for (let m = 0; m < n; m++) hinv += u[m * n + i]! * u[m * n + k]!;
        s += hinv * h[k * n + j]!;
      }
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-9, `(${i},${j}): ${s}`);
    }
    const bad = Float64Array.from(h);
    bad[0] = -1;
    assert.equal(inverseCholeskyUpper(bad, n), null);
  });
});

// Learned step sizes (LSQ / LSQ+): the first forward equals RTN PTQ, the
// packed form decodes exactly the forward's weights, the clip search never
// does worse than min/max, and every gradient is the LSQ formula (checked
// element by element, and against finite differences where ŵ is smooth in
// the parameter: the step of clipped weights).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, backward, floatFrom, learnedFakeQuantize, learnedStep, learnedZero, roundHalfEven, type LearnedQuantOptions } from '../../src/tensor/index.js';
import { initLearnedScales, learnedQuantize, scalesOf } from '../../src/quant/lsq.js';
import { dequantize, rtnQuantize } from '../../src/quant/rtn.js';
import { QkdError } from '../../src/errors.js';

function weights(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: rows * cols }, (_, i) => rng.normal() * 0.05 * (1 + (i % cols) / cols) + (i % 7 === 0 ? 0.01 : 0));
}

const cases: (LearnedQuantOptions & { name: string })[] = [
  { name: 'asymmetric per channel, 4 bits', bits: 4, symmetric: false, groupSize: 0 },
  { name: 'symmetric per channel, 3 bits', bits: 3, symmetric: true, groupSize: 0 },
  { name: 'asymmetric groups of 32 (a partial last group), 2 bits', bits: 2, symmetric: false, groupSize: 32 },
];

function forward(w: Float32Array, rows: number, cols: number, p: { logStep: Float32Array; zero: Float32Array | null }, o: LearnedQuantOptions, grad = false) {
  const wt = new Tensor([rows, cols], Float32Array.from(w), grad);
  const th = new Tensor([p.logStep.length], Float32Array.from(p.logStep), grad);
  const z = p.zero ? new Tensor([p.zero.length], Float32Array.from(p.zero), grad) : null;
  return { y: learnedFakeQuantize(wt, th, z, o), wt, th, z };
}

describe('learned step sizes (LSQ, LSQ+)', () => {
  const rows = 5;
  const cols = 72;
  const w = weights(rows, cols, 11);
  for (const o of cases) {
    const scheme = { groupSize: o.groupSize, symmetric: o.symmetric };
    it(`${o.name}: RTN start = RTN PTQ, and the packed form decodes the forward exactly`, () => {
      const p = initLearnedScales(w, rows, cols, o.bits, scheme, 'rtn');
      const { y } = forward(w, rows, cols, p, o);
      assert.deepEqual(Array.from(y.data), Array.from(dequantize(rtnQuantize(w, rows, cols, o.bits, scheme))));
      // Moved parameters: still exactly what the packed checkpoint decodes.
      const rng = new Rng(5);
      const moved = { logStep: p.logStep.map((t) => t + 0.3 * (rng.uniform() - 0.5)), zero: p.zero ? p.zero.map((z) => z + 2 * (rng.uniform() - 0.5)) : null };
      const y2 = forward(w, rows, cols, moved, o).y;
      assert.deepEqual(Array.from(y2.data), Array.from(dequantize(learnedQuantize(w, rows, cols, o.bits, scheme, moved))));
      // scalesOf gives parameters that reproduce a quantized tensor.
      const q = rtnQuantize(w, rows, cols, o.bits, scheme);
      assert.deepEqual(Array.from(forward(w, rows, cols, scalesOf(q), o).y.data), Array.from(dequantize(q)));
    });

    it(`${o.name}: the clip search's error is never above min/max's, per group`, () => {
      const rtn = initLearnedScales(w, rows, cols, o.bits, scheme, 'rtn');
      const clip = initLearnedScales(w, rows, cols, o.bits, scheme, 'clip-search');
      const err = (p: typeof rtn) => {
        const y = forward(w, rows, cols, p, o).y.data;
        let e = 0;
        for (let i = 0; i < w.length; i++) e += (y[i]! - w[i]!) ** 2;
        return e;
      };
      assert.ok(err(clip) <= err(rtn));
      if (o.bits <= 3) assert.ok(err(clip) < 0.95 * err(rtn), `at ${o.bits} bits clipping pays: ${err(clip)} vs ${err(rtn)}`);
    });

    it(`${o.name}: gradients are LSQ's (STE for w, step and offset scaled by 1/√(n·Q_P))`, () => {
      const p = initLearnedScales(w, rows, cols, o.bits, scheme, 'clip-search'); // clipping: both regimes occur
      const { y, wt, th, z } = forward(w, rows, cols, p, o, true);
      const r = new Rng(9);
      const dy = Float32Array.from({ length: y.size }, () => r.uniform() * 2 - 1);
      backward(y, dy);
      const qmax = 2 ** o.bits - 1;
      const qp = o.symmetric ? 2 ** (o.bits - 1) - 1 : qmax;
      const span = o.groupSize > 0 ? o.groupSize : cols;
      const groups = Math.ceil(cols / span);
      let clipped = 0;
      for (let row = 0; row < rows; row++) {
        for (let g = 0; g < groups; g++) {
          const gi = row * groups + g;
          const s = learnedStep(p.logStep[gi]!);
          const zero = p.zero ? learnedZero(p.zero[gi]!, o.bits) : 2 ** (o.bits - 1);
          let ds = 0;
          let dz = 0;
          let n = 0;
          for (let c = g * span; c < Math.min(cols, (g + 1) * span); c++) {
            const i = row * cols + c;
            const v = w[i]! / s;
            const q = roundHalfEven(v) + zero;
            n++;
            if (q >= 0 && q <= qmax) {
              assert.equal(wt.grad![i], dy[i]);
              ds += dy[i]! * (roundHalfEven(v) - v);
            } else {
              clipped++;
              assert.equal(wt.grad![i], 0);
              ds += dy[i]! * ((q < 0 ? 0 : qmax) - zero);
              dz -= dy[i]! * s;
            }
          }
          const g2 = 1 / Math.sqrt(n * qp);
          assert.ok(Math.abs(th.grad![gi]! - g2 * s * ds) <= 1e-6 + 1e-4 * Math.abs(g2 * s * ds), `θ grad of group ${gi}`);
          if (z) assert.ok(Math.abs(z.grad![gi]! - g2 * dz) <= 1e-6 + 1e-4 * Math.abs(g2 * dz), `z grad of group ${gi}`);
        }
      }
      assert.ok(clipped > 0, 'the case exercises clipped weights');
    });
  }

  it('the step gradient of clipped weights matches finite differences (ŵ = (bound − z)·s is smooth there)', () => {
    // One row whose every weight is clipped: ŵ depends on s only through (bound − z)·s.
    const o: LearnedQuantOptions = { bits: 3, symmetric: true, groupSize: 0 };
    const row = floatFrom([5, -6, 7, -8]) as Float32Array;
    const theta = Math.log(0.5);
    const f = (t: number) => {
      const y = learnedFakeQuantize(new Tensor([1, 4], Float32Array.from(row)), new Tensor([1], Float32Array.of(t)), null, o);
      return y.data.reduce((a, b, i) => a + b * (i + 1), 0);
    };
    const wt = new Tensor([1, 4], Float32Array.from(row), true);
    const th = new Tensor([1], Float32Array.of(theta), true);
    backward(learnedFakeQuantize(wt, th, null, o), Float32Array.of(1, 2, 3, 4));
    // f16 rounding makes f piecewise constant at tiny steps; difference over a span of f16 values.
    const h = 0.1; // (e^h − e^−h)/2h = 1 + h²/6: 0.2% from the derivative
    const numeric = (f(theta + h) - f(theta - h)) / (2 * h);
    const g = 1 / Math.sqrt(4 * 3);
    assert.ok(Math.abs(th.grad![0]! - g * numeric) < 0.02 * Math.abs(g * numeric), `${th.grad![0]} vs ${g * numeric}`);
  });

  it('refuses mismatched parameters by name', () => {
    const o: LearnedQuantOptions = { bits: 4, symmetric: false, groupSize: 0 };
    const w2 = new Tensor([2, 3]);
    assert.throws(() => learnedFakeQuantize(w2, new Tensor([3]), new Tensor([2]), o), (e: unknown) => e instanceof QkdError && e.field === 'logStep');
    assert.throws(() => learnedFakeQuantize(w2, new Tensor([2]), null, o), (e: unknown) => e instanceof QkdError && e.field === 'offset');
    assert.throws(() => learnedFakeQuantize(w2, new Tensor([2]), new Tensor([2]), { ...o, bits: 9 }), (e: unknown) => e instanceof QkdError && e.field === 'bits');
  });
});

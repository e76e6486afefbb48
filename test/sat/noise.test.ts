// Targeted noise (SPEC 5 TQNI / SPEC 6 TDNI): per-row uniform noise of the
// b-bit step, straight-through gradient, the controller's attach / target /
// detach life cycle, and the top-fraction selection.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, backward, floatFrom, noGrad, randn, scale } from '../../src/tensor/index.js';
import { Embedding, Linear } from '../../src/nn/layers.js';
import { rowSteps } from '../../src/swan/metrics.js';
import { QkdError } from '../../src/errors.js';
import { NoiseController, topFraction, uniformStepNoise } from '../../src/sat/noise.js';
import { gradCheck } from '../helpers/check-op.js';

/** Rows with different scales, so each row has its own step. */
function weight(rows: number, cols: number, seed: number, requiresGrad = true): Tensor {
  const rng = new Rng(seed);
  const w = new Tensor([rows, cols], undefined, requiresGrad);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w.data[r * cols + c] = rng.normal() * 0.02 * (1 + r);
  return w;
}

describe('uniformStepNoise', () => {
  it('stays within ±Δ_r/2 per row, with mean 0 and variance Δ²/12', () => {
    const rows = 32;
    const cols = 512;
    const w = weight(rows, cols, 1);
    for (const bits of [4, 8]) {
      const steps = rowSteps(w.data, rows, cols, bits);
      const out = uniformStepNoise(w, bits, new Rng(2));
      let sum = 0;
      let sumSq = 0;
      for (let r = 0; r < rows; r++) {
        const step = steps[r]!;
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const e = out.data[i]! - w.data[i]!;
          // float32 rounding of w + e adds at most half an ulp of w
          assert.ok(Math.abs(e) <= step / 2 + 1e-7 * Math.abs(w.data[i]!), `row ${r}: |${e}| > Δ/2 = ${step / 2}`);
          const unit = e / step; // U(−1/2, 1/2)
          sum += unit;
          sumSq += unit * unit;
        }
      }
      const n = rows * cols;
      const mean = sum / n;
      const variance = sumSq / n - mean * mean;
      assert.ok(Math.abs(mean) < 4 * Math.sqrt(1 / 12 / n), `mean ${mean}`);
      assert.ok(Math.abs(variance - 1 / 12) < 0.03 / 12, `variance ${variance} vs 1/12`);
    }
  });

  it('has the straight-through gradient: dL/dW = dL/dout exactly', () => {
    const w = weight(4, 6, 3);
    const out = uniformStepNoise(w, 4, new Rng(4));
    const seed = floatFrom(Array.from({ length: 24 }, (_, i) => Math.sin(i + 1)));
    backward(out, seed);
    assert.deepEqual(Array.from(w.grad!), Array.from(seed));
  });

  it('passes the gradient check at 16 bits, where the straight-through estimator is the true gradient up to Δ ≈ range/65535', () => {
    // A fresh generator per call makes the noise a fixed function of W for finite differences.
    gradCheck('uniformStepNoise 16-bit', ([w]) => uniformStepNoise(w!, 16, new Rng(5)), [{ shape: [3, 8] }], { gradAtol: 1e-4 });
  });

  it('is deterministic for a seed, treats a vector as one row, and validates bits', () => {
    const w = weight(5, 7, 6);
    assert.deepEqual(uniformStepNoise(w, 4, new Rng(1)).toArray(), uniformStepNoise(w, 4, new Rng(1)).toArray());
    assert.notDeepEqual(uniformStepNoise(w, 4, new Rng(1)).toArray(), uniformStepNoise(w, 4, new Rng(2)).toArray());
    const rng = new Rng(7);
    const twin = new Rng(7);
    uniformStepNoise(w, 4, rng);
    for (let i = 0; i < 4; i++) twin.nextUint32();
    assert.deepEqual(rng.getState(), twin.getState(), 'the generator advances by 4 draws per call');
    const v = new Tensor([4], floatFrom([0, 1, 2, 3]));
    const noisy = uniformStepNoise(v, 2, new Rng(3)); // Δ = 3/3 = 1
    noisy.data.forEach((x, i) => assert.ok(Math.abs(x - i) < 0.5));
    assert.throws(() => uniformStepNoise(w, 0, new Rng(1)), QkdError);
    assert.throws(() => uniformStepNoise(w, 4.5, new Rng(1)), QkdError);
    assert.throws(() => uniformStepNoise(new Tensor([]), 4, new Rng(1)), QkdError);
  });
});

describe('NoiseController', () => {
  function modules(): { a: Linear; b: Linear; e: Embedding; x: Tensor } {
    return { a: new Linear('a', weight(6, 8, 10)), b: new Linear('b', weight(6, 8, 11)), e: new Embedding('e', weight(5, 8, 12)), x: randn([2, 8], new Rng(13)) };
  }

  it('adds noise only to targeted modules, only in recorded (training) forwards while enabled', () => {
    const { a, b, e, x } = modules();
    const cleanA = noGrad(() => a.forward(x)).toArray();
    const cleanB = noGrad(() => b.forward(x)).toArray();
    const controller = new NoiseController([a, b, e], { bits: 4, seed: 1 });
    assert.deepEqual([...controller.attachedNames()].sort(), ['a', 'b', 'e']);
    controller.setTargets(new Set(['a']));
    const noisyA = a.forward(x).toArray();
    assert.notDeepEqual(noisyA, cleanA);
    assert.deepEqual(b.forward(x).toArray(), cleanB, 'untargeted module changed');
    assert.deepEqual(noGrad(() => a.forward(x)).toArray(), cleanA, 'noise under noGrad');
    controller.enabled = false;
    assert.deepEqual(a.forward(x).toArray(), cleanA, 'noise while disabled');
    controller.enabled = true;
    // Re-targeting (a re-profile) moves the noise.
    controller.setTargets(new Set(['b', 'e']));
    assert.deepEqual(a.forward(x).toArray(), cleanA);
    assert.notDeepEqual(b.forward(x).toArray(), cleanB);
    const ids = Int32Array.from([0, 4]);
    const rowsOut = e.forward(ids, [2]).toArray();
    assert.notDeepEqual(rowsOut, [...e.weight.data.subarray(0, 8), ...e.weight.data.subarray(32, 40)]);
    assert.throws(() => controller.setTargets(new Set(['nope'])), QkdError);
  });

  it('gives the weight the straight-through gradient through a Linear forward', () => {
    const { a, x } = modules();
    const reference = new Linear('ref', new Tensor([6, 8], Float32Array.from(a.weight.data), true));
    const controller = new NoiseController([a], { seed: 2 });
    controller.setTargets(new Set(['a']));
    const seed = floatFrom(Array.from({ length: 12 }, (_, i) => i - 5));
    backward(a.forward(x), seed);
    backward(reference.forward(x), seed);
    // dL/dW = dyᵀ x does not depend on W, so the noisy forward gives the clean gradient.
    a.weight.grad!.forEach((g, i) => assert.ok(Math.abs(g - reference.weight.grad![i]!) < 1e-6));
  });

  it('uses a shared generator when given one, and is reproducible from its state', () => {
    const first = modules();
    const second = modules();
    const rng = new Rng(9);
    const saved = rng.getState();
    const c1 = new NoiseController([first.a], { rng });
    c1.setTargets(new Set(['a']));
    const y1 = first.a.forward(first.x).toArray();
    assert.notDeepEqual(rng.getState(), saved, 'the shared generator advanced');
    const rng2 = new Rng(0);
    rng2.setState(saved);
    const c2 = new NoiseController([second.a], { rng: rng2 });
    c2.setTargets(new Set(['a']));
    assert.deepEqual(second.a.forward(second.x).toArray(), y1);
  });

  it('composes with an existing transform and detach restores it', () => {
    const { a, b } = modules();
    const double = (w: Tensor): Tensor => scale(w, 2);
    a.weightTransform = double;
    const controller = new NoiseController([a, b], { bits: 8, seed: 3 });
    controller.setTargets(new Set(['a', 'b']));
    const transformed = a.weightTransform!(a.weight, a);
    const steps = rowSteps(Float32Array.from(a.weight.data, (v) => 2 * v), 6, 8, 8);
    transformed.data.forEach((v, i) => {
      const r = Math.floor(i / 8);
      assert.ok(Math.abs(v - 2 * a.weight.data[i]!) <= steps[r]! / 2 + 1e-7, 'noise applied on top of the previous transform');
    });
    controller.detach();
    assert.equal(a.weightTransform, double);
    assert.equal(b.weightTransform, null);
    assert.deepEqual(controller.attachedNames(), new Set());
  });

  it('refuses to detach over a transform installed later, and duplicate modules', () => {
    const { a, b } = modules();
    const controller = new NoiseController([a, b]);
    a.weightTransform = (w) => w;
    assert.throws(() => controller.detach(), QkdError);
    assert.notEqual(b.weightTransform, null, 'a failed detach changes nothing');
    assert.throws(() => new NoiseController([b, b]), QkdError);
    assert.throws(() => new NoiseController([], { bits: 0 }), QkdError);
  });
});

describe('topFraction', () => {
  it('takes the top 20% by score, ties by name, at least one', () => {
    const scores = new Map(Array.from({ length: 10 }, (_, i) => [`l${i}`, i / 10] as [string, number]));
    assert.deepEqual([...topFraction(scores)].sort(), ['l8', 'l9']);
    assert.deepEqual([...topFraction(scores, 0.5)].sort(), ['l5', 'l6', 'l7', 'l8', 'l9']);
    const tied = new Map([
      ['c', 1],
      ['a', 1],
      ['b', 1],
      ['d', 0],
    ]);
    assert.deepEqual([...topFraction(tied, 0.5)], ['a', 'b']);
    assert.deepEqual([...topFraction(new Map([['x', 0.1], ['y', 0.3], ['z', 0.2]]))], ['y']);
    assert.equal(topFraction(new Map()).size, 0);
    assert.equal(topFraction(scores, 0).size, 0);
    assert.equal(topFraction(scores, 1).size, 10);
    assert.throws(() => topFraction(scores, 1.5), QkdError);
    assert.throws(() => topFraction(new Map([['x', NaN]])), QkdError);
  });
});

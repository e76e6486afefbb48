// SAT regularisers (SPEC 5 KDS and SC): differentiable kurtosis and its
// ceiling penalty, power iteration with persistent vectors, and the spectral
// penalty's gradient (u vᵀ/‖W‖_F − σ W/‖W‖_F³) against finite differences.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ParameterArena, Rng, Tensor, backward, floatFrom } from '../../src/tensor/index.js';
import { excessKurtosis } from '../../src/swan/metrics.js';
import { symmetricEigenvalues } from '../../src/swan/linalg.js';
import { QkdError } from '../../src/errors.js';
import { SpectralNormTracker, kurtosisOf, kurtosisPenalty, kurtosisPenaltyWithStats, spectralPenalty } from '../../src/sat/regularizers.js';
import { checkOp } from '../helpers/check-op.js';

/** Laplace-ish heavy-tailed values (κ ≈ 3) with a few outliers on top. */
function heavyTailed(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const values = Array.from({ length: n }, () => (rng.uniform() < 0.5 ? -1 : 1) * -Math.log(1 - rng.uniform()) * 0.1);
  values[3] = 1.5;
  values[7] = -1.2;
  return values;
}

function uniformValues(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.uniform() * 2 - 1);
}

describe('kurtosisOf', () => {
  it('equals the SWAN excess kurtosis', () => {
    for (const values of [uniformValues(500, 1), heavyTailed(500, 2)]) {
      const w = new Float32Array(values);
      const k = kurtosisOf(new Tensor([20, 25], w)).item();
      assert.ok(Math.abs(k - excessKurtosis(w)) < 1e-5 * Math.max(1, Math.abs(k)), `${k} vs ${excessKurtosis(w)}`);
    }
  });

  it('passes the gradient check (uniform and heavy-tailed inputs)', () => {
    checkOp('kurtosisOf uniform', ([w]) => kurtosisOf(w!), [{ shape: [6, 5] }]);
    checkOp('kurtosisOf heavy', ([w]) => kurtosisOf(w!), [{ shape: [4, 10], values: heavyTailed(40, 3) }]);
  });

  it('is 0 with no gradient for a constant tensor', () => {
    const w = new Tensor([3, 4], new Float32Array(12).fill(0.7), true);
    const k = kurtosisOf(w);
    assert.equal(k.item(), 0);
    backward(k);
    assert.ok(w.grad!.every((g) => g === 0));
  });
});

describe('kurtosisPenalty', () => {
  it('is Σ max(0, κ − κ_max)² and passes the gradient check across the ceiling', () => {
    const low = uniformValues(30, 4); // κ ≈ −1.2, under the ceiling
    const high = heavyTailed(40, 5); // κ ≫ 0.5
    const kLow = excessKurtosis(new Float32Array(low));
    const kHigh = excessKurtosis(new Float32Array(high));
    assert.ok(kLow < 0.5 && kHigh > 1.5);
    const value = kurtosisPenalty([new Tensor([30], floatFrom(low)), new Tensor([40], floatFrom(high))], 0.5).item();
    assert.ok(Math.abs(value - (kHigh - 0.5) ** 2) < 1e-4 * value);
    checkOp('kurtosisPenalty', ([a, b]) => kurtosisPenalty([a!, b!], 0.5), [{ shape: [5, 6], values: low }, { shape: [4, 10], values: high }]);
    checkOp('kurtosisPenalty weighted', ([a, b]) => kurtosisPenalty([a!, b!], -1.5, { coefficients: [0.5, 2] }), [{ shape: [5, 6], values: low }, { shape: [4, 10], values: high }]);
  });

  it('leaves the gradient of layers under the ceiling exactly zero (arena views)', () => {
    const arena = new ParameterArena([
      { name: 'under', shape: [8, 8] },
      { name: 'over', shape: [8, 8] },
    ]);
    arena.set('under', [8, 8], uniformValues(64, 6));
    arena.set('over', [8, 8], heavyTailed(64, 7));
    const { loss, kappas } = kurtosisPenaltyWithStats([arena.get('under'), arena.get('over')], 2);
    assert.ok(kappas[0]! < 2 && kappas[1]! > 2, `κ = ${Array.from(kappas)}`);
    backward(loss);
    assert.ok(arena.get('under').grad!.every((g) => g === 0), 'under-ceiling layer got a gradient');
    assert.ok(arena.get('over').grad!.some((g) => g !== 0));
    // Every layer under the ceiling: value 0, nothing touched.
    arena.zeroGrad();
    const none = kurtosisPenalty([arena.get('under'), arena.get('over')], 100);
    assert.equal(none.item(), 0);
    backward(none);
    assert.ok(arena.grad.every((g) => g === 0));
  });

  it('rejects bad arguments', () => {
    const w = new Tensor([4], floatFrom([1, 2, 3, 4]));
    assert.throws(() => kurtosisPenalty([w], NaN), QkdError);
    assert.throws(() => kurtosisPenalty([w], 2, { coefficients: [1, 1] }), QkdError);
    assert.throws(() => kurtosisPenalty([w], 2, { coefficients: [-1] }), QkdError);
  });
});

// ---- spectral ------------------------------------------------------------------

/** Columns of a random m×k matrix made orthonormal (Gram–Schmidt, float64), row-major [m, k]. */
function orthonormalColumns(m: number, k: number, rng: Rng): Float64Array {
  const q = new Float64Array(m * k);
  for (let j = 0; j < k; j++) {
    const col = Float64Array.from({ length: m }, () => rng.normal());
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let dot = 0;
        for (let i = 0; i < m; i++) dot += col[i]! * q[i * k + p]!;
        for (let i = 0; i < m; i++) col[i]! -= dot * q[i * k + p]!;
      }
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += col[i]! ** 2;
    norm = Math.sqrt(norm);
    for (let i = 0; i < m; i++) q[i * k + j] = col[i]! / norm;
  }
  return q;
}

/** W = U diag(s) Vᵀ, [rows, cols], with the given singular values. */
function withSingularValues(rows: number, cols: number, s: number[], seed: number): number[] {
  const rng = new Rng(seed);
  const k = s.length;
  const u = orthonormalColumns(rows, k, rng);
  const v = orthonormalColumns(cols, k, rng);
  const w: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      let x = 0;
      for (let j = 0; j < k; j++) x += u[r * k + j]! * s[j]! * v[c * k + j]!;
      w.push(x);
    }
  }
  return w;
}

/** σ_max from the eigenvalues of WᵀW (the exact oracle). */
function exactSigmaMax(w: ArrayLike<number>, rows: number, cols: number): number {
  const g = new Float64Array(cols * cols);
  for (let a = 0; a < cols; a++) {
    for (let b = 0; b < cols; b++) {
      let s = 0;
      for (let r = 0; r < rows; r++) s += w[r * cols + a]! * w[r * cols + b]!;
      g[a * cols + b] = s;
    }
  }
  return Math.sqrt(Math.max(...symmetricEigenvalues(g, cols)));
}

function frobenius(w: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < w.length; i++) s += w[i]! ** 2;
  return Math.sqrt(s);
}

describe('SpectralNormTracker', () => {
  it('converges to the exact σ_max (constructed spectrum and a random matrix)', () => {
    const tracker = new SpectralNormTracker(1);
    const built = Float32Array.from(withSingularValues(12, 9, [3, 1.5, 1, 0.5], 2));
    const sigmaBuilt = tracker.step('built', built, 12, 9, 60);
    assert.ok(Math.abs(sigmaBuilt - exactSigmaMax(built, 12, 9)) < 1e-3, `${sigmaBuilt}`);
    assert.ok(Math.abs(sigmaBuilt - 3) < 1e-3);

    const rng = new Rng(3);
    const random = Float32Array.from({ length: 40 * 24 }, () => rng.normal());
    const exact = exactSigmaMax(random, 40, 24);
    let sigma = 0;
    for (let i = 0; i < 300; i++) sigma = tracker.step('random', random, 40, 24); // one step per "training step"
    assert.ok(Math.abs(sigma - exact) < 1e-3 * exact, `${sigma} vs ${exact}`);
  });

  it('is seeded by (seed, name), independent of the order weights are seen', () => {
    const w = Float32Array.from(withSingularValues(6, 5, [2, 1.9, 1], 4));
    const a = new SpectralNormTracker(7);
    const b = new SpectralNormTracker(7);
    b.step('other', w, 6, 5);
    assert.equal(a.step('w', w, 6, 5), b.step('w', w, 6, 5));
    const c = new SpectralNormTracker(8);
    c.step('w', w, 6, 5);
    assert.notDeepEqual(Array.from(c.vectorsOf('w')!.u), Array.from(a.vectorsOf('w')!.u), 'another seed starts elsewhere');
  });

  it('checkpoints its vectors as plain arrays and resumes exactly', () => {
    const w = Float32Array.from(withSingularValues(10, 8, [2, 1.8, 1], 5));
    const a = new SpectralNormTracker(3);
    a.step('w', w, 10, 8, 2);
    const saved = JSON.parse(JSON.stringify(a.getState())) as unknown;
    const b = new SpectralNormTracker(99);
    b.setState(saved);
    for (let i = 0; i < 5; i++) assert.equal(b.step('w', w, 10, 8), a.step('w', w, 10, 8));
    assert.throws(() => b.setState({ entries: [{ name: 'w', rows: 10, cols: 8, u: [1], v: [], sigma: 1 }] }), QkdError);
    assert.throws(() => b.setState(null), QkdError);
    assert.equal(b.step('w', w, 10, 8), a.step('w', w, 10, 8), 'a failed setState changed nothing');
  });

  it('rejects a size that does not match rows × cols', () => {
    assert.throws(() => new SpectralNormTracker().step('w', new Float32Array(10), 3, 3), QkdError);
    assert.throws(() => new SpectralNormTracker().step('w', new Float32Array(9), 3, 3, 0), QkdError);
  });
});

describe('spectralPenalty', () => {
  it('is Σ σ_max/‖W‖_F', () => {
    const a = withSingularValues(8, 6, [3, 1, 0.5], 6);
    const b = withSingularValues(5, 7, [1, 0.2], 7);
    const tracker = new SpectralNormTracker(2);
    const entries = [
      { name: 'a', weight: new Tensor([8, 6], floatFrom(a)) },
      { name: 'b', weight: new Tensor([5, 7], floatFrom(b)) },
    ];
    const value = spectralPenalty(entries, tracker, { iterations: 50 }).item();
    const expected = 3 / frobenius(a) + 1 / frobenius(b);
    assert.ok(Math.abs(value - expected) < 1e-5, `${value} vs ${expected}`);
  });

  it('passes the gradient check at converged vectors (well-separated σ_max)', () => {
    const a = withSingularValues(7, 5, [2.5, 1, 0.6, 0.3], 8);
    const b = withSingularValues(4, 6, [1.2, 0.4, 0.1], 9);
    const tracker = new SpectralNormTracker(4);
    tracker.step('a', Float64Array.from(a) as unknown as Float32Array, 7, 5, 80);
    tracker.step('b', Float64Array.from(b) as unknown as Float32Array, 4, 6, 80);
    checkOp(
      'spectralPenalty',
      ([wa, wb]) => spectralPenalty([{ name: 'a', weight: wa! }, { name: 'b', weight: wb! }], tracker),
      [{ shape: [7, 5], values: a }, { shape: [4, 6], values: b }],
    );
  });

  it('gives a zero matrix no term and no NaN; refuses vectors', () => {
    const w = new Tensor([3, 4], undefined, true);
    const loss = spectralPenalty([{ name: 'z', weight: w }], new SpectralNormTracker());
    assert.equal(loss.item(), 0);
    backward(loss);
    assert.ok(w.grad === null || w.grad.every((g) => g === 0));
    assert.throws(() => spectralPenalty([{ name: 'v', weight: new Tensor([4]) }], new SpectralNormTracker()), QkdError);
  });
});

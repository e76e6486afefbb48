import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { symmetricEigenvalues, cholesky, invertLower } from '../../src/swan/linalg.js';
import { spectralSummary, topSingularValues } from '../../src/swan/spectrum.js';
import { frobeniusSquared } from '../../src/swan/metrics.js';

/** Random orthogonal n×n (Gram–Schmidt of a Gaussian matrix), float64. */
function randomOrthogonal(n: number, rng: Rng): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n * n; i++) q[i] = rng.normal();
  for (let j = 0; j < n; j++) {
    for (let k = 0; k < j; k++) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += q[i * n + j]! * q[i * n + k]!;
      for (let i = 0; i < n; i++) q[i * n + j]! -= dot * q[i * n + k]!;
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += q[i * n + j]! ** 2;
    norm = Math.sqrt(norm);
    for (let i = 0; i < n; i++) q[i * n + j]! /= norm;
  }
  return q;
}

/** Exact singular values of W [rows, cols] via eigenvalues of the float64 Gram matrix (the oracle). */
function exactSingularValues(w: Float32Array, rows: number, cols: number): Float64Array {
  const tall = rows >= cols;
  const n = tall ? cols : rows;
  const g = new Float64Array(n * n);
  if (tall) {
    for (let r = 0; r < rows; r++) for (let i = 0; i < cols; i++) { const a = w[r * cols + i]!; if (a === 0) continue; for (let j = 0; j <= i; j++) g[i * n + j]! += a * w[r * cols + j]!; }
  } else {
    for (let i = 0; i < rows; i++) for (let j = 0; j <= i; j++) { let s = 0; for (let c = 0; c < cols; c++) s += w[i * cols + c]! * w[j * cols + c]!; g[i * n + j] = s; }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) g[i * n + j] = g[j * n + i]!;
  return symmetricEigenvalues(g, n).map((v) => Math.sqrt(Math.max(0, v)));
}

function exactConcentration(w: Float32Array, rows: number, cols: number): { c: number; smax: number } {
  const s = exactSingularValues(w, rows, cols);
  const r = Math.max(1, Math.ceil(0.1 * Math.min(rows, cols)));
  let top = 0;
  let all = 0;
  s.forEach((v, i) => { all += v * v; if (i < r) top += v * v; });
  return { c: top / all, smax: s[0]! / Math.sqrt(all) };
}

type Kind = 'gaussian' | 'lowrank+noise' | 'heavy-tailed' | 'decaying' | 'outlier-columns';

function makeMatrix(kind: Kind, rows: number, cols: number, rng: Rng): Float32Array {
  const w = new Float32Array(rows * cols);
  switch (kind) {
    case 'gaussian':
      for (let i = 0; i < w.length; i++) w[i] = rng.normal();
      break;
    case 'heavy-tailed':
      // Student-t with 3 degrees of freedom.
      for (let i = 0; i < w.length; i++) { const z = rng.normal(); const chi = rng.normal() ** 2 + rng.normal() ** 2 + rng.normal() ** 2; w[i] = z / Math.sqrt(chi / 3); }
      break;
    case 'lowrank+noise': {
      const rank = 8;
      const u = Array.from({ length: rank * rows }, () => rng.normal());
      const v = Array.from({ length: rank * cols }, () => rng.normal());
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) { let s = 0; for (let k = 0; k < rank; k++) s += u[k * rows + r]! * v[k * cols + c]! * (3 / (k + 1)); w[r * cols + c] = s / Math.sqrt(cols) + 0.5 * rng.normal(); }
      break;
    }
    case 'decaying': {
      // W = U diag(σ) Vᵀ with σ_i = i^-0.7, like trained layers.
      const p = Math.min(rows, cols);
      const U = randomOrthogonal(rows, rng);
      const V = randomOrthogonal(cols, rng);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) { let s = 0; for (let i = 0; i < p; i++) s += U[r * rows + i]! * (i + 1) ** -0.7 * V[c * cols + i]!; w[r * cols + c] = s; }
      break;
    }
    case 'outlier-columns':
      for (let i = 0; i < w.length; i++) w[i] = rng.normal();
      for (let r = 0; r < rows; r++) for (const c of [3, 17, 40]) w[r * cols + c]! *= 20;
      break;
  }
  return w;
}

describe('linalg', () => {
  it('symmetricEigenvalues recovers a known spectrum', () => {
    const rng = new Rng(1);
    const n = 37;
    const Q = randomOrthogonal(n, rng);
    const lambda = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -1 : 1) * (i + 1) * 0.37);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = 0; for (let k = 0; k < n; k++) s += Q[i * n + k]! * lambda[k]! * Q[j * n + k]!; a[i * n + j] = s; }
    const got = symmetricEigenvalues(a, n);
    const want = [...lambda].sort((x, y) => y - x);
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-9, `eigenvalue ${i}: ${v} vs ${want[i]}`));
    assert.deepEqual([...symmetricEigenvalues(new Float64Array(9), 3)], [0, 0, 0]);
    assert.deepEqual([...symmetricEigenvalues(Float64Array.from([4]), 1)], [4]);
  });

  it('cholesky and invertLower', () => {
    const a = Float64Array.from([4, 2, 2, 2, 5, 3, 2, 3, 6]);
    const L = cholesky(a, 3)!;
    const inv = invertLower(L, 3);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
      let s = 0; for (let k = 0; k < 3; k++) s += L[i * 3 + k]! * L[j * 3 + k]!;
      assert.ok(Math.abs(s - a[i * 3 + j]!) < 1e-12);
      let p = 0; for (let k = 0; k < 3; k++) p += L[i * 3 + k]! * inv[k * 3 + j]!;
      assert.ok(Math.abs(p - (i === j ? 1 : 0)) < 1e-12);
    }
    assert.equal(cholesky(Float64Array.from([1, 2, 2, 1]), 2), null);
  });
});

describe('randomised SVD spectral concentration', () => {
  const cases: [Kind, number, number][] = [
    ['gaussian', 256, 256], ['gaussian', 1024, 384], ['lowrank+noise', 300, 700], ['heavy-tailed', 512, 256],
    ['decaying', 200, 160], ['outlier-columns', 384, 512], ['gaussian', 640, 1024],
  ];
  for (const [kind, rows, cols] of cases) {
    it(`within 0.02 of an exact SVD: ${kind} ${rows}x${cols}`, () => {
      const rng = new Rng(rows * 7 + cols);
      const w = makeMatrix(kind, rows, cols, rng);
      const exact = exactConcentration(w, rows, cols);
      const got = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(5) });
      assert.ok(Math.abs(got.concentration - exact.c) < 0.02, `concentration ${got.concentration} vs exact ${exact.c}`);
      assert.ok(Math.abs(got.sigmaMaxOverFro - exact.smax) < 0.01, `σmax/‖W‖ ${got.sigmaMaxOverFro} vs ${exact.smax}`);
      assert.equal(got.estimatedTail, false);
    });
  }

  it('top singular values of an exactly low-rank matrix, and a zero matrix', () => {
    const rows = 120;
    const cols = 90;
    const w = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = 3 * Math.sin(r + 1) * Math.cos(c) + Math.cos(2 * r) * Math.sin(3 * c + 1);
    const exact = exactSingularValues(w, rows, cols);
    const got = topSingularValues(w, rows, cols, 4, { rng: new Rng(2) });
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(got[i]! - exact[i]!) < 1e-3 * exact[0]!, `σ${i}`);
    assert.ok(got[2]! < 1e-3 * exact[0]!);
    const zero = spectralSummary(new Float32Array(64), 8, 8, 0, { rng: new Rng(1) });
    assert.equal(zero.concentration, 0);
  });

  it('estimates the tail when the top 10% exceeds the rank cap, between its bounds', () => {
    const rng = new Rng(9);
    const w = makeMatrix('decaying', 200, 200, rng);
    const exact = exactConcentration(w, 200, 200);
    const got = spectralSummary(w, 200, 200, frobeniusSquared(w), { rng: new Rng(3), maxRank: 10 });
    assert.equal(got.estimatedTail, true);
    assert.ok(Math.abs(got.concentration - exact.c) < 0.05, `${got.concentration} vs ${exact.c}`);
  });
});

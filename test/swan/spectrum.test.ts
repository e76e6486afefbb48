import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { nativeStatus } from '../../src/tensor/index.js';
import { symmetricEigenvalues, cholesky, invertLower, pivotedCholesky } from '../../src/swan/linalg.js';
import { GRAM_MAX_SIDE, deferredSpectralSummary, solveNow, solveResults, krylovShape, spectralSummary, spectrumRoute, topSingularValues } from '../../src/swan/spectrum.js';
import { frobeniusSquared } from '../../src/swan/metrics.js';
import { fromBf16, toBf16 } from '../../src/tensor/dtype.js';

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

type Kind = 'gaussian' | 'lowrank+noise' | 'heavy-tailed' | 'decaying' | 'outlier-columns' | 'outlier-rows';

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
    case 'outlier-rows':
      for (let i = 0; i < w.length; i++) w[i] = rng.normal();
      for (const r of [5, 50, 99]) for (let c = 0; c < cols; c++) w[r * cols + c]! *= 12;
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

  it('pivotedCholesky takes the independent columns and drops the dependent ones', () => {
    // Columns x, y, x + y (dependent), and 0.
    const x = [1, 2, 0, 1];
    const y = [0, 1, 3, 1];
    const cols = [x, y, x.map((v, i) => v + y[i]!), [0, 0, 0, 0]];
    const g = new Float64Array(16);
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) g[i * 4 + j] = cols[i]!.reduce((s, v, t) => s + v * cols[j]![t]!, 0);
    const norms = Float64Array.from([0, 1, 2, 3], (i) => g[i * 5]!);
    const { order, L } = pivotedCholesky(g, 4, norms, 1e-10);
    assert.equal(order.length, 2);
    assert.equal(order.includes(3), false);
    for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) {
      let s = 0; for (let k = 0; k < 2; k++) s += L[i * 2 + k]! * L[j * 2 + k]!;
      assert.ok(Math.abs(s - g[order[i]! * 4 + order[j]!]!) < 1e-9);
    }
  });

  it('krylovShape: blocks of at least 16 columns (32-column panels when wider), about 0.7 k dimensions, never beyond the short side', () => {
    // The default: 0.7·205 = 144 dimensions, 9 blocks of 16.
    assert.deepEqual(krylovShape(205, 2048), { blockSize: 16, depth: 8 });
    // Fewer dimensions than 9 blocks of 16 hold: the block stays 16 and the depth 8.
    assert.deepEqual(krylovShape(103, 1024), { blockSize: 16, depth: 8 });
    assert.deepEqual(krylovShape(256, 4096, 8, 2.75), { blockSize: 64, depth: 10 });
    // More dimensions per rank: about 2·205 = 410 here, in blocks of 32.
    assert.deepEqual(krylovShape(205, 2048, 8, 2), { blockSize: 32, depth: 12 });
    assert.throws(() => spectralSummary(new Float32Array(600 * 600).fill(1), 600, 600, 600 * 600, { rng: new Rng(1), route: 'krylov', dimensionsPerRank: 0.2 }), /dimensionsPerRank/);
    const small = krylovShape(4, 90);
    assert.ok(Math.min(90, small.blockSize * (small.depth + 1)) >= 11 && small.blockSize * small.depth < 90, JSON.stringify(small));
    assert.ok(krylovShape(50, 60).blockSize <= 60);
  });

  it('records the route each summary took, with the Krylov depth it ran at', () => {
    const rng = new Rng(3);
    const w = Float32Array.from({ length: 600 * 1024 }, () => rng.normal());
    const fro2 = frobeniusSquared(w);
    // k = 60, 120 dimensions wanted, 13 a block at depth 8: the block is raised to 16 (9 blocks, 144 dimensions).
    const krylov = spectralSummary(w, 600, 1024, fro2, { rng: new Rng(1), depth: 8, dimensionsPerRank: 2, int8: false });
    assert.deepEqual(krylov.method, { route: 'krylov', block: 16, depth: 8, dimensions: 144, products: 'bf16' });
    assert.equal(spectralSummary(w, 600, 1024, fro2, { rng: new Rng(1), exactProducts: true }).method.route, 'krylov');
    assert.equal((spectralSummary(w, 600, 1024, fro2, { rng: new Rng(1), exactProducts: true }).method as { products: string }).products, 'f32');
    assert.deepEqual(spectralSummary(w.subarray(0, 512 * 1024), 512, 1024, frobeniusSquared(w.subarray(0, 512 * 1024)), { rng: new Rng(1) }).method, { route: 'exact' });
    assert.deepEqual(spectralSummary(new Float32Array(600 * 600), 600, 600, 0, { rng: new Rng(1) }).method, { route: 'none' });
    // An exactly rank-3 weight: the space stops growing after a few blocks, and the depth says so.
    const u = Float32Array.from({ length: 1024 * 3 }, () => rng.normal());
    const v = Float32Array.from({ length: 3 * 1024 }, () => rng.normal());
    const low = new Float32Array(1024 * 1024);
    for (let i = 0; i < 1024; i++) for (let t = 0; t < 3; t++) for (let j = 0; j < 1024; j++) low[i * 1024 + j]! += u[i * 3 + t]! * v[t * 1024 + j]!;
    const method = spectralSummary(low, 1024, 1024, frobeniusSquared(low), { rng: new Rng(1), exactProducts: true }).method as { depth: number; dimensions: number };
    assert.ok(method.depth < 8 && method.dimensions < 8 * 32, JSON.stringify(method));
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
      const got = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(5), route: 'krylov' });
      assert.ok(Math.abs(got.concentration - exact.c) < 0.02, `concentration ${got.concentration} vs exact ${exact.c}`);
      assert.ok(Math.abs(got.sigmaMaxOverFro - exact.smax) < 0.01, `σmax/‖W‖ ${got.sigmaMaxOverFro} vs ${exact.smax}`);
      assert.equal(got.estimatedTail, false);
      // The exact route (the Gram matrix's eigenvalues, float32 products): exact to float32 rounding.
      const gram = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(5), route: 'gram' });
      assert.ok(Math.abs(gram.concentration - exact.c) < 1e-4, `gram concentration ${gram.concentration} vs exact ${exact.c}`);
      assert.ok(Math.abs(gram.sigmaMaxOverFro - exact.smax) < 1e-4, `gram σmax/‖W‖ ${gram.sigmaMaxOverFro} vs ${exact.smax}`);
      assert.equal(spectrumRoute(rows, cols), Math.min(rows, cols) <= GRAM_MAX_SIDE ? 'gram' : 'krylov');
    });
  }

  it('top singular values of an exactly low-rank matrix (the Krylov space runs out), and a zero matrix', () => {
    const rows = 120;
    const cols = 90;
    const w = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = 3 * Math.sin(r + 1) * Math.cos(c) + Math.cos(2 * r) * Math.sin(3 * c + 1);
    const exact = exactSingularValues(w, rows, cols);
    // Float32 products: rounding to bf16 would make the matrix full rank.
    const got = topSingularValues(w, rows, cols, 4, { rng: new Rng(2), exactProducts: true });
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(got[i]! - exact[i]!) < 1e-3 * exact[0]!, `σ${i}`);
    assert.ok(got[2]! < 1e-3 * exact[0]!);
    // Rank 3 with small integers: exact in bf16, so the bf16 path sees rank 3 too (tall and wide).
    // Its products round the thin block to bf16: σ to ~1e-3 relative, and the
    // vanishing ones to the rounding floor (energy ~1e-4 of σ₁²).
    for (const [m, n] of [[150, 70], [70, 150]] as const) {
      const v = new Float32Array(m * n);
      for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) v[r * n + c] = ((r % 5) - 2) * ((c % 3) - 1) + ((r % 7) - 3) * (c % 2) + (r % 2) * ((c % 4) - 2);
      const want = exactSingularValues(v, m, n);
      const sigma = topSingularValues({ bf16: toBf16(v) }, m, n, 7, { rng: new Rng(4) });
      for (let i = 0; i < 3; i++) assert.ok(Math.abs(sigma[i]! - want[i]!) < 2e-3 * want[0]!, `${m}x${n} σ${i}: ${sigma[i]} vs ${want[i]}`);
      for (let i = 3; i < 7; i++) assert.ok(sigma[i]! < 1e-2 * want[0]!, `${m}x${n} σ${i} = ${sigma[i]} should vanish`);
    }
    const zero = spectralSummary(new Float32Array(64), 8, 8, 0, { rng: new Rng(1) });
    assert.equal(zero.concentration, 0);
  });

  it('bf16 weights give the result of their float32 widening; exact float32 products agree within 0.005', () => {
    const rows = 512;
    const cols = 384;
    const w32 = fromBf16(toBf16(makeMatrix('outlier-columns', rows, cols, new Rng(12))));
    const fro2 = frobeniusSquared(w32);
    // The Krylov route multiplies both as bf16: the same bits.
    const krylov = { rng: new Rng(3), probes: 8, route: 'krylov' as const };
    assert.deepEqual(spectralSummary(w32, rows, cols, fro2, { ...krylov, rng: new Rng(3) }), spectralSummary({ bf16: toBf16(w32) }, rows, cols, fro2, krylov));
    // The exact route forms the Gram matrix of bf16 weights with the bf16 GEMM and of float32 ones with the SGEMM:
    // the same exact products, summed in another order.
    const bf16 = spectralSummary({ bf16: toBf16(w32) }, rows, cols, fro2, { rng: new Rng(3), probes: 8 });
    const widened = spectralSummary(w32, rows, cols, fro2, { rng: new Rng(3), probes: 8 });
    assert.ok(Math.abs(widened.concentration - bf16.concentration) < 1e-6 * widened.concentration, `${widened.concentration} vs ${bf16.concentration}`);
    assert.ok(Math.abs(widened.sigmaMaxOverFro - bf16.sigmaMaxOverFro) < 1e-6 * widened.sigmaMaxOverFro);
    assert.deepEqual(widened.probes, bf16.probes);
    const exactProducts = spectralSummary(w32, rows, cols, fro2, { rng: new Rng(3), exactProducts: true });
    assert.ok(Math.abs(exactProducts.concentration - bf16.concentration) < 0.005, `${exactProducts.concentration} vs ${bf16.concentration}`);
    const exact = exactConcentration(w32, rows, cols);
    // (This shape takes the exact route: as exact with the bf16 GEMM as with the SGEMM.)
    assert.ok(Math.abs(bf16.concentration - exact.c) < 1e-4, `${bf16.concentration} vs exact ${exact.c}`);
    assert.ok(Math.abs(bf16.sigmaMaxOverFro - exact.smax) < 1e-4, `${bf16.sigmaMaxOverFro} vs exact ${exact.smax}`);
  });

  it('int8 products: within 2e-3 of the bf16 route (σ_max: 5e-3 relative) and 0.02 of an exact SVD (flat, heavy-tailed, decaying, outlier rows and columns; tall and wide)', () => {
    const cases: [Kind, number, number][] = [
      ['gaussian', 768, 576], ['heavy-tailed', 576, 768], ['outlier-columns', 768, 576], ['outlier-rows', 576, 768],
      ['outlier-rows', 768, 576], ['decaying', 560, 600], ['lowrank+noise', 600, 580],
    ];
    for (const [kind, rows, cols] of cases) {
      const w = { bf16: toBf16(makeMatrix(kind, rows, cols, new Rng(rows + 3 * cols))) };
      const w32 = fromBf16(w.bf16);
      const fro2 = frobeniusSquared(w32);
      const exact = exactConcentration(w32, rows, cols);
      const bf16 = spectralSummary(w, rows, cols, fro2, { rng: new Rng(9), probes: 8, route: 'krylov', int8: false });
      const int8 = spectralSummary(w, rows, cols, fro2, { rng: new Rng(9), probes: 8, route: 'krylov', int8: true });
      const what = `${kind} ${rows}x${cols}`;
      assert.notEqual(int8.concentration, bf16.concentration, `${what}: the int8 route was taken`);
      assert.ok(Math.abs(int8.concentration - bf16.concentration) < 2e-3, `${what}: int8 ${int8.concentration} vs bf16 ${bf16.concentration}`);
      assert.ok(Math.abs(int8.sigmaMaxOverFro - bf16.sigmaMaxOverFro) < 5e-3 * bf16.sigmaMaxOverFro, `${what}: σmax/‖W‖ ${int8.sigmaMaxOverFro} vs ${bf16.sigmaMaxOverFro}`);
      assert.ok(Math.abs(int8.concentration - exact.c) < 0.02, `${what}: int8 ${int8.concentration} vs exact ${exact.c}`);
      for (let i = 0; i < 8; i++) {
        const a = int8.probes!.wx2[i]! / int8.probes!.x2[i]!;
        const b = bf16.probes!.wx2[i]! / bf16.probes!.x2[i]!;
        assert.equal(a, b, `${what}: probe ${i} (the noise metric's products stay on bf16)`);
      }
    }
  });

  it('int8 products: over five start seeds of a heavy-tailed weight, within 2e-3 of the bf16 route (σ_max: 5e-3 relative)', () => {
    // σ_max moves more than the concentration: on these starts up to 2.5e-3 (relative) against 5e-4.
    const [rows, cols] = [576, 768];
    const w = { bf16: toBf16(makeMatrix('heavy-tailed', rows, cols, new Rng(1))) };
    const fro2 = frobeniusSquared(fromBf16(w.bf16));
    for (let seed = 9; seed < 14; seed++) {
      const bf16 = spectralSummary(w, rows, cols, fro2, { rng: new Rng(seed), probes: 8, route: 'krylov', int8: false });
      const int8 = spectralSummary(w, rows, cols, fro2, { rng: new Rng(seed), probes: 8, route: 'krylov', int8: true });
      assert.ok(Math.abs(int8.concentration - bf16.concentration) < 2e-3, `seed ${seed}: int8 ${int8.concentration} vs bf16 ${bf16.concentration}`);
      assert.ok(Math.abs(int8.sigmaMaxOverFro - bf16.sigmaMaxOverFro) < 5e-3 * bf16.sigmaMaxOverFro, `seed ${seed}: σmax/‖W‖ ${int8.sigmaMaxOverFro} vs ${bf16.sigmaMaxOverFro}`);
    }
  });

  it('int8 products: a weight whose int8 copy is too coarse (relative squared error above 2e-3) stays on bf16, bit for bit', () => {
    // Rows of ±1 with one entry at ±80: the scale 80/127 turns every ±1 into ±2 (relative squared error ~1e-2).
    const rows = 640;
    const cols = 576;
    const rng = new Rng(31);
    const w32 = Float32Array.from({ length: rows * cols }, (_, i) => (rng.normal() > 0 ? 1 : -1) * (i % cols === (i * 7) % 13 ? 80 : 1));
    const w = { bf16: toBf16(w32) };
    const fro2 = frobeniusSquared(w32);
    const options = { probes: 4, route: 'krylov' as const };
    assert.deepEqual(spectralSummary(w, rows, cols, fro2, { ...options, rng: new Rng(2), int8: true }), spectralSummary(w, rows, cols, fro2, { ...options, rng: new Rng(2), int8: false }));
  });

  it('a weight above 2^26 values keeps bf16 products by default and takes int8 when asked for', { skip: !nativeStatus().loaded && 'native addon not built (the reference takes minutes at this size)' }, () => {
    const [rows, cols] = [8192, 8196];
    const bits = new Uint16Array(rows * cols);
    // Uniform values in (−0.5, 0.5) from a multiplicative hash, as bf16 bits (no generator call per value).
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < bits.length; i++) {
      f[0] = (Math.imul(i + 1, 2654435761) >>> 0) / 2 ** 32 - 0.5;
      bits[i] = u[0]! >>> 16;
    }
    const w = { bf16: bits };
    const fro2 = frobeniusSquared(fromBf16(bits));
    const options = { rng: new Rng(1), maxRank: 8, dimensionsPerRank: 1 };
    assert.equal((spectralSummary(w, rows, cols, fro2, { ...options, int8: true }).method as { products: string }).products, 'int8');
    assert.equal((spectralSummary(w, rows, cols, fro2, { ...options, int8: false }).method as { products: string }).products, 'bf16');
    assert.equal((spectralSummary(w, rows, cols, fro2, options).method as { products: string }).products, 'bf16');
  });

  it('the Krylov route defers its solve: all of H\'s eigenvalues and its first and last blocks\' eigenvector rows; only H\'s lower triangle is read', () => {
    // A 640 × 512 weight with k = 52: 9 blocks of 16 columns; its projected H goes to the caller
    // (profileModel's background batches) instead of being solved at once.
    const [rows, cols] = [640, 512];
    const w = makeMatrix('outlier-columns', rows, cols, new Rng(21));
    const fro2 = frobeniusSquared(w);
    const deferred = deferredSpectralSummary(w, rows, cols, fro2, { rng: new Rng(9), route: 'krylov' });
    const solve = deferred.solve;
    assert.ok(solve !== null, 'a Krylov summary leaves a solve');
    assert.deepEqual([solve.n, solve.count, solve.heads, solve.tails], [144, 144, 16, 16]);
    assert.equal(solveResults(solve), 144 * 33);
    const results = solveNow(solve);
    for (let i = 0; i < solve.n; i++) for (let j = i + 1; j < solve.n; j++) solve.gram[i * solve.n + j] = NaN;
    assert.deepEqual(solveNow(solve), results);
    const summary = deferred.finish(results);
    // The Ritz values are those of the float64 pass on the same seed (topSingularValues), to float32 rounding.
    const sigma = topSingularValues(w, rows, cols, 52, { rng: new Rng(9), route: 'krylov' });
    assert.ok(Math.abs(summary.sigmaMaxOverFro - sigma[0]! / Math.sqrt(fro2)) < 1e-6);
    assert.deepEqual(spectralSummary(w, rows, cols, fro2, { rng: new Rng(9), route: 'krylov' }), summary);
    const exact = exactConcentration(w, rows, cols);
    assert.ok(Math.abs(summary.concentration - exact.c) < 5e-3, `${summary.concentration} vs exact ${exact.c}`);
    assert.throws(() => deferred.finish(results.subarray(0, 144)), /eigen-solve returned 144 values/);
  });

  it('within 0.02 of an exact SVD on a flat 1024x1024 Gaussian, the slowest case', () => {
    const w = makeMatrix('gaussian', 1024, 1024, new Rng(77));
    const exact = exactConcentration(w, 1024, 1024);
    const got = spectralSummary({ bf16: toBf16(w) }, 1024, 1024, frobeniusSquared(fromBf16(toBf16(w))), { rng: new Rng(5) });
    assert.ok(Math.abs(got.concentration - exact.c) < 0.02, `concentration ${got.concentration} vs exact ${exact.c}`);
    assert.ok(Math.abs(got.sigmaMaxOverFro - exact.smax) < 0.01);
  });

  it('a Krylov space that stops growing with energy left is restarted: an identity and orthonormal columns with exact products', () => {
    // A singular value of multiplicity above the block width: G·Q stays in span(Q), columns drop, and
    // the missing Ritz values counted as 0 (the concentration came out 16/600 for 0.1).
    const identity = new Float32Array(600 * 600);
    for (let i = 0; i < 600; i++) identity[i * 600 + i] = 1;
    const orthonormal = new Float32Array(768 * 640);
    const q = randomOrthogonal(768, new Rng(3));
    for (let i = 0; i < 768; i++) for (let j = 0; j < 640; j++) orthonormal[i * 640 + j] = q[i * 768 + j]!;
    for (const [w, rows, cols] of [[identity, 600, 600], [orthonormal, 768, 640]] as const) {
      const got = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(5), route: 'krylov', exactProducts: true });
      assert.ok(Math.abs(got.concentration - Math.ceil(0.1 * cols) / cols) < 1e-4, `${rows}×${cols}: concentration ${got.concentration}`);
      assert.ok(Math.abs(got.sigmaMaxOverFro - 1 / Math.sqrt(cols)) < 1e-4);
    }
  });

  it('a deep Krylov pass on a tall weight keeps its basis orthogonal: no ghost copies of σ_max (depth up to 64)', () => {
    // One Gram–Schmidt pass multiplies the basis's loss of orthogonality by ‖y‖/‖z‖ (about 3 here)
    // at every step; before the loss was tracked, depth 30 gave σ_max about twice too large.
    const rows = 2400, cols = 600;
    const w = makeMatrix('gaussian', rows, cols, new Rng(11));
    const exact = exactConcentration(w, rows, cols);
    for (const depth of [8, 30, 64]) {
      const got = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(5), route: 'krylov', depth });
      assert.ok(Math.abs(got.sigmaMaxOverFro - exact.smax) < 1e-3 * exact.smax, `depth ${depth}: σmax/‖W‖ ${got.sigmaMaxOverFro} vs ${exact.smax}`);
      assert.ok(Math.abs(got.concentration - exact.c) < 5e-3, `depth ${depth}: concentration ${got.concentration} vs exact ${exact.c}`);
    }
  });

  it('returns probe products: ‖W x‖² / ‖x‖² of isotropic directions (tall, wide, and more probes than the block)', () => {
    for (const [rows, cols, probes] of [[300, 200, 8], [200, 300, 8], [300, 200, 50]] as const) {
      const w = makeMatrix('gaussian', rows, cols, new Rng(rows + cols));
      const s = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(8), probes });
      assert.ok(s.probes !== null);
      assert.equal(s.probes.wx2.length, probes);
      // E ‖W x‖²/‖x‖² = ‖W‖_F²/cols for isotropic x; each ratio lies in [σ_min², σ_max²].
      const fro2 = frobeniusSquared(w);
      let mean = 0;
      for (let k = 0; k < probes; k++) {
        const ratio = s.probes.wx2[k]! / s.probes.x2[k]!;
        assert.ok(ratio > 0 && ratio <= (s.sigmaMaxOverFro ** 2) * fro2 * 1.0001, `${rows}x${cols} probe ${k}: ${ratio}`);
        mean += ratio / probes;
      }
      assert.ok(Math.abs(mean / (fro2 / cols) - 1) < 0.3, `${rows}x${cols}: mean ratio ${mean} vs ${fro2 / cols}`);
    }
  });

  it('is deterministic for a seed', () => {
    const w = makeMatrix('heavy-tailed', 256, 300, new Rng(6));
    const a = spectralSummary(w, 256, 300, frobeniusSquared(w), { rng: new Rng(1), probes: 8 });
    const b = spectralSummary(w, 256, 300, frobeniusSquared(w), { rng: new Rng(1), probes: 8 });
    assert.deepEqual(a, b);
  });

  it('estimates the tail when the top 10% exceeds the rank cap, between its bounds', () => {
    const rng = new Rng(9);
    const w = makeMatrix('decaying', 200, 200, rng);
    const exact = exactConcentration(w, 200, 200);
    const got = spectralSummary(w, 200, 200, frobeniusSquared(w), { rng: new Rng(3), maxRank: 10 });
    assert.equal(got.estimatedTail, true);
    assert.ok(Math.abs(got.concentration - exact.c) < 0.05, `${got.concentration} vs ${exact.c}`);
    // The Krylov route's quadrature counts all r eigenvalues itself, whatever the cap: no tail estimate.
    const big = makeMatrix('decaying', 800, 640, new Rng(4));
    const bigExact = exactConcentration(big, 800, 640);
    const krylov = spectralSummary(big, 800, 640, frobeniusSquared(big), { rng: new Rng(3), maxRank: 16, route: 'krylov' });
    assert.equal(krylov.estimatedTail, false);
    assert.equal(krylov.topCount, 64);
    assert.ok(Math.abs(krylov.concentration - bigExact.c) < 0.01, `${krylov.concentration} vs ${bigExact.c}`);
  });
});

// The profiler's kernels (bf16 GEMM, weight statistics, symmetric
// eigenvalues): the reference against a direct definition, and the native
// kernels against the reference on odd sizes, both transposes, padded
// leading dimensions, float32 and bf16 weights.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Rng, nativeStatus, withBackend, kernels } from '../../src/tensor/index.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../../src/tensor/dtype.js';
import type { Bf16GemmArgs } from '../../src/tensor/backend.js';
import { adviseHugePages } from '../../src/tensor/backend.js';
import { loadNativeAddon } from '../../src/tensor/native/binding.js';
import { symmetricEigen } from '../../src/tensor/eigen.js';

const skipNative = { skip: !nativeStatus().loaded && 'native addon not loaded' };

function gaussian(n: number, rng: Rng, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

function bf16(values: Float32Array): Uint16Array {
  return Uint16Array.from(values, (v) => f32ToBf16Bits(v));
}

interface GemmCase { transA: boolean; M: number; N: number; K: number; pad: number; accumulate?: boolean }

function gemmArgs(c: GemmCase, rng: Rng): Bf16GemmArgs {
  const lda = (c.transA ? c.M : c.K) + c.pad;
  const ldb = c.N + c.pad;
  const ldc = c.N + c.pad;
  return {
    transA: c.transA, M: c.M, N: c.N, K: c.K,
    a: bf16(gaussian((c.transA ? c.K : c.M) * lda, rng)), lda,
    b: gaussian(c.K * ldb, rng), ldb,
    c: new Float32Array(c.M * ldc).fill(7), ldc, accumulate: c.accumulate ?? false,
  };
}

/** max |C − want| / Σ|a·b| over C, with want from widened A and rounded B in float64 (plus c0 when accumulating). */
function gemmError(p: Bf16GemmArgs, c0: Float32Array): number {
  let worst = 0;
  for (let m = 0; m < p.M; m++) {
    for (let n = 0; n < p.N; n++) {
      let sum = p.accumulate ? c0[m * p.ldc + n]! : 0;
      let magnitude = 1e-30 + Math.abs(sum);
      for (let k = 0; k < p.K; k++) {
        const a = bf16BitsToF32(p.transA ? p.a[k * p.lda + m]! : p.a[m * p.lda + k]!);
        const b = bf16BitsToF32(f32ToBf16Bits(p.b[k * p.ldb + n]!));
        sum += a * b;
        magnitude += Math.abs(a * b);
      }
      worst = Math.max(worst, Math.abs(p.c[m * p.ldc + n]! - sum) / magnitude);
    }
    for (let n = p.N; n < p.ldc; n++) if (m * p.ldc + n < p.c.length) assert.equal(p.c[m * p.ldc + n], 7, 'padding of C untouched');
  }
  return worst;
}

const GEMM_CASES: GemmCase[] = [
  { transA: false, M: 1, N: 1, K: 1, pad: 0 },
  { transA: true, M: 3, N: 5, K: 7, pad: 1 },
  { transA: false, M: 29, N: 33, K: 255, pad: 2 },
  { transA: true, M: 29, N: 33, K: 255, pad: 0 },
  { transA: false, M: 130, N: 32, K: 513, pad: 0 },
  { transA: true, M: 40, N: 8, K: 2001, pad: 3 },
  { transA: false, M: 29, N: 33, K: 255, pad: 2, accumulate: true },
  { transA: true, M: 40, N: 8, K: 2001, pad: 3, accumulate: true },
  // A or Aᵀ times at most 16 columns takes the thin paths (A read in place, not packed), on both threads.
  { transA: true, M: 300, N: 16, K: 1018, pad: 1 },
  { transA: true, M: 301, N: 13, K: 1017, pad: 0, accumulate: true },
  { transA: false, M: 300, N: 16, K: 1018, pad: 1 },
  { transA: false, M: 45, N: 9, K: 1017, pad: 2, accumulate: true },
];

describe('bf16Gemm', () => {
  for (const backend of ['reference', 'native'] as const) {
    it(`${backend} matches widened A times rounded B`, backend === 'native' ? skipNative : {}, () => {
      GEMM_CASES.forEach((c, i) => {
        const p = gemmArgs(c, new Rng(10 + i));
        if (p.accumulate) for (let m = 0; m < p.M; m++) for (let n = 0; n < p.N; n++) p.c[m * p.ldc + n] = Math.sin(m + 3 * n);
        const c0 = Float32Array.from(p.c);
        withBackend(backend, () => kernels().bf16Gemm(p));
        const err = gemmError(p, c0);
        assert.ok(err < (backend === 'native' ? 1e-5 : 1e-7), `${JSON.stringify(c)}: relative error ${err}`);
      });
    });
  }

  for (const backend of ['reference', 'native'] as const) {
    it(`${backend}: B given N×K (transB) gives the plain layout's bits, and C stored N×M (transC) its values, padding untouched`, backend === 'native' ? skipNative : {}, () => {
      GEMM_CASES.forEach((c, i) => {
        const p = gemmArgs(c, new Rng(40 + i));
        if (p.accumulate) for (let m = 0; m < p.M; m++) for (let n = 0; n < p.N; n++) p.c[m * p.ldc + n] = Math.sin(m + 3 * n);
        const c0 = Float32Array.from(p.c);
        const plain = { ...p, c: Float32Array.from(p.c) };
        withBackend(backend, () => kernels().bf16Gemm(plain));
        const ldbT = p.K + c.pad;
        const bT = new Float32Array(p.N * ldbT).fill(NaN);
        for (let k = 0; k < p.K; k++) for (let n = 0; n < p.N; n++) bT[n * ldbT + k] = p.b[k * p.ldb + n]!;
        const ldcT = p.M + c.pad;
        for (const [transB, transC] of [[true, false], [false, true], [true, true]] as const) {
          const cT = new Float32Array(transC ? p.N * ldcT : p.c.length).fill(7);
          for (let m = 0; m < p.M; m++) for (let n = 0; n < p.N; n++) cT[transC ? n * ldcT + m : m * p.ldc + n] = c0[m * p.ldc + n]!;
          const q = { ...p, transB, transC, b: transB ? bT : p.b, ldb: transB ? ldbT : p.ldb, c: cT, ldc: transC ? ldcT : p.ldc };
          withBackend(backend, () => kernels().bf16Gemm(q));
          const label = `${JSON.stringify(c)} transB ${transB} transC ${transC}`;
          const back = { ...p, c: Float32Array.from(c0) };
          for (let m = 0; m < p.M; m++) for (let n = 0; n < p.N; n++) back.c[m * p.ldc + n] = cT[transC ? n * ldcT + m : m * p.ldc + n]!;
          if (transC) {
            // A transposed C runs each tile through all of K at once: the same products, summed in another order.
            const err = gemmError(back, c0);
            assert.ok(err < (backend === 'native' ? 1e-5 : 1e-7), `${label}: relative error ${err}`);
            for (let n = 0; n < p.N; n++) for (let m = p.M; m < ldcT && n * ldcT + m < cT.length; m++) assert.equal(cT[n * ldcT + m], 7, `${label}: padding`);
          } else {
            assert.deepEqual(back.c, plain.c, `${label}: the plain layout's bits`);
          }
        }
      });
    });
  }

  it('native names B and C by their transposed shapes when they are short', skipNative, () => {
    const p = gemmArgs({ transA: false, M: 4, N: 3, K: 5, pad: 0 }, new Rng(1));
    assert.throws(() => withBackend('native', () => kernels().bf16Gemm({ ...p, transB: true, b: new Float32Array(14), ldb: 5 })), /bf16Gemm.*\bB\b/);
    assert.throws(() => withBackend('native', () => kernels().bf16Gemm({ ...p, transB: true, ldb: 4 })), /ldb.*B \(N×K, transB\)/);
    assert.throws(() => withBackend('native', () => kernels().bf16Gemm({ ...p, transC: true, ldc: 3 })), /ldc.*C \(N×M, transC\)/);
    assert.throws(() => withBackend('native', () => kernels().bf16Gemm({ ...p, transC: true, c: new Float32Array(11), ldc: 4 })), /bf16Gemm.*\bC\b/);
  });

  it('native rejects a short A and names it', skipNative, () => {
    const p = gemmArgs({ transA: false, M: 4, N: 4, K: 4, pad: 0 }, new Rng(1));
    assert.throws(() => withBackend('native', () => kernels().bf16Gemm({ ...p, a: p.a.subarray(0, 10) })), /bf16Gemm.*\bA\b.*Uint16Array/);
  });
});

describe('weightStats', () => {
  function sample(rows: number, cols: number, rng: Rng): Float32Array {
    const w = gaussian(rows * cols, rng, 0.05);
    for (let i = 0; i < w.length; i++) w[i] = w[i]! + 0.3 + (i % 97 === 5 ? 2 : 0);
    if (rows > 2) w.fill(0.25, cols, 2 * cols); // a constant row: copied, no error
    return w;
  }

  it('reference matches the definitions', () => {
    const rows = 3;
    const cols = 4;
    const w = Float32Array.from([1, 2, 3, 4, -1, -1, -1, -1, 0, 0.5, 1, 6]);
    const lo = new Float32Array(rows);
    const hi = new Float32Array(rows);
    const t = new Float64Array(6);
    withBackend('reference', () => kernels().weightStats(w, rows, cols, 2, 1, lo, hi, t));
    assert.deepEqual([...lo], [1, -1, 0]);
    assert.deepEqual([...hi], [4, -1, 6]);
    const d = [...w].map((x) => x - 1);
    const power = (p: number) => d.reduce((s, x) => s + x ** p, 0);
    assert.deepEqual([...t.subarray(0, 5)], [power(1), power(2), power(3), power(4), [...w].reduce((s, x) => s + x * x, 0)]);
    // 2 bits: row 0 has step 1 (exact), row 1 is constant, row 2 has step 2, zero 0:
    // 0 → 0, 0.5 → 0 (half to even), 1 → 0 (0.5 → 0) , 6 → 6: errors 0.5² + 1².
    assert.equal(t[5], 0.25 + 1);
  });

  for (const [rows, cols, bits] of [[1, 1, 4], [5, 17, 4], [64, 300, 3], [9, 70001, 8], [3, 40, 0]] as const) {
    it(`native matches reference: ${rows}x${cols}, ${bits} bits, float32 and bf16`, skipNative, () => {
      const w = sample(rows, cols, new Rng(rows * cols));
      const w16 = bf16(w);
      for (const kind of ['f32', 'bf16'] as const) {
        const run = (backend: 'reference' | 'native') => {
          const lo = new Float32Array(rows);
          const hi = new Float32Array(rows);
          const t = new Float64Array(6);
          withBackend(backend, () => (kind === 'f32' ? kernels().weightStats(w, rows, cols, bits, 0.29, lo, hi, t) : kernels().weightStatsBf16(w16, rows, cols, bits, 0.29, lo, hi, t)));
          return { lo, hi, t };
        };
        const want = run('reference');
        const got = run('native');
        assert.deepEqual(got.lo, want.lo, `${kind} row minimum`);
        assert.deepEqual(got.hi, want.hi, `${kind} row maximum`);
        const n = rows * cols;
        const scales = [Math.sqrt(want.t[1]! * n), want.t[1]!, Math.sqrt(want.t[1]! * want.t[3]!), want.t[3]!, want.t[4]!, want.t[5]!];
        for (let i = 0; i < 6; i++) assert.ok(Math.abs(got.t[i]! - want.t[i]!) <= 1e-11 * scales[i]! + 1e-300, `${kind} total ${i}: ${got.t[i]} vs ${want.t[i]}`);
      }
    });
  }

  it('native validates bits and lengths', skipNative, () => {
    const args = [new Float32Array(6), 2, 3, 4, 0, new Float32Array(2), new Float32Array(2), new Float64Array(6)] as const;
    withBackend('native', () => {
      assert.throws(() => kernels().weightStats(args[0], 2, 3, 9, 0, args[5], args[6], args[7]), /weightStats.*bits/);
      assert.throws(() => kernels().weightStats(args[0], 2, 4, 4, 0, args[5], args[6], args[7]), /weightStats.*\bw\b.*needs at least 8/);
      assert.throws(() => kernels().weightStats(args[0], 2, 3, 4, 0, args[5], args[6], new Float64Array(5)), /totals/);
    });
  });
});

describe('symmetricEigenvalues', () => {
  /** Q diag(λ) Qᵀ with Q from Gram–Schmidt of a Gaussian matrix. */
  function withSpectrum(lambda: number[], rng: Rng): Float64Array {
    const n = lambda.length;
    const q = Float64Array.from({ length: n * n }, () => rng.normal());
    for (let j = 0; j < n; j++) {
      for (let k = 0; k < j; k++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += q[i * n + j]! * q[i * n + k]!;
        for (let i = 0; i < n; i++) q[i * n + j]! -= dot * q[i * n + k]!;
      }
      let norm = 0;
      for (let i = 0; i < n; i++) norm += q[i * n + j]! ** 2;
      for (let i = 0; i < n; i++) q[i * n + j]! /= Math.sqrt(norm);
    }
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = 0; for (let k = 0; k < n; k++) s += q[i * n + k]! * lambda[k]! * q[j * n + k]!; a[i * n + j] = s; }
    return a;
  }

  for (const backend of ['reference', 'native'] as const) {
    it(`${backend} recovers known spectra, descending`, backend === 'native' ? skipNative : {}, () => {
      for (const n of [1, 2, 3, 16, 97]) {
        const lambda = Array.from({ length: n }, (_, i) => (i % 3 === 1 ? -1 : 1) * (0.5 + i * 0.31));
        const a = withSpectrum(lambda, new Rng(n));
        const kept = Float64Array.from(a);
        const out = new Float64Array(n);
        withBackend(backend, () => kernels().symmetricEigenvalues(a, n, n, out));
        assert.deepEqual(a, kept, 'input kept');
        const top = new Float64Array(Math.ceil(n / 3));
        withBackend(backend, () => kernels().symmetricEigenvalues(a, n, top.length, top));
        top.forEach((v, i) => assert.ok(Math.abs(v - out[i]!) < 1e-10 * (0.5 + n * 0.31), `n ${n}, top ${i}: ${v} vs ${out[i]}`));
        const want = [...lambda].sort((x, y) => y - x);
        out.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-10 * (0.5 + n * 0.31), `n ${n}, eigenvalue ${i}: ${v} vs ${want[i]}`));
      }
    });
  }

  for (const backend of ['reference', 'native'] as const) {
    it(`${backend} converges on a rank-2 matrix (zeros far below the norm)`, backend === 'native' ? skipNative : {}, () => {
      const n = 90;
      const a = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = 300 * Math.sin(1 + i) * Math.sin(1 + j) + 7 * Math.cos(0.5 * i) * Math.cos(0.5 * j);
      const out = new Float64Array(n);
      withBackend(backend, () => kernels().symmetricEigenvalues(a, n, n, out));
      assert.ok(out[1]! > 1);
      for (let i = 2; i < n; i++) assert.ok(Math.abs(out[i]!) < 1e-10 * out[0]!, `eigenvalue ${i}: ${out[i]}`);
    });
  }

  it('native agrees with the reference on a Gram matrix', skipNative, () => {
    const rng = new Rng(4);
    const n = 150;
    const x = gaussian(n * 300, rng);
    const g = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) { let s = 0; for (let k = 0; k < 300; k++) s += x[i * 300 + k]! * x[j * 300 + k]!; g[i * n + j] = s; }
    // Upper triangle left 0: only the lower one is read.
    const run = (backend: 'reference' | 'native', count = n) => withBackend(backend, () => { const out = new Float64Array(count); kernels().symmetricEigenvalues(g, n, count, out); return out; });
    const want = run('reference');
    for (const count of [n, 40]) {
      const got = run('native', count);
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-11 * want[0]!, `${count} wanted, eigenvalue ${i}: ${v} vs ${want[i]}`));
    }
  });

  it('native refuses a matrix that is not finite and a count above n', skipNative, () => {
    withBackend('native', () => {
      assert.throws(() => kernels().symmetricEigenvalues(Float64Array.from([NaN, 0, 0, 1]), 2, 2, new Float64Array(2)), /symmetricEigenvalues.*not finite/);
      assert.throws(() => kernels().symmetricEigenvalues(new Float64Array(4), 2, 3, new Float64Array(3)), /count/);
    });
  });
});

describe('eigenBatchStart / eigenBatchWait (the profiler\'s Gram eigenvalues, float32, in the background)', () => {
  /** A Gram matrix XXᵀ of n rows of x [n, k] as float32 (upper triangle left 0: only the lower is read). */
  function gram(n: number, k: number, rng: Rng): Float32Array {
    const x = gaussian(n * k, rng);
    const g = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) { let s = 0; for (let c = 0; c < k; c++) s += x[i * k + c]! * x[j * k + c]!; g[i * n + j] = s; }
    return g;
  }
  // Sizes that reach the 4-row groups and their remainders, counts with bisection (few) and QL (many), n = 1 and 2.
  const sizes = [1, 2, 3, 5, 17, 64, 131, 200];
  const counts = [1, 2, 1, 5, 4, 7, 131, 20];

  for (const backend of ['reference', 'native'] as const) {
    it(`${backend}: packed results match each matrix's float64 solve to float32 accuracy`, backend === 'native' ? skipNative : {}, () => {
      const rng = new Rng(12);
      const mats = sizes.map((n) => gram(n, n + 9, rng));
      const packed = new Float32Array(mats.reduce((s, m) => s + m.length, 0));
      let at = 0;
      for (const m of mats) { packed.set(m, at); at += m.length; }
      const out = new Float64Array(counts.reduce((s, c) => s + c, 0) + 1).fill(-7);
      withBackend(backend, () => {
        const handle = kernels().eigenBatchStart(packed, Int32Array.from(sizes), Int32Array.from(counts), new Int32Array(sizes.length), new Int32Array(sizes.length));
        packed.fill(NaN); // the job copied its input
        kernels().eigenBatchWait(handle, out);
      });
      let to = 0;
      mats.forEach((m, i) => {
        const want = new Float64Array(sizes[i]!);
        withBackend('reference', () => kernels().symmetricEigenvalues(Float64Array.from(m), sizes[i]!, sizes[i]!, want));
        for (let j = 0; j < counts[i]!; j++) {
          assert.ok(Math.abs(out[to + j]! - want[j]!) <= 2e-6 * want[0]!, `matrix ${i} (n ${sizes[i]}), eigenvalue ${j}: ${out[to + j]} vs ${want[j]}`);
        }
        to += counts[i]!;
      });
      assert.equal(out[to], -7, 'nothing past the results is written');
    });
  }

  // Eigenvector rows: [0, head) and [n − tail, n) of the unit eigenvectors, count columns (the Krylov route's quadrature).
  const rowCases = [
    { n: 1, count: 1, head: 1, tail: 0 },
    { n: 2, count: 2, head: 1, tail: 1 },
    { n: 3, count: 3, head: 3, tail: 0 },
    { n: 17, count: 17, head: 3, tail: 4 },
    { n: 64, count: 64, head: 64, tail: 0 },
    { n: 131, count: 40, head: 16, tail: 9 },
  ];
  for (const backend of ['reference', 'native'] as const) {
    it(`${backend}: eigenvector rows are those of the float64 decomposition up to sign, and whole rows rebuild the matrix`, backend === 'native' ? skipNative : {}, () => {
      const rng = new Rng(21);
      const mats = rowCases.map((c) => gram(c.n, c.n + 5, rng));
      const packed = new Float32Array(mats.reduce((s, m) => s + m.length, 0));
      let at = 0;
      for (const m of mats) { packed.set(m, at); at += m.length; }
      const results = rowCases.reduce((s, c) => s + c.count * (1 + c.head + c.tail), 0);
      const out = new Float64Array(results + 1).fill(-7);
      withBackend(backend, () => {
        const handle = kernels().eigenBatchStart(packed, Int32Array.from(rowCases, (c) => c.n), Int32Array.from(rowCases, (c) => c.count), Int32Array.from(rowCases, (c) => c.head), Int32Array.from(rowCases, (c) => c.tail));
        kernels().eigenBatchWait(handle, out);
      });
      assert.equal(out[results], -7, 'nothing past the results is written');
      let to = 0;
      rowCases.forEach((c, i) => {
        const { n, count, head, tail } = c;
        const full = new Float64Array(n * n);
        for (let r = 0; r < n; r++) for (let q = 0; q <= r; q++) full[r * n + q] = full[q * n + r] = mats[i]![r * n + q]!;
        const want = symmetricEigen(full, n);
        const values = out.subarray(to, to + count);
        const rows = out.subarray(to + count, to + count * (1 + head + tail));
        const top = want.values[0]!;
        for (let j = 0; j < count; j++) assert.ok(Math.abs(values[j]! - want.values[j]!) <= 2e-6 * top, `n ${n}: eigenvalue ${j}: ${values[j]} vs ${want.values[j]}`);
        const rowIndex = (r: number): number => (r < head ? r : n - tail + (r - head));
        for (let j = 0; j < count; j++) {
          // A column is determined up to sign when its eigenvalue is apart from its neighbours.
          const gap = Math.min(j > 0 ? want.values[j - 1]! - want.values[j]! : Infinity, j + 1 < n ? want.values[j]! - want.values[j + 1]! : Infinity);
          if (gap < 1e-3 * top) continue;
          let dot = 0;
          for (let r = 0; r < head + tail; r++) dot += rows[r * count + j]! * want.vectors[rowIndex(r) * n + j]!;
          const sign = dot < 0 ? -1 : 1;
          for (let r = 0; r < head + tail; r++) {
            const got = sign * rows[r * count + j]!;
            const expected = want.vectors[rowIndex(r) * n + j]!;
            assert.ok(Math.abs(got - expected) <= 1e-3 * Math.max(1, (1e-2 * top) / gap), `n ${n}: row ${rowIndex(r)} of vector ${j}: ${got} vs ${expected}`);
          }
        }
        if (head === n) {
          // All rows: Y·diag(θ)·Yᵀ is the matrix.
          for (let r = 0; r < n; r++) {
            for (let q = 0; q <= r; q++) {
              let sum = 0;
              for (let j = 0; j < n; j++) sum += rows[r * count + j]! * values[j]! * rows[q * count + j]!;
              assert.ok(Math.abs(sum - full[r * n + q]!) <= 1e-5 * top, `n ${n}: (${r}, ${q}) rebuilt as ${sum}, is ${full[r * n + q]}`);
            }
          }
        }
        to += count * (1 + head + tail);
      });
    });
  }

  it('native: heads and tails are checked against the size', skipNative, () => {
    withBackend('native', () => {
      assert.throws(() => kernels().eigenBatchStart(new Float32Array(4), Int32Array.of(2), Int32Array.of(2), Int32Array.of(2), Int32Array.of(1)), /heads\[i\] \+ tails\[i\] <= size/);
      assert.throws(() => kernels().eigenBatchStart(new Float32Array(4), Int32Array.of(2), Int32Array.of(2), Int32Array.of(-1), Int32Array.of(0)), /heads\[i\]/);
    });
  });

  it('native: jobs in flight at once finish independently; results do not depend on the thread count', skipNative, () => {
    const rng = new Rng(5);
    const a = gram(150, 160, rng);
    const b = gram(97, 100, rng);
    withBackend('native', () => {
      const ha = kernels().eigenBatchStart(a, Int32Array.of(150), Int32Array.of(15), new Int32Array(1), new Int32Array(1));
      const hb = kernels().eigenBatchStart(b, Int32Array.of(97), Int32Array.of(10), new Int32Array(1), new Int32Array(1));
      const outB = new Float64Array(10);
      const outA = new Float64Array(15);
      kernels().eigenBatchWait(hb, outB);
      kernels().eigenBatchWait(ha, outA);
      const alone = new Float64Array(15);
      kernels().eigenBatchWait(kernels().eigenBatchStart(a, Int32Array.of(150), Int32Array.of(15), new Int32Array(1), new Int32Array(1)), alone);
      assert.deepEqual(outA, alone);
      assert.ok(outB[0]! > outB[9]!);
    });
  });

  it('native: a matrix that is not finite is named; a handle is waited for once; bad sizes are refused', skipNative, () => {
    withBackend('native', () => {
      const bad = Float32Array.of(1, 0, 0, 1, NaN, 0, 0, 1);
      const handle = kernels().eigenBatchStart(bad, Int32Array.of(2, 2), Int32Array.of(1, 1), new Int32Array(2), new Int32Array(2));
      assert.throws(() => kernels().eigenBatchWait(handle, new Float64Array(2)), /matrix 1: no eigenvalues for a matrix that is not finite/);
      assert.throws(() => kernels().eigenBatchWait(handle, new Float64Array(2)), /no job \d+ in flight/);
      assert.throws(() => kernels().eigenBatchStart(new Float32Array(4), Int32Array.of(2), Int32Array.of(3), new Int32Array(1), new Int32Array(1)), /count <= size/);
      assert.throws(() => kernels().eigenBatchStart(new Float32Array(3), Int32Array.of(2), Int32Array.of(1), new Int32Array(1), new Int32Array(1)), /argument a/);
      assert.throws(() => kernels().eigenBatchStart(new Float32Array(4), Int32Array.of(2), Int32Array.of(1, 1), new Int32Array(1), new Int32Array(1)), /one entry per matrix/);
      const short = kernels().eigenBatchStart(new Float32Array(4), Int32Array.of(2), Int32Array.of(2), new Int32Array(1), new Int32Array(1));
      assert.throws(() => kernels().eigenBatchWait(short, new Float64Array(1)), /fewer than the job's results/);
    });
  });
});

describe('normalFill (bulk Rng.normal)', () => {
  for (const backend of ['reference', 'native'] as const) {
    it(`${backend}: the values and the generator state of one-by-one normal() calls, odd counts and a cached value`, backend === 'native' ? skipNative : {}, () => {
      for (const [seed, first, n] of [[1, 0, 1], [2, 1, 7], [3, 3, 1000], [4, 0, 0], [5, 2, 4096]] as const) {
        const a = new Rng(seed);
        const b = new Rng(seed);
        for (let i = 0; i < first; i++) assert.equal(b.normal(), a.normal());
        const want = Float64Array.from({ length: n }, () => a.normal());
        const got = withBackend(backend, () => b.fillNormal(new Float64Array(n), kernels().normalFill));
        got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= 1e-15 * Math.max(1, Math.abs(want[i]!)), `seed ${seed}, value ${i}: ${v} vs ${want[i]}`));
        assert.deepEqual(b.getState(), a.getState(), `seed ${seed}: the generator is where ${n} calls leave it`);
        assert.equal(b.normal(), a.normal());
      }
    });
  }
  it('native refuses a null state and a short output', skipNative, () => {
    withBackend('native', () => {
      assert.throws(() => kernels().normalFill(null as unknown as Uint32Array, new Float64Array(2), new Float64Array(1), 1), /state/);
      assert.throws(() => kernels().normalFill(new Uint32Array(4), new Float64Array(2), new Float64Array(1), 2), /out/);
    });
  });
});

describe('pivotedCholeskyInverse (the Krylov block orthonormalisation)', () => {
  /** Gram matrix of `cols` random vectors of length 300, the last `dependent` of them combinations of the others. */
  function gramOf(cols: number, dependent: number, seed: number): { g: Float64Array; norms: Float64Array } {
    const rng = new Rng(seed);
    const m = 300;
    const z = new Float64Array(m * cols);
    for (let j = 0; j < cols; j++) {
      for (let i = 0; i < m; i++) {
        z[i * cols + j] = j < cols - dependent ? rng.normal() * (1 + j) : 0.5 * z[i * cols + (j % (cols - dependent))]! - 0.25 * z[i * cols + ((j + 1) % (cols - dependent))]!;
      }
    }
    const g = new Float64Array(cols * cols);
    for (let a = 0; a < cols; a++) for (let b = 0; b < cols; b++) { let t = 0; for (let i = 0; i < m; i++) t += z[i * cols + a]! * z[i * cols + b]!; g[a * cols + b] = t; }
    const norms = Float64Array.from({ length: cols }, (_, j) => g[j * cols + j]! * (1 + 0.1 * j));
    return { g, norms };
  }
  const run = (backend: 'reference' | 'native', g: Float64Array, n: number, norms: Float64Array) => withBackend(backend, () => {
    const order = new Float64Array(n);
    const diag = new Float64Array(n);
    const inverse = new Float64Array(n * n);
    const r = kernels().pivotedCholeskyInverse(g, n, norms, 1e-6, order, diag, inverse);
    return { r, order: Array.from(order.subarray(0, r)), diag: Array.from(diag.subarray(0, r)), inverse: Array.from(inverse.subarray(0, r * r)) };
  });
  it('native gives the reference bits: full rank, dependent columns, one column, none kept', skipNative, () => {
    for (const [cols, dependent, seed] of [[64, 0, 1], [48, 5, 2], [1, 0, 3], [17, 3, 4]] as const) {
      const { g, norms } = gramOf(cols, dependent, seed);
      const want = run('reference', g, cols, norms);
      assert.equal(want.r, cols - dependent, `${cols}/${dependent}: the dependent columns are dropped`);
      assert.deepEqual(run('native', g, cols, norms), want, `${cols} columns, ${dependent} dependent`);
    }
    const zero = new Float64Array(9);
    assert.deepEqual(run('native', zero, 3, Float64Array.of(1, 1, 1)), run('reference', zero, 3, Float64Array.of(1, 1, 1)));
    assert.equal(run('native', zero, 3, Float64Array.of(1, 1, 1)).r, 0);
  });
  it('reference: L⁻¹ times the pivoted factor is the identity', () => {
    const { g, norms } = gramOf(12, 0, 5);
    const { r, order, inverse } = run('reference', g, 12, norms);
    // (L⁻¹ a[order][order] L⁻ᵀ) = I.
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < r; j++) {
        let t = 0;
        for (let k = 0; k < r; k++) for (let l = 0; l < r; l++) t += inverse[i * r + k]! * g[order[k]! * 12 + order[l]!]! * inverse[j * r + l]!;
        assert.ok(Math.abs(t - (i === j ? 1 : 0)) < 1e-9, `(${i}, ${j}): ${t}`);
      }
    }
  });
  it('native refuses arrays shorter than n or n²', skipNative, () => {
    withBackend('native', () => {
      const n = 3;
      assert.throws(() => kernels().pivotedCholeskyInverse(new Float64Array(8), n, new Float64Array(n), 1e-6, new Float64Array(n), new Float64Array(n), new Float64Array(9)), /argument a/);
      assert.throws(() => kernels().pivotedCholeskyInverse(new Float64Array(9), n, new Float64Array(n), 1e-6, new Float64Array(2), new Float64Array(n), new Float64Array(9)), /order/);
      assert.throws(() => kernels().pivotedCholeskyInverse(new Float64Array(9), n, new Float64Array(n), 1e-6, new Float64Array(n), new Float64Array(n), new Float64Array(8)), /inverse/);
    });
  });
});

describe('startBlockFill (the Krylov start block)', () => {
  /** The block as a loop of Rng.normal() and Rng.nextUint32() calls gives it (spectrum.ts's start block). */
  function byCalls(rng: Rng, n: number, width: number, gaussian: number): Float32Array {
    const out = new Float32Array(n * width);
    let bits = 0;
    let left = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < width; j++) {
        if (j < gaussian) out[i * width + j] = rng.normal();
        else {
          if (left === 0) {
            bits = rng.nextUint32();
            left = 32;
          }
          out[i * width + j] = bits & 1 ? 1 : -1;
          bits >>>= 1;
          left--;
        }
      }
    }
    return out;
  }
  for (const backend of ['reference', 'native'] as const) {
    it(`${backend}: the values and generator state of the call loop (odd normal counts, a cached normal, no normals, no signs)`, backend === 'native' ? skipNative : {}, () => {
      for (const [seed, first, n, width, gaussian] of [[1, 0, 2048, 64, 8], [2, 1, 37, 13, 3], [3, 0, 50, 9, 0], [4, 3, 40, 5, 5], [5, 0, 0, 8, 2], [6, 1, 3, 100, 1]] as const) {
        const a = new Rng(seed);
        const b = new Rng(seed);
        for (let i = 0; i < first; i++) assert.equal(b.normal(), a.normal());
        const want = byCalls(a, n, width, gaussian);
        const got = new Float32Array(n * width);
        withBackend(backend, () => b.advanceWith((state, spare) => kernels().startBlockFill(state, spare, got, n, width, gaussian)));
        assert.deepEqual(got, want, `seed ${seed}`);
        assert.deepEqual(b.getState(), a.getState(), `seed ${seed}: the generator is where the loop leaves it`);
        assert.equal(b.nextUint32(), a.nextUint32());
      }
    });
  }
  it('native refuses a null state, a short output and more normals than columns', skipNative, () => {
    withBackend('native', () => {
      assert.throws(() => kernels().startBlockFill(null as unknown as Uint32Array, new Float64Array(2), new Float32Array(4), 2, 2, 1), /state/);
      assert.throws(() => kernels().startBlockFill(new Uint32Array(4), new Float64Array(2), new Float32Array(3), 2, 2, 1), /out/);
      assert.throws(() => kernels().startBlockFill(new Uint32Array(4), new Float64Array(2), new Float32Array(4), 2, 2, 3), /gaussian \(3\) must be at most width \(2\)/);
    });
  });
});

describe('bf16ToF32', () => {
  it('native widens every bf16 pattern exactly as the reference', skipNative, () => {
    const src = Uint16Array.from({ length: 65541 }, (_, i) => i & 0xffff);
    const want = new Float32Array(src.length);
    withBackend('reference', () => kernels().bf16ToF32(src, want, src.length));
    const got = new Float32Array(src.length + 1).fill(7);
    withBackend('native', () => kernels().bf16ToF32(src, got, src.length));
    assert.deepEqual(new Uint32Array(got.buffer, 0, src.length), new Uint32Array(want.buffer));
    assert.equal(got[src.length], 7);
    assert.equal(want[0x3f80], 1);
    assert.throws(() => withBackend('native', () => kernels().bf16ToF32(new Uint16Array(8), new Float32Array(4), 8)), /dst/);
  });
});

describe('sumSquares / scaleInPlace (the global gradient norm and clipping)', () => {
  it('native matches the reference: sums within 1e-12 relative for any length, scaling bit for bit', skipNative, () => {
    for (const n of [0, 1, 15, 17, 65536, 65537, 300001]) {
      const x = gaussian(n, new Rng(n + 1), 3);
      const want = withBackend('reference', () => kernels().sumSquares(x, n));
      const got = withBackend('native', () => kernels().sumSquares(x, n));
      assert.ok(Math.abs(got - want) <= 1e-12 * Math.max(1, want), `n ${n}: ${got} vs ${want}`);
      const a = Float32Array.from(x);
      const b = Float32Array.from(x);
      withBackend('reference', () => kernels().scaleInPlace(a, n, 0.3));
      withBackend('native', () => kernels().scaleInPlace(b, n, 0.3));
      assert.deepEqual(b, a, `n ${n}`);
    }
    assert.throws(() => withBackend('native', () => kernels().sumSquares(new Float32Array(3), 4)), /x/);
  });
});

/** True when this process runs on glibc (whose malloc retainFreedMemory configures). */
function isGlibc(): boolean {
  return (process.report.getReport() as unknown as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime !== undefined;
}

describe('memory hints (docs/architecture.md, "Memory")', () => {
  it('retainFreedMemory applies on glibc and refuses values mallopt cannot take', skipNative, () => {
    const addon = loadNativeAddon().addon!;
    assert.equal(addon.retainFreedMemory(0, 2 ** 31 - 1), isGlibc() ? 1 : 0);
    assert.throws(() => addon.retainFreedMemory(2 ** 31, 1 << 20), /at most 2\^31 - 1/);
  });
  it('with retainFreedMemory a freed 64 MiB array comes back without page faults; without it, it does not', skipNative, () => {
    if (!isGlibc()) return;
    // A child loads the addon (which applies the setting), then allocates, touches, drops and collects a buffer
    // above glibc's largest mmap threshold (32 MiB) twice; the second touch counts its page faults.
    const index = new URL('../../src/tensor/index.js', import.meta.url).href;
    const script = `
      const { nativeStatus } = await import(${JSON.stringify(index)});
      if (!nativeStatus().loaded) throw new Error('no addon');
      const touch = () => { const a = new Float32Array(16 << 20); a.fill(1); return a.length; };
      touch(); globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); globalThis.gc();
      const before = process.resourceUsage().minorPageFault;
      touch();
      console.log(process.resourceUsage().minorPageFault - before);`;
    const faults = (env: Record<string, string>): number => {
      const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, ...env } });
      assert.equal(r.status, 0, r.stderr);
      return Number(r.stdout.trim());
    };
    // 64 MiB is 16,384 pages of 4 KiB (or 32 huge pages): fresh memory faults at least 32 times.
    const retained = faults({});
    const system = faults({ QKD_MALLOC: 'system' });
    assert.ok(retained < 16, `${retained} faults with the setting`);
    assert.ok(system >= 32, `${system} faults without it`);
  });
  it('adviseHugePages advises only whole 2 MiB pages inside the buffer', skipNative, () => {
    const addon = loadNativeAddon().addon!;
    const big = new Uint8Array(9 << 20);
    const advised = addon.adviseHugePages(big.subarray(1));
    assert.ok(advised % (2 << 20) === 0 && advised <= big.length - 1, `${advised} bytes`);
    assert.equal(addon.adviseHugePages(new Uint8Array(1 << 20)), 0, 'a 1 MiB buffer holds no whole 2 MiB page');
    const small = new Float32Array(1000);
    assert.equal(adviseHugePages(small), small, 'the TypeScript helper returns its argument');
  });
});

describe('f32ToBf16', () => {
  it('native matches the reference rounding on normal values, ties, subnormals, ±Inf and NaN', skipNative, () => {
    const src = gaussian(70001, new Rng(3), 5);
    src.set([0, -0, 1.00390625, 1.01171875, 1e-40, -3e-39, 3.4e38, Infinity, -Infinity, NaN], 100);
    const want = new Uint16Array(src.length);
    const got = new Uint16Array(src.length + 1).fill(0xabcd);
    withBackend('reference', () => kernels().f32ToBf16(src, want, src.length));
    withBackend('native', () => kernels().f32ToBf16(src, got, src.length));
    assert.deepEqual(got.subarray(0, src.length), want);
    assert.equal(got[src.length], 0xabcd, 'nothing past n is written');
    assert.equal(want[102], 0x3f80, 'a tie rounds to even');
    assert.ok((want[109]! & 0x7fc0) === 0x7fc0, 'NaN stays a quiet NaN');
  });
});

describe('f16ToF32 (half bits → float32 for F16 checkpoints)', skipNative, () => {
  it('every one of the 65536 halves widens as the reference (the vector path ends on a partial block)', () => {
    // 65536 + 5 elements: the vector path's last block is partial.
    const src = Uint16Array.from({ length: 65541 }, (_, i) => i & 0xffff);
    const want = new Float32Array(src.length);
    withBackend('reference', () => kernels().f16ToF32(src, want, src.length));
    const got = new Float32Array(src.length + 1).fill(7);
    withBackend('native', () => kernels().f16ToF32(src, got, src.length));
    for (let i = 0; i < src.length; i++) {
      if (Number.isNaN(want[i]!)) assert.ok(Number.isNaN(got[i]!), `half ${i}`);
      else assert.ok(Object.is(got[i], want[i]), `half ${i}: ${got[i]} vs ${want[i]}`);
    }
    assert.equal(got[src.length], 7, 'nothing past n is written');
    assert.equal(want[0x3c00], 1);
    assert.equal(want[0x0001], 2 ** -24);
  });
  it('refuses a short destination and overlapping arrays', () => {
    const buffer = new ArrayBuffer(64);
    assert.throws(() => withBackend('native', () => kernels().f16ToF32(new Uint16Array(8), new Float32Array(4), 8)), /dst/);
    assert.throws(() => withBackend('native', () => kernels().f16ToF32(new Uint16Array(buffer, 0, 8), new Float32Array(buffer, 8, 8), 8)), /overlap/);
  });
});

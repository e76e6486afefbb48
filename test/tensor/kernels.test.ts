// Kernels: the reference GEMM against a naive definition, and every native
// kernel against the reference on odd sizes, all transposition cases,
// batch strides (including a shared operand), alpha/beta, and NaN-safe beta=0.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, nativeStatus, withBackend, kernels, type GemmArgs } from '../../src/tensor/index.js';

function rand(n: number, rng: Rng): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.uniform() * 2 - 1;
  return a;
}

interface Case { batch: number; M: number; N: number; K: number; transA: boolean; transB: boolean; alpha: number; beta: number; shareB?: boolean; pad?: number }

function makeArgs(c: Case, rng: Rng): GemmArgs {
  const pad = c.pad ?? 0;
  const aRows = c.transA ? c.K : c.M;
  const aCols = (c.transA ? c.M : c.K) + pad;
  const bRows = c.transB ? c.N : c.K;
  const bCols = (c.transB ? c.K : c.N) + pad;
  const ldc = c.N + pad;
  const strideA = aRows * aCols;
  const strideB = c.shareB ? 0 : bRows * bCols;
  const strideC = c.M * ldc;
  return {
    batch: c.batch, transA: c.transA, transB: c.transB, M: c.M, N: c.N, K: c.K, alpha: c.alpha,
    a: rand(Math.max(1, c.batch * strideA), rng), lda: aCols, strideA,
    b: rand(Math.max(1, (c.shareB ? 1 : c.batch) * bRows * bCols), rng), ldb: bCols, strideB,
    beta: c.beta, c: c.beta === 0 ? new Float32Array(Math.max(1, c.batch * strideC)).fill(NaN) : rand(Math.max(1, c.batch * strideC), rng), ldc, strideC,
  };
}

/** C by the textbook definition, in float64; also Σ|a||b| per entry for the error bound. */
function naive(p: GemmArgs): { c: Float64Array; mag: Float64Array } {
  const c = new Float64Array(p.c.length);
  const mag = new Float64Array(p.c.length);
  for (let i = 0; i < p.c.length; i++) c[i] = p.c[i]!;
  for (let b = 0; b < p.batch; b++) {
    for (let m = 0; m < p.M; m++) {
      for (let n = 0; n < p.N; n++) {
        let s = 0;
        let g = 0;
        for (let k = 0; k < p.K; k++) {
          const av = p.transA ? p.a[b * p.strideA + k * p.lda + m]! : p.a[b * p.strideA + m * p.lda + k]!;
          const bv = p.transB ? p.b[b * p.strideB + n * p.ldb + k]! : p.b[b * p.strideB + k * p.ldb + n]!;
          s += av * bv;
          g += Math.abs(av * bv);
        }
        const idx = b * p.strideC + m * p.ldc + n;
        c[idx] = p.alpha * s + (p.beta === 0 ? 0 : p.beta * c[idx]!);
        mag[idx] = Math.abs(p.alpha) * g + (p.beta === 0 ? 0 : Math.abs(p.beta * p.c[idx]!)) + 1e-30;
      }
    }
  }
  return { c, mag };
}

function checkGemm(backend: 'reference' | 'native', c: Case, seed: number): void {
  const rng = new Rng(seed);
  const args = makeArgs(c, rng);
  const expected = naive(args);
  withBackend(backend, () => kernels().sgemm(args));
  for (let b = 0; b < c.batch; b++) {
    for (let m = 0; m < c.M; m++) {
      for (let n = 0; n < c.N; n++) {
        const idx = b * args.strideC + m * args.ldc + n;
        const err = Math.abs(args.c[idx]! - expected.c[idx]!) / expected.mag[idx]!;
        if (!(err < 2e-6)) assert.fail(`${backend} sgemm ${JSON.stringify(c)}: C[${b}][${m},${n}] = ${args.c[idx]} vs ${expected.c[idx]} (relative ${err})`);
      }
    }
  }
}

const sizes: [number, number, number][] = [
  [1, 1, 1], [2, 3, 1], [7, 13, 17], [17, 31, 33], [33, 65, 63], [64, 64, 64], [1, 300, 5], [129, 3, 257], [127, 129, 2], [250, 70, 200],
];
const cases: Case[] = [];
for (const [M, N, K] of sizes) {
  for (const transA of [false, true]) for (const transB of [false, true]) cases.push({ batch: 1, M, N, K, transA, transB, alpha: 1, beta: 0 });
}
cases.push({ batch: 3, M: 9, N: 11, K: 5, transA: false, transB: true, alpha: 0.5, beta: 1, shareB: true });
cases.push({ batch: 4, M: 17, N: 8, K: 40, transA: true, transB: false, alpha: -2, beta: 0.5, pad: 3 });
cases.push({ batch: 2, M: 5, N: 6, K: 0, transA: false, transB: false, alpha: 1, beta: 0.5 });
// K = 0 with beta 0 must still write every element (matmul hands the GEMM an uninitialised output).
cases.push({ batch: 2, M: 5, N: 6, K: 0, transA: true, transB: false, alpha: 1, beta: 0 });
cases.push({ batch: 2, M: 40, N: 33, K: 19, transA: true, transB: true, alpha: 1, beta: -1, pad: 5 });

describe('sgemm', () => {
  it('reference matches the textbook definition', () => {
    cases.forEach((c, i) => checkGemm('reference', c, i + 1));
  });
  it('native matches the textbook definition', { skip: !nativeStatus().loaded && 'native addon not loaded' }, () => {
    cases.forEach((c, i) => checkGemm('native', c, i + 1));
    // Large enough to take the threaded, packed path.
    checkGemm('native', { batch: 1, M: 300, N: 301, K: 299, transA: false, transB: false, alpha: 1, beta: 0 }, 99);
    checkGemm('native', { batch: 1, M: 257, N: 515, K: 130, transA: true, transB: true, alpha: 1, beta: 1 }, 98);
  });
});

describe('softmax kernels', () => {
  const run = (backend: 'reference' | 'native') => {
    const rng = new Rng(5);
    const rows = 7;
    const cols = 37;
    const x = rand(rows * cols, rng).map((v) => v * 20);
    for (let j = 0; j < cols; j++) x[2 * cols + j] = -Infinity; // fully masked row
    for (let j = 5; j < cols; j++) x[3 * cols + j] = -Infinity; // causal-style row
    const y = new Float32Array(rows * cols);
    const dy = rand(rows * cols, rng);
    const dx = new Float32Array(rows * cols).fill(0.25); // backward accumulates
    withBackend(backend, () => {
      kernels().softmaxForward(x, y, rows, cols);
      kernels().softmaxBackward(y, dy, dx, rows, cols);
    });
    return { y, dx };
  };
  it('reference: rows sum to 1, masked row is zero, backward accumulates', () => {
    const { y, dx } = run('reference');
    for (let r = 0; r < 7; r++) {
      let s = 0;
      for (let j = 0; j < 37; j++) s += y[r * 37 + j]!;
      assert.ok(r === 2 ? s === 0 : Math.abs(s - 1) < 1e-6, `row ${r} sums to ${s}`);
    }
    assert.equal(dx[2 * 37], 0.25);
    assert.equal(y[3 * 37 + 6], 0);
  });
  it('a NaN propagates, also in a row that is otherwise fully masked', () => {
    for (const backend of nativeStatus().loaded ? (['reference', 'native'] as const) : (['reference'] as const)) {
      const x = Float32Array.from([-Infinity, NaN, -Infinity, 1, NaN, 2]);
      const y = new Float32Array(6);
      withBackend(backend, () => kernels().softmaxForward(x, y, 2, 3));
      assert.ok(y.every((v) => Number.isNaN(v)), `${backend}: ${Array.from(y)}`);
    }
  });
  it('native matches reference', { skip: !nativeStatus().loaded && 'native addon not loaded' }, () => {
    const ref = run('reference');
    const nat = run('native');
    for (let i = 0; i < ref.y.length; i++) {
      assert.ok(Math.abs(ref.y[i]! - nat.y[i]!) <= 1e-6 + 1e-5 * Math.abs(ref.y[i]!), `y[${i}] ${nat.y[i]} vs ${ref.y[i]}`);
      assert.ok(Math.abs(ref.dx[i]! - nat.dx[i]!) <= 1e-6 + 1e-5 * Math.abs(ref.dx[i]!), `dx[${i}] ${nat.dx[i]} vs ${ref.dx[i]}`);
    }
  });
});

describe('causal softmax kernels', () => {
  const BH = 3, T = 5, S = 7, offset = 2;
  const run = (backend: 'reference' | 'native') => {
    const rng = new Rng(8);
    const x = rand(BH * T * S, rng).map((v) => v * 8);
    for (let bh = 0; bh < BH; bh++) for (let t = 0; t < T; t++) for (let j = offset + t + 1; j < S; j++) x[(bh * T + t) * S + j] = NaN; // never read
    const y = new Float32Array(x.length);
    const dy = rand(x.length, rng);
    const dxAcc = new Float32Array(x.length).fill(0.5);
    const dyCopy = dy.slice();
    withBackend(backend, () => {
      kernels().causalSoftmaxForward(x, y, BH, T, S, offset);
      kernels().causalSoftmaxBackward(y, dy, dxAcc, BH, T, S, offset, true);
      kernels().causalSoftmaxBackward(y, dyCopy, dyCopy, BH, T, S, offset, false); // in place
    });
    return { y, dxAcc, dxInPlace: dyCopy };
  };
  it('reference: masked columns are 0, never read, and in-place backward matches', () => {
    const { y, dxAcc, dxInPlace } = run('reference');
    for (let i = 0; i < y.length; i++) {
      assert.ok(Number.isFinite(y[i]!), `y[${i}] = ${y[i]}`);
      const j = i % S;
      const t = Math.floor(i / S) % T;
      if (j > offset + t) {
        assert.equal(y[i], 0);
        assert.equal(dxInPlace[i], 0);
        assert.equal(dxAcc[i], 0.5);
      } else assert.ok(Math.abs(dxAcc[i]! - 0.5 - dxInPlace[i]!) < 1e-6);
    }
  });
  it('native matches reference', { skip: !nativeStatus().loaded && 'native addon not loaded' }, () => {
    const ref = run('reference');
    const nat = run('native');
    for (const key of ['y', 'dxAcc', 'dxInPlace'] as const) {
      for (let i = 0; i < ref[key].length; i++) {
        assert.ok(Math.abs(ref[key][i]! - nat[key][i]!) <= 1e-6 + 1e-5 * Math.abs(ref[key][i]!), `${key}[${i}] ${nat[key][i]} vs ${ref[key][i]}`);
      }
    }
  });
});

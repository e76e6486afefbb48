/**
 * What the Krylov route's eigen-solve pays for the quadrature's eigenvector
 * rows: kernels().eigenBatchStart on one symmetric float32 matrix (a Gram
 * matrix of Gaussian rows), for its largest n/3 eigenvalues (the bisection
 * the Ritz sum used), all n eigenvalues (QL), and all n with the rows of
 * the first and the last block of eigenvectors, at the shapes of
 * `--krylov-dims` 0.7 (n 144, blocks of 16), 1 (208, 16) and 2.75 (576,
 * 64). Median of 9 calls after a warm-up.
 *
 * Usage: npm run bench -- eigen-rows. Last stdout line: JSON.
 */
import { Rng, kernels } from '../src/tensor/index.js';
import { requireNative, timeMedian } from './_util.js';

requireNative();
const rng = new Rng(3);
const rows: { n: number; block: number; top_third_ms: number; all_ms: number; with_rows_ms: number }[] = [];
for (const [n, block] of [[144, 16], [208, 16], [576, 64]] as const) {
  const k = n + 5;
  const x = Float32Array.from({ length: n * k }, () => rng.normal());
  const g = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) {
    let s = 0;
    for (let c = 0; c < k; c++) s += x[i * k + c]! * x[j * k + c]!;
    g[i * n + j] = s;
  }
  const solve = (count: number, edge: number): number => {
    const out = new Float64Array(count * (1 + 2 * edge));
    return 1000 * timeMedian(() => kernels().eigenBatchWait(kernels().eigenBatchStart(g, Int32Array.of(n), Int32Array.of(count), Int32Array.of(edge), Int32Array.of(edge)), out), 9, 1);
  };
  const row = { n, block, top_third_ms: solve(Math.ceil(n / 3), 0), all_ms: solve(n, 0), with_rows_ms: solve(n, block) };
  rows.push(row);
  console.log(`n ${n}: top n/3 eigenvalues ${row.top_third_ms.toFixed(2)} ms, all ${row.all_ms.toFixed(2)} ms, all with ${2 * block} eigenvector rows ${row.with_rows_ms.toFixed(2)} ms`);
}
console.log(JSON.stringify({ rows }));

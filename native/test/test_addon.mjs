// Loads the built addon from Node and checks the contract the TypeScript
// side relies on for the version-1 exports (the fused kernels of version 2
// are in test_addon_fused.mjs): info(), sgemm against a float64 reference
// (all transposes, batches with shared B, subarrays with a non-zero
// byteOffset, beta = 0 over NaN, booleans or 0/1 flags), softmax
// forward/backward, and the error messages for bad arguments.
//
// Run after `npx node-gyp rebuild` (from the repository root):
//   node native/test/test_addon.mjs            # every ISA path, one child process each
//   QKD_ISA=avx2 node native/test/test_addon.mjs   # one path
import { runPerIsa, loadAddon, check, expectThrow, finish, randomArray } from './harness.mjs';

runPerIsa(import.meta.url);
const native = loadAddon();

// Float64 reference; returns the max error relative to alpha*Σ|a||b| + |beta c|.
function sgemmError(batch, ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C0, C, ldc, sC) {
  let worst = 0;
  for (let i = 0; i < batch; i += 1) {
    for (let m = 0; m < M; m += 1) {
      for (let n = 0; n < N; n += 1) {
        let sum = 0;
        let mag = 0;
        for (let k = 0; k < K; k += 1) {
          const a = ta ? A[i * sA + k * lda + m] : A[i * sA + m * lda + k];
          const b = tb ? B[i * sB + n * ldb + k] : B[i * sB + k * ldb + n];
          sum += a * b;
          mag += Math.abs(a * b);
        }
        const at = i * sC + m * ldc + n;
        const old = beta === 0 ? 0 : C0[at];
        const want = alpha * sum + beta * old;
        const err = Math.abs(C[at] - want) / (Math.abs(alpha) * mag + Math.abs(beta * old) + 1e-30);
        worst = Number.isNaN(err) ? Infinity : Math.max(worst, err);
      }
    }
  }
  return worst;
}

// info()
const info = native.info();
check(info.version === 4, 'info().version is 4');
check(['avx512', 'avx2', 'portable'].includes(info.isa), `info().isa is "${info.isa}"`);
check(Number.isInteger(info.threads) && info.threads >= 1, 'info().threads is a positive integer');
console.log(`[${process.env.QKD_ISA}] info: ${JSON.stringify(info)}`);

// sgemm on subarrays of one arena (non-zero byteOffset), every transpose, booleans and 0/1 flags.
for (const [M, N, K] of [[1, 1, 1], [3, 5, 7], [17, 33, 13], [65, 31, 129], [1, 300, 5], [130, 70, 200]]) {
  for (let t = 0; t < 4; t += 1) {
    const ta = (t & 1) === 1;
    const tb = (t & 2) === 2;
    const batch = 3;
    const lda = (ta ? M : K) + 2;
    const ldb = (tb ? K : N) + 1;
    const ldc = N + 3;
    const sA = (ta ? K : M) * lda;
    const sB = 0; // B shared across the batch
    const sC = M * ldc + 5;
    const arena = randomArray(7 + batch * sA + (ta ? K : M) * 0 + 11 + (tb ? N : K) * ldb + 13 + batch * sC);
    const A = arena.subarray(7, 7 + batch * sA);
    const B = arena.subarray(7 + batch * sA + 11, 7 + batch * sA + 11 + (tb ? N : K) * ldb);
    const C = arena.subarray(arena.length - batch * sC);
    const [alpha, beta] = [[1, 0], [0.5, -2], [-2, 1], [1, 0.5]][t];
    if (beta === 0) C.fill(NaN);
    const C0 = Float32Array.from(C);
    const flagA = t % 2 === 0 ? ta : Number(ta);
    const flagB = t < 2 ? tb : Number(tb);
    native.sgemm(batch, flagA, flagB, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC);
    const err = sgemmError(batch, ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C0, C, ldc, sC);
    check(err < 1e-5, `sgemm ${M}x${N}x${K} ta=${ta} tb=${tb} alpha=${alpha} beta=${beta}: error ${err}`);
    // The padding columns between rows of C are untouched.
    let untouched = true;
    for (let i = 0; i < batch; i += 1)
      for (let m = 0; m < M; m += 1)
        for (let n = N; n < ldc; n += 1) {
          const at = i * sC + m * ldc + n;
          if (!(Object.is(C[at], C0[at]) || (Number.isNaN(C[at]) && Number.isNaN(C0[at])))) untouched = false;
        }
    check(untouched, `sgemm ${M}x${N}x${K} leaves C's padding alone`);
  }
}

// Large enough to use the thread pool.
{
  const [M, N, K] = [200, 300, 150];
  const A = randomArray(M * K), B = randomArray(K * N), C = new Float32Array(M * N);
  native.sgemm(1, 0, 0, M, N, K, 1, A, K, 0, B, N, 0, 0, C, N, 0);
  const err = sgemmError(1, false, false, M, N, K, 1, A, K, 0, B, N, 0, 0, C, C, N, 0);
  check(err < 1e-5, `sgemm threaded 200x300x150: error ${err}`);
}

// K = 0 scales C; M = 0 and batch = 0 are no-ops even with empty buffers.
{
  const C = Float32Array.from([1, 2, 3, 4]);
  native.sgemm(1, 0, 0, 2, 2, 0, 1, new Float32Array(0), 0, 0, new Float32Array(0), 2, 0, 0.5, C, 2, 4);
  check(C.join() === '0.5,1,1.5,2', `sgemm K=0 gives beta*C, got ${C.join()}`);
  native.sgemm(1, 0, 0, 0, 5, 5, 1, new Float32Array(0), 5, 0, new Float32Array(0), 5, 0, 0, new Float32Array(0), 5, 0);
  native.sgemm(0, 0, 0, 5, 5, 5, 1, new Float32Array(0), 5, 0, new Float32Array(0), 5, 0, 0, new Float32Array(0), 5, 0);
  check(true, 'sgemm no-op calls');
}

// Errors name the function and the argument.
{
  const A = new Float32Array(12 * 10), B = new Float32Array(10 * 10), C = new Float32Array(100);
  expectThrow(() => native.sgemm(1, 0, 0, 12, 10, 10, 1, A, 10, 0, B, 10, 0, 0, C, 10, 0),
    /^qkd_native\.sgemm: argument C \(Float32Array\) has 100 elements, needs at least 120$/, 'short C');
  expectThrow(() => native.sgemm(2, 0, 0, 10, 10, 10, 1, A, 10, 100, B, 10, 0, 0, new Float32Array(200), 10, 100),
    /^qkd_native\.sgemm: argument A \(Float32Array\) has 120 elements, needs at least 200$/, 'short A');
  expectThrow(() => native.sgemm(1, 0, 1, 10, 10, 10, 1, A, 10, 0, B.subarray(1), 10, 0, 0, C, 10, 0),
    /argument B \(Float32Array\) has 99 elements, needs at least 100/, 'short B subarray');
  expectThrow(() => native.sgemm(1, 0, 0, 10, 10, 10, 1, new Float64Array(100), 10, 0, B, 10, 0, 0, C, 10, 0),
    /^qkd_native\.sgemm: argument A must be a Float32Array$/, 'Float64Array A');
  expectThrow(() => native.sgemm(1, 2, 0, 10, 10, 10, 1, A, 10, 0, B, 10, 0, 0, C, 10, 0),
    /argument transA must be a boolean or 0\/1/, 'transA = 2');
  expectThrow(() => native.sgemm(1, 0, 0, 10.5, 10, 10, 1, A, 10, 0, B, 10, 0, 0, C, 10, 0),
    /argument M must be a non-negative integer/, 'M = 10.5');
  expectThrow(() => native.sgemm(1, 0, 0, 10, 10, 10, 1, A, 9, 0, B, 10, 0, 0, C, 10, 0),
    /argument lda is 9, must be at least 10/, 'lda too small');
  expectThrow(() => native.sgemm(1, 0, 0), /^qkd_native\.sgemm: expected 17 arguments, got 3$/, 'argument count');
  expectThrow(() => native.softmaxForward(new Float32Array(5), new Float32Array(6), 2, 3),
    /^qkd_native\.softmaxForward: argument x \(Float32Array\) has 5 elements, needs at least 6$/, 'short x');
  const buffer = new Float32Array(10);
  expectThrow(() => native.softmaxForward(buffer.subarray(0, 6), buffer.subarray(2, 8), 2, 3),
    /softmaxForward: arguments x and y overlap/, 'partially overlapping x and y');
  expectThrow(() => native.softmaxBackward(new Float32Array(6), new Float32Array(6), new Float32Array(4), 2, 3),
    /^qkd_native\.softmaxBackward: argument dx \(Float32Array\) has 4 elements, needs at least 6$/, 'short dx');
}

// softmax forward: subarrays, in place, a row of -Infinity.
{
  const rows = 4, cols = 37;
  const arena = randomArray(3 + 2 * rows * cols);
  for (let i = 0; i < arena.length; i += 1) arena[i] *= 20;
  const x = arena.subarray(3, 3 + rows * cols);
  for (let c = 0; c < cols; c += 1) x[2 * cols + c] = -Infinity;
  x[1 * cols + 5] = -Infinity;
  const x0 = Float32Array.from(x);
  const y = arena.subarray(3 + rows * cols);
  native.softmaxForward(x, y, rows, cols);
  let worst = 0;
  let zeros = true;
  for (let r = 0; r < rows; r += 1) {
    const row = Array.from(x0.subarray(r * cols, (r + 1) * cols));
    const max = Math.max(...row);
    if (max === -Infinity) {
      for (let c = 0; c < cols; c += 1) zeros = zeros && y[r * cols + c] === 0;
      continue;
    }
    const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
    for (let c = 0; c < cols; c += 1) {
      const want = Math.exp(row[c] - max) / sum;
      if (want > 1e-30) worst = Math.max(worst, Math.abs(y[r * cols + c] - want) / want - Math.abs(row[c] - max) * 2 ** -24);
    }
  }
  check(worst < 1e-6, `softmaxForward error ${worst}`);
  check(zeros, 'softmaxForward: a row of -Infinity gives zeros');
  const inPlace = Float32Array.from(x0);
  native.softmaxForward(inPlace, inPlace, rows, cols);
  check(inPlace.every((v, i) => Object.is(v, y[i])), 'softmaxForward in place matches out of place');

  // backward accumulates into dx
  const dy = randomArray(rows * cols);
  const dx = randomArray(rows * cols);
  const dx0 = Float32Array.from(dx);
  native.softmaxBackward(y, dy, dx, rows, cols);
  let worstBack = 0;
  for (let r = 0; r < rows; r += 1) {
    let dot = 0;
    for (let c = 0; c < cols; c += 1) dot += y[r * cols + c] * dy[r * cols + c];
    for (let c = 0; c < cols; c += 1) {
      const i = r * cols + c;
      const want = dx0[i] + y[i] * (dy[i] - dot);
      worstBack = Math.max(worstBack, Math.abs(dx[i] - want) / (Math.abs(dx0[i]) + y[i] * (Math.abs(dy[i]) + 1) + 1e-30));
    }
  }
  check(worstBack < 1e-6, `softmaxBackward error ${worstBack}`);
}

finish();

/**
 * The kernel interface both backends implement. Kernels work on raw float
 * buffers with explicit sizes; shapes, autograd and validation stay in the
 * ops that call them. Backward kernels ADD into gradient buffers. A
 * zero-length buffer passed for an optional output means "skip it".
 *
 * Legend: rows × cols contiguous rows; B batch, T time, H heads, D head dim,
 * V vocab, BH = B·H attention blocks of [T, S] scores.
 */
import type { FloatArray } from './tensor.js';

export type BackendName = 'reference' | 'native';

/**
 * Batched strided GEMM, row-major: for i < batch,
 * C_i = alpha · op(A_i) · op(B_i) + beta · C_i, with A_i = a[i·strideA ..].
 * op(A) is M×K: op(A)[m,k] = transA ? A[k·lda + m] : A[m·lda + k].
 * op(B) is K×N: op(B)[k,n] = transB ? B[n·ldb + k] : B[k·ldb + n].
 * beta = 0 overwrites C without reading it. A stride of 0 shares an operand.
 */
export interface GemmArgs {
  batch: number;
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  a: FloatArray;
  lda: number;
  strideA: number;
  b: FloatArray;
  ldb: number;
  strideB: number;
  beta: number;
  c: FloatArray;
  ldc: number;
  strideC: number;
}

/**
 * C (+)= op(A) · bf16(op(B)) for the profiler and frozen bf16 Linears: A
 * holds raw bfloat16 bits (a weight as most checkpoints store it),
 * op(A)[m,k] = transA ? A[k·lda + m] : A[m·lda + k]; op(B) is K×N float32
 * (B itself N×K with transB; ldb), rounded to bf16 (nearest even) before
 * multiplying; C is M×N float32 (ldc; N×M with transC), overwritten (never
 * read) or, with `accumulate`, added to. The products are exact in float32
 * and summed in float32 (the reference sums in float64).
 */
export interface Bf16GemmArgs {
  transA: boolean;
  M: number;
  N: number;
  K: number;
  a: Uint16Array;
  lda: number;
  b: Float32Array;
  ldb: number;
  c: Float32Array;
  ldc: number;
  accumulate?: boolean;
  /** op(B) = Bᵀ: b holds N×K (default false: K×N). */
  transB?: boolean;
  /** The M×N result is stored transposed, N×M with leading dimension ldc (default false). */
  transC?: boolean;
}

/** The forward and backward passes of the ops (tensor/ops/*) and of fake quantization. */
export interface TrainingKernels {
  sgemm(p: GemmArgs): void;
  /** y[r,:] = softmax(x[r,:]); a row of all −Inf gives zeros (a NaN in a row makes it NaN). x may equal y. */
  softmaxForward(x: FloatArray, y: FloatArray, rows: number, cols: number): void;
  /** dx[r,c] += y[r,c]·(dy[r,c] − Σ_c' y[r,c']·dy[r,c']). */
  softmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, rows: number, cols: number): void;
  /**
   * Causal softmax over [BH, T, S] scores: row t keeps columns j ≤ offset + t
   * (offset = S − T), the rest become 0 and are never read. x may equal y.
   */
  causalSoftmaxForward(x: FloatArray, y: FloatArray, BH: number, T: number, S: number, offset: number): void;
  /**
   * Backward of causalSoftmaxForward over the kept columns. accumulate = false
   * writes dx (masked columns 0; dx may equal dy); true adds into dx.
   */
  causalSoftmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, BH: number, T: number, S: number, offset: number, accumulate: boolean): void;
  /** y = x / sqrt(mean(x²) + eps) · w per row; rstd[r] = 1/rms. */
  rmsnormForward(x: FloatArray, w: FloatArray, y: FloatArray, rstd: FloatArray, rows: number, cols: number, eps: number): void;
  /** s = x + delta (stored; s may be x or delta), then rmsnormForward(s, w, y, rstd): the residual add and the next norm in one pass. */
  addRmsnormForward(x: FloatArray, delta: FloatArray, s: FloatArray, w: FloatArray, y: FloatArray, rstd: FloatArray, rows: number, cols: number, eps: number): void;
  /** dx += s·g − s³·x·(g·x)/cols with g = dy⊙w; dw += Σ_rows dy·x·s. dx or dw may be empty. */
  rmsnormBackward(x: FloatArray, w: FloatArray, rstd: FloatArray, dy: FloatArray, dx: FloatArray, dw: FloatArray, rows: number, cols: number): void;
  /** y = silu(gate)·up. */
  swigluForward(gate: FloatArray, up: FloatArray, y: FloatArray, n: number): void;
  /** dgate += dy·up·silu'(gate); dup += dy·silu(gate). Either may be empty. */
  swigluBackward(gate: FloatArray, up: FloatArray, dy: FloatArray, dgate: FloatArray, dup: FloatArray, n: number): void;
  /**
   * Rotates pairs of src [B,T,H,D] into dst by ±angle: cos/sin are [T, D/2]
   * tables; style 0 pairs (i, i+D/2), 1 pairs (2i, 2i+1).
   */
  rope(src: FloatArray, dst: FloatArray, cos: FloatArray, sin: FloatArray, B: number, T: number, H: number, D: number, style: 0 | 1, direction: 1 | -1, accumulate: boolean): void;
  /** lse[r] = log Σ exp(z[r,:]) for counted rows; returns Σ (lse − z[target]). */
  crossEntropyForward(logits: FloatArray, targets: Int32Array, lse: FloatArray, rows: number, V: number, ignoreIndex: number): number;
  /** dz[r,:] += scale·softmax(z[r,:]); dz[r,target] −= scale, for counted rows. */
  crossEntropyBackward(logits: FloatArray, targets: Int32Array, lse: FloatArray, dz: FloatArray, rows: number, V: number, ignoreIndex: number, scale: number): void;
  /** Per row at temperature 1/invTau: lseT, lseS and KL(pT ‖ pS); returns Σ KL. */
  klForward(zT: FloatArray, zS: FloatArray, lseT: FloatArray, lseS: FloatArray, rowKl: FloatArray, rows: number, V: number, invTau: number): number;
  /** dS += g·(pS − pT); dT += g·pT·(log pT − log pS − KL_row). Either may be empty. */
  klBackward(zT: FloatArray, zS: FloatArray, lseT: FloatArray, lseS: FloatArray, rowKl: FloatArray, dT: FloatArray, dS: FloatArray, rows: number, V: number, invTau: number, g: number): void;
  /**
   * Uniform affine fake quantization of w viewed as [rows, cols] (docs/algorithms.md §2):
   * granularity 0 one group, 1 per row, 2 runs of groupSize columns per row.
   * mask[i] = 1 where the straight-through gradient passes (empty: skip).
   * out may equal w.
   */
  fakeQuantForward(w: FloatArray, out: FloatArray, mask: Uint8Array, rows: number, cols: number, bits: number, symmetric: boolean, granularity: 0 | 1 | 2, groupSize: number, clipRatio: number): void;
  /** dw[i] += mask[i] ? dy[i] : 0. */
  fakeQuantBackward(dy: FloatArray, mask: Uint8Array, dw: FloatArray, n: number): void;
  /**
   * Selective scan of the state-space mixer (reference/ssm.ts, docs/mohawk.md):
   * x [B,T,H,P], b and c [B,T,H,N], logit [B,T,H] (decay a = σ(−logit)) → y
   * [B,T,H,P]; states [B,H,ceil(T/L),N,P] gets the state entering each chunk of L steps.
   */
  ssmScanForward(x: FloatArray, b: FloatArray, c: FloatArray, logit: FloatArray, y: FloatArray, states: FloatArray, B: number, T: number, H: number, P: number, N: number, L: number): void;
  /** Backward of ssmScanForward from dy, adding into dx, db, dc, dlogit (any may be empty). */
  ssmScanBackward(x: FloatArray, b: FloatArray, c: FloatArray, logit: FloatArray, states: FloatArray, dy: FloatArray, dx: FloatArray, db: FloatArray, dc: FloatArray, dlogit: FloatArray, B: number, T: number, H: number, P: number, N: number, L: number): void;
  /** The scan's mixing matrix m [B,H,T,T]: m[t,s] = (c_t·b_s)·∏_{k=s+1..t} a_k for s ≤ t, else 0. */
  ssmMatrixForward(b: FloatArray, c: FloatArray, logit: FloatArray, m: FloatArray, B: number, T: number, H: number, N: number): void;
  /** Backward of ssmMatrixForward from dm, adding into db, dc, dlogit (any may be empty). */
  ssmMatrixBackward(b: FloatArray, c: FloatArray, logit: FloatArray, m: FloatArray, dm: FloatArray, db: FloatArray, dc: FloatArray, dlogit: FloatArray, B: number, T: number, H: number, N: number): void;
  /** Depthwise causal convolution: y[t,ch] = bias[ch] + Σ_j w[ch,j]·x[t−K+1+j, ch]; x, y [B,T,C], w [C,K], bias [C] or empty. */
  causalConvForward(x: FloatArray, w: FloatArray, bias: FloatArray, y: FloatArray, B: number, T: number, C: number, K: number): void;
  /** Backward of causalConvForward, adding into dx, dw, dbias (any may be empty). */
  causalConvBackward(x: FloatArray, w: FloatArray, dy: FloatArray, dx: FloatArray, dw: FloatArray, dbias: FloatArray, B: number, T: number, C: number, K: number): void;
  /**
   * Fused attention (reference/attention.ts, docs/attention.md): o [B,T,H,D]
   * = softmax(cap(scale·q·kᵀ) + mask)·v for q [B,T,H,D], k and v [B,S,G,D]
   * (query head h reads kv head h / (H/G)) without the [B,H,T,S] maps; lse
   * [B,H,T] gets each row's log-sum-exp for the backward. Query t sits at
   * position S − T + t; causal hides later keys, window W > 0 (causal only)
   * keys W or more positions back; softcap c > 0 caps the scaled scores at
   * c·tanh(x/c), 0 disables it. A row that sees no key gets o = 0, lse = −∞.
   */
  attentionFusedForward(q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, B: number, T: number, S: number, H: number, G: number, D: number, causal: boolean, scale: number, window: number, softcap: number): void;
  /** Backward of attentionFusedForward from dO (o and lse its outputs), adding into dq, dk, dv (any may be empty). */
  attentionFusedBackward(q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, dO: FloatArray, dq: FloatArray, dk: FloatArray, dv: FloatArray, B: number, T: number, S: number, H: number, G: number, D: number, causal: boolean, scale: number, window: number, softcap: number): void;
  /** dst += src. */
  addInto(dst: FloatArray, src: FloatArray, n: number): void;
  /** out = a + b (out may alias a or b). */
  add(a: FloatArray, b: FloatArray, out: FloatArray, n: number): void;
}

/** The optimizer step. */
export interface OptimizerKernels {
  /** Σ x² over x[0, n) in float64 (the native kernel sums fixed chunks in order: the same for any thread count). */
  sumSquares(x: FloatArray, n: number): number;
  /** x[i] *= s for i < n, s rounded to float32 first. */
  scaleInPlace(x: FloatArray, n: number, s: number): void;
  /** AdamW on n parameters: m, v moments; w = w·shrink − lr·(m·c1)/(sqrt(v·c2) + eps). */
  adamw(w: FloatArray, g: FloatArray, m: FloatArray, v: FloatArray, n: number, lr: number, beta1: number, beta2: number, eps: number, shrink: number, c1: number, c2: number): void;
}

/** What data-free profiling (swan/) reads a weight with. */
export interface ProfilerKernels {
  /** See Bf16GemmArgs. */
  bf16Gemm(p: Bf16GemmArgs): void;
  /**
   * One read of a weight w [rows, cols] for the profiler. rowMin/rowMax get
   * each row's extremes (NaN skipped). totals (6 float64) get, with
   * d = w − shift: Σd, Σd², Σd³, Σd⁴, Σw², and Σ(ŵ − w)² with ŵ the per-row
   * `bits`-bit asymmetric quantize-dequantize of fakeQuantForward
   * (granularity 1, clip 1; bits 0 skips it and gives 0).
   */
  weightStats(w: Float32Array, rows: number, cols: number, bits: number, shift: number, rowMin: Float32Array, rowMax: Float32Array, totals: Float64Array): void;
  /** weightStats of a weight given as raw bfloat16 bits. */
  weightStatsBf16(w: Uint16Array, rows: number, cols: number, bits: number, shift: number, rowMin: Float32Array, rowMax: Float32Array, totals: Float64Array): void;
  /**
   * The `count` largest eigenvalues of the symmetric n×n row-major a (lower
   * triangle read, a kept) into out[0, count), descending. Throws for a
   * matrix that is not finite.
   */
  symmetricEigenvalues(a: Float64Array, n: number, count: number, out: Float64Array): void;
  /**
   * n standard normals into out[0, n), advancing the generator state (the
   * four words of an Rng) and its cached second value (spare[0] 1 or 0,
   * spare[1]) exactly as n calls of Rng.normal() would (Rng.fillNormal).
   * The native kernel's log, sin and cos are the C library's, so a value
   * may differ from the reference's in the last bit.
   */
  normalFill(state: Uint32Array, spare: Float64Array, out: Float64Array, n: number): void;
  /**
   * The profiler's Krylov start block out [n, width] (row-major): in each
   * row `gaussian` standard normals, then width − gaussian signs ±1, one
   * Rng.nextUint32() word per 32 signs, bit 0 first (no bits carried over
   * from an earlier call); the generator state and cached normal advance as
   * that loop of Rng.normal() and Rng.nextUint32() calls would move them.
   * Normals as in normalFill (rounded to float32, so a last-bit difference
   * of the C library's log, sin or cos almost never shows).
   */
  /**
   * Pivoted Cholesky of the symmetric positive semi-definite n×n `a`
   * (lower triangle read) and the inverse of its factor, as
   * tensor/factor.ts's pivotedCholesky then invertLower compute them (the
   * native kernel does the same float64 operations in the same order):
   * returns r, the number of columns taken; order[0, r) gets them (in pivot
   * order), diag[0, r) the factor's diagonal, inverse[0, r²) L⁻¹ (r×r).
   */
  pivotedCholeskyInverse(a: Float64Array, n: number, scale: Float64Array, tolerance: number, order: Float64Array, diag: Float64Array, inverse: Float64Array): number;
  startBlockFill(state: Uint32Array, spare: Float64Array, out: Float32Array, n: number, width: number, gaussian: number): void;
  /**
   * Starts the eigen-solves of several symmetric float32 matrices and
   * returns a handle for eigenBatchWait: matrix i is the next sizes[i]²
   * values of `a` (copied, so `a` may be reused at once; only the lower
   * triangle is read), its counts[i] largest eigenvalues are wanted and,
   * when heads[i] + tails[i] > 0 (at most sizes[i]), rows [0, heads[i]) and
   * [n − tails[i], n) of the unit eigenvectors of those
   * eigenvalues (their signs are arbitrary). The native kernel runs the job on a
   * thread of its own, one matrix per pool thread, each reduced to
   * tridiagonal form in float32 (the rounding a Gram matrix summed in
   * float32 already has), while the caller goes on; the reference solves
   * at once in float64.
   */
  eigenBatchStart(a: Float32Array, sizes: Int32Array, counts: Int32Array, heads: Int32Array, tails: Int32Array): number;
  /**
   * Waits for a job of eigenBatchStart and writes its results to out,
   * matrix after matrix: counts[i] eigenvalues, descending, then the
   * heads[i] + tails[i] eigenvector rows (row-major, counts[i] columns, in
   * the eigenvalues' order). Throws for an unknown handle and
   * for a matrix that is not finite. Every handle must be waited for once.
   */
  eigenBatchWait(handle: number, out: Float64Array): void;
  /**
   * ‖Q_b(w) − w‖_F / ‖w‖_F of round-to-nearest quantization of w [rows, cols]
   * at each width b of `bits` (2..8, at most 16 of them) into out, in one
   * pass (reference/rtn-error.ts defines the grid). Returns −1, the index of
   * the first NaN weight, or −2 when a scale exceeds the f16 range.
   */
  rtnErrors(w: Float32Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number;
  /** rtnErrors of a weight given as raw bfloat16 bits. */
  rtnErrorsBf16(w: Uint16Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number;
  /**
   * rtnErrors as a background job: returns a handle for backgroundWait,
   * which returns what rtnErrors would and fills `out`. The native kernel
   * queues the job for its idle-priority background thread, which works on
   * it while a core is idle; backgroundWait runs what is left on the pool.
   * `w` and `out` must stay alive and unchanged until then. The reference
   * computes at once.
   */
  rtnErrorsStart(w: Float32Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number;
  /** rtnErrorsStart of a weight given as raw bfloat16 bits. */
  rtnErrorsBf16Start(w: Uint16Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number;
  /** Completes a background job and returns its result. Throws for an unknown handle; every handle must be waited for once. */
  backgroundWait(handle: number): number;
  /**
   * A bf16 weight [rows, cols] (multiples of 4) to int8, one scale per row
   * or column, in the two quad layouts of the Krylov pass's int8 products
   * (reference/int8-gemm.ts). Returns the relative squared error, or −1.
   */
  int8Quantize(w: Uint16Array, rows: number, cols: number, perRow: boolean, byRows: Uint8Array, byCols: Uint8Array, scales: Float32Array): number;
  /** C = rowScale ⊙ (A · (fold ⊙ B)) for a quad layout of int8Quantize (reference/int8-gemm.ts); the outlier count, or −1. */
  int8Gemm(a: Uint8Array, stride: number, m: number, n: number, k: number, fold: Float32Array | null, b: Float32Array, ldb: number, rowScale: Float32Array | null, c: Float32Array, ldc: number): number;
  /** 1 when int8Gemm runs on a vector unit made for it (AVX-512 VNNI), else 0 (the reference: 0). */
  int8GemmFast(): number;
}

/** Number formats: bfloat16 conversion and DBWA packing (sat/dbwa.ts). */
export interface CodecKernels {
  /** dst[i] = bfloat16 bits of src[i], i < n (nearest even, NaN stays a quiet NaN, subnormals kept). */
  f32ToBf16(src: Float32Array, dst: Uint16Array, n: number): void;
  /** dst[i] = the bfloat16 bits src[i] as float32, i < n (a shift; src and dst disjoint). */
  bf16ToF32(src: Uint16Array, dst: Float32Array, n: number): void;
  /** dst[i] = the IEEE half src[i] as float32, i < n (exact; src and dst disjoint). */
  f16ToF32(src: Uint16Array, dst: Float32Array, n: number): void;
  /**
   * DBWA packing (formats in sat/dbwa.ts, algorithm in
   * reference/dbwa-codec.ts): src at tier 8, 12 or 16 into storage (codes,
   * then the block scale bytes), stochastic rounding from the four xorshift128
   * seed words (not all zero), round to nearest even with null. Returns −1,
   * or the index of a non-finite value (storage then partly written).
   */
  dbwaEncode(tier: number, src: Float32Array, storage: Uint8Array, seed: Uint32Array | null): number;
  /** Unpacks dbwaEncode's storage at `tier` into dst (dst.length values). */
  dbwaDecode(tier: number, storage: Uint8Array, dst: Float32Array): void;
}

/** Every kernel a backend implements, by concern. */
export interface Kernels extends TrainingKernels, OptimizerKernels, ProfilerKernels, CodecKernels {
  readonly name: BackendName;
}

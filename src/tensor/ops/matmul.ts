/**
 * Matrix products on the backend's GEMM.
 *
 * matmul(a, b): a [...batch, M, K] (or [..., K, M] with transA), b [...batch,
 * K, N] (or [..., N, K] with transB) → [...batch, M, N]. Batch dims must be
 * equal, or one operand may have none (it is shared across the batch).
 * linear(x, W): x [..., in] · Wᵀ with W [out, in] (Hugging Face layout).
 */
import { QkdError, fmtShape } from '../../errors.js';
import { kernels } from '../backend.js';
import { gradEnabled, record } from '../tape.js';
import { Tensor, allocUninitialized, type FloatArray } from '../tensor.js';
import { add } from './elementwise.js';
import { reshape as reshapeView } from './shape.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

interface Operand {
  rows: number; // stored rows of one matrix
  cols: number; // stored cols
  batchShape: number[];
  batch: number;
}

function operand(op: string, t: Tensor, side: string): Operand {
  if (t.rank < 2) throw new QkdError('SHAPE', `${op}: operand ${side} must have at least 2 dims, got ${fmtShape(t.shape)}`);
  const batchShape = t.shape.slice(0, -2);
  return { rows: t.shape[t.rank - 2]!, cols: t.shape[t.rank - 1]!, batchShape, batch: batchShape.reduce((x, y) => x * y, 1) };
}

export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const A = operand('matmul', a, 'a');
  const B = operand('matmul', b, 'b');
  const M = transA ? A.cols : A.rows;
  const K = transA ? A.rows : A.cols;
  const KB = transB ? B.cols : B.rows;
  const N = transB ? B.rows : B.cols;
  if (K !== KB) {
    throw new QkdError('SHAPE', `matmul: inner dimensions differ: a ${fmtShape(a.shape)}${transA ? 'ᵀ' : ''} has K=${K}, b ${fmtShape(b.shape)}${transB ? 'ᵀ' : ''} has K=${KB}`);
  }
  const aBatched = A.batchShape.length > 0;
  const bBatched = B.batchShape.length > 0;
  if (aBatched && bBatched && (A.batchShape.length !== B.batchShape.length || A.batchShape.some((d, i) => d !== B.batchShape[i]))) {
    throw new QkdError('SHAPE', `matmul: batch dimensions differ: a ${fmtShape(a.shape)} vs b ${fmtShape(b.shape)}`, {
      hint: 'equal batch dims, or one operand without batch dims',
    });
  }
  const batchShape = aBatched ? A.batchShape : B.batchShape;
  const batch = aBatched ? A.batch : B.batch;
  // Every element is written by the GEMM (beta 0), so the buffer need not be zeroed first.
  const out = new Tensor([...batchShape, M, N], allocUninitialized(batch * M * N));
  const sA = aBatched ? A.rows * A.cols : 0;
  const sB = bBatched ? B.rows * B.cols : 0;
  const k = kernels();
  if (aBatched && !bBatched && !transA) {
    // Shared B: fold the batch into M for one large GEMM.
    k.sgemm({ batch: 1, transA: false, transB, M: batch * M, N, K, alpha: 1, a: a.data, lda: A.cols, strideA: 0, b: b.data, ldb: B.cols, strideB: 0, beta: 0, c: out.data, ldc: N, strideC: 0 });
  } else {
    k.sgemm({ batch, transA, transB, M, N, K, alpha: 1, a: a.data, lda: A.cols, strideA: sA, b: b.data, ldb: B.cols, strideB: sB, beta: 0, c: out.data, ldc: N, strideC: M * N });
  }
  return record(out, 'matmul', [a, b], (dC) => {
    const kb = kernels();
    if (a.requiresGrad) matmulGradA(a.ensureGrad(), dC, b.data, { transA, transB, M, N, K, batch, aBatched, sA, sB, lda: A.cols, ldb: B.cols }, kb.sgemm);
    if (b.requiresGrad) matmulGradB(b.ensureGrad(), dC, a.data, { transA, transB, M, N, K, batch, bBatched, sA, sB, lda: A.cols, ldb: B.cols }, kb.sgemm);
  });
}

interface GradDims {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  batch: number;
  sA: number;
  sB: number;
  lda: number;
  ldb: number;
}

type Sgemm = ReturnType<typeof kernels>['sgemm'];

/**
 * dA += dC · op(B)ᵀ (stored as A is: transposed when transA). When A is
 * shared across the batch, the per-batch products are summed (beta = 1 in
 * sequence, or one folded GEMM).
 */
function matmulGradA(dA: FloatArray, dC: FloatArray, bData: FloatArray, d: GradDims & { aBatched: boolean }, sgemm: Sgemm): void {
  const { transA, transB, M, N, K, batch, sB, lda, ldb } = d;
  const strideA = d.aBatched ? d.sA : 0;
  const runs = d.aBatched ? [{ batch, first: 0 }] : Array.from({ length: batch }, (_, i) => ({ batch: 1, first: i }));
  for (const run of runs) {
    const dCOff = run.first * M * N;
    const bOff = run.first * sB;
    const dCv = dC.subarray(dCOff);
    const bv = bData.subarray(bOff);
    if (!transA) {
      // dA[M,K] += dC[M,N] · op(B)ᵀ[N,K]
      sgemm({ batch: run.batch, transA: false, transB: !transB, M, N: K, K: N, alpha: 1, a: dCv, lda: N, strideA: M * N, b: bv, ldb, strideB: sB, beta: 1, c: dA, ldc: lda, strideC: strideA });
    } else {
      // dA is stored [K,M]: dAᵀ = op(B)[K,N] · dCᵀ[N,M]
      sgemm({ batch: run.batch, transA: transB, transB: true, M: K, N: M, K: N, alpha: 1, a: bv, lda: ldb, strideA: sB, b: dCv, ldb: N, strideB: M * N, beta: 1, c: dA, ldc: lda, strideC: strideA });
    }
  }
}

/** dB += op(A)ᵀ · dC (stored as B is), summed over the batch when B is shared. */
function matmulGradB(dB: FloatArray, dC: FloatArray, aData: FloatArray, d: GradDims & { bBatched: boolean }, sgemm: Sgemm): void {
  const { transA, transB, M, N, K, batch, sA, lda, ldb } = d;
  const strideB = d.bBatched ? d.sB : 0;
  if (!d.bBatched && !transA && batch > 1 && sA > 0) {
    // Shared B with a plain batched A: fold the batch into the reduction.
    const Mb = batch * M;
    if (!transB) sgemm({ batch: 1, transA: true, transB: false, M: K, N, K: Mb, alpha: 1, a: aData, lda, strideA: 0, b: dC, ldb: N, strideB: 0, beta: 1, c: dB, ldc: ldb, strideC: 0 });
    else sgemm({ batch: 1, transA: true, transB: false, M: N, N: K, K: Mb, alpha: 1, a: dC, lda: N, strideA: 0, b: aData, ldb: lda, strideB: 0, beta: 1, c: dB, ldc: ldb, strideC: 0 });
    return;
  }
  const runs = d.bBatched ? [{ batch, first: 0 }] : Array.from({ length: batch }, (_, i) => ({ batch: 1, first: i }));
  for (const run of runs) {
    const dCv = dC.subarray(run.first * M * N);
    const av = aData.subarray(run.first * sA);
    if (!transB) {
      // dB[K,N] += op(A)ᵀ[K,M] · dC[M,N]
      sgemm({ batch: run.batch, transA: !transA, transB: false, M: K, N, K: M, alpha: 1, a: av, lda, strideA: sA, b: dCv, ldb: N, strideB: M * N, beta: 1, c: dB, ldc: ldb, strideC: strideB });
    } else {
      // dB is stored [N,K]: dB = dCᵀ[N,M] · op(A)[M,K]
      sgemm({ batch: run.batch, transA: true, transB: transA, M: N, N: K, K: M, alpha: 1, a: dCv, lda: N, strideA: M * N, b: av, ldb: lda, strideB: sA, beta: 1, c: dB, ldc: ldb, strideC: strideB });
    }
  }
}

/** y = x · Wᵀ (+ bias): x [..., in], W [out, in], bias [out]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  if (weight.rank !== 2) throw new QkdError('SHAPE', `linear: weight must be 2-D [out, in], got ${fmtShape(weight.shape)}`);
  const inF = weight.shape[1]!;
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF) {
    throw new QkdError('SHAPE', `linear: input ${fmtShape(x.shape)} does not end in ${inF} (weight ${fmtShape(weight.shape)})`);
  }
  const rows = x.size / Math.max(inF, 1);
  const x2 = x.rank === 2 ? x : reshapeView(x, [rows, inF]);
  let y = matmul(x2, weight, { transB: true });
  if (bias !== undefined) y = add(y, bias);
  return x.rank === 2 ? y : reshapeView(y, [...x.shape.slice(0, -1), weight.shape[0]!]);
}

/**
 * y = x · Wᵀ (+ bias) with W given as bfloat16 bits [out, in], for frozen
 * weights outside autograd (a teacher's forward; no gradient is recorded):
 * the bf16 GEMM reads W as stored and rounds x to bf16, so the result
 * equals the float32 product with x rounded to bf16, up to summation order.
 * x [..., in] → [..., out].
 */
export function linearBf16(x: Tensor, w: Uint16Array, outF: number, inF: number, bias?: Tensor): Tensor {
  if (gradEnabled()) throw new QkdError('STATE', 'linearBf16 runs frozen weights outside autograd (in noGrad)');
  if (w.length !== outF * inF || x.shape[x.rank - 1] !== inF) throw new QkdError('SHAPE', `linearBf16: input ${fmtShape(x.shape)} and a [${outF}, ${inF}] weight of ${w.length} values do not fit`);
  const rows = x.size / inF;
  // bf16Gemm computes C = A · op(B) with A the bf16 operand: yᵀ [out, rows] = W [out, in] · xᵀ [in, rows], reading x
  // as stored (transB) and writing yᵀ transposed, that is y as stored (transC); the GEMM writes every element of y.
  const y = new Tensor([...x.shape.slice(0, -1), outF], allocUninitialized(rows * outF));
  kernels().bf16Gemm({ transA: false, transB: true, transC: true, M: outF, N: rows, K: inF, a: w, lda: inF, b: x.data as Float32Array, ldb: inF, c: y.data as Float32Array, ldc: outF });
  const b = bias?.data;
  if (b !== undefined) {
    const Y = y.data;
    for (let r = 0; r < rows; r++) for (let o = 0; o < outF; o++) Y[r * outF + o]! += b[o]!;
  }
  return y;
}

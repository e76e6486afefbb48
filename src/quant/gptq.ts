/**
 * GPTQ (Frantar et al., 2022): quantize a weight column by column and
 * spread each column's rounding error over the columns not yet quantized,
 * weighted by the inverse Hessian of the layer's squared output error,
 * H = 2/N Σ x xᵀ over calibration inputs x. The output has the same form as
 * round-to-nearest (rtn.ts), so it packs and loads the same way.
 *
 * Legend: W [rows, cols] = [out, in]; H, U [cols, cols]; B the block size.
 *
 * Per column j (in quantization order): q_j = Q(w_j), e = (w_j − q_j)/U_jj,
 * w_k −= e·U_jk for the later columns k, where U is the upper Cholesky
 * factor of H⁻¹ (H⁻¹ = UᵀU). Updates inside a block of B columns are applied
 * at once; the rest of the matrix gets them lazily after the block as one
 * GEMM, W[:, after] −= E · U[block, after], on the backend's sgemm.
 *
 * Choices (as the paper's reference code unless noted):
 * - Dead columns (H_jj = 0, the input never fires): H_jj = 1 and the weight
 *   column is zeroed (it dequantizes to exact 0).
 * - Dampening: λ = dampening · mean(diag H) added to the diagonal. If H is
 *   still not positive definite (rank-deficient calibration data), λ is
 *   multiplied by 10 and the factorisation retried, up to 6 times, before
 *   failing. The reference simply fails.
 * - Per-channel and per-tensor scales come from the whole weight (dead
 *   columns already zeroed) before any update. Per-group scales are computed
 *   lazily from the current, error-updated weights when a group starts. To
 *   make "current" exact, blocks are aligned to groups (B is rounded down to
 *   a multiple of the group size, or raised to it); the reference reads
 *   stale columns when a group starts inside a block.
 * - actOrder (columns in order of decreasing H_jj): with groups, the scales
 *   are static (computed up front per contiguous group of the original
 *   columns), so the stored layout stays contiguous groups with no index
 *   tensor, like "static_groups" of later GPTQ implementations.
 * - Cholesky factorisation and triangular inverse in float64; the weights
 *   and the error block are float32 (as the reference on GPU).
 */
import { QkdError } from '../errors.js';
import { kernels } from '../tensor/backend.js';
import { checkQuantArgs, encode, groupParams, schemeGranularity, type QuantizedTensor } from './rtn.js';
import { groupsPerRow, type QuantScheme } from './scheme.js';

export interface GptqOptions {
  /** Columns per lazy-update block (default 128). */
  blockSize?: number;
  /** Diagonal dampening as a fraction of mean(diag H) (default 0.01). */
  dampening?: number;
  /** Quantize columns in order of decreasing H_jj (default false). */
  actOrder?: boolean;
}

const MAX_DAMPENING_RETRIES = 6;

/**
 * Upper-triangular U with H⁻¹ = UᵀU, or null when H (n×n, row-major) is not
 * positive definite. H = R Rᵀ with R upper (a Cholesky factorisation run
 * from the last row up), so H⁻¹ = R⁻ᵀR⁻¹ and U = R⁻¹: one factorisation and
 * one triangular inverse instead of inverting H and factorising again.
 */
export function inverseCholeskyUpper(h: Float64Array, n: number): Float64Array | null {
  const r = new Float64Array(n * n);
  for (let j = n - 1; j >= 0; j--) {
    const rowJ = j * n;
    let s = h[rowJ + j]!;
    for (let k = j + 1; k < n; k++) s -= r[rowJ + k]! * r[rowJ + k]!;
    if (!(s > 0) || !Number.isFinite(s)) return null;
    const rjj = Math.sqrt(s);
    r[rowJ + j] = rjj;
    for (let i = 0; i < j; i++) {
      const rowI = i * n;
      let t = h[rowI + j]!;
      for (let k = j + 1; k < n; k++) t -= r[rowI + k]! * r[rowJ + k]!;
      r[rowI + j] = t / rjj;
    }
  }
  // Row i of U solves u R = e_i: forward substitution kept as row updates (contiguous).
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const rowI = i * n;
    u[rowI + i] = 1;
    for (let j = i; j < n; j++) {
      const x = u[rowI + j]! / r[j * n + j]!;
      u[rowI + j] = x;
      if (x === 0) continue;
      const rowJ = j * n;
      for (let k = j + 1; k < n; k++) u[rowI + k]! -= x * r[rowJ + k]!;
    }
  }
  return u;
}

function checkGptqArgs(w: Float32Array, rows: number, cols: number, hessian: Float64Array, bits: number, scheme: QuantScheme, o: Required<GptqOptions>): void {
  checkQuantArgs('gptqQuantize', w.length, rows, cols, bits, scheme);
  if (hessian.length !== cols * cols) {
    throw new QkdError('SHAPE', `gptqQuantize: hessian has ${hessian.length} entries, expected cols² = ${cols * cols}`, { field: 'hessian' });
  }
  if (!Number.isInteger(o.blockSize) || o.blockSize < 1) throw new QkdError('ARGUMENT', `gptqQuantize: blockSize must be a positive integer, got ${o.blockSize}`, { field: 'blockSize' });
  if (!(o.dampening >= 0) || !Number.isFinite(o.dampening)) throw new QkdError('ARGUMENT', `gptqQuantize: dampening must be ≥ 0, got ${o.dampening}`, { field: 'dampening', hint: 'a fraction of mean(diag H) such as 0.01' });
  for (let i = 0; i < hessian.length; i++) {
    if (!Number.isFinite(hessian[i]!)) throw new QkdError('ARGUMENT', `gptqQuantize: hessian entry ${i} is ${hessian[i]}`, { field: 'hessian', hint: 'finite values' });
  }
}

/** Column order: identity, or decreasing H_jj (ties by index) for actOrder. */
function columnOrder(h: Float64Array, cols: number, actOrder: boolean): Int32Array {
  const perm = Int32Array.from({ length: cols }, (_, i) => i);
  if (actOrder) perm.sort((a, b) => h[b * cols + b]! - h[a * cols + a]! || a - b);
  return perm;
}

/** U for the permuted, dampened Hessian, raising the dampening until H is positive definite. */
function dampenedInverseFactor(h: Float64Array, perm: Int32Array, cols: number, dampening: number): Float64Array {
  const hp = new Float64Array(cols * cols);
  let meanDiag = 0;
  for (let i = 0; i < cols; i++) meanDiag += h[i * cols + i]! / cols;
  let damp = dampening * meanDiag;
  for (let attempt = 0; attempt <= MAX_DAMPENING_RETRIES; attempt++) {
    for (let i = 0; i < cols; i++) {
      const src = perm[i]! * cols;
      for (let j = 0; j < cols; j++) hp[i * cols + j] = h[src + perm[j]!]!;
      hp[i * cols + i]! += damp;
    }
    const u = inverseCholeskyUpper(hp, cols);
    if (u !== null) return u;
    damp = damp > 0 ? damp * 10 : Math.max(meanDiag, 1) * 1e-6;
  }
  throw new QkdError('ARGUMENT', 'gptqQuantize: the Hessian is not positive definite even after dampening', {
    field: 'hessian',
    hint: 'more calibration tokens, or a larger dampening',
  });
}

/** Min and max (both extended to include 0) of w[r, c0..c1) for a matrix with `cols` columns. */
function rangeOfColumns(w: Float32Array, cols: number, r: number, c0: number, c1: number, out: Float64Array): void {
  // Including 0 changes nothing: asymmetric ranges are extended to 0 anyway, symmetric uses max|w|.
  let lo = 0;
  let hi = 0;
  for (let i = r * cols + c0; i < r * cols + c1; i++) {
    const v = w[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  out[0] = lo;
  out[1] = hi;
}

/** Scales and zero points [rows, groups] being filled in as GPTQ goes. */
class GroupParams {
  readonly scales: Float32Array;
  readonly zeros: Uint8Array; // symmetric: the implicit 2^(b−1), dropped from the result
  private readonly range = new Float64Array(2);
  private readonly params = new Float64Array(2);

  constructor(
    rows: number,
    readonly groups: number,
    private readonly bits: number,
    private readonly symmetric: boolean,
  ) {
    this.scales = new Float32Array(rows * groups);
    this.zeros = new Uint8Array(rows * groups);
  }

  /** Sets group `group` of row r from the values w[r, c0..c1) of a matrix with `cols` columns. */
  fit(w: Float32Array, cols: number, r: number, group: number, c0: number, c1: number): void {
    rangeOfColumns(w, cols, r, c0, c1, this.range);
    groupParams(this.range[0]!, this.range[1]!, this.bits, this.symmetric, this.params);
    this.scales[r * this.groups + group] = this.params[0]!;
    this.zeros[r * this.groups + group] = this.params[1]!;
  }
}

/** Fits the parameters that do not wait for the error updates: per tensor, per channel, or static groups. */
function fitUpfront(params: GroupParams, w: Float32Array, rows: number, cols: number, scheme: QuantScheme): void {
  if (scheme.perTensor) {
    params.fit(w, rows * cols, 0, 0, 0, rows * cols); // the whole matrix as one row
    for (let r = 1; r < rows; r++) {
      params.scales[r] = params.scales[0]!;
      params.zeros[r] = params.zeros[0]!;
    }
    return;
  }
  const span = scheme.groupSize > 0 ? scheme.groupSize : cols;
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < params.groups; k++) params.fit(w, cols, r, k, k * span, Math.min(cols, (k + 1) * span));
  }
}

/**
 * GPTQ quantization of w [rows, cols] given the layer-input Hessian
 * [cols, cols] (H = 2/N Σ x xᵀ, see HessianAccumulator).
 */
export function gptqQuantize(w: Float32Array, rows: number, cols: number, hessian: Float64Array, bits: number, scheme: QuantScheme, options: GptqOptions = {}): QuantizedTensor {
  const o: Required<GptqOptions> = { blockSize: 128, dampening: 0.01, actOrder: false, ...options };
  checkGptqArgs(w, rows, cols, hessian, bits, scheme, o);
  const h = Float64Array.from(hessian);
  const work = Float32Array.from(w);
  for (let i = 0; i < work.length; i++) {
    if (work[i] !== work[i]) throw new QkdError('ARGUMENT', `gptqQuantize: weight ${i} is NaN`, { field: 'weights', hint: 'finite weights' });
  }
  for (let j = 0; j < cols; j++) {
    if (h[j * cols + j] !== 0) continue;
    h[j * cols + j] = 1; // dead column
    for (let r = 0; r < rows; r++) work[r * cols + j] = 0;
  }
  const g = scheme.groupSize;
  const lazyGroups = g > 0 && !o.actOrder;
  const params = new GroupParams(rows, groupsPerRow(cols, g), bits, scheme.symmetric);
  if (!lazyGroups) fitUpfront(params, work, rows, cols, scheme);

  const perm = columnOrder(h, cols, o.actOrder);
  const u = dampenedInverseFactor(h, perm, cols, o.dampening);
  const u32 = Float32Array.from(u);
  // Columns in quantization order: wp[r, j] = work[r, perm[j]].
  const wp = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) wp[r * cols + j] = work[r * cols + perm[j]!]!;

  const codes = new Uint8Array(rows * cols);
  const blockSize = lazyGroups ? (g <= o.blockSize ? g * Math.floor(o.blockSize / g) : g) : o.blockSize;
  const err = new Float32Array(rows * Math.min(blockSize, cols));
  const context: ColumnContext = { wp, rows, cols, u, codes, params, qmax: 2 ** bits - 1 };
  for (let i1 = 0; i1 < cols; i1 += blockSize) {
    const i2 = Math.min(i1 + blockSize, cols);
    for (let j = i1; j < i2; j++) {
      if (lazyGroups && j % g === 0) {
        for (let r = 0; r < rows; r++) params.fit(wp, cols, r, j / g, j, Math.min(cols, j + g));
      }
      const group = g > 0 ? Math.floor(perm[j]! / g) : 0;
      quantizeColumn(context, j, perm[j]!, group, i2, err.subarray(0, rows * (i2 - i1)), j - i1);
    }
    if (i2 < cols) lazyUpdate(wp, rows, cols, u32, err, i1, i2);
  }
  const zeros = scheme.symmetric ? null : params.zeros;
  return { rows, cols, bits, scheme: { ...scheme }, granularity: schemeGranularity(scheme), codes, scales: params.scales, zeros };
}

interface ColumnContext {
  /** [rows, cols] weights in quantization order, updated in place. */
  wp: Float32Array;
  rows: number;
  cols: number;
  /** [cols, cols] upper Cholesky factor of H⁻¹ (quantization order). */
  u: Float64Array;
  /** [rows, cols] codes in the original column order. */
  codes: Uint8Array;
  params: GroupParams;
  qmax: number;
}

/**
 * Quantizes column j (original column `orig`, in group `group`) of every
 * row, records e = (w − q)/U_jj in err[:, slot] (err is [rows, blockEnd −
 * blockStart]) and applies −e·U[j, k] to the block's later columns k.
 */
function quantizeColumn(c: ColumnContext, j: number, orig: number, group: number, blockEnd: number, err: Float32Array, slot: number): void {
  const { wp, cols, u } = c;
  const { scales, zeros, groups } = c.params;
  const width = err.length / c.rows;
  const d = u[j * cols + j]!;
  const uRow = j * cols;
  for (let r = 0; r < c.rows; r++) {
    const rowOffset = r * cols;
    const v = wp[rowOffset + j]!;
    const scale = scales[r * groups + group]!;
    const zero = zeros[r * groups + group]!;
    const code = encode(v, scale, zero, c.qmax);
    c.codes[rowOffset + orig] = code;
    const e = (v - Math.fround((code - zero) * scale)) / d;
    err[r * width + slot] = e;
    if (e === 0) continue;
    for (let k = j + 1; k < blockEnd; k++) wp[rowOffset + k]! -= e * u[uRow + k]!;
  }
}

/** The deferred update of the columns after a block [i1, i2): W[:, i2:] −= E · U[i1:i2, i2:] on the backend's GEMM. */
function lazyUpdate(wp: Float32Array, rows: number, cols: number, u32: Float32Array, err: Float32Array, i1: number, i2: number): void {
  const count = i2 - i1;
  kernels().sgemm({
    batch: 1, transA: false, transB: false, M: rows, N: cols - i2, K: count, alpha: -1,
    a: err, lda: count, strideA: 0,
    b: u32.subarray(i1 * cols + i2), ldb: cols, strideB: 0,
    beta: 1, c: wp.subarray(i2), ldc: cols, strideC: 0,
  });
}

/**
 * Running H = 2/N Σ_t x_t x_tᵀ over calibration activations x [T, cols]:
 * each batch's XᵀX runs on the backend's sgemm (float32), the sum across
 * batches is float64.
 */
export class HessianAccumulator {
  readonly cols: number;
  private readonly sum: Float64Array;
  private scratch: Float32Array | null = null;
  /** Rows (tokens) added so far: N. */
  samples = 0;

  constructor(cols: number) {
    if (!Number.isInteger(cols) || cols < 1) throw new QkdError('ARGUMENT', `HessianAccumulator: cols must be a positive integer, got ${cols}`, { field: 'cols' });
    this.cols = cols;
    this.sum = new Float64Array(cols * cols);
  }

  /** Adds activations x [T, cols] (row-major; T = x.length / cols). */
  add(x: Float32Array): void {
    const n = this.cols;
    if (x.length % n !== 0) throw new QkdError('SHAPE', `HessianAccumulator.add: ${x.length} values are not rows of ${n}`, { field: 'x' });
    const T = x.length / n;
    if (T === 0) return;
    this.scratch ??= new Float32Array(n * n);
    kernels().sgemm({ batch: 1, transA: true, transB: false, M: n, N: n, K: T, alpha: 1, a: x, lda: n, strideA: 0, b: x, ldb: n, strideB: 0, beta: 0, c: this.scratch, ldc: n, strideC: 0 });
    for (let i = 0; i < n * n; i++) this.sum[i]! += this.scratch[i]!;
    this.samples += T;
  }

  /** 2/N Σ x xᵀ (a new array). */
  hessian(): Float64Array {
    if (this.samples === 0) throw new QkdError('STATE', 'HessianAccumulator.hessian: no activations were added', { hint: 'add() calibration activations first' });
    const out = new Float64Array(this.sum.length);
    const f = 2 / this.samples;
    for (let i = 0; i < out.length; i++) out[i] = this.sum[i]! * f;
    return out;
  }
}

/**
 * Losses from logits (V vocab, rows = all leading dims), fused for stability:
 *   crossEntropy(z, y)       = mean over counted rows of −log softmax(z)[y]
 *   klDivergence(zT, zS, τ)  = τ² · mean over rows of KL(softmax(zT/τ) ‖ softmax(zS/τ))
 *   mse(a, b)                = mean((a − b)²)
 * Log-sum-exp and KL sums accumulate in float64.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor, allocFloat } from '../tensor.js';
import { kernels } from '../backend.js';

export interface CrossEntropyOptions {
  /** Targets equal to this are not counted (default −100, as PyTorch). */
  ignoreIndex?: number;
}

function rowsOf(op: string, logits: Tensor): { rows: number; V: number } {
  const V = logits.shape[logits.rank - 1];
  if (logits.rank < 1 || V === undefined || V === 0) throw new QkdError('SHAPE', `${op}: logits must end in a non-empty vocab axis, got ${fmtShape(logits.shape)}`);
  return { rows: logits.size / V, V };
}

/** Mean next-token cross-entropy; targets has one id per row of logits. */
export function crossEntropy(logits: Tensor, targets: Int32Array, options: CrossEntropyOptions = {}): Tensor {
  const { rows, V } = rowsOf('crossEntropy', logits);
  if (targets.length !== rows) {
    throw new QkdError('SHAPE', `crossEntropy: ${targets.length} targets for ${rows} rows of logits ${fmtShape(logits.shape)}`);
  }
  const ignore = options.ignoreIndex ?? -100;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y === ignore) continue;
    if (y < 0 || y >= V) throw new QkdError('ARGUMENT', `crossEntropy: target ${y} at row ${r} is outside [0, ${V})`, { field: 'targets' });
    count++;
  }
  const lse = allocFloat(rows);
  const total = kernels().crossEntropyForward(logits.data, targets, lse, rows, V, ignore);
  const out = new Tensor([]);
  out.data[0] = count === 0 ? 0 : total / count;
  return record(out, 'crossEntropy', [logits], (dy) => {
    if (count === 0) return;
    kernels().crossEntropyBackward(logits.data, targets, lse, logits.ensureGrad(), rows, V, ignore, dy[0]! / count);
  });
}

export interface KlOptions {
  /** Softmax temperature τ (default 1); the loss is scaled by τ². */
  temperature?: number;
}

/**
 * Temperature-scaled KL(teacher ‖ student) from two logit tensors of the same
 * shape. Gradients flow to both when they require them (the teacher is
 * usually frozen).
 */
export function klDivergence(teacherLogits: Tensor, studentLogits: Tensor, options: KlOptions = {}): Tensor {
  if (teacherLogits.shape.length !== studentLogits.shape.length || teacherLogits.shape.some((d, i) => d !== studentLogits.shape[i])) {
    throw new QkdError('SHAPE', `klDivergence: teacher ${fmtShape(teacherLogits.shape)} and student ${fmtShape(studentLogits.shape)} logits differ in shape`);
  }
  const tau = options.temperature ?? 1;
  if (!(tau > 0)) throw new QkdError('ARGUMENT', `klDivergence: temperature must be > 0, got ${tau}`, { field: 'temperature' });
  const { rows, V } = rowsOf('klDivergence', studentLogits);
  const inv = 1 / tau;
  // Per row: log-sum-exp of both at τ and the KL value. Probabilities are
  // recomputed in backward rather than stored (rows × V can be large).
  const lseT = allocFloat(rows);
  const lseS = allocFloat(rows);
  const rowKl = allocFloat(rows);
  const total = kernels().klForward(teacherLogits.data, studentLogits.data, lseT, lseS, rowKl, rows, V, inv);
  const factor = (tau * tau) / Math.max(rows, 1);
  const out = new Tensor([]);
  out.data[0] = total * factor;
  return record(out, 'klDivergence', [teacherLogits, studentLogits], (dy) => {
    // d/dzS = (τ²/rows)·(1/τ)·(pS − pT); d/dzT = (τ²/rows)·(1/τ)·pT·(log pT − log pS − KL_row)
    const empty = studentLogits.data.subarray(0, 0);
    const dT = teacherLogits.requiresGrad ? teacherLogits.ensureGrad() : empty;
    const dS = studentLogits.requiresGrad ? studentLogits.ensureGrad() : empty;
    kernels().klBackward(teacherLogits.data, studentLogits.data, lseT, lseS, rowKl, dT, dS, rows, V, inv, dy[0]! * factor * inv);
  });
}

/** Mean squared error between two tensors of the same shape. */
export function mse(a: Tensor, b: Tensor): Tensor {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new QkdError('SHAPE', `mse: shapes differ: ${fmtShape(a.shape)} vs ${fmtShape(b.shape)}`);
  }
  let s = 0;
  for (let i = 0; i < a.size; i++) s += (a.data[i]! - b.data[i]!) ** 2;
  const n = Math.max(a.size, 1);
  const out = new Tensor([]);
  out.data[0] = s / n;
  return record(out, 'mse', [a, b], (dy) => {
    const g = (2 * dy[0]!) / n;
    const da = a.requiresGrad ? a.ensureGrad() : null;
    const db = b.requiresGrad ? b.ensureGrad() : null;
    for (let i = 0; i < a.size; i++) {
      const d = g * (a.data[i]! - b.data[i]!);
      if (da) da[i]! += d;
      if (db) db[i]! -= d;
    }
  });
}

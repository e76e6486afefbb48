/**
 * Distillation losses (docs/algorithms.md §3): logit KD, feature KD, attention KD, the
 * teacher's soft-target entropy report, and the student → teacher layer map.
 *
 * Legend: B batch, T query steps, S key steps, Hs / Ht student / teacher
 * heads, Ds / Dt student / teacher feature width, V vocab, τ temperature.
 *
 * Everything except attentionKd is a composition of existing differentiable
 * ops (klDivergence, mse, linear, reductions), so no new backward code is
 * involved. attentionKd is one fused op: it maps heads and restricts the sum
 * to the causal entries without materialising [B, Hs, T, S] temporaries,
 * which matters because it runs on every layer of every step; its backward is
 * covered by a float64 gradient check in the tests.
 */
import { QkdError, fmtShape } from '../errors.js';
import { record } from '../tensor/tape.js';
import { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/random.js';
import { klDivergence, mse } from '../tensor/ops/loss.js';
import { linear } from '../tensor/ops/matmul.js';
import { add, addScalar, div, mul, scale, sqrt, square } from '../tensor/ops/elementwise.js';
import { meanAll, sum } from '../tensor/ops/reduce.js';
import { detach } from '../tensor/ops/shape.js';

// ---- logit KD ---------------------------------------------------------------

/**
 * L_kd = τ² · KL(softmax(z_T/τ) ‖ softmax(z_S/τ)), mean over tokens (rows =
 * all leading dims of [..., V]). The τ² factor keeps the gradient scale of the
 * soft term comparable to cross-entropy as τ changes. The teacher is detached:
 * no gradient reaches it even if its logits were recorded.
 */
export function logitKd(teacher: Tensor, student: Tensor, temperature: number): Tensor {
  checkTemperature('logitKd', temperature);
  return klDivergence(detach(teacher), student, { temperature });
}

/** Reverse KD: τ² · KL(softmax(z_S/τ) ‖ softmax(z_T/τ)), mean over tokens (mode-seeking; the teacher is detached). */
export function reverseLogitKd(teacher: Tensor, student: Tensor, temperature: number): Tensor {
  checkTemperature('reverseLogitKd', temperature);
  return klDivergence(student, detach(teacher), { temperature });
}

/**
 * Confidence-aware KD (BitDistiller's CAKLD; docs/qat.md):
 * c·KL(T ‖ S) + (1 − c)·KL(S ‖ T) at τ, with c ∈ [0, 1] the teacher's
 * confidence (its mean probability of the next token on the training data):
 * a confident teacher gets the mean-seeking forward KL, an unsure one the
 * mode-seeking reverse KL.
 */
export function confidenceKd(teacher: Tensor, student: Tensor, temperature: number, confidence: number): Tensor {
  if (!(confidence >= 0 && confidence <= 1)) throw new QkdError('ARGUMENT', `confidenceKd: confidence must be in [0, 1], got ${confidence}`, { field: 'confidence' });
  return add(scale(logitKd(teacher, student, temperature), confidence), scale(reverseLogitKd(teacher, student, temperature), 1 - confidence));
}

function checkTemperature(op: string, temperature: number): void {
  if (!(temperature > 0) || !Number.isFinite(temperature)) {
    throw new QkdError('ARGUMENT', `${op}: temperature must be a positive finite number, got ${temperature}`, { field: 'temperature' });
  }
}

// ---- soft-target entropy ----------------------------------------------------

export interface SoftTargetEntropy {
  /** Entropy of softmax(z_T/τ) per token, in nats: mean, min and max over rows. */
  mean: number;
  min: number;
  max: number;
  /** log V, the entropy of the uniform distribution (the upper bound). */
  logV: number;
}

/**
 * Entropy of the teacher's soft targets at τ, for the pre-training report
 * (docs/algorithms.md §3). teacherLogits is [rows, V] row-major; sums run in float64.
 */
export function softTargetEntropy(teacherLogits: Float32Array, rows: number, V: number, temperature: number): SoftTargetEntropy {
  checkTemperature('softTargetEntropy', temperature);
  if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(V) || V < 1 || teacherLogits.length !== rows * V) {
    throw new QkdError('SHAPE', `softTargetEntropy: ${teacherLogits.length} logits do not form rows=${rows} × V=${V}`, { hint: 'a non-empty [rows, V] buffer' });
  }
  const inv = 1 / temperature;
  let total = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let r = 0; r < rows; r++) {
    const h = rowEntropy(teacherLogits, r * V, V, inv);
    total += h;
    if (h < min) min = h;
    if (h > max) max = h;
  }
  return { mean: total / rows, min, max, logV: Math.log(V) };
}

/** H(softmax(a)) with a = z·inv: log Σ e^(a−m) − Σ e^(a−m)(a−m) / Σ e^(a−m). */
function rowEntropy(z: Float32Array, offset: number, V: number, inv: number): number {
  let m = -Infinity;
  for (let j = 0; j < V; j++) m = Math.max(m, z[offset + j]! * inv);
  let s = 0;
  let w = 0;
  for (let j = 0; j < V; j++) {
    const a = z[offset + j]! * inv - m;
    const e = Math.exp(a);
    s += e;
    w += e * a;
  }
  return Math.log(s) - w / s;
}

/** Below this fraction of log V the targets are nearly one-hot. */
export const LOW_ENTROPY_FRACTION = 0.05;
/** Above this fraction of log V the targets are nearly uniform. */
export const HIGH_ENTROPY_FRACTION = 0.95;

/**
 * A warning when the soft targets carry little of the teacher's "dark
 * knowledge": nearly one-hot (KD degenerates to cross-entropy on the
 * teacher's argmax; raise τ) or nearly uniform (τ too high: every token looks
 * alike). null when the mean entropy is in between.
 */
export function entropyWarning(stats: SoftTargetEntropy): string | null {
  const ratio = stats.mean / stats.logV;
  const pct = (ratio * 100).toFixed(1);
  if (ratio < LOW_ENTROPY_FRACTION) {
    return `soft targets are nearly one-hot: mean entropy ${stats.mean.toFixed(4)} nats is ${pct}% of log V = ${stats.logV.toFixed(3)}; KD ≈ cross-entropy on the teacher's argmax, consider a higher temperature`;
  }
  if (ratio > HIGH_ENTROPY_FRACTION) {
    return `soft targets are nearly uniform: mean entropy ${stats.mean.toFixed(4)} nats is ${pct}% of log V = ${stats.logV.toFixed(3)}; the temperature is too high`;
  }
  return null;
}

// ---- feature KD -------------------------------------------------------------

export type FeatureLossKind = 'mse' | 'cosine' | 'kl';

/** Guards 1 − cos against 0/0 for all-zero rows; negligible next to ‖s‖²‖t‖² of real features. */
const COSINE_EPS = 1e-12;

/**
 * Loss between a student feature [..., Ds] and a teacher feature [..., Dt]
 * with the same leading dims (hook outputs of aligned modules).
 * projection [Dt, Ds] (Hugging Face [out, in] layout, see createProjection)
 * maps the student into the teacher's width first; it is required when
 * Ds ≠ Dt and optional otherwise.
 *  - mse:    mean over all entries of (P s − t)²
 *  - cosine: mean over rows of 1 − cos(P s, t)
 *  - kl:     mean over rows of KL(softmax(t) ‖ softmax(P s))
 * Gradients reach the student, the projection, and the teacher feature when
 * it requires one (capture the teacher under noGrad to keep it frozen).
 */
export function featureKd(studentFeat: Tensor, teacherFeat: Tensor, kind: FeatureLossKind, projection?: Tensor): Tensor {
  const s = projectFeature(studentFeat, teacherFeat, projection);
  switch (kind) {
    case 'mse':
      return mse(s, teacherFeat);
    case 'cosine':
      return cosineDistance(s, teacherFeat);
    case 'kl':
      return klDivergence(teacherFeat, s, { temperature: 1 });
    default:
      throw new QkdError('ARGUMENT', `featureKd: unknown loss kind '${String(kind)}'`, { field: 'kind', hint: 'mse, cosine or kl' });
  }
}

function projectFeature(student: Tensor, teacher: Tensor, projection: Tensor | undefined): Tensor {
  if (student.rank < 1 || teacher.rank !== student.rank || student.shape.slice(0, -1).some((d, i) => d !== teacher.shape[i])) {
    throw new QkdError('SHAPE', `featureKd: student ${fmtShape(student.shape)} and teacher ${fmtShape(teacher.shape)} features must agree in all but the last (width) axis`);
  }
  const Ds = student.shape[student.rank - 1]!;
  const Dt = teacher.shape[teacher.rank - 1]!;
  if (projection === undefined) {
    if (Ds !== Dt) {
      throw new QkdError('SHAPE', `featureKd: student width ${Ds} differs from teacher width ${Dt} and no projection was given`, {
        field: 'projection',
        hint: `a learned [${Dt}, ${Ds}] projection from createProjection(${Ds}, ${Dt}, rng)`,
      });
    }
    return student;
  }
  if (projection.rank !== 2 || projection.shape[0] !== Dt || projection.shape[1] !== Ds) {
    throw new QkdError('SHAPE', `featureKd: projection ${fmtShape(projection.shape)} does not map student width ${Ds} to teacher width ${Dt}`, {
      field: 'projection',
      hint: `shape [${Dt}, ${Ds}]`,
    });
  }
  return linear(student, projection);
}

/** mean over rows of 1 − ⟨s,t⟩ / sqrt(‖s‖²‖t‖² + ε), composed from differentiable ops. */
function cosineDistance(s: Tensor, t: Tensor): Tensor {
  const dot = sum(mul(s, t), -1);
  const norms = sqrt(addScalar(mul(sum(square(s), -1), sum(square(t), -1)), COSINE_EPS));
  return addScalar(scale(meanAll(div(dot, norms)), -1), 1);
}

/**
 * A learned projection [Dt, Ds] for featureKd, float32, requiresGrad.
 * Initialised as a random semi-orthogonal matrix (Gram–Schmidt on Gaussian
 * columns, or rows when Dt < Ds): its singular values are all 1, so the
 * least-squares problem of fitting it starts perfectly conditioned and the
 * projected student neither shrinks nor amplifies its features. When the
 * widths are equal this is a random rotation.
 */
export function createProjection(studentWidth: number, teacherWidth: number, rng: Rng): Tensor {
  for (const [field, v] of [['studentWidth', studentWidth], ['teacherWidth', teacherWidth]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new QkdError('ARGUMENT', `createProjection: ${field} is ${v}`, { field, hint: 'a positive integer' });
  }
  // Orthonormalise the min(Dt, Ds) vectors of length max(Dt, Ds).
  const long = Math.max(studentWidth, teacherWidth);
  const count = Math.min(studentWidth, teacherWidth);
  const vectors = orthonormalGaussian(count, long, rng);
  const out = new Tensor([teacherWidth, studentWidth], undefined, true);
  for (let v = 0; v < count; v++) {
    for (let i = 0; i < long; i++) {
      const value = vectors[v * long + i]!;
      // Tall (Dt ≥ Ds): vectors are columns; wide: vectors are rows.
      if (teacherWidth >= studentWidth) out.data[i * studentWidth + v] = value;
      else out.data[v * studentWidth + i] = value;
    }
  }
  return out;
}

/** count orthonormal vectors of length n (count ≤ n), row-major, float64 modified Gram–Schmidt. */
function orthonormalGaussian(count: number, n: number, rng: Rng): Float64Array {
  const q = new Float64Array(count * n);
  for (let v = 0; v < count; v++) {
    const row = q.subarray(v * n, (v + 1) * n);
    for (;;) {
      for (let i = 0; i < n; i++) row[i] = rng.normal();
      // Two passes of projection keep the basis orthogonal to rounding.
      for (let pass = 0; pass < 2; pass++) {
        for (let u = 0; u < v; u++) {
          const prev = q.subarray(u * n, (u + 1) * n);
          let d = 0;
          for (let i = 0; i < n; i++) d += prev[i]! * row[i]!;
          for (let i = 0; i < n; i++) row[i]! -= d * prev[i]!;
        }
      }
      let norm = 0;
      for (let i = 0; i < n; i++) norm += row[i]! * row[i]!;
      norm = Math.sqrt(norm);
      if (norm > 1e-8) {
        for (let i = 0; i < n; i++) row[i]! /= norm;
        break;
      }
    }
  }
  return q;
}

// ---- attention KD -----------------------------------------------------------

/**
 * MSE between student and teacher attention maps, P [B, H, T, S] as pushed by
 * LlamaModel.forward (S ≥ T; query t sees keys 0..S−T+t). Only the causal
 * entries count: the masked ones are zero in both maps, so they are left out
 * of the mean rather than diluting it (the value does not depend on T's
 * share of masked zeros).
 *
 * Head mapping when Ht ≠ Hs:
 *  - Ht = g·Hs: student head h is compared to the mean of teacher heads
 *    h·g .. h·g + g − 1 (consecutive groups; a mean of distributions is a
 *    distribution);
 *  - Hs = r·Ht: teacher head h is repeated for student heads h·r .. h·r + r − 1;
 *  - otherwise an error.
 * The mean runs over B·Hs·(causal entries per map).
 */
export function attentionKd(studentProbs: Tensor, teacherProbs: Tensor): Tensor {
  const { B, Hs, Ht, T, S } = attentionDims(studentProbs, teacherProbs);
  const group = Ht >= Hs ? Ht / Hs : 1; // teacher heads averaged per student head
  const repeat = Hs >= Ht ? Hs / Ht : 1; // student heads per teacher head
  const offset = S - T;
  const causalPerMap = T * offset + (T * (T + 1)) / 2;
  const count = B * Hs * causalPerMap;
  const Ps = studentProbs.data;
  const Pt = teacherProbs.data;
  const mapSize = T * S;
  // diff = P_s − mapped P_t on causal entries (masked entries are never read).
  // Teacher heads of one group are consecutive maps: tOff, tOff + T·S, ...
  const forEachMap = (body: (sOff: number, tOff: number) => void): void => {
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hs; h++) body((b * Hs + h) * mapSize, (b * Ht + Math.floor(h / repeat) * group) * mapSize);
    }
  };
  const invGroup = 1 / group;
  const mappedTeacher = (tOff: number, i: number): number => {
    if (group === 1) return Pt[tOff + i]!;
    let m = 0;
    for (let g = 0; g < group; g++) m += Pt[tOff + g * mapSize + i]!;
    return m * invGroup;
  };
  let total = 0;
  forEachMap((sOff, tOff) => {
    for (let t = 0; t < T; t++) {
      const row = t * S;
      for (let j = 0; j <= offset + t; j++) {
        const d = Ps[sOff + row + j]! - mappedTeacher(tOff, row + j);
        total += d * d;
      }
    }
  });
  const out = new Tensor([]);
  out.data[0] = count === 0 ? 0 : total / count;
  return record(out, 'attentionKd', [studentProbs, teacherProbs], (dy) => {
    if (count === 0) return;
    const g = (2 * dy[0]!) / count;
    const dS = studentProbs.requiresGrad ? studentProbs.ensureGrad() : null;
    const dT = teacherProbs.requiresGrad ? teacherProbs.ensureGrad() : null;
    forEachMap((sOff, tOff) => {
      for (let t = 0; t < T; t++) {
        const row = t * S;
        for (let j = 0; j <= offset + t; j++) {
          const d = g * (Ps[sOff + row + j]! - mappedTeacher(tOff, row + j));
          if (dS) dS[sOff + row + j]! += d;
          if (dT) for (let h = 0; h < group; h++) dT[tOff + h * mapSize + row + j]! -= d * invGroup;
        }
      }
    });
  });
}

function attentionDims(student: Tensor, teacher: Tensor): { B: number; Hs: number; Ht: number; T: number; S: number } {
  if (student.rank !== 4 || teacher.rank !== 4) {
    throw new QkdError('SHAPE', `attentionKd: expected attention maps [B,H,T,S], got student ${fmtShape(student.shape)} and teacher ${fmtShape(teacher.shape)}`);
  }
  const [B, Hs, T, S] = student.shape as [number, number, number, number];
  const [Bt, Ht, Tt, St] = teacher.shape as [number, number, number, number];
  if (B !== Bt || T !== Tt || S !== St || S < T) {
    throw new QkdError('SHAPE', `attentionKd: student ${fmtShape(student.shape)} and teacher ${fmtShape(teacher.shape)} maps differ in B, T or S`, {
      hint: 'the same batch and sequence (S ≥ T) for both models',
    });
  }
  if (Hs === 0 || Ht === 0 || (Ht % Hs !== 0 && Hs % Ht !== 0)) {
    throw new QkdError('SHAPE', `attentionKd: cannot map ${Ht} teacher heads onto ${Hs} student heads`, {
      field: 'num_attention_heads',
      hint: 'one head count a multiple of the other (teacher groups are averaged, or teacher heads repeated)',
    });
  }
  return { B, Hs, Ht, T, S };
}

// ---- layer alignment ----------------------------------------------------------

/**
 * For each student layer s, the teacher layer at the same relative depth:
 * round((s + 1)·Lt / Ls) − 1 (ties round up). Uniform spacing, the last
 * student layer maps to the last teacher layer, and with Ls = Lt / 2 the map
 * is every other layer (1, 3, 5, ...). Strictly increasing since Lt ≥ Ls.
 */
export function layerMap(teacherLayers: number, studentLayers: number): number[] {
  for (const [field, v] of [['teacherLayers', teacherLayers], ['studentLayers', studentLayers]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new QkdError('ARGUMENT', `layerMap: ${field} is ${v}`, { field, hint: 'a positive integer' });
  }
  if (studentLayers > teacherLayers) {
    throw new QkdError('ARGUMENT', `layerMap: the student has ${studentLayers} layers, more than the teacher's ${teacherLayers}`, {
      field: 'num_hidden_layers',
      hint: `at most ${teacherLayers} student layers`,
    });
  }
  const map: number[] = [];
  // Integer arithmetic for round(x): floor((2·(s+1)·Lt + Ls) / (2·Ls)).
  for (let s = 0; s < studentLayers; s++) map.push(Math.floor((2 * (s + 1) * teacherLayers + studentLayers) / (2 * studentLayers)) - 1);
  return map;
}


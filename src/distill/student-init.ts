/**
 * Student initialisation from a teacher (docs/algorithms.md §3): layer pruning, SVD-style
 * width truncation, or random.
 *
 * Legend: C / c teacher / student hidden width, H / Hs query heads, G / Gs
 * key-value heads, D head dim (equal in both), I / Is intermediate width,
 * L / Ls layers, V vocab. Matrices are [out, in] (Hugging Face layout).
 *
 * 'pruned' keeps the teacher's width and copies the layers prunedLayers
 * picks (every other one at half depth, starting with the first), plus
 * embeddings, final norm and lm_head.
 *
 * 'svd' shrinks the width. The student's residual stream is the teacher's
 * expressed in a c-dimensional orthonormal basis U [C, c] of the hidden
 * space: h_s ≈ Uᵀ h. Then
 *   - the embedding is E U; matrices writing into the residual stream
 *     (o_proj, down_proj) become Uᵀ W;
 *   - matrices reading it through an RMSNorm (q/k/v, gate/up, lm_head) get
 *     the norm weight folded in, W diag(w) U · ρ, and the student's norm
 *     weights are ones. ρ = sqrt(C·f / c) undoes the change of the RMS:
 *     rms(Uᵀh) = rms(h)·sqrt(C·f / c) where f = ‖Uᵀh‖² / ‖h‖² is the share of
 *     the residual energy the basis keeps (estimated from the embedding rows);
 *   - a tied student (of a tied teacher) cannot fold the final norm into
 *     lm_head (it is the embedding), so its final norm weight is the
 *     diagonal of Uᵀ diag(w) U (the best diagonal stand-in), times ρ.
 * Gemma (docs/model-families.md): norms apply 1 + w, so the factor folded
 * in is 1 + w and the student stores w = 0; the embedding is scaled by
 * √width, so E_s = E U·√(C/c) (and a tied head's final norm is divided by
 * √(C/c)); the norms on the attention and MLP outputs act in the residual
 * width and get diag(Uᵀ diag(1 + w) U)·√(C·f_W/c), f_W = ‖Uᵀ W‖²/‖W‖² of
 * the writer W they follow. The basis weighs those writers as diag(1 + w) W.
 * U is the top-c right singular vectors of every hidden-side matrix stacked
 * (readers and the embedding as they are, writers transposed), each scaled
 * to unit Frobenius norm so a large vocabulary does not drown out the
 * layers: the directions the model reads and writes most. It is computed as
 * the top eigenvectors of the C×C Gram Σ WᵀW/‖W‖² + Σ W Wᵀ/‖W‖². The
 * embedding alone gives a worse basis (byte-level teacher, C = 128 → 64,
 * both kv groups kept: val loss 2.28 vs 2.11; teacher 1.80, random 5.55).
 * With c = C the basis is the identity and the map is exact.
 * Heads are kept whole (RoPE and the QK product act within a head, and D
 * must stay equal, so the head count scales with the width): the Gs kv
 * groups and Hs/Gs query heads per group with the largest OV-circuit norm
 * ‖W_o,h W_v,g‖_F survive. The SwiGLU product is elementwise in the
 * intermediate dimension, so a rotation of that space would not commute with
 * it; whole neurons are kept instead, the Is with the largest
 * ‖gate_i‖·‖up_i‖·‖down_:,i‖ — the weight-only analogue of truncating the
 * MLP's smallest singular directions. Layers follow prunedLayers.
 *
 * 'random' is createLlama(studentConfig, seed).
 *
 * The svd and pruned methods are deterministic and ignore the seed.
 */
import { QkdError } from '../errors.js';
import { LlamaModel, createLlama } from '../models/llama.js';
import { derivedConfig, familyTraits, headDim, type LlamaConfig } from '../models/llama-config.js';
import { Tensor, withLoaded } from '../tensor/tensor.js';
import { noGrad } from '../tensor/tape.js';
import { matmul } from '../tensor/ops/matmul.js';
import { layerMap } from './losses.js';
import { symmetricEigen } from '../tensor/eigen.js';
import { keepLayers, measureImportance, pruneModel, type Aggregation } from './minitron.js';

export { symmetricEigen };

export type StudentInitMethod = 'pruned' | 'svd' | 'random' | 'minitron';

/** Calibration for activation-based initialisation (minitron). */
export interface InitCalibration {
  /** Token stream (the training split). */
  tokens: Int32Array;
  batch: number;
  seqLen: number;
  /** Batches of calibration windows (consecutive, from the stream's start). */
  batches: number;
  aggregation?: Aggregation;
  depth?: 'block-influence' | 'ppl';
}

/** A student config as overrides of the teacher's: every field left out is the teacher's. */
export type StudentConfigInput = Partial<LlamaConfig>;

/**
 * The validated student config: studentConfig over the teacher's config.
 * The vocabulary must be the teacher's (the caller checks the tokenizers).
 */
export function resolveStudentConfig(teacher: LlamaConfig, studentConfig: StudentConfigInput): LlamaConfig {
  const config = derivedConfig(teacher, studentConfig as Partial<LlamaConfig> & Record<string, unknown>);
  if (config.vocab_size !== teacher.vocab_size) {
    throw new QkdError('CONFIG', `student vocab_size ${config.vocab_size} differs from the teacher's ${teacher.vocab_size}`, {
      field: 'vocab_size',
      hint: `the teacher's vocabulary (${teacher.vocab_size} tokens) and tokenizer`,
    });
  }
  return config;
}

/** Builds a student LlamaModel from a teacher. Deterministic for a given seed. */
export function initStudent(teacher: LlamaModel, studentConfig: StudentConfigInput, method: StudentInitMethod, seed: number, calibration?: InitCalibration): LlamaModel {
  const config = resolveStudentConfig(teacher.config, studentConfig);
  // A state-space teacher (docs/mohawk.md): its layers are copied whole only when every layer has the same kind.
  const ssm = teacher.config.ssm;
  if (ssm !== null && method !== 'random' && (method !== 'pruned' || ssm.attention_layers.length > 0)) {
    throw new QkdError('CONFIG', `student init '${method}' of a state-space${ssm.attention_layers.length > 0 ? ' hybrid' : ''} teacher is not supported`, { field: 'student.init', hint: ssm.attention_layers.length > 0 ? 'random, or student.from' : 'pruned or random, or student.from' });
  }
  switch (method) {
    case 'minitron': {
      if (calibration === undefined) throw new QkdError('ARGUMENT', 'minitron student init measures importance on calibration text, and none was given', { field: 'calibration' });
      return minitronStudent(teacher, config, calibration);
    }
    case 'random':
      return createLlama(config as LlamaConfig & Record<string, unknown>, seed);
    case 'pruned':
      return noGrad(() => prunedStudent(teacher, config));
    case 'svd':
      return noGrad(() => svdStudent(teacher, config));
    default:
      throw new QkdError('CONFIG', `unknown student init method '${String(method)}'`, { field: 'student.init', hint: 'pruned, svd, random or minitron' });
  }
}

/** Calibration windows of a token stream: consecutive, `batches` batches of `batch` windows of seqLen + 1. */
export function calibrationWindows(c: InitCalibration): { inputs: Int32Array; targets: Int32Array }[] {
  const out: { inputs: Int32Array; targets: Int32Array }[] = [];
  const T = c.seqLen;
  for (let k = 0; k < c.batches && (k + 1) * c.batch * T + 1 <= c.tokens.length; k++) {
    const inputs = new Int32Array(c.batch * T);
    const targets = new Int32Array(c.batch * T);
    for (let b = 0; b < c.batch; b++) {
      const start = (k * c.batch + b) * T;
      inputs.set(c.tokens.subarray(start, start + T), b * T);
      targets.set(c.tokens.subarray(start + 1, start + T + 1), b * T);
    }
    out.push({ inputs, targets });
  }
  if (out.length === 0) throw new QkdError('ARGUMENT', `calibration needs ${c.batch * c.seqLen + 1} tokens, the text has ${c.tokens.length}`, { field: 'calibration' });
  return out;
}

/** Minitron: importance from the teacher's activations on calibration windows, then structured pruning to the student shape. */
function minitronStudent(teacher: LlamaModel, config: LlamaConfig, c: InitCalibration): LlamaModel {
  if (teacher.arena.released) throw new QkdError('CONFIG', 'minitron student init reads the teacher in float32; this teacher is held in bf16', { field: 'distillation.teacher_precision', hint: 'float32' });
  const windows = calibrationWindows(c);
  const importance = measureImportance(teacher, windows.map((w) => w.inputs), c.batch, c.seqLen, c.aggregation);
  const blockLoss = (kept: number[]): number => {
    const m = keepLayers(teacher, kept);
    let total = 0;
    noGrad(() => {
      for (const w of windows) total += m.loss(m.forward(w.inputs, c.batch, c.seqLen), w.targets).item();
    });
    return total / windows.length;
  };
  const shape = { hidden_size: config.hidden_size, intermediate_size: config.intermediate_size, num_attention_heads: config.num_attention_heads, num_key_value_heads: config.num_key_value_heads, num_hidden_layers: config.num_hidden_layers };
  return pruneModel(teacher, importance, shape, { depth: c.depth, blockLoss }).model;
}

// ---- checks -------------------------------------------------------------------

function requireEqual(method: string, field: keyof LlamaConfig, student: LlamaConfig, teacher: LlamaConfig, why: string): void {
  if (student[field] !== teacher[field]) {
    throw new QkdError('CONFIG', `${method} student init: ${field} is ${String(student[field])} but the teacher's is ${String(teacher[field])} (${why})`, {
      field,
      hint: String(teacher[field]),
    });
  }
}

function requireAtMost(method: string, field: keyof LlamaConfig, value: number, limit: number, what: string): void {
  if (value > limit) {
    throw new QkdError('CONFIG', `${method} student init: ${field} ${value} exceeds the teacher's ${limit} ${what}`, { field, hint: `at most ${limit}` });
  }
}

/** A tied student needs a tied teacher: an untied lm_head has nowhere to go. */
function checkTying(method: string, student: LlamaConfig, teacher: LlamaConfig): void {
  if (student.tie_word_embeddings && !teacher.tie_word_embeddings) {
    throw new QkdError('CONFIG', `${method} student init: the student ties lm_head to the embedding but the teacher does not`, {
      field: 'tie_word_embeddings',
      hint: 'false (as the teacher), or method random',
    });
  }
}

// ---- pruned ---------------------------------------------------------------------

/**
 * The teacher layers a depth-pruned student starts from: floor(s·Lt / Ls),
 * i.e. every other layer from the first at half depth (0, 2, 4, ...), as in
 * DistilBERT. This differs on purpose from layerMap (which aligns layer
 * outputs, last → last, for feature KD): the first layer turns embeddings
 * into the features every later layer reads, and dropping it ruins the
 * student. Measured on byte-level teachers trained on the corpus (val loss,
 * random init ≈ 5.55): 8 → 4 layers, copying 0,2,4,6 gives 2.38 but
 * layerMap's 1,3,5,7 gives 4.98; 4 → 2, copying 0,2 gives 2.19, 1,3 gives 4.73.
 */
export function prunedLayers(teacherLayers: number, studentLayers: number): number[] {
  layerMap(teacherLayers, studentLayers); // same argument checks
  return Array.from({ length: studentLayers }, (_, s) => Math.floor((s * teacherLayers) / studentLayers));
}

function prunedStudent(teacher: LlamaModel, config: LlamaConfig): LlamaModel {
  const t = teacher.config;
  const why = 'layer pruning keeps the width';
  for (const f of ['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'model_type'] as const) requireEqual('pruned', f, config, t, why);
  requireEqual('pruned', 'rope_theta', config, t, 'copied attention weights depend on the RoPE frequencies');
  requireAtMost('pruned', 'num_hidden_layers', config.num_hidden_layers, t.num_hidden_layers, 'layers');
  checkTying('pruned', config, t);
  const student = new LlamaModel(config);
  const copy = (to: string, from: string): void => {
    const src = teacher.arena.get(from);
    // A frozen bf16 teacher's values are widened for the copy.
    withLoaded(src, () => student.arena.set(to, src.shape, src.data));
  };
  copy('model.embed_tokens.weight', 'model.embed_tokens.weight');
  copy('model.norm.weight', 'model.norm.weight');
  if (!config.tie_word_embeddings) copy('lm_head.weight', lmHeadName(t));
  // Every tensor of a kept layer, whatever the family (biases, q/k norms, Gemma's extra norms, fused matrices).
  const layerTensors = student.arena.entries.map((e) => /^model\.layers\.0\.(.+)$/.exec(e.name)?.[1]).filter((x): x is string => x !== undefined);
  prunedLayers(t.num_hidden_layers, config.num_hidden_layers).forEach((from, l) => {
    for (const suffix of layerTensors) copy(`model.layers.${l}.${suffix}`, `model.layers.${from}.${suffix}`);
  });
  return student;
}

function lmHeadName(c: LlamaConfig): string {
  return c.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

// ---- svd ------------------------------------------------------------------------

/** A dense float32 matrix [rows, cols], row-major. */
interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

function svdStudent(teacher: LlamaModel, config: LlamaConfig): LlamaModel {
  const t = teacher.config;
  checkSvdShapes(config, t, teacher.arena.released);
  const C = t.hidden_size;
  const c = config.hidden_size;
  const layers = prunedLayers(t.num_hidden_layers, config.num_hidden_layers);
  const traits = familyTraits(t.model_type);
  const param = (name: string): Matrix => {
    const p = teacher.arena.get(name);
    return { rows: p.shape[0]!, cols: p.shape[1] ?? 1, data: p.data };
  };
  const vector = (name: string): Float32Array => teacher.arena.get(name).data;
  // Gemma's norms multiply by 1 + w: the maps below work with the factor a norm applies.
  const offset = traits.gemma ? 1 : 0;
  const normFactor = (name: string): Float32Array => vector(name).map((w) => w + offset);

  const embed = param('model.embed_tokens.weight');
  const basis = c === C ? identity(C) : hiddenBasis(teacher, layers, c);
  const rho = Math.sqrt((C * capturedEnergy(embed, basis)) / c);
  // Gemma multiplies the embedding by √width: √c·E_s = √C·E U needs E_s = E U·√(C/c).
  const embedScale = traits.gemma ? Math.sqrt(C / c) : 1;
  const student = new LlamaModel(config);
  const set = (name: string, m: Matrix): void => student.arena.set(name, [m.rows, m.cols], m.data);
  const setFactor = (name: string, factor: Float32Array): void => student.arena.set(name, [factor.length], factor.map((f) => f - offset));
  const ones = (name: string): void => setFactor(name, new Float32Array(c).fill(1));
  // Readers through an RMSNorm: W diag(w) U ρ. Writers: Uᵀ W.
  const reader = (w: Matrix, norm: Float32Array): Matrix => scaleMatrix(multiply(foldNorm(w, norm), basis), rho);
  const writer = (w: Matrix): Matrix => multiplyTransA(basis, w);
  // Gemma's norm on a writer's output (residual width): its factor projected,
  // diag(Uᵀ diag(1+w) U), times rms(Uᵀy)/rms(y) ≈ √(C·f/c), f the share of the writer's energy the basis keeps.
  const outputNorm = (to: string, from: string, written: Matrix, full: Matrix): void =>
    setFactor(to, projectedDiagonal(normFactor(from), basis).map((v) => v * Math.sqrt((C * energyRatio(written, full)) / c)));

  set('model.embed_tokens.weight', scaleMatrix(multiply(embed, basis), embedScale));
  const D = headDim(t);
  const H = t.num_attention_heads * D;
  const G = t.num_key_value_heads * D;
  const I = t.intermediate_size;
  layers.forEach((from, l) => {
    const p = `model.layers.${from}`;
    const q = `model.layers.${l}`;
    const inNorm = normFactor(`${p}.input_layernorm.weight`);
    // Phi-3 fuses q, k, v (rows in that order) and gate, up: split, map, fuse again.
    const qkv = traits.fused ? param(`${p}.self_attn.qkv_proj.weight`) : null;
    const attn = (which: 'q' | 'k' | 'v'): Matrix =>
      qkv === null ? param(`${p}.self_attn.${which}_proj.weight`) : sliceRows(qkv, which === 'q' ? 0 : which === 'k' ? H : H + G, which === 'q' ? H : which === 'k' ? H + G : H + 2 * G);
    const heads = selectHeads(attn('v'), param(`${p}.self_attn.o_proj.weight`), inNorm, t, config);
    const qW = reader(takeRows(attn('q'), blocks(heads.query, D)), inNorm);
    const kW = reader(takeRows(attn('k'), blocks(heads.kv, D)), inNorm);
    const vW = reader(takeRows(attn('v'), blocks(heads.kv, D)), inNorm);
    if (qkv !== null) set(`${q}.self_attn.qkv_proj.weight`, concatRows([qW, kW, vW]));
    else {
      set(`${q}.self_attn.q_proj.weight`, qW);
      set(`${q}.self_attn.k_proj.weight`, kW);
      set(`${q}.self_attn.v_proj.weight`, vW);
    }
    if (traits.qkvBias) {
      // Biases are added after the product: the kept heads' entries, untouched by the basis.
      const bias = (which: string, kept: number[]): void => student.arena.set(`${q}.self_attn.${which}_proj.bias`, [kept.length * D], takeEntries(vector(`${p}.self_attn.${which}_proj.bias`), blocks(kept, D)));
      bias('q', heads.query);
      bias('k', heads.kv);
      bias('v', heads.kv);
    }
    if (traits.qkNorm) {
      // Per-head norms act within a head (head dim unchanged): copied.
      for (const n of ['q_norm', 'k_norm']) student.arena.set(`${q}.self_attn.${n}.weight`, [D], vector(`${p}.self_attn.${n}.weight`));
    }
    const o = takeCols(param(`${p}.self_attn.o_proj.weight`), blocks(heads.query, D));
    const oW = writer(o);
    set(`${q}.self_attn.o_proj.weight`, oW);
    // The MLP reads the residual stream through post_attention_layernorm, or in Gemma through pre_feedforward_layernorm.
    const mlpNormName = traits.gemma ? 'pre_feedforward_layernorm' : 'post_attention_layernorm';
    const mlpNorm = normFactor(`${p}.${mlpNormName}.weight`);
    const gateUp = traits.fused ? param(`${p}.mlp.gate_up_proj.weight`) : null;
    const gate = gateUp === null ? param(`${p}.mlp.gate_proj.weight`) : sliceRows(gateUp, 0, I);
    const up = gateUp === null ? param(`${p}.mlp.up_proj.weight`) : sliceRows(gateUp, I, 2 * I);
    const down = param(`${p}.mlp.down_proj.weight`);
    const neurons = selectNeurons(gate, up, down, mlpNorm, config.intermediate_size);
    const gateW = reader(takeRows(gate, neurons), mlpNorm);
    const upW = reader(takeRows(up, neurons), mlpNorm);
    if (gateUp !== null) set(`${q}.mlp.gate_up_proj.weight`, concatRows([gateW, upW]));
    else {
      set(`${q}.mlp.gate_proj.weight`, gateW);
      set(`${q}.mlp.up_proj.weight`, upW);
    }
    const keptDown = takeCols(down, neurons);
    const downW = writer(keptDown);
    set(`${q}.mlp.down_proj.weight`, downW);
    ones(`${q}.input_layernorm.weight`);
    ones(`${q}.${mlpNormName}.weight`);
    if (traits.gemma) {
      for (const [n, written, full] of [['post_attention_layernorm', oW, o], ['post_feedforward_layernorm', downW, keptDown]] as const) outputNorm(`${q}.${n}.weight`, `${p}.${n}.weight`, written, full);
    }
  });

  const finalNorm = normFactor('model.norm.weight');
  if (config.tie_word_embeddings) {
    // lm_head is the embedding E U·embedScale; the final norm carries diag(Uᵀ diag(w) U)·ρ / embedScale.
    setFactor('model.norm.weight', projectedDiagonal(finalNorm, basis).map((v) => (v * rho) / embedScale));
  } else {
    ones('model.norm.weight');
    set('lm_head.weight', reader(param(lmHeadName(t)), finalNorm));
  }
  return student;
}

function checkSvdShapes(s: LlamaConfig, t: LlamaConfig, released = false): void {
  if (released) throw new QkdError('CONFIG', 'svd student init reads the teacher in float32; this teacher is held in bf16', { field: 'distillation.teacher_precision', hint: 'float32, or student.init pruned' });
  checkTying('svd', s, t);
  requireEqual('svd', 'rope_theta', s, t, 'copied attention weights depend on the RoPE frequencies');
  if (headDim(s) !== headDim(t)) {
    const heads = s.hidden_size / headDim(t);
    throw new QkdError('CONFIG', `svd student init: head dim ${headDim(s)} (hidden_size ${s.hidden_size} / ${s.num_attention_heads} heads) differs from the teacher's ${headDim(t)}`, {
      field: 'num_attention_heads',
      hint: Number.isInteger(heads) ? `${heads} heads, so that heads are kept whole` : `hidden_size a multiple of the teacher's head dim ${headDim(t)}`,
    });
  }
  requireAtMost('svd', 'hidden_size', s.hidden_size, t.hidden_size, 'width');
  requireAtMost('svd', 'intermediate_size', s.intermediate_size, t.intermediate_size, 'neurons');
  requireAtMost('svd', 'num_hidden_layers', s.num_hidden_layers, t.num_hidden_layers, 'layers');
  requireAtMost('svd', 'num_key_value_heads', s.num_key_value_heads, t.num_key_value_heads, 'key/value heads');
  const perGroup = s.num_attention_heads / s.num_key_value_heads;
  const teacherPerGroup = t.num_attention_heads / t.num_key_value_heads;
  if (perGroup > teacherPerGroup) {
    throw new QkdError('CONFIG', `svd student init: ${perGroup} query heads per key/value head, more than the teacher's ${teacherPerGroup}`, {
      field: 'num_key_value_heads',
      hint: `at least ${Math.ceil(s.num_attention_heads / teacherPerGroup)} key/value heads`,
    });
  }
}

// ---- head and neuron selection ----------------------------------------------------

/**
 * Kept kv groups and query heads (ascending indices). A query head's score is
 * its OV-circuit norm ‖W_o[:, h] · W_v[g] diag(w)‖_F, computed through the
 * D×D Gram matrices; a group's score is the sum of its best Hs/Gs heads.
 */
function selectHeads(v: Matrix, o: Matrix, norm: Float32Array, t: LlamaConfig, s: LlamaConfig): { query: number[]; kv: number[] } {
  const D = headDim(t);
  const teacherPerGroup = t.num_attention_heads / t.num_key_value_heads;
  const perGroup = s.num_attention_heads / s.num_key_value_heads;
  const vGram = (g: number): Float64Array => gramOfRows(v, g * D, D, norm);
  const oGram = (h: number): Float64Array => gramOfCols(o, h * D, D);
  const groups: { g: number; score: number; heads: number[] }[] = [];
  for (let g = 0; g < t.num_key_value_heads; g++) {
    const vg = vGram(g);
    const scored: { h: number; score: number }[] = [];
    for (let i = 0; i < teacherPerGroup; i++) {
      const h = g * teacherPerGroup + i;
      const og = oGram(h);
      let f2 = 0;
      for (let k = 0; k < D * D; k++) f2 += og[k]! * vg[k]!;
      scored.push({ h, score: Math.sqrt(Math.max(f2, 0)) });
    }
    const best = topIndices(scored.map((x) => x.score), perGroup).map((i) => scored[i]!.h);
    groups.push({ g, score: best.reduce((a, h) => a + scored[h - g * teacherPerGroup]!.score, 0), heads: best });
  }
  const keptGroups = topIndices(groups.map((x) => x.score), s.num_key_value_heads);
  return { kv: keptGroups, query: keptGroups.flatMap((g) => groups[g]!.heads) };
}

/** G[a,b] = Σ_j W[r0+a, j] W[r0+b, j] w_j² over D rows starting at r0. */
function gramOfRows(m: Matrix, r0: number, D: number, norm: Float32Array): Float64Array {
  const g = new Float64Array(D * D);
  for (let a = 0; a < D; a++) {
    for (let b = 0; b <= a; b++) {
      let s = 0;
      const ra = (r0 + a) * m.cols;
      const rb = (r0 + b) * m.cols;
      for (let j = 0; j < m.cols; j++) s += m.data[ra + j]! * m.data[rb + j]! * norm[j]! * norm[j]!;
      g[a * D + b] = s;
      g[b * D + a] = s;
    }
  }
  return g;
}

/** G[a,b] = Σ_i W[i, c0+a] W[i, c0+b] over D columns starting at c0. */
function gramOfCols(m: Matrix, c0: number, D: number): Float64Array {
  const g = new Float64Array(D * D);
  for (let i = 0; i < m.rows; i++) {
    const row = i * m.cols + c0;
    for (let a = 0; a < D; a++) {
      const x = m.data[row + a]!;
      for (let b = 0; b < D; b++) g[a * D + b]! += x * m.data[row + b]!;
    }
  }
  return g;
}

/** The Is neurons with the largest ‖gate_i diag(w)‖·‖up_i diag(w)‖·‖down_:,i‖ (ascending indices). */
function selectNeurons(gate: Matrix, up: Matrix, down: Matrix, norm: Float32Array, keep: number): number[] {
  const I = gate.rows;
  if (keep === I) return Array.from({ length: I }, (_, i) => i);
  const downNorm2 = new Float64Array(I);
  for (let r = 0; r < down.rows; r++) for (let i = 0; i < I; i++) downNorm2[i]! += down.data[r * I + i]! ** 2;
  const rowNorm = (m: Matrix, i: number): number => {
    let s = 0;
    for (let j = 0; j < m.cols; j++) s += (m.data[i * m.cols + j]! * norm[j]!) ** 2;
    return Math.sqrt(s);
  };
  const scores = Array.from({ length: I }, (_, i) => rowNorm(gate, i) * rowNorm(up, i) * Math.sqrt(downNorm2[i]!));
  return topIndices(scores, keep);
}

/** Indices of the k largest scores, ascending by index (ties: lower index first). */
function topIndices(scores: readonly number[], k: number): number[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  return order.slice(0, k).sort((a, b) => a - b);
}

/** Rows (or columns) of whole D-blocks: block b covers b·D .. b·D + D − 1. */
function blocks(indices: readonly number[], D: number): number[] {
  return indices.flatMap((b) => Array.from({ length: D }, (_, i) => b * D + i));
}

// ---- the hidden basis ------------------------------------------------------------------

/**
 * U [C, c]: the top-c eigenvectors of Σ_k A_k / tr(A_k) with A = WᵀW for the
 * embedding and every reader (norm folded in), A = W Wᵀ for every writer, over
 * the layers the student keeps. Each matrix gets the same vote, so a large
 * vocabulary does not drown out the layers.
 */
function hiddenBasis(teacher: LlamaModel, layers: readonly number[], c: number): Matrix {
  const t = teacher.config;
  const C = t.hidden_size;
  const gram = new Float64Array(C * C);
  const add = (w: Tensor, side: 'in' | 'out', norm?: Float32Array): void => {
    const folded = norm === undefined ? w : new Tensor(w.shape, foldNorm({ rows: w.shape[0]!, cols: w.shape[1]!, data: w.data }, norm).data);
    const a = side === 'in' ? matmul(folded, folded, { transA: true }) : matmul(folded, folded, { transB: true });
    let trace = 0;
    for (let i = 0; i < C; i++) trace += a.data[i * C + i]!;
    if (trace > 0) for (let i = 0; i < C * C; i++) gram[i]! += a.data[i]! / trace;
  };
  const get = (name: string): Tensor => teacher.arena.get(name);
  const { fused, gemma } = familyTraits(t.model_type);
  // The factor a norm applies (Gemma's 1 + w).
  const factor = (name: string): Float32Array => (gemma ? get(name).data.map((w) => w + 1) : get(name).data);
  // A writer followed by Gemma's output norm writes diag(1 + w) W.
  const scaledRows = (w: Tensor, norm: Float32Array): Tensor => new Tensor(w.shape, w.data.map((x, i) => x * norm[Math.floor(i / w.shape[1]!)]!));
  add(get('model.embed_tokens.weight'), 'in');
  if (!t.tie_word_embeddings) add(get('lm_head.weight'), 'in', factor('model.norm.weight'));
  for (const l of layers) {
    const p = `model.layers.${l}`;
    const inNorm = factor(`${p}.input_layernorm.weight`);
    const mlpNorm = factor(`${p}.${gemma ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`);
    // Phi-3's fused qkv and gate_up count as one reader each (one trace normalisation).
    for (const n of fused ? ['qkv_proj'] : ['q_proj', 'k_proj', 'v_proj']) add(get(`${p}.self_attn.${n}.weight`), 'in', inNorm);
    for (const n of fused ? ['gate_up_proj'] : ['gate_proj', 'up_proj']) add(get(`${p}.mlp.${n}.weight`), 'in', mlpNorm);
    const o = get(`${p}.self_attn.o_proj.weight`);
    const down = get(`${p}.mlp.down_proj.weight`);
    add(gemma ? scaledRows(o, factor(`${p}.post_attention_layernorm.weight`)) : o, 'out');
    add(gemma ? scaledRows(down, factor(`${p}.post_feedforward_layernorm.weight`)) : down, 'out');
  }
  const { vectors } = symmetricEigen(gram, C);
  // vectors holds eigenvectors as columns, sorted by descending eigenvalue.
  const u = new Float32Array(C * c);
  for (let i = 0; i < C; i++) for (let k = 0; k < c; k++) u[i * c + k] = vectors[i * C + k]!;
  return { rows: C, cols: c, data: u };
}

/** f = ‖E U‖²_F / ‖E‖²_F: the share of the embedding energy the basis keeps. */
function capturedEnergy(embed: Matrix, basis: Matrix): number {
  return basis.rows === basis.cols ? 1 : energyRatio(multiply(embed, basis), embed);
}

/** ‖part‖²_F / ‖whole‖²_F (1 when whole is zero): the share of a writer's energy Uᵀ W keeps. */
function energyRatio(part: Matrix, whole: Matrix): number {
  let kept = 0;
  let total = 0;
  for (const x of part.data) kept += x * x;
  for (const x of whole.data) total += x * x;
  return total > 0 ? Math.min(1, kept / total) : 1;
}

/** diag(Uᵀ diag(w) U)_k = Σ_i U[i,k]² w_i. */
function projectedDiagonal(w: Float32Array, basis: Matrix): Float32Array {
  const out = new Float32Array(basis.cols);
  const acc = new Float64Array(basis.cols);
  for (let i = 0; i < basis.rows; i++) for (let k = 0; k < basis.cols; k++) acc[k]! += basis.data[i * basis.cols + k]! ** 2 * w[i]!;
  out.set(acc);
  return out;
}

// ---- small matrix helpers ------------------------------------------------------------

function identity(n: number): Matrix {
  const data = new Float32Array(n * n);
  for (let i = 0; i < n; i++) data[i * n + i] = 1;
  return { rows: n, cols: n, data };
}

function asTensor(m: Matrix): Tensor {
  return new Tensor([m.rows, m.cols], m.data);
}

/** A · B on the backend's GEMM. */
function multiply(a: Matrix, b: Matrix): Matrix {
  const out = matmul(asTensor(a), asTensor(b));
  return { rows: a.rows, cols: b.cols, data: out.data };
}

/** Aᵀ · B. */
function multiplyTransA(a: Matrix, b: Matrix): Matrix {
  const out = matmul(asTensor(a), asTensor(b), { transA: true });
  return { rows: a.cols, cols: b.cols, data: out.data };
}

function scaleMatrix(m: Matrix, s: number): Matrix {
  if (s === 1) return m;
  return { rows: m.rows, cols: m.cols, data: m.data.map((x) => x * s) };
}

/** W diag(w): column j scaled by w_j. */
function foldNorm(m: Matrix, w: Float32Array): Matrix {
  const data = new Float32Array(m.rows * m.cols);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) data[i * m.cols + j] = m.data[i * m.cols + j]! * w[j]!;
  return { rows: m.rows, cols: m.cols, data };
}

function sliceRows(m: Matrix, r0: number, r1: number): Matrix {
  return { rows: r1 - r0, cols: m.cols, data: m.data.subarray(r0 * m.cols, r1 * m.cols) };
}

function concatRows(parts: readonly Matrix[]): Matrix {
  const rows = parts.reduce((n, m) => n + m.rows, 0);
  const data = new Float32Array(rows * parts[0]!.cols);
  let at = 0;
  for (const m of parts) {
    data.set(m.data, at);
    at += m.data.length;
  }
  return { rows, cols: parts[0]!.cols, data };
}

function takeEntries(v: Float32Array, indices: readonly number[]): Float32Array {
  return Float32Array.from(indices, (i) => v[i]!);
}

function takeRows(m: Matrix, rows: readonly number[]): Matrix {
  const data = new Float32Array(rows.length * m.cols);
  rows.forEach((r, i) => data.set(m.data.subarray(r * m.cols, (r + 1) * m.cols), i * m.cols));
  return { rows: rows.length, cols: m.cols, data };
}

function takeCols(m: Matrix, cols: readonly number[]): Matrix {
  const data = new Float32Array(m.rows * cols.length);
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < cols.length; j++) data[i * cols.length + j] = m.data[i * m.cols + cols[j]!]!;
  }
  return { rows: m.rows, cols: cols.length, data };
}

/**
 * Minitron-style structured pruning (Muralidharan et al., "Compact Language
 * Models via Pruning and Knowledge Distillation", 2024; docs/minitron.md):
 * the importance of every attention head, MLP neuron, embedding channel and
 * layer is measured from forward passes over calibration text, and the
 * least important are removed to reach a smaller shape of the same family.
 *
 * Importance, per position then aggregated (sequence, then batch):
 *   head h of layer l      ‖o_proj input[…, h·D:(h+1)·D]‖₂ (the head's output)
 *   neuron i of layer l    |down_proj input[…, i]| (after the activation)
 *   channel j              Σ over every hidden-width RMSNorm output |x̂_j|
 *   layer l (depth)        block influence 1 − cos(x_in, x_out), mean over positions
 * Aggregation (configurable): per sequence the mean (or the L2 norm) over
 * its positions, then over the batch the L2 norm (or the mean) of those:
 * L2 over the batch of the sequence mean is the paper's best. Magnitudes are
 * used for neurons and channels (the paper's signed sums can cancel).
 *
 * Pruning keeps whole heads within the GQA structure (the Gs key/value
 * groups with the largest sum of their best Hs/Gs query heads, and those
 * heads), the Is most important neurons, the c most important channels in
 * every hidden-width tensor (embeddings, norms, the readers' input columns
 * and the writers' output rows: plain slicing, nothing folded), and either
 * the Ls layers of highest block influence or (depth 'ppl') all but the
 * contiguous block whose removal raises the calibration loss least. Every
 * family's extra tensors follow (biases, per-head norms, Gemma's extra
 * norms, Phi-3's fused matrices).
 */
import { QkdError } from '../errors.js';
import { LlamaModel } from '../models/llama.js';
import { derivedConfig, familyTraits, llamaParameterSpecs, type LlamaConfig } from '../models/llama-config.js';
import { RMSNorm } from '../nn/layers.js';
import { noGrad } from '../tensor/tape.js';
import { withLoaded } from '../tensor/tensor.js';
import type { Tensor } from '../tensor/tensor.js';

export interface Aggregation {
  /** Over a sequence's positions: mean (default) or l2. */
  sequence: 'mean' | 'l2';
  /** Over the batch's sequences: l2 (default) or mean. */
  batch: 'l2' | 'mean';
}

export const DEFAULT_AGGREGATION: Aggregation = { sequence: 'mean', batch: 'l2' };

export interface Importance {
  /** Per layer, per query head. */
  heads: Float64Array[];
  /** Per layer, per MLP neuron. */
  neurons: Float64Array[];
  /** Per hidden channel. */
  channels: Float64Array;
  /** Per layer: 1 − mean cos(input, output). */
  blockInfluence: Float64Array;
}

/** Sequence-then-batch aggregation of per-position scores, accumulated batch by batch. */
class Aggregator {
  private readonly total: Float64Array;
  private sequences = 0;
  constructor(
    readonly size: number,
    private readonly how: Aggregation,
  ) {
    this.total = new Float64Array(size);
  }

  /** values[b·T + t, k] for B sequences of T positions. */
  add(values: Float64Array, B: number, T: number): void {
    const n = this.size;
    const seq = new Float64Array(n);
    for (let b = 0; b < B; b++) {
      seq.fill(0);
      for (let t = 0; t < T; t++) {
        const row = (b * T + t) * n;
        for (let k = 0; k < n; k++) {
          const v = values[row + k]!;
          seq[k]! += this.how.sequence === 'mean' ? v : v * v;
        }
      }
      for (let k = 0; k < n; k++) {
        const s = this.how.sequence === 'mean' ? seq[k]! / T : Math.sqrt(seq[k]!);
        this.total[k]! += this.how.batch === 'l2' ? s * s : s;
      }
      this.sequences++;
    }
  }

  result(): Float64Array {
    return this.total.map((v) => (this.how.batch === 'l2' ? Math.sqrt(v) : v / Math.max(1, this.sequences)));
  }
}

/**
 * Importance of every head, neuron, channel and layer of `model` over
 * calibration batches (ids [B·T] each).
 */
export function measureImportance(model: LlamaModel, batches: readonly Int32Array[], B: number, T: number, aggregation: Aggregation = DEFAULT_AGGREGATION): Importance {
  const c = model.config;
  const D = c.head_dim;
  const L = c.num_hidden_layers;
  const C = c.hidden_size;
  const heads = Array.from({ length: L }, () => new Aggregator(c.num_attention_heads, aggregation));
  const neurons = Array.from({ length: L }, () => new Aggregator(c.intermediate_size, aggregation));
  const channels = new Aggregator(C, aggregation);
  const influence = new Float64Array(L);
  let positions = 0;
  const modules = model.namedModules();
  const removers: (() => void)[] = [];
  let channelSum: Float64Array | null = null;
  const layerInputs: (Tensor | null)[] = new Array<Tensor | null>(L + 1).fill(null);
  const hook = (name: string, fn: (input: Tensor | undefined, output: Tensor) => void): void => {
    const m = modules.get(name);
    if (m === undefined) throw new QkdError('STATE', `measureImportance: no module '${name}'`, { field: name });
    removers.push(m.registerForwardHook(({ input, output }) => fn(input, output)));
  };
  for (let l = 0; l < L; l++) {
    hook(`model.layers.${l}.self_attn.o_proj`, (input) => {
      const x = input!.data;
      const H = c.num_attention_heads;
      const v = new Float64Array(B * T * H);
      for (let r = 0; r < B * T; r++) {
        for (let h = 0; h < H; h++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += x[r * H * D + h * D + d]! ** 2;
          v[r * H + h] = Math.sqrt(s);
        }
      }
      heads[l]!.add(v, B, T);
    });
    hook(`model.layers.${l}.mlp.down_proj`, (input) => neurons[l]!.add(Float64Array.from(input!.data, Math.abs), B, T));
    hook(`model.layers.${l}`, (_, output) => {
      layerInputs[l + 1] = output;
    });
  }
  hook('model.embed_tokens', (_, output) => {
    layerInputs[0] = output;
  });
  for (const [name, m] of modules) {
    // Hidden-width norms only (not the per-head q/k norms).
    if (!(m instanceof RMSNorm) || m.weight.size !== C || /\.(q|k)_norm$/.test(name)) continue;
    removers.push(
      m.registerForwardHook(({ output }) => {
        channelSum ??= new Float64Array(B * T * C);
        const y = output.data;
        for (let i = 0; i < y.length; i++) channelSum[i]! += Math.abs(y[i]!);
      }),
    );
  }
  try {
    noGrad(() => {
      for (const ids of batches) {
        channelSum = null;
        model.forward(ids, B, T);
        channels.add(channelSum ?? new Float64Array(B * T * C), B, T);
        for (let l = 0; l < L; l++) {
          const a = layerInputs[l]!.data;
          const b = layerInputs[l + 1]!.data;
          for (let r = 0; r < B * T; r++) {
            let dot = 0;
            let na = 0;
            let nb = 0;
            for (let k = 0; k < C; k++) {
              const x = a[r * C + k]!;
              const y = b[r * C + k]!;
              dot += x * y;
              na += x * x;
              nb += y * y;
            }
            influence[l]! += 1 - (na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 1);
          }
        }
        positions += B * T;
      }
    });
  } finally {
    for (const r of removers) r();
  }
  return { heads: heads.map((a) => a.result()), neurons: neurons.map((a) => a.result()), channels: channels.result(), blockInfluence: influence.map((v) => v / Math.max(1, positions)) };
}

/** The target shape of a pruned model (any field left out is the teacher's). */
export interface PruneShape {
  hidden_size?: number;
  intermediate_size?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number;
  num_hidden_layers?: number;
}

export interface PruneOptions {
  /** How layers are dropped: block influence (default) or the contiguous block whose removal costs least (needs `blockLoss`). */
  depth?: 'block-influence' | 'ppl';
  /** Calibration loss of the teacher with layers [start, start + n) removed (depth 'ppl'). */
  blockLoss?: (kept: number[]) => number;
}

/** What pruning kept, for the report. */
export interface PruneReport {
  layers: number[];
  channels: number;
  heads: number[][];
  kvGroups: number[][];
  neurons: number;
  params: number;
}

function topIndices(scores: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: scores.length }, (_, i) => i)
    .sort((a, b) => scores[b]! - scores[a]! || a - b)
    .slice(0, k)
    .sort((a, b) => a - b);
}

/** Parameters of a config (tied embeddings counted once), without building the model. */
export function configParameters(c: LlamaConfig): number {
  return llamaParameterSpecs(c).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/** The student config of a prune: the teacher's family with the shape asked for, checked. */
export function prunedConfig(t: LlamaConfig, shape: PruneShape): LlamaConfig {
  const s = derivedConfig(t, { ...shape, head_dim: t.head_dim } as Partial<LlamaConfig> & Record<string, unknown>);
  const bad = (field: string, message: string, hint?: string): never => {
    throw new QkdError('CONFIG', `minitron pruning: ${message}`, { field, hint });
  };
  for (const f of ['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_key_value_heads', 'num_hidden_layers'] as const) {
    if (s[f] > t[f]) bad(f, `${f} ${s[f]} exceeds the teacher's ${t[f]} (pruning only removes)`);
  }
  if (s.num_attention_heads % s.num_key_value_heads !== 0) bad('num_key_value_heads', `${s.num_attention_heads} heads do not split into ${s.num_key_value_heads} key/value groups`);
  const perGroup = s.num_attention_heads / s.num_key_value_heads;
  if (perGroup > t.num_attention_heads / t.num_key_value_heads) bad('num_key_value_heads', `${perGroup} query heads per key/value head, more than the teacher's ${t.num_attention_heads / t.num_key_value_heads}`, `at least ${Math.ceil((s.num_attention_heads * t.num_key_value_heads) / t.num_attention_heads)} key/value heads`);
  return s;
}

/**
 * The widest shape of the teacher's depth with at most `params` parameters:
 * hidden size, heads (in whole key/value groups' proportion) and MLP width
 * shrink by one common factor (Minitron found width pruning better than depth).
 */
export function shapeForParameters(t: LlamaConfig, params: number): PruneShape {
  const at = (f: number): PruneShape => {
    const kv = Math.max(1, Math.round(f * t.num_key_value_heads));
    const perGroup = t.num_attention_heads / t.num_key_value_heads;
    const heads = Math.max(1, Math.min(t.num_attention_heads, Math.round(f * t.num_attention_heads / kv) * kv || kv));
    return {
      hidden_size: Math.max(1, Math.round(f * t.hidden_size)),
      intermediate_size: Math.max(1, Math.round(f * t.intermediate_size)),
      num_attention_heads: Math.min(heads, kv * perGroup),
      num_key_value_heads: kv,
    };
  };
  if (configParameters(t) <= params) return {};
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 40; i++) {
    const mid = (lo + hi) / 2;
    if (configParameters(prunedConfig(t, at(mid))) <= params) lo = mid;
    else hi = mid;
  }
  if (lo === 0) throw new QkdError('ARGUMENT', `no shape of the teacher's family has at most ${params} parameters`, { field: '--target-params', hint: `at least ${configParameters(prunedConfig(t, at(1e-9)))}` });
  return at(lo);
}

/** Kept key/value groups and query heads (ascending) of one layer, from head importance. */
function selectHeads(scores: Float64Array, t: LlamaConfig, s: LlamaConfig): { query: number[]; kv: number[] } {
  const teacherPerGroup = t.num_attention_heads / t.num_key_value_heads;
  const perGroup = s.num_attention_heads / s.num_key_value_heads;
  const best = Array.from({ length: t.num_key_value_heads }, (_, g) => topIndices(scores.subarray(g * teacherPerGroup, (g + 1) * teacherPerGroup), perGroup).map((h) => g * teacherPerGroup + h));
  const groupScore = best.map((hs) => hs.reduce((a, h) => a + scores[h]!, 0));
  const kv = topIndices(groupScore, s.num_key_value_heads);
  return { kv, query: kv.flatMap((g) => best[g]!) };
}

/** Rows or columns of blocks of D (head indices → element indices). */
function blocks(indices: readonly number[], D: number): number[] {
  return indices.flatMap((h) => Array.from({ length: D }, (_, d) => h * D + d));
}

/** [rows, cols] → the given rows (null: all) and columns (null: all). */
function slice(data: Float32Array, cols: number, rows: readonly number[] | null, keepCols: readonly number[] | null, rowCount: number): Float32Array {
  const r = rows ?? Array.from({ length: rowCount }, (_, i) => i);
  const k = keepCols ?? Array.from({ length: cols }, (_, i) => i);
  const out = new Float32Array(r.length * k.length);
  r.forEach((row, i) => {
    for (let j = 0; j < k.length; j++) out[i * k.length + j] = data[row * cols + k[j]!]!;
  });
  return out;
}

/** The teacher pruned to `shape` by `importance` (see the module comment). */
export function pruneModel(teacher: LlamaModel, importance: Importance, shape: PruneShape, options: PruneOptions = {}): { model: LlamaModel; report: PruneReport } {
  const t = teacher.config;
  const target = prunedConfig(t, shape);
  const L = t.num_hidden_layers;
  const D = t.head_dim;
  let layers: number[];
  if (target.num_hidden_layers === L) layers = Array.from({ length: L }, (_, i) => i);
  else if ((options.depth ?? 'block-influence') === 'block-influence') layers = topIndices(importance.blockInfluence, target.num_hidden_layers);
  else {
    if (options.blockLoss === undefined) throw new QkdError('ARGUMENT', "depth 'ppl' needs the calibration loss of each pruned depth", { field: 'blockLoss' });
    const n = L - target.num_hidden_layers;
    let best = Infinity;
    layers = [];
    for (let start = 0; start + n <= L; start++) {
      const kept = Array.from({ length: L }, (_, i) => i).filter((i) => i < start || i >= start + n);
      const loss = options.blockLoss(kept);
      if (loss < best) {
        best = loss;
        layers = kept;
      }
    }
  }
  // Sliding-window layer types follow the kept layers.
  const s = t.layer_types === null ? target : derivedConfig(target, { layer_types: layers.map((l) => t.layer_types![l]!) } as Partial<LlamaConfig> & Record<string, unknown>);
  const channels = s.hidden_size === t.hidden_size ? null : topIndices(importance.channels, s.hidden_size);
  const traits = familyTraits(t.model_type);
  const H = t.num_attention_heads * D;
  const G = t.num_key_value_heads * D;
  const I = t.intermediate_size;
  const student = new LlamaModel(s);
  const report: PruneReport = { layers, channels: s.hidden_size, heads: [], kvGroups: [], neurons: s.intermediate_size, params: 0 };
  const read = (name: string): Float32Array => {
    const p = teacher.arena.get(name);
    return withLoaded(p, () => Float32Array.from(p.data));
  };
  const set = (name: string, data: Float32Array): void => {
    const e = student.arena.entry(name);
    if (e.size !== data.length) throw new QkdError('STATE', `minitron pruning built ${data.length} values for ${name} of ${e.size}`, { field: name });
    student.arena.set(name, e.shape, data);
  };
  const handled = new Set<string>();
  const put = (name: string, data: Float32Array): void => {
    set(name, data);
    handled.add(name);
  };
  const pick = (v: Float32Array, indices: readonly number[] | null): Float32Array => (indices === null ? v : Float32Array.from(indices, (j) => v[j]!));
  const hiddenVector = (to: string, from: string): void => put(to, pick(read(from), channels));
  put('model.embed_tokens.weight', slice(read('model.embed_tokens.weight'), t.hidden_size, null, channels, t.vocab_size));
  hiddenVector('model.norm.weight', 'model.norm.weight');
  if (!s.tie_word_embeddings) put('lm_head.weight', slice(read(t.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'), t.hidden_size, null, channels, t.vocab_size));
  layers.forEach((from, l) => {
    const p = `model.layers.${from}`;
    const q = `model.layers.${l}`;
    const { query, kv } = selectHeads(importance.heads[from]!, t, s);
    report.heads.push(query);
    report.kvGroups.push(kv);
    const neurons = s.intermediate_size === I ? null : topIndices(importance.neurons[from]!, s.intermediate_size);
    const reader = (data: Float32Array, rows: number[] | null, rowCount: number) => slice(data, t.hidden_size, rows, channels, rowCount);
    if (traits.fused) {
      const w = read(`${p}.self_attn.qkv_proj.weight`);
      const offset = (o: number, idx: number[]) => idx.map((i) => o + i);
      put(`${q}.self_attn.qkv_proj.weight`, reader(w, [...blocks(query, D), ...offset(H, blocks(kv, D)), ...offset(H + G, blocks(kv, D))], H + 2 * G));
      const gu = read(`${p}.mlp.gate_up_proj.weight`);
      const n = neurons ?? Array.from({ length: I }, (_, i) => i);
      put(`${q}.mlp.gate_up_proj.weight`, reader(gu, [...n, ...n.map((i) => I + i)], 2 * I));
    } else {
      put(`${q}.self_attn.q_proj.weight`, reader(read(`${p}.self_attn.q_proj.weight`), blocks(query, D), H));
      put(`${q}.self_attn.k_proj.weight`, reader(read(`${p}.self_attn.k_proj.weight`), blocks(kv, D), G));
      put(`${q}.self_attn.v_proj.weight`, reader(read(`${p}.self_attn.v_proj.weight`), blocks(kv, D), G));
      put(`${q}.mlp.gate_proj.weight`, reader(read(`${p}.mlp.gate_proj.weight`), neurons, I));
      put(`${q}.mlp.up_proj.weight`, reader(read(`${p}.mlp.up_proj.weight`), neurons, I));
    }
    if (traits.qkvBias) {
      put(`${q}.self_attn.q_proj.bias`, pick(read(`${p}.self_attn.q_proj.bias`), blocks(query, D)));
      for (const w of ['k', 'v']) put(`${q}.self_attn.${w}_proj.bias`, pick(read(`${p}.self_attn.${w}_proj.bias`), blocks(kv, D)));
    }
    if (traits.qkNorm) for (const n of ['q_norm', 'k_norm']) put(`${q}.self_attn.${n}.weight`, read(`${p}.self_attn.${n}.weight`));
    put(`${q}.self_attn.o_proj.weight`, slice(read(`${p}.self_attn.o_proj.weight`), H, channels, blocks(query, D), t.hidden_size));
    put(`${q}.mlp.down_proj.weight`, slice(read(`${p}.mlp.down_proj.weight`), I, channels, neurons, t.hidden_size));
    // Every hidden-width norm of the layer (input, post-attention; Gemma's pre/post-feedforward too).
    for (const e of student.arena.entries) {
      const m = new RegExp(`^model\\.layers\\.${l}\\.([a-z_]+layernorm)\\.weight$`).exec(e.name);
      if (m) hiddenVector(e.name, `${p}.${m[1]}.weight`);
    }
  });
  const missed = student.arena.entries.filter((e) => !handled.has(e.name));
  if (missed.length > 0) throw new QkdError('STATE', `minitron pruning does not know how to prune ${missed[0]!.name} (${t.model_type})`, { field: missed[0]!.name });
  report.params = student.parameterCount;
  return { model: student, report };
}

/** A copy of the teacher with only the given layers (the 'ppl' depth criterion evaluates these). */
export function keepLayers(teacher: LlamaModel, layers: readonly number[]): LlamaModel {
  const s = derivedConfig(teacher.config, { num_hidden_layers: layers.length, ...(teacher.config.layer_types ? { layer_types: layers.map((l) => teacher.config.layer_types![l]!) } : {}) } as Partial<LlamaConfig> & Record<string, unknown>);
  const student = new LlamaModel(s);
  for (const e of student.arena.entries) {
    const m = /^model\.layers\.(\d+)\.(.+)$/.exec(e.name);
    const from = m ? `model.layers.${layers[Number(m[1])]}.${m[2]}` : e.name === 'lm_head.weight' && teacher.config.tie_word_embeddings ? 'model.embed_tokens.weight' : e.name;
    const src = teacher.arena.get(from);
    withLoaded(src, () => student.arena.set(e.name, e.shape, src.data));
  }
  return student;
}


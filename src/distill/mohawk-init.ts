/**
 * MOHAWK's student (docs/mohawk.md, docs/algorithms.md §7): a Transformer
 * of the student's shape (the teacher's layers, pruned) turned into a
 * state-space model. Every tensor the two share is copied (embeddings,
 * norms, MLPs, head, and the attention of the layers a hybrid keeps); each
 * state-space mixer starts from its layer's attention weights:
 *
 *   C_proj ← Q/√d,   B_proj ← K,   x_proj ← V,   out_proj ← O
 *
 * x and B are per group of heads (ssm.groups, default the teacher's
 * key/value head count, so they are exactly K and V); group g takes kv head
 * ⌊g·G/Gs⌋ (with Gs = H, each head its own kv head's copy)
 *
 * (the teacher's score scale 1/√d folded into C, so c_t·b_s starts as the
 * teacher's scaled score without RoPE)
 *
 * with identity convolutions, a unit gate, no skip (D = 0) and slow decays,
 * so the mixer starts as causal linear attention with a decay: M = CBᵀ ⊙ L
 * in place of softmax(QKᵀ/√d). Q/K biases, q/k norms and RoPE have no
 * counterpart and are dropped. A state width N other than the head width
 * copies the first min(N, D) rows of each head and draws the rest.
 */
import { QkdError } from '../errors.js';
import { LlamaModel } from '../models/llama.js';
import { familyTraits, headDim, isSsmLayer, llamaConfig, type LlamaConfig, type SsmSettings } from '../models/llama-config.js';
import { Mamba2Mixer, initMixerNeutral } from '../nn/ssm-mixer.js';
import { Rng } from '../tensor/random.js';
import { withLoaded } from '../tensor/tensor.js';

/** Attention layers of a hybrid chosen by sensitivity: the k student layers whose teacher attention scores highest. */
export function mostSensitiveLayers(scores: readonly number[], k: number): number[] {
  if (k > scores.length) throw new QkdError('CONFIG', `student.attention_layers asks for the ${k} most sensitive layers of ${scores.length}`, { field: 'student.attention_layers.most_sensitive', hint: `at most ${scores.length}` });
  const order = scores.map((s, l) => [s, l] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return order
    .slice(0, k)
    .map(([, l]) => l)
    .sort((a, b) => a - b);
}

/** The SSM config of a Transformer student's config. */
export function ssmStudentConfig(transformer: LlamaConfig, ssm: Partial<SsmSettings>): LlamaConfig {
  const settings: SsmSettings = {
    state_size: ssm.state_size ?? headDim(transformer),
    conv_kernel: ssm.conv_kernel ?? 4,
    groups: ssm.groups ?? transformer.num_key_value_heads,
    attention_layers: ssm.attention_layers ?? [],
  };
  return llamaConfig({ ...transformer, ssm: settings } as LlamaConfig & Record<string, unknown>);
}

/** The state-space student of a Transformer student (see the file comment). */
export function mohawkStudent(transformer: LlamaModel, ssm: Partial<SsmSettings>, seed: number): LlamaModel {
  if (transformer.config.ssm !== null) throw new QkdError('ARGUMENT', 'mohawkStudent converts a Transformer; this model already has state-space layers', { field: 'ssm' });
  const config = ssmStudentConfig(transformer.config, ssm);
  const student = new LlamaModel(config);
  const rng = new Rng(seed);
  const source = new Map(transformer.arena.entries.map((e) => [e.name, e.tensor]));
  for (const e of student.arena.entries) {
    const from = source.get(e.name);
    if (from !== undefined) withLoaded(from, () => e.tensor.data.set(from.data));
  }
  const H = config.num_attention_heads;
  const G = config.num_key_value_heads;
  const D = headDim(config);
  const N = config.ssm!.state_size;
  const Gs = config.ssm!.groups;
  const C = config.hidden_size;
  const fused = familyTraits(config.model_type).fused;
  for (let l = 0; l < config.num_hidden_layers; l++) {
    if (!isSsmLayer(config, l)) continue;
    const mixer = student.layers[l]!.attn as Mamba2Mixer;
    initMixerNeutral(mixer);
    const p = `model.layers.${l}.self_attn`;
    // Row r of the teacher-side projection of query head i, or of the kv head of the student's group i.
    const rows = (which: 'q' | 'k' | 'v'): ((i: number, r: number) => Float32Array) => {
      const w = fused ? source.get(`${p}.qkv_proj.weight`)! : source.get(`${p}.${which}_proj.weight`)!;
      const offset = !fused ? 0 : which === 'q' ? 0 : which === 'k' ? H * D : (H + G) * D;
      const perKv = which !== 'q';
      return (i, r) => {
        const src = offset + ((perKv ? Math.floor((i * G) / Gs) : i) * D + r) * C;
        return w.data.subarray(src, src + C) as Float32Array;
      };
    };
    const fill = (target: Float32Array, width: number, which: 'q' | 'k' | 'v'): void => {
      const row = rows(which);
      const count = which === 'q' ? H : Gs;
      for (let h = 0; h < count; h++) {
        for (let r = 0; r < width; r++) {
          const dst = (h * width + r) * C;
          if (r < D) target.set(row(h, r), dst);
          else for (let i = 0; i < C; i++) target[dst + i] = rng.normal() * config.initializer_range;
        }
      }
    };
    fill(mixer.cProj.weight.data as Float32Array, N, 'q');
    // The teacher scales its scores by 1/√d: folded into C, so c_t·b_s starts as the teacher's scaled score q_t·k_s.
    const scoreScale = 1 / Math.sqrt(config.query_pre_attn_scalar ?? D);
    for (let i = 0; i < mixer.cProj.weight.data.length; i++) mixer.cProj.weight.data[i]! *= scoreScale;
    fill(mixer.bProj.weight.data as Float32Array, N, 'k');
    fill(mixer.xProj.weight.data as Float32Array, D, 'v');
    mixer.outProj.weight.data.set(source.get(`${p}.o_proj.weight`)!.data);
  }
  return student;
}

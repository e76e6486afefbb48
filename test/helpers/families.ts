// The model families' test ground: real config.json files (test/fixtures/
// hf-configs) scaled down to test size with every family field kept, random
// weights that exercise every parameter, and an independent float64 forward
// pass written from the Hugging Face modeling definitions (modeling_llama,
// _mistral, _qwen2, _qwen3, _gemma2, _gemma3, _phi3), deliberately plain:
// nested loops, no qkd op, so it shares no code with what it checks.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configFromHfJson } from '../../src/models/llama-io.js';
import { LlamaModel } from '../../src/models/llama.js';
import { Rng } from '../../src/tensor/index.js';
import type { LlamaConfig } from '../../src/models/llama-config.js';

export const FAMILY_FIXTURES = ['smollm2-135m', 'llama-3.2-1b', 'mistral-7b-v0.3', 'qwen2.5-0.5b', 'qwen3-0.6b', 'gemma-2-2b', 'gemma-3-270m', 'phi-3-mini-4k'] as const;
export type FamilyFixture = (typeof FAMILY_FIXTURES)[number];

const FIXTURES = join(process.cwd(), 'test', 'fixtures', 'hf-configs');

export function realConfigJson(name: FamilyFixture): Record<string, unknown> {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as Record<string, unknown>;
}

/**
 * The real config with its sizes scaled down: head dim 8 ('quant': width
 * 256, head dim 64 or a decoupled 128, MLP 512), at most 4 query
 * heads (the GQA ratio kept where it divides), a decoupled head_dim kept
 * decoupled, 6 layers where layer types alternate (so a full layer of
 * Gemma 3's 5:1 pattern is in) else 2, windows of 4 tokens when the real
 * window is shorter than the context.
 */
export function scaledConfigJson(name: FamilyFixture, vocab = 101, context = 64, size: 'tiny' | 'quant' = 'tiny'): Record<string, unknown> {
  const j = realConfigJson(name);
  const H = j.num_attention_heads as number;
  const G = (j.num_key_value_heads as number | undefined) ?? H;
  const Hs = Math.min(H, 4);
  let Gs = Math.max(1, Math.round((G * Hs) / H));
  while (Hs % Gs !== 0) Gs--;
  const decoupled = typeof j.head_dim === 'number' && j.head_dim * H !== j.hidden_size;
  // 'quant': rows of 256 (and 512) columns, so every K-quant block fits.
  const D = size === 'tiny' ? 8 : decoupled ? 128 : 256 / Hs;
  const hidden = size === 'quant' ? 256 : decoupled ? Hs * D + 8 : Hs * D;
  const windowed = j.layer_types !== undefined || name.startsWith('gemma');
  const layers = windowed ? 6 : 2;
  const out: Record<string, unknown> = { ...j, vocab_size: vocab, hidden_size: hidden, intermediate_size: size === 'tiny' ? 48 : 512, num_hidden_layers: layers, num_attention_heads: Hs, num_key_value_heads: Gs, max_position_embeddings: context };
  if (typeof j.head_dim === 'number') out.head_dim = D;
  if (typeof j.query_pre_attn_scalar === 'number') out.query_pre_attn_scalar = D;
  if (typeof j.sliding_window === 'number') out.sliding_window = j.sliding_window >= (j.max_position_embeddings as number) ? context : 4;
  if (Array.isArray(j.layer_types)) out.layer_types = (j.layer_types as string[]).slice(0, layers);
  if (typeof j.max_window_layers === 'number') out.max_window_layers = layers;
  return out;
}

export function scaledConfig(name: FamilyFixture, vocab = 101, context = 64, size: 'tiny' | 'quant' = 'tiny'): LlamaConfig {
  return configFromHfJson(scaledConfigJson(name, vocab, context, size), `${name} (scaled)`);
}

/** Every parameter random: matrices N(0, std²), norm weights around their identity (± 0.2), biases N(0, std²). */
export function randomizeModel(model: LlamaModel, seed: number, std = 0.2): void {
  const rng = new Rng(seed);
  const gemma = model.config.model_type.startsWith('gemma');
  for (const e of model.arena.entries) {
    const d = e.tensor.data;
    const norm = e.shape.length === 1 && !e.name.endsWith('.bias');
    for (let i = 0; i < d.length; i++) d[i] = norm ? (gemma ? 0 : 1) + 0.2 * rng.normal() : std * rng.normal();
  }
}

// ---------------------------------------------------------------------------
// The float64 reference forward.

type Weights = (name: string) => Float32Array;

function rmsNorm(x: Float64Array, w: Float32Array, eps: number, plusOne: boolean): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return Float64Array.from(x, (v, i) => v * r * (plusOne ? 1 + w[i]! : w[i]!));
}

/** y = W x (+ b), W [out, in] row-major. */
function matvec(W: Float32Array, x: Float64Array, out: number, b?: Float32Array): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o]! : 0;
    for (let i = 0; i < n; i++) s += W[o * n + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

/** Hugging Face's inverse frequencies, with rope_scaling applied as its _compute_*_parameters do. */
function invFreqs(c: LlamaConfig, sliding: boolean): Float64Array {
  const D = c.head_dim;
  const base = sliding && c.rope_local_base_freq !== null ? c.rope_local_base_freq : c.rope_theta;
  const inv = Float64Array.from({ length: D / 2 }, (_, i) => 1 / Math.pow(base, (2 * i) / D));
  const s = sliding && c.rope_local_base_freq !== null ? null : c.rope_scaling;
  if (s?.rope_type === 'linear') return inv.map((f) => f / s.factor);
  if (s?.rope_type === 'llama3') {
    const lowWavelen = s.original_max_position_embeddings! / s.low_freq_factor!;
    const highWavelen = s.original_max_position_embeddings! / s.high_freq_factor!;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      const scaled = wavelen > lowWavelen ? f / s.factor : f;
      const smooth = (s.original_max_position_embeddings! / wavelen - s.low_freq_factor!) / (s.high_freq_factor! - s.low_freq_factor!);
      const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      return medium ? ((1 - smooth) * scaled) / s.factor + smooth * scaled : scaled;
    });
  }
  return inv;
}

/** rotate_half RoPE of one head vector at position p. */
function rope(x: Float64Array, p: number, inv: Float64Array): Float64Array {
  const half = x.length / 2;
  const y = new Float64Array(x.length);
  for (let i = 0; i < half; i++) {
    const a = p * inv[i]!;
    y[i] = x[i]! * Math.cos(a) - x[i + half]! * Math.sin(a);
    y[i + half] = x[i + half]! * Math.cos(a) + x[i]! * Math.sin(a);
  }
  return y;
}

const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
const silu = (x: number) => x / (1 + Math.exp(-x));

/** Logits [T][V] of one sequence, in float64. */
export function referenceLogits(c: LlamaConfig, w: Weights, ids: readonly number[]): Float64Array[] {
  const C = c.hidden_size, H = c.num_attention_heads, G = c.num_key_value_heads, D = c.head_dim, I = c.intermediate_size, V = c.vocab_size;
  const gemma = c.model_type === 'gemma2' || c.model_type === 'gemma3_text';
  const qwen2 = c.model_type === 'qwen2';
  const qkNorm = c.model_type === 'qwen3' || c.model_type === 'gemma3_text';
  const phi3 = c.model_type === 'phi3';
  const T = ids.length;
  const E = w('model.embed_tokens.weight');
  let xs: Float64Array[] = ids.map((id) => Float64Array.from(E.subarray(id * C, (id + 1) * C), (v) => (gemma ? v * Math.sqrt(C) : v)));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const sliding = c.sliding_window !== null && (c.layer_types === null || c.layer_types[l] === 'sliding_attention');
    const inv = invFreqs(c, sliding);
    // Attention: every position's q, k, v first.
    const qs: Float64Array[][] = [], ks: Float64Array[][] = [], vs: Float64Array[][] = [];
    for (let t = 0; t < T; t++) {
      const h = rmsNorm(xs[t]!, w(`${p}.input_layernorm.weight`), c.rms_norm_eps, gemma);
      let q: Float64Array, k: Float64Array, v: Float64Array;
      if (phi3) {
        const qkv = matvec(w(`${p}.self_attn.qkv_proj.weight`), h, (H + 2 * G) * D);
        q = qkv.slice(0, H * D); k = qkv.slice(H * D, (H + G) * D); v = qkv.slice((H + G) * D);
      } else {
        q = matvec(w(`${p}.self_attn.q_proj.weight`), h, H * D, qwen2 ? w(`${p}.self_attn.q_proj.bias`) : undefined);
        k = matvec(w(`${p}.self_attn.k_proj.weight`), h, G * D, qwen2 ? w(`${p}.self_attn.k_proj.bias`) : undefined);
        v = matvec(w(`${p}.self_attn.v_proj.weight`), h, G * D, qwen2 ? w(`${p}.self_attn.v_proj.bias`) : undefined);
      }
      const heads = (x: Float64Array, n: number): Float64Array[] => Array.from({ length: n }, (_, i) => x.slice(i * D, (i + 1) * D));
      let qh: Float64Array[] = heads(q, H), kh: Float64Array[] = heads(k, G);
      if (qkNorm) {
        qh = qh.map((x) => rmsNorm(x, w(`${p}.self_attn.q_norm.weight`), c.rms_norm_eps, gemma));
        kh = kh.map((x) => rmsNorm(x, w(`${p}.self_attn.k_norm.weight`), c.rms_norm_eps, gemma));
      }
      qs.push(qh.map((x) => rope(x, t, inv)));
      ks.push(kh.map((x) => rope(x, t, inv)));
      vs.push(heads(v, G));
    }
    const scaling = 1 / Math.sqrt(c.query_pre_attn_scalar ?? D);
    const next: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const o = new Float64Array(H * D);
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / G)); // repeat_kv
        const scores: number[] = [];
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qs[t]![h]![d]! * ks[s]![g]![d]!;
          let score = dot * scaling;
          if (c.attn_logit_softcapping !== null) score = Math.tanh(score / c.attn_logit_softcapping) * c.attn_logit_softcapping;
          scores.push(sliding && t - s >= c.sliding_window! ? -Infinity : score);
        }
        const m = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) for (let d = 0; d < D; d++) o[h * D + d]! += (e[s]! / z) * vs[s]![g]![d]!;
      }
      let a = matvec(w(`${p}.self_attn.o_proj.weight`), o, C);
      if (gemma) a = rmsNorm(a, w(`${p}.post_attention_layernorm.weight`), c.rms_norm_eps, true);
      const x1 = Float64Array.from(xs[t]!, (v, i) => v + a[i]!);
      const h2 = rmsNorm(x1, w(gemma ? `${p}.pre_feedforward_layernorm.weight` : `${p}.post_attention_layernorm.weight`), c.rms_norm_eps, gemma);
      let gate: Float64Array, up: Float64Array;
      if (phi3) {
        const gu = matvec(w(`${p}.mlp.gate_up_proj.weight`), h2, 2 * I);
        gate = gu.slice(0, I); up = gu.slice(I);
      } else {
        gate = matvec(w(`${p}.mlp.gate_proj.weight`), h2, I);
        up = matvec(w(`${p}.mlp.up_proj.weight`), h2, I);
      }
      const act = c.hidden_act === 'silu' ? silu : geluTanh;
      let m = matvec(w(`${p}.mlp.down_proj.weight`), Float64Array.from(gate, (g, i) => act(g) * up[i]!), C);
      if (gemma) m = rmsNorm(m, w(`${p}.post_feedforward_layernorm.weight`), c.rms_norm_eps, true);
      next.push(Float64Array.from(x1, (v, i) => v + m[i]!));
    }
    xs = next as typeof xs;
  }
  const head = c.tie_word_embeddings ? E : w('lm_head.weight');
  return xs.map((x) => {
    const logits = matvec(head, rmsNorm(x, w('model.norm.weight'), c.rms_norm_eps, gemma), V);
    const cap = c.final_logit_softcapping;
    return cap === null ? logits : logits.map((z) => Math.tanh(z / cap) * cap);
  });
}

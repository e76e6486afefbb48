/**
 * LLaMA-style decoder configuration, with Hugging Face LlamaConfig field
 * names so config.json files round-trip. Validated at the boundary: every
 * error names the field and what was expected.
 */
import { QkdError } from '../errors.js';

export interface LlamaConfig {
  /** Tokens in the vocabulary (byte-level default: 256). */
  vocab_size: number;
  /** Model width C. */
  hidden_size: number;
  /** SwiGLU inner width. */
  intermediate_size: number;
  num_hidden_layers: number;
  /** Query heads H; head dim D = hidden_size / H. */
  num_attention_heads: number;
  /** Key/value heads G (grouped-query attention; G divides H). */
  num_key_value_heads: number;
  rms_norm_eps: number;
  rope_theta: number;
  /** lm_head shares model.embed_tokens.weight. */
  tie_word_embeddings: boolean;
  /** Longest sequence the model is meant for (RoPE works beyond it). */
  max_position_embeddings: number;
  /** Std of the normal initialisation. */
  initializer_range: number;
}

/** Defaults for optional fields (as Hugging Face's LlamaConfig, except vocab and sizes). */
export const LLAMA_DEFAULTS: Pick<LlamaConfig, 'rms_norm_eps' | 'rope_theta' | 'tie_word_embeddings' | 'max_position_embeddings' | 'initializer_range'> = {
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  max_position_embeddings: 2048,
  initializer_range: 0.02,
};

const POSITIVE_INTS = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'max_position_embeddings'] as const;

/**
 * Builds a validated config from a partial object (e.g. parsed config.json).
 * `source` names the file for error messages.
 */
export function llamaConfig(input: Partial<LlamaConfig> & Record<string, unknown>, source?: string): LlamaConfig {
  const where = source === undefined ? {} : { path: source };
  const merged = { ...LLAMA_DEFAULTS, ...input } as Record<string, unknown>;
  if (merged.num_key_value_heads === undefined) merged.num_key_value_heads = merged.num_attention_heads;
  for (const field of POSITIVE_INTS) {
    const v = merged[field];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new QkdError('CONFIG', `LLaMA config: ${field} is ${JSON.stringify(v)}`, { ...where, field, hint: 'a positive integer' });
    }
  }
  for (const field of ['rms_norm_eps', 'rope_theta', 'initializer_range'] as const) {
    const v = merged[field];
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
      throw new QkdError('CONFIG', `LLaMA config: ${field} is ${JSON.stringify(v)}`, { ...where, field, hint: 'a positive number' });
    }
  }
  if (typeof merged.tie_word_embeddings !== 'boolean') {
    throw new QkdError('CONFIG', `LLaMA config: tie_word_embeddings is ${JSON.stringify(merged.tie_word_embeddings)}`, { ...where, field: 'tie_word_embeddings', hint: 'true or false' });
  }
  const c = merged as unknown as LlamaConfig;
  if (c.hidden_size % c.num_attention_heads !== 0 || (c.hidden_size / c.num_attention_heads) % 2 !== 0) {
    throw new QkdError('CONFIG', `LLaMA config: hidden_size ${c.hidden_size} is not num_attention_heads ${c.num_attention_heads} × an even head dim`, {
      ...where,
      field: 'hidden_size',
      hint: 'hidden_size = num_attention_heads × even head_dim (RoPE rotates pairs)',
    });
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    throw new QkdError('CONFIG', `LLaMA config: num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`, {
      ...where,
      field: 'num_key_value_heads',
      hint: 'a divisor of num_attention_heads',
    });
  }
  return {
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: c.num_key_value_heads,
    rms_norm_eps: c.rms_norm_eps,
    rope_theta: c.rope_theta,
    tie_word_embeddings: c.tie_word_embeddings,
    max_position_embeddings: c.max_position_embeddings,
    initializer_range: c.initializer_range,
  };
}

export function headDim(c: LlamaConfig): number {
  return c.hidden_size / c.num_attention_heads;
}

/** Parameter names and shapes in Hugging Face order and naming. */
export function llamaParameterSpecs(c: LlamaConfig): { name: string; shape: number[] }[] {
  const C = c.hidden_size;
  const D = headDim(c);
  const specs: { name: string; shape: number[] }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab_size, C] }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    specs.push(
      { name: `${p}.input_layernorm.weight`, shape: [C] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [c.num_attention_heads * D, C] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [c.num_key_value_heads * D, C] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [c.num_key_value_heads * D, C] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [C, c.num_attention_heads * D] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [C] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [c.intermediate_size, C] },
      { name: `${p}.mlp.up_proj.weight`, shape: [c.intermediate_size, C] },
      { name: `${p}.mlp.down_proj.weight`, shape: [C, c.intermediate_size] },
    );
  }
  specs.push({ name: 'model.norm.weight', shape: [C] });
  if (!c.tie_word_embeddings) specs.push({ name: 'lm_head.weight', shape: [c.vocab_size, C] });
  return specs;
}

/**
 * Decoder configuration of every model family qkd runs (LLaMA, Mistral,
 * Qwen2, Qwen3, Gemma 2/3, Phi-3: one layout with a few switches, see
 * docs/model-families.md), with Hugging Face config.json field names so the
 * files round-trip. Validated at the boundary: every error names the field
 * and what was expected. The type keeps its first family's name.
 */
import { QkdError } from '../errors.js';

/** The families, by Hugging Face model_type. */
export const MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3', 'gemma2', 'gemma3_text', 'phi3'] as const;
export type ModelType = (typeof MODEL_TYPES)[number];

/** RoPE frequency scaling (Hugging Face rope_scaling), see docs/model-families.md. */
export interface RopeScaling {
  /** linear: positions / factor; dynamic: NTK base growth past the trained context (inside it: none); llama3: per-frequency factors. */
  rope_type: 'linear' | 'dynamic' | 'llama3';
  factor: number;
  /** llama3 only. */
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

export type LayerType = 'full_attention' | 'sliding_attention';

/**
 * A state-space student (docs/mohawk.md): every layer not listed in
 * attention_layers has a Mamba-2-style mixer (model.layers.N.mixer.*) in
 * place of self-attention; MLPs, norms, embeddings and head are the
 * family's. A config.json with an `ssm` section names the architecture
 * QkdMohawkForCausalLM, so other tools refuse it instead of misreading it.
 */
export interface SsmSettings {
  /** State width N per head (default head_dim: B and C start as the teacher's K and Q). */
  state_size: number;
  /** Length of the depthwise causal convolution over x, B and C (default 4). */
  conv_kernel: number;
  /**
   * Groups of heads that share x and B, as grouped-query attention's query
   * heads share V and K (head h reads group ⌊h·groups/heads⌋); C and the
   * decay stay per head. Divides the head count; default the head count
   * (no sharing). MOHAWK students take the teacher's key/value head count,
   * so x and B start as exactly its V and K.
   */
  groups: number;
  /** Layers (0-based, ascending) that keep attention: a hybrid; [] is an all-SSM model. */
  attention_layers: number[];
}

/** The architectures entry of a model with an `ssm` section. */
export const MOHAWK_ARCHITECTURE = 'QkdMohawkForCausalLM';

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
  /** The family (default 'llama'). */
  model_type: ModelType;
  /** Per-head width D (default hidden_size / num_attention_heads; Qwen3 and Gemma decouple it). */
  head_dim: number;
  /** MLP activation of the gate: 'silu' (SwiGLU) or 'gelu_pytorch_tanh' (Gemma's GeGLU). */
  hidden_act: 'silu' | 'gelu_pytorch_tanh';
  rope_scaling: RopeScaling | null;
  /** Keys older than this many positions are masked in sliding layers (null: no window). */
  sliding_window: number | null;
  /** Per layer: full or sliding-window attention (null: every layer full, or every layer sliding when sliding_window is set). */
  layer_types: LayerType[] | null;
  /** RoPE base of the sliding layers (Gemma 3; null: rope_theta). */
  rope_local_base_freq: number | null;
  /** Attention scores are scaled by query_pre_attn_scalar^-1/2 (Gemma; null: head_dim). */
  query_pre_attn_scalar: number | null;
  /** cap·tanh(x/cap) on attention scores / final logits (Gemma 2; null: none). */
  attn_logit_softcapping: number | null;
  final_logit_softcapping: number | null;
  /** State-space mixers in place of attention (null: a Transformer). */
  ssm: SsmSettings | null;
}

/** What a family computes differently from LLaMA; derived from model_type alone. */
export interface FamilyTraits {
  /** Hugging Face architectures entry. */
  architecture: string;
  /** llama.cpp's general.architecture. */
  ggufArch: string;
  /** Biases on q_proj, k_proj, v_proj (Qwen2). */
  qkvBias: boolean;
  /** RMSNorm over each head of q and k before RoPE (Qwen3, Gemma 3). */
  qkNorm: boolean;
  /** RMSNorm scales by (1 + w), weights start at 0; embeddings scaled by √hidden_size; norms after attention and MLP too (Gemma). */
  gemma: boolean;
  /** One qkv_proj and one gate_up_proj matrix (Phi-3). */
  fused: boolean;
}

const FAMILY_TRAITS: Readonly<Record<ModelType, FamilyTraits>> = {
  llama: { architecture: 'LlamaForCausalLM', ggufArch: 'llama', qkvBias: false, qkNorm: false, gemma: false, fused: false },
  mistral: { architecture: 'MistralForCausalLM', ggufArch: 'llama', qkvBias: false, qkNorm: false, gemma: false, fused: false },
  qwen2: { architecture: 'Qwen2ForCausalLM', ggufArch: 'qwen2', qkvBias: true, qkNorm: false, gemma: false, fused: false },
  qwen3: { architecture: 'Qwen3ForCausalLM', ggufArch: 'qwen3', qkvBias: false, qkNorm: true, gemma: false, fused: false },
  gemma2: { architecture: 'Gemma2ForCausalLM', ggufArch: 'gemma2', qkvBias: false, qkNorm: false, gemma: true, fused: false },
  gemma3_text: { architecture: 'Gemma3ForCausalLM', ggufArch: 'gemma3', qkvBias: false, qkNorm: true, gemma: true, fused: false },
  phi3: { architecture: 'Phi3ForCausalLM', ggufArch: 'phi3', qkvBias: false, qkNorm: false, gemma: false, fused: true },
};

export function familyTraits(modelType: ModelType): FamilyTraits {
  return FAMILY_TRAITS[modelType];
}

/** The model_type of a Hugging Face architectures entry, if qkd runs it. */
export function modelTypeOfArchitecture(architecture: string): ModelType | undefined {
  return MODEL_TYPES.find((t) => familyTraits(t).architecture === architecture);
}

/** Defaults for optional fields (as Hugging Face's LlamaConfig, except vocab and sizes). */
export const LLAMA_DEFAULTS: Pick<LlamaConfig, 'rms_norm_eps' | 'rope_theta' | 'tie_word_embeddings' | 'max_position_embeddings' | 'initializer_range'> = {
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  max_position_embeddings: 2048,
  initializer_range: 0.02,
};

const OPTIONAL_NULLS = ['ssm', 'rope_scaling', 'sliding_window', 'layer_types', 'rope_local_base_freq', 'query_pre_attn_scalar', 'attn_logit_softcapping', 'final_logit_softcapping'] as const;

const POSITIVE_INTS = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'max_position_embeddings'] as const;

/**
 * Builds a validated config from a partial object (e.g. parsed config.json).
 * `source` names the file for error messages.
 */
export function llamaConfig(input: Partial<LlamaConfig> & Record<string, unknown>, source?: string): LlamaConfig {
  const where = source === undefined ? {} : { path: source };
  // Family defaults of Hugging Face's config classes where they differ from LLaMA's.
  const familyDefaults = input.model_type === 'gemma3_text' ? { tie_word_embeddings: true, rms_norm_eps: 1e-6, rope_local_base_freq: 10000 } : input.model_type === 'gemma2' ? { tie_word_embeddings: true, rms_norm_eps: 1e-6 } : input.model_type === 'qwen2' || input.model_type === 'qwen3' ? { rms_norm_eps: 1e-6 } : {};
  const merged = { ...LLAMA_DEFAULTS, ...familyDefaults, ...input } as Record<string, unknown>;
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
  const modelType = merged.model_type ?? 'llama';
  if (!MODEL_TYPES.includes(modelType as ModelType)) {
    throw new QkdError('CONFIG', `model_type ${JSON.stringify(modelType)} is not a family qkd runs`, { ...where, field: 'model_type', hint: MODEL_TYPES.join(', ') });
  }
  merged.model_type = modelType;
  const gemma = familyTraits(modelType as ModelType).gemma;
  if (merged.hidden_act === undefined) merged.hidden_act = merged.hidden_activation ?? (gemma ? 'gelu_pytorch_tanh' : 'silu');
  if (merged.hidden_act !== 'silu' && merged.hidden_act !== 'gelu_pytorch_tanh') {
    throw new QkdError('CONFIG', `hidden_act ${JSON.stringify(merged.hidden_act)} is not an activation qkd computes`, { ...where, field: 'hidden_act', hint: "'silu' (SwiGLU) or 'gelu_pytorch_tanh' (GeGLU)" });
  }
  if (merged.head_dim === undefined || merged.head_dim === null) {
    const h = merged.hidden_size as number;
    const n = merged.num_attention_heads as number;
    if (h % n !== 0) {
      throw new QkdError('CONFIG', `hidden_size ${h} is not a multiple of num_attention_heads ${n}, and no head_dim is given`, { ...where, field: 'hidden_size', hint: 'hidden_size = num_attention_heads × head_dim, or an explicit head_dim' });
    }
    merged.head_dim = h / n;
  }
  if (typeof merged.head_dim !== 'number' || !Number.isInteger(merged.head_dim) || merged.head_dim < 2 || merged.head_dim % 2 !== 0) {
    throw new QkdError('CONFIG', `head_dim is ${JSON.stringify(merged.head_dim)}`, { ...where, field: 'head_dim', hint: 'an even positive integer (RoPE rotates pairs)' });
  }
  for (const field of OPTIONAL_NULLS) if (merged[field] === undefined) merged[field] = null;
  for (const field of ['sliding_window', 'rope_local_base_freq', 'query_pre_attn_scalar', 'attn_logit_softcapping', 'final_logit_softcapping'] as const) {
    const v = merged[field];
    if (v !== null && (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v))) {
      throw new QkdError('CONFIG', `${field} is ${JSON.stringify(v)}`, { ...where, field, hint: 'a positive number or null' });
    }
  }
  merged.layer_types = checkLayerTypes(merged.layer_types, merged.num_hidden_layers as number, where);
  merged.rope_scaling = checkRopeScaling(merged.rope_scaling, where);
  merged.ssm = checkSsm(merged.ssm, merged.num_hidden_layers as number, merged.head_dim as number, merged.num_attention_heads as number, where);
  if (merged.layer_types !== null && (merged.layer_types as LayerType[]).includes('sliding_attention') && merged.sliding_window === null) {
    throw new QkdError('CONFIG', 'layer_types has sliding_attention layers but sliding_window is null', { ...where, field: 'sliding_window', hint: 'the window length in tokens' });
  }
  const c = merged as unknown as LlamaConfig;
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
    model_type: c.model_type,
    head_dim: c.head_dim,
    hidden_act: c.hidden_act,
    rope_scaling: c.rope_scaling,
    sliding_window: c.sliding_window,
    layer_types: c.layer_types,
    rope_local_base_freq: c.rope_local_base_freq,
    query_pre_attn_scalar: c.query_pre_attn_scalar,
    attn_logit_softcapping: c.attn_logit_softcapping,
    final_logit_softcapping: c.final_logit_softcapping,
    ssm: c.ssm,
  };
}

function checkSsm(v: unknown, layers: number, headDimension: number, heads: number, where: { path?: string }): SsmSettings | null {
  if (v === null) return null;
  const bad = (field: string, hint: string): never => {
    const value = field === '' ? v : (v as Record<string, unknown>)?.[field];
    throw new QkdError('CONFIG', `ssm${field === '' ? '' : '.' + field} is ${JSON.stringify(value)?.slice(0, 120)}`, { ...where, field: field === '' ? 'ssm' : `ssm.${field}`, hint });
  };
  if (typeof v !== 'object' || Array.isArray(v)) bad('', 'an object { state_size, conv_kernel, groups, attention_layers } or null');
  const r = v as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!['state_size', 'conv_kernel', 'groups', 'attention_layers'].includes(k)) bad(k, 'no such field (state_size, conv_kernel, groups, attention_layers)');
  const positive = (field: string, fallback: number): number => {
    const x = r[field] ?? fallback;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 1) bad(field, 'a positive integer');
    return x as number;
  };
  const list = r.attention_layers ?? [];
  if (!Array.isArray(list) || !list.every((l, i) => Number.isInteger(l) && l >= 0 && l < layers && (i === 0 || l > list[i - 1]))) {
    bad('attention_layers', `ascending distinct layer indices in [0, ${layers})`);
  }
  const groups = positive('groups', heads);
  if (heads % groups !== 0) bad('groups', `a divisor of num_attention_heads (${heads})`);
  return { state_size: positive('state_size', headDimension), conv_kernel: positive('conv_kernel', 4), groups, attention_layers: [...(list as number[])] };
}

/** Whether layer l has a state-space mixer (an SSM model's layer outside attention_layers). */
export function isSsmLayer(c: LlamaConfig, l: number): boolean {
  return c.ssm !== null && !c.ssm.attention_layers.includes(l);
}

/**
 * Names and shapes of one layer's mixer tensors (prefix: model.layers.N.mixer), docs/mohawk.md.
 * The convolution kernels are [channels, 1, K], Mamba's depthwise conv1d layout: not 2-D, so
 * quantization (which packs the 2-D weights) leaves them in float, like norms.
 */
export function ssmMixerSpecs(c: LlamaConfig, prefix: string): { name: string; shape: number[] }[] {
  const s = c.ssm!;
  const C = c.hidden_size;
  const H = c.num_attention_heads;
  const P = headDim(c);
  const N = s.state_size;
  const K = s.conv_kernel;
  const G = s.groups;
  return [
    { name: `${prefix}.x_proj.weight`, shape: [G * P, C] },
    { name: `${prefix}.B_proj.weight`, shape: [G * N, C] },
    { name: `${prefix}.C_proj.weight`, shape: [H * N, C] },
    { name: `${prefix}.z_proj.weight`, shape: [H * P, C] },
    { name: `${prefix}.z_proj.bias`, shape: [H * P] },
    { name: `${prefix}.dt_proj.weight`, shape: [H, C] },
    { name: `${prefix}.dt_proj.bias`, shape: [H] },
    { name: `${prefix}.conv_x.weight`, shape: [G * P, 1, K] },
    { name: `${prefix}.conv_x.bias`, shape: [G * P] },
    { name: `${prefix}.conv_B.weight`, shape: [G * N, 1, K] },
    { name: `${prefix}.conv_B.bias`, shape: [G * N] },
    { name: `${prefix}.conv_C.weight`, shape: [H * N, 1, K] },
    { name: `${prefix}.conv_C.bias`, shape: [H * N] },
    { name: `${prefix}.D`, shape: [H] },
    { name: `${prefix}.out_proj.weight`, shape: [C, H * P] },
  ];
}

function checkLayerTypes(v: unknown, layers: number, where: { path?: string }): LayerType[] | null {
  if (v === null) return null;
  if (!Array.isArray(v) || v.length !== layers || !v.every((t) => t === 'full_attention' || t === 'sliding_attention')) {
    throw new QkdError('CONFIG', `layer_types is ${JSON.stringify(v)?.slice(0, 120)}`, { ...where, field: 'layer_types', hint: `null, or num_hidden_layers (${layers}) entries each 'full_attention' or 'sliding_attention'` });
  }
  return [...(v as LayerType[])];
}

function checkRopeScaling(v: unknown, where: { path?: string }): RopeScaling | null {
  if (v === null) return null;
  const bad = (field: string, hint: string): never => {
    throw new QkdError('CONFIG', `rope_scaling.${field} is ${JSON.stringify((v as Record<string, unknown>)?.[field])}`, { ...where, field: `rope_scaling.${field}`, hint });
  };
  if (typeof v !== 'object' || Array.isArray(v)) bad('', 'an object or null');
  const r = v as Record<string, unknown>;
  const type = r.rope_type ?? r.type;
  if (type === 'default') return null;
  if (type !== 'linear' && type !== 'dynamic' && type !== 'llama3') bad('rope_type', "'linear', 'dynamic' or 'llama3' (yarn, longrope: not supported)");
  const positive = (field: string): number => {
    const x = r[field];
    if (typeof x !== 'number' || !(x > 0) || !Number.isFinite(x)) bad(field, 'a positive number');
    return x as number;
  };
  const out: RopeScaling = { rope_type: type as RopeScaling['rope_type'], factor: positive('factor') };
  if (type === 'llama3') {
    out.low_freq_factor = positive('low_freq_factor');
    out.high_freq_factor = positive('high_freq_factor');
    out.original_max_position_embeddings = positive('original_max_position_embeddings');
    if (!(out.high_freq_factor > out.low_freq_factor)) bad('high_freq_factor', 'greater than low_freq_factor');
  }
  return out;
}

export function headDim(c: LlamaConfig): number {
  return c.head_dim;
}

/** Whether layer l masks keys older than sliding_window. */
export function isSlidingLayer(c: LlamaConfig, l: number): boolean {
  if (c.sliding_window === null) return false;
  return c.layer_types === null ? true : c.layer_types[l] === 'sliding_attention';
}

/** Parameter names and shapes in Hugging Face order and naming. */
export function llamaParameterSpecs(c: LlamaConfig): { name: string; shape: number[] }[] {
  const C = c.hidden_size;
  const D = headDim(c);
  const H = c.num_attention_heads;
  const G = c.num_key_value_heads;
  const I = c.intermediate_size;
  const f = familyTraits(c.model_type);
  const specs: { name: string; shape: number[] }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab_size, C] }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    specs.push({ name: `${p}.input_layernorm.weight`, shape: [C] });
    if (isSsmLayer(c, l)) specs.push(...ssmMixerSpecs(c, `${p}.mixer`));
    else if (f.fused) specs.push({ name: `${p}.self_attn.qkv_proj.weight`, shape: [(H + 2 * G) * D, C] });
    else {
      specs.push({ name: `${p}.self_attn.q_proj.weight`, shape: [H * D, C] });
      if (f.qkvBias) specs.push({ name: `${p}.self_attn.q_proj.bias`, shape: [H * D] });
      specs.push({ name: `${p}.self_attn.k_proj.weight`, shape: [G * D, C] });
      if (f.qkvBias) specs.push({ name: `${p}.self_attn.k_proj.bias`, shape: [G * D] });
      specs.push({ name: `${p}.self_attn.v_proj.weight`, shape: [G * D, C] });
      if (f.qkvBias) specs.push({ name: `${p}.self_attn.v_proj.bias`, shape: [G * D] });
    }
    if (!isSsmLayer(c, l)) specs.push({ name: `${p}.self_attn.o_proj.weight`, shape: [C, H * D] });
    if (f.qkNorm && !isSsmLayer(c, l)) specs.push({ name: `${p}.self_attn.q_norm.weight`, shape: [D] }, { name: `${p}.self_attn.k_norm.weight`, shape: [D] });
    specs.push({ name: `${p}.post_attention_layernorm.weight`, shape: [C] });
    if (f.gemma) specs.push({ name: `${p}.pre_feedforward_layernorm.weight`, shape: [C] }, { name: `${p}.post_feedforward_layernorm.weight`, shape: [C] });
    if (f.fused) specs.push({ name: `${p}.mlp.gate_up_proj.weight`, shape: [2 * I, C] });
    else specs.push({ name: `${p}.mlp.gate_proj.weight`, shape: [I, C] }, { name: `${p}.mlp.up_proj.weight`, shape: [I, C] });
    specs.push({ name: `${p}.mlp.down_proj.weight`, shape: [C, I] });
  }
  specs.push({ name: 'model.norm.weight', shape: [C] });
  if (!c.tie_word_embeddings) specs.push({ name: 'lm_head.weight', shape: [c.vocab_size, C] });
  return specs;
}

/**
 * A config that differs from `base` in `overrides` (a student shape, fewer
 * layers): a head_dim that followed from hidden_size / heads follows the new
 * values, and a periodic layer_types pattern (Gemma: every p-th layer full)
 * is laid out again over the new depth.
 */
export function derivedConfig(base: LlamaConfig, overrides: Partial<LlamaConfig> & Record<string, unknown>, source?: string): LlamaConfig {
  const next: Record<string, unknown> = { ...base, ...overrides };
  const reshaped = overrides.hidden_size !== undefined || overrides.num_attention_heads !== undefined;
  if (reshaped && overrides.head_dim === undefined && base.head_dim * base.num_attention_heads === base.hidden_size) delete next.head_dim;
  const layers = (next.num_hidden_layers as number) ?? base.num_hidden_layers;
  if (overrides.layer_types === undefined && base.layer_types !== null && layers !== base.layer_types.length) {
    const firstFull = base.layer_types.indexOf('full_attention');
    const period = firstFull + 1;
    const periodic = firstFull >= 0 && base.layer_types.every((t, i) => (t === 'full_attention') === ((i + 1) % period === 0));
    if (!periodic) {
      throw new QkdError('CONFIG', `the teacher's layer_types has no period to lay out over ${layers} layers`, { ...(source === undefined ? {} : { path: source }), field: 'layer_types', hint: `the student's layer_types (${layers} entries)` });
    }
    next.layer_types = Array.from({ length: layers }, (_, i) => ((i + 1) % period === 0 ? 'full_attention' : 'sliding_attention'));
  }
  return llamaConfig(next as Partial<LlamaConfig> & Record<string, unknown>, source);
}

/**
 * Refuses a checkpoint whose tensors (Hugging Face names) include decoder
 * layers past the config's count: the config and the weights do not belong
 * together, and loading only the first layers would run another model
 * without a word. `field` names the config key that gave the count.
 */
export function refuseLayersBeyond(names: Iterable<string>, layers: number, path: string, field: string): void {
  let last = -1;
  let example = '';
  for (const name of names) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m !== null && Number(m[1]) > last) {
      last = Number(m[1]);
      example = name;
    }
  }
  if (last >= layers) {
    throw new QkdError('CONFIG', `the checkpoint holds decoder layers up to ${last} ('${example}'), but ${field} says ${layers}`, { path, field, hint: `${last + 1}, the checkpoint's layer count (or the checkpoint this config belongs to)` });
  }
}

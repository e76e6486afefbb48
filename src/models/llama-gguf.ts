/**
 * A decoder of any family qkd runs as llama.cpp stores it in GGUF: the
 * architecture's hyper-parameters (`llama.*`, `qwen2.*`, `qwen3.*`,
 * `gemma2.*`, `gemma3.*`, `phi3.*`), llama.cpp's tensor names
 * (io/gguf-names.ts), and the tensors as llama.cpp's own converter writes
 * them (docs/model-families.md):
 * - llama: the attn_q/attn_k rows of each head permuted from Hugging Face's
 *   rotate-half RoPE pairing (i, i + d/2) to adjacent pairs (2i, 2i + 1);
 *   the other architectures run rotate-half RoPE ("NEOX") and keep the rows;
 * - Gemma: norm weights stored as 1 + w (llama.cpp multiplies by them);
 * - llama3 RoPE scaling: a rope_freqs tensor of per-frequency divisors.
 * Reading undoes each of these, so a model written and read back is the
 * same model, and llama.cpp runs the same function.
 */
import { QkdError } from '../errors.js';
import { openGguf, type GgufFile } from '../io/gguf-reader.js';
import type { GgufTensorToWrite, GgufWriteType } from '../io/gguf-writer.js';
import type { GgufValue } from '../io/gguf-types.js';
import { ggufToHfName, hfToGgufName } from '../io/gguf-names.js';
import { halfToInterleavedRows, interleavedToHalfRows } from '../io/llama2c.js';
import { ropeFrequencies, type LlamaModel } from './llama.js';
import { newModel, putParameter, refuseIfTooBig, type Precision } from './precision.js';
import { MODEL_TYPES, familyTraits, headDim, isSlidingLayer, llamaConfig, llamaParameterSpecs, refuseLayersBeyond, type LlamaConfig, type ModelType } from './llama-config.js';

/** The llama.cpp architectures qkd reads, and the family each is. */
const ARCH_TYPES: Readonly<Record<string, ModelType>> = { llama: 'llama', qwen2: 'qwen2', qwen3: 'qwen3', gemma2: 'gemma2', gemma3: 'gemma3_text', phi3: 'phi3' };

/**
 * What llama.cpp would compute differently from qkd for this config, or
 * null: the export is refused with this reason rather than writing a file
 * llama.cpp runs as another function.
 */
export function ggufExportProblem(c: LlamaConfig): { field: string; reason: string } | null {
  const f = familyTraits(c.model_type);
  if (c.sliding_window !== null && !f.gemma && c.model_type !== 'phi3') {
    return { field: 'sliding_window', reason: `llama.cpp's ${f.ggufArch} architecture has no sliding-window attention (window ${c.sliding_window})` };
  }
  if (f.gemma && (c.query_pre_attn_scalar ?? headDim(c)) !== headDim(c)) {
    return { field: 'query_pre_attn_scalar', reason: `llama.cpp scales Gemma's attention scores by head_dim^-1/2 (${headDim(c)}), not query_pre_attn_scalar ${c.query_pre_attn_scalar}` };
  }
  if (!f.gemma && (c.attn_logit_softcapping !== null || c.final_logit_softcapping !== null)) {
    return { field: 'attn_logit_softcapping', reason: `llama.cpp's ${f.ggufArch} architecture has no logit soft-capping` };
  }
  if (c.model_type === 'gemma3_text' && c.attn_logit_softcapping !== null) return { field: 'attn_logit_softcapping', reason: "llama.cpp's gemma3 architecture has no attention soft-capping" };
  if (c.rope_scaling?.rope_type === 'llama3' && f.ggufArch !== 'llama') return { field: 'rope_scaling', reason: `llama.cpp applies llama3 RoPE factors to llama models, not ${f.ggufArch}` };
  if (c.rope_local_base_freq !== null && c.model_type !== 'gemma3_text' && c.model_type !== 'gemma2') return { field: 'rope_local_base_freq', reason: `llama.cpp's ${f.ggufArch} architecture has one RoPE base` };
  return null;
}

/** The `<arch>.*` and `general.*` metadata of a model's shape. */
export function llamaGgufMetadata(c: LlamaConfig, name: string): Record<string, GgufValue> {
  const problem = ggufExportProblem(c);
  if (problem !== null) throw new QkdError('CONFIG', `cannot export to GGUF: ${problem.reason}`, { field: problem.field, hint: 'a config llama.cpp computes as qkd does (docs/model-families.md)' });
  const arch = familyTraits(c.model_type).ggufArch;
  const D = headDim(c);
  const m: Record<string, GgufValue> = {
    'general.architecture': { type: 'string', value: arch },
    'general.name': { type: 'string', value: name },
    [`${arch}.context_length`]: { type: 'u32', value: c.max_position_embeddings },
    [`${arch}.embedding_length`]: { type: 'u32', value: c.hidden_size },
    [`${arch}.block_count`]: { type: 'u32', value: c.num_hidden_layers },
    [`${arch}.feed_forward_length`]: { type: 'u32', value: c.intermediate_size },
    [`${arch}.rope.dimension_count`]: { type: 'u32', value: D },
    [`${arch}.attention.head_count`]: { type: 'u32', value: c.num_attention_heads },
    [`${arch}.attention.head_count_kv`]: { type: 'u32', value: c.num_key_value_heads },
    [`${arch}.attention.key_length`]: { type: 'u32', value: D },
    [`${arch}.attention.value_length`]: { type: 'u32', value: D },
    [`${arch}.attention.layer_norm_rms_epsilon`]: { type: 'f32', value: c.rms_norm_eps },
    [`${arch}.rope.freq_base`]: { type: 'f32', value: c.rope_theta },
    [`${arch}.vocab_size`]: { type: 'u32', value: c.vocab_size },
  };
  if (c.rope_scaling?.rope_type === 'linear') {
    m[`${arch}.rope.scaling.type`] = { type: 'string', value: 'linear' };
    m[`${arch}.rope.scaling.factor`] = { type: 'f32', value: c.rope_scaling.factor };
  }
  if (c.sliding_window !== null) {
    m[`${arch}.attention.sliding_window`] = { type: 'u32', value: c.sliding_window };
    if (familyTraits(c.model_type).gemma) {
      m[`${arch}.attention.sliding_window_pattern`] = { type: 'array', itemType: 'bool', value: Array.from({ length: c.num_hidden_layers }, (_, l) => isSlidingLayer(c, l)) };
    }
  }
  if (c.rope_local_base_freq !== null) m[`${arch}.rope.freq_base_swa`] = { type: 'f32', value: c.rope_local_base_freq };
  if (c.attn_logit_softcapping !== null) m[`${arch}.attn_logit_softcapping`] = { type: 'f32', value: c.attn_logit_softcapping };
  if (c.final_logit_softcapping !== null) m[`${arch}.final_logit_softcapping`] = { type: 'f32', value: c.final_logit_softcapping };
  return m;
}

/** Heads whose rows a tensor holds, when llama.cpp permutes its rows (attn_q, attn_k of llama models); else 0. */
function permutedHeads(hfName: string, c: LlamaConfig): number {
  if (familyTraits(c.model_type).ggufArch !== 'llama') return 0;
  if (hfName.endsWith('self_attn.q_proj.weight')) return c.num_attention_heads;
  if (hfName.endsWith('self_attn.k_proj.weight')) return c.num_key_value_heads;
  return 0;
}

/** Gemma's norm weights w are stored as 1 + w. */
function storedOffset(hfName: string, c: LlamaConfig): number {
  return familyTraits(c.model_type).gemma && hfName.endsWith('norm.weight') ? 1 : 0;
}

/**
 * llama3 RoPE scaling as llama.cpp's rope_freqs tensor: per frequency, the
 * divisor of its unscaled inverse frequency (1 for the short wavelengths,
 * the factor for the long ones).
 */
function ropeFreqsTensor(c: LlamaConfig): Float32Array | null {
  if (c.rope_scaling?.rope_type !== 'llama3') return null;
  const scaled = ropeFrequencies(c, false).invFreq!;
  const D = headDim(c);
  return Float32Array.from(scaled, (f, i) => Math.pow(c.rope_theta, (-2 * i) / D) / f);
}

/**
 * The tensors of a model for writeGguf, each in the type `typeOf` gives it;
 * data is produced when the writer asks (one tensor in memory at a time).
 * A tied lm_head is not written: llama.cpp reuses token_embd, as it does
 * for the Hugging Face models it converts.
 */
export function llamaGgufTensors(model: LlamaModel, typeOf: (hfName: string, shape: readonly number[]) => GgufWriteType, importanceOf?: (hfName: string) => Float32Array | undefined): GgufTensorToWrite[] {
  const c = model.config;
  const arch = familyTraits(c.model_type).ggufArch;
  const tensors: GgufTensorToWrite[] = llamaParameterSpecs(c)
    .filter((spec) => !(c.tie_word_embeddings && spec.name === 'lm_head.weight'))
    .map((spec) => {
      const heads = permutedHeads(spec.name, c);
      const offset = storedOffset(spec.name, c);
      return {
        name: hfToGgufName(spec.name, arch),
        shape: spec.shape,
        // 1-D tensors (norms, biases) stay F32, as llama.cpp requires.
        type: spec.shape.length === 1 ? 'F32' : typeOf(spec.name, spec.shape),
        // Row permutations keep columns, so the per-column importance applies as it is.
        ...(importanceOf?.(spec.name) !== undefined ? { importance: importanceOf(spec.name)! } : {}),
        data: () => {
          const w = model.arena.get(spec.name).data as Float32Array;
          if (offset !== 0) return Float32Array.from(w, (x) => x + offset);
          return heads > 0 ? halfToInterleavedRows(w, heads, spec.shape[1]!) : w;
        },
      };
    });
  const freqs = ropeFreqsTensor(c);
  if (freqs !== null) tensors.push({ name: 'rope_freqs.weight', shape: [freqs.length], type: 'F32', data: freqs });
  return tensors;
}

function metaNumber(f: GgufFile, key: string, required: boolean): number | undefined {
  const v = f.metadata.get(key);
  if (v === undefined) {
    if (required) throw new QkdError('IO', `GGUF metadata lacks ${key}`, { path: f.path, field: key, hint: 'a llama model written by llama.cpp or qkd' });
    return undefined;
  }
  if (v.type === 'string' || v.type === 'array' || v.type === 'bool') throw new QkdError('IO', `GGUF metadata ${key} is a ${v.type}, not a number`, { path: f.path, field: key });
  return Number(v.value);
}

/** The model shape of a GGUF of an architecture qkd runs (refuses others, and what qkd would compute differently, by name). */
export function llamaConfigFromGguf(f: GgufFile): LlamaConfig {
  const archValue = f.metadata.get('general.architecture');
  const arch = archValue?.type === 'string' ? archValue.value : undefined;
  const modelType = arch === undefined ? undefined : ARCH_TYPES[arch];
  if (modelType === undefined) {
    const got = arch === undefined ? 'missing' : `'${arch}'`;
    throw new QkdError('IO', `GGUF architecture ${got} is not supported`, { path: f.path, field: 'general.architecture', hint: `one of ${Object.keys(ARCH_TYPES).join(', ')} (families ${MODEL_TYPES.join(', ')})` });
  }
  const key = (k: string) => `${arch}.${k}`;
  const hidden = metaNumber(f, key('embedding_length'), true)!;
  const heads = metaNumber(f, key('attention.head_count'), true)!;
  const layers = metaNumber(f, key('block_count'), true)!;
  const embd = f.tensors.find((t) => t.name === 'token_embd.weight');
  if (embd === undefined) throw new QkdError('IO', 'GGUF has no token_embd.weight', { path: f.path, field: 'token_embd.weight' });
  const vocab = metaNumber(f, key('vocab_size'), false) ?? embd.shape[0]!;
  const keyLength = metaNumber(f, key('attention.key_length'), false) ?? hidden / heads;
  const valueLength = metaNumber(f, key('attention.value_length'), false) ?? keyLength;
  if (valueLength !== keyLength) throw new QkdError('IO', `GGUF value_length ${valueLength} differs from key_length ${keyLength}, which qkd does not run`, { path: f.path, field: key('attention.value_length') });
  const ropeDims = metaNumber(f, key('rope.dimension_count'), false);
  if (ropeDims !== undefined && ropeDims !== keyLength) {
    throw new QkdError('IO', `GGUF rope.dimension_count ${ropeDims} is not the head size ${keyLength}: partial RoPE is not supported`, { path: f.path, field: key('rope.dimension_count') });
  }
  // RoPE scaling: linear is a config field; per-frequency factors (Llama-3.1+'s rope_freqs.weight) and YaRN are not read back.
  const scaling = f.stringValue(key('rope.scaling.type'));
  const factor = metaNumber(f, key('rope.scaling.factor'), false) ?? metaNumber(f, key('rope.scale_linear'), false);
  let ropeScaling: LlamaConfig['rope_scaling'] = null;
  if (f.tensors.some((t) => t.name === 'rope_freqs.weight')) ropeScaling = llama3ScalingOf(f, f.readFloat32('rope_freqs.weight'), metaNumber(f, key('rope.freq_base'), false) ?? 10000, keyLength);
  if (scaling !== undefined && scaling !== 'none' && !(scaling === 'linear' && (factor === undefined || factor === 1))) {
    if (scaling !== 'linear') throw new QkdError('IO', `the GGUF uses RoPE scaling '${scaling}', which qkd does not compute`, { path: f.path, field: key('rope.scaling.type'), hint: "'none' or 'linear'" });
    ropeScaling = { rope_type: 'linear', factor: factor! };
  }
  if ((metaNumber(f, key('expert_count'), false) ?? 0) > 0) throw new QkdError('IO', 'the GGUF is a mixture of experts, which qkd does not run', { path: f.path, field: key('expert_count'), hint: 'a dense model' });
  const context = metaNumber(f, key('context_length'), true)!;
  const window = metaNumber(f, key('attention.sliding_window'), false);
  const gemma = familyTraits(modelType).gemma;
  let slidingWindow: number | null = null;
  let layerTypes: LlamaConfig['layer_types'] = null;
  if (window !== undefined && window > 0 && window < context) {
    if (!gemma) {
      // llama.cpp ignores Phi-3's window, and its llama/qwen architectures have none: qkd computes what llama.cpp does.
      if (modelType !== 'phi3') throw new QkdError('IO', `the GGUF declares sliding-window attention (${window} tokens of a ${context}-token context), which llama.cpp's ${arch} architecture does not apply`, { path: f.path, field: key('attention.sliding_window') });
    } else {
      slidingWindow = window;
      const pattern = f.metadata.get(key('attention.sliding_window_pattern'));
      let sliding: boolean[];
      if (pattern?.type === 'array') sliding = pattern.value.map((v) => v === true);
      else {
        const period = pattern !== undefined && pattern.type !== 'string' && pattern.type !== 'bool' ? Number(pattern.value) : modelType === 'gemma2' ? 2 : 6;
        sliding = Array.from({ length: layers }, (_, l) => l % period < period - 1);
      }
      if (sliding.length !== layers) throw new QkdError('IO', `sliding_window_pattern has ${sliding.length} entries for ${layers} layers`, { path: f.path, field: key('attention.sliding_window_pattern') });
      layerTypes = sliding.map((s) => (s ? 'sliding_attention' : 'full_attention'));
    }
  }
  const swaBase = metaNumber(f, key('rope.freq_base_swa'), false);
  const ropeTheta = metaNumber(f, key('rope.freq_base'), false) ?? 10000;
  return llamaConfig(
    {
      model_type: modelType,
      vocab_size: vocab,
      hidden_size: hidden,
      intermediate_size: metaNumber(f, key('feed_forward_length'), true)!,
      num_hidden_layers: layers,
      num_attention_heads: heads,
      num_key_value_heads: metaNumber(f, key('attention.head_count_kv'), false) ?? heads,
      head_dim: keyLength,
      max_position_embeddings: context,
      rms_norm_eps: metaNumber(f, key('attention.layer_norm_rms_epsilon'), false) ?? 1e-5,
      rope_theta: ropeTheta,
      rope_scaling: ropeScaling,
      tie_word_embeddings: !f.tensors.some((t) => t.name === 'output.weight'),
      sliding_window: slidingWindow,
      layer_types: layerTypes,
      // llama.cpp's defaults for the sliding layers' base: 10000 (gemma3), the global base (gemma2).
      rope_local_base_freq: gemma && slidingWindow !== null ? localBase(swaBase ?? (modelType === 'gemma3_text' ? 10000 : ropeTheta), ropeTheta) : null,
      // llama.cpp scales Gemma's scores by head_dim^-1/2 except for the 27B shape (62 layers: hidden / heads).
      query_pre_attn_scalar: gemma ? (layers === 62 ? hidden / heads : keyLength) : null,
      attn_logit_softcapping: metaNumber(f, key('attn_logit_softcapping'), false) || null,
      final_logit_softcapping: metaNumber(f, key('final_logit_softcapping'), false) || null,
    },
    f.path,
  );
}

/**
 * The llama3 rope_scaling whose factors a rope_freqs tensor holds. The
 * tensor alone does not determine the three wavelength parameters, so the
 * values every Llama-3.x model ships (low 1, high 4, original context
 * 8192; factor = the largest divisor) are tried and must reproduce every
 * factor; anything else is refused by name rather than run approximately.
 */
function llama3ScalingOf(f: GgufFile, factors: Float32Array, theta: number, D: number): LlamaConfig['rope_scaling'] {
  const factor = Math.max(...factors);
  const candidate = { rope_type: 'llama3' as const, factor, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  const probe = llamaConfig({ vocab_size: 1, hidden_size: D, intermediate_size: 1, num_hidden_layers: 1, num_attention_heads: 1, rope_theta: theta, rope_scaling: candidate });
  const expected = ropeFreqsTensor(probe)!;
  const fits = expected.length === factors.length && expected.every((e, i) => Math.abs(e - factors[i]!) <= 1e-5 * e);
  if (!fits) {
    throw new QkdError('IO', 'the GGUF scales RoPE by per-frequency factors (rope_freqs.weight) that are not Llama-3\'s (low 1, high 4, original context 8192)', { path: f.path, field: 'rope_freqs.weight', hint: 'the Hugging Face checkpoint (its rope_scaling loads)' });
  }
  return candidate;
}

/** The sliding layers' own RoPE base, or null when it is the global one. */
function localBase(base: number, global: number): number | null {
  return base === global ? null : base;
}

/** Loads a GGUF of any family qkd runs (any type qkd decodes, K-quants included) as a float32 model. */
export function loadLlamaGguf(path: string, options: { precision?: Precision } = {}): LlamaModel {
  const f = openGguf(path);
  try {
    const c = llamaConfigFromGguf(f);
    refuseIfTooBig(c, options.precision ?? 'float32', path);
    const model = newModel(c, options.precision ?? 'float32');
    const arch = familyTraits(c.model_type).ggufArch;
    const byHf = new Map(f.tensors.map((t) => [ggufToHfName(t.name, arch), t]));
    refuseLayersBeyond(byHf.keys(), c.num_hidden_layers, path, `${arch}.block_count`);
    for (const spec of llamaParameterSpecs(c)) {
      const t = byHf.get(spec.name);
      if (t === undefined) throw new QkdError('IO', `GGUF lacks tensor '${hfToGgufName(spec.name, arch)}'`, { path, field: hfToGgufName(spec.name, arch) });
      if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
        throw new QkdError('SHAPE', `GGUF tensor '${t.name}' has shape [${t.shape.join(',')}] but the metadata implies [${spec.shape.join(',')}]`, { path, field: t.name });
      }
      const heads = permutedHeads(spec.name, c);
      const offset = storedOffset(spec.name, c);
      const w = f.readFloat32(t.name);
      if (offset !== 0) for (let i = 0; i < w.length; i++) w[i]! -= offset;
      putParameter(model, spec.name, spec.shape, heads > 0 ? interleavedToHalfRows(w, heads, spec.shape[1]!) : w);
    }
    return model;
  } finally {
    f.close();
  }
}

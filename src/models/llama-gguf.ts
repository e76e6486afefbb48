/**
 * A LLaMA model as llama.cpp stores it in GGUF: the `llama.*` hyper-
 * parameters, llama.cpp's tensor names (io/gguf-names.ts), and the attn_q/attn_k
 * rows of each head permuted from Hugging Face's rotate-half RoPE pairing
 * (i, i + d/2) to llama.cpp's adjacent pairs (2i, 2i + 1), as llama.cpp's
 * own converter does. Reading undoes the permutation, so a model written and
 * read back is the same model, and llama.cpp runs the same function.
 */
import { QkdError } from '../errors.js';
import { openGguf, type GgufFile } from '../io/gguf-reader.js';
import type { GgufTensorToWrite, GgufWriteType } from '../io/gguf-writer.js';
import type { GgufValue } from '../io/gguf-types.js';
import { ggufToHfName, hfToGgufName } from '../io/gguf-names.js';
import { halfToInterleavedRows, interleavedToHalfRows } from '../io/llama2c.js';
import { LlamaModel } from './llama.js';
import { headDim, llamaConfig, llamaParameterSpecs, type LlamaConfig } from './llama-config.js';

const ARCH = 'llama';

/** The `llama.*` and `general.*` metadata of a model's shape. */
export function llamaGgufMetadata(c: LlamaConfig, name: string): Record<string, GgufValue> {
  return {
    'general.architecture': { type: 'string', value: ARCH },
    'general.name': { type: 'string', value: name },
    [`${ARCH}.context_length`]: { type: 'u32', value: c.max_position_embeddings },
    [`${ARCH}.embedding_length`]: { type: 'u32', value: c.hidden_size },
    [`${ARCH}.block_count`]: { type: 'u32', value: c.num_hidden_layers },
    [`${ARCH}.feed_forward_length`]: { type: 'u32', value: c.intermediate_size },
    [`${ARCH}.rope.dimension_count`]: { type: 'u32', value: headDim(c) },
    [`${ARCH}.attention.head_count`]: { type: 'u32', value: c.num_attention_heads },
    [`${ARCH}.attention.head_count_kv`]: { type: 'u32', value: c.num_key_value_heads },
    [`${ARCH}.attention.layer_norm_rms_epsilon`]: { type: 'f32', value: c.rms_norm_eps },
    [`${ARCH}.rope.freq_base`]: { type: 'f32', value: c.rope_theta },
    [`${ARCH}.vocab_size`]: { type: 'u32', value: c.vocab_size },
  };
}

/** Heads whose rows a tensor holds, when llama.cpp permutes its rows (attn_q, attn_k); else 0. */
function permutedHeads(hfName: string, c: LlamaConfig): number {
  if (hfName.endsWith('self_attn.q_proj.weight')) return c.num_attention_heads;
  if (hfName.endsWith('self_attn.k_proj.weight')) return c.num_key_value_heads;
  return 0;
}

/**
 * The tensors of a model for writeGguf, each in the type `typeOf` gives it;
 * data is produced when the writer asks (one tensor in memory at a time).
 * A tied lm_head is not written: llama.cpp reuses token_embd, as it does
 * for the Hugging Face models it converts.
 */
export function llamaGgufTensors(model: LlamaModel, typeOf: (hfName: string, shape: readonly number[]) => GgufWriteType, importanceOf?: (hfName: string) => Float32Array | undefined): GgufTensorToWrite[] {
  const c = model.config;
  return llamaParameterSpecs(c)
    .filter((spec) => !(c.tie_word_embeddings && spec.name === 'lm_head.weight'))
    .map((spec) => {
      const heads = permutedHeads(spec.name, c);
      return {
        name: hfToGgufName(spec.name),
        shape: spec.shape,
        type: typeOf(spec.name, spec.shape),
        // Row permutations keep columns, so the per-column importance applies as it is.
        ...(importanceOf?.(spec.name) !== undefined ? { importance: importanceOf(spec.name)! } : {}),
        data: () => {
          const w = model.arena.get(spec.name).data as Float32Array;
          return heads > 0 ? halfToInterleavedRows(w, heads, spec.shape[1]!) : w;
        },
      };
    });
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

/** The model shape of a llama GGUF (refuses other architectures by name). */
export function llamaConfigFromGguf(f: GgufFile): LlamaConfig {
  const arch = f.metadata.get('general.architecture');
  if (arch?.type !== 'string' || arch.value !== ARCH) {
    const got = arch?.type === 'string' ? `'${arch.value}'` : 'missing';
    throw new QkdError('IO', `GGUF architecture ${got} is not supported (qkd runs '${ARCH}' models)`, { path: f.path, field: 'general.architecture', hint: `'${ARCH}' (LLaMA, Mistral, SmolLM and other llama-layout models)` });
  }
  const key = (k: string) => `${ARCH}.${k}`;
  const hidden = metaNumber(f, key('embedding_length'), true)!;
  const heads = metaNumber(f, key('attention.head_count'), true)!;
  const embd = f.tensors.find((t) => t.name === 'token_embd.weight');
  if (embd === undefined) throw new QkdError('IO', 'GGUF has no token_embd.weight', { path: f.path, field: 'token_embd.weight' });
  const vocab = metaNumber(f, key('vocab_size'), false) ?? embd.shape[0]!;
  const ropeDims = metaNumber(f, key('rope.dimension_count'), false);
  if (ropeDims !== undefined && ropeDims !== hidden / heads) {
    throw new QkdError('IO', `GGUF rope.dimension_count ${ropeDims} is not the head size ${hidden / heads}: partial RoPE is not supported`, { path: f.path, field: key('rope.dimension_count') });
  }
  // What the LLaMA forward would silently compute differently: RoPE scaling (Llama-3.1+ ship per-frequency factors as rope_freqs.weight), a decoupled head size, sliding windows.
  const scaling = f.stringValue(key('rope.scaling.type'));
  if ((scaling !== undefined && scaling !== 'none') || f.tensors.some((t) => t.name === 'rope_freqs.weight')) {
    throw new QkdError('IO', `the GGUF uses RoPE scaling (${scaling ?? 'rope_freqs.weight'}), which qkd's LLaMA forward does not compute yet`, { path: f.path, field: scaling !== undefined ? key('rope.scaling.type') : 'rope_freqs.weight', hint: 'a model without RoPE scaling' });
  }
  for (const k of ['attention.key_length', 'attention.value_length']) {
    const v = metaNumber(f, key(k), false);
    if (v !== undefined && v !== hidden / heads) throw new QkdError('IO', `GGUF ${k} ${v} is not hidden_size / heads = ${hidden / heads}: a decoupled head size is not supported yet`, { path: f.path, field: key(k) });
  }
  if ((metaNumber(f, key('expert_count'), false) ?? 0) > 0) throw new QkdError('IO', 'the GGUF is a mixture of experts (Mixtral-style), which qkd does not run', { path: f.path, field: key('expert_count'), hint: 'a dense llama model' });
  const window = metaNumber(f, key('attention.sliding_window'), false);
  const context = metaNumber(f, key('context_length'), false) ?? Infinity;
  if (window !== undefined && window < context) throw new QkdError('IO', `the GGUF uses sliding-window attention (${window} tokens of a ${context}-token context), which qkd does not compute yet`, { path: f.path, field: key('attention.sliding_window') });
  return llamaConfig(
    {
      vocab_size: vocab,
      hidden_size: hidden,
      intermediate_size: metaNumber(f, key('feed_forward_length'), true)!,
      num_hidden_layers: metaNumber(f, key('block_count'), true)!,
      num_attention_heads: heads,
      num_key_value_heads: metaNumber(f, key('attention.head_count_kv'), false) ?? heads,
      max_position_embeddings: metaNumber(f, key('context_length'), true)!,
      rms_norm_eps: metaNumber(f, key('attention.layer_norm_rms_epsilon'), false) ?? 1e-5,
      rope_theta: metaNumber(f, key('rope.freq_base'), false) ?? 10000,
      tie_word_embeddings: !f.tensors.some((t) => t.name === 'output.weight'),
    },
    f.path,
  );
}

/** Loads a llama GGUF (any type qkd decodes, K-quants included) as a float32 model. */
export function loadLlamaGguf(path: string): LlamaModel {
  const f = openGguf(path);
  try {
    const c = llamaConfigFromGguf(f);
    const model = new LlamaModel(c);
    const byHf = new Map(f.tensors.map((t) => [ggufToHfName(t.name), t]));
    for (const spec of llamaParameterSpecs(c)) {
      const t = byHf.get(spec.name);
      if (t === undefined) throw new QkdError('IO', `GGUF lacks tensor '${hfToGgufName(spec.name)}'`, { path, field: hfToGgufName(spec.name) });
      if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
        throw new QkdError('SHAPE', `GGUF tensor '${t.name}' has shape [${t.shape.join(',')}] but the metadata implies [${spec.shape.join(',')}]`, { path, field: t.name });
      }
      const heads = permutedHeads(spec.name, c);
      const w = f.readFloat32(t.name);
      model.arena.set(spec.name, spec.shape, heads > 0 ? interleavedToHalfRows(w, heads, spec.shape[1]!) : w);
    }
    return model;
  } finally {
    f.close();
  }
}

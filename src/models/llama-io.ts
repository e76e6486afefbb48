/**
 * Save and load LLaMA models as Hugging Face checkpoints: a directory with
 * config.json (LlamaForCausalLM fields) and model.safetensors (Hugging Face
 * tensor names), or a sharded model.safetensors.index.json. F32, F16 and
 * BF16 weights load (widened to float32); qkd writes F32. Every file is
 * written atomically. A config.json with a `quantization_config` section is a
 * packed quantized checkpoint (quant/packed.ts, written by compress/quantized-io.ts):
 * its weights are dequantized to float32 at load.
 */
import { existsSync, readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError, fmtShape } from '../errors.js';
import { openSafetensors, writeSafetensors, type SafetensorsFile } from '../io/safetensors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { withLoaded, type Tensor } from '../tensor/tensor.js';
import { LlamaModel } from './llama.js';
import { llamaConfig, llamaParameterSpecs, type LlamaConfig } from './llama-config.js';
import { parseQuantizationConfig, type PackedTensorSpec } from '../quant/packed.js';
import { readPackedTensor } from './packed-tensors.js';
import { dequantize } from '../quant/rtn.js';

/** config.json contents: our config plus the fields Hugging Face tools expect. */
export function llamaConfigJson(config: LlamaConfig): Record<string, unknown> {
  return { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', torch_dtype: 'float32', ...config };
}

/** Writes config.json and model.safetensors into `dir` (created if needed). */
export function saveLlama(dir: string, model: LlamaModel, metadata: Record<string, string> = {}): void {
  mkdirSync(dir, { recursive: true });
  const scratch = { buffer: new Float32Array(0) };
  writeSafetensors(
    join(dir, 'model.safetensors'),
    // One tensor at a time: a parameter kept in a ParameterSource (DBWA) is unpacked into one scratch buffer reused for every tensor.
    model.arena.entries.map((e) => ({ name: e.name, dtype: 'f32' as const, shape: e.shape, data: () => (e.tensor.source === null ? e.tensor.data : unpackInto(scratch, e.tensor)) })),
    { format: 'pt', ...metadata },
  );
  writeBytesAtomic(join(dir, 'config.json'), JSON.stringify(llamaConfigJson(model.config), null, 2) + '\n');
}

/** The values of a sourced parameter, copied into a scratch buffer (grown when needed) and returned as a view of it. */
function unpackInto(scratch: { buffer: Float32Array }, t: Tensor): Float32Array {
  if (scratch.buffer.length < t.size) scratch.buffer = new Float32Array(t.size);
  const view = scratch.buffer.subarray(0, t.size);
  withLoaded(t, () => view.set(t.data));
  return view;
}

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new QkdError('IO', `cannot read ${path}: ${(err as Error).message}`, { path });
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new QkdError('IO', `${path} is not valid JSON: ${(err as Error).message}`, { path });
  }
}

/**
 * Refuses a Hugging Face config.json that describes something the LLaMA
 * forward pass would compute differently, naming the field: another
 * architecture, RoPE scaling, biases, a head dim other than
 * hidden_size / num_attention_heads, another activation, a sliding window
 * shorter than the context. (Loading such a model anyway would give wrong
 * logits silently.) Mistral is the LLaMA layout (llama.cpp converts it to
 * its "llama" architecture too), so MistralForCausalLM passes when its
 * window, if any, covers the whole context (Mistral 7B v0.2 and later).
 */
export function refuseUnsupportedLlamaFields(json: Record<string, unknown>, path: string): void {
  const refuse = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `${what}: qkd's LLaMA forward pass does not compute this, and loading it anyway would give wrong outputs`, { path, field, hint });
  };
  const archs = json.architectures;
  if (Array.isArray(archs) && !archs.every((a) => a === 'LlamaForCausalLM' || a === 'MistralForCausalLM')) refuse('architectures', `architecture ${JSON.stringify(archs)}`, 'LlamaForCausalLM or MistralForCausalLM (other families: not yet)');
  if (json.model_type !== undefined && json.model_type !== 'llama' && json.model_type !== 'mistral') refuse('model_type', `model_type '${String(json.model_type)}'`, "'llama' or 'mistral'");
  if (json.rope_scaling !== undefined && json.rope_scaling !== null) refuse('rope_scaling', `rope_scaling ${JSON.stringify(json.rope_scaling)}`, 'null (RoPE scaling: not yet)');
  for (const field of ['attention_bias', 'mlp_bias']) if (json[field] === true) refuse(field, `${field} true`, 'false');
  const act = json.hidden_act ?? json.hidden_activation;
  if (act !== undefined && act !== 'silu') refuse('hidden_act', `hidden_act '${String(act)}'`, "'silu' (SwiGLU)");
  const heads = json.num_attention_heads;
  if (typeof json.head_dim === 'number' && typeof json.hidden_size === 'number' && typeof heads === 'number' && json.head_dim * heads !== json.hidden_size) {
    refuse('head_dim', `head_dim ${json.head_dim} × ${heads} heads ≠ hidden_size ${json.hidden_size}`, 'head_dim = hidden_size / num_attention_heads');
  }
  // A window at least as long as the context never masks anything.
  const context = typeof json.max_position_embeddings === 'number' ? json.max_position_embeddings : Infinity;
  if (json.use_sliding_window !== false && typeof json.sliding_window === 'number' && json.sliding_window < context) {
    refuse('sliding_window', `sliding_window ${json.sliding_window} is shorter than the context (${context})`, 'no sliding window, or one at least max_position_embeddings long');
  }
}

/** Loads a model directory written by qkd or by Hugging Face tools. */
export function loadLlama(dir: string): LlamaModel {
  const configPath = join(dir, 'config.json');
  const json = readJson(configPath);
  refuseUnsupportedLlamaFields(json, configPath);
  const config = llamaConfig(json as Partial<LlamaConfig> & Record<string, unknown>, configPath);
  const specs = llamaParameterSpecs(config);
  const quantized = json.quantization_config === undefined ? null : quantizedSpecs(json.quantization_config, specs, configPath);
  const single = join(dir, 'model.safetensors');
  const index = join(dir, 'model.safetensors.index.json');
  // name → the file that holds it
  const files = new Map<string, SafetensorsFile>();
  const where = new Map<string, SafetensorsFile>();
  try {
    if (existsSync(single)) {
      const f = openSafetensors(single);
      files.set(single, f);
      for (const n of f.names) where.set(n, f);
    } else if (existsSync(index)) {
      const weightMap = readJson(index).weight_map;
      if (typeof weightMap !== 'object' || weightMap === null) throw new QkdError('IO', 'index has no weight_map object', { path: index, field: 'weight_map' });
      for (const [name, file] of Object.entries(weightMap as Record<string, unknown>)) {
        if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) throw new QkdError('IO', `weight_map entry for '${name}' is ${JSON.stringify(file)}`, { path: index, field: `weight_map.${name}`, hint: 'a file name in the same directory' });
        const path = join(dir, file);
        let f = files.get(path);
        if (f === undefined) files.set(path, (f = openSafetensors(path)));
        where.set(name, f);
      }
    } else {
      throw new QkdError('IO', `no model.safetensors or model.safetensors.index.json in ${dir}`, { path: dir });
    }
    const model = new LlamaModel(config);
    for (const spec of specs) {
      const packed = quantized?.get(spec.name);
      if (packed !== undefined && packed.bits < 16) {
        const q = readPackedTensor((name) => where.get(name), dir, spec.name, spec.shape[0]!, spec.shape[1]!, packed);
        model.arena.set(spec.name, spec.shape, dequantize(q));
        continue;
      }
      const f = where.get(spec.name);
      if (f === undefined) throw new QkdError('IO', `checkpoint lacks tensor '${spec.name}'`, { path: dir, field: spec.name, hint: `shape ${fmtShape(spec.shape)}` });
      const { shape, data } = f.readFloat32(spec.name);
      if (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape[i])) {
        throw new QkdError('SHAPE', `tensor '${spec.name}' has shape ${fmtShape(shape)} but config.json implies ${fmtShape(spec.shape)}`, { path: f.path, field: spec.name });
      }
      model.arena.set(spec.name, shape, data);
    }
    return model;
  } finally {
    for (const f of files.values()) f.close();
  }
}

/** The per-weight specs of a quantized checkpoint, checked against the model's 2-D weights. */
function quantizedSpecs(section: unknown, specs: { name: string; shape: number[] }[], configPath: string): Map<string, PackedTensorSpec> {
  const quantized = parseQuantizationConfig(section, configPath);
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  for (const name of quantized.keys()) {
    const shape = shapes.get(name);
    if (shape === undefined || shape.length !== 2) {
      throw new QkdError('CONFIG', `quantization_config lists '${name}', which is not a 2-D weight of this model`, { path: configPath, field: `quantization_config.tensors.${name}` });
    }
  }
  return quantized;
}

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
import { MODEL_TYPES, MOHAWK_ARCHITECTURE, familyTraits, llamaConfig, llamaParameterSpecs, modelTypeOfArchitecture, refuseLayersBeyond, type LlamaConfig, type ModelType } from './llama-config.js';
import { parseQuantizationConfig, type PackedTensorSpec } from '../quant/packed.js';
import { readPackedTensor } from './packed-tensors.js';
import { bf16Bits, newModel, putParameter, refuseIfTooBig, type Precision } from './precision.js';
import { dequantize } from '../quant/rtn.js';

/** config.json contents: our config plus the fields Hugging Face tools expect. */
export function llamaConfigJson(config: LlamaConfig): Record<string, unknown> {
  const traits = familyTraits(config.model_type);
  // Gemma's config classes name the activation hidden_activation.
  // A state-space student is no longer the family's architecture: its own name makes other tools refuse it (docs/mohawk.md).
  const architecture = config.ssm !== null ? MOHAWK_ARCHITECTURE : traits.architecture;
  const { ssm, ...rest } = config;
  return { architectures: [architecture], torch_dtype: 'float32', ...rest, ...(ssm !== null ? { ssm } : {}), ...(traits.gemma ? { hidden_activation: config.hidden_act } : {}) };
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
 * The config of a Hugging Face config.json, for llamaConfig: the family from
 * architectures / model_type, each family's way of saying which layers use
 * a sliding window turned into layer_types, and a refusal, naming the field,
 * of anything the forward pass would compute differently (loading such a
 * model anyway would give wrong logits silently): unknown architectures,
 * biases qkd does not place, partial RoPE, bidirectional attention, RoPE
 * scaling other than linear / dynamic / llama3 (llamaConfig checks that).
 */
export function hfConfigInput(json: Record<string, unknown>, path: string): Partial<LlamaConfig> & Record<string, unknown> {
  const refuse = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `${what}: qkd's forward pass does not compute this, and loading it anyway would give wrong outputs`, { path, field, hint });
  };
  const known = MODEL_TYPES.map((t) => familyTraits(t).architecture).join(', ');
  const archs = json.architectures;
  let modelType: ModelType | undefined;
  // qkd's state-space students: the family is model_type, the mixers are the ssm section.
  const mohawk = Array.isArray(archs) && archs.length === 1 && archs[0] === MOHAWK_ARCHITECTURE;
  if (mohawk && (typeof json.ssm !== 'object' || json.ssm === null)) refuse('ssm', `architecture ${MOHAWK_ARCHITECTURE} without an ssm section`, 'the ssm section qkd writes (state_size, conv_kernel, attention_layers)');
  if (!mohawk && json.ssm !== undefined && json.ssm !== null) refuse('architectures', `an ssm section under architectures ${JSON.stringify(archs)}`, `["${MOHAWK_ARCHITECTURE}"]`);
  if (Array.isArray(archs) && archs.length > 0 && !mohawk) {
    const types = archs.map((a) => (typeof a === 'string' ? modelTypeOfArchitecture(a) : undefined));
    if (types.some((t) => t === undefined) || new Set(types).size !== 1) refuse('architectures', `architecture ${JSON.stringify(archs)}`, known);
    modelType = types[0];
  }
  const declared = json.model_type;
  if (declared !== undefined) {
    // Hugging Face calls Gemma 3's text model gemma3_text; 'gemma3' is the multimodal wrapper.
    if (!MODEL_TYPES.includes(declared as ModelType)) refuse('model_type', `model_type '${String(declared)}'`, `${MODEL_TYPES.join(', ')} (text decoders)`);
    if (modelType !== undefined && modelType !== declared) refuse('model_type', `model_type '${String(declared)}' does not match architectures ${JSON.stringify(archs)}`, `'${modelType}'`);
    modelType = declared as ModelType;
  }
  modelType ??= 'llama';
  const input: Record<string, unknown> = { ...json, model_type: modelType };
  const traits = familyTraits(modelType);
  if (json.attention_bias === true && !traits.qkvBias) refuse('attention_bias', 'attention_bias true', 'false');
  if (json.mlp_bias === true) refuse('mlp_bias', 'mlp_bias true', 'false');
  if (typeof json.partial_rotary_factor === 'number' && json.partial_rotary_factor !== 1) refuse('partial_rotary_factor', `partial_rotary_factor ${json.partial_rotary_factor}`, '1 (RoPE on the whole head)');
  if (json.use_bidirectional_attention === true) refuse('use_bidirectional_attention', 'use_bidirectional_attention true', 'false (a causal decoder)');
  const layers = json.num_hidden_layers as number;
  const window = json.sliding_window;
  // Which layers slide, in each family's words (recent transformers write layer_types for all of them).
  if (json.layer_types === undefined || json.layer_types === null) {
    if (modelType === 'qwen2' || modelType === 'qwen3') {
      if (json.use_sliding_window === true && typeof window === 'number') {
        const from = typeof json.max_window_layers === 'number' ? json.max_window_layers : layers;
        input.layer_types = Array.from({ length: layers }, (_, i) => (i >= from ? 'sliding_attention' : 'full_attention'));
      } else input.sliding_window = null;
    } else if (modelType === 'gemma3_text' && typeof window === 'number') {
      const period = typeof json.sliding_window_pattern === 'number' ? json.sliding_window_pattern : 6;
      input.layer_types = Array.from({ length: layers }, (_, i) => ((i + 1) % period === 0 ? 'full_attention' : 'sliding_attention'));
    } else if (modelType === 'gemma2' && typeof window === 'number') {
      input.layer_types = Array.from({ length: layers }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention'));
    }
  } else if ((modelType === 'qwen2' || modelType === 'qwen3') && json.use_sliding_window !== true) {
    input.layer_types = null;
    input.sliding_window = null;
  }
  // A window at least as long as the context never masks anything.
  if (typeof window === 'number' && typeof json.max_position_embeddings === 'number' && window >= json.max_position_embeddings) {
    input.sliding_window = null;
    input.layer_types = null;
  }
  for (const drop of ['use_sliding_window', 'max_window_layers', 'sliding_window_pattern', 'hidden_activation']) delete input[drop];
  if (json.hidden_activation !== undefined && json.hidden_act === undefined) input.hidden_act = json.hidden_activation;
  return input as Partial<LlamaConfig> & Record<string, unknown>;
}

/** The validated config of a Hugging Face (or qkd) config.json. */
export function configFromHfJson(json: Record<string, unknown>, path: string): LlamaConfig {
  return llamaConfig(hfConfigInput(json, path), path);
}

/**
 * Loads a model directory written by qkd or by Hugging Face tools. With
 * precision 'bf16' the model is frozen and its weights stay bfloat16 in
 * memory (a teacher: see tensor/bf16-store.ts); bf16 files are read as
 * stored, others rounded once.
 */
export function loadLlama(dir: string, options: { precision?: Precision } = {}): LlamaModel {
  const configPath = join(dir, 'config.json');
  const json = readJson(configPath);
  const config = configFromHfJson(json, configPath);
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
    refuseLayersBeyond(where.keys(), config.num_hidden_layers, configPath, 'num_hidden_layers');
    refuseIfTooBig(config, options.precision ?? 'float32', dir);
    const model = newModel(config, options.precision ?? 'float32');
    for (const spec of specs) {
      const packed = quantized?.get(spec.name);
      if (packed !== undefined && packed.bits < 16) {
        const q = readPackedTensor((name) => where.get(name), dir, spec.name, spec.shape[0]!, spec.shape[1]!, packed);
        putParameter(model, spec.name, spec.shape, dequantize(q));
        continue;
      }
      const f = where.get(spec.name);
      if (f === undefined) throw new QkdError('IO', `checkpoint lacks tensor '${spec.name}'`, { path: dir, field: spec.name, hint: `shape ${fmtShape(spec.shape)}` });
      const shape = f.entry(spec.name).shape;
      if (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape[i])) {
        throw new QkdError('SHAPE', `tensor '${spec.name}' has shape ${fmtShape(shape)} but config.json implies ${fmtShape(spec.shape)}`, { path: f.path, field: spec.name });
      }
      // A bf16 tensor stays bf16 in a bf16 model: it is read straight into the buffer the model keeps, no float32 copy.
      const kept = f.entry(spec.name).dtype === 'bf16' ? bf16Bits(model, spec.name) : null;
      if (kept !== null) f.readBytes(spec.name, new Uint8Array(kept.buffer, kept.byteOffset, kept.byteLength));
      else putParameter(model, spec.name, shape, f.readFloat32(spec.name).data);
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

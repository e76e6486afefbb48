/**
 * Saving a quantized LLaMA as a packed checkpoint directory: config.json
 * (the float model's fields plus `quantization_config`) and
 * model.safetensors with packed codes, F16 scales and U8 zero points. The
 * layout is documented in quant/packed.ts. `loadLlama` (models/llama-io.ts) reads
 * these directories back, dequantizing to float32 at load.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { QUANT_FORMAT_VERSION, QUANT_METHOD, packedTensorNames, parseQuantizationConfig, type PackedTensorJson } from '../quant/packed.js';
import { packedTensorsToWrite } from '../models/packed-tensors.js';
import { configFromHfJson, llamaConfigJson } from '../models/llama-io.js';
import { llamaParameterSpecs } from '../models/llama-config.js';
import type { QuantizedLlama, QuantizedStorage } from './quantize-model.js';

/** The safetensors tensors of a quantized model, in checkpoint order. */
function checkpointTensors(q: QuantizedLlama): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  for (const spec of llamaParameterSpecs(q.config)) {
    const w = q.weights.get(spec.name);
    if (w === undefined) {
      out.push({ name: spec.name, dtype: 'f32', shape: spec.shape, data: q.floatValues(spec.name) });
    } else if (w.quantized) {
      out.push(...packedTensorsToWrite(spec.name, w.quantized));
    } else {
      out.push({ name: spec.name, dtype: 'f16', shape: spec.shape, data: w.f16! });
    }
  }
  return out;
}

/** The quantization_config section of config.json. */
function quantizationConfigJson(q: QuantizedLlama, storage: QuantizedStorage): Record<string, unknown> {
  const tensors: Record<string, PackedTensorJson> = {};
  for (const w of q.weights.values()) {
    const scheme = w.quantized?.scheme ?? q.scheme;
    tensors[w.name] = { bits: w.bits, group_size: scheme.groupSize, symmetric: scheme.symmetric, ...(scheme.perTensor ? { per_tensor: true } : {}) };
  }
  return {
    quant_method: QUANT_METHOD,
    format_version: QUANT_FORMAT_VERSION,
    group_size: q.scheme.groupSize,
    symmetric: q.scheme.symmetric,
    per_tensor: q.scheme.perTensor ?? false,
    method: q.method,
    avg_bits: storage.avgBits,
    bytes: storage.bytes,
    tensors,
  };
}

/**
 * Writes config.json and model.safetensors into `dir` (created if needed).
 * Returns the stored size of the quantized and 16-bit weights.
 */
export function saveQuantizedLlama(dir: string, quantized: QuantizedLlama, metadata: Record<string, string> = {}): QuantizedStorage {
  mkdirSync(dir, { recursive: true });
  const storage = quantized.storage();
  writeSafetensors(join(dir, 'model.safetensors'), checkpointTensors(quantized), { format: 'pt', quant_method: QUANT_METHOD, ...metadata });
  const config = { ...llamaConfigJson(quantized.config), quantization_config: quantizationConfigJson(quantized, storage) };
  writeBytesAtomic(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return storage;
}

/**
 * The stored size of a packed checkpoint's quantized and 16-bit weights,
 * measured from the safetensors header (single-file checkpoints).
 */
export function quantizedCheckpointBytes(dir: string): QuantizedStorage {
  const configPath = join(dir, 'config.json');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new QkdError('IO', `cannot read ${configPath}: ${(err as Error).message}`, { path: configPath });
  }
  if (json.quantization_config === undefined) throw new QkdError('CONFIG', 'config.json has no quantization_config: not a quantized checkpoint', { path: configPath, field: 'quantization_config' });
  const specs = parseQuantizationConfig(json.quantization_config, configPath);
  const shapes = new Map(llamaParameterSpecs(configFromHfJson(json, configPath)).map((s) => [s.name, s.shape]));
  const file = openSafetensors(join(dir, 'model.safetensors'));
  try {
    let bytes = 0;
    let params = 0;
    for (const [name, spec] of specs) {
      const shape = shapes.get(name);
      if (shape === undefined) throw new QkdError('CONFIG', `quantization_config lists '${name}', which the model does not have`, { path: configPath, field: `quantization_config.tensors.${name}` });
      params += shape[0]! * shape[1]!;
      const names = packedTensorNames(name);
      const stored = spec.bits >= 16 ? [name] : [names.qweight, names.scales, ...(spec.symmetric ? [] : [names.zeros])];
      for (const n of stored) {
        const e = file.entry(n);
        bytes += e.end - e.begin;
      }
    }
    return { bytes, params, avgBits: params > 0 ? (8 * bytes) / params : 0 };
  } finally {
    file.close();
  }
}

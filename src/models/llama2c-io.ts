/**
 * LLaMA models from and to llama2.c checkpoints: the format lives in
 * io/llama2c.ts; this file builds a LlamaModel from the streamed tensors
 * (validated config, weights straight into the arena) and exports one.
 */
import { LlamaModel } from './llama.js';
import { llamaConfig } from './llama-config.js';
import { QkdError } from '../errors.js';
import { streamLlama2cCheckpoint, llama2cModelShape, writeLlama2cTensors, type Llama2cFormat, type ReadLlama2cOptions, type WriteLlama2cOptions } from '../io/llama2c.js';

/** Builds a LlamaModel from a llama2.c checkpoint (rms_norm_eps 1e-5, rope_theta 10000, as run.c). */
export function loadLlama2c(path: string, options: ReadLlama2cOptions = {}): LlamaModel {
  let model: LlamaModel | undefined;
  streamLlama2cCheckpoint(path, options, (h) => {
    const m = (model = new LlamaModel(llamaConfig({ ...llama2cModelShape(h) }, path)));
    return (name, shape, data) => m.arena.set(name, shape, data);
  });
  return model!;
}

/**
 * Writes a model as a llama2.c checkpoint (atomically): 'legacy' (run.c),
 * 'v1' (float32 with header) or 'v2' (int8 Q8_0). rope_theta must be 10000
 * (run.c hardcodes it); rms_norm_eps is not stored (run.c uses 1e-5).
 */
export function writeLlama2cCheckpoint(path: string, model: LlamaModel, format: Llama2cFormat, options: WriteLlama2cOptions = {}): void {
  const c = model.config;
  // run.c computes plain LLaMA only.
  const differs = c.model_type !== 'llama' && c.model_type !== 'mistral' ? 'model_type' : c.head_dim * c.num_attention_heads !== c.hidden_size ? 'head_dim' : c.rope_scaling !== null ? 'rope_scaling' : c.sliding_window !== null ? 'sliding_window' : null;
  if (differs !== null) throw new QkdError('CONFIG', `llama2.c's run.c computes plain LLaMA; this model's ${differs} is ${JSON.stringify(c[differs])}`, { path, field: differs, hint: 'a LLaMA model (or export to GGUF)' });
  writeLlama2cTensors(path, model.config, (name) => model.arena.get(name).data, format, options);
}

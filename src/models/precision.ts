/**
 * The precision a model is held in: 'float32' (trainable: values and
 * gradients in one arena) or 'bf16' (frozen: weights as bfloat16 bits in a
 * Bf16Store, half the bytes of float32 values and no gradients; Linear runs
 * the bf16 GEMM on them). Loaders build the model with newModel, fill it
 * with putParameter, and refuse, before reading any weight, a model whose
 * bytes exceed the memory the machine has available.
 */
import { readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import { QkdError } from '../errors.js';
import { ParameterArena } from '../tensor/arena.js';
import { adviseHugePages } from '../tensor/backend.js';
import { Bf16Store } from '../tensor/bf16-store.js';
import { fromBf16, toBf16 } from '../tensor/dtype.js';
import { LlamaModel } from './llama.js';
import { llamaParameterSpecs, type LlamaConfig } from './llama-config.js';

export type Precision = 'float32' | 'bf16';

/** Bytes a model's parameters take in memory: float32 values and gradients, or bf16 values alone. */
export function parameterBytes(config: LlamaConfig, precision: Precision): number {
  const params = llamaParameterSpecs(config).reduce((n, s) => n + s.shape.reduce((a, d) => a * d, 1), 0);
  return params * (precision === 'bf16' ? 2 : 8);
}

/** Memory the kernel says is available (MemAvailable), else free memory. */
export function availableMemory(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m !== null) return Number(m[1]) * 1024;
  } catch {
    // not Linux: fall through
  }
  return freemem();
}

const GIB = 1024 ** 3;

/** Refuses, before reading any weight, a model that cannot fit in the available memory, saying how many bytes it needs. */
export function refuseIfTooBig(config: LlamaConfig, precision: Precision, path: string, available = availableMemory()): void {
  const need = parameterBytes(config, precision);
  if (need > available) {
    const hint = precision === 'float32' ? `${(parameterBytes(config, 'bf16') / GIB).toFixed(2)} GiB as a frozen bf16 teacher (distillation.teacher_precision: bf16), or a machine with more memory` : 'a machine with more memory, or a smaller model';
    throw new QkdError('CONFIG', `the model needs ${(need / GIB).toFixed(2)} GiB for its parameters in ${precision === 'bf16' ? 'bf16' : 'float32 (values and gradients)'}, and ${(available / GIB).toFixed(2)} GiB are available`, { path, field: 'precision', hint });
  }
}

/** An empty model of `config`: float32 arena, or frozen with no float32 buffers (bf16). */
export function newModel(config: LlamaConfig, precision: Precision): LlamaModel {
  if (precision === 'float32') return new LlamaModel(config);
  const model = new LlamaModel(config, new ParameterArena(llamaParameterSpecs(config), { allocate: false }));
  const store = new Bf16Store();
  // Every tensor starts sourced from the store (zero until a loader fills it). Huge pages are advised before
  // anything is written: a 1B model's 2.3 GiB is then faulted in 2 MiB at a time instead of 4 KiB.
  for (const e of model.arena.entries) store.set(e.tensor, adviseHugePages(new Uint16Array(e.size)));
  return model;
}

/** The buffer a bf16 model keeps for one parameter's bits, for a loader to read into in place; null in a float32 model. */
export function bf16Bits(model: LlamaModel, name: string): Uint16Array | null {
  const t = model.arena.get(name);
  return t.source instanceof Bf16Store ? (t.source.bitsOf(t) ?? null) : null;
}

/** Sets one parameter's values: float32 values (rounded once for a bf16 model), or bf16 bits as stored. */
export function putParameter(model: LlamaModel, name: string, shape: readonly number[], values: Float32Array | { bf16: Uint16Array }): void {
  const t = model.arena.get(name);
  if (t.source instanceof Bf16Store) {
    if (shape.length !== t.rank || shape.some((d, i) => d !== t.shape[i])) throw new QkdError('SHAPE', `parameter '${name}' has shape [${t.shape.join(',')}], got [${shape.join(',')}]`, { field: name });
    t.source.set(t, 'bf16' in values ? values.bf16 : toBf16(values));
    return;
  }
  model.arena.set(name, shape, 'bf16' in values ? fromBf16(values.bf16) : values);
}

/**
 * Loads a float LLaMA model from any layout qkd writes or reads as a whole
 * model: a Hugging Face / qkd directory (also packed quantized checkpoints,
 * dequantized), a qkd training run directory (its latest checkpoint), or a
 * llama2.c checkpoint file.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { loadLlama } from './llama-io.js';
import { loadLlama2c } from './llama2c-io.js';
import type { LlamaModel } from './llama.js';

/** The directory holding config.json for a model path (a run directory resolves to its latest checkpoint). */
export function modelDirectory(path: string): string {
  if (existsSync(join(path, 'config.json'))) return path;
  const latest = join(path, 'latest.json');
  if (existsSync(latest)) {
    let dir: unknown;
    try {
      dir = (JSON.parse(readFileSync(latest, 'utf8')) as { dir?: unknown }).dir;
    } catch (err) {
      throw new QkdError('IO', `latest.json is not valid JSON: ${(err as Error).message}`, { path: latest });
    }
    if (typeof dir !== 'string') throw new QkdError('IO', 'latest.json has no "dir" string', { path: latest, field: 'dir' });
    return join(path, dir);
  }
  return path;
}

export function loadModelAny(path: string): LlamaModel {
  let isFile = false;
  try {
    isFile = statSync(path).isFile();
  } catch {
    // fall through: loadLlama reports the missing directory
  }
  if (isFile) {
    if (path.toLowerCase().endsWith('.gguf')) throw new QkdError('IO', 'GGUF files can be audited but not yet loaded as a model', { path, hint: 'a Hugging Face/qkd model directory or a llama2.c .bin' });
    return loadLlama2c(path);
  }
  return loadLlama(modelDirectory(path));
}

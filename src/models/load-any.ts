/**
 * Loads a float LLaMA model from any layout qkd writes or reads as a whole
 * model: a Hugging Face / qkd directory (also packed quantized checkpoints,
 * dequantized), a qkd training run directory (its latest checkpoint), a
 * llama.cpp GGUF (any type qkd decodes, K-quants included; its tokenizer is
 * rebuilt from the metadata), or a llama2.c checkpoint file.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { modelFileFormat } from '../io/tensor-source.js';
import { openGguf } from '../io/gguf-reader.js';
import { loadLlamaGguf } from './llama-gguf.js';
import { tokenizerFromGguf } from '../data/tokenizer-gguf.js';
import { QkdError } from '../errors.js';
import { configFromHfJson, loadLlama } from './llama-io.js';
import { llamaConfigFromGguf } from './llama-gguf.js';
import { llamaConfig, type LlamaConfig } from './llama-config.js';
import { llama2cModelShape, readLlama2cHeader } from '../io/llama2c.js';
import type { Precision } from './precision.js';
import { loadLlama2c } from './llama2c-io.js';
import type { LlamaModel } from './llama.js';
import { ByteTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { loadTokenizerFile } from '../data/tokenizer-io.js';

/** The directory holding config.json for a model path (a run directory resolves to its latest checkpoint). */
/**
 * The directory that holds a model's files: modelDirectory of a directory,
 * the directory of a model given as a file (model.safetensors beside its
 * config.json and tokenizer, or a GGUF). Outputs must not go there, and a
 * tokenizer or a quantization config is looked for there.
 */
export function modelHome(path: string): string {
  return existsSync(path) && statSync(path).isFile() ? dirname(path) : modelDirectory(path);
}

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

/**
 * Loads any model file or directory, choosing the reader by content (the
 * same detection `qkd audit` uses), never by the extension alone.
 */
export function loadModelAny(path: string, options: { precision?: Precision } = {}): LlamaModel {
  // Not a file: loadLlama reports a missing directory.
  if (!isFile(path)) return loadLlama(modelDirectory(path), options);
  switch (modelFileFormat(path)) {
    case 'gguf':
      return loadLlamaGguf(path, options);
    case 'safetensors': {
      // A safetensors file holds tensors but not the model's shape: that is config.json beside it.
      const dir = dirname(path);
      if (basename(path) === 'model.safetensors' && existsSync(join(dir, 'config.json'))) return loadLlama(dir, options);
      throw new QkdError('IO', 'a .safetensors file holds tensors but no model configuration', { path, hint: 'the model directory (config.json + model.safetensors)' });
    }
    case 'llama2c':
      if (options.precision === 'bf16') throw new QkdError('ARGUMENT', 'llama2.c checkpoints load in float32 only', { path, field: 'precision' });
      return loadLlama2c(path);
    default:
      throw new QkdError('IO', 'not a model file qkd reads (no GGUF, safetensors or llama2.c header)', { path, hint: 'a model directory, a llama2.c .bin checkpoint or a .gguf file' });
  }
}

/** The config of any model qkd loads, without reading its weights. */
export function peekConfig(path: string): LlamaConfig {
  if (!isFile(path)) {
    const configPath = join(modelDirectory(path), 'config.json');
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(configPath, 'utf8'));
    } catch (err) {
      throw new QkdError('IO', `cannot read ${configPath}: ${(err as Error).message}`, { path: configPath });
    }
    return configFromHfJson(json as Record<string, unknown>, configPath);
  }
  switch (modelFileFormat(path)) {
    case 'gguf': {
      const f = openGguf(path);
      try {
        return llamaConfigFromGguf(f);
      } finally {
        f.close();
      }
    }
    case 'llama2c':
      return llamaConfig({ ...llama2cModelShape(readLlama2cHeader(path)) }, path);
    default:
      return loadModelAny(path).config;
  }
}

/**
 * The tokenizer of a model, for every command that encodes text for it: the
 * given file (tokenizer.json, or a llama2.c tokenizer.bin by content), else
 * tokenizer.json beside the model, else bytes for a 256-token model. A
 * tokenizer whose vocabulary does not match the model's is refused: its ids
 * would index the wrong embeddings and the output would be garbage.
 */
export function loadModelTokenizer(model: Pick<LlamaModel, 'config'>, modelPath: string, tokenizerPath?: string): Tokenizer {
  const vocab = model.config.vocab_size;
  let path = tokenizerPath;
  if (path === undefined && isFile(modelPath) && modelFileFormat(modelPath) === 'gguf') {
    const f = openGguf(modelPath);
    try {
      return checkVocab(tokenizerFromGguf(f), vocab, modelPath);
    } finally {
      f.close();
    }
  }
  if (path === undefined) {
    const beside = join(modelDirectory(modelPath), 'tokenizer.json');
    if (existsSync(beside)) path = beside;
    else if (vocab === 256) return new ByteTokenizer();
    else throw new QkdError('IO', `the model has a ${vocab}-token vocabulary and no tokenizer.json beside it`, { path: modelPath, field: '--tokenizer', hint: 'a tokenizer.json or llama2.c tokenizer.bin given with --tokenizer' });
  }
  return checkVocab(loadTokenizerFile(path, vocab), vocab, path);
}

function checkVocab(tokenizer: Tokenizer, vocab: number, path: string): Tokenizer {
  // Hugging Face models often pad the embedding past the tokenizer (Qwen: 151,936 rows for 151,669 tokens).
  const fits = tokenizer.kind === 'hf' ? tokenizer.vocabSize <= vocab : tokenizer.vocabSize === vocab;
  if (!fits) {
    throw new QkdError('CONFIG', `the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary has ${vocab}: they do not belong together`, { path, field: 'vocab_size', hint: `the tokenizer the model was trained with (${vocab} tokens)` });
  }
  return tokenizer;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

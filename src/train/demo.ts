/**
 * The demo job: train a tiny LLaMA-style model on the embedded corpus for a
 * few steps and show the training and validation loss falling. Later issues
 * grow this into the full profile → distill → quantize pipeline.
 */
import { createLlama, type LlamaModel } from '../models/llama.js';
import type { LlamaConfig } from '../models/llama-config.js';
import { AdamW, clipGradNorm } from '../optim/adamw.js';
import { Rng } from '../tensor/random.js';
import { backward, noGrad } from '../tensor/tape.js';
import { currentBackend } from '../tensor/backend.js';
import { byteTokens, loadDefaultCorpus, sampleBatch, sequentialBatches, splitTokens } from '../data/corpus.js';

export interface DemoOptions {
  /** Training steps (default 60). */
  steps?: number;
  seed?: number;
  /** Sequences per step (default 8) and their length (default 64). */
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  /** Text to train on instead of the embedded corpus. */
  text?: string;
}

export interface DemoProgress {
  step: number;
  steps: number;
  loss: number;
  tokensPerSecond: number;
}

export interface DemoResult {
  steps: number;
  params: number;
  backend: string;
  first_loss: number;
  last_loss: number;
  val_loss_before: number;
  val_loss_after: number;
  tokens_per_s: number;
}

/** The demo model: byte vocabulary, 2 layers, width 64, grouped-query attention. */
export const DEMO_CONFIG: Partial<LlamaConfig> = {
  vocab_size: 256,
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
};

export function runDemo(options: DemoOptions = {}, onProgress?: (p: DemoProgress) => void): DemoResult {
  return trainDemoModel(options, onProgress).result;
}

/** The demo's training, also returning the trained model (for the deployment part of `qkd demo`). */
export function trainDemoModel(options: DemoOptions = {}, onProgress?: (p: DemoProgress) => void): { result: DemoResult; model: LlamaModel } {
  const steps = options.steps ?? 60;
  const B = options.batchSize ?? 8;
  const T = options.seqLen ?? 64;
  const seed = options.seed ?? 1337;
  const peakLr = options.lr ?? 3e-3;
  const tokens = byteTokens(options.text ?? loadDefaultCorpus());
  const { train, validation } = splitTokens(tokens);
  const model = createLlama(DEMO_CONFIG, seed);
  const opt = new AdamW(model.arena, { lr: peakLr, weightDecay: 0.01 });
  const rng = new Rng(seed + 1);

  // A fixed slice of validation text, so before/after are comparable.
  const valBatches = [...sequentialBatches(validation, B, T, 4)];
  const validate = (): number =>
    noGrad(() => valBatches.reduce((s, b) => s + model.loss(model.forward(b.inputs, B, T), b.targets).item(), 0) / valBatches.length);

  const valBefore = validate();
  let first = NaN;
  let last = NaN;
  const started = performance.now();
  for (let step = 1; step <= steps; step++) {
    const { inputs, targets } = sampleBatch(train, B, T, rng);
    model.arena.zeroGrad();
    const loss = model.loss(model.forward(inputs, B, T), targets);
    backward(loss);
    clipGradNorm(model.arena.grad, 1.0);
    // Short linear warm-up, then constant: enough for a demo.
    opt.update(peakLr * Math.min(1, step / 10));
    last = loss.item();
    if (step === 1) first = last;
    const seconds = (performance.now() - started) / 1000;
    onProgress?.({ step, steps, loss: last, tokensPerSecond: (step * B * T) / seconds });
  }
  const seconds = (performance.now() - started) / 1000;
  const result: DemoResult = {
    steps,
    params: model.parameterCount,
    backend: currentBackend(),
    first_loss: first,
    last_loss: last,
    val_loss_before: valBefore,
    val_loss_after: validate(),
    tokens_per_s: (steps * B * T) / seconds,
  };
  return { result, model };
}

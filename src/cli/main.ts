/**
 * The qkd command line. Only this room knows about flags and terminals;
 * every command is one call of the typed API.
 */
import { Command, InvalidArgumentError } from 'commander';
import { QkdError } from '../errors.js';
import { nativeStatus, useBackend, currentBackend, type BackendName } from '../tensor/backend.js';
import { runDemo } from '../train/demo.js';
import { DEFAULT_CORPUS_NAME } from '../data/corpus.js';
import { VERSION } from '../index.js';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { loadCorpus } from '../data/corpus.js';
import { loadTokenizer } from '../data/tokenizer-io.js';
import { loadTrainConfig, presetConfig, type TrainConfig } from '../train/config.js';
import { train, type StepProgress } from '../train/trainer.js';
import { loadLlama } from '../models/llama-io.js';
import { loadLlama2c } from '../models/llama2c-io.js';
import { readLlama2cTokenizer } from '../data/llama2c-tokenizer.js';
import type { LlamaModel } from '../models/llama.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { statSync } from 'node:fs';
import { generate } from '../models/generate.js';
import { evaluatePerplexity } from '../eval/perplexity.js';

function positiveInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer, got '${value}'`);
    return n;
  };
}

function integer(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${flag} must be an integer, got '${value}'`);
    return n;
  };
}

function backendOption(value: string): BackendName {
  if (value !== 'reference' && value !== 'native') throw new InvalidArgumentError(`--backend must be 'reference' or 'native', got '${value}'`);
  return value;
}

function buildProgram(): Command {
  const program = new Command();
  program
    .name('qkd')
    .description('Distill, quantize and profile small language models in one training run.')
    .version(VERSION)
    .option('--backend <name>', "kernel backend: 'native' (C++ addon, default when built) or 'reference' (TypeScript)", backendOption)
    .hook('preAction', (cmd) => {
      const backend = cmd.opts().backend as BackendName | undefined;
      if (backend) useBackend(backend);
    });

  program
    .command('demo')
    .description(`train a tiny model on the embedded corpus (${DEFAULT_CORPUS_NAME}) and show the loss falling`)
    .option('--steps <n>', 'training steps', positiveInt('--steps'), 60)
    .option('--seed <n>', 'random seed', integer('--seed'), 1337)
    .action((opts: { steps: number; seed: number }) => {
      console.log(`qkd demo: tiny LLaMA (byte vocabulary) on ${DEFAULT_CORPUS_NAME}, ${opts.steps} steps, backend ${currentBackend()}`);
      const every = Math.max(1, Math.floor(opts.steps / 10));
      const result = runDemo({ steps: opts.steps, seed: opts.seed }, (p) => {
        if (p.step % every === 0 || p.step === 1 || p.step === p.steps) {
          console.log(`step ${String(p.step).padStart(4)}/${p.steps}  loss ${p.loss.toFixed(4)}  ${Math.round(p.tokensPerSecond)} tok/s`);
        }
      });
      console.log(`validation loss ${result.val_loss_before.toFixed(4)} → ${result.val_loss_after.toFixed(4)} (${result.params} parameters)`);
      console.log(JSON.stringify(result));
    });

  program
    .command('train')
    .description('train a LLaMA-style model on a text corpus, with checkpoints and exact resume')
    .requiredOption('--out <dir>', 'output directory (model, checkpoints, metrics.jsonl)')
    .option('--data <path>', "text file, directory of .txt/.md files, or 'default' (embedded Moby-Dick)", 'default')
    .option('--preset <name>', 'tiny | small | reference', 'tiny')
    .option('--config <file.yaml>', 'YAML training config (overrides --preset)')
    .option('--steps <n>', 'total optimiser steps (overrides the config)', positiveInt('--steps'))
    .option('--seed <n>', 'random seed (overrides the config)', integer('--seed'))
    .option('--resume', 'continue from the last checkpoint in --out')
    .action(async (opts: { out: string; data: string; preset: string; config?: string; steps?: number; seed?: number; resume?: boolean }) => {
      let config: TrainConfig = opts.config ? loadTrainConfig(opts.config) : presetConfig(opts.preset);
      if (opts.steps !== undefined) config = { ...config, steps: opts.steps };
      if (opts.seed !== undefined) config = { ...config, seed: opts.seed };
      const text = loadCorpus(opts.data);
      const progress = makeProgress(config.steps);
      let stopRequested = false;
      const onSigint = () => {
        stopRequested = true;
        process.stderr.write('\nqkd: interrupted, saving a checkpoint…\n');
      };
      process.once('SIGINT', onSigint);
      try {
        const result = await train({
          text,
          outDir: opts.out,
          config,
          resume: opts.resume ?? false,
          onStep: progress.update,
          shouldStop: () => stopRequested,
        });
        progress.stop();
        if (result.interrupted) console.log(`stopped at step ${result.steps}; resume with --resume`);
        console.log(JSON.stringify({ steps: result.steps, train_loss: result.train_loss, val_loss: result.val_loss, val_ppl: result.val_ppl, tokens_per_s: result.tokens_per_s }));
      } finally {
        progress.stop();
        process.removeListener('SIGINT', onSigint);
      }
    });

  program
    .command('eval')
    .description('perplexity and bits per byte of a model on a text')
    .requiredOption('--model <dir>', 'model directory (config.json + model.safetensors + tokenizer.json)')
    .option('--data <path>', "text file, directory, or 'default' (the held-out last 10% of Moby-Dick)", 'default')
    .option('--seq-len <n>', 'window length (default: the model\'s max_position_embeddings)', positiveInt('--seq-len'))
    .action((opts: { model: string; data: string; seqLen?: number }) => {
      const model = loadModelAny(opts.model);
      const tokenizer = loadTokenizer(join(opts.model, 'tokenizer.json'));
      let text = loadCorpus(opts.data);
      if (opts.data === 'default') {
        // The same held-out tail `qkd train` validates on (last 10% of the bytes).
        const bytes = Buffer.from(text, 'utf8');
        text = bytes.subarray(Math.floor(bytes.length * 0.9)).toString('utf8');
      }
      const r = evaluatePerplexity(model, tokenizer, text, opts.seqLen ?? model.config.max_position_embeddings);
      console.log(`perplexity ${r.ppl.toFixed(3)}, ${r.bits_per_byte.toFixed(4)} bits/byte over ${r.tokens} tokens`);
      console.log(JSON.stringify({ ppl: r.ppl, bits_per_byte: r.bits_per_byte, tokens: r.tokens }));
    });

  program
    .command('generate')
    .description('sample text from a model')
    .requiredOption('--model <path>', 'model directory, or a llama2.c checkpoint (.bin)')
    .option('--tokenizer <path>', 'tokenizer.json, or a llama2.c tokenizer.bin (default: tokenizer.json in --model)')
    .option('--prompt <text>', 'text to continue', '')
    .option('--steps <n>', 'tokens to generate', positiveInt('--steps'), 128)
    .option('--temperature <t>', '0 = greedy', parseFloat, 1)
    .option('--top-p <p>', 'nucleus sampling mass', parseFloat, 0.9)
    .option('--seed <n>', 'random seed', integer('--seed'), 0)
    .option('--ids', 'print the generated token ids instead of text')
    .action((opts: { model: string; tokenizer?: string; prompt: string; steps: number; temperature: number; topP: number; seed: number; ids?: boolean }) => {
      const model = loadModelAny(opts.model);
      const tokenizer = loadTokenizerAny(opts.tokenizer ?? join(opts.model, 'tokenizer.json'), model);
      let prompt = tokenizer.encode(opts.prompt, { bos: true });
      // A byte-level tokenizer has no BOS: start from a newline when the prompt is empty.
      if (prompt.length === 0) prompt = tokenizer.encode('\n');
      const out = generate(model, prompt, { steps: opts.steps, temperature: opts.temperature, topP: opts.topP, seed: opts.seed });
      console.log(opts.ids ? Array.from(out).join(' ') : opts.prompt + tokenizer.decode(out));
    });

  program
    .command('info')
    .description('show the kernel backend and native addon status')
    .action(() => {
      const status = nativeStatus();
      console.log(JSON.stringify({ version: VERSION, backend: currentBackend(), native: status }));
    });
  return program;
}

/** A model directory (Hugging Face layout) or a llama2.c checkpoint file. */
function loadModelAny(path: string): LlamaModel {
  let isFile = false;
  try {
    isFile = statSync(path).isFile();
  } catch {
    // fall through: loadLlama reports the missing directory
  }
  return isFile ? loadLlama2c(path) : loadLlama(path);
}

/** tokenizer.json (qkd / Hugging Face) or a llama2.c tokenizer.bin. */
function loadTokenizerAny(path: string, model: LlamaModel): Tokenizer {
  return path.endsWith('.bin') ? readLlama2cTokenizer(path, model.config.vocab_size) : loadTokenizer(path);
}

/** A progress bar with loss, tokens/s and ETA on a terminal; plain lines otherwise. */
function makeProgress(total: number): { update: (p: StepProgress) => void; stop: () => void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: 'train {bar} {value}/{total} | loss {loss} | val {val} | {tps} tok/s | ETA {eta_formatted}', stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    let val = '-';
    return {
      update(p) {
        if (p.valLoss !== undefined) val = p.valLoss.toFixed(4);
        const payload = { loss: p.loss.toFixed(4), val, tps: Math.round(p.tokensPerSecond) };
        if (!started) {
          bar.start(total, p.step, payload);
          started = true;
        } else bar.update(p.step, payload);
      },
      stop() {
        if (started) bar.stop();
        started = false;
      },
    };
  }
  const every = Math.max(1, Math.floor(total / 20));
  return {
    update(p) {
      if (p.step % every === 0 || p.valLoss !== undefined || p.step === p.steps) {
        console.log(`step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)}${p.valLoss !== undefined ? ` val_loss ${p.valLoss.toFixed(4)}` : ''} lr ${p.lr.toExponential(2)} ${Math.round(p.tokensPerSecond)} tok/s`);
      }
    },
    stop() {},
  };
}

/** Runs the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof QkdError) {
      process.stderr.write(`qkd: error: ${err.message}\n`);
      return 1;
    }
    const code = (err as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander already printed its message (help, version, usage errors)
      return (err as { exitCode?: number }).exitCode ?? 1;
    }
    throw err;
  }
}

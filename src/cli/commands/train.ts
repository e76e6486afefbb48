/** `qkd train`: a LLaMA-style model on a text corpus, with checkpoints and exact resume. */
import type { Command } from 'commander';
import { loadTokenizerAt } from '../../data/tokenizer-io.js';
import { SKIP_BAD_ROWS, TEXT_COLUMN, readCorpus, type CorpusFlags } from '../corpus.js';
import { loadTrainConfig, PRESETS, presetConfig, type TrainConfig } from '../../train/config.js';
import { readResumePoint, train } from '../../train/trainer.js';
import { choice, integer, positiveInt } from '../options.js';
import { CommandInterrupted } from '../interrupt.js';
import { trainingSession } from '../session.js';
import { commandLine, explicitly } from '../explicit.js';
import { currentWorld } from '../../parallel/world.js';

interface TrainFlags extends CorpusFlags {
  out: string;
  data: string;
  preset: string;
  config?: string;
  steps?: number;
  seed?: number;
  resume?: boolean;
  force?: boolean;
  recipe?: 'standard' | 'sat';
  tokenizer?: string;
}

/**
 * The config a new run starts with: the YAML file laid over the preset, then
 * the flags. On --resume only what was given explicitly is passed on, so the
 * trainer compares it with the checkpoint (and refuses a contradiction).
 */
function configFromFlags(cmd: Command, o: TrainFlags): TrainConfig | undefined {
  const given = explicitly(cmd);
  if (o.resume && !given.has('preset') && !given.has('config') && !given.has('recipe') && !given.has('seed') && !given.has('steps')) return undefined;
  // On --resume, start from the checkpoint's settings (a --config file is laid over them) so only what was given can differ.
  const base = o.resume && !given.has('preset') ? readResumePoint(o.out).state.config : o.preset;
  let config: TrainConfig;
  if (o.config) config = loadTrainConfig(o.config, base);
  else config = typeof base === 'string' ? presetConfig(base) : base;
  if (o.recipe !== undefined) config = { ...config, recipe: o.recipe };
  if (o.steps !== undefined) config = { ...config, steps: o.steps };
  if (o.seed !== undefined) config = { ...config, seed: o.seed };
  return config;
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('train a LLaMA-style model on a text corpus, with checkpoints and exact resume')
    .requiredOption('--out <dir>', 'output directory (model, checkpoints, metrics.jsonl); must be empty unless --resume or --force')
    .option('--data <path>', "text file, JSON Lines ({\"text\"} or chat {\"messages\"} rows), Parquet shard, a directory of them, or 'default' (embedded Moby-Dick)", 'default')
    .option('--tokenizer <path>', "a tokenizer to train with instead of the config's byte/BPE one: tokenizer.json, model directory, llama2.c tokenizer.bin or .gguf (chat rows need one with a chat template)")
    .option('--preset <name>', Object.keys(PRESETS).join(' | '), choice('--preset', Object.keys(PRESETS)), 'tiny')
    .option('--config <file.yaml>', 'YAML training config; fields it leaves out come from --preset')
    .option('--steps <n>', 'total optimiser steps (overrides the config; on --resume, more steps extend the run)', positiveInt('--steps'))
    .option('--seed <n>', 'random seed (overrides the config)', integer('--seed'))
    .option('--resume', 'continue the run in --out from its last checkpoint, with its own settings')
    .option('--force', 'start a new run in a non-empty --out, deleting the run that is there')
    .option('--recipe <name>', "'standard' or 'sat' (sensitivity-aware training; settings in the config's sat section)", choice('--recipe', ['standard', 'sat'] as const))
    .option(...SKIP_BAD_ROWS)
    .option(...TEXT_COLUMN)
    .action(async (o: TrainFlags, cmd: Command) => {
      const config = configFromFlags(cmd, o);
      const text = await readCorpus(o.data, o);
      const session = trainingSession('train');
      try {
        const result = await train({
          text,
          ...(o.tokenizer !== undefined ? { tokenizer: loadTokenizerAt(o.tokenizer) } : {}),
          outDir: o.out,
          config,
          resume: o.resume ?? false,
          force: o.force ?? false,
          onStep: session.onStep,
          shouldStop: session.shouldStop,
          onStopAgreed: session.stopAgreed,
          onNote: session.onNote,
          world: currentWorld(),
        });
        session.stopProgress();
        const state = result.state;
        // SAT runs and DBWA storage report their training state's bytes (the figures DBWA exists for).
        const reportState = result.recipe === 'sat' || state.storage === 'dbwa';
        if (reportState) {
          const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;
          process.stderr.write(
            `qkd: training state (weights + gradients + AdamW moments, ${state.storage}): ${mb(state.total)} accounted, ${mb(state.resident)} held, ` +
              `${mb(16 * result.params)} in float32; process peak RSS ${(result.peak_rss_bytes / 2 ** 20).toFixed(0)} MiB\n`,
          );
        }
        const extra = reportState
          ? { recipe: result.recipe, storage: state.storage, state_bytes: state.total, state_weight_bytes: state.weights, state_gradient_bytes: state.gradients, state_moment_bytes: state.moments, state_resident_bytes: state.resident }
          : {};
        console.log(JSON.stringify({ steps: result.steps, train_loss: result.train_loss, val_loss: result.val_loss, val_ppl: result.val_ppl, tokens_per_s: result.tokens_per_s, params: result.params, peak_rss_bytes: result.peak_rss_bytes, ...extra, ...(result.interrupted ? { interrupted: true } : {}) }));
        if (result.interrupted) throw new CommandInterrupted(`stopped at step ${result.steps}, checkpoint saved; continue with: ${commandLine(['qkd', 'train', '--out', o.out, ...(o.data !== 'default' ? ['--data', o.data] : []), '--resume'])}`);
      } finally {
        session.close();
      }
    });
}

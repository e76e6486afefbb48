/**
 * What the training experiments (kdqat, sakd) share: the flags
 * --data PATH|default, --budget NAME, --out DIR and --seed N (default 1337),
 * the corpus, the run directory OUT/<budget>-<corpus>[-seed<N>] (finished
 * runs in it are reused; <corpus> is moby-dick, or the --data path's last
 * part and a hash of its absolute path, so two corpora never share runs)
 * and a logger that prefixes the elapsed seconds.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { loadCorpus } from '../src/data/corpus.js';
import { train } from '../src/train/trainer.js';
import { modelDirectory } from '../src/models/load-any.js';
import { presetConfig, type TrainConfig } from '../src/train/config.js';

export interface ExperimentSetup<B> {
  budgetName: string;
  budget: B;
  /** The --data value ('default' for the embedded corpus). */
  data: string;
  seed: number;
  text: string;
  /** Where this configuration's runs live. */
  root: string;
  log(message: string): void;
}

export const DEFAULT_SEED = 1337;

/** Parses the shared flags (exits with a usage message on a bad one), loads the corpus and makes the run directory. */
export function setupExperiment<B>(defaultOut: string, budgets: Record<string, B>): ExperimentSetup<B> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      data: { type: 'string', default: 'default' },
      budget: { type: 'string', default: 'small' },
      out: { type: 'string', default: defaultOut },
      /** Seed of every run; rerunning with another seed shows the run-to-run spread. */
      seed: { type: 'string', default: String(DEFAULT_SEED) },
    },
  });
  const budget = budgets[values.budget!];
  if (budget === undefined) {
    console.error(`--budget must be ${Object.keys(budgets).join(' or ')}, got ${values.budget}`);
    process.exit(1);
  }
  const seed = Number(values.seed);
  if (!Number.isInteger(seed)) {
    console.error(`--seed must be an integer, got ${values.seed}`);
    process.exit(1);
  }
  const corpus = values.data === 'default' ? 'moby-dick' : `${basename(resolve(values.data!)).replace(/[^A-Za-z0-9._-]/g, '_')}-${createHash('sha256').update(resolve(values.data!)).digest('hex').slice(0, 8)}`;
  const root = join(values.out!, `${values.budget}-${corpus}${seed === DEFAULT_SEED ? '' : `-seed${seed}`}`);
  mkdirSync(root, { recursive: true });
  const started = performance.now();
  return {
    budgetName: values.budget!,
    budget,
    data: values.data!,
    seed,
    text: loadCorpus(values.data!),
    root,
    log: (message) => console.log(`[${((performance.now() - started) / 1000).toFixed(0).padStart(5)} s] ${message}`),
  };
}

/**
 * The experiment's teacher in ROOT/teacher: trained by qkd's trainer with
 * `config` on `text` when no finished run is there, else reused. Returns
 * its model directory.
 */
export async function trainedTeacher(root: string, text: string, config: TrainConfig, what: string, log: (m: string) => void): Promise<string> {
  const dir = join(root, 'teacher');
  if (!existsSync(join(dir, 'latest.json'))) {
    log(`training the teacher (${what}) into ${dir}`);
    // force: an unfinished run (no latest.json) has nothing worth keeping.
    await train({ text, outDir: dir, config, force: true });
  } else log(`reusing the teacher in ${dir}`);
  return modelDirectory(dir);
}

/** The experiment's teacher of a preset shape, trained `steps` steps (with `extra` settings) by trainedTeacher. */
export function presetTeacher(setup: Pick<ExperimentSetup<unknown>, 'root' | 'text' | 'seed' | 'log'>, preset: string, steps: number, extra: Partial<TrainConfig> = {}, what = ''): Promise<string> {
  const config = { ...presetConfig(preset), seed: setup.seed, steps, checkpoint_every: steps, ...extra };
  return trainedTeacher(setup.root, setup.text, config, `${preset}${what}, ${steps} steps`, setup.log);
}

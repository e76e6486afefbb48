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
import { loadCorpus, splitText } from '../data/corpus.js';
import { loadTokenizer } from '../data/tokenizer-io.js';
import { loadTrainConfig, presetConfig, type TrainConfig } from '../train/config.js';
import { train, type StepProgress } from '../train/trainer.js';
import { loadModelAny, modelDirectory } from '../models/load-any.js';
import { quantizeModelFile } from '../compress/quantize.js';
import { PLAN_BITS, type PlanBits } from '../quant/scheme.js';
import { readLlama2cTokenizer } from '../data/llama2c-tokenizer.js';
import type { LlamaModel } from '../models/llama.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { generate } from '../models/generate.js';
import { evaluatePerplexity } from '../eval/perplexity.js';
import { auditAndPlan } from '../swan/plan.js';
import { distill } from '../train/distill.js';
import { loadDistillConfig, parseDistillConfig } from '../train/distill-config.js';
import type { AuditReport } from '../swan/types.js';
import { renderAuditHtml } from '../report/audit-html.js';
import { writeBytesAtomic } from '../io/atomic.js';

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

function planBits(value: string): PlanBits {
  const n = Number(value);
  if (!(PLAN_BITS as readonly number[]).includes(n)) throw new InvalidArgumentError(`--bits must be one of ${PLAN_BITS.join(', ')}, got '${value}'`);
  return n as PlanBits;
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
    .option('--recipe <name>', "'standard' or 'sat' (sensitivity-aware training; settings in the config's sat section)")
    .action(async (opts: { out: string; data: string; preset: string; config?: string; steps?: number; seed?: number; resume?: boolean; recipe?: string }) => {
      let config: TrainConfig = opts.config ? loadTrainConfig(opts.config) : presetConfig(opts.preset);
      if (opts.recipe !== undefined) {
        if (opts.recipe !== 'standard' && opts.recipe !== 'sat') throw new QkdError('ARGUMENT', `--recipe must be 'standard' or 'sat', got '${opts.recipe}'`, { field: 'recipe' });
        config = { ...config, recipe: opts.recipe };
      }
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
          onNote: (note) => {
            progress.stop();
            process.stderr.write(`qkd: ${note}\n`);
          },
        });
        progress.stop();
        if (result.interrupted) console.log(`stopped at step ${result.steps}; resume with --resume`);
        const extra = config.recipe === 'sat' ? { recipe: 'sat', ...result.recipe_summary } : {};
        const summary = result.recipe_summary;
        if (summary?.state_bytes !== undefined && summary.state_resident_bytes !== undefined) {
          const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;
          process.stderr.write(
            `qkd: training state (weights + gradients + AdamW moments): ${mb(summary.state_bytes)} accounted, ${mb(summary.state_resident_bytes)} held, ` +
              `${mb(16 * result.params)} in float32; process peak RSS ${(result.peak_rss_bytes / 2 ** 20).toFixed(0)} MiB\n`,
          );
        }
        console.log(JSON.stringify({ steps: result.steps, train_loss: result.train_loss, val_loss: result.val_loss, val_ppl: result.val_ppl, tokens_per_s: result.tokens_per_s, params: result.params, peak_rss_bytes: result.peak_rss_bytes, ...extra }));
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
      const tokenizer = loadTokenizer(join(modelDirectory(opts.model), 'tokenizer.json'));
      let text = loadCorpus(opts.data);
      if (opts.data === 'default') {
        // The same held-out tail `qkd train` validates on (last 10% of the bytes).
        text = splitText(text).validation;
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
      const tokenizer = loadTokenizerAny(opts.tokenizer ?? join(modelDirectory(opts.model), 'tokenizer.json'), model);
      let prompt = tokenizer.encode(opts.prompt, { bos: true });
      // A byte-level tokenizer has no BOS: start from a newline when the prompt is empty.
      if (prompt.length === 0) prompt = tokenizer.encode('\n');
      const out = generate(model, prompt, { steps: opts.steps, temperature: opts.temperature, topP: opts.topP, seed: opts.seed });
      console.log(opts.ids ? Array.from(out).join(' ') : opts.prompt + tokenizer.decode(out));
    });

  program
    .command('distill')
    .description('distill a teacher into a smaller student, optionally with quantization-aware training (KD+QAT), in one run')
    .requiredOption('--teacher <path>', 'teacher: model directory, qkd run directory, or llama2.c .bin (frozen)')
    .requiredOption('--out <dir>', 'output directory (FP32 student, checkpoints, metrics.jsonl, quantized/)')
    .option('--data <path>', "training text: file, directory or 'default' (embedded Moby-Dick)", 'default')
    .option('--config <file.yaml>', 'YAML config with sections training / quantization / distillation / optimizer / student')
    .option('--recipe <name>', 'kd | qat | kd-qat | sakd')
    .option('--student-preset <name>', 'student shape: tiny | small | reference (default: the teacher with half its layers)')
    .option('--init <method>', 'student initialisation: pruned | svd | random')
    .option('--steps <n>', 'total optimiser steps', positiveInt('--steps'))
    .option('--temperature <t>', 'KD temperature τ', parseFloat)
    .option('--lambda <l>', 'λ of L_distill, constant over all phases', parseFloat)
    .option('--gamma <g>', 'γ of L_quant, constant over all phases', parseFloat)
    .option('--bits <b>', 'deployment / fake-quantization bits', positiveInt('--bits'))
    .option('--seed <n>', 'random seed', integer('--seed'))
    .option('--resume', 'continue from the last checkpoint in --out')
    .action(async (opts: { teacher: string; out: string; data: string; config?: string; recipe?: string; studentPreset?: string; init?: string; steps?: number; temperature?: number; lambda?: number; gamma?: number; bits?: number; seed?: number; resume?: boolean }) => {
      const base = opts.config ? loadDistillConfig(opts.config) : parseDistillConfig({});
      // Flags override single fields; the result is validated like the file.
      const merged = {
        ...base,
        recipe: opts.recipe ?? base.recipe,
        training: { ...base.training, steps: opts.steps ?? base.training.steps, seed: opts.seed ?? base.training.seed },
        quantization: { ...base.quantization, bits: opts.bits ?? base.quantization.bits },
        distillation: { ...base.distillation, temperature: opts.temperature ?? base.distillation.temperature, lambda_distill: opts.lambda ?? base.distillation.lambda_distill, gamma_quant: opts.gamma ?? base.distillation.gamma_quant },
        student: { ...base.student, preset: opts.studentPreset ?? base.student.preset, init: opts.init ?? base.student.init },
      };
      const config = parseDistillConfig(merged, opts.config ?? 'command-line flags');
      const text = loadCorpus(opts.data);
      const progress = makeProgress(config.training.steps);
      let stopRequested = false;
      const onSigint = () => {
        stopRequested = true;
        process.stderr.write('\nqkd: interrupted, saving a checkpoint…\n');
      };
      process.once('SIGINT', onSigint);
      try {
        const result = await distill({
          teacher: opts.teacher,
          text,
          outDir: opts.out,
          config,
          resume: opts.resume,
          onStep: (p) => progress.update(p),
          shouldStop: () => stopRequested,
          onNote: (note) => {
            progress.stop();
            process.stderr.write(`qkd: ${note}\n`);
          },
        });
        progress.stop();
        if (result.sakd_report) {
          // The post-distillation audit: both profiles as HTML beside sakd-report.json.
          writeBytesAtomic(join(opts.out, 'sakd-teacher.html'), renderAuditHtml(result.sakd_report.teacher, { title: 'SAKD teacher profile' }));
          writeBytesAtomic(join(opts.out, 'sakd-student.html'), renderAuditHtml(result.sakd_report.student, { title: 'SAKD student profile' }));
          const q = result.sakd_report.quantized_student;
          console.log(`post-distillation audit: ${join(opts.out, 'sakd-report.json')} (+ sakd-teacher.html, sakd-student.html); packed ${q.bits}-bit student val ppl ${q.val_ppl.toFixed(3)} vs FP32 ${result.sakd_report.fp32_student_val_ppl.toFixed(3)}`);
        }
        console.log(`${result.recipe}: val loss ${result.val_loss.toFixed(4)} (ppl ${result.val_ppl.toFixed(3)}); packed ${config.quantization.bits}-bit student (${result.quantized_avg_bits.toFixed(3)} avg bits, ${result.quantized_bytes} bytes) in ${result.quantized_dir}`);
        console.log(JSON.stringify({ recipe: result.recipe, steps: result.steps, train_loss: result.train_loss, val_loss: result.val_loss, val_ppl: result.val_ppl, teacher_entropy: result.teacher_entropy, quantized_dir: result.quantized_dir, quantized_avg_bits: result.quantized_avg_bits, quantized_bytes: result.quantized_bytes, interrupted: result.interrupted }));
      } finally {
        progress.stop();
        process.removeListener('SIGINT', onSigint);
      }
    });

  program
    .command('audit')
    .description('data-free sensitivity profile of every weight tensor (SPEC section 1), with a mixed-precision bit plan')
    .argument('<model>', 'a .safetensors file, a model directory, a qkd run directory, a .gguf file, or a llama2.c .bin')
    .option('--json <out>', "write the full report as JSON ('-' for stdout)")
    .option('--html <out>', 'write a self-contained HTML report')
    .option('--bits <b>', 'bit width of the noise and reconstruction metrics', positiveInt('--bits'), 4)
    .option('--probes <k>', 'Gaussian probes for noise amplification', positiveInt('--probes'), 8)
    .option('--budget <bits>', 'average bits per weight of the bit plan shown in the report', parseFloat, 4.5)
    .option('--group <g>', 'group size of the bit plan (0 = per channel)', integer('--group'), 128)
    .option('--seed <n>', 'random seed of the sketches and probes', integer('--seed'), 1234)
    .action((model: string, opts: { json?: string; html?: string; bits: number; probes: number; budget: number; group: number; seed: number }) => {
      const progress = makeCountProgress('audit', 'tensors');
      let planned;
      try {
        planned = auditAndPlan(model, { scheme: { groupSize: opts.group, symmetric: false }, budgetBits: opts.budget }, { bits: opts.bits, probes: opts.probes, seed: opts.seed, onTensor: (p) => progress.update(p.done, p.total, p.params) });
      } finally {
        progress.stop();
      }
      const { report, plan } = planned;
      const json = { ...report, plan: { budget_bits: opts.budget, group_size: opts.group, avg_bits: planned.avgBits, bytes: planned.bytes, bits: plan.bits } };
      if (opts.json === '-') console.log(JSON.stringify(json, null, 2));
      else if (opts.json) writeBytesAtomic(opts.json, JSON.stringify(json, null, 2) + '\n');
      if (opts.html) writeBytesAtomic(opts.html, renderAuditHtml(report, { plan, planSummary: { avgBits: planned.avgBits, bytes: planned.bytes } }));
      if (opts.json !== '-') {
        printAuditTable(report, plan.bits);
        console.log(`${report.tensors.length} tensors, ${(report.params / 1e6).toFixed(2)}M params in ${report.seconds.toFixed(2)} s (${(report.params / report.seconds / 1e6).toFixed(1)}M params/s); plan at ${opts.budget} bits: ${planned.avgBits.toFixed(3)} avg bits, ${planned.bytes} bytes`);
        console.log(JSON.stringify({ model, params: report.params, seconds: report.seconds, tensors: report.tensors.length, plan_avg_bits: planned.avgBits, plan_bytes: planned.bytes, json: opts.json ?? null, html: opts.html ?? null }));
      }
    });

  program
    .command('quantize')
    .description('quantize a model to a packed checkpoint: uniform bits, or a data-free mixed-precision plan under a size budget')
    .argument('<model>', 'a model directory, a qkd run directory, or a llama2.c .bin')
    .requiredOption('--out <dir>', 'output directory (packed model.safetensors, config.json, tokenizer.json, quantization.json)')
    .option('--bits <b>', `one width for every weight (${PLAN_BITS.join(', ')})`, planBits)
    .option('--budget <bits>', 'average bits per weight, scales included: mixed precision from the sensitivity profile', parseFloat)
    .option('--group <g>', 'input columns per group (0 = per output channel)', integer('--group'), 128)
    .option('--symmetric', 'symmetric quantization (no zero points)')
    .option('--method <m>', "'rtn' or 'gptq' (calibrated on --calibration text)", 'rtn')
    .option('--plan <file.json>', 'per-tensor widths (name → bits) overriding the computed plan')
    .option('--calibration <path>', "GPTQ calibration text: file, directory or 'default'", 'default')
    .option('--calibration-batches <n>', 'GPTQ calibration batches of 4 sequences', positiveInt('--calibration-batches'), 16)
    .option('--seed <n>', 'random seed', integer('--seed'), 0)
    .action((model: string, opts: { out: string; bits?: PlanBits; budget?: number; group: number; symmetric?: boolean; method: string; plan?: string; calibration: string; calibrationBatches: number; seed: number }) => {
      if (opts.method !== 'rtn' && opts.method !== 'gptq') throw new QkdError('ARGUMENT', `--method must be 'rtn' or 'gptq', got '${opts.method}'`, { field: 'method' });
      if (opts.group < 0) throw new QkdError('ARGUMENT', `--group must be 0 or positive, got ${opts.group}`, { field: 'group' });
      const profile = makeCountProgress('profile', 'tensors');
      const quant = makeCountProgress(opts.method, 'tensors');
      let result;
      try {
        result = quantizeModelFile(model, {
          out: opts.out, bits: opts.bits, budgetBits: opts.budget, groupSize: opts.group, symmetric: opts.symmetric ?? false, method: opts.method,
          planFile: opts.plan, calibration: opts.calibration, calibrationBatches: opts.calibrationBatches, seed: opts.seed,
          onProfile: (p) => profile.update(p.done, p.total, p.params),
          onQuantize: (p) => quant.update(p.done, p.total, 0),
        });
      } finally {
        profile.stop();
        quant.stop();
      }
      const histogram: Record<string, number> = {};
      for (const b of Object.values(result.plan.bits)) histogram[b] = (histogram[b] ?? 0) + 1;
      console.log(`${result.method}: ${Object.keys(result.plan.bits).length} weights (${Object.entries(histogram).map(([b, n]) => `${n}×${b}-bit`).join(', ')}), ${result.avgBits.toFixed(3)} avg bits, ${result.bytes} bytes -> ${result.out}`);
      console.log(JSON.stringify({ out: result.out, method: result.method, avg_bits: result.avgBits, bytes: result.bytes, params: result.params, bits_histogram: histogram }));
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

/** Counting progress (tensors): a bar with rate and ETA on a terminal, plain lines otherwise. */
function makeCountProgress(label: string, unit: string): { update: (done: number, total: number, params: number) => void; stop: () => void } {
  const start = performance.now();
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} {bar} {value}/{total} ${unit} | {rate} ${unit}/s | {mps}M params/s | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(done, total, params) {
        const s = (performance.now() - start) / 1000;
        const payload = { rate: (done / s).toFixed(1), mps: (params / s / 1e6).toFixed(1) };
        if (!started) {
          bar.start(total, done, payload);
          started = true;
        } else bar.update(done, payload);
      },
      stop() {
        if (started) bar.stop();
        started = false;
      },
    };
  }
  let lastPrinted = -1;
  return {
    update(done, total, params) {
      const tenth = Math.floor((10 * done) / total);
      if (tenth === lastPrinted && done !== total) return;
      lastPrinted = tenth;
      const s = (performance.now() - start) / 1000;
      const eta = done > 0 ? (s / done) * (total - done) : 0;
      console.error(`${label} ${done}/${total} ${unit}, ${(done / s).toFixed(1)} ${unit}/s, ${(params / s / 1e6).toFixed(1)}M params/s, ETA ${eta.toFixed(0)} s`);
    },
    stop() {},
  };
}

/** The most sensitive tensors first. */
function printAuditTable(report: AuditReport, bits: Record<string, number>): void {
  const rows = report.tensors.filter((t) => t.composite !== null).sort((a, b) => b.composite! - a.composite!);
  const fmt = (v: number | null, d = 3): string => (v === null ? '—' : v.toFixed(d));
  console.log(['tensor'.padEnd(44), 'kurt'.padStart(8), 'spec'.padStart(6), 'σ/F'.padStart(6), 'noise'.padStart(6), 'err'.padStart(6), 'S'.padStart(6), 'bits'.padStart(5)].join(' '));
  const shown = rows.length > 24 ? [...rows.slice(0, 12), null, ...rows.slice(-8)] : rows;
  for (const t of shown) {
    if (t === null) {
      console.log(`  ... ${rows.length - 20} more ...`);
      continue;
    }
    console.log([t.name.slice(-44).padEnd(44), fmt(t.kurtosis, 2).padStart(8), fmt(t.spectral_concentration).padStart(6), fmt(t.sigma_max_over_fro).padStart(6), fmt(t.noise_amplification).padStart(6), fmt(t.reconstruction_error).padStart(6), fmt(t.composite).padStart(6), String(bits[t.name] ?? '—').padStart(5)].join(' '));
  }
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

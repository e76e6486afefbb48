/** `qkd distill`: a teacher into a smaller student, optionally with QAT, in one run. */
import { InvalidArgumentError, type Command } from 'commander';
import { join } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { SKIP_BAD_ROWS, TEXT_COLUMN, readCorpus, type CorpusFlags } from '../corpus.js';
import { distill, savedDistillConfig } from '../../train/distill.js';
import { savedMohawkConfig, type MohawkResult } from '../../train/mohawk.js';
import { GGUF_TYPE_NAMES, RECIPES, loadDistillConfig, parseDistillConfig, recipeRunsWithoutTeacher, type DistillConfig } from '../../train/distill-config.js';
import { PRESETS } from '../../train/config.js';
import { renderAuditHtml } from '../../report/audit-html.js';
import { writeBytesAtomic } from '../../io/atomic.js';
import { choice, decimal, integer, integerIn, numberChoice, positiveInt } from '../options.js';
import { CommandInterrupted } from '../interrupt.js';
import { trainingSession } from '../session.js';
import { commandLine } from '../explicit.js';
import { SERVER_APIS, TEACHER_API_KEY_ENV, type ServerApi } from '../../distill/teacher-server.js';
import type { CacheTeacher } from '../../train/server-teacher.js';
import { modelFileFormat } from '../../io/tensor-source.js';
import { QkdError } from '../../errors.js';
import { loadTokenizerAt } from '../../data/tokenizer-io.js';
import { currentWorld } from '../../parallel/world.js';


/**
 * --teacher PATH [--teacher-engine llama.cpp], --teacher-url URL --teacher-model NAME,
 * several --teacher PATH (mixed), or none (recipes seqkd / seqkd-qat / qat with --student or a preset).
 */
function teacherOf(o: DistillFlags, recipe: DistillConfig['recipe']): string | CacheTeacher | string[] | null {
  const paths = o.teacher ?? [];
  if (paths.length > 0 && o.teacherUrl !== undefined) throw new QkdError('ARGUMENT', '--teacher (a model here) and --teacher-url (a model on a server) name two teachers', { field: '--teacher-url', hint: 'one of them' });
  if (paths.length > 1) {
    for (const [flag, v] of [['--teacher-engine', o.teacherEngine], ['--teacher-tokenizer', o.teacherTokenizer]] as const) {
      if (v !== undefined) throw new QkdError('ARGUMENT', `${flag} applies to one teacher, and ${paths.length} are given`, { field: flag, hint: 'several teachers are models qkd loads, of one tokenizer' });
    }
    return paths;
  }
  if (o.teacherWeights !== undefined || o.teacherMix !== undefined) {
    throw new QkdError('ARGUMENT', `${o.teacherWeights !== undefined ? '--teacher-weights' : '--teacher-mix'} mixes several teachers, and ${paths.length === 0 && o.teacherUrl === undefined ? 'none is' : 'one is'} given`, { field: o.teacherWeights !== undefined ? '--teacher-weights' : '--teacher-mix', hint: '--teacher A --teacher B' });
  }
  if (o.teacherUrl === undefined) {
    if (paths.length === 0) {
      if (recipeRunsWithoutTeacher(recipe)) return null;
      throw new QkdError('ARGUMENT', 'no teacher given', { field: '--teacher', hint: '--teacher PATH, or --teacher-url URL --teacher-model NAME (or --recipe seqkd on text a teacher wrote: qkd synth)' });
    }
    const teacher = paths[0]!;
    for (const [flag, v] of [['--teacher-model', o.teacherModel], ['--teacher-api', o.teacherApi], ['--teacher-concurrency', o.teacherConcurrency], ['--teacher-timeout', o.teacherTimeout]] as const) {
      if (v !== undefined) throw new QkdError('ARGUMENT', `${flag} applies to a teacher on a server`, { field: flag, hint: '--teacher-url URL' });
    }
    if (o.teacherEngine === 'llama.cpp') {
      if (!existsSync(teacher) || !statSync(teacher).isFile() || modelFileFormat(teacher) !== 'gguf') throw new QkdError('ARGUMENT', `--teacher-engine llama.cpp runs a GGUF file, and ${teacher} is not one`, { path: teacher, field: '--teacher', hint: 'a .gguf teacher (qkd export writes one)' });
      return { engine: 'llama.cpp', gguf: teacher, threads: o.teacherThreads ?? availableParallelism() };
    }
    if (o.teacherThreads !== undefined) throw new QkdError('ARGUMENT', '--teacher-threads applies to a teacher in llama.cpp', { field: '--teacher-threads', hint: '--teacher-engine llama.cpp' });
    return teacher;
  }
  if (o.teacherEngine !== undefined) throw new QkdError('ARGUMENT', '--teacher-engine applies to --teacher (the server runs its own engine)', { field: '--teacher-engine', hint: 'leave it out with --teacher-url' });
  let url: URL;
  try {
    url = new URL(o.teacherUrl);
  } catch {
    throw new QkdError('ARGUMENT', `--teacher-url '${o.teacherUrl}' is not a URL`, { field: '--teacher-url', hint: 'http://host:port of a vLLM or SGLang server' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new QkdError('ARGUMENT', `--teacher-url '${o.teacherUrl}' is not an http(s) URL`, { field: '--teacher-url', hint: 'http://host:port' });
  if (o.teacherModel === undefined) throw new QkdError('ARGUMENT', '--teacher-url needs the served model\'s name', { field: '--teacher-model', hint: 'the name the server serves the model under (vLLM: --served-model-name or the model path)' });
  const apiKey = process.env[TEACHER_API_KEY_ENV];
  return {
    server: { url: o.teacherUrl, model: o.teacherModel, api: o.teacherApi ?? 'vllm', ...(apiKey ? { apiKey } : {}) },
    concurrency: o.teacherConcurrency,
    timeoutMs: o.teacherTimeout !== undefined ? o.teacherTimeout * 1000 : undefined,
  };
}

interface DistillFlags extends CorpusFlags {
  teacher?: string[];
  teacherWeights?: number[];
  teacherMix?: 'mean' | 'confidence' | 'alternate';
  assistant?: string;
  assistantSteps?: number;
  teacherUrl?: string;
  teacherEngine?: 'qkd' | 'llama.cpp';
  teacherThreads?: number;
  teacherModel?: string;
  teacherApi?: ServerApi;
  teacherConcurrency?: number;
  teacherTimeout?: number;
  topK?: number;
  studentTokenizer?: string;
  teacherTokenizer?: string;
  crossTokenizer?: 'uld' | 'aligned';
  out: string;
  data: string;
  config?: string;
  recipe?: string;
  studentPreset?: string;
  init?: string;
  student?: string;
  steps?: number;
  seqLen?: number;
  batchSize?: number;
  temperature?: number;
  lambda?: number;
  gamma?: number;
  bits?: number;
  format?: string;
  export?: string;
  seed?: number;
  resume?: boolean;
  force?: boolean;
  attentionLayers?: number[] | { most_sensitive: number };
  mohawkStages?: (1 | 2 | 3)[];
  mohawkStage3?: 'kd' | 'kd-qat';
}

/** --attention-layers 0,3 → [0, 3]; top:2 → the 2 most sensitive (recipe mohawk). */
function attentionLayerList(value: string): number[] | { most_sensitive: number } {
  const top = /^top:(\d+)$/.exec(value.trim());
  if (top !== null) return { most_sensitive: Number(top[1]) };
  if (value.trim() === '') return [];
  const parts = value.split(',').map((p) => p.trim());
  if (!parts.every((p) => /^\d+$/.test(p))) throw new InvalidArgumentError(`--attention-layers takes layer indices separated by commas (0,3) or top:K, got '${value}'`);
  return parts.map(Number);
}

/** --mohawk-stages 2,3 → [2, 3]. */
function stageList(value: string): (1 | 2 | 3)[] {
  const parts = value.split(',').map((p) => p.trim());
  if (!parts.every((p) => p === '1' || p === '2' || p === '3')) throw new InvalidArgumentError(`--mohawk-stages takes stages 1, 2, 3 separated by commas (e.g. 2,3), got '${value}'`);
  return parts.map((p) => Number(p) as 1 | 2 | 3);
}

/** --teacher-weights 0.7,0.3 → [0.7, 0.3] (positive numbers). */
function weightList(value: string): number[] {
  const parts = value.split(',').map((p) => p.trim());
  const out = parts.map(Number);
  if (parts.some((p) => p === '') || out.some((w) => !Number.isFinite(w) || w <= 0)) throw new InvalidArgumentError(`--teacher-weights takes positive numbers separated by commas, got '${value}'`);
  return out;
}

/** `gguf:TYPE` → TYPE (the only export target so far). */
function ggufExport(value: string): string {
  const m = /^gguf:(.+)$/.exec(value);
  if (m === null || !GGUF_TYPE_NAMES.includes(m[1]!)) throw new InvalidArgumentError(`--export takes gguf:TYPE with TYPE one of ${GGUF_TYPE_NAMES.join(', ')}, got '${value}'`);
  return m[1]!;
}

/** The base config: the YAML file, or on --resume the run's own, or the defaults. */
function baseConfig(o: DistillFlags): DistillConfig {
  if (o.config) return loadDistillConfig(o.config);
  // A mohawk run keeps its own config (its stage 3's checkpoint holds the stage's kd config).
  if (o.resume) {
    const mohawk = savedMohawkConfig(o.out);
    if (mohawk !== null) return mohawk;
  }
  if (o.resume && existsSync(join(o.out, 'latest.json'))) return savedDistillConfig(o.out) ?? parseDistillConfig({});
  return parseDistillConfig({});
}

/** Flags override single fields; the result is validated like the file. */
function configFromFlags(o: DistillFlags): DistillConfig {
  const base = baseConfig(o);
  const merged = {
    ...base,
    recipe: o.recipe ?? base.recipe,
    assistant: o.assistant !== undefined ? { preset: o.assistant, model: null, steps: o.assistantSteps ?? null } : o.assistantSteps !== undefined && base.assistant !== null ? { ...base.assistant, steps: o.assistantSteps } : base.assistant,
    training: { ...base.training, steps: o.steps ?? base.training.steps, seed: o.seed ?? base.training.seed, seq_len: o.seqLen ?? base.training.seq_len, batch_size: o.batchSize ?? base.training.batch_size },
    quantization: { ...base.quantization, bits: o.bits ?? base.quantization.bits, format: o.format ?? base.quantization.format },
    distillation: {
      ...base.distillation,
      ...(o.topK !== undefined && o.crossTokenizer === undefined ? { soft_target_cache: { top_k: o.topK } } : {}),
      // --cross-tokenizer METHOD (with --top-k for aligned KD); --student-tokenizer alone means aligned KD, when there is a teacher to cross from.
      ...(o.crossTokenizer !== undefined || (o.studentTokenizer !== undefined && base.distillation.cross_tokenizer === null && ((o.teacher?.length ?? 0) > 0 || o.teacherUrl !== undefined))
        ? { cross_tokenizer: { ...(base.distillation.cross_tokenizer ?? {}), method: o.crossTokenizer ?? base.distillation.cross_tokenizer?.method ?? 'aligned', ...(o.topK !== undefined ? { top_k: o.topK } : {}) } }
        : {}),
      ...(o.teacherMix !== undefined || o.teacherWeights !== undefined ? { teachers: { mix: o.teacherMix ?? base.distillation.teachers.mix, weights: o.teacherWeights ?? base.distillation.teachers.weights } } : {}),
      temperature: o.temperature ?? base.distillation.temperature, lambda_distill: o.lambda ?? base.distillation.lambda_distill, gamma_quant: o.gamma ?? base.distillation.gamma_quant },
    student: { ...base.student, preset: o.studentPreset ?? base.student.preset, init: o.init ?? base.student.init, from: o.student ?? base.student.from, tokenizer: o.studentTokenizer ?? base.student.tokenizer, attention_layers: o.attentionLayers ?? base.student.attention_layers },
    mohawk: { ...base.mohawk, stages: o.mohawkStages ?? base.mohawk.stages, stage3: o.mohawkStage3 ?? base.mohawk.stage3 },
  };
  return parseDistillConfig(merged, o.config ?? 'command-line flags');
}

export function registerDistill(program: Command): void {
  program
    .command('distill')
    .description('distill a teacher into a smaller student, optionally with quantization-aware training (KD+QAT), in one run')
    .option('--teacher <path>', 'teacher: model directory, qkd run directory, GGUF or llama2.c .bin (frozen); repeat for several teachers of one tokenizer (mixed by --teacher-mix)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--teacher-mix <mix>', 'several teachers: mean (distributions averaged by --teacher-weights; default), confidence (also weighted per position by each one\'s top probability) or alternate (each batch from one, drawn by the weights)', choice('--teacher-mix', ['mean', 'confidence', 'alternate'] as const))
    .option('--teacher-weights <w,...>', 'several teachers: one positive weight each, comma-separated (default equal)', weightList)
    .option('--assistant <preset>', 'a teaching assistant of this preset shape: the teacher is first distilled into it (DIR/assistant, recipe kd), and it then teaches the student')
    .option('--assistant-steps <n>', "the assistant's steps (default --steps)", positiveInt('--assistant-steps'))
    .option('--teacher-engine <engine>', 'what runs the --teacher: qkd (default) or llama.cpp (a GGUF in process through node-llama-cpp; its top-k fill soft-target caches, then offline KD; needs --student)', choice('--teacher-engine', ['qkd', 'llama.cpp'] as const))
    .option('--teacher-threads <n>', 'llama.cpp threads for --teacher-engine llama.cpp (default: every core)', positiveInt('--teacher-threads'))
    .option('--teacher-url <url>', 'teacher on an inference server (vLLM or SGLang): its top-k log-probs fill soft-target caches, then offline KD; needs --student (API key: $' + TEACHER_API_KEY_ENV + ')')
    .option('--teacher-model <name>', 'the served model\'s name (with --teacher-url)')
    .option('--teacher-api <api>', `the server's API: ${SERVER_APIS.join(' | ')} (default vllm)`, choice('--teacher-api', SERVER_APIS))
    .option('--teacher-concurrency <n>', 'requests in flight to the teacher server (default 4)', positiveInt('--teacher-concurrency'))
    .option('--teacher-timeout <s>', 'seconds per request to the teacher server before it is retried (default 120)', decimal('--teacher-timeout', { min: 0, exclusiveMin: true }))
    .option('--student-tokenizer <path>', "the student's own tokenizer (tokenizer.json, model directory, GGUF or tokenizer.bin): distillation across tokenizers (with --init random or --student)")
    .option('--teacher-tokenizer <path>', "the teacher's tokenizer (default: the teacher's own; a server teacher's across tokenizers must be given: qkd sends it token ids)")
    .option('--cross-tokenizer <method>', 'across tokenizers: aligned (the teacher\'s distribution carried into the student\'s vocabulary by text; default) or uld (sorted-probability Wasserstein-1); use --temperature 1', choice('--cross-tokenizer', ['uld', 'aligned'] as const))
    .option('--top-k <k>', "the teacher's top-k log-probs kept per position (offline KD: distillation.soft_target_cache.top_k; a server teacher's default 20)", positiveInt('--top-k'))
    .requiredOption('--out <dir>', 'output directory (FP32 student, checkpoints, metrics.jsonl, quantized/); must be empty unless --resume or --force')
    .option('--data <path>', "training text: file, JSON Lines ({\"text\"} or chat {\"messages\"} rows: the loss counts the assistant's tokens), Parquet shard, a directory of them, or 'default' (embedded Moby-Dick)", 'default')
    .option('--config <file.yaml>', 'YAML config with sections training / quantization / distillation / optimizer / student (missing fields take defaults)')
    .option('--recipe <name>', `${RECIPES.join(' | ')} (seqkd: the task loss on teacher-generated text from qkd synth, plus logit KD when --teacher is given; no teacher needed; mohawk: a state-space student in three stages, docs/mohawk.md)`, choice('--recipe', RECIPES))
    .option('--student-preset <name>', `student shape: ${Object.keys(PRESETS).join(' | ')} (default: the teacher with half its layers)`, choice('--student-preset', Object.keys(PRESETS)))
    .option('--init <method>', 'student initialisation: pruned | svd | random | minitron (activation-guided pruning; retrains by logit-only KD unless distillation.task_weight is set)', choice('--init', ['pruned', 'svd', 'random', 'minitron'] as const))
    .option('--student <path>', 'go on from an existing student (its shape and weights; e.g. QAT fine-tuning of a trained FP32 student with --recipe kd-qat)')
    .option('--attention-layers <list>', 'recipe mohawk: student layers that keep attention (a hybrid), e.g. 0,3, or top:K for the K most sensitive by the teacher\'s profile (default none: all state-space)', attentionLayerList)
    .option('--mohawk-stages <list>', 'recipe mohawk: the stages to run, ending in 3 (default 1,2,3; the skipped stages\' steps go to stage 3)', stageList)
    .option('--mohawk-stage3 <recipe>', 'recipe mohawk: stage 3 by kd (default) or kd-qat (a quantized state-space student)', choice('--mohawk-stage3', ['kd', 'kd-qat'] as const))
    .option('--steps <n>', 'total optimiser steps', positiveInt('--steps'))
    .option('--seq-len <n>', "tokens per sequence (default: 128, or the teacher's context when shorter)", integerIn('--seq-len', 2))
    .option('--batch-size <n>', 'sequences per micro-batch (default 8)', positiveInt('--batch-size'))
    .option('--temperature <t>', 'KD temperature τ', decimal('--temperature', { min: 0, exclusiveMin: true }))
    .option('--lambda <l>', 'λ of L_distill, constant over all phases', decimal('--lambda', { min: 0 }))
    .option('--gamma <g>', 'γ of L_quant, constant over all phases', decimal('--gamma', { min: 0 }))
    .option('--bits <b>', 'deployment / fake-quantization bits: 2, 3, 4 or 8', numberChoice('--bits', [2, 3, 4, 8] as const))
    .option('--format <type>', 'QAT on a llama.cpp grid: a ggml format (Q4_0, Q4_K, …) or file type (Q4_K_M, …); the GGUF is written at the end', choice('--format', GGUF_TYPE_NAMES))
    .option('--export <gguf:TYPE>', 'also write the student as DIR/model-TYPE.gguf (TYPE: a ggml format or llama.cpp file type)', ggufExport)
    .option('--seed <n>', 'random seed', integer('--seed'))
    .option('--resume', 'continue the run in --out from its last checkpoint, with its own settings')
    .option('--force', 'start a new run in a non-empty --out, deleting the run that is there')
    .option(...SKIP_BAD_ROWS)
    .option(...TEXT_COLUMN)
    .action(async (o: DistillFlags) => {
      const config = configFromFlags(o);
      const teacher = teacherOf(o, config.recipe);
      const text = await readCorpus(o.data, o);
      const session = trainingSession('distill');
      try {
        const result = await distill({
          teacher,
          ...(o.teacherTokenizer !== undefined ? { tokenizer: loadTokenizerAt(o.teacherTokenizer) } : {}),
          text,
          outDir: o.out,
          config,
          resume: o.resume,
          force: o.force,
          exportGguf: o.export,
          onStep: session.onStep,
          shouldStop: session.shouldStop,
          onStopAgreed: session.stopAgreed,
          onNote: session.onNote,
          onCacheProgress: session.onCacheProgress,
          world: currentWorld(),
        });
        session.stopProgress();
        const json = { recipe: result.recipe, steps: result.steps, train_loss: result.train_loss, val_loss: result.val_loss, val_ppl: result.val_ppl, teacher_entropy: result.teacher_entropy, quantized_dir: result.quantized_dir || null, quantized_avg_bits: result.interrupted ? null : result.quantized_avg_bits, quantized_bytes: result.interrupted ? null : result.quantized_bytes, interrupted: result.interrupted };
        if (result.interrupted) {
          console.log(JSON.stringify(json));
          const teacherFlags = [
            ...(teacher === null ? [] : Array.isArray(teacher) ? teacher.flatMap((t) => ['--teacher', t]) : typeof teacher === 'string' ? ['--teacher', teacher] : 'server' in teacher ? ['--teacher-url', teacher.server.url, '--teacher-model', teacher.server.model, '--teacher-api', teacher.server.api] : ['--teacher', teacher.gguf, '--teacher-engine', 'llama.cpp']),
            ...(o.teacherTokenizer !== undefined ? ['--teacher-tokenizer', o.teacherTokenizer] : []),
          ];
          // Stopped while a server filled the caches, or while the assistant trained: no checkpoint of the student yet, so the same command (all its flags) continues.
          const filling = (result.steps === 0 && teacher !== null && typeof teacher !== 'string' && !Array.isArray(teacher)) || (config.assistant !== null && !existsSync(join(o.out, 'latest.json')));
          const again = filling ? commandLine(['qkd', ...process.argv.slice(2).filter((a) => a !== '--resume' && a !== '--force'), ...(config.assistant !== null ? ['--resume'] : [])]) : commandLine(['qkd', 'distill', ...teacherFlags, '--out', o.out, ...(o.data !== 'default' ? ['--data', o.data] : []), '--resume']);
          const what = filling && config.assistant !== null ? 'stopped while the teaching assistant trained (its checkpoint is kept)' : filling ? 'stopped while the teacher filled the soft-target cache (the windows done so far are kept)' : `stopped at step ${result.steps}, checkpoint saved, no quantized/ written`;
          throw new CommandInterrupted(`${what}; continue with: ${again}`);
        }
        if (result.sakd_report) {
          // The post-distillation audit: both profiles as HTML beside sakd-report.json.
          writeBytesAtomic(join(o.out, 'sakd-teacher.html'), renderAuditHtml(result.sakd_report.teacher, { title: 'SAKD teacher profile' }));
          writeBytesAtomic(join(o.out, 'sakd-student.html'), renderAuditHtml(result.sakd_report.student, { title: 'SAKD student profile' }));
          const q = result.sakd_report.quantized_student;
          console.log(`post-distillation audit: ${join(o.out, 'sakd-report.json')} (+ sakd-teacher.html, sakd-student.html); packed ${q.bits}-bit student val ppl ${q.val_ppl.toFixed(3)} vs FP32 ${result.sakd_report.fp32_student_val_ppl.toFixed(3)}`);
        }
        console.log(`${result.recipe}: val loss ${result.val_loss.toFixed(4)} (ppl ${result.val_ppl.toFixed(3)}); packed ${config.quantization.bits}-bit student (${result.quantized_avg_bits.toFixed(3)} avg bits, ${result.quantized_bytes} bytes) in ${result.quantized_dir}`);
        if (result.gguf) console.log(`GGUF ${result.gguf.type}: ${result.gguf.path} (${result.gguf.bytes} bytes, ${result.gguf.bits_per_weight.toFixed(3)} bits per weight)`);
        if (result.assistant) console.log(`teaching assistant: ${result.assistant.params} parameters in ${result.assistant.dir}`);
        if ('mohawk' in result) console.log(`mohawk stages: ${(result as MohawkResult).mohawk.stages.map((s) => `${s.stage} (${s.objective}, ${s.steps} steps${s.reused ? ', reused' : ''})`).join(', ')}; report in ${join(o.out, 'mohawk', 'report.json')}`);
        console.log(JSON.stringify({ ...json, gguf: result.gguf?.path ?? null, assistant: result.assistant ?? null, ...('mohawk' in result ? { mohawk: (result as MohawkResult).mohawk } : {}) }));
      } finally {
        session.close();
      }
    });
}

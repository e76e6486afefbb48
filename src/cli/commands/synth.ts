/**
 * `qkd synth`: training data written by a teacher (docs/synth.md). From a
 * model behind an OpenAI-compatible endpoint (--teacher-url): completions of
 * a prompt file, as chat or prompt / completion rows. From a local teacher
 * (--teacher, a qkd model or with --teacher-engine llama.cpp a GGUF) with
 * --data-free: sequences the teacher writes from single vocabulary entries.
 * Both are long jobs that resume after Ctrl-C or kill -9 with the same command.
 */
import type { Command } from 'commander';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { QkdError } from '../../errors.js';
import { loadModelAny, loadModelTokenizer, peekConfig } from '../../models/load-any.js';
import { loadTokenizerAt } from '../../data/tokenizer-io.js';
import { generateDataFree, modelSequenceTeacher, type SequenceTeacher } from '../../distill/synth-local.js';
import { SYNTH_APIS, checkPromptsForApi, estimateSynth, readPrompts, synthesize } from '../../distill/synth-remote.js';
import { llamaCppScorer } from '../../eval/llama-cpp.js';
import { modelFileFormat } from '../../io/tensor-source.js';
import { ensureReplaceableFile, ensureWritableFile } from '../../io/output-dir.js';
import { choice, decimal, integer, integerIn, positiveInt } from '../options.js';
import { CommandInterrupted, gracefulInterrupt } from '../interrupt.js';
import { commandLine } from '../explicit.js';
import { countProgress, formatCount } from '../progress.js';
import { TEACHER_API_KEY_ENV } from '../../distill/teacher-server.js';

interface SynthFlags {
  out: string;
  teacher?: string;
  teacherEngine?: 'qkd' | 'llama.cpp';
  teacherThreads?: number;
  tokenizer?: string;
  teacherUrl?: string;
  teacherModel?: string;
  teacherApi?: (typeof SYNTH_APIS)[number];
  prompts?: string;
  nPerPrompt?: number;
  maxTokens?: number;
  concurrency?: number;
  timeout?: number;
  dataFree?: boolean;
  sequences?: number;
  length?: number;
  greedyTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  force?: boolean;
}

/** Flags that belong to the other mode are refused by name. */
function refuseFlags(o: SynthFlags, flags: [string, unknown][], mode: string): void {
  for (const [flag, v] of flags) if (v !== undefined) throw new QkdError('ARGUMENT', `${flag} does not apply to ${mode}`, { field: flag });
}

async function remote(o: SynthFlags): Promise<void> {
  refuseFlags(o, [['--teacher-engine', o.teacherEngine], ['--teacher-threads', o.teacherThreads], ['--tokenizer', o.tokenizer], ['--data-free', o.dataFree], ['--sequences', o.sequences], ['--length', o.length], ['--greedy-tokens', o.greedyTokens]], 'a teacher on a server (--teacher-url)');
  if (o.teacherModel === undefined) throw new QkdError('ARGUMENT', "--teacher-url needs the served model's name", { field: '--teacher-model' });
  if (o.prompts === undefined) throw new QkdError('ARGUMENT', 'a teacher on a server completes prompts, and none are given', { field: '--prompts', hint: '--prompts FILE (.txt: one per line; .jsonl: {"prompt"} or {"messages"} rows)' });
  try {
    const u = new URL(o.teacherUrl!);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
  } catch {
    throw new QkdError('ARGUMENT', `--teacher-url '${o.teacherUrl}' is not an http(s) URL`, { field: '--teacher-url', hint: 'http://host:port of an OpenAI-compatible server' });
  }
  const api = o.teacherApi ?? 'chat';
  const prompts = readPrompts(o.prompts);
  checkPromptsForApi(prompts, api, o.prompts);
  const apiKey = process.env[TEACHER_API_KEY_ENV];
  const settings = { nPerPrompt: o.nPerPrompt ?? 1, maxTokens: o.maxTokens ?? 256, temperature: o.temperature ?? 1, topP: o.topP, seed: o.seed, concurrency: o.concurrency ?? 4, timeoutMs: o.timeout !== undefined ? o.timeout * 1000 : undefined, force: o.force };
  const e = estimateSynth(prompts, settings);
  process.stderr.write(`qkd: ${prompts.length} prompts × ${settings.nPerPrompt} = ${e.requests} requests to ${o.teacherModel}: about ${formatCount(e.promptTokens)} prompt tokens (estimated at 4 characters per token) and at most ${formatCount(e.maxCompletionTokens)} completion tokens${apiKey ? '' : ` (no API key in $${TEACHER_API_KEY_ENV})`}\n`);
  const r = await runJob(
    'rows',
    'stopping after the requests in flight…',
    (hooks) => synthesize({ url: o.teacherUrl!, model: o.teacherModel!, api, ...(apiKey ? { apiKey } : {}) }, prompts, o.out, { ...settings, ...hooks }),
    (r) => (r.rows > 0 ? `stopped with ${r.rows} row${r.rows === 1 ? '' : 's'} done (kept)` : 'stopped with no row done'),
  );
  console.log(`${r.rows} rows (${r.resumed} from an earlier run, ${r.retries} retries; ${r.promptTokens} prompt and ${r.completionTokens} completion tokens as the server counted them) → ${o.out}`);
  console.log(JSON.stringify({ out: resolve(o.out), rows: r.rows, resumed: r.resumed, retries: r.retries, prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, interrupted: false }));
}

/** A long synth job: a progress bar, Ctrl-C asks it to stop (what is done is kept), and how to continue when it did. */
async function runJob<R extends { rows: number; interrupted: boolean }>(
  unit: string,
  notice: string,
  job: (hooks: { onProgress: (p: { done: number; total: number }) => void; onNote: (s: string) => void; shouldStop: () => boolean }) => Promise<R>,
  stopped: (r: R) => string,
): Promise<R> {
  const interrupt = gracefulInterrupt(notice);
  const bar = countProgress('synth', unit);
  try {
    const r = await job({
      onProgress: (p) => bar.update({ done: p.done, total: p.total, params: 0 }),
      onNote: (s) => process.stderr.write(`qkd: ${s}\n`),
      shouldStop: interrupt.requested,
    });
    bar.stop();
    if (r.interrupted) {
      console.log(JSON.stringify({ out: null, rows: r.rows, interrupted: true }));
      throw new CommandInterrupted(`${stopped(r)}; continue with: ${commandLine(['qkd', ...process.argv.slice(2).filter((a) => a !== '--force')])}`);
    }
    return r;
  } finally {
    bar.stop();
    interrupt.dispose();
  }
}

async function dataFree(o: SynthFlags): Promise<void> {
  refuseFlags(o, [['--teacher-model', o.teacherModel], ['--teacher-api', o.teacherApi], ['--prompts', o.prompts], ['--n-per-prompt', o.nPerPrompt], ['--max-tokens', o.maxTokens], ['--concurrency', o.concurrency], ['--timeout', o.timeout], ['--top-p', o.topP]], 'data-free generation from a local teacher');
  if (o.dataFree !== true) throw new QkdError('ARGUMENT', 'a local teacher writes data-free sequences; say so', { field: '--data-free', hint: '--data-free --sequences N --length L (or --teacher-url for completions of prompts)' });
  const path = o.teacher!;
  const sequences = o.sequences ?? 1000;
  const length = o.length ?? 128;
  let teacher: SequenceTeacher;
  let tokenizer;
  let close = async (): Promise<void> => {};
  if (o.teacherEngine === 'llama.cpp') {
    if (modelFileFormat(path) !== 'gguf') throw new QkdError('ARGUMENT', `--teacher-engine llama.cpp runs a GGUF file, and ${path} is not one`, { path, field: '--teacher' });
    const config = peekConfig(path);
    tokenizer = o.tokenizer !== undefined ? loadTokenizerAt(o.tokenizer) : loadModelTokenizer({ config }, path);
    const scorer = await llamaCppScorer(path, { maxTokens: length + 1, vocab: config.vocab_size, threads: o.teacherThreads ?? availableParallelism() });
    teacher = { vocabSize: config.vocab_size, continue: (start, n, choose) => scorer.continue(start, n, choose) };
    close = () => scorer.close();
  } else {
    if (o.teacherThreads !== undefined) throw new QkdError('ARGUMENT', '--teacher-threads applies to a teacher in llama.cpp', { field: '--teacher-threads', hint: '--teacher-engine llama.cpp' });
    const model = loadModelAny(path);
    tokenizer = o.tokenizer !== undefined ? loadTokenizerAt(o.tokenizer) : loadModelTokenizer(model, path);
    teacher = modelSequenceTeacher(model);
  }
  try {
    const r = await runJob(
      'sequences',
      'stopping after this sequence…',
      (hooks) => generateDataFree(teacher, tokenizer, o.out, { sequences, length, greedy: o.greedyTokens, temperature: o.temperature, seed: o.seed, force: o.force, teacherId: `${o.teacherEngine ?? 'qkd'}:${resolve(path)}`, ...hooks }),
      (r) => `stopped with ${r.rows} of ${sequences} sequences done (kept)`,
    );
    console.log(`${r.rows} data-free sequences of ${length + 1} tokens (${r.resumed} from an earlier run) → ${o.out}`);
    console.log(JSON.stringify({ out: resolve(o.out), rows: r.rows, resumed: r.resumed, tokens: r.tokens, interrupted: false }));
  } finally {
    await close();
  }
}

export function registerSynth(program: Command): void {
  program
    .command('synth')
    .description('training data written by a teacher: completions of prompts from a server (--teacher-url), or data-free sequences from a local model (--teacher --data-free)')
    .requiredOption('--out <file.jsonl>', 'output JSON Lines (written when the job ends; OUT.partial holds the rows done so far, so the same command resumes)')
    .option('--teacher-url <url>', `an OpenAI-compatible server (API key: $${TEACHER_API_KEY_ENV})`)
    .option('--teacher-model <name>', "the served model's name")
    .option('--teacher-api <api>', `${SYNTH_APIS.join(' | ')} (default chat: /v1/chat/completions, chat rows out; completions: /v1/completions, prompt / completion rows out)`, choice('--teacher-api', SYNTH_APIS))
    .option('--prompts <file>', 'prompts: .txt (one per line) or .jsonl ({"prompt"} or {"messages"} rows)')
    .option('--n-per-prompt <k>', 'completions per prompt (default 1)', positiveInt('--n-per-prompt'))
    .option('--max-tokens <n>', 'completion tokens per request at most (default 256)', positiveInt('--max-tokens'))
    .option('--concurrency <n>', 'requests in flight (default 4)', positiveInt('--concurrency'))
    .option('--timeout <s>', 'seconds per request before it is retried (default 120)', decimal('--timeout', { min: 0, exclusiveMin: true }))
    .option('--top-p <p>', 'nucleus sampling of the server', decimal('--top-p', { min: 0, max: 1, exclusiveMin: true }))
    .option('--teacher <path>', 'a local teacher (model directory, run directory, GGUF, llama2.c .bin) for --data-free')
    .option('--teacher-engine <engine>', 'what runs --teacher: qkd (default) or llama.cpp (a GGUF through node-llama-cpp)', choice('--teacher-engine', ['qkd', 'llama.cpp'] as const))
    .option('--teacher-threads <n>', 'llama.cpp threads (default every core)', positiveInt('--teacher-threads'))
    .option('--tokenizer <path>', "the teacher's tokenizer (default its own)")
    .option('--data-free', 'sequences the teacher writes from single vocabulary entries: the first --greedy-tokens greedy, then sampled')
    .option('--sequences <n>', 'data-free sequences (default 1000; ≥ the vocabulary size starts from every entry)', positiveInt('--sequences'))
    .option('--length <n>', 'tokens generated per data-free sequence (default 128)', positiveInt('--length'))
    .option('--greedy-tokens <n>', 'leading tokens taken greedily (default 3)', integerIn('--greedy-tokens', 0))
    .option('--temperature <t>', 'sampling temperature (default 1)', decimal('--temperature', { min: 0, exclusiveMin: true }))
    .option('--seed <n>', 'seed (data-free: the whole corpus; server: sent per request)', integer('--seed'))
    .option('--force', 'discard an unfinished job of other settings, and replace an existing --out')
    .action(async (o: SynthFlags) => {
      if ((o.teacher === undefined) === (o.teacherUrl === undefined)) {
        throw new QkdError('ARGUMENT', o.teacher === undefined ? 'no teacher given' : '--teacher (a model here) and --teacher-url (a server) name two teachers', { field: '--teacher', hint: '--teacher-url URL --teacher-model NAME --prompts FILE, or --teacher PATH --data-free' });
      }
      // Before any request or generation: a path that cannot take the output fails now, and a local
      // teacher's own files are never the output.
      ensureWritableFile(o.out, '--out');
      if (o.teacher !== undefined) ensureReplaceableFile(o.out, '--out', { model: o.teacher, force: true, ours: () => true, what: 'the generated data' });
      if (o.teacherUrl !== undefined) await remote(o);
      else await dataFree(o);
    });
}

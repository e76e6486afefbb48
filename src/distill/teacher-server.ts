/**
 * Soft targets from an inference server (docs/server-teachers.md): the
 * teacher's top-k next-token log-probs at every position of a window of
 * token ids, asked of a server that holds the teacher, through one of two
 * documented schemas:
 *
 * - vLLM, POST /v1/completions with the window as a token-id prompt,
 *   `prompt_logprobs: k` and `max_tokens: 1`. The answer's
 *   choices[0].prompt_logprobs has one entry per prompt token: null for the
 *   first, then a map {token id: {logprob, rank, decoded_token}} holding the
 *   top k (and the prompt's own token when it is not among them).
 * - SGLang, POST /generate with `input_ids`, `return_logprob: true`,
 *   `logprob_start_len: 0`, `top_logprobs_num: k`, `return_text_in_logprobs:
 *   true` and `max_new_tokens: 1`. meta_info.input_top_logprobs has one entry
 *   per prompt token: null for the first, then [[logprob, id, text], ...].
 *
 * A window of the cache (soft-targets.ts) has N inputs and N next-token
 * targets, so it is sent as its N + 1 tokens and entries 1..N are the N rows.
 * Entries are parsed strictly: every problem (missing field, wrong length,
 * ids outside the vocabulary, duplicate ids, fewer than k entries, log-probs
 * that are not finite and ≤ 0) is a ServerAnswerError naming the field.
 */
import { createHash } from 'node:crypto';
import { QkdError } from '../errors.js';
import { fillSoftTargetCache, windowsToFill, type FillOptions, type FillResult } from './cache-job.js';
import type { SoftTargets } from './soft-targets.js';

/** The environment variable a teacher server's API key is read from (sent as a bearer token; never logged or saved). */
export const TEACHER_API_KEY_ENV = 'QKD_TEACHER_API_KEY';

export const SERVER_APIS = ['vllm', 'sglang'] as const;
export type ServerApi = (typeof SERVER_APIS)[number];

export interface ServerTeacher {
  /** Base URL, e.g. http://host:8000 (vLLM: the /v1 prefix is added; SGLang: /generate). */
  url: string;
  /** The served model's name (vLLM's `model` field; SGLang ignores it). */
  model: string;
  api: ServerApi;
  /** Bearer token sent as Authorization (read from an environment variable by the caller; never logged). */
  apiKey?: string;
}

/** A response the client could not use; `retryable` answers are asked again. */
export class ServerAnswerError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** The endpoint and JSON body asking for the top-k prompt log-probs of `ids`. */
export function serverRequest(teacher: ServerTeacher, ids: ArrayLike<number>, k: number): { url: string; body: Record<string, unknown> } {
  const base = teacher.url.replace(/\/+$/, '');
  const prompt = Array.from(ids);
  if (teacher.api === 'vllm') {
    return {
      url: `${base.replace(/\/v1$/, '')}/v1/completions`,
      body: { model: teacher.model, prompt, max_tokens: 1, temperature: 0, prompt_logprobs: k, add_special_tokens: false },
    };
  }
  return {
    url: `${base}/generate`,
    body: { input_ids: prompt, sampling_params: { max_new_tokens: 1, temperature: 0 }, return_logprob: true, logprob_start_len: 0, top_logprobs_num: k, return_text_in_logprobs: true },
  };
}

/** One position's entries as the server gave them. */
interface Entry {
  id: number;
  logp: number;
  text: string | undefined;
}

/**
 * The N = ids.length − 1 rows of soft targets in a server's answer, plus the
 * token strings the server gave for the ids it returned (for the vocabulary
 * check). The tail is log(1 − Σ top-k p) (−∞ when the top k hold all the
 * mass).
 */
export function parseServerAnswer(api: ServerApi, answer: unknown, ids: ArrayLike<number>, k: number, V: number): { targets: SoftTargets; strings: Map<number, string> } {
  const positions = positionsOf(api, answer);
  const n = ids.length - 1;
  if (positions.length !== ids.length) throw new ServerAnswerError(`${api}: ${positions.length} prompt positions in the answer for ${ids.length} prompt tokens (a truncated list?)`, true);
  const out: SoftTargets = { k, ids: new Int32Array(n * k), logp: new Float32Array(n * k), tailLogp: new Float32Array(n) };
  const strings = new Map<number, string>();
  for (let r = 0; r < n; r++) {
    const where = `position ${r + 1}`;
    const entries = entriesOf(api, positions[r + 1], where);
    const seen = new Set<number>();
    for (const e of entries) {
      if (!Number.isInteger(e.id) || e.id < 0 || e.id >= V) throw new ServerAnswerError(`${api}: ${where} has token id ${e.id}, outside the student's vocabulary [0, ${V})`, false);
      if (!(e.logp <= 0) || !Number.isFinite(e.logp)) throw new ServerAnswerError(`${api}: ${where} has log-prob ${e.logp} for token ${e.id} (a log-probability is finite and ≤ 0)`, true);
      if (seen.has(e.id)) throw new ServerAnswerError(`${api}: ${where} lists token ${e.id} twice`, true);
      seen.add(e.id);
      if (e.text !== undefined) strings.set(e.id, e.text);
    }
    // vLLM adds the prompt's own token when it is not in the top k: keep the k most likely (ties: lower id).
    entries.sort((a, b) => b.logp - a.logp || a.id - b.id);
    if (entries.length < k) throw new ServerAnswerError(`${api}: ${where} has ${entries.length} log-probs, fewer than the top ${k} asked for`, true);
    let mass = 0;
    for (let i = 0; i < k; i++) {
      out.ids[r * k + i] = entries[i]!.id;
      out.logp[r * k + i] = entries[i]!.logp;
      mass += Math.exp(entries[i]!.logp);
    }
    out.tailLogp[r] = mass >= 1 ? -Infinity : Math.log1p(-mass);
  }
  return { targets: out, strings };
}

function positionsOf(api: ServerApi, answer: unknown): unknown[] {
  const bad = (what: string): never => {
    throw new ServerAnswerError(`${api}: the answer ${what}`, true);
  };
  if (typeof answer !== 'object' || answer === null) return bad('is not a JSON object');
  const a = answer as Record<string, unknown>;
  if (api === 'vllm') {
    const choices = a.choices;
    if (!Array.isArray(choices) || choices.length === 0) return bad('has no choices');
    const p = (choices[0] as Record<string, unknown> | null)?.prompt_logprobs;
    if (!Array.isArray(p)) return bad('has no choices[0].prompt_logprobs list (is the server vLLM, and were prompt_logprobs allowed? vLLM caps them with --max-logprobs)');
    return p;
  }
  const meta = a.meta_info as Record<string, unknown> | undefined;
  const p = meta?.input_top_logprobs;
  if (!Array.isArray(p)) return bad('has no meta_info.input_top_logprobs list (is the server SGLang?)');
  return p;
}

function entriesOf(api: ServerApi, position: unknown, where: string): Entry[] {
  const bad = (what: string): never => {
    throw new ServerAnswerError(`${api}: ${where} ${what}`, true);
  };
  if (api === 'vllm') {
    if (typeof position !== 'object' || position === null || Array.isArray(position)) return bad('is not a {token id: {logprob}} map');
    return Object.entries(position as Record<string, unknown>).map(([id, v]) => {
      const e = v as Record<string, unknown> | null;
      if (typeof e !== 'object' || e === null || typeof e.logprob !== 'number') return bad(`entry ${id} has no numeric logprob`);
      if (!/^\d+$/.test(id)) return bad(`has the key '${id}', not a token id`);
      return { id: Number(id), logp: e.logprob, text: typeof e.decoded_token === 'string' ? e.decoded_token : undefined };
    });
  }
  if (!Array.isArray(position)) return bad('is not a list of [logprob, id, text]');
  return position.map((e, i) => {
    if (!Array.isArray(e) || typeof e[0] !== 'number' || typeof e[1] !== 'number') return bad(`entry ${i} is not [logprob, id, text]`);
    return { id: e[1] as number, logp: e[0] as number, text: typeof e[2] === 'string' ? e[2] : undefined };
  });
}

/**
 * Asks the server for one window's soft targets. Network errors, timeouts,
 * HTTP 429 and 5xx, and malformed answers are ServerAnswerErrors marked
 * retryable (the job retries them with backoff); other HTTP errors are not.
 */
export async function fetchServerTargets(teacher: ServerTeacher, ids: ArrayLike<number>, k: number, V: number, timeoutMs: number): Promise<{ targets: SoftTargets; strings: Map<number, string> }> {
  const { url, body } = serverRequest(teacher, ids, k);
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(teacher.apiKey ? { authorization: `Bearer ${teacher.apiKey}` } : {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    const what = e.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : `${e.message}${e.cause?.code ? ` (${e.cause.code})` : ''}`;
    throw new ServerAnswerError(`${url}: ${what}`, true);
  }
  let text: string;
  try {
    text = await response.text();
  } catch (err) {
    throw new ServerAnswerError(`${url}: the answer broke off: ${(err as Error).message}`, true, response.status);
  }
  if (!response.ok) {
    const retryable = response.status === 429 || response.status >= 500;
    const after = Number(response.headers.get('retry-after'));
    throw new ServerAnswerError(`${url}: HTTP ${response.status}: ${text.slice(0, 200)}`, retryable, response.status, Number.isFinite(after) && after >= 0 ? after : undefined);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ServerAnswerError(`${url}: the answer is not JSON (${(err as Error).message}): ${text.slice(0, 80)}`, true, response.status);
  }
  return parseServerAnswer(teacher.api, json, ids, k, V);
}

/**
 * Checks, before any training, that the ids a server returns mean the
 * student tokenizer's tokens: each returned id's text must be what the
 * tokenizer decodes it to (SentencePiece's ▁ and byte-level BPE's Ġ spelled
 * as the text they stand for). Returns the share checked; throws naming
 * examples when more than 1% differ.
 */
export function checkServerVocabulary(strings: Map<number, string>, decode: (id: number) => string, where: string, teacher = 'the teacher server'): { checked: number; differing: number } {
  const differ: string[] = [];
  let checked = 0;
  for (const [id, text] of strings) {
    checked++;
    const ours = decode(id);
    if (normalise(ours) !== normalise(text)) differ.push(`id ${id}: teacher ${JSON.stringify(text)}, student tokenizer ${JSON.stringify(ours)}`);
  }
  if (checked > 0 && differ.length > Math.max(0, checked * 0.01)) {
    throw new QkdError('CONFIG', `${teacher}'s token ids do not mean the tokens of the tokenizer qkd reads them with (${differ.length} of ${checked} ids differ; e.g. ${differ.slice(0, 3).join('; ')})`, {
      path: where,
      field: '--teacher-tokenizer',
      hint: "a student with the teacher's tokenizer, or across tokenizers (--student-tokenizer) the teacher's own tokenizer as --teacher-tokenizer",
    });
  }
  return { checked, differing: differ.length };
}

/** Token text as servers print it: SentencePiece's ▁ and GPT-2's byte-to-unicode Ġ/Ċ read as the characters they stand for; U+FFFD for partial UTF-8 dropped. */
function normalise(s: string): string {
  return s.replaceAll('\u2581', ' ').replaceAll('\u0120', ' ').replaceAll('\u010a', '\n').replaceAll('\ufffd', '');
}

export interface ServerFillOptions extends Omit<FillOptions, 'fetchWindow' | 'retryable' | 'retryAfter' | 'teacher'> {
  /** Per request (default 120 s). */
  timeoutMs?: number;
  /** The student tokenizer's text of a token id, for the vocabulary check (omitted: no check). */
  decode?: (id: number) => string;
}

/**
 * The identity of a server teacher in the cache header and for --resume:
 * sha256 of the API and the served model's name (hex). Not the URL: the
 * same model behind another address (a restarted server, a load balancer)
 * is the same teacher.
 */
export function serverTeacherId(teacher: ServerTeacher): string {
  return createHash('sha256').update(`${teacher.api}\n${teacher.model}`).digest('hex');
}

/**
 * Fills the soft-target cache at `path` from a server teacher: first one
 * request (window 0) whose ids are checked against the student tokenizer
 * (checkServerVocabulary), then the resumable job (cache-job.ts).
 */
export async function fillCacheFromServer(path: string, teacher: ServerTeacher, options: ServerFillOptions): Promise<FillResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const k = options.topK;
  const fetchWindow = (_w: number, tokens: Int32Array) => fetchServerTargets(teacher, tokens, k, options.V, timeoutMs).then((a) => a.targets);
  // Nothing left to ask (a finished cache, or a sparse one holding every window asked for): the server need not be up.
  const pending = windowsToFill(path, { ...options, teacher: serverTeacherId(teacher) });
  if (options.decode !== undefined && pending > 0) {
    const first = options.tokens.slice(0, options.seqLen + 1);
    let answer: Awaited<ReturnType<typeof fetchServerTargets>> | null = null;
    for (let attempt = 1; answer === null; attempt++) {
      try {
        answer = await fetchServerTargets(teacher, first, k, options.V, timeoutMs);
      } catch (err) {
        if (!(err instanceof ServerAnswerError) || !err.retryable || attempt >= 3) {
          throw new QkdError('IO', `the teacher server did not answer the first request: ${(err as Error).message}`, { path: teacher.url, field: '--teacher-url', hint: `a ${teacher.api === 'vllm' ? 'vLLM (/v1/completions with prompt_logprobs)' : 'SGLang (/generate)'} server serving ${teacher.model}` });
        }
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
    const { checked, differing } = checkServerVocabulary(answer.strings, options.decode, teacher.url);
    options.onNote?.(`teacher server: ${checked} returned token ids checked against the student tokenizer (${differing} differ)${checked === 0 ? ': the server sent no token text, so the ids are trusted' : ''}`);
  }
  return fillSoftTargetCache(path, {
    ...options,
    teacher: serverTeacherId(teacher),
    fetchWindow,
    retryable: (err) => err instanceof ServerAnswerError && err.retryable,
    retryAfter: (err) => (err instanceof ServerAnswerError ? err.retryAfterSeconds : undefined),
  });
}

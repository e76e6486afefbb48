/**
 * Training data from a teacher behind an OpenAI-compatible HTTP endpoint
 * (black-box distillation data, docs/synth.md): every prompt is sent
 * nPerPrompt times to POST {base}/v1/chat/completions or
 * {base}/v1/completions, and each answer becomes one JSON Lines row
 * (prompt, completion), as a long job with N requests in flight, retries
 * with backoff, rate-limit headers honoured, and resume after kill -9 with
 * no prompt lost or asked for twice.
 *
 * Rows are kept in the job journal of io/jsonl-journal.ts (OUT.partial and
 * OUT.partial.json beside the output; the settings hold a SHA-256 of the
 * prompts, the URL, model, API, samples per prompt and sampling settings,
 * never the API key). Row (prompt i, sample j) has key i·nPerPrompt + j, so a
 * restart asks only for the keys the journal lacks, and OUT is written in
 * (prompt, sample) order when every row is done.
 */
import { createHash } from 'node:crypto';
import { QkdError } from '../errors.js';
import { readUtf8Text } from '../io/text-file.js';
import { openJournal } from '../io/jsonl-journal.js';
import { TEACHER_API_KEY_ENV } from './teacher-server.js';

export const SYNTH_APIS = ['chat', 'completions'] as const;
export type SynthApi = (typeof SYNTH_APIS)[number];

export interface SynthEndpoint {
  /** Base URL, e.g. https://api.example.com or http://host:8000 (a trailing /v1 is tolerated). */
  url: string;
  /** The served model's name (the request's `model` field). */
  model: string;
  api: SynthApi;
  /** Sent as Authorization: Bearer; never written to any file, note, progress or error message. */
  apiKey?: string;
}

export interface SynthMessage {
  role: string;
  content: string;
}

/** One prompt: chat messages or a plain text prompt, exactly one of the two. */
export interface SynthPrompt {
  messages?: SynthMessage[];
  prompt?: string;
  /** 1-based line of the prompts file it was read from (for error messages; not part of the job's identity). */
  line?: number;
}

export interface SynthProgress {
  /** Rows on disk (journaled), of `total` = prompts × nPerPrompt. */
  done: number;
  total: number;
  /** Of those, rows that were done before this run started (a resumed job). */
  resumed: number;
  /** Requests asked again after a failure, so far in this run. */
  retries: number;
  /** usage.prompt_tokens / usage.completion_tokens the server reported, summed over this run's answers. */
  promptTokens: number;
  completionTokens: number;
  elapsedSeconds: number;
}

export interface SynthOptions {
  /** Samples per prompt (default 1), one request each. */
  nPerPrompt?: number;
  /** max_tokens of every request (default 256). */
  maxTokens?: number;
  /** Sampling temperature (default 1). */
  temperature?: number;
  /** top_p (default: not sent, the server's default). */
  topP?: number;
  /** When set, request j of prompt i sends seed + i·nPerPrompt + j (reproducible on servers honouring seed). */
  seed?: number;
  /** Requests in flight (default 4). */
  concurrency?: number;
  /** Attempts per request before the job stops (default 8). */
  attempts?: number;
  /** First backoff in ms, doubled per attempt up to 30 s, with jitter (default 500). */
  backoffMs?: number;
  /** Per request, in ms (default 120000); a request that times out is asked again. */
  timeoutMs?: number;
  onProgress?: (p: SynthProgress) => void;
  onNote?: (s: string) => void;
  /**
   * Polled (before every request and every 50 ms): true stops the job. No new
   * request starts; those in flight finish and their rows are kept; the rows
   * done stay for a resume.
   */
  shouldStop?: () => boolean;
  /** Discard a partial job made with other settings, or replace an existing output, instead of refusing. */
  force?: boolean;
}

export interface SynthResult {
  /** Rows done: all of prompts × nPerPrompt (written to OUT) unless interrupted. */
  rows: number;
  /** Rows that were done before this run started. */
  resumed: number;
  retries: number;
  /** Tokens the server reported (usage) for this run's answers. */
  promptTokens: number;
  completionTokens: number;
  /** True when shouldStop ended the job before every row was done (OUT.partial and OUT.partial.json stay). */
  interrupted: boolean;
}

const DEFAULTS = { nPerPrompt: 1, maxTokens: 256, temperature: 1, concurrency: 4, attempts: 8, backoffMs: 500, timeoutMs: 120_000 } as const;
const MAX_BACKOFF_MS = 30_000;

// ---------------------------------------------------------------- prompts

const PROMPT_SHAPE = '{"prompt": string} or {"messages": [{"role": string, "content": string}, ...]}';

/** Checks one prompt's shape; throws naming `where` (file:line or prompt number) and the field. */
function checkPrompt(p: unknown, where: string): SynthPrompt {
  const bad = (message: string, field: string, hint: string = PROMPT_SHAPE): never => {
    throw new QkdError('IO', `synth prompts: ${message}`, { path: where, field, hint });
  };
  if (typeof p !== 'object' || p === null || Array.isArray(p)) return bad('a row is not a JSON object', 'prompt');
  const row = p as Record<string, unknown>;
  const hasPrompt = row.prompt !== undefined;
  const hasMessages = row.messages !== undefined;
  if (hasPrompt === hasMessages) return bad(hasPrompt ? 'a row has both "prompt" and "messages"' : 'a row has neither "prompt" nor "messages"', hasPrompt ? 'prompt/messages' : 'prompt', 'exactly one of the two');
  if (hasPrompt) {
    if (typeof row.prompt !== 'string') return bad('"prompt" is not a string', 'prompt', 'a string');
    if (row.prompt.trim() === '') return bad('"prompt" is empty', 'prompt', 'a non-empty string');
    return { prompt: row.prompt };
  }
  const messages = row.messages;
  if (!Array.isArray(messages) || messages.length === 0) return bad('"messages" is not a non-empty list', 'messages', 'a non-empty list of {"role": string, "content": string}');
  const out: SynthMessage[] = messages.map((m: unknown, k) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return bad(`message ${k} is not an object`, `messages[${k}]`, '{"role": string, "content": string}');
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || role === '') return bad(`message ${k} has no string role`, `messages[${k}].role`, 'a role such as "system", "user" or "assistant"');
    if (typeof content !== 'string') return bad(`message ${k} has no string content (content lists are not supported)`, `messages[${k}].content`, 'a string');
    return { role, content };
  });
  if (out[out.length - 1]!.role === 'assistant') {
    return bad('a chat prompt ends with an assistant message: there is nothing for the teacher to answer', `messages[${out.length - 1}].role`, 'a conversation ending with a user (or system/tool) message');
  }
  return { messages: out };
}

/**
 * Reads prompts: a .jsonl file holds one {"prompt"} or {"messages"} row per
 * line; any other file one plain prompt per non-empty line. Errors name the
 * file, the line and the field; an empty file is an error.
 */
export function readPrompts(path: string): SynthPrompt[] {
  // Strict UTF-8: a binary file passed by mistake became thousands of prompts (and paid requests).
  let text = readUtf8Text(path, { field: '--prompts', what: 'synth prompts: the prompts file' });
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const jsonl = path.toLowerCase().endsWith('.jsonl');
  const lines = text.split('\n');
  const prompts: SynthPrompt[] = [];
  for (let l = 0; l < lines.length; l++) {
    const line = lines[l]!.endsWith('\r') ? lines[l]!.slice(0, -1) : lines[l]!;
    if (line.trim() === '') continue;
    const where = `${path}:${l + 1}`;
    if (!jsonl) {
      prompts.push({ prompt: line, line: l + 1 });
      continue;
    }
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new QkdError('IO', `synth prompts: line ${l + 1} is not JSON (${(err as Error).message})`, { path: where, field: 'prompt', hint: PROMPT_SHAPE });
    }
    prompts.push({ ...checkPrompt(row, where), line: l + 1 });
  }
  if (prompts.length === 0) throw new QkdError('IO', 'synth prompts: the prompts file holds no prompt', { path, field: '--prompts', hint: jsonl ? `rows ${PROMPT_SHAPE}` : 'one prompt per non-empty line' });
  return prompts;
}

/** Where prompt number `index` came from, for messages. */
const promptWhere = (p: SynthPrompt, index: number, path: string | undefined): string => (p.line !== undefined && path !== undefined ? `${path}:${p.line}` : `${path ?? 'prompts'} (prompt ${index + 1})`);

/** Refuses chat prompts for the completions API, naming the first one. */
export function checkPromptsForApi(prompts: readonly SynthPrompt[], api: SynthApi, path?: string): void {
  if (!(SYNTH_APIS as readonly string[]).includes(api)) throw new QkdError('CONFIG', `synth: unknown teacher API '${api}'`, { field: '--teacher-api', hint: SYNTH_APIS.join(' or ') });
  if (api !== 'completions') return;
  const k = prompts.findIndex((p) => p.messages !== undefined);
  if (k >= 0) {
    throw new QkdError('CONFIG', `synth prompts: prompt ${k + 1} is a chat prompt ({"messages"}), which the completions API cannot send`, {
      path: promptWhere(prompts[k]!, k, path),
      field: 'messages',
      hint: 'use --teacher-api chat, or {"prompt": string} rows / a .txt file',
    });
  }
}

/** Characters of a prompt as sent (message contents, or the prompt text). */
const promptChars = (p: SynthPrompt): number => (p.messages !== undefined ? p.messages.reduce((s, m) => s + m.content.length, 0) : (p.prompt ?? '').length);

/**
 * What a job asks for: requests = prompts × nPerPrompt; prompt tokens
 * estimated as ceil(characters / 4) per request (chat templates and the
 * real tokenizer change it); at most maxTokens completion tokens each.
 */
export function estimateSynth(prompts: readonly SynthPrompt[], o: SynthOptions = {}): { requests: number; promptTokens: number; maxCompletionTokens: number } {
  const n = o.nPerPrompt ?? DEFAULTS.nPerPrompt;
  const maxTokens = o.maxTokens ?? DEFAULTS.maxTokens;
  let promptTokens = 0;
  for (const p of prompts) promptTokens += Math.ceil(promptChars(p) / 4) * n;
  return { requests: prompts.length * n, promptTokens, maxCompletionTokens: prompts.length * n * maxTokens };
}

// ---------------------------------------------------------------- HTTP

/** Base URL without trailing slashes or /v1. */
function baseUrl(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/** The endpoint a request goes to. */
export function synthEndpointUrl(endpoint: Pick<SynthEndpoint, 'url' | 'api'>): string {
  return `${baseUrl(endpoint.url)}/v1/${endpoint.api === 'chat' ? 'chat/completions' : 'completions'}`;
}

/** Chat messages of a prompt (a plain prompt is one user message). */
const messagesOf = (p: SynthPrompt): SynthMessage[] => p.messages ?? [{ role: 'user', content: p.prompt ?? '' }];

/** A request that failed; `retryable` ones are asked again, after at least waitMs when the server said so. */
class SynthRequestError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    readonly waitMs?: number,
  ) {
    super(message);
  }
}

/**
 * A rate-limit reset duration as OpenAI writes it ("1s", "6m0s", "20ms",
 * "1h2m3.5s"; a plain number is seconds), in ms; undefined when unreadable.
 */
export function parseRateLimitDuration(s: string | null | undefined): number | undefined {
  if (s === null || s === undefined) return undefined;
  const v = s.trim();
  if (v === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  const unit: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 1e-3, µs: 1e-3, ns: 1e-6 };
  const part = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/y;
  let ms = 0;
  let at = 0;
  while (at < v.length) {
    part.lastIndex = at;
    const m = part.exec(v);
    if (m === null) return undefined;
    ms += Number(m[1]) * unit[m[2]!]!;
    at = part.lastIndex;
  }
  return ms;
}

/** Retry-After as seconds or an HTTP date, in ms from `now`. */
function parseRetryAfter(v: string | null, now: number): number | undefined {
  if (v === null || v.trim() === '') return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

interface HeaderLike {
  get(name: string): string | null;
}

/**
 * The least wait in ms that a failed answer's headers ask for before the
 * next attempt: retry-after-ms, else retry-after (seconds or HTTP date),
 * and the x-ratelimit-reset-requests / -tokens durations of the limits that
 * are used up (remaining 0, or not reported); the largest of them.
 * Undefined when the headers ask for nothing.
 */
export function retryWaitMs(headers: HeaderLike, now = Date.now()): number | undefined {
  const waits: number[] = [];
  const msHeader = headers.get('retry-after-ms');
  const ms = msHeader === null || msHeader.trim() === '' ? NaN : Number(msHeader);
  const explicit = Number.isFinite(ms) && ms >= 0 ? ms : parseRetryAfter(headers.get('retry-after'), now);
  if (explicit !== undefined) waits.push(explicit);
  const resets = (['requests', 'tokens'] as const).map((kind) => ({ remaining: headers.get(`x-ratelimit-remaining-${kind}`), reset: parseRateLimitDuration(headers.get(`x-ratelimit-reset-${kind}`)) }));
  const exhausted = resets.filter((r) => r.reset !== undefined && (r.remaining === null || Number(r.remaining) <= 0));
  for (const r of exhausted.length > 0 ? exhausted : resets) if (r.reset !== undefined) waits.push(r.reset);
  return waits.length > 0 ? Math.max(...waits) : undefined;
}

/**
 * How long an OK answer's headers ask every new request to wait: the reset
 * duration of a limit whose x-ratelimit-remaining-* is 0 (1 s when no reset
 * is given), else 0.
 */
export function rateLimitPauseMs(headers: HeaderLike): number {
  let pause = 0;
  for (const kind of ['requests', 'tokens'] as const) {
    const remaining = headers.get(`x-ratelimit-remaining-${kind}`);
    const left = remaining === null || remaining.trim() === '' ? NaN : Number(remaining);
    if (!(left <= 0)) continue;
    pause = Math.max(pause, parseRateLimitDuration(headers.get(`x-ratelimit-reset-${kind}`)) ?? 1000);
  }
  return pause;
}

interface Answer {
  text: string;
  finishReason: string | null;
  promptTokens: number;
  completionTokens: number;
  /** Pause for every new request (a used-up rate limit), ms. */
  pauseMs: number;
}

/** The completion in a parsed answer, or a retryable error naming what is missing. */
function parseAnswer(api: SynthApi, json: unknown, url: string): Omit<Answer, 'pauseMs'> {
  const bad = (what: string): never => {
    throw new SynthRequestError(`${url}: the answer ${what}`, true);
  };
  if (typeof json !== 'object' || json === null) return bad('is not a JSON object');
  const choices = (json as Record<string, unknown>).choices;
  if (!Array.isArray(choices) || choices.length === 0) return bad('has no choices');
  const c = choices[0] as Record<string, unknown> | null;
  if (typeof c !== 'object' || c === null) return bad('has no choices[0] object');
  let text: unknown;
  if (api === 'chat') {
    const m = c.message as Record<string, unknown> | null | undefined;
    text = typeof m === 'object' && m !== null ? m.content : undefined;
    if (typeof text !== 'string') return bad('has no string choices[0].message.content');
  } else {
    text = c.text;
    if (typeof text !== 'string') return bad('has no string choices[0].text');
  }
  const usage = (json as Record<string, unknown>).usage as Record<string, unknown> | null | undefined;
  const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
  return {
    text: text as string,
    finishReason: typeof c.finish_reason === 'string' ? c.finish_reason : null,
    promptTokens: count(usage?.prompt_tokens),
    completionTokens: count(usage?.completion_tokens),
  };
}

/** HTTP statuses asked again: request timeout, conflict, too many requests, server errors. */
const retryableStatus = (s: number): boolean => s === 408 || s === 409 || s === 429 || s >= 500;

/**
 * One request. Network errors, timeouts, 408/409/429/5xx and malformed
 * answers throw retryable SynthRequestErrors; other HTTP errors do not.
 * `stop` aborts it (the caller knows why: the job failed).
 */
async function requestOnce(url: string, body: unknown, api: SynthApi, apiKey: string | undefined, timeoutMs: number, stop: AbortSignal): Promise<Answer> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const onStop = (): void => controller.abort();
  stop.addEventListener('abort', onStop, { once: true });
  try {
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const what = timedOut ? `no answer within ${timeoutMs / 1000} s` : `${e.message}${e.cause?.code ? ` (${e.cause.code})` : e.cause?.message ? ` (${e.cause.message})` : ''}`;
      throw new SynthRequestError(`${url}: ${what}`, true);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      throw new SynthRequestError(`${url}: ${timedOut ? `the answer did not finish within ${timeoutMs / 1000} s` : `the answer broke off: ${(err as Error).message}`}`, true, response.status);
    }
    if (!response.ok) {
      const retryable = retryableStatus(response.status);
      throw new SynthRequestError(`${url}: HTTP ${response.status}${text.trim() ? `: ${text.trim().slice(0, 200)}` : ''}`, retryable, response.status, retryable ? retryWaitMs(response.headers) : undefined);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new SynthRequestError(`${url}: the answer is not JSON (${(err as Error).message}): ${text.slice(0, 80)}`, true, response.status);
    }
    return { ...parseAnswer(api, json, url), pauseMs: rateLimitPauseMs(response.headers) };
  } finally {
    clearTimeout(timer);
    stop.removeEventListener('abort', onStop);
  }
}

// ---------------------------------------------------------------- the job

/** The settings a journal belongs to (OUT.partial.json). Never the key. */
interface JobSettings {
  format: 'qkd-synth-journal';
  version: 1;
  prompts: number;
  promptsSha256: string;
  url: string;
  model: string;
  api: SynthApi;
  nPerPrompt: number;
  maxTokens: number;
  temperature: number;
  topP: number | null;
  seed: number | null;
}

/** SHA-256 (hex) of the prompts' content (not their line numbers). */
export function promptsSha256(prompts: readonly SynthPrompt[]): string {
  const h = createHash('sha256');
  for (const p of prompts) {
    h.update(JSON.stringify(p.messages !== undefined ? { messages: p.messages.map((m) => ({ role: m.role, content: m.content })) } : { prompt: p.prompt }));
    h.update('\n');
  }
  return h.digest('hex');
}

function checkOptions(o: SynthOptions, prompts: number): Required<Pick<SynthOptions, 'nPerPrompt' | 'maxTokens' | 'temperature' | 'concurrency' | 'attempts' | 'backoffMs' | 'timeoutMs'>> {
  const v = {
    nPerPrompt: o.nPerPrompt ?? DEFAULTS.nPerPrompt,
    maxTokens: o.maxTokens ?? DEFAULTS.maxTokens,
    temperature: o.temperature ?? DEFAULTS.temperature,
    concurrency: o.concurrency ?? DEFAULTS.concurrency,
    attempts: o.attempts ?? DEFAULTS.attempts,
    backoffMs: o.backoffMs ?? DEFAULTS.backoffMs,
    timeoutMs: o.timeoutMs ?? DEFAULTS.timeoutMs,
  };
  const bad = (value: unknown, field: string, hint: string): never => {
    throw new QkdError('ARGUMENT', `synth: ${field} ${String(value)} is invalid`, { field, hint });
  };
  const positiveInt = (x: number) => Number.isSafeInteger(x) && x >= 1;
  if (!positiveInt(v.nPerPrompt)) bad(v.nPerPrompt, '--n-per-prompt', 'a positive integer');
  if (!positiveInt(v.maxTokens)) bad(v.maxTokens, '--max-tokens', 'a positive integer');
  if (!Number.isFinite(v.temperature) || v.temperature < 0) bad(v.temperature, '--temperature', 'a number ≥ 0');
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) bad(o.topP, '--top-p', 'a number in (0, 1]');
  if (!positiveInt(v.concurrency)) bad(v.concurrency, '--concurrency', 'a positive integer');
  if (!positiveInt(v.attempts)) bad(v.attempts, 'attempts', 'a positive integer');
  if (!Number.isFinite(v.backoffMs) || v.backoffMs < 0) bad(v.backoffMs, 'backoffMs', 'a number of ms ≥ 0');
  if (!Number.isFinite(v.timeoutMs) || v.timeoutMs <= 0) bad(v.timeoutMs, 'timeoutMs', 'a positive number of ms');
  if (o.seed !== undefined && (!Number.isSafeInteger(o.seed) || o.seed < 0 || !Number.isSafeInteger(o.seed + prompts * v.nPerPrompt))) {
    bad(o.seed, '--seed', 'a non-negative integer (request j of prompt i sends seed + i·n + j)');
  }
  return v;
}

/**
 * Generates nPerPrompt completions of every prompt from the teacher at
 * `endpoint` and writes them to `outPath` as JSON Lines rows, in prompt then
 * sample order (the module comment says how it survives kill -9). Returns
 * with interrupted = true when shouldStop asked to stop; throws a QkdError
 * when a request fails for good (non-retryable status, or `attempts`
 * failures), keeping the rows done for the next run.
 */
export async function synthesize(endpoint: SynthEndpoint, prompts: SynthPrompt[], outPath: string, o: SynthOptions = {}): Promise<SynthResult> {
  const key = endpoint.apiKey !== undefined && endpoint.apiKey !== '' ? endpoint.apiKey : undefined;
  const redact = (s: string): string => (key === undefined ? s : s.split(key).join('***'));
  const note = (s: string): void => o.onNote?.(redact(s));
  const api = endpoint.api;
  if (!(SYNTH_APIS as readonly string[]).includes(api)) throw new QkdError('CONFIG', `synth: unknown teacher API '${String(api)}'`, { field: '--teacher-api', hint: SYNTH_APIS.join(' or ') });
  let parsed: URL;
  try {
    parsed = new URL(endpoint.url);
  } catch {
    throw new QkdError('CONFIG', `synth: the teacher URL is not a URL`, { field: '--teacher-url', hint: 'http(s)://host[:port] of an OpenAI-compatible server' });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new QkdError('CONFIG', `synth: the teacher URL must be http or https, not ${parsed.protocol}`, { field: '--teacher-url', hint: 'http(s)://host[:port]' });
  if (parsed.username !== '' || parsed.password !== '') throw new QkdError('CONFIG', 'synth: the teacher URL holds a user name or password, which is not sent', { field: '--teacher-url', hint: `the key in the environment variable ${TEACHER_API_KEY_ENV} and a URL without credentials` });
  if (key !== undefined && /[\u0000-\u001f\u007f]/.test(key)) throw new QkdError('CONFIG', 'synth: the API key holds control characters (a pasted line break?)', { field: TEACHER_API_KEY_ENV, hint: 'the key alone, on one line' });
  if (typeof endpoint.model !== 'string' || endpoint.model === '') throw new QkdError('CONFIG', 'synth: no teacher model name', { field: '--teacher-model', hint: 'the name the server serves the model under' });
  if (prompts.length === 0) throw new QkdError('ARGUMENT', 'synth: no prompts', { field: '--prompts', hint: 'at least one prompt' });
  prompts.forEach((p, i) => checkPrompt({ messages: p.messages, prompt: p.prompt }, `prompt ${i + 1}${p.line !== undefined ? ` (line ${p.line})` : ''}`));
  checkPromptsForApi(prompts, api);
  const v = checkOptions(o, prompts.length);
  const n = v.nPerPrompt;
  const total = prompts.length * n;
  const url = synthEndpointUrl(endpoint);
  // Compared in this order by the journal; the first that differs is named.
  const settings: JobSettings = {
    format: 'qkd-synth-journal',
    version: 1,
    api,
    url: baseUrl(endpoint.url),
    model: endpoint.model,
    promptsSha256: promptsSha256(prompts),
    prompts: prompts.length,
    nPerPrompt: n,
    maxTokens: v.maxTokens,
    temperature: v.temperature,
    topP: o.topP ?? null,
    seed: o.seed ?? null,
  };
  let truncated = 0;
  const j = openJournal(outPath, {
    label: 'synth',
    settings: settings as unknown as Record<string, unknown>,
    total,
    force: o.force ?? false,
    onNote: note,
    keyOf: (row) => {
      const i = row.prompt_index;
      const s = row.sample;
      const ok = typeof i === 'number' && Number.isInteger(i) && i >= 0 && i < prompts.length && typeof s === 'number' && Number.isInteger(s) && s >= 0 && s < n && (api === 'chat' ? Array.isArray(row.messages) : typeof row.completion === 'string');
      return ok ? i * n + s : null;
    },
    onResumedRow: (_, row) => {
      if (row.finish_reason === 'length') truncated++;
    },
  });
  const journalPath = j.path;

  // ---- the requests
  const resumed = j.resumed;
  const todo: number[] = [];
  for (let k = 0; k < total; k++) if (!j.has(k)) todo.push(k);
  const inFlight = Math.min(v.concurrency, Math.max(todo.length, 1));
  {
    const all = estimateSynth(prompts, { nPerPrompt: n, maxTokens: v.maxTokens });
    let left = 0;
    for (const k of todo) left += Math.ceil(promptChars(prompts[Math.floor(k / n)]!) / 4);
    note(
      `synth: ${todo.length} of ${total} requests to ask for (${prompts.length} prompts × ${n}) from ${endpoint.model} at ${url}: about ${left} prompt tokens (estimate: characters / 4; ${all.promptTokens} for the whole job) and at most ${todo.length * v.maxTokens} completion tokens; ${inFlight} in flight${resumed > 0 ? `; ${resumed} rows done before` : ''}`,
    );
  }
  const started = performance.now();
  let retries = 0;
  let promptTokens = 0;
  let completionTokens = 0;
  const report = (): void => o.onProgress?.({ done: j.count, total, resumed, retries, promptTokens, completionTokens, elapsedSeconds: (performance.now() - started) / 1000 });

  // `fatal` aborts the requests in flight (a failure stops the job at once);
  // `wake` ends the waits (backoff, rate-limit pauses) on a failure or a stop.
  const fatal = new AbortController();
  const wake = new AbortController();
  let failure: unknown = null;
  let stopping = false;
  const fail = (err: unknown): void => {
    failure ??= err;
    fatal.abort();
    wake.abort();
  };
  const halted = (): boolean => failure !== null || stopping;
  const pollStop = (): boolean => {
    if (!stopping && failure === null) {
      let stop = false;
      try {
        stop = o.shouldStop?.() ?? false;
      } catch {
        stop = false;
      }
      if (stop) {
        stopping = true;
        wake.abort();
      }
    }
    return halted();
  };
  const sleep = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      if (ms <= 0 || wake.signal.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        wake.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      wake.signal.addEventListener('abort', done, { once: true });
    });
  // New requests wait until this time (a used-up rate limit, or a 429's wait).
  let pausedUntil = 0;
  const pauseAll = (ms: number, why: string): void => {
    const until = Date.now() + ms;
    if (until <= pausedUntil) return;
    if (ms >= 2000 && pausedUntil <= Date.now()) note(`synth: ${why}: pausing new requests for ${(ms / 1000).toFixed(1)} s`);
    pausedUntil = until;
  };

  const bodyOf = (k: number): Record<string, unknown> => {
    const i = Math.floor(k / n);
    const p = prompts[i]!;
    const body: Record<string, unknown> = { model: endpoint.model };
    if (api === 'chat') body.messages = messagesOf(p).map((m) => ({ role: m.role, content: m.content }));
    else body.prompt = p.prompt;
    body.max_tokens = v.maxTokens;
    body.temperature = v.temperature;
    if (o.topP !== undefined) body.top_p = o.topP;
    if (o.seed !== undefined) body.seed = o.seed + k;
    body.stream = false;
    return body;
  };
  const rowOf = (k: number, a: Answer): Record<string, unknown> => {
    const i = Math.floor(k / n);
    const p = prompts[i]!;
    return api === 'chat'
      ? { messages: [...messagesOf(p).map((m) => ({ role: m.role, content: m.content })), { role: 'assistant', content: a.text }], prompt_index: i, sample: k % n, finish_reason: a.finishReason }
      : { prompt: p.prompt, completion: a.text, prompt_index: i, sample: k % n, finish_reason: a.finishReason };
  };

  /** One row's answer, retried; null when the job halts first. */
  const ask = async (k: number): Promise<Answer | null> => {
    const body = bodyOf(k);
    for (let attempt = 1; ; attempt++) {
      while (!pollStop() && pausedUntil > Date.now()) await sleep(Math.min(pausedUntil - Date.now(), 250));
      if (halted()) return null;
      try {
        return await requestOnce(url, body, api, key, v.timeoutMs, fatal.signal);
      } catch (err) {
        if (halted()) return null;
        const i = Math.floor(k / n);
        const which = `prompt ${i + 1}${prompts[i]!.line !== undefined ? ` (line ${prompts[i]!.line})` : ''} sample ${k % n}`;
        if (!(err instanceof SynthRequestError)) {
          fail(err);
          return null;
        }
        if (!err.retryable) {
          const status = err.status ?? 0;
          const auth = status === 401 || status === 403;
          fail(
            new QkdError('IO', redact(`synth: the teacher refused the request for ${which}: ${err.message}`), {
              path: url,
              field: auth ? TEACHER_API_KEY_ENV : status === 404 ? '--teacher-url' : '--teacher-model',
              hint: auth
                ? `a key the server accepts in the environment variable ${TEACHER_API_KEY_ENV} (sent as Authorization: Bearer)`
                : status === 404
                  ? `a server answering POST ${url} (the base URL, with or without /v1) serving the model ${endpoint.model}`
                  : `a request the server accepts: the model name, --max-tokens, the sampling settings and --teacher-api ${api}`,
            }),
          );
          return null;
        }
        if (attempt >= v.attempts) {
          fail(
            new QkdError('IO', redact(`synth: the request for ${which} failed ${attempt} times: ${err.message}`), {
              path: url,
              field: `prompt ${i + 1} sample ${k % n}`,
              hint: j.count > 0 ? `a teacher that answers; the ${j.count} row${j.count === 1 ? '' : 's'} done ${j.count === 1 ? 'is' : 'are'} kept in ${journalPath}, and the same command continues from there` : 'a teacher that answers (no row was done yet; the same command starts again)',
            }),
          );
          return null;
        }
        retries++;
        const backoff = Math.min(MAX_BACKOFF_MS, v.backoffMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
        const wait = Math.max(backoff, err.waitMs ?? 0);
        if (err.status === 429 && err.waitMs !== undefined) pauseAll(err.waitMs, 'rate limited (HTTP 429)');
        else if (wait >= 10_000) note(redact(`synth: ${which}: ${err.message}; asking again in ${(wait / 1000).toFixed(1)} s (attempt ${attempt + 1} of ${v.attempts})`));
        await sleep(wait);
      }
    }
  };

  const poll = setInterval(pollStop, 50);
  try {
    report();
    let next = 0;
    const append = (k: number, a: Answer): void => {
      j.append(k, rowOf(k, a));
      if (a.finishReason === 'length') truncated++;
    };
    const worker = async (): Promise<void> => {
      try {
        while (next < todo.length && !pollStop()) {
          const k = todo[next++]!;
          const a = await ask(k);
          if (a === null) return;
          // An answer that arrived is kept even when the job is halting.
          append(k, a);
          promptTokens += a.promptTokens;
          completionTokens += a.completionTokens;
          if (a.pauseMs > 0) pauseAll(a.pauseMs, 'the rate limit is used up (x-ratelimit-remaining 0)');
          report();
        }
      } catch (err) {
        // A journal that cannot be written, or a callback that threw: every worker stops before the journal closes.
        fail(err);
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  } finally {
    clearInterval(poll);
    // A journal with no row (a job that failed at once) is removed.
    j.close();
  }
  if (failure !== null) throw failure;
  const result = (interrupted: boolean): SynthResult => ({ rows: j.count, resumed, retries, promptTokens, completionTokens, interrupted });
  if (j.count < total) {
    report();
    note(j.count > 0 ? `synth: stopped with ${j.count} of ${total} rows done (kept in ${journalPath}); the same command continues` : `synth: stopped with none of ${total} rows done; the same command starts again`);
    return result(true);
  }

  // ---- every row is done: OUT in (prompt, sample) order, then the journal goes
  j.finish();
  report();
  note(`synth: wrote ${total} rows to ${outPath}${truncated > 0 ? ` (${truncated} completions stopped at --max-tokens, finish_reason "length")` : ''}`);
  return result(false);
}

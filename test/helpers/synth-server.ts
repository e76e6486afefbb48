// A loopback OpenAI-compatible server for synth tests: POST /v1/chat/completions
// and /v1/completions, answered deterministically (the completion is derived
// from the prompt text, the seed, max_tokens and temperature), with faults
// injected on chosen request numbers: dropped connections, HTTP 500/503, 429
// with Retry-After or with x-ratelimit-reset-requests, a 200 whose
// x-ratelimit-remaining-requests is 0, malformed JSON, an answer without
// content, an answer slower than the client's timeout, and 401.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type SynthFault = 'drop' | '500' | '503' | '429-retry-after' | '429-reset' | 'remaining-0' | 'malformed' | 'no-content' | 'slow' | '401';

export interface SynthServerRequest {
  /** 0-based request number. */
  n: number;
  path: string;
  body: Record<string, unknown>;
  /** Date.now() when the request's body had arrived. */
  at: number;
  fault: SynthFault | null;
  authorization: string | undefined;
}

export interface SynthServer {
  url: string;
  /** Requests received (faults included). */
  readonly requests: number;
  /** Every request, in arrival order. */
  readonly log: SynthServerRequest[];
  /** Requests per fault kind. */
  readonly faults: Record<string, number>;
  close(): Promise<void>;
}

export interface SynthServerOptions {
  /** The fault for request number n (0-based), or null to answer. */
  fault?: (n: number) => SynthFault | null;
  /** Delay of every answer in ms (default 0). */
  delayMs?: number;
  /** Delay of a 'slow' answer (default 2000). */
  slowMs?: number;
  /** Bearer token the server requires (default: none). A wrong one gets a 401 that echoes what was sent. */
  apiKey?: string;
  /** retry-after of a '429-retry-after' fault (default '1', seconds). */
  retryAfter?: string;
  /** x-ratelimit-reset-requests of '429-reset' and 'remaining-0' (default '300ms'). */
  resetRequests?: string;
}

/** The text the teacher sees of a request: the prompt, or the messages as "role: content" lines. */
export function promptTextOf(body: { prompt?: unknown; messages?: unknown }): string {
  if (Array.isArray(body.messages)) return (body.messages as { role: string; content: string }[]).map((m) => `${m.role}: ${m.content}`).join('\n');
  return String(body.prompt);
}

/** The loopback teacher's completion of `text` (deterministic in all four inputs). */
export function teacherCompletion(text: string, seed: unknown, maxTokens: unknown, temperature: unknown): string {
  const h = createHash('sha256').update(`${text}\u0000${String(seed)}`).digest('hex');
  return `answer ${h.slice(0, 10)} to "${text.slice(0, 12)}" (max ${String(maxTokens)}, t ${String(temperature)})`;
}

/** "length" for prompts whose text length is a multiple of 3, else "stop". */
export const teacherFinishReason = (text: string): string => (text.length % 3 === 0 ? 'length' : 'stop');

/** usage of an answer: prompt tokens = characters of the text, completion tokens = words of the completion. */
export const teacherUsage = (text: string, completion: string): { prompt_tokens: number; completion_tokens: number } => ({ prompt_tokens: text.length, completion_tokens: completion.split(' ').length });

export async function startSynthServer(options: SynthServerOptions = {}): Promise<SynthServer> {
  const log: SynthServerRequest[] = [];
  const faults: Record<string, number> = {};
  const timers = new Set<NodeJS.Timeout>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = log.length;
      const fault = options.fault?.(n) ?? null;
      if (fault !== null) faults[fault] = (faults[fault] ?? 0) + 1;
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        body = {};
      }
      log.push({ n, path: req.url ?? '', body, at: Date.now(), fault, authorization: req.headers.authorization });
      const json = (status: number, value: unknown, headers: Record<string, string> = {}): void => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(typeof value === 'string' ? value : JSON.stringify(value));
      };
      const answer = (): void => {
        if (res.destroyed || res.writableEnded) return;
        if (fault === '401' || (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`)) {
          // Echoes what was sent, as a careless server might: the client must not print it.
          json(401, { error: { message: `invalid key: ${req.headers.authorization ?? '(none)'}`, type: 'invalid_request_error' } });
          return;
        }
        if (fault === 'drop') {
          req.socket.destroy();
          return;
        }
        if (fault === '500') return json(500, { error: 'internal' });
        if (fault === '503') return json(503, { error: 'overloaded' }, { 'retry-after': '0' });
        if (fault === '429-retry-after') return json(429, { error: 'rate limited' }, { 'retry-after': options.retryAfter ?? '1' });
        if (fault === '429-reset') {
          return json(429, { error: 'rate limited' }, { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': options.resetRequests ?? '300ms', 'x-ratelimit-remaining-tokens': '5000', 'x-ratelimit-reset-tokens': '20ms' });
        }
        if (fault === 'malformed') return json(200, '{"choices": [{"message": {"content": "half an ans');
        const chat = req.url === '/v1/chat/completions';
        if (!chat && req.url !== '/v1/completions') return json(404, { error: 'not found' });
        if (chat ? !Array.isArray(body.messages) : typeof body.prompt !== 'string') return json(400, { error: chat ? 'messages required' : 'prompt must be a string' });
        const text = promptTextOf(body);
        const completion = teacherCompletion(text, body.seed, body.max_tokens, body.temperature);
        const finish = teacherFinishReason(text);
        const choice =
          fault === 'no-content'
            ? { index: 0, message: { role: 'assistant', content: null }, finish_reason: 'stop' }
            : chat
              ? { index: 0, message: { role: 'assistant', content: completion }, finish_reason: finish }
              : { index: 0, text: completion, finish_reason: finish };
        const headers: Record<string, string> = fault === 'remaining-0' ? { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': options.resetRequests ?? '300ms' } : { 'x-ratelimit-remaining-requests': '100' };
        json(200, { id: `x-${n}`, object: chat ? 'chat.completion' : 'text_completion', model: body.model, choices: [choice], usage: teacherUsage(text, completion) }, headers);
      };
      const wait = fault === 'slow' ? (options.slowMs ?? 2000) : (options.delayMs ?? 0);
      if (wait > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          answer();
        }, wait);
        timers.add(t);
      } else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return log.length;
    },
    log,
    faults,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

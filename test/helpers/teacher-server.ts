// A loopback inference server for tests: vLLM's /v1/completions with
// prompt_logprobs and SGLang's /generate with input_top_logprobs, answered by
// a qkd model, with faults injected on chosen requests (dropped connections,
// HTTP 500 and 429, slow answers, malformed JSON, wrong ids, truncated lists).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { noGrad } from '../../src/tensor/tape.js';
import type { LlamaModel } from '../../src/models/llama.js';
import { softTargetsFromLogits } from '../../src/distill/soft-targets.js';

export type Fault = 'drop' | '500' | '429' | 'slow' | 'malformed' | 'wrong-ids' | 'truncated' | 'short-topk';

export interface LoopbackServer {
  url: string;
  /** Requests answered (faults included). */
  readonly requests: number;
  /** Requests per fault kind. */
  readonly faults: Record<string, number>;
  close(): Promise<void>;
}

export interface LoopbackOptions {
  /** The fault for request number n (0-based), or null to answer. */
  fault?: (n: number) => Fault | null;
  /** Delay of every answer in ms (default 0); a 'slow' fault waits slowMs. */
  delayMs?: number;
  slowMs?: number;
  /** The text of a token id (decoded_token / text fields). */
  tokenText?: (id: number) => string;
  /** Bearer token the server requires (default: none). */
  apiKey?: string;
}

export async function startLoopbackTeacher(model: LlamaModel, options: LoopbackOptions = {}): Promise<LoopbackServer> {
  let requests = 0;
  const faults: Record<string, number> = {};
  const V = model.config.vocab_size;
  const text = options.tokenText ?? ((id: number) => String.fromCharCode(id));
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = requests++;
      const fault = options.fault?.(n) ?? null;
      if (fault !== null) faults[fault] = (faults[fault] ?? 0) + 1;
      if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"bad key"}');
        return;
      }
      const answer = (): void => {
        if (fault === 'drop') {
          req.socket.destroy();
          return;
        }
        if (fault === '500') {
          res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"internal"}');
          return;
        }
        if (fault === '429') {
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '0' }).end('{"error":"rate limited"}');
          return;
        }
        if (fault === 'malformed') {
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"choices": [{"prompt_logprobs": [null, {"1": ');
          return;
        }
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        } catch {
          res.writeHead(400).end('{"error":"bad json"}');
          return;
        }
        const sglang = req.url === '/generate';
        if (!sglang && req.url !== '/v1/completions') {
          res.writeHead(404).end('{"error":"not found"}');
          return;
        }
        const ids = (sglang ? body.input_ids : body.prompt) as number[];
        const k = (sglang ? body.top_logprobs_num : body.prompt_logprobs) as number;
        const N = ids.length - 1;
        const logits = noGrad(() => model.forward(Int32Array.from(ids.slice(0, N)), 1, N)).data;
        const t = softTargetsFromLogits(logits, N, V, k);
        const rows: { id: number; logp: number }[][] = [];
        for (let r = 0; r < N; r++) {
          const row = Array.from({ length: k }, (_, i) => ({ id: t.ids[r * k + i]!, logp: t.logp[r * k + i]! }));
          if (fault === 'wrong-ids' && r === 0) row[0]!.id = V + 5;
          // vLLM also lists the prompt's own token when it is not in the top k.
          if (!sglang && !row.some((e) => e.id === ids[r + 1])) {
            const z = logits.subarray(r * V, (r + 1) * V);
            let m = -Infinity;
            for (const v of z) m = Math.max(m, v);
            let s = 0;
            for (const v of z) s += Math.exp(v - m);
            row.push({ id: ids[r + 1]!, logp: z[ids[r + 1]!]! - m - Math.log(s) });
          }
          if (fault === 'short-topk' && r === 0) row.splice(k - 1);
          rows.push(row);
        }
        if (fault === 'truncated') rows.pop();
        const json = sglang
          ? { text: '', meta_info: { prompt_tokens: ids.length, input_top_logprobs: [null, ...rows.map((row) => row.map((e) => [e.logp, e.id, text(e.id)]))] } }
          : { id: `cmpl-${n}`, object: 'text_completion', model: body.model, choices: [{ index: 0, text: '', prompt_logprobs: [null, ...rows.map((row) => Object.fromEntries(row.map((e, i) => [String(e.id), { logprob: e.logp, rank: i + 1, decoded_token: text(e.id) }])))] }] };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(json));
      };
      const wait = fault === 'slow' ? (options.slowMs ?? 2000) : (options.delayMs ?? 0);
      if (wait > 0) setTimeout(answer, wait);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    faults,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * npm run bench -- server-teacher [--windows N] [--top-k K]
 *
 * What the client costs when a server teacher fills the soft-target cache,
 * in one run on this machine, with the same teacher (the reference shape
 * with 2 layers: width 1024, 32k vocabulary) and windows of 128 tokens:
 * 1. in process: the teacher's forward and top-k written straight into the
 *    cache (writeSoftTargetCache), prompt tokens/s;
 * 2. through HTTP: the same teacher behind the loopback server (vLLM's
 *    /v1/completions with prompt_logprobs, in a child process, so server
 *    and client each have a core), filled by fillCacheFromServer with 2
 *    requests in flight, prompt tokens/s and the ratio to 1;
 * 3. the client alone: parsing one vLLM answer into top-k targets, tokens/s
 *    (the ceiling the client puts on any server), and the answer's bytes
 *    per token (what the network carries).
 * Last stdout line: JSON {"in_process_tokens_per_s","server_tokens_per_s","ratio","client_parse_tokens_per_s","answer_bytes_per_token"}.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { noGrad } from '../src/tensor/index.js';
import { createLlama } from '../src/models/llama.js';
import { softTargetWindow, writeSoftTargetCache } from '../src/distill/soft-targets.js';
import { fillCacheFromServer, parseServerAnswer } from '../src/distill/teacher-server.js';
import { startLoopbackTeacher } from '../test/helpers/teacher-server.js';
import { benchLlamaConfig } from './_util.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const config = benchLlamaConfig(2);
const SEED = 7;
const seqLen = 128;

if (args[0] === '--serve') {
  const server = await startLoopbackTeacher(createLlama({ ...config }, SEED));
  console.log(server.url);
} else {
  const windows = flag('--windows', 24);
  const topK = flag('--top-k', 20);
  const V = config.vocab_size;
  const tokens = Int32Array.from({ length: windows * seqLen + 1 }, (_, i) => (i * 7919 + 13) % V);
  const model = createLlama({ ...config }, SEED);
  const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-server-'));
  try {
    // Warm-up: one forward.
    noGrad(() => model.forward(softTargetWindow(tokens, seqLen, 0).inputs, 1, seqLen));
    const t0 = performance.now();
    writeSoftTargetCache(join(dir, 'in-process.bin'), { tokens, topK, seqLen, V }, (w) => noGrad(() => model.forward(softTargetWindow(tokens, seqLen, w).inputs, 1, seqLen)).data);
    const inProcess = (windows * (seqLen + 1)) / ((performance.now() - t0) / 1000);
    console.log(`in process:   ${inProcess.toFixed(0)} prompt tokens/s (${windows} windows of ${seqLen} + 1 tokens, top-${topK} of ${V})`);

    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`the loopback server exited (${code})`)));
      });
      const teacher = { url, model: 'bench', api: 'vllm' as const };
      // Warm-up request, then the timed job.
      await fillCacheFromServer(join(dir, 'warm.bin'), teacher, { tokens: tokens.slice(0, seqLen + 1), topK, seqLen, V });
      const t1 = performance.now();
      await fillCacheFromServer(join(dir, 'server.bin'), teacher, { tokens, topK, seqLen, V, concurrency: 2 });
      const server = (windows * (seqLen + 1)) / ((performance.now() - t1) / 1000);
      console.log(`through HTTP: ${server.toFixed(0)} prompt tokens/s (loopback vLLM schema, 2 in flight) = ${(server / inProcess).toFixed(2)}× in process`);

      // The client alone: one answer fetched, then parsed repeatedly.
      const window = tokens.slice(0, seqLen + 1);
      const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'bench', prompt: Array.from(window), max_tokens: 1, prompt_logprobs: topK }) });
      const body = await res.text();
      const repeats = 50;
      const t2 = performance.now();
      for (let i = 0; i < repeats; i++) parseServerAnswer('vllm', JSON.parse(body), window, topK, V);
      const parse = (repeats * (seqLen + 1)) / ((performance.now() - t2) / 1000);
      const bytesPerToken = body.length / (seqLen + 1);
      console.log(`client alone: ${parse.toFixed(0)} tokens/s parsed; ${bytesPerToken.toFixed(0)} bytes of JSON per prompt token at top-${topK}`);
      console.log(JSON.stringify({ in_process_tokens_per_s: inProcess, server_tokens_per_s: server, ratio: server / inProcess, client_parse_tokens_per_s: parse, answer_bytes_per_token: bytesPerToken }));
    } finally {
      child.kill();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

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
 *    per token (what the network carries);
 * 4. llama.cpp in process (--teacher-engine llama.cpp): the same model as
 *    an F32 GGUF, 2 threads, its top-k and softmax sum per position through
 *    node-llama-cpp (what the cache job asks for), and for comparison the
 *    full logits on a few windows (skipped when node-llama-cpp is not
 *    installed).
 * Last stdout line: JSON {"in_process_tokens_per_s","server_tokens_per_s","ratio","client_parse_tokens_per_s","answer_bytes_per_token","llama_cpp_tokens_per_s","llama_cpp_full_logits_tokens_per_s"}.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { noGrad } from '../src/tensor/index.js';
import { createLlama } from '../src/models/llama.js';
import { softTargetsFromLogits, softTargetWindow, writeSoftTargetCache } from '../src/distill/soft-targets.js';
import { saveLlama } from '../src/models/llama-io.js';
import { exportGguf } from '../src/compress/export-gguf.js';
import { llamaCppScorer } from '../src/eval/llama-cpp.js';
import { writeLlama2cTokenizer } from '../src/data/llama2c-tokenizer.js';
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
      child.kill();

      let llamaCpp: number | null = null;
      let llamaCppFull: number | null = null;
      try {
        const modelDir = join(dir, 'model');
        saveLlama(modelDir, model);
        const gguf = join(dir, 'teacher-F32.gguf');
        // A SentencePiece-style vocabulary of the model's size (as bench/export.ts): <unk> <s> </s>, the 256 byte tokens, then pieces.
        const pieces = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
        while (pieces.length < V) pieces.push(` p${pieces.length}`);
        writeLlama2cTokenizer(join(modelDir, 'tokenizer.bin'), pieces, pieces.map((_, i) => (i < 259 ? 0 : -i)));
        exportGguf(modelDir, { out: gguf, type: 'F32', force: true, name: 'bench', tokenizer: join(modelDir, 'tokenizer.bin') });
        const scorer = await llamaCppScorer(gguf, { maxTokens: seqLen, vocab: V, threads: 2 });
        try {
          await scorer.topK(tokens.subarray(0, seqLen), topK);
          const t3 = performance.now();
          for (let w = 0; w < windows; w++) await scorer.topK(softTargetWindow(tokens, seqLen, w).inputs, topK);
          llamaCpp = (windows * seqLen) / ((performance.now() - t3) / 1000);
          console.log(`llama.cpp:    ${llamaCpp.toFixed(0)} prompt tokens/s (F32 GGUF, 2 threads, top-${topK} and the softmax sum through node-llama-cpp) = ${(llamaCpp / inProcess).toFixed(2)}× qkd in process`);
          const few = Math.min(windows, 4);
          const t4 = performance.now();
          for (let w = 0; w < few; w++) softTargetsFromLogits(await scorer.logits(softTargetWindow(tokens, seqLen, w).inputs), seqLen, V, topK);
          llamaCppFull = (few * seqLen) / ((performance.now() - t4) / 1000);
          console.log(`              ${llamaCppFull.toFixed(0)} prompt tokens/s with the full logits instead (node-llama-cpp's per-token maps)`);
        } finally {
          await scorer.close();
        }
      } catch (err) {
        console.log(`llama.cpp:    skipped (${(err as Error).message.split('\n')[0]})`);
      }
      console.log(JSON.stringify({ in_process_tokens_per_s: inProcess, server_tokens_per_s: server, ratio: server / inProcess, client_parse_tokens_per_s: parse, answer_bytes_per_token: bytesPerToken, llama_cpp_tokens_per_s: llamaCpp, llama_cpp_full_logits_tokens_per_s: llamaCppFull }));
    } finally {
      child.kill();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

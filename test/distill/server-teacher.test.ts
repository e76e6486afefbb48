// Soft targets from an inference server: a loopback server implementing
// vLLM's and SGLang's documented answers on top of a qkd model fills the
// cache with the in-process teacher's targets; injected faults are retried
// with nothing lost; wrong ids and a foreign vocabulary are named; a job
// killed with SIGKILL resumes to the very same file.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama, type LlamaModel } from '../../src/models/llama.js';
import { byteTokens, loadDefaultCorpus } from '../../src/data/corpus.js';
import { noGrad } from '../../src/tensor/tape.js';
import { openSoftTargetCache, softTargetWindow, writeSoftTargetCache } from '../../src/distill/soft-targets.js';
import { fillSoftTargetCache, openFilledCache, windowsToFill } from '../../src/distill/cache-job.js';
import { fillCacheFromServer, parseServerAnswer, ServerAnswerError, serverTeacherId } from '../../src/distill/teacher-server.js';
import { startLoopbackTeacher, type Fault, type LoopbackServer } from '../helpers/teacher-server.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-server-teacher-'));
const seqLen = 16;
const topK = 8;
const tokens = byteTokens(loadDefaultCorpus().slice(5000, 6000));
const V = 256;
const decode = (id: number) => String.fromCharCode(id);

function sameTargets(a: string, b: string): void {
  const x = openSoftTargetCache(a, { tokens });
  const y = openSoftTargetCache(b, { tokens });
  try {
    assert.equal(x.count, y.count);
    for (let w = 0; w < x.count; w++) {
      const p = x.window(w);
      const q = y.window(w);
      assert.deepEqual(p.ids, q.ids, `window ${w} ids`);
      assert.deepEqual(p.logp, q.logp, `window ${w} log-probs`);
      for (let r = 0; r < seqLen; r++) assert.ok(Math.abs(p.tailLogp[r]! - q.tailLogp[r]!) < 2e-3 * Math.max(1, Math.abs(q.tailLogp[r]!)), `window ${w} row ${r} tail ${p.tailLogp[r]} vs ${q.tailLogp[r]}`);
    }
  } finally {
    x.close();
    y.close();
  }
}

describe('soft targets from an inference server', () => {
  let model: LlamaModel;
  const reference = join(dir, 'in-process.qkdsoft');
  before(() => {
    model = createLlama({ vocab_size: V, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, initializer_range: 0.2 }, 5);
    writeSoftTargetCache(reference, { tokens, topK, seqLen, V }, (w) => noGrad(() => model.forward(softTargetWindow(tokens, seqLen, w).inputs, 1, seqLen)).data);
  });

  for (const api of ['vllm', 'sglang'] as const) {
    it(`${api}: the cache filled from the server holds the in-process teacher's targets`, async () => {
      const server = await startLoopbackTeacher(model, { tokenText: decode });
      try {
        const path = join(dir, `${api}.qkdsoft`);
        const notes: string[] = [];
        const r = await fillCacheFromServer(path, { url: server.url, model: 'loopback', api }, { tokens, topK, seqLen, V, concurrency: 3, decode, onNote: (s) => notes.push(s) });
        assert.ok(r.complete && r.retries === 0);
        assert.equal(r.fetched, r.header.count);
        assert.ok(notes.some((s) => /returned token ids checked against the student tokenizer \(0 differ\)/.test(s)), notes.join('\n'));
        assert.ok(notes.some((s) => new RegExp(`${r.header.count} of ${r.header.count} windows to ask for \\(${r.header.count} requests of ${seqLen + 1} tokens`).test(s)), notes.join('\n'));
        sameTargets(path, reference);
        assert.ok(!existsSync(`${path}.partial`) && !existsSync(`${path}.progress`));
      } finally {
        await server.close();
      }
    });
  }

  it('retries dropped connections, 500s, 429s, slow, malformed, truncated and short answers, and loses nothing', async () => {
    const kinds: Fault[] = ['drop', '500', '429', 'slow', 'malformed', 'truncated', 'short-topk'];
    const server = await startLoopbackTeacher(model, { fault: (n) => (n >= 2 && n < 2 + kinds.length ? kinds[n - 2]! : null), slowMs: 1500 });
    try {
      const path = join(dir, 'faults.qkdsoft');
      const r = await fillCacheFromServer(path, { url: server.url, model: 'loopback', api: 'vllm' }, { tokens, topK, seqLen, V, concurrency: 2, timeoutMs: 500, backoffMs: 1 });
      assert.ok(r.complete);
      assert.equal(r.retries, kinds.length);
      assert.deepEqual(Object.keys(server.faults).sort(), [...kinds].sort());
      sameTargets(path, reference);
    } finally {
      await server.close();
    }
  });

  it('names wrong ids and stops; the windows done are kept and the next run finishes them', async () => {
    const bad = await startLoopbackTeacher(model, { fault: (n) => (n === 5 ? 'wrong-ids' : null) });
    const path = join(dir, 'wrong-ids.qkdsoft');
    try {
      await assert.rejects(
        fillCacheFromServer(path, { url: bad.url, model: 'loopback', api: 'sglang' }, { tokens, topK, seqLen, V, concurrency: 1 }),
        (e: Error & { field?: string }) => /window 5 failed: sglang: position 1 has token id 261, outside the student's vocabulary \[0, 256\)/.test(e.message) && e.field === 'window 5',
      );
    } finally {
      await bad.close();
    }
    assert.ok(existsSync(`${path}.partial`) && existsSync(`${path}.progress`));
    const good = await startLoopbackTeacher(model);
    try {
      const r = await fillCacheFromServer(path, { url: good.url, model: 'loopback', api: 'sglang' }, { tokens, topK, seqLen, V, concurrency: 2 });
      assert.ok(r.complete);
      assert.equal(r.fetched, r.header.count - 5, 'only the windows not done before are asked for');
      sameTargets(path, reference);
    } finally {
      await good.close();
    }
  });

  it("refuses, before filling anything, a server whose ids are not the student tokenizer's", async () => {
    const server = await startLoopbackTeacher(model, { tokenText: (id) => String.fromCharCode((id + 1) % 256) });
    try {
      const path = join(dir, 'foreign.qkdsoft');
      await assert.rejects(
        fillCacheFromServer(path, { url: server.url, model: 'loopback', api: 'vllm' }, { tokens, topK, seqLen, V, decode }),
        (e: Error & { field?: string }) => /token ids do not mean the tokens of the tokenizer qkd reads them with/.test(e.message) && e.field === '--teacher-tokenizer',
      );
      assert.ok(!existsSync(`${path}.partial`));
      assert.equal(server.requests, 1);
    } finally {
      await server.close();
    }
  });

  it('fills only the windows asked for (a sparse cache), and a later job for the rest completes it', async () => {
    const server = await startLoopbackTeacher(model);
    try {
      const path = join(dir, 'sparse.qkdsoft');
      const teacher = { url: server.url, model: 'loopback', api: 'vllm' as const };
      const first = await fillCacheFromServer(path, teacher, { tokens, topK, seqLen, V, windows: [7, 2, 2, 30] });
      assert.ok(first.complete && first.sparse);
      assert.equal(first.fetched, 3);
      assert.equal(windowsToFill(path, { tokens, topK, seqLen, V, teacher: serverTeacherId(teacher), windows: [2, 7] }), 0);
      const asked = server.requests;
      // Nothing left to ask: the server is not asked at all (a resumed run needs no server).
      const again = await fillCacheFromServer(path, teacher, { tokens, topK, seqLen, V, windows: [2, 7], decode });
      assert.ok(again.complete && again.sparse && again.fetched === 0);
      assert.equal(server.requests, asked);
      const sparse = openFilledCache(path, { tokens });
      const full = openSoftTargetCache(reference, { tokens });
      try {
        assert.deepEqual([2, 7, 30, 3].map((w) => sparse.has(w)), [true, true, true, false]);
        assert.deepEqual(sparse.window(7).ids, full.window(7).ids);
        assert.throws(() => sparse.window(3), (e: Error & { field?: string }) => /window 3 was never filled/.test(e.message) && e.field === 'window');
      } finally {
        sparse.close();
        full.close();
      }
      await assert.rejects(fillCacheFromServer(path, teacher, { tokens, topK, seqLen, V, windows: [first.header.count] }), /outside 0\.\./);
      const rest = await fillCacheFromServer(path, teacher, { tokens, topK, seqLen, V });
      assert.ok(rest.complete && !rest.sparse);
      assert.equal(rest.fetched, rest.header.count - 3);
      sameTargets(path, reference);
      const reused: string[] = [];
      const done = await fillCacheFromServer(path, teacher, { tokens, topK, seqLen, V, onNote: (n) => reused.push(n) });
      assert.ok(done.complete && done.fetched === 0 && reused.some((n) => /reusing/.test(n)));
    } finally {
      await server.close();
    }
  });

  it('honours Retry-After and backs off exponentially', async () => {
    const waits: number[] = [];
    let calls = 0;
    const r = await fillSoftTargetCache(join(dir, 'backoff.qkdsoft'), {
      tokens: tokens.slice(0, 3 * seqLen + 1),
      topK,
      seqLen,
      V,
      concurrency: 1,
      backoffMs: 100,
      sleep: async (ms) => {
        waits.push(ms);
      },
      retryable: (e) => e instanceof ServerAnswerError && e.retryable,
      retryAfter: (e) => (e as ServerAnswerError).retryAfterSeconds,
      fetchWindow: async (w, t) => {
        calls++;
        if (calls === 1) throw new ServerAnswerError('429', true, 429, 3);
        if (calls === 2 || calls === 3) throw new ServerAnswerError('503', true, 503);
        return parseServerAnswer('sglang', { meta_info: { input_top_logprobs: [null, ...Array.from({ length: seqLen }, () => Array.from({ length: topK }, (_, i) => [-(i + 1), i + w, null]))] } }, t, topK, V).targets;
      },
    });
    assert.ok(r.complete);
    assert.equal(waits.length, 3);
    assert.ok(waits[0]! >= 3000, `Retry-After 3 s honoured (${waits[0]} ms)`);
    assert.ok(waits[1]! >= 100 && waits[1]! <= 200 && waits[2]! >= 200 && waits[2]! <= 400, `backoff doubles with jitter: ${waits}`);
  });

  describe('killed with SIGKILL', () => {
    let server: LoopbackServer;
    before(async () => {
      server = await startLoopbackTeacher(model, { delayMs: 40 });
    });
    after(async () => {
      await server.close();
    });

    it('resumes to the same file, no window lost or asked for twice after the kill', async () => {
      const path = join(dir, 'killed.qkdsoft');
      const script = join(dir, 'fill.mjs');
      writeFileSync(
        script,
        `const { fillCacheFromServer } = await import(${JSON.stringify(join(process.cwd(), 'dist/src/distill/teacher-server.js'))});
const { byteTokens, loadDefaultCorpus } = await import(${JSON.stringify(join(process.cwd(), 'dist/src/data/corpus.js'))});
const tokens = byteTokens(loadDefaultCorpus().slice(5000, 6000));
await fillCacheFromServer(${JSON.stringify(path)}, { url: ${JSON.stringify(server.url)}, model: 'loopback', api: 'vllm' }, { tokens, topK: ${topK}, seqLen: ${seqLen}, V: ${V}, concurrency: 2 });
`,
      );
      const child = spawn(process.execPath, [script], { stdio: 'ignore' });
      const progress = `${path}.progress`;
      const doneOnDisk = (): number => {
        if (!existsSync(progress)) return 0;
        const bits = Buffer.from((JSON.parse(readFileSync(progress, 'utf8')) as { done: string }).done, 'base64');
        let n = 0;
        for (const b of bits) for (let i = 0; i < 8; i++) n += (b >> i) & 1;
        return n;
      };
      const deadline = Date.now() + 30_000;
      while (doneOnDisk() < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const before = doneOnDisk();
      assert.ok(before >= 10, `windows done before the kill: ${before}`);
      assert.ok(!existsSync(path), 'the cache is not there before it is complete');
      const asked = server.requests;
      const r = await fillCacheFromServer(path, { url: server.url, model: 'loopback', api: 'vllm' }, { tokens, topK, seqLen, V, concurrency: 2 });
      assert.ok(r.complete);
      assert.equal(r.fetched, r.header.count - before, 'the resumed run asks only for the windows not recorded as done');
      assert.equal(server.requests - asked, r.fetched);
      sameTargets(path, reference);
    });
  });
});

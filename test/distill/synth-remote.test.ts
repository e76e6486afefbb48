// Training data from a teacher behind an OpenAI-compatible endpoint: a
// loopback server answers both APIs deterministically, so the output file is
// known byte for byte; injected faults are retried with nothing lost; a 401
// stops at once without printing the key; a job killed with SIGKILL resumes
// with every (prompt, sample) exactly once and no journaled row asked again.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QkdError } from '../../src/errors.js';
import {
  checkPromptsForApi,
  estimateSynth,
  parseRateLimitDuration,
  rateLimitPauseMs,
  readPrompts,
  retryWaitMs,
  synthesize,
  type SynthApi,
  type SynthProgress,
  type SynthPrompt,
} from '../../src/distill/synth-remote.js';
import { promptTextOf, startSynthServer, teacherCompletion, teacherFinishReason, teacherUsage, type SynthFault } from '../helpers/synth-server.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-synth-'));
const KEY = 'sk-qkd-test-9f1c27e4b3a8d6055e';

const mixed: SynthPrompt[] = [
  { prompt: 'Call me Ishmael.' },
  { messages: [{ role: 'system', content: 'Answer in one line.' }, { role: 'user', content: 'What is a whale?' }] },
  { prompt: 'Some years ago, never mind how long precisely' },
  { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Name a sea.' }] },
  { prompt: 'ab' },
  { prompt: 'Ünïcode and "quotes" \\ and a tab\there' },
];
const plain = (count: number, tag = 'p'): SynthPrompt[] => Array.from({ length: count }, (_, i) => ({ prompt: `${tag} ${i}: ${'word '.repeat(i % 5)}end` }));

interface Sampling {
  n: number;
  seed?: number;
  maxTokens?: number;
  temperature?: number;
}

/** The file the job must write, built here from the loopback teacher's rule (not from the module). */
function expectedFile(api: SynthApi, prompts: SynthPrompt[], s: Sampling): string {
  let out = '';
  prompts.forEach((p, i) => {
    for (let j = 0; j < s.n; j++) {
      const messages = p.messages ?? [{ role: 'user', content: p.prompt! }];
      const text = api === 'chat' ? promptTextOf({ messages }) : p.prompt!;
      const completion = teacherCompletion(text, s.seed === undefined ? undefined : s.seed + i * s.n + j, s.maxTokens ?? 256, s.temperature ?? 1);
      const row =
        api === 'chat'
          ? { messages: [...messages, { role: 'assistant', content: completion }], prompt_index: i, sample: j, finish_reason: teacherFinishReason(text) }
          : { prompt: p.prompt, completion, prompt_index: i, sample: j, finish_reason: teacherFinishReason(text) };
      out += `${JSON.stringify(row)}\n`;
    }
  });
  return out;
}

/** (prompt_index, sample) of every complete line of a JSON Lines file. */
function keysOf(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const r = JSON.parse(l) as { prompt_index: number; sample: number };
      return `${r.prompt_index}/${r.sample}`;
    });
}

const isQkd = (re: RegExp, check: (e: QkdError) => boolean = () => true) => (e: unknown) => {
  assert.ok(e instanceof QkdError, String(e));
  assert.match(e.message, re);
  return check(e);
};

describe('synth from a remote teacher', () => {
  for (const api of ['chat', 'completions'] as const) {
    it(`${api}: writes exactly the expected rows, in prompt then sample order`, async () => {
      const server = await startSynthServer();
      try {
        const prompts = api === 'chat' ? mixed : mixed.filter((p) => p.prompt !== undefined);
        const out = join(dir, `${api}.jsonl`);
        const notes: string[] = [];
        const progress: SynthProgress[] = [];
        const r = await synthesize({ url: api === 'chat' ? server.url : `${server.url}/v1/`, model: 'loopback', api }, prompts, out, {
          nPerPrompt: 3,
          seed: 100,
          maxTokens: 32,
          temperature: 0.7,
          concurrency: 3,
          onNote: (s) => notes.push(s),
          onProgress: (p) => progress.push(p),
        });
        const total = prompts.length * 3;
        assert.equal(readFileSync(out, 'utf8'), expectedFile(api, prompts, { n: 3, seed: 100, maxTokens: 32, temperature: 0.7 }));
        assert.deepEqual({ ...r }, { rows: total, resumed: 0, retries: 0, promptTokens: r.promptTokens, completionTokens: r.completionTokens, interrupted: false });
        assert.ok(!existsSync(`${out}.partial`) && !existsSync(`${out}.partial.json`), 'the journal is removed');
        // What the server was asked: every seed once, the settings as given, the right endpoint.
        assert.equal(server.requests, total);
        assert.deepEqual(server.log.map((q) => q.body.seed as number).sort((a, b) => a - b), Array.from({ length: total }, (_, k) => 100 + k));
        for (const q of server.log) {
          assert.equal(q.path, api === 'chat' ? '/v1/chat/completions' : '/v1/completions');
          assert.equal(q.body.model, 'loopback');
          assert.equal(q.body.max_tokens, 32);
          assert.equal(q.body.temperature, 0.7);
          assert.equal(q.authorization, undefined);
        }
        // usage summed.
        let pt = 0;
        let ct = 0;
        for (const q of server.log) {
          const text = promptTextOf(q.body);
          const u = teacherUsage(text, teacherCompletion(text, q.body.seed, 32, 0.7));
          pt += u.prompt_tokens;
          ct += u.completion_tokens;
        }
        assert.equal(r.promptTokens, pt);
        assert.equal(r.completionTokens, ct);
        const last = progress[progress.length - 1]!;
        assert.equal(last.done, total);
        assert.equal(last.total, total);
        assert.equal(last.completionTokens, ct);
        assert.ok(notes.some((s) => new RegExp(`${total} of ${total} requests to ask for \\(${prompts.length} prompts × 3\\)`).test(s)), notes.join('\n'));
        assert.ok(notes.some((s) => /completions stopped at --max-tokens/.test(s)), notes.join('\n'));
        // Never overwritten silently.
        await assert.rejects(synthesize({ url: server.url, model: 'loopback', api }, prompts, out, { nPerPrompt: 3 }), isQkd(/already exists/, (e) => e.path === out && e.field === '--out'));
        const again = await synthesize({ url: server.url, model: 'loopback', api }, prompts, out, { nPerPrompt: 1, force: true });
        assert.equal(again.rows, prompts.length);
        assert.equal(readFileSync(out, 'utf8'), expectedFile(api, prompts, { n: 1 }));
      } finally {
        await server.close();
      }
    });
  }

  it('retries every retryable fault in turn, waits what rate-limit headers ask, and still writes the exact file', async () => {
    const kinds: SynthFault[] = ['drop', '500', '503', '429-retry-after', '429-reset', 'malformed', 'no-content', 'slow', 'remaining-0'];
    const server = await startSynthServer({ fault: (n) => (n >= 1 && n <= kinds.length ? kinds[n - 1]! : null), slowMs: 1500, retryAfter: '1', resetRequests: '300ms' });
    try {
      const prompts = mixed;
      const out = join(dir, 'faults.jsonl');
      const r = await synthesize({ url: server.url, model: 'loopback', api: 'chat' }, prompts, out, { nPerPrompt: 2, seed: 1, concurrency: 1, timeoutMs: 400, backoffMs: 1, attempts: kinds.length + 1 });
      assert.equal(readFileSync(out, 'utf8'), expectedFile('chat', prompts, { n: 2, seed: 1 }));
      assert.equal(r.retries, kinds.length - 1, 'every fault but the 200 with remaining 0 is a retry');
      assert.deepEqual(Object.keys(server.faults).sort(), [...kinds].sort());
      assert.equal(server.requests, prompts.length * 2 + kinds.length - 1);
      // One request in flight: the request after a fault is its retry (or, after remaining-0, the next row).
      const gap = (kind: SynthFault): number => {
        const q = server.log.find((x) => x.fault === kind)!;
        return server.log[q.n + 1]!.at - q.at;
      };
      assert.ok(gap('429-retry-after') >= 950, `retry-after: 1 honoured (${gap('429-retry-after')} ms)`);
      assert.ok(gap('429-reset') >= 280, `x-ratelimit-reset-requests: 300ms honoured (${gap('429-reset')} ms)`);
      assert.ok(gap('remaining-0') >= 280, `x-ratelimit-remaining-requests: 0 pauses new requests (${gap('remaining-0')} ms)`);
      assert.ok(gap('slow') >= 380, `the slow answer timed out first (${gap('slow')} ms)`);
      for (const kind of kinds.slice(0, -1)) {
        const q = server.log.find((x) => x.fault === kind)!;
        assert.equal(server.log[q.n + 1]!.body.seed, q.body.seed, `${kind}: the same request is asked again`);
      }
    } finally {
      await server.close();
    }
  });

  it('a request that keeps failing stops the job; its hint counts the rows kept (none: it says so)', async () => {
    const server = await startSynthServer({ fault: () => '500' });
    try {
      const out = join(dir, 'always-500.jsonl');
      await assert.rejects(
        synthesize({ url: server.url, model: 'loopback', api: 'chat' }, plain(2), out, { nPerPrompt: 1, seed: 1, concurrency: 1, backoffMs: 1, attempts: 2 }),
        isQkd(/failed 2 times/, (e) => /no row was done yet/.test(e.hint ?? '') && !/0 rows/.test(e.hint ?? '')),
      );
    } finally {
      await server.close();
    }
  });

  it('with several requests in flight, faults anywhere are retried and nothing is lost or doubled', async () => {
    const kinds: SynthFault[] = ['drop', '500', '429-reset', 'malformed', 'slow', 'remaining-0', '503', '429-retry-after'];
    const server = await startSynthServer({ fault: (n) => (n % 3 === 1 && n < 3 * kinds.length ? kinds[(n - 1) / 3]! : null), slowMs: 1000, retryAfter: '0.1', resetRequests: '50ms' });
    try {
      const prompts = plain(12);
      const out = join(dir, 'faults-concurrent.jsonl');
      const r = await synthesize({ url: server.url, model: 'loopback', api: 'completions' }, prompts, out, { nPerPrompt: 2, seed: 9, concurrency: 4, timeoutMs: 300, backoffMs: 1 });
      assert.equal(readFileSync(out, 'utf8'), expectedFile('completions', prompts, { n: 2, seed: 9 }));
      assert.equal(r.retries, kinds.length - 1);
      assert.equal(server.requests, 24 + kinds.length - 1);
    } finally {
      await server.close();
    }
  });

  it('a 401 stops the job at once, names the URL, the status and QKD_TEACHER_API_KEY, and never the key', async () => {
    const server = await startSynthServer({ apiKey: 'sk-the-right-one' });
    try {
      const out = join(dir, 'unauthorized.jsonl');
      const notes: string[] = [];
      let message = '';
      await assert.rejects(
        synthesize({ url: server.url, model: 'loopback', api: 'chat', apiKey: KEY }, plain(10), out, { concurrency: 1, backoffMs: 1, onNote: (s) => notes.push(s) }),
        isQkd(/HTTP 401/, (e) => {
          message = `${e.message} ${e.hint} ${e.path} ${e.field}`;
          return e.field === 'QKD_TEACHER_API_KEY' && e.path === `${server.url}/v1/chat/completions` && /QKD_TEACHER_API_KEY/.test(e.hint ?? '');
        }),
      );
      assert.equal(server.requests, 1, 'not retried');
      assert.equal(server.log[0]!.authorization, `Bearer ${KEY}`, 'the key was sent');
      assert.ok(!message.includes(KEY), `the key is not in the error: ${message}`);
      assert.ok(message.includes(server.url));
      assert.ok(!notes.join('\n').includes(KEY));
      assert.ok(!existsSync(out));
      assert.ok(!existsSync(`${out}.partial`) && !existsSync(`${out}.partial.json`), 'a job that did nothing leaves no journal');
      // With four in flight, none is asked twice.
      const before = server.requests;
      await assert.rejects(synthesize({ url: server.url, model: 'loopback', api: 'chat', apiKey: KEY }, plain(10), out, { concurrency: 4, seed: 0 }), /HTTP 401/);
      const seeds = server.log.slice(before).map((q) => q.body.seed);
      assert.ok(seeds.length >= 1 && seeds.length <= 4 && new Set(seeds).size === seeds.length, `requests after the 401: ${seeds}`);
    } finally {
      await server.close();
    }
  });

  it('a 404 names --teacher-url', async () => {
    const server = await startSynthServer();
    try {
      await assert.rejects(
        synthesize({ url: `${server.url}/api`, model: 'loopback', api: 'completions' }, plain(2), join(dir, 'not-found.jsonl'), { concurrency: 1 }),
        isQkd(/HTTP 404/, (e) => e.field === '--teacher-url'),
      );
      assert.equal(server.requests, 1);
    } finally {
      await server.close();
    }
  });

  it('killed with SIGKILL, the job resumes: every (prompt, sample) exactly once, no journaled row asked again', async () => {
    const server = await startSynthServer({ delayMs: 40, apiKey: KEY });
    try {
      const prompts = plain(30, 'kill');
      const out = join(dir, 'killed.jsonl');
      const script = join(dir, 'synth-child.mjs');
      const module = new URL('../../src/distill/synth-remote.js', import.meta.url).href;
      const settings = { nPerPrompt: 2, seed: 7, concurrency: 2 };
      writeFileSync(
        script,
        `const { synthesize } = await import(${JSON.stringify(module)});
await synthesize({ url: ${JSON.stringify(server.url)}, model: 'loopback', api: 'chat', apiKey: process.env.KEY }, ${JSON.stringify(prompts)}, ${JSON.stringify(out)}, ${JSON.stringify(settings)});
`,
      );
      const child = spawn(process.execPath, [script], { stdio: 'ignore', env: { ...process.env, KEY } });
      const exited = new Promise((r) => child.once('exit', r));
      const journal = `${out}.partial`;
      const lines = (): number => (existsSync(journal) ? keysOf(journal).length : 0);
      const deadline = Date.now() + 15_000;
      while (lines() < 8 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      child.kill('SIGKILL');
      await exited;
      await new Promise((r) => setTimeout(r, 100));
      const before = new Set(keysOf(journal));
      assert.ok(before.size >= 8 && before.size < 60, `rows journaled before the kill: ${before.size}`);
      assert.ok(!existsSync(out), 'no output before the job is complete');
      const asked = server.requests;
      const notes: string[] = [];
      const r = await synthesize({ url: server.url, model: 'loopback', api: 'chat', apiKey: KEY }, prompts, out, { ...settings, onNote: (s) => notes.push(s) });
      assert.equal(r.resumed, before.size);
      assert.equal(r.rows, 60);
      assert.ok(notes.some((s) => new RegExp(`${60 - before.size} of 60 requests to ask for .*; ${before.size} rows done before`).test(s)), notes.join('\n'));
      assert.equal(readFileSync(out, 'utf8'), expectedFile('chat', prompts, { n: 2, seed: 7 }));
      const keys = keysOf(out);
      assert.equal(new Set(keys).size, 60);
      assert.equal(keys.length, 60);
      const after = server.log.slice(asked).map((q) => {
        const k = (q.body.seed as number) - 7;
        return `${Math.floor(k / 2)}/${k % 2}`;
      });
      assert.equal(after.length, 60 - before.size, 'the restart asks only for the rows not journaled');
      for (const k of after) assert.ok(!before.has(k), `row ${k} was journaled before the kill but asked for again`);
      assert.ok(!existsSync(journal) && !existsSync(`${out}.partial.json`));
    } finally {
      await server.close();
    }
  });

  it('a partial job with other settings is refused naming the field; --force discards it', async () => {
    const server = await startSynthServer();
    try {
      const prompts = plain(8);
      const out = join(dir, 'settings.jsonl');
      const endpoint = { url: server.url, model: 'loopback', api: 'completions' as const };
      let done = 0;
      const first = await synthesize(endpoint, prompts, out, { nPerPrompt: 2, seed: 3, concurrency: 2, onProgress: (p) => (done = p.done), shouldStop: () => done >= 3 });
      assert.ok(first.interrupted && first.rows >= 3 && first.rows < 16, `rows: ${first.rows}`);
      assert.ok(existsSync(`${out}.partial`) && existsSync(`${out}.partial.json`) && !existsSync(out));
      const refused = (field: string) => isQkd(/would not belong to this job/, (e) => e.path === `${out}.partial.json` && e.field === field && /--force/.test(e.hint ?? ''));
      await assert.rejects(synthesize(endpoint, prompts, out, { nPerPrompt: 2, seed: 3, temperature: 0.5 }), refused('temperature'));
      await assert.rejects(synthesize({ ...endpoint, model: 'other' }, prompts, out, { nPerPrompt: 2, seed: 3 }), refused('model'));
      await assert.rejects(synthesize(endpoint, prompts, out, { nPerPrompt: 3, seed: 3 }), refused('nPerPrompt'));
      await assert.rejects(synthesize(endpoint, plain(8, 'q'), out, { nPerPrompt: 2, seed: 3 }), refused('promptsSha256'));
      await assert.rejects(synthesize(endpoint, prompts, out, { nPerPrompt: 2 }), refused('seed'));
      assert.equal(keysOf(`${out}.partial`).length, first.rows, 'the refused runs left the journal alone');
      const notes: string[] = [];
      const asked = server.requests;
      const r = await synthesize(endpoint, prompts, out, { nPerPrompt: 2, seed: 3, temperature: 0.5, force: true, onNote: (s) => notes.push(s) });
      assert.ok(notes.some((s) => /discarding a partial job .*another temperature/.test(s)), notes.join('\n'));
      assert.equal(r.resumed, 0);
      assert.equal(server.requests - asked, 16);
      assert.equal(readFileSync(out, 'utf8'), expectedFile('completions', prompts, { n: 2, seed: 3, temperature: 0.5 }));
    } finally {
      await server.close();
    }
  });

  it('a torn last line is cut and a row listed twice is written once', async () => {
    const server = await startSynthServer();
    try {
      const prompts = mixed;
      const out = join(dir, 'torn.jsonl');
      const endpoint = { url: server.url, model: 'loopback', api: 'chat' as const };
      let done = 0;
      const first = await synthesize(endpoint, prompts, out, { nPerPrompt: 2, concurrency: 1, seed: 11, onProgress: (p) => (done = p.done), shouldStop: () => done >= 4 });
      assert.equal(first.rows, 4);
      const journal = `${out}.partial`;
      const firstLine = readFileSync(journal, 'utf8').split('\n')[0]!;
      appendFileSync(journal, `${firstLine}\n${firstLine.slice(0, 30)}`);
      const notes: string[] = [];
      const asked = server.requests;
      const r = await synthesize(endpoint, prompts, out, { nPerPrompt: 2, seed: 11, onNote: (s) => notes.push(s) });
      assert.equal(r.resumed, 4);
      assert.equal(server.requests - asked, prompts.length * 2 - 4);
      assert.ok(notes.some((s) => /cut a torn last line \(30 bytes\)/.test(s)), notes.join('\n'));
      assert.ok(notes.some((s) => /1 rows listed twice/.test(s)), notes.join('\n'));
      assert.equal(readFileSync(out, 'utf8'), expectedFile('chat', prompts, { n: 2, seed: 11 }));
    } finally {
      await server.close();
    }
  });

  it('the API key is in no file, note or progress report', async () => {
    const server = await startSynthServer({ apiKey: KEY });
    try {
      const prompts = mixed;
      const out = join(dir, 'secret.jsonl');
      const endpoint = { url: server.url, model: 'loopback', api: 'chat' as const, apiKey: KEY };
      const notes: string[] = [];
      const reports: string[] = [];
      let done = 0;
      const options = { nPerPrompt: 2, onNote: (s: string) => notes.push(s), onProgress: (p: SynthProgress) => ((done = p.done), reports.push(JSON.stringify(p))) };
      const first = await synthesize(endpoint, prompts, out, { ...options, shouldStop: () => done >= 5 });
      assert.ok(first.interrupted);
      for (const f of [`${out}.partial`, `${out}.partial.json`]) assert.ok(!readFileSync(f, 'utf8').includes(KEY), `${f} holds the key`);
      const settings = JSON.parse(readFileSync(`${out}.partial.json`, 'utf8')) as Record<string, unknown>;
      assert.equal(settings.model, 'loopback');
      assert.equal(settings.url, server.url);
      await synthesize(endpoint, prompts, out, options);
      assert.ok(!readFileSync(out, 'utf8').includes(KEY));
      assert.ok(notes.length > 0 && !notes.join('\n').includes(KEY));
      assert.ok(!reports.join('\n').includes(KEY));
      assert.ok(server.log.every((q) => q.authorization === `Bearer ${KEY}`));
    } finally {
      await server.close();
    }
  });

  it('readPrompts reads .txt and .jsonl, and its errors name the file, line and field', () => {
    const file = (name: string, text: string): string => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    assert.deepEqual(readPrompts(file('p.txt', 'first prompt\n\n   \r\nsecond one\r\nthird')), [
      { prompt: 'first prompt', line: 1 },
      { prompt: 'second one', line: 4 },
      { prompt: 'third', line: 5 },
    ]);
    const jsonl = file('p.jsonl', '{"prompt": "hello"}\n\n{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "id": 7}\n');
    assert.deepEqual(readPrompts(jsonl), [
      { prompt: 'hello', line: 1 },
      { messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }], line: 3 },
    ]);
    const fails = (name: string, text: string, line: number | null, field: string, re: RegExp): void => {
      const p = file(name, text);
      assert.throws(() => readPrompts(p), isQkd(re, (e) => e.path === (line === null ? p : `${p}:${line}`) && e.field === field && e.message.includes(line === null ? p : `${p}:${line}`)));
    };
    fails('bad-json.jsonl', '{"prompt": "a"}\n{"prompt": \n', 2, 'prompt', /line 2 is not JSON/);
    fails('neither.jsonl', '{"prompt": "a"}\n\n{"text": "b"}\n', 3, 'prompt', /neither "prompt" nor "messages"/);
    fails('both.jsonl', '{"prompt": "a", "messages": []}\n', 1, 'prompt/messages', /both/);
    fails('not-string.jsonl', '{"prompt": 3}\n', 1, 'prompt', /not a string/);
    fails('assistant-last.jsonl', '{"prompt": "a"}\n{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n', 2, 'messages[1].role', /ends with an assistant message/);
    fails('content-list.jsonl', '{"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}\n', 1, 'messages[0].content', /no string content/);
    fails('no-role.jsonl', '{"messages": [{"content": "q"}]}\n', 1, 'messages[0].role', /no string role/);
    fails('empty-messages.jsonl', '{"messages": []}\n', 1, 'messages', /not a non-empty list/);
    fails('empty.jsonl', '\n\n', null, '--prompts', /holds no prompt/);
    fails('empty.txt', '', null, '--prompts', /holds no prompt/);
    assert.throws(() => readPrompts(join(dir, 'missing.txt')), isQkd(/cannot read/, (e) => e.field === '--prompts'));
    // Chat prompts and the completions API.
    const prompts = readPrompts(jsonl);
    checkPromptsForApi(prompts, 'chat', jsonl);
    assert.throws(() => checkPromptsForApi(prompts, 'completions', jsonl), isQkd(/prompt 2 is a chat prompt/, (e) => e.path === `${jsonl}:3` && e.field === 'messages' && /--teacher-api chat/.test(e.hint ?? '')));
  });

  it('refuses chat prompts for the completions API before asking anything', async () => {
    const server = await startSynthServer();
    try {
      await assert.rejects(synthesize({ url: server.url, model: 'loopback', api: 'completions' }, mixed, join(dir, 'refused.jsonl')), isQkd(/chat prompt/, (e) => e.field === 'messages'));
      assert.equal(server.requests, 0);
      assert.ok(!existsSync(join(dir, 'refused.jsonl.partial.json')));
    } finally {
      await server.close();
    }
  });

  it('estimateSynth: requests, prompt tokens as ceil(characters / 4) per request, and the completion budget', () => {
    const prompts: SynthPrompt[] = [{ prompt: 'abcd' }, { prompt: 'abcde' }, { messages: [{ role: 'system', content: 'ab' }, { role: 'user', content: 'abc' }] }];
    assert.deepEqual(estimateSynth(prompts, { nPerPrompt: 3, maxTokens: 10 }), { requests: 9, promptTokens: 15, maxCompletionTokens: 90 });
    assert.deepEqual(estimateSynth(prompts, {}), { requests: 3, promptTokens: 5, maxCompletionTokens: 768 });
  });

  it('reads rate-limit headers: durations, Retry-After as seconds or a date, and used-up limits', () => {
    assert.equal(parseRateLimitDuration('1s'), 1000);
    assert.equal(parseRateLimitDuration('6m0s'), 360_000);
    assert.equal(parseRateLimitDuration('20ms'), 20);
    assert.equal(parseRateLimitDuration('1h2m3.5s'), 3_723_500);
    assert.equal(parseRateLimitDuration('2.5'), 2500);
    assert.equal(parseRateLimitDuration('soon'), undefined);
    assert.equal(parseRateLimitDuration(null), undefined);
    const h = (o: Record<string, string>) => new Headers(o);
    const now = Date.parse('2024-01-01T00:00:00Z');
    assert.equal(retryWaitMs(h({ 'retry-after': '3' }), now), 3000);
    assert.equal(retryWaitMs(h({ 'retry-after': 'Mon, 01 Jan 2024 00:00:05 GMT' }), now), 5000);
    assert.equal(retryWaitMs(h({ 'retry-after': '3', 'retry-after-ms': '150' }), now), 150);
    assert.equal(retryWaitMs(h({ 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '2s', 'x-ratelimit-remaining-tokens': '900', 'x-ratelimit-reset-tokens': '6m0s' }), now), 2000);
    assert.equal(retryWaitMs(h({ 'x-ratelimit-reset-requests': '2s', 'x-ratelimit-reset-tokens': '1m' }), now), 60_000);
    assert.equal(retryWaitMs(h({ 'retry-after': '1', 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '4s' }), now), 4000);
    assert.equal(retryWaitMs(h({}), now), undefined);
    assert.equal(rateLimitPauseMs(h({ 'x-ratelimit-remaining-requests': '5', 'x-ratelimit-reset-requests': '1s' })), 0);
    assert.equal(rateLimitPauseMs(h({ 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '1.5s' })), 1500);
    assert.equal(rateLimitPauseMs(h({ 'x-ratelimit-remaining-tokens': '0' })), 1000);
    assert.equal(rateLimitPauseMs(h({})), 0);
  });
});

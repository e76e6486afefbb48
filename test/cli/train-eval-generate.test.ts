// The train → eval → generate path from the CLI, and the golden check that a
// greedy generation is token-identical after save → load.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { generate, sampleToken } from '../../src/models/generate.js';
import { Rng } from '../../src/tensor/index.js';

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, last: () => JSON.parse(r.stdout.trim().split('\n').pop()!) };
}

describe('train → eval → generate', () => {
  const out = mkdtempSync(join(tmpdir(), 'qkd-cli-'));
  it('trains the tiny preset on the default corpus and reports JSON', () => {
    const r = qkd('train', '--out', out, '--steps', '60');
    assert.equal(r.code, 0, r.stderr);
    const j = r.last();
    assert.deepEqual(Object.keys(j), ['steps', 'train_loss', 'val_loss', 'val_ppl', 'tokens_per_s', 'params', 'peak_rss_bytes']);
    assert.equal(j.steps, 60);
    assert.ok(j.val_loss < 3.2, `val_loss ${j.val_loss}`);
    assert.ok(Math.abs(j.val_ppl - Math.exp(j.val_loss)) < 1e-9);
  });
  it('evaluates perplexity and bits per byte', () => {
    const r = qkd('eval', '--model', out);
    assert.equal(r.code, 0, r.stderr);
    const j = r.last();
    assert.ok(j.ppl > 1 && j.ppl < 30, `ppl ${j.ppl}`);
    assert.ok(Math.abs(j.bits_per_byte - Math.log2(j.ppl)) < 1e-9, 'byte-level: bits/byte = log2 ppl');
    assert.ok(j.tokens > 100_000);
  });
  it('generates text and ids; greedy is reproducible', () => {
    const a = qkd('generate', '--model', out, '--prompt', 'The whale', '--steps', '20', '--temperature', '0', '--ids');
    const b = qkd('generate', '--model', out, '--prompt', 'The whale', '--steps', '20', '--temperature', '0', '--ids');
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    assert.equal(a.stdout.trim().split(' ').length, 20);
    const text = qkd('generate', '--model', out, '--prompt', 'The whale', '--steps', '20', '--seed', '5');
    assert.ok(text.stdout.startsWith('The whale'));
  });
  it('reports a missing model directory and a bad corpus clearly', () => {
    const r = qkd('eval', '--model', join(out, 'nope'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /qkd: error: cannot read .*nope.*config\.json/);
    const dir = mkdtempSync(join(tmpdir(), 'qkd-bin-'));
    writeFileSync(join(dir, 'x.txt'), Buffer.from([0, 1, 2, 3]));
    const t = qkd('train', '--out', join(dir, 'o'), '--data', join(dir, 'x.txt'), '--steps', '1');
    assert.notEqual(t.code, 0);
    assert.match(t.stderr, /not UTF-8 text.*x\.txt/);
  });
});

describe('generation', () => {
  it('greedy generation is token-identical after save → load', () => {
    const model = createLlama({ vocab_size: 64, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.2 }, 9);
    const dir = mkdtempSync(join(tmpdir(), 'qkd-gen-'));
    saveLlama(dir, model);
    const prompt = Int32Array.from([1, 5, 9]);
    const a = generate(model, prompt, { steps: 30, temperature: 0 });
    const b = generate(loadLlama(dir), prompt, { steps: 30, temperature: 0 });
    assert.deepEqual(Array.from(b), Array.from(a));
    assert.ok(new Set(a).size > 1, 'a degenerate model would make this test vacuous');
  });
  it('samples by temperature and top-p', () => {
    const logits = Float32Array.from([2, 1, 0, -1]);
    assert.equal(sampleToken(logits, 0, 1, new Rng(1)), 0);
    const rng = new Rng(2);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[sampleToken(logits, 1, 0.7, rng)]!++;
    // top-p 0.7 keeps tokens 0 and 1 only (p = 0.644, 0.237).
    assert.equal(counts[2]! + counts[3]!, 0);
    assert.ok(Math.abs(counts[0]! / 4000 - 0.644 / 0.881) < 0.03, `${counts}`);
  });
});

describe('llama2.c files from the CLI', () => {
  it('generates from a llama2.c checkpoint + tokenizer.bin exactly as from the same model in HF layout', async () => {
    const { writeLlama2cCheckpoint } = await import('../../src/models/llama2c-io.js');
    const { writeLlama2cTokenizer } = await import('../../src/data/llama2c-tokenizer.js');
    const { ByteTokenizer } = await import('../../src/data/tokenizer.js');
    const dir = mkdtempSync(join(tmpdir(), 'qkd-l2c-'));
    const model = createLlama({ vocab_size: 260, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, initializer_range: 0.2 }, 11);
    writeLlama2cCheckpoint(join(dir, 'model.bin'), model, 'legacy');
    const pieces = ['<unk>', '\n<s>\n', '\n</s>\n', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), ' '];
    writeLlama2cTokenizer(join(dir, 'tokenizer.bin'), pieces, new Float32Array(pieces.length));
    const r = qkd('generate', '--model', join(dir, 'model.bin'), '--tokenizer', join(dir, 'tokenizer.bin'), '--prompt', 'hi', '--steps', '12', '--temperature', '0', '--ids');
    assert.equal(r.code, 0, r.stderr);
    // BOS (1), the dummy-prefix space piece (259), then byte fallback (byte + 3), as run.c encodes.
    const prompt = Int32Array.from([1, 259, ...Array.from(new ByteTokenizer().encode('hi'), (b) => b + 3)]);
    const expected = generate(model, prompt, { steps: 12, temperature: 0 });
    assert.deepEqual(r.stdout.trim().split(' ').map(Number), Array.from(expected));
  });
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { openSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { noGrad, toBf16 } from '../../src/tensor/index.js';
import { QkdError } from '../../src/errors.js';

const config = { vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 40);

describe('LLaMA checkpoints (Hugging Face layout)', () => {
  it('save → load is bit-exact and gives identical logits', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-llama-'));
    const model = createLlama(config, 3);
    saveLlama(dir, model);
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(json.architectures, ['LlamaForCausalLM']);
    assert.equal(json.num_key_value_heads, 2);
    const loaded = loadLlama(dir);
    assert.deepEqual(loaded.arena.data, model.arena.data);
    const a = noGrad(() => model.forward(ids, 2, 6)).data;
    const b = noGrad(() => loaded.forward(ids, 2, 6)).data;
    assert.deepEqual(b, a);
  });

  it('loads sharded BF16 checkpoints through model.safetensors.index.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-shard-'));
    const model = createLlama({ ...config, tie_word_embeddings: true }, 4);
    const entries = model.arena.entries;
    const half = Math.ceil(entries.length / 2);
    const weightMap: Record<string, string> = {};
    [entries.slice(0, half), entries.slice(half)].forEach((part, k) => {
      const file = `model-0000${k + 1}-of-00002.safetensors`;
      writeSafetensors(join(dir, file), part.map((e) => ({ name: e.name, dtype: 'bf16' as const, shape: e.shape, data: toBf16(e.tensor.data) })));
      for (const e of part) weightMap[e.name] = file;
    });
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, tie_word_embeddings: true }));
    const loaded = loadLlama(dir);
    for (let i = 0; i < model.arena.size; i++) {
      assert.ok(Math.abs(loaded.arena.data[i]! - model.arena.data[i]!) <= Math.abs(model.arena.data[i]!) * 2 ** -8, `param ${i}`);
    }
  });

  it('names the missing tensor, the mismatched shape and the bad config field', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-bad-'));
    const model = createLlama(config, 5);
    saveLlama(dir, model);
    // drop a tensor
    const f = openSafetensors(join(dir, 'model.safetensors'));
    const kept = f.names.filter((n) => n !== 'model.layers.1.mlp.up_proj.weight').map((n) => ({ name: n, dtype: 'f32' as const, shape: f.entry(n).shape, data: f.readFloat32(n).data }));
    f.close();
    writeSafetensors(join(dir, 'model.safetensors'), kept);
    assert.throws(() => loadLlama(dir), (e: unknown) => e instanceof QkdError && e.field === 'model.layers.1.mlp.up_proj.weight' && /lacks tensor/.test(e.message));
    // config disagreeing with the tensors
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 32 }));
    assert.throws(() => loadLlama(dir), /has shape \[24,16\] but config.json implies \[32,16\]/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, num_attention_heads: 'four' }));
    assert.throws(() => loadLlama(dir), (e: unknown) => e instanceof QkdError && e.field === 'num_attention_heads' && e.path!.endsWith('config.json'));
    assert.throws(() => loadLlama(join(dir, 'nope')), /cannot read .*config\.json/);
  });
});

// A Hugging Face config.json that the LLaMA forward pass would compute
// differently is refused by name, instead of giving wrong logits silently.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { llamaGgufMetadata, llamaGgufTensors, loadLlamaGguf } from '../../src/models/llama-gguf.js';
import { writeGguf } from '../../src/io/gguf-writer.js';
import type { GgufValue } from '../../src/io/gguf-types.js';

describe('config.json fields qkd cannot honour', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-hf-config-'));
  saveLlama(dir, createLlama({ vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16 }, 1));
  const base = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['Llama-3.2 RoPE scaling', { rope_scaling: { rope_type: 'llama3', factor: 32 } }, /rope_scaling/],
    ['Qwen2', { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' }, /architecture \["Qwen2ForCausalLM"\]/],
    ['Mistral 7B v0.1 sliding window', { architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 8 }, /sliding_window 8 is shorter than the context \(16\)/],
    ['attention bias', { attention_bias: true }, /attention_bias true/],
    ['GELU', { hidden_act: 'gelu_pytorch_tanh' }, /hidden_act 'gelu_pytorch_tanh'/],
    ['decoupled head_dim', { head_dim: 64 }, /head_dim 64 × 2 heads ≠ hidden_size 32/],
  ];
  for (const [name, change, message] of cases) {
    it(`${name}: refused naming the field`, () => {
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, ...change }));
      assert.throws(() => loadLlama(dir), (e: Error) => message.test(e.message) && /would give wrong outputs/.test(e.message));
    });
  }
  it('Mistral without a window shorter than the context is the LLaMA layout and loads', () => {
    for (const window of [null, 16, 4096]) {
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: window }));
      assert.equal(loadLlama(dir).config.num_hidden_layers, 1);
    }
  });
  it('a plain LLaMA config (sliding window off, null rope_scaling) still loads', () => {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, rope_scaling: null, use_sliding_window: false, sliding_window: 4096, attention_bias: false, head_dim: 16 }));
    assert.equal(loadLlama(dir).config.hidden_size, 32);
  });
});

describe('GGUF metadata qkd cannot honour', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-gguf-refusal-'));
  const model = createLlama({ vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16 }, 2);
  const write = (name: string, extra: Record<string, GgufValue>, withRopeFreqs = false): string => {
    const path = join(dir, `${name}.gguf`);
    const tensors = llamaGgufTensors(model, () => 'F32');
    if (withRopeFreqs) tensors.push({ name: 'rope_freqs.weight', shape: [8], type: 'F32', data: new Float32Array(8).fill(1) });
    writeGguf(path, { metadata: { ...llamaGgufMetadata(model.config, name), ...extra }, tensors });
    return path;
  };
  it('RoPE scaling (by type or by a rope_freqs tensor), decoupled head size and sliding windows are refused by name', () => {
    assert.throws(() => loadLlamaGguf(write('linear', { 'llama.rope.scaling.type': { type: 'string', value: 'linear' } })), /uses RoPE scaling \(linear\)/);
    assert.throws(() => loadLlamaGguf(write('freqs', {}, true)), /uses RoPE scaling \(rope_freqs\.weight\)/);
    assert.throws(() => loadLlamaGguf(write('keylen', { 'llama.attention.key_length': { type: 'u32', value: 64 } })), /key_length 64 is not hidden_size \/ heads = 16/);
    assert.throws(() => loadLlamaGguf(write('swa', { 'llama.attention.sliding_window': { type: 'u32', value: 8 } })), /sliding-window attention/);
    assert.throws(() => loadLlamaGguf(write('moe', { 'llama.expert_count': { type: 'u32', value: 8 } })), /mixture of experts/);
    assert.equal(loadLlamaGguf(write('plain', { 'llama.rope.scaling.type': { type: 'string', value: 'none' } })).config.hidden_size, 32);
    // A window as long as the context masks nothing.
    assert.equal(loadLlamaGguf(write('swa-full', { 'llama.attention.sliding_window': { type: 'u32', value: 16 } })).config.hidden_size, 32);
  });
});

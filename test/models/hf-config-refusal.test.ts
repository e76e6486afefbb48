// A Hugging Face config.json (or GGUF) that qkd's forward pass would compute
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
    ['YaRN RoPE scaling', { rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling\.rope_type/],
    ['an architecture qkd does not run', { architectures: ['GPTNeoXForCausalLM'], model_type: 'gpt_neox' }, /architecture \["GPTNeoXForCausalLM"\]/],
    ['model_type against architectures', { architectures: ['Qwen2ForCausalLM'], model_type: 'llama' }, /model_type 'llama' does not match/],
    ['attention bias on LLaMA', { attention_bias: true }, /attention_bias true/],
    ['MLP bias', { mlp_bias: true }, /mlp_bias true/],
    ['partial RoPE', { partial_rotary_factor: 0.5 }, /partial_rotary_factor 0\.5/],
    ['bidirectional Gemma', { architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text', use_bidirectional_attention: true }, /use_bidirectional_attention/],
  ];
  for (const [name, change, message] of cases) {
    it(`${name}: refused naming the field`, () => {
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, ...change }));
      assert.throws(() => loadLlama(dir), (e: Error) => message.test(e.message));
    });
  }
  it('an exact-erf GELU is refused by name (Gemma uses the tanh approximation)', () => {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, hidden_act: 'gelu' }));
    assert.throws(() => loadLlama(dir), /hidden_act "gelu"/);
  });
  it('Mistral: a window as long as the context is no window; a shorter one slides on every layer', () => {
    for (const window of [null, 16, 4096]) {
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: window }));
      assert.equal(loadLlama(dir).config.sliding_window, null);
    }
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 8 }));
    assert.equal(loadLlama(dir).config.sliding_window, 8);
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
    // Per-frequency divisors that are not Llama-3's (1 … 8, rising).
    if (withRopeFreqs) tensors.push({ name: 'rope_freqs.weight', shape: [8], type: 'F32', data: Float32Array.from({ length: 8 }, (_, i) => i + 1) });
    writeGguf(path, { metadata: { ...llamaGgufMetadata(model.config, name), ...extra }, tensors });
    return path;
  };
  it('RoPE scaling qkd does not read back, sliding windows llama.cpp does not apply, and experts are refused by name', () => {
    assert.throws(() => loadLlamaGguf(write('yarn', { 'llama.rope.scaling.type': { type: 'string', value: 'yarn' } })), /RoPE scaling 'yarn'/);
    assert.throws(() => loadLlamaGguf(write('freqs', {}, true)), /rope_freqs\.weight\) that are not Llama-3's/);
    assert.throws(() => loadLlamaGguf(write('vallen', { 'llama.attention.value_length': { type: 'u32', value: 64 } })), /value_length 64 differs from key_length 16/);
    assert.throws(() => loadLlamaGguf(write('swa', { 'llama.attention.sliding_window': { type: 'u32', value: 8 } })), /sliding-window attention/);
    assert.throws(() => loadLlamaGguf(write('moe', { 'llama.expert_count': { type: 'u32', value: 8 } })), /mixture of experts/);
    assert.throws(() => loadLlamaGguf(write('arch', { 'general.architecture': { type: 'string', value: 'gptneox' } })), /architecture 'gptneox' is not supported/);
    assert.equal(loadLlamaGguf(write('plain', { 'llama.rope.scaling.type': { type: 'string', value: 'none' } })).config.hidden_size, 32);
    const linear = loadLlamaGguf(write('linear', { 'llama.rope.scaling.type': { type: 'string', value: 'linear' }, 'llama.rope.scaling.factor': { type: 'f32', value: 4 } }));
    assert.deepEqual(linear.config.rope_scaling, { rope_type: 'linear', factor: 4 });
    // A window as long as the context masks nothing.
    assert.equal(loadLlamaGguf(write('swa-full', { 'llama.attention.sliding_window': { type: 'u32', value: 16 } })).config.hidden_size, 32);
  });
});

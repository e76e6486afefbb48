// Generation with a key/value cache: feeding tokens one at a time through
// the cache gives the logits of a full forward over the whole sequence, and
// generation goes on past the context (re-running the last window).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KvCache, createLlama } from '../../src/models/llama.js';
import { generate } from '../../src/models/generate.js';
import { noGrad } from '../../src/tensor/tape.js';

const config = { vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 24 };

describe('KV cache', () => {
  const model = createLlama(config, 5);
  const ids = Int32Array.from({ length: 20 }, (_, i) => (i * 7 + 3) % 64);

  it('a prompt then one token at a time gives the full forward\'s logits at every position', () => {
    const full = noGrad(() => model.forward(ids, 1, ids.length).data);
    const cache = new KvCache(model.config);
    const prompt = 6;
    let worst = 0;
    noGrad(() => {
      const first = model.forward(ids.subarray(0, prompt), 1, prompt, { cache }).data;
      for (let i = 0; i < prompt * 64; i++) worst = Math.max(worst, Math.abs(first[i]! - full[i]!));
      for (let t = prompt; t < ids.length; t++) {
        const step = model.forward(ids.subarray(t, t + 1), 1, 1, { cache }).data;
        for (let j = 0; j < 64; j++) worst = Math.max(worst, Math.abs(step[j]! - full[t * 64 + j]!));
      }
    });
    assert.equal(cache.position, ids.length);
    assert.ok(worst < 1e-4, `largest logit difference ${worst}`);
  });

  it('greedy generation with the cache equals re-running the whole window every step, also past the context', () => {
    const steps = 30; // the context is 24: the last steps run without the cache
    const withCache = Array.from(generate(model, ids.subarray(0, 4), { steps, temperature: 0 }));
    const reference: number[] = [];
    const seq = Array.from(ids.subarray(0, 4));
    for (let s = 0; s < steps; s++) {
      const ctx = Int32Array.from(seq.slice(-config.max_position_embeddings));
      const logits = noGrad(() => model.forward(ctx, 1, ctx.length).data).subarray((ctx.length - 1) * 64, ctx.length * 64);
      let best = 0;
      for (let j = 1; j < 64; j++) if (logits[j]! > logits[best]!) best = j;
      seq.push(best);
      reference.push(best);
    }
    assert.deepEqual(withCache, reference);
  });

  it('refuses a batch of several sequences and a cache overflow', () => {
    const cache = new KvCache(model.config);
    assert.throws(() => noGrad(() => model.forward(Int32Array.from([1, 2]), 2, 1, { cache })), /a KV cache holds one sequence; the batch has 2/);
    assert.throws(() => noGrad(() => model.forward(new Int32Array(25), 1, 25, { cache })), /the KV cache holds 24 tokens/);
  });
});

describe('KV cache size', () => {
  it('generation sizes the cache for the prompt and the steps, not the whole context (a 1e9-token context would not fit)', () => {
    const long = createLlama({ ...config, max_position_embeddings: 1_000_000_000 }, 5);
    const short = createLlama(config, 5);
    const prompt = Int32Array.of(1, 2, 3);
    // Same weights, same tokens: the context only bounds what the cache may hold.
    assert.deepEqual(Array.from(generate(long, prompt, { steps: 6, temperature: 0 })), Array.from(generate(short, prompt, { steps: 6, temperature: 0 })));
    assert.equal(new KvCache(short.config, 5).capacity, 5);
    assert.throws(() => new KvCache(short.config, 25), /KV cache of 25 tokens: expected 1 to the context \(24\)/);
  });
});

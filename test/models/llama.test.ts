import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LlamaModel, createLlama, initLlamaParameters } from '../../src/models/llama.js';
import { llamaConfig, llamaParameterSpecs, type LlamaConfig } from '../../src/models/llama-config.js';
import { AdamW, clipGradNorm } from '../../src/optim/adamw.js';
import { Rng, backward, noGrad, withBackend, withFloat64, clearTape } from '../../src/tensor/index.js';
import { QkdError } from '../../src/errors.js';

const tiny: Partial<LlamaConfig> = {
  vocab_size: 32, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
};

function randomIds(n: number, vocab: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: n }, () => rng.int(vocab));
}

describe('LlamaConfig', () => {
  it('fills Hugging Face defaults', () => {
    const c = llamaConfig({ vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2 });
    assert.equal(c.num_key_value_heads, 2);
    assert.equal(c.rms_norm_eps, 1e-5);
    assert.equal(c.rope_theta, 10000);
    assert.equal(c.tie_word_embeddings, false);
  });
  it('names the bad field and the file', () => {
    assert.throws(() => llamaConfig({ ...tiny, hidden_size: -1 }, 'config.json'), (e: unknown) => e instanceof QkdError && e.field === 'hidden_size' && e.path === 'config.json' && /positive integer/.test(e.message));
    assert.throws(() => llamaConfig({ ...tiny, num_key_value_heads: 3 }), (e: unknown) => e instanceof QkdError && e.field === 'num_key_value_heads');
    assert.throws(() => llamaConfig({ ...tiny, hidden_size: 30 }), (e: unknown) => e instanceof QkdError && e.field === 'hidden_size');
    assert.throws(() => llamaConfig({ ...tiny, tie_word_embeddings: 'yes' as never }), (e: unknown) => e instanceof QkdError && e.field === 'tie_word_embeddings');
  });
});

describe('LlamaModel', () => {
  it('uses Hugging Face parameter names, shapes and count', () => {
    const c = llamaConfig(tiny);
    const names = llamaParameterSpecs(c).map((s) => s.name);
    assert.ok(names.includes('model.layers.1.self_attn.k_proj.weight'));
    assert.ok(names.includes('model.layers.0.mlp.down_proj.weight'));
    assert.ok(names.includes('lm_head.weight'));
    const model = new LlamaModel(c);
    assert.deepEqual(model.arena.get('model.layers.0.self_attn.k_proj.weight').shape, [16, 32]); // G·D × C
    const perLayer = 2 * 32 + 32 * 32 * 2 + 16 * 32 * 2 + 3 * 32 * 64;
    assert.equal(model.parameterCount, 2 * 32 * 32 + 2 * perLayer + 32);
  });

  it('ties the lm_head to the embedding when asked', () => {
    const model = createLlama({ ...tiny, tie_word_embeddings: true }, 1);
    assert.equal(model.arena.has('lm_head.weight'), false);
    assert.equal(model.lmHead.weight, model.arena.get('model.embed_tokens.weight'));
  });

  it('is causal: a later token does not change earlier logits', () => {
    const model = createLlama(tiny, 2);
    const ids = randomIds(8, 32, 3);
    const a = noGrad(() => model.forward(ids, 1, 8)).data.slice();
    ids[5] = (ids[5]! + 7) % 32;
    const b = noGrad(() => model.forward(ids, 1, 8)).data;
    for (let i = 0; i < 5 * 32; i++) assert.equal(a[i], b[i], `logit ${i} changed`);
    assert.ok(a.slice(5 * 32).some((v, i) => v !== b[5 * 32 + i]), 'later logits should change');
  });

  it('grouped-query attention equals multi-head attention with repeated kv heads', () => {
    const gqa = createLlama(tiny, 4);
    const mha = new LlamaModel(llamaConfig({ ...tiny, num_key_value_heads: 4 }));
    const D = 8;
    for (const e of mha.arena.entries) {
      const m = /self_attn\.(k|v)_proj/.exec(e.name);
      if (!m) {
        e.tensor.data.set(gqa.arena.get(e.name).data);
        continue;
      }
      const src = gqa.arena.get(e.name).data; // [2·D, C]; head h reads kv head h/2
      for (let h = 0; h < 4; h++) e.tensor.data.set(src.subarray(Math.floor(h / 2) * D * 32, (Math.floor(h / 2) + 1) * D * 32), h * D * 32);
    }
    const ids = randomIds(12, 32, 5);
    const a = noGrad(() => gqa.forward(ids, 2, 6)).data;
    const b = noGrad(() => mha.forward(ids, 2, 6)).data;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-5, `logit ${i}: ${a[i]} vs ${b[i]}`);
  });

  it('collects attention probabilities: causal rows that sum to 1', () => {
    const model = createLlama(tiny, 6);
    const probs: import('../../src/tensor/index.js').Tensor[] = [];
    noGrad(() => model.forward(randomIds(10, 32, 7), 2, 5, { attentionProbs: probs }));
    assert.equal(probs.length, 2);
    assert.deepEqual(probs[0]!.shape, [2, 4, 5, 5]);
    const P = probs[1]!.data;
    for (let row = 0; row < 2 * 4 * 5; row++) {
      const t = row % 5;
      let s = 0;
      for (let j = 0; j < 5; j++) {
        s += P[row * 5 + j]!;
        if (j > t) assert.equal(P[row * 5 + j], 0);
      }
      assert.ok(Math.abs(s - 1) < 1e-6);
    }
  });

  it('runs the fused attention unless the maps are asked for; both give the same logits and gradients', () => {
    // Also with a sliding window and soft-capped scores (Gemma 2's options).
    for (const extra of [{}, { sliding_window: 3, attn_logit_softcapping: 4 }]) {
      const model = createLlama({ ...tiny, ...extra }, 10);
      const ids = randomIds(2 * 7, 32, 11);
      const targets = randomIds(2 * 7, 32, 12);
      const ops: string[] = [];
      const remove = model.namedModules().get('model.layers.0.self_attn.o_proj')!.registerForwardHook(({ input }) => ops.push(input!.node!.inputs[0]!.node!.op));
      const run = (probs?: import('../../src/tensor/index.js').Tensor[]) => {
        model.arena.zeroGrad();
        const logits = model.forward(ids, 2, 7, probs ? { attentionProbs: probs } : {});
        backward(model.loss(logits, targets));
        return { logits: Array.from(logits.data), grad: Float32Array.from(model.arena.grad) };
      };
      const fused = run();
      const probs: import('../../src/tensor/index.js').Tensor[] = [];
      const twoOps = run(probs);
      remove();
      assert.deepEqual(ops, ['attentionFused', 'attentionApply'], 'fused without a request, the two ops with one');
      assert.equal(probs.length, 2);
      for (let i = 0; i < fused.logits.length; i++) assert.ok(Math.abs(fused.logits[i]! - twoOps.logits[i]!) < 1e-5, `logit ${i}: ${fused.logits[i]} vs ${twoOps.logits[i]}`);
      const largest = twoOps.grad.reduce((m, g) => Math.max(m, Math.abs(g)), 0);
      for (let i = 0; i < fused.grad.length; i++) assert.ok(Math.abs(fused.grad[i]! - twoOps.grad[i]!) <= 1e-5 * largest, `gradient ${i}: ${fused.grad[i]} vs ${twoOps.grad[i]}`);
    }
  });

  it('fires hooks on named submodules', () => {
    const model = createLlama(tiny, 8);
    const seen = new Map<string, readonly number[]>();
    const modules = model.namedModules();
    for (const name of ['model.layers.1.mlp', 'model.layers.0.self_attn', 'lm_head']) {
      modules.get(name)!.registerForwardHook(({ name: n, output }) => seen.set(n, output.shape));
    }
    noGrad(() => model.forward(randomIds(6, 32, 9), 1, 6));
    assert.deepEqual(seen.get('model.layers.1.mlp'), [1, 6, 32]);
    assert.deepEqual(seen.get('model.layers.0.self_attn'), [1, 6, 32]);
    assert.deepEqual(seen.get('lm_head'), [1, 6, 32]);
  });

  it('whole-model gradient matches float64 finite differences', () => {
    withBackend('reference', () =>
      withFloat64(() => {
        const model = createLlama({ vocab_size: 11, hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, initializer_range: 0.3 }, 10);
        const ids = randomIds(8, 11, 11);
        const targets = randomIds(8, 11, 12);
        const lossOf = () => model.loss(model.forward(ids, 2, 4), targets);
        backward(lossOf());
        const grad = model.arena.grad.slice();
        const rng = new Rng(13);
        for (let probe = 0; probe < 60; probe++) {
          const i = rng.int(model.arena.size);
          const saved = model.arena.data[i]!;
          const eps = 1e-6;
          model.arena.data[i] = saved + eps;
          const up = noGrad(lossOf).item();
          model.arena.data[i] = saved - eps;
          const down = noGrad(lossOf).item();
          model.arena.data[i] = saved;
          const numeric = (up - down) / (2 * eps);
          assert.ok(Math.abs(grad[i]! - numeric) <= 1e-7 + 1e-5 * Math.abs(numeric), `param ${i}: ${grad[i]} vs ${numeric}`);
        }
        clearTape();
      }),
    );
  });

  it('overfits one batch: loss below 0.05 within 150 AdamW steps', () => {
    const model = createLlama(tiny, 14);
    const opt = new AdamW(model.arena, { lr: 1e-2, weightDecay: 0 });
    const ids = randomIds(2 * 17, 32, 15);
    const inputs = new Int32Array(32);
    const targets = new Int32Array(32);
    for (let b = 0; b < 2; b++) {
      inputs.set(ids.subarray(b * 17, b * 17 + 16), b * 16);
      targets.set(ids.subarray(b * 17 + 1, b * 17 + 17), b * 16);
    }
    let first = 0;
    let last = 0;
    for (let step = 0; step < 150; step++) {
      model.arena.zeroGrad();
      const loss = model.loss(model.forward(inputs, 2, 16), targets);
      if (step === 0) first = loss.item();
      last = loss.item();
      backward(loss);
      clipGradNorm(model.arena.grad, 1);
      opt.update();
    }
    assert.ok(first > 3, `initial loss ${first} should be near ln 32 ≈ 3.47`);
    assert.ok(last < 0.05, `loss after 150 steps is ${last}`);
  });

  it('is reproducible from the seed', () => {
    const a = createLlama(tiny, 21);
    const b = createLlama(tiny, 21);
    const c = new LlamaModel(llamaConfig(tiny));
    initLlamaParameters(c, 22);
    assert.deepEqual(a.arena.data, b.arena.data);
    assert.notDeepEqual(a.arena.data, c.arena.data);
  });
});

// Minitron pruning: importance as defined (checked against a direct
// computation), the full shape reproduces the teacher exactly in every
// family, depth pruning drops the layer that does nothing, and shapes for a
// parameter budget.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { configParameters, keepLayers, measureImportance, pruneModel, shapeForParameters } from '../../src/distill/minitron.js';
import { createLlama, type LlamaModel } from '../../src/models/llama.js';
import type { LlamaConfig } from '../../src/models/llama-config.js';
import { Rng, noGrad } from '../../src/tensor/index.js';
import { QkdError } from '../../src/errors.js';

const base: Partial<LlamaConfig> = { vocab_size: 48, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2 };

function teacher(config: Partial<LlamaConfig>, seed: number): LlamaModel {
  const model = createLlama({ ...config, initializer_range: 0.2 }, seed);
  const rng = new Rng(seed + 1);
  for (const e of model.arena.entries) if (e.shape.length === 1) for (let i = 0; i < e.size; i++) e.tensor.data[i] = 0.5 + rng.uniform();
  return model;
}
function batches(n: number, B: number, T: number, seed: number): Int32Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Int32Array.from({ length: B * T }, () => rng.int(48)));
}
const logits = (m: LlamaModel, ids: Int32Array) => noGrad(() => m.forward(ids, 2, 8)).data.slice();

describe('minitron importance', () => {
  it('neuron importance is the L2 over sequences of the mean |down_proj input| (and the other aggregations)', () => {
    const model = teacher(base, 1);
    const data = batches(3, 2, 8, 2);
    const captured: Float32Array[] = [];
    const remove = model.namedModules().get('model.layers.1.mlp.down_proj')!.registerForwardHook(({ input }) => captured.push(input!.data.slice()));
    noGrad(() => data.forEach((ids) => model.forward(ids, 2, 8)));
    remove();
    const I = 40;
    const seqMeans: number[][] = [];
    for (const x of captured) for (let b = 0; b < 2; b++) seqMeans.push(Array.from({ length: I }, (_, i) => { let s = 0; for (let t = 0; t < 8; t++) s += Math.abs(x[(b * 8 + t) * I + i]!); return s / 8; }));
    const l2 = measureImportance(model, data, 2, 8).neurons[1]!;
    const mean = measureImportance(model, data, 2, 8, { sequence: 'mean', batch: 'mean' }).neurons[1]!;
    for (let i = 0; i < I; i++) {
      const want = Math.sqrt(seqMeans.reduce((a, m) => a + m[i]! ** 2, 0));
      assert.ok(Math.abs(l2[i]! - want) < 1e-9 * Math.max(1, want), `neuron ${i}`);
      const wantMean = seqMeans.reduce((a, m) => a + m[i]!, 0) / seqMeans.length;
      assert.ok(Math.abs(mean[i]! - wantMean) < 1e-9 * Math.max(1, wantMean));
    }
  });

  it('a layer that adds nothing has zero block influence, and depth pruning drops it', () => {
    const model = teacher(base, 3);
    for (const n of ['self_attn.o_proj', 'mlp.down_proj']) model.arena.get(`model.layers.2.${n}.weight`).data.fill(0);
    const imp = measureImportance(model, batches(2, 2, 8, 4), 2, 8);
    assert.ok(Math.abs(imp.blockInfluence[2]!) < 1e-6, `${imp.blockInfluence[2]}`);
    for (const l of [0, 1, 3]) assert.ok(imp.blockInfluence[l]! > 1e-3);
    const { model: pruned, report } = pruneModel(model, imp, { num_hidden_layers: 3 });
    assert.deepEqual(report.layers, [0, 1, 3]);
    const ids = batches(1, 2, 8, 5)[0]!;
    const diff = logits(pruned, ids).reduce((m, v, i) => Math.max(m, Math.abs(v - logits(model, ids)[i]!)), 0);
    assert.ok(diff < 1e-4, 'removing a layer that adds nothing changes nothing');
    // The ppl criterion with a loss that prefers dropping layer 0.
    const byLoss = pruneModel(model, imp, { num_hidden_layers: 3 }, { depth: 'ppl', blockLoss: (kept) => (kept.includes(0) ? 1 : 0) });
    assert.deepEqual(byLoss.report.layers, [1, 2, 3]);
    assert.equal(keepLayers(model, [1, 2, 3]).config.num_hidden_layers, 3);
  });
});

describe('minitron pruning', () => {
  for (const model_type of ['llama', 'qwen2', 'qwen3', 'phi3', 'gemma2'] as const) {
    it(`${model_type}: the teacher's own shape is the teacher; a smaller shape has the asked sizes and runs`, () => {
      const config = { ...base, model_type, ...(model_type === 'gemma2' ? { head_dim: 8 } : {}) };
      const t = teacher(config, 6);
      const data = batches(2, 2, 8, 7);
      const imp = measureImportance(t, data, 2, 8);
      const same = pruneModel(t, imp, {}).model;
      assert.deepEqual(Array.from(logits(same, data[0]!)), Array.from(logits(t, data[0]!)));
      const { model, report } = pruneModel(t, imp, { hidden_size: 24, num_attention_heads: 2, num_key_value_heads: 1, intermediate_size: 20, num_hidden_layers: 3 });
      assert.equal(model.config.model_type, model_type);
      assert.equal(model.config.hidden_size, 24);
      assert.equal(report.heads.length, 3);
      assert.ok(report.heads.every((h) => h.length === 2) && report.kvGroups.every((g) => g.length === 1));
      assert.equal(report.params, model.parameterCount);
      assert.ok(logits(model, data[0]!).every(Number.isFinite));
    });
  }

  it('keeps the most important heads within the kept key/value group', () => {
    const t = teacher(base, 8);
    const imp = measureImportance(t, batches(1, 2, 8, 9), 2, 8);
    imp.heads[0] = Float64Array.of(1, 2, 10, 0.5); // group 1 (heads 2, 3) wins on its best head
    const { report } = pruneModel(t, imp, { num_attention_heads: 1, num_key_value_heads: 1, hidden_size: 32 });
    assert.deepEqual(report.kvGroups[0], [1]);
    assert.deepEqual(report.heads[0], [2]);
  });

  it('finds a shape within a parameter budget and refuses impossible ones by field', () => {
    const tm = teacher(base, 10);
    const t = tm.config;
    const shape = shapeForParameters(t, Math.round(configParameters(t) / 2));
    const params = configParameters({ ...t, ...shape } as LlamaConfig);
    assert.ok(params <= configParameters(t) / 2 && params > configParameters(t) / 4, `${params} of ${configParameters(t)}`);
    assert.throws(() => pruneModel(tm, measureImportance(tm, batches(1, 2, 8, 1), 2, 8), { hidden_size: 64 }), (e: unknown) => e instanceof QkdError && e.field === 'hidden_size');
  });
});

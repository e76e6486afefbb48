// State-space (MOHAWK) students as models (docs/mohawk.md): config
// validation, save → load round trip, recurrent generation against the
// whole-sequence forward (all-SSM and hybrid), gradients reaching every
// mixer tensor, constant state size, and 4-bit packing like any model.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvCache, createLlama } from '../../src/models/llama.js';
import { llamaConfig, llamaParameterSpecs } from '../../src/models/llama-config.js';
import { configFromHfJson, loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { generate } from '../../src/models/generate.js';
import { Mamba2Mixer } from '../../src/nn/ssm-mixer.js';
import { backward, noGrad } from '../../src/tensor/tape.js';
import { quantizeLlama } from '../../src/compress/quantize-model.js';
import { saveQuantizedLlama } from '../../src/compress/quantized-io.js';
import { uniformPlan } from '../../src/swan/allocate.js';
import { QkdError } from '../../src/errors.js';

const base = { vocab_size: 48, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 16 };
const ssmConfig = { ...base, ssm: { state_size: 6, conv_kernel: 4, groups: 4, attention_layers: [] as number[] } };
const hybridConfig = { ...base, ssm: { state_size: 8, conv_kernel: 3, groups: 4, attention_layers: [1] } };
/** x and B shared by pairs of heads (as the base's two key/value heads). */
const groupedConfig = { ...base, ssm: { state_size: 6, conv_kernel: 4, groups: 2, attention_layers: [] as number[] } };

function perturbMixers(model: ReturnType<typeof createLlama>): void {
  // Away from the neutral start, so convolutions, gate, decay and D all matter.
  for (const e of model.arena.entries) {
    if (!e.name.includes('.mixer.')) continue;
    for (let i = 0; i < e.tensor.data.length; i++) e.tensor.data[i]! += 0.2 * Math.sin(1.7 * i + e.name.length);
  }
}

describe('SSM config', () => {
  it('defaults state_size to head_dim and conv_kernel to 4, and names the mixer tensors', () => {
    const c = llamaConfig({ ...base, ssm: {} as never });
    assert.deepEqual(c.ssm, { state_size: 8, conv_kernel: 4, groups: 4, attention_layers: [] });
    const names = llamaParameterSpecs(c).map((s) => s.name);
    assert.ok(names.includes('model.layers.0.mixer.x_proj.weight') && names.includes('model.layers.2.mixer.D'));
    assert.ok(!names.some((n) => n.includes('self_attn')));
  });
  it('keeps attention in the hybrid layers', () => {
    const names = llamaParameterSpecs(llamaConfig(hybridConfig)).map((s) => s.name);
    assert.ok(names.includes('model.layers.1.self_attn.q_proj.weight') && !names.includes('model.layers.1.mixer.D'));
    assert.ok(names.includes('model.layers.0.mixer.D') && !names.includes('model.layers.0.self_attn.q_proj.weight'));
  });
  it('refuses bad sections, naming the field', () => {
    const bad: [unknown, string][] = [
      [{ attention_layers: [3] }, 'ssm.attention_layers'],
      [{ attention_layers: [1, 1] }, 'ssm.attention_layers'],
      [{ state_size: 0 }, 'ssm.state_size'],
      [{ groups: 3 }, 'ssm.groups'],
      [{ groups: 0 }, 'ssm.groups'],
      [{ kernel: 4 }, 'ssm.kernel'],
      [[1], 'ssm'],
    ];
    for (const [ssm, field] of bad) {
      assert.throws(() => llamaConfig({ ...base, ssm } as never), (e: unknown) => e instanceof QkdError && e.field === field, JSON.stringify(ssm));
    }
  });
});

describe('SSM config.json', () => {
  it('refuses an ssm section under another architecture, and the architecture without one', () => {
    const json = { ...base, architectures: ['LlamaForCausalLM'], ssm: { attention_layers: [] } };
    assert.throws(() => configFromHfJson(json, 'config.json'), (e: unknown) => e instanceof QkdError && e.field === 'architectures');
    assert.throws(() => configFromHfJson({ ...base, architectures: ['QkdMohawkForCausalLM'] }, 'config.json'), (e: unknown) => e instanceof QkdError && e.field === 'ssm');
    assert.deepEqual(configFromHfJson({ ...base, architectures: ['QkdMohawkForCausalLM'], ssm: { attention_layers: [2] } }, 'config.json').ssm, { state_size: 8, conv_kernel: 4, groups: 4, attention_layers: [2] });
  });
});

describe('SSM model', () => {
  for (const [label, config] of [['all-SSM', ssmConfig], ['hybrid', hybridConfig], ['grouped', groupedConfig]] as const) {
    it(`${label}: save → load gives the same logits, under its own architecture name`, () => {
      const model = createLlama(config, 3);
      perturbMixers(model);
      const dir = mkdtempSync(join(tmpdir(), 'qkd-ssm-'));
      try {
        saveLlama(dir, model);
        const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
        assert.deepEqual(json.architectures, ['QkdMohawkForCausalLM']);
        const back = loadLlama(dir);
        assert.deepEqual(back.config, model.config);
        const ids = Int32Array.from({ length: 10 }, (_, i) => (i * 5 + 1) % 48);
        assert.deepEqual(noGrad(() => back.forward(ids, 1, 10).toArray()), noGrad(() => model.forward(ids, 1, 10).toArray()));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it(`${label}: a prompt then one token at a time through the cache gives the full forward's logits`, () => {
      const model = createLlama(config, 4);
      perturbMixers(model);
      const ids = Int32Array.from({ length: 14 }, (_, i) => (i * 11 + 2) % 48);
      const V = 48;
      const full = noGrad(() => model.forward(ids, 1, ids.length).data);
      const cache = new KvCache(model.config);
      let worst = 0;
      noGrad(() => {
        const first = model.forward(ids.subarray(0, 5), 1, 5, { cache }).data;
        for (let i = 0; i < 5 * V; i++) worst = Math.max(worst, Math.abs(first[i]! - full[i]!));
        for (let t = 5; t < ids.length; t++) {
          const step = model.forward(ids.subarray(t, t + 1), 1, 1, { cache }).data;
          for (let j = 0; j < V; j++) worst = Math.max(worst, Math.abs(step[j]! - full[t * V + j]!));
        }
      });
      assert.ok(worst < 1e-4, `largest logit difference ${worst}`);
    });
  }

  it('all-SSM: the cache has a fixed size and generation runs past max_position_embeddings with it', () => {
    const model = createLlama(ssmConfig, 6);
    const cache = new KvCache(model.config);
    const before = cache.bytesInUse;
    noGrad(() => model.forward(Int32Array.from([1, 2, 3, 4, 5]), 1, 5, { cache }));
    assert.equal(cache.bytesInUse, before);
    assert.ok(before > 0);
    const out = generate(model, Int32Array.from([1, 2]), { steps: 24, temperature: 0 });
    assert.equal(out.length, 24);
  });

  it('grouped x and B: the same function as every head holding its group\'s copy', () => {
    const grouped = createLlama(groupedConfig, 9);
    perturbMixers(grouped);
    const wide = createLlama(ssmConfig, 9);
    const H = 4;
    const G = 2;
    for (const e of wide.arena.entries) {
      const from = grouped.arena.get(e.name);
      const perGroup = /\.(x_proj\.weight|B_proj\.weight|conv_x\.weight|conv_x\.bias|conv_B\.weight|conv_B\.bias)$/.test(e.name);
      if (!perGroup) {
        e.tensor.data.set(from.data);
        continue;
      }
      // Rows of head h = rows of group ⌊h·G/H⌋.
      const rowLen = from.data.length / from.shape[0]!;
      const rowsPerHead = e.tensor.shape[0]! / H;
      for (let h = 0; h < H; h++) {
        const g = Math.floor((h * G) / H);
        e.tensor.data.set(from.data.subarray(g * rowsPerHead * rowLen, (g + 1) * rowsPerHead * rowLen), h * rowsPerHead * rowLen);
      }
    }
    assert.ok(grouped.parameterCount < wide.parameterCount);
    const ids = Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 7 + 3) % 48);
    const a = noGrad(() => grouped.forward(ids, 2, 9).data);
    const b = noGrad(() => wide.forward(ids, 2, 9).data);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst < 1e-5, `largest logit difference ${worst}`);
  });

  for (const [label, config] of [['per-head', ssmConfig], ['grouped', groupedConfig]] as const) it(`${label}: gradients reach every mixer tensor`, () => {
    const model = createLlama(config, 7);
    perturbMixers(model);
    const ids = Int32Array.from({ length: 2 * 6 }, (_, i) => (i * 3) % 48);
    const loss = model.loss(model.forward(ids, 2, 6), Int32Array.from(ids, (v) => (v + 1) % 48));
    backward(loss);
    for (const e of model.arena.entries) {
      if (!e.name.includes('.mixer.')) continue;
      const g = model.arena.get(e.name).grad!;
      let norm = 0;
      for (const v of g) norm += v * v;
      assert.ok(norm > 0, `${e.name} got no gradient`);
    }
    model.arena.zeroGrad();
    assert.ok(model.layers[0]!.attn instanceof Mamba2Mixer);
  });

  it('packs at 4 bits and loads back like any model', () => {
    const model = createLlama(hybridConfig, 8);
    const dir = mkdtempSync(join(tmpdir(), 'qkd-ssm-q-'));
    try {
      const plan = uniformPlan(model.arena.entries.filter((e) => e.shape.length === 2), 4, { groupSize: 0, symmetric: false });
      const packed = quantizeLlama(model, plan, { method: 'rtn' });
      saveQuantizedLlama(dir, packed, {});
      const back = loadLlama(dir);
      assert.deepEqual(back.config.ssm, model.config.ssm);
      const ids = Int32Array.from([1, 2, 3, 4]);
      const a = noGrad(() => back.forward(ids, 1, 4).toArray());
      assert.ok(a.every(Number.isFinite));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Whole-model PTQ and packed checkpoints: save → load gives exactly the
// dequantized weights, mixed-bit plans, GPTQ vs RTN on a tiny model, size
// accounting, greedy generation after save → load, and field-named errors
// for corrupt checkpoints and bad plans.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama, type LlamaModel } from '../../src/models/llama.js';
import { loadLlama } from '../../src/models/llama-io.js';
import { quantizeLlama, type QuantizeProgress } from '../../src/compress/quantize-model.js';
import { quantizedCheckpointBytes, saveQuantizedLlama } from '../../src/compress/quantized-io.js';
import { generate } from '../../src/models/generate.js';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors.js';
import { packedBytes, type PlanBits, type QuantPlan, type QuantScheme } from '../../src/quant/scheme.js';
import { QkdError } from '../../src/errors.js';
import { Rng, noGrad } from '../../src/tensor/index.js';

const config = { vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 40);

function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `qkd-${prefix}-`));
}

/** Every 2-D weight at `bits` (or a width picked per tensor). */
function planFor(model: LlamaModel, scheme: QuantScheme, bits: (name: string, i: number) => PlanBits): QuantPlan {
  const plan: QuantPlan = { scheme, bits: {} };
  model.arena.entries.filter((e) => e.shape.length === 2).forEach((e, i) => (plan.bits[e.name] = bits(e.name, i)));
  return plan;
}

function logits(model: LlamaModel): Float32Array {
  return noGrad(() => model.forward(ids, 2, 6)).data;
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / den);
}

/** Rewrites model.safetensors after editing its tensor list (read back raw). */
function rewrite(dir: string, edit: (tensors: TensorToWrite[]) => TensorToWrite[]): void {
  const path = join(dir, 'model.safetensors');
  const f = openSafetensors(path);
  const tensors: TensorToWrite[] = f.names.map((name) => ({ name, ...f.read(name) }));
  f.close();
  writeSafetensors(path, edit(tensors));
}

function editConfig(dir: string, edit: (json: Record<string, any>) => void): void {
  const path = join(dir, 'config.json');
  const json = JSON.parse(readFileSync(path, 'utf8'));
  edit(json);
  writeFileSync(path, JSON.stringify(json));
}

describe('quantized LLaMA checkpoints', () => {
  const model = createLlama(config, 11);

  it('RTN 4-bit per-channel: save → load gives exactly the dequantized weights; sizes agree', () => {
    const dir = tmp('q4');
    const scheme = { groupSize: 0, symmetric: false };
    const q = quantizeLlama(model, planFor(model, scheme, () => 4), { method: 'rtn' });
    const info = saveQuantizedLlama(dir, q);
    const loaded = loadLlama(dir);
    const inMemory = q.toFloatModel();
    assert.deepEqual(loaded.arena.data, inMemory.arena.data);
    assert.deepEqual(logits(loaded), logits(inMemory));
    // norms stay float32, exactly
    assert.deepEqual(loaded.arena.get('model.norm.weight').data, model.arena.get('model.norm.weight').data);
    // size: what the header says = what storage() predicts = Σ packedBytes
    assert.deepEqual(quantizedCheckpointBytes(dir), info);
    let bytes = 0, params = 0;
    for (const e of model.arena.entries) if (e.shape.length === 2) { bytes += packedBytes(e.shape[0]!, e.shape[1]!, 4, scheme); params += e.size; }
    assert.deepEqual(info, { bytes, params, avgBits: (8 * bytes) / params });
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.equal(json.quantization_config.quant_method, 'qkd');
    assert.equal(json.quantization_config.format_version, 1);
    assert.equal(json.quantization_config.method, 'rtn');
    assert.deepEqual(json.quantization_config.tensors['lm_head.weight'], { bits: 4, group_size: 0, symmetric: false });
    const f = openSafetensors(join(dir, 'model.safetensors'));
    const up = f.entry('model.layers.0.mlp.up_proj.weight.qweight');
    assert.deepEqual([up.dtype, up.shape], ['u8', [24, 8]]);
    assert.deepEqual(f.entry('model.layers.0.mlp.up_proj.weight.scales').shape, [24, 1]);
    assert.equal(f.entry('model.layers.0.mlp.up_proj.weight.scales').dtype, 'f16');
    assert.equal(f.entry('model.norm.weight').dtype, 'f32');
    f.close();
    // 4-bit is close to, but not equal to, the float model
    const d = relDiff(logits(loaded), logits(model));
    assert.ok(d > 0 && d < 0.2, `logit difference ${d}`);
  });

  for (const scheme of [{ groupSize: 8, symmetric: false }, { groupSize: 8, symmetric: true }, { groupSize: 0, symmetric: true, perTensor: true }] as QuantScheme[]) {
    it(`mixed bits {2,3,4,8,16} with ${JSON.stringify(scheme)} load and match the in-memory model`, () => {
      const dir = tmp('mixed');
      const widths: PlanBits[] = [2, 3, 4, 8, 16];
      const plan = planFor(model, scheme, (_, i) => widths[i % widths.length]!);
      const q = quantizeLlama(model, plan, { method: 'rtn' });
      const info = saveQuantizedLlama(dir, q, { note: 'mixed' });
      assert.deepEqual(quantizedCheckpointBytes(dir), info);
      const loaded = loadLlama(dir);
      assert.deepEqual(loaded.arena.data, q.toFloatModel().arena.data);
      const f = openSafetensors(join(dir, 'model.safetensors'));
      assert.equal(f.metadata.note, 'mixed');
      for (const [name, bits] of Object.entries(plan.bits)) {
        if (bits === 16) assert.equal(f.entry(name).dtype, 'f16');
        else assert.equal(f.names.includes(`${name}.zeros`), !scheme.symmetric, name);
      }
      f.close();
    });
  }

  it('greedy generation of the loaded 8-bit model equals the in-memory dequantized model', () => {
    const dir = tmp('q8');
    const tied = createLlama({ ...config, tie_word_embeddings: true }, 5);
    const q = quantizeLlama(tied, planFor(tied, { groupSize: 8, symmetric: false }, () => 8), { method: 'rtn' });
    saveQuantizedLlama(dir, q);
    const prompt = Int32Array.from([1, 2, 3]);
    const fromDisk = generate(loadLlama(dir), prompt, { steps: 20, temperature: 0 });
    const inMemory = generate(q.toFloatModel(), prompt, { steps: 20, temperature: 0 });
    assert.deepEqual(fromDisk, inMemory);
    // 8-bit barely moves the logits
    assert.ok(relDiff(logits(q.toFloatModel()), logits(tied)) < 0.01);
  });

  it('GPTQ (sequential, calibrated) beats RTN at 3 bits on the calibration distribution and leaves the input model alone', () => {
    const rng = new Rng(9);
    const tokens = Int32Array.from({ length: 600 }, () => rng.int(config.vocab_size));
    const big = createLlama({ ...config, hidden_size: 32, intermediate_size: 48 }, 3);
    const before = Float32Array.from(big.arena.data);
    const plan = planFor(big, { groupSize: 0, symmetric: false }, (name) => (name.includes('embed') ? 8 : 3));
    const seen: QuantizeProgress[] = [];
    const calibration = { tokens, batch: 4, seqLen: 16, batches: 4 };
    const gptq = quantizeLlama(big, plan, { method: 'gptq', calibration, onProgress: (p) => seen.push(p) });
    const rtn = quantizeLlama(big, plan, { method: 'rtn' });
    assert.deepEqual(big.arena.data, before);
    assert.equal(seen.length, Object.keys(plan.bits).length);
    assert.deepEqual(seen.map((p) => p.done), seen.map((_, i) => i + 1));
    assert.ok(seen.some((p) => p.method === 'gptq') && seen.find((p) => p.tensor === 'model.embed_tokens.weight')!.method === 'rtn');
    const evalIds = tokens.subarray(100, 100 + 64);
    const out = (m: LlamaModel) => noGrad(() => m.forward(evalIds, 4, 16)).data;
    const reference = out(big);
    const eG = relDiff(out(gptq.toFloatModel()), reference);
    const eR = relDiff(out(rtn.toFloatModel()), reference);
    assert.ok(eG < eR, `GPTQ logit error ${eG} vs RTN ${eR}`);
    // and the GPTQ result round-trips through a checkpoint like any other
    const dir = tmp('gptq');
    saveQuantizedLlama(dir, gptq);
    assert.deepEqual(loadLlama(dir).arena.data, gptq.toFloatModel().arena.data);
    assert.equal(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config.method, 'gptq');
  });

  describe('corrupt checkpoints give field-named errors', () => {
    const scheme = { groupSize: 8, symmetric: false };
    const q = quantizeLlama(model, planFor(model, scheme, () => 3), { method: 'rtn' });
    const X = 'model.layers.1.self_attn.o_proj.weight';
    const fresh = (): string => {
      const dir = tmp('bad');
      saveQuantizedLlama(dir, q);
      return dir;
    };
    const rejects = (dir: string, field: string, message?: RegExp) =>
      assert.throws(() => loadLlama(dir), (e: unknown) => e instanceof QkdError && e.field === field && (message === undefined || message.test(e.message)), field);

    it('wrong qweight byte width names the tensor', () => {
      const dir = fresh();
      rewrite(dir, (ts) => ts.map((t) => (t.name === `${X}.qweight` ? { ...t, shape: [16, 5], data: new Uint8Array(80) } : t)));
      rejects(dir, `${X}.qweight`, /shape \[16,5\], expected \[16,6\]/);
    });
    it('missing scales, wrong zeros dtype, out-of-range zero point', () => {
      let dir = fresh();
      rewrite(dir, (ts) => ts.filter((t) => t.name !== `${X}.scales`));
      rejects(dir, `${X}.scales`, /lacks tensor/);
      dir = fresh();
      rewrite(dir, (ts) => ts.map((t) => (t.name === `${X}.zeros` ? { ...t, dtype: 'i8' as const, data: new Int8Array(t.shape[0]! * t.shape[1]!) } : t)));
      rejects(dir, `${X}.zeros`, /dtype I8/);
      dir = fresh();
      rewrite(dir, (ts) => ts.map((t) => (t.name === `${X}.zeros` ? { ...t, data: new Uint8Array(t.shape[0]! * t.shape[1]!).fill(9) } : t)));
      rejects(dir, `${X}.zeros`, /zero point 9/);
    });
    it('config fields: bits that disagree with the data, unknown method, unknown tensor', () => {
      let dir = fresh();
      editConfig(dir, (j) => (j.quantization_config.tensors[X].bits = 4));
      rejects(dir, `${X}.qweight`);
      dir = fresh();
      editConfig(dir, (j) => (j.quantization_config.tensors[X].bits = 5));
      rejects(dir, `quantization_config.tensors.${X}.bits`);
      dir = fresh();
      editConfig(dir, (j) => (j.quantization_config.quant_method = 'gptq'));
      rejects(dir, 'quantization_config.quant_method');
      dir = fresh();
      editConfig(dir, (j) => (j.quantization_config.tensors['model.norm.weight'] = { bits: 4, group_size: 0, symmetric: false }));
      rejects(dir, 'quantization_config.tensors.model.norm.weight');
      dir = fresh();
      editConfig(dir, (j) => (j.quantization_config.tensors[X].symmetric = true));
      rejects(dir, `${X}.zeros`, /symmetric/);
    });
  });

  it('names bad plans and calibration', () => {
    const field = (f: string) => (e: unknown) => e instanceof QkdError && e.field === f;
    const scheme = { groupSize: 0, symmetric: false };
    assert.throws(() => quantizeLlama(model, { scheme, bits: { 'nope.weight': 4 } }, { method: 'rtn' }), field('bits.nope.weight'));
    assert.throws(() => quantizeLlama(model, { scheme, bits: { 'model.norm.weight': 4 } }, { method: 'rtn' }), field('bits.model.norm.weight'));
    assert.throws(() => quantizeLlama(model, { scheme, bits: { 'lm_head.weight': 5 as PlanBits } }, { method: 'rtn' }), field('bits.lm_head.weight'));
    assert.throws(() => quantizeLlama(model, { scheme: { groupSize: -2, symmetric: false }, bits: {} }, { method: 'rtn' }), field('groupSize'));
    const plan = { scheme, bits: { 'lm_head.weight': 4 as PlanBits } };
    assert.throws(() => quantizeLlama(model, plan, { method: 'gptq' }), field('calibration'));
    assert.throws(() => quantizeLlama(model, plan, { method: 'gptq', calibration: { tokens: [1, 2, 99], batch: 1, seqLen: 3, batches: 1 } }), field('calibration.tokens'));
    assert.throws(() => quantizeLlama(model, plan, { method: 'gptq', calibration: { tokens: [1, 2, 3], batch: 0, seqLen: 3, batches: 1 } }), field('calibration.batch'));
  });
});

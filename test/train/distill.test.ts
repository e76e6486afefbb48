// Distillation and KD+QAT: config defaults and validation, the phase
// schedule, fake quantization through the model, a frozen teacher, the λ
// monitor, exact resume, and the CLI path to a packed 4-bit student.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama } from '../../src/models/llama-io.js';
import { parseDistillConfig, phaseAt, fakeQuantActive, coefficient, learnedStepSizes, scaleInit } from '../../src/train/distill-config.js';
import { distill } from '../../src/train/distill.js';
import { FakeQuantController } from '../../src/distill/qat.js';
import { quantizeDequantize } from '../../src/tensor/ops/quant.js';
import { backward, noGrad } from '../../src/tensor/tape.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, shortConfig, teacherConfig } from '../helpers/distill.js';

const { dir, teacherDir, text } = distillFixture('qkd-distill-');
const config = shortConfig;

describe('distillation config', () => {
  it('defaults follow SPEC section 4', () => {
    const c = parseDistillConfig({});
    assert.equal(c.recipe, 'kd-qat');
    assert.deepEqual(c.distillation.lambda_distill, { warmup: 0.9, joint: 0.5, finetune: 0.2 });
    assert.deepEqual(c.distillation.gamma_quant, { warmup: 0.1, joint: 0.3, finetune: 0.1 });
    assert.equal(c.training.gradient_clip_norm, 0.75);
    assert.equal(c.training.warmup_share, 0.05);
    assert.equal(c.training.finetune_share, 0.1);
    assert.deepEqual(c.optimizer.betas, [0.9, 0.95]);
    assert.equal(c.optimizer.weight_decay, 0.01);
    assert.equal(c.quantization.bits, 4);
    assert.equal(c.quantization.granularity, 'channel');
    assert.equal(c.distillation.ratio_threshold, 3);
    // Tuned by issue 14's experiment: QAT over the last quarter, learned step sizes from the clip search.
    assert.equal(c.quantization.fake_quant_start, 0.75);
    assert.equal(learnedStepSizes(c), true);
    assert.equal(scaleInit(c), 'clip-search');
    assert.equal(learnedStepSizes(parseDistillConfig({ quantization: { format: 'Q4_K_M' } })), false, 'a ggml grid refits its own scales');
    assert.equal(learnedStepSizes(parseDistillConfig({ recipe: 'kd' })), false);
  });

  it('phases, coefficients and the fake-quantization switch', () => {
    const c = parseDistillConfig({ training: { steps: 100 } });
    assert.equal(phaseAt(c, 1), 'warmup');
    assert.equal(phaseAt(c, 5), 'warmup');
    assert.equal(phaseAt(c, 6), 'joint');
    assert.equal(phaseAt(c, 90), 'joint');
    assert.equal(phaseAt(c, 91), 'finetune');
    assert.equal(coefficient(c.distillation.lambda_distill, 'joint'), 0.5);
    assert.equal(coefficient(0.7, 'finetune'), 0.7);
    assert.equal(fakeQuantActive(c, 75), false);
    assert.equal(fakeQuantActive(c, 76), true);
    const spec = parseDistillConfig({ training: { steps: 100 }, quantization: { fake_quant_start: null } });
    assert.equal(fakeQuantActive(spec, 5), false, "SPEC section 4's schedule: after warm-up");
    assert.equal(fakeQuantActive(spec, 6), true);
    assert.equal(fakeQuantActive(parseDistillConfig({ recipe: 'kd' }), 50), false);
  });

  it('names the bad field', () => {
    const bad = (input: unknown, field: string) => assert.throws(() => parseDistillConfig(input, 'x.yaml'), (e: unknown) => e instanceof QkdError && e.field === field && e.path === 'x.yaml');
    bad({ distillation: { temprature: 4 } }, 'distillation');
    bad({ distillation: { temperature: -1 } }, 'distillation.temperature');
    bad({ quantization: { bits: 9 } }, 'quantization.bits');
    bad({ training: { warmup_share: 0.5, finetune_share: 0.5 } }, 'training.finetune_share');
    bad({ student: { preset: 'huge' } }, 'student.preset');
    bad({ recipe: 'magic' }, 'recipe');
  });
});

describe('fake quantization controller', () => {
  it('quantizes every 2-D weight in forward when on, with a straight-through gradient', () => {
    const model = createLlama(teacherConfig, 3);
    const qat = new FakeQuantController(model, { bits: 4, symmetric: false, granularity: 'channel', groupSize: 128 });
    assert.equal(qat.weights.size, model.arena.entries.filter((e) => e.shape.length === 2).length);
    const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 37) % 256);
    const plain = noGrad(() => model.forward(ids, 1, 16)).data.slice();
    qat.enabled = true;
    const fq = noGrad(() => model.forward(ids, 1, 16)).data.slice();
    // Reference: a copy of the model with quantize-dequantized weights.
    const ref = createLlama(teacherConfig, 3);
    for (const e of ref.arena.entries) if (e.shape.length === 2) quantizeDequantize(e.tensor.data.slice(), e.shape[0]!, e.shape[1]!, { bits: 4 }, e.tensor.data, null);
    const want = noGrad(() => ref.forward(ids, 1, 16)).data;
    let worst = 0;
    fq.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - want[i]!))));
    assert.ok(worst < 1e-5, `fake-quantized forward differs by ${worst}`);
    assert.ok(plain.some((v, i) => Math.abs(v - fq[i]!) > 1e-4), 'fake quantization changes the output');
    model.arena.zeroGrad();
    backward(model.loss(model.forward(ids, 1, 16), ids));
    assert.ok(model.arena.grad.some((g) => g !== 0), 'gradients reach the float weights');
    qat.detach();
  });

  it('L_quant gradient is −2(ŵ − w)/‖w‖² per weight', () => {
    const model = createLlama(teacherConfig, 5);
    const qat = new FakeQuantController(model, { bits: 3, symmetric: false, granularity: 'channel', groupSize: 128 });
    model.arena.zeroGrad();
    const loss = qat.quantLoss();
    backward(loss);
    const w = model.arena.get('model.layers.0.mlp.up_proj.weight');
    const target = new Float32Array(w.size);
    quantizeDequantize(w.data, w.shape[0]!, w.shape[1]!, { bits: 3 }, target, null);
    let n2 = 0;
    for (const v of w.data) n2 += v * v;
    const g = w.grad!;
    for (const i of [0, 7, 100, w.size - 1]) assert.ok(Math.abs(g[i]! - (-2 * (target[i]! - w.data[i]!)) / n2) < 1e-6);
    assert.ok(loss.item() > 0);
    qat.detach();
  });
});

describe('distill', () => {
  it('kd-qat: the teacher stays frozen, every component is logged, a packed student is written', async () => {
    const out = join(dir, 'run');
    const before = loadLlama(teacherDir).arena.data.slice();
    const notes: string[] = [];
    // SPEC section 4's schedule on the min/max grid, so L_quant is logged from the first step.
    const r = await distill({ teacher: teacherDir, text, outDir: out, config: config({ quantization: { fake_quant_start: null, learned_step_size: false }, distillation: { feature_layers: 'all', attention_weight: 0.5, ratio_threshold: 1e-12 } }), onNote: (n) => notes.push(n) });
    assert.deepEqual(loadLlama(teacherDir).arena.data, before);
    assert.ok(notes.some((n) => n.startsWith('teacher soft-target entropy at τ=4')), notes.join('\n'));
    assert.ok(notes.some((n) => /λ lowered 0\.500 → 0\.450/.test(n)), `λ monitor: ${notes.join('\n')}`);
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const step1 = lines.find((l) => l.step === 1 && 'loss' in l);
    for (const key of ['task', 'logit_kd', 'feature_kd', 'attention_kd', 'distill', 'quant', 'lambda', 'gamma', 'fake_quant']) assert.ok(key in step1, key);
    assert.equal(step1.fake_quant, 0);
    assert.equal(lines.find((l) => l.step === 8 && 'loss' in l).fake_quant, 1);
    assert.ok(lines.some((l) => 'val_kl' in l));
    assert.ok(lines.some((l) => typeof l.note === 'string'));
    const student = loadLlama(out);
    assert.equal(student.config.num_hidden_layers, 2);
    const q = loadLlama(join(out, 'quantized'));
    assert.equal(q.config.num_hidden_layers, 2);
    assert.ok(r.quantized_avg_bits > 4 && r.quantized_avg_bits < 5, String(r.quantized_avg_bits));
  });

  it('resumes exactly: a run stopped at step 6 and resumed ends like an uninterrupted run', async () => {
    const c = config({ distillation: { feature_layers: ['model.layers.1'] }, student: { model: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1 }, init: 'random' } });
    const full = join(dir, 'full');
    await distill({ teacher: teacherDir, text, outDir: full, config: c });
    const part = join(dir, 'part');
    let steps = 0;
    const first = await distill({ teacher: teacherDir, text, outDir: part, config: c, onStep: () => steps++, shouldStop: () => steps >= 6 });
    assert.equal(first.interrupted, true);
    await distill({ teacher: teacherDir, text, outDir: part, config: c, resume: true });
    const read = (d: string) => readFileSync(join(d, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.step === 12)[0];
    const a = read(full);
    const b = read(part);
    for (const key of ['loss', 'task', 'distill', 'quant', 'feature_kd', 'val_loss']) assert.equal(b[key], a[key], key);
    assert.deepEqual(loadLlama(part).arena.data, loadLlama(full).arena.data);
  });

  it('λ set below the monitor\'s floor is kept: λ = 0 turns the teacher\'s term off', async () => {
    const out = join(dir, 'lambda-zero');
    await distill({ teacher: teacherDir, text, outDir: out, config: config({ recipe: 'kd', distillation: { lambda_distill: 0 } }) });
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'loss' in l);
    assert.ok(lines.length > 0 && lines.every((l) => l.lambda === 0 && Math.abs(l.loss - l.task) < 1e-6), 'λ 0 at every step and the loss is the task loss');
  });

  it('a student deeper than its teacher distills when no layers are matched (and is refused by name when they are)', async () => {
    const deep = { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 6, num_attention_heads: 2, num_key_value_heads: 1 };
    const r = await distill({ teacher: teacherDir, text, outDir: join(dir, 'deeper'), config: config({ recipe: 'kd', student: { init: 'random', model: deep } }) });
    assert.equal(r.interrupted, false);
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: join(dir, 'deeper-feat'), config: config({ recipe: 'kd', student: { init: 'random', model: deep }, distillation: { feature_layers: 'all' } }) }), (e: unknown) => e instanceof QkdError && e.field === 'num_hidden_layers');
  });

  it('offline KD trains from a top-k soft-target cache built once and reused', async () => {
    const out = join(dir, 'offline');
    const c = config({ recipe: 'kd', distillation: { soft_target_cache: { top_k: 8 } } });
    const notes: string[] = [];
    await distill({ teacher: teacherDir, text, outDir: out, config: c, onNote: (n) => notes.push(n) });
    assert.ok(notes.some((n) => /soft-target cache: \d+ windows × 16 tokens, top-8 of 256, 34 bytes\/token/.test(n)), notes.join('\n'));
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'loss' in l);
    assert.ok(lines.filter((l) => l.offline_kd === 1).length >= 10, 'batches use the cache');
    const again: string[] = [];
    // --force replaces the run but keeps the validated soft-target cache.
    await distill({ teacher: teacherDir, text, outDir: out, config: c, force: true, onNote: (n) => again.push(n) });
    assert.ok(!again.some((n) => n.startsWith('soft-target cache')), 'the cache is reused');
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: join(dir, 'offline-bad'), config: config({ distillation: { soft_target_cache: { top_k: 8 }, feature_layers: 'all' } }) }), (e: unknown) => e instanceof QkdError && e.field === 'distillation.soft_target_cache');
  });

  it('the CLI distills and the packed student evaluates', () => {
    const out = join(dir, 'cli');
    const yaml = join(dir, 'd.yaml');
    writeFileSync(yaml, 'training:\n  steps: 8\n  batch_size: 2\n  seq_len: 16\n  eval_every: 4\n  checkpoint_every: 8\nrecipe: kd\n');
    const r = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', teacherDir, '--out', out, '--config', yaml, '--recipe', 'kd-qat', '--temperature', '3'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(j.recipe, 'kd-qat');
    assert.equal(j.steps, 8);
    assert.match(r.stderr, /teacher soft-target entropy at τ=3/);
    const e = spawnSync(process.execPath, ['bin/qkd.js', 'eval', '--model', j.quantized_dir], { encoding: 'utf8' });
    assert.equal(e.status, 0, e.stderr);
    const bad = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', teacherDir, '--out', out, '--config', yaml, '--init', 'magic'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--init takes one of pruned, svd, random, minitron, got 'magic'/);
  });
});

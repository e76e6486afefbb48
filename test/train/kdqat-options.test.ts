// Issue 14's KD+QAT options end to end: learned step sizes (LSQ+) pack into
// exactly the weights the learned quantizer gives and resume exactly; QAT
// fine-tuning of an existing student (student.from); confidence-aware and
// reverse KL; logit-only KD; GPTQ and clip-search starts; refusals by field.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama, loadLlama } from '../../src/models/llama-io.js';
import { parseDistillConfig } from '../../src/train/distill-config.js';
import { distill } from '../../src/train/distill.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { learnedFakeQuantize } from '../../src/tensor/ops/quant.js';
import { confidenceKd, logitKd, reverseLogitKd } from '../../src/distill/losses.js';
import { klDivergence } from '../../src/tensor/ops/loss.js';
import { checkOp } from '../helpers/check-op.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, shortConfig, teacherConfig } from '../helpers/distill.js';

const { dir, teacherDir, text } = distillFixture('qkd-kdqat-');
const config = shortConfig;
const metrics = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>).filter((l) => 'loss' in l);

describe('KD+QAT options (issue 14)', () => {
  it('learned step sizes: the packed student is exactly the learned quantizer of the final weights, and a resumed run ends alike', async () => {
    const c = config({ quantization: { bits: 3, learned_step_size: true, granularity: 'group', group_size: 16 } });
    const out = join(dir, 'lsq');
    await distill({ teacher: teacherDir, text, outDir: out, config: c });
    const fp32 = loadLlama(out);
    const packed = loadLlama(join(out, 'quantized'));
    const extra = openSafetensors(join(out, 'checkpoint-12', 'extra.safetensors'));
    const name = 'model.layers.1.mlp.down_proj.weight';
    const w = fp32.arena.get(name);
    const logStep = extra.readFloat32(`lsq.${name}.log_step`);
    const offset = extra.readFloat32(`lsq.${name}.offset`);
    const expected = learnedFakeQuantize(new Tensor(w.shape, w.data), new Tensor(logStep.shape, logStep.data), new Tensor(offset.shape, offset.data), { bits: 3, symmetric: false, groupSize: 16 });
    assert.deepEqual(Array.from(packed.arena.get(name).data), Array.from(expected.data));
    const saved = JSON.parse(readFileSync(join(out, 'quantized', 'config.json'), 'utf8'));
    assert.equal(saved.quantization_config.method, 'lsq');
    let steps = 0;
    const part = join(dir, 'lsq-part');
    await distill({ teacher: teacherDir, text, outDir: part, config: c, onStep: () => steps++, shouldStop: () => steps >= 6 });
    await distill({ teacher: teacherDir, text, outDir: part, config: c, resume: true });
    assert.deepEqual(Array.from(loadLlama(join(part, 'quantized')).arena.data), Array.from(packed.arena.data), 'resume restores the step sizes and whether they started');
  });

  it('learned step sizes start with fake quantization: no L_quant on an undefined grid before, a late start begins at the weights of that step', async () => {
    const out = join(dir, 'lsq-late');
    await distill({ teacher: teacherDir, text, outDir: out, config: config({ quantization: { bits: 3, learned_step_size: true, fake_quant_start: 0.5 } }) });
    const rows = metrics(out);
    assert.ok(rows.filter((r) => r.fake_quant === 0).every((r) => r.quant === undefined), 'no L_quant before the step sizes exist');
    const on = rows.filter((r) => r.fake_quant === 1);
    assert.equal(on[0]!.step, 7);
    // Started from RTN of the step-6 weights: the rounding error is RTN's, far below the 1/‖w‖-scale of an unset step of 1.
    assert.ok(on.every((r) => r.quant! < 0.5), JSON.stringify(on.map((r) => r.quant)));
  });

  it('QAT fine-tuning of an existing student: its shape and weights, every option switchable', async () => {
    const kd = join(dir, 'kd');
    await distill({ teacher: teacherDir, text, outDir: kd, config: config({ recipe: 'kd', student: { preset: null, model: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2 }, init: 'random' } }) });
    for (const [label, extra] of [
      ['gptq', { quantization: { bits: 2, learned_step_size: true, scale_init: 'gptq', fake_quant_start: 0 } }],
      ['clip', { quantization: { bits: 2, learned_step_size: true, scale_init: 'clip-search', fake_quant_start: 0 }, distillation: { kl: 'confidence' } }],
      ['logit', { quantization: { bits: 2, fake_quant_start: 0 }, distillation: { task_weight: 0, kl: 'reverse' } }],
    ] as const) {
      const out = join(dir, `ft-${label}`);
      const notes: string[] = [];
      await distill({ teacher: teacherDir, text, outDir: out, config: config({ ...extra, training: { steps: 4, batch_size: 2, seq_len: 16, eval_every: 2, eval_batches: 2, checkpoint_every: 4, warmup_share: 0 }, student: { from: kd } }), onNote: (n) => notes.push(n) });
      const student = loadLlama(out);
      assert.equal(student.config.intermediate_size, 48, `${label}: the existing student's shape`);
      const rows = metrics(out);
      assert.ok(rows.every((r) => r.fake_quant === 1 && Number.isFinite(r.loss)), `${label}: fake quantization from the first step`);
      if (label === 'clip') assert.ok(notes.some((n) => /confidence-aware KL: .* c = 0\.\d+/.test(n)), notes.join('\n'));
      if (label === 'clip') assert.ok(notes.some((n) => /^settings: recipe kd-qat; student from .*; fake quantization after step 0 on 2-bit asymmetric per channel; learned step sizes \(LSQ\+\) from clip-search; confidence KL at τ=4; task weight 1$/.test(n)), notes.join('\n'));
      if (label === 'logit') {
        // Logit-only KD: the loss is λ·L_distill + γ·L_quant, the task loss is logged only.
        for (const r of rows) assert.ok(Math.abs(r.loss! - (r.lambda! * r.distill! + r.gamma! * r.quant!)) < 1e-4 * Math.max(1, r.loss!), JSON.stringify(r));
      }
    }
    const other = join(dir, 'other-vocab');
    saveLlama(other, createLlama({ ...teacherConfig, vocab_size: 300, num_hidden_layers: 1 }, 3));
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: join(dir, 'ft-bad'), config: config({ student: { from: other } }) }), (e: unknown) => e instanceof QkdError && e.field === 'student.from' && /300 tokens/.test(e.message));
  });

  it('teacher correction fine-tunes a copy of the teacher first, reuses it on a rerun, and leaves the given teacher alone', async () => {
    const before = Array.from(loadLlama(teacherDir).arena.data);
    const out = join(dir, 'corrected');
    const notes: string[] = [];
    const c = config({ recipe: 'kd', student: { init: 'minitron' }, distillation: { teacher_correction: { steps: 3 } } });
    await distill({ teacher: teacherDir, text, outDir: out, config: c, onNote: (n) => notes.push(n) });
    assert.ok(notes.some((n) => /teacher correction: fine-tuning the teacher 3 steps at lr 0\.0003/.test(n)), notes.join('\n'));
    const corrected = loadLlama(join(out, 'teacher-corrected'));
    assert.notDeepEqual(Array.from(corrected.arena.data), before, 'the corrected teacher moved');
    assert.deepEqual(Array.from(loadLlama(teacherDir).arena.data), before, 'the given teacher is untouched');
    const again: string[] = [];
    await distill({ teacher: teacherDir, text, outDir: out, config: c, force: true, onNote: (n) => again.push(n) });
    assert.ok(again.some((n) => /teacher correction: reusing/.test(n)), again.join('\n'));
  });

  it('a narrower minitron or svd student keeps the teacher\'s head dim, so heads stay whole', async () => {
    for (const init of ['minitron', 'svd'] as const) {
      const out = join(dir, `narrow-${init}`);
      await distill({ teacher: teacherDir, text, outDir: out, config: config({ recipe: 'kd', training: { steps: 2, batch_size: 2, seq_len: 16, eval_every: 2, eval_batches: 1, checkpoint_every: 2 }, student: { init, model: { hidden_size: 24, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1 } } }) });
      const s = loadLlama(out);
      assert.equal(s.config.head_dim, 8, init);
      assert.deepEqual(s.arena.get('model.layers.0.self_attn.q_proj.weight').shape, [16, 24]);
    }
  });

  it('refuses contradictory settings by field', async () => {
    const bad = (input: Record<string, unknown>, field: string) => assert.throws(() => parseDistillConfig(input, 'x.yaml'), (e: unknown) => e instanceof QkdError && e.field === field, field);
    bad({ quantization: { learned_step_size: true, format: 'Q4_K_M' } }, 'quantization.learned_step_size');
    bad({ quantization: { scale_init: 'gptq', learned_step_size: false } }, 'quantization.scale_init');
    bad({ recipe: 'qat', distillation: { task_weight: 0 } }, 'distillation.task_weight');
    bad({ student: { from: 'x', preset: 'tiny' } }, 'student.from');
    bad({ distillation: { kl: 'jensen' } }, 'distillation.kl');
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: join(dir, 'cache-rkl'), config: config({ recipe: 'kd', distillation: { kl: 'reverse', soft_target_cache: { top_k: 8 } } }) }), (e: unknown) => e instanceof QkdError && e.field === 'distillation.kl');
  });
});

describe('reverse and confidence-aware KL', () => {
  it('reverse KD is KL(student ‖ teacher) with the gradient to the student only', () => {
    checkOp('reverseLogitKd', ([t, s]) => reverseLogitKd(t!, s!, 2), [{ shape: [3, 5], noGrad: true }, { shape: [3, 5] }]);
    const t = new Tensor([2, 4], Float32Array.of(1, 0, -1, 2, 0.5, 0.5, 0, -2));
    const s = new Tensor([2, 4], Float32Array.of(0, 1, 0, 1, -1, 2, 0, 0));
    assert.ok(Math.abs(reverseLogitKd(t, s, 3).item() - klDivergence(s, t, { temperature: 3 }).item()) < 1e-7);
  });
  it('confidence-aware KD mixes forward and reverse by the teacher confidence', () => {
    checkOp('confidenceKd', ([t, s]) => confidenceKd(t!, s!, 1.5, 0.3), [{ shape: [3, 5], noGrad: true }, { shape: [3, 5] }]);
    const t = new Tensor([1, 4], Float32Array.of(3, 0, -1, 0));
    const s = new Tensor([1, 4], Float32Array.of(0, 1, 0, 1));
    const mixed = confidenceKd(t, s, 1, 0.25).item();
    assert.ok(Math.abs(mixed - (0.25 * logitKd(t, s, 1).item() + 0.75 * reverseLogitKd(t, s, 1).item())) < 1e-6);
    assert.throws(() => confidenceKd(t, s, 1, 1.5), (e: unknown) => e instanceof QkdError && e.field === 'confidence');
  });
});

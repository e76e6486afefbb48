// Recipe mohawk (docs/mohawk.md): the student's initialisation from the
// teacher's attention, the stage split, the three stages end to end
// (alignment losses fall, only mixers move in stages 1–2, a quantized SSM
// student comes out), exact resume across the stage boundaries, and the
// config refusals.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama } from '../../src/models/llama-io.js';
import { modelDirectory } from '../../src/models/load-any.js';
import { Mamba2Mixer } from '../../src/nn/ssm-mixer.js';
import { mohawkStudent, mostSensitiveLayers } from '../../src/distill/mohawk-init.js';
import { distill } from '../../src/train/distill.js';
import { AlignmentRecipe, mohawkStageSteps, type MohawkResult } from '../../src/train/mohawk.js';
import { noGrad } from '../../src/tensor/tape.js';
import { parseDistillConfig } from '../../src/train/distill-config.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, runMetrics, shortConfig, teacherConfig } from '../helpers/distill.js';

const fixture = distillFixture('qkd-mohawk-');
after(() => rmSync(fixture.dir, { recursive: true, force: true }));

const mohawkConfig = (extra: Record<string, unknown> = {}) =>
  shortConfig({ recipe: 'mohawk', training: { steps: 16, batch_size: 2, seq_len: 16, eval_every: 8, eval_batches: 2, checkpoint_every: 4 }, mohawk: { matrix_share: 0.25, hidden_share: 0.25 }, student: { model: { ...shape, num_hidden_layers: 2 } }, ...extra });
const shape = { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2 };

describe('mohawk student init', () => {
  const teacher = createLlama(teacherConfig, 3);
  it('copies Q/√d → C, K → B, V → x (per key/value group by default), O → out, and every other tensor', () => {
    const student = mohawkStudent(teacher, { attention_layers: [2] }, 1);
    const t = (n: string) => teacher.arena.get(n).data;
    const s = (n: string) => student.arena.get(n).data;
    const C = 32;
    const D = 8;
    const q = t('model.layers.0.self_attn.q_proj.weight');
    s('model.layers.0.mixer.C_proj.weight').forEach((v, i) => assert.ok(Math.abs(v - q[i]! / Math.sqrt(D)) <= 1e-7 * Math.abs(q[i]!) + 1e-12));
    assert.deepEqual(s('model.layers.0.mixer.out_proj.weight'), t('model.layers.0.self_attn.o_proj.weight'));
    // two groups, as the teacher's two kv heads: B and x are exactly K and V
    assert.equal(student.config.ssm!.groups, 2);
    assert.deepEqual(s('model.layers.0.mixer.B_proj.weight'), t('model.layers.0.self_attn.k_proj.weight'));
    assert.deepEqual(s('model.layers.0.mixer.x_proj.weight'), t('model.layers.0.self_attn.v_proj.weight'));
    assert.deepEqual(s('model.layers.2.self_attn.q_proj.weight'), t('model.layers.2.self_attn.q_proj.weight'));
    assert.deepEqual(s('model.layers.1.mlp.down_proj.weight'), t('model.layers.1.mlp.down_proj.weight'));
    assert.ok(student.layers[0]!.attn instanceof Mamba2Mixer && !(student.layers[2]!.attn instanceof Mamba2Mixer));
    // one group per head: query head 3 reads kv head 1 (4 heads over 2 kv heads)
    const perHead = mohawkStudent(teacher, { groups: 4 }, 1);
    const p = (n: string) => perHead.arena.get(n).data;
    assert.deepEqual(p('model.layers.0.mixer.B_proj.weight').subarray(3 * D * C, 4 * D * C), t('model.layers.0.self_attn.k_proj.weight').subarray(1 * D * C, 2 * D * C));
    assert.deepEqual(p('model.layers.0.mixer.x_proj.weight').subarray(2 * D * C, 3 * D * C), t('model.layers.0.self_attn.v_proj.weight').subarray(1 * D * C, 2 * D * C));
    // the grouped student starts as the per-head one (the same function, fewer parameters)
    assert.ok(student.parameterCount < mohawkStudent(teacher, { groups: 4, attention_layers: [2] }, 1).parameterCount);
    const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 5 + 1) % 40);
    const a = noGrad(() => student.forward(ids, 1, 12).data);
    const b = noGrad(() => mohawkStudent(teacher, { groups: 4, attention_layers: [2] }, 1).forward(ids, 1, 12).data);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst < 1e-5, `largest logit difference ${worst}`);
  });
  it('picks the most sensitive layers in ascending order', () => {
    assert.deepEqual(mostSensitiveLayers([0.1, 0.9, 0.3, 0.8], 2), [1, 3]);
    assert.throws(() => mostSensitiveLayers([0.1], 2), QkdError);
  });
});

describe('mohawk stage split', () => {
  it('gives stage 3 whatever stages 1 and 2 do not take, so ablations train on equal tokens', () => {
    const c = (stages: number[]) => parseDistillConfig({ recipe: 'mohawk', training: { steps: 100 }, mohawk: { stages } });
    assert.deepEqual(mohawkStageSteps(c([1, 2, 3])), { 1: 3, 2: 5, 3: 92 });
    assert.deepEqual(mohawkStageSteps(c([2, 3])), { 1: 0, 2: 5, 3: 95 });
    assert.deepEqual(mohawkStageSteps(c([3])), { 1: 0, 2: 0, 3: 100 });
  });
  it('refuses stage selections without stage 3 and mohawk settings on other recipes', () => {
    assert.throws(() => parseDistillConfig({ recipe: 'mohawk', mohawk: { stages: [1, 2] } }), (e: unknown) => e instanceof QkdError && e.field === 'mohawk.stages');
    assert.throws(() => parseDistillConfig({ recipe: 'mohawk', student: { from: 'x' } }), (e: unknown) => e instanceof QkdError && e.field === 'student.from');
    assert.throws(() => parseDistillConfig({ recipe: 'kd', student: { attention_layers: [1] } }), (e: unknown) => e instanceof QkdError && e.field === 'recipe');
  });
});

describe('recipe mohawk end to end', () => {
  const straight = join(fixture.dir, 'straight');
  let result: MohawkResult;

  it('runs three stages: the alignment losses fall, stages 1–2 move only the mixers, a 4-bit SSM student comes out', async () => {
    result = (await distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: straight, config: mohawkConfig() })) as MohawkResult;
    assert.equal(result.recipe, 'mohawk');
    assert.deepEqual(result.mohawk.stages.map((s) => [s.stage, s.steps]), [[1, 4], [2, 4], [3, 8]]);
    assert.deepEqual(result.mohawk.teacher_layers, [0, 2]);
    // Each stage's objective on one fixed batch, before and after the stage.
    const teacher = loadLlama(fixture.teacherDir);
    const ids = Int32Array.from(Buffer.from(fixture.text.slice(0, 64), 'latin1'));
    const batch = { inputs: ids.subarray(0, 32), targets: ids.subarray(1, 33), starts: Int32Array.of(0, 16), B: 2, T: 16 };
    const pairs = [{ student: 0, teacher: 0 }, { student: 1, teacher: 2 }];
    const stageModels = ['init', 'stage1', 'stage2'].map((d) => loadLlama(modelDirectory(join(straight, 'mohawk', d))));
    for (const stage of [1, 2] as const) {
      assert.equal(runMetrics(join(straight, 'mohawk', `stage${stage}`)).filter((m) => (stage === 1 ? 'matrix' : 'hidden') in m).length, 4);
      const objective = new AlignmentRecipe(stage, teacher, 'id', pairs);
      const before = noGrad(() => objective.loss(stageModels[stage - 1]!, batch).loss.data[0]!);
      const afterStage = noGrad(() => objective.loss(stageModels[stage]!, batch).loss.data[0]!);
      assert.ok(afterStage < before, `stage ${stage}: ${before} → ${afterStage}`);
    }
    const init = loadLlama(join(straight, 'mohawk', 'init'));
    const aligned = loadLlama(modelDirectory(join(straight, 'mohawk', 'stage2')));
    for (const e of init.arena.entries) {
      const moved = e.tensor.data.some((v, i) => v !== aligned.arena.get(e.name).data[i]);
      assert.equal(moved, e.name.includes('.mixer.'), `${e.name} ${moved ? 'moved' : 'stayed'}`);
    }
    const student = loadLlama(modelDirectory(straight));
    assert.deepEqual(student.config.ssm, { state_size: 8, conv_kernel: 4, groups: 2, attention_layers: [] });
    const packed = loadLlama(join(straight, 'quantized'));
    assert.deepEqual(packed.config.ssm, student.config.ssm);
    assert.ok(existsSync(join(straight, 'mohawk', 'report.json')));
    assert.ok(Number.isFinite(result.val_loss));
  });

  it('resumes exactly after interruptions inside stage 2 and stage 3', async () => {
    const out = join(fixture.dir, 'interrupted');
    let steps = 0;
    const stopAt = new Set([6, 11]); // stage 2's 2nd step, stage 3's 3rd
    const stopper = () => stopAt.has(steps);
    const onStep = () => void steps++;
    let r = await distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: out, config: mohawkConfig(), onStep, shouldStop: stopper });
    assert.equal(r.interrupted, true);
    r = await distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: out, config: mohawkConfig(), resume: true, onStep, shouldStop: stopper });
    assert.equal(r.interrupted, true);
    r = await distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: out, config: mohawkConfig(), resume: true, onStep });
    assert.equal(r.interrupted, false);
    const a = loadLlama(modelDirectory(straight));
    const b = loadLlama(modelDirectory(out));
    assert.deepEqual(Array.from(b.arena.data), Array.from(a.arena.data));
  });

  it('refuses a changed config on resume and a used directory without --force', async () => {
    await assert.rejects(distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: straight, config: mohawkConfig({ mohawk: { matrix_share: 0.5, hidden_share: 0.25 } }), resume: true }), QkdError);
    await assert.rejects(distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: straight, config: mohawkConfig() }), (e: unknown) => e instanceof QkdError && /refusing/.test(e.message));
    // A student with attention in every layer has nothing to distill, and nothing is written for it.
    const none = join(fixture.dir, 'all-attention');
    await assert.rejects(distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: none, config: mohawkConfig({ student: { model: { ...shape, num_hidden_layers: 2 }, attention_layers: [0, 1] } }) }), (e: unknown) => e instanceof QkdError && e.field === 'student.attention_layers');
    assert.equal(existsSync(join(none, 'mohawk')), false);
    await assert.rejects(distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: none, config: mohawkConfig({ student: { model: { ...shape, hidden_size: 48, num_hidden_layers: 2 } } }) }), (e: unknown) => e instanceof QkdError && e.field === 'student.model');
    await assert.rejects(distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: none, config: mohawkConfig({ student: { model: { ...shape, intermediate_size: 80, num_hidden_layers: 2 } } }) }), (e: unknown) => e instanceof QkdError && e.field === 'student.model.intermediate_size');
    assert.equal(existsSync(join(none, 'mohawk')), false);
  });

  it('a narrower MLP (parameter matching) keeps the teacher\'s neurons with the largest weight norms', async () => {
    const out = join(fixture.dir, 'narrow');
    await distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: out, config: mohawkConfig({ student: { model: { ...shape, intermediate_size: 48, num_hidden_layers: 2 } }, mohawk: { stages: [3] }, training: { steps: 2, batch_size: 2, seq_len: 16, eval_every: 2, eval_batches: 1, checkpoint_every: 2 } }) });
    const init = loadLlama(join(out, 'mohawk', 'init'));
    const teacher = loadLlama(fixture.teacherDir);
    assert.equal(init.config.intermediate_size, 48);
    // Every kept down_proj column is one of the teacher layer's (times the folded norm: none on the down side).
    const tDown = teacher.arena.get('model.layers.2.mlp.down_proj.weight');
    const sDown = init.arena.get('model.layers.1.mlp.down_proj.weight');
    const C = 32;
    const column = (m: typeof tDown, I: number, i: number) => Array.from({ length: C }, (_, r) => m.data[r * I + i]!);
    const teacherColumns = Array.from({ length: 64 }, (_, i) => column(tDown, 64, i).join(','));
    for (let i = 0; i < 48; i++) assert.ok(teacherColumns.includes(column(sDown, 48, i).join(',')), `column ${i} is not a teacher neuron`);
    assert.equal(init.config.ssm!.groups, 2);
  });

  it('stage 3 by kd-qat trains the state-space student with fake quantization', async () => {
    const out = join(fixture.dir, 'qat');
    const r = (await distill({ teacher: fixture.teacherDir, text: fixture.text, outDir: out, config: mohawkConfig({ mohawk: { matrix_share: 0.25, hidden_share: 0.25, stage3: 'kd-qat', stages: [2, 3] }, quantization: { fake_quant_start: 0 } }) })) as MohawkResult;
    assert.deepEqual(r.mohawk.stages.map((s) => [s.stage, s.objective, s.steps]), [[2, 'hidden', 4], [3, 'kd-qat', 12]]);
    const quant = runMetrics(out).filter((m) => 'quant' in m && m.quant! > 0);
    assert.ok(quant.length > 0, 'no step logged a quantization term');
    assert.deepEqual(loadLlama(join(out, 'quantized')).config.ssm?.attention_layers, []);
  });

  it('records the stages in DIR/mohawk/report.json', () => {
    const report = JSON.parse(readFileSync(join(straight, 'mohawk', 'report.json'), 'utf8')) as { stages: { tokens: number }[] };
    assert.deepEqual(report.stages.map((s) => s.tokens), [4 * 32, 4 * 32, 8 * 32]);
  });
});

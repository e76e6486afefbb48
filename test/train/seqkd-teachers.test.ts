// Sequence-level KD without a teacher (a black-box teacher's text), several
// teachers mixed, and a chain through a teaching assistant, through the
// distill API.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { loadCorpusData } from '../../src/data/corpus.js';
import { distill } from '../../src/train/distill.js';
import { readResumePoint } from '../../src/train/trainer.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, shortConfig, stepMetrics, teacherConfig } from '../helpers/distill.js';

const { dir, teacherDir, text } = distillFixture('qkd-seqkd-');
const teacher2Dir = join(dir, 'teacher2');
saveLlama(teacher2Dir, createLlama(teacherConfig, 12));
writeFileSync(join(teacher2Dir, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
const small = { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 };

/** Prompt / completion rows cut from the corpus (what qkd synth writes from a completions endpoint). */
function completionRows(path: string): void {
  const rows = [];
  for (let i = 0; i < 120; i++) {
    const chunk = text.slice(i * 300, i * 300 + 300);
    rows.push(JSON.stringify({ prompt: chunk.slice(0, 10), completion: chunk.slice(10), prompt_index: i, sample: 0 }));
  }
  writeFileSync(path, rows.join('\n') + '\n');
}

const sameCurve = (a: string, b: string, tol: number): void => {
  const x = stepMetrics(a);
  const y = stepMetrics(b);
  assert.equal(x.length, y.length);
  x.forEach((m, i) => assert.ok(Math.abs(m.loss! - y[i]!.loss!) < tol, `step ${i + 1}: ${m.loss} vs ${y[i]!.loss}`));
};

describe('seqkd, several teachers, teaching assistants', () => {
  it('seqkd-qat without a teacher: a fresh student of a preset shape learns the completions of prompt / completion rows', async () => {
    const data = join(dir, 'synth.jsonl');
    completionRows(data);
    const corpus = loadCorpusData(data);
    const out = join(dir, 'seqkd');
    const r = await distill({ teacher: null, text: corpus, outDir: out, config: shortConfig({ recipe: 'seqkd-qat', student: { init: 'random', model: small }, quantization: { fake_quant_start: 0.5 } }) });
    assert.equal(r.recipe, 'seqkd-qat');
    assert.ok(existsSync(join(out, 'quantized')));
    const steps = stepMetrics(out);
    assert.equal(steps.length, 12);
    assert.ok(steps.every((m) => m.logit_kd === undefined && m.lambda === 0), 'no teacher term');
    assert.equal(steps[11]!.fake_quant, 1);
    assert.ok(steps[11]!.loss! < steps[0]!.loss!, `loss ${steps[0]!.loss} → ${steps[11]!.loss}`);
  });

  it('recipe qat runs without a teacher too', async () => {
    const r = await distill({ teacher: null, text, outDir: join(dir, 'qat-alone'), config: shortConfig({ recipe: 'qat', student: { init: 'random', model: small } }) });
    assert.equal(r.recipe, 'qat');
    assert.ok(existsSync(join(dir, 'qat-alone', 'quantized')));
  });

  it('refuses a teacherless run of a recipe that needs a teacher, and a student with no shape', async () => {
    await assert.rejects(distill({ teacher: null, text, outDir: join(dir, 'no-teacher-kd'), config: shortConfig({ recipe: 'kd', student: { init: 'random', model: small } }) }), (e: unknown) => e instanceof QkdError && e.field === '--teacher');
    await assert.rejects(distill({ teacher: null, text, outDir: join(dir, 'no-shape'), config: shortConfig({ recipe: 'seqkd', student: { init: 'random' } }) }), (e: unknown) => e instanceof QkdError && e.field === 'student.preset');
    await assert.rejects(distill({ teacher: null, text, outDir: join(dir, 'no-init'), config: shortConfig({ recipe: 'seqkd', student: { model: small } }) }), (e: unknown) => e instanceof QkdError && e.field === 'student.init');
  });

  it('seqkd with a teacher adds its logit KD, as kd does', async () => {
    const a = join(dir, 'seqkd-teacher');
    const b = join(dir, 'kd-teacher');
    await distill({ teacher: teacherDir, text, outDir: a, config: shortConfig({ recipe: 'seqkd' }) });
    await distill({ teacher: teacherDir, text, outDir: b, config: shortConfig({ recipe: 'kd' }) });
    sameCurve(a, b, 1e-6);
    assert.ok(stepMetrics(a).every((m) => m.logit_kd! > 0));
  });

  it('two copies of one teacher (mean or confidence) teach exactly as that teacher; two teachers differ from either', async () => {
    const single = join(dir, 'single');
    await distill({ teacher: teacherDir, text, outDir: single, config: shortConfig({ recipe: 'kd' }) });
    for (const mix of ['mean', 'confidence'] as const) {
      const twin = join(dir, `twin-${mix}`);
      await distill({ teacher: [teacherDir, teacherDir], text, outDir: twin, config: shortConfig({ recipe: 'kd', distillation: { teachers: { mix, weights: [2, 1] } } }) });
      sameCurve(single, twin, 1e-4);
    }
    const pair = join(dir, 'pair');
    await distill({ teacher: [teacherDir, teacher2Dir], text, outDir: pair, config: shortConfig({ recipe: 'kd' }) });
    assert.notEqual(stepMetrics(pair)[3]!.logit_kd, stepMetrics(single)[3]!.logit_kd);
    // Offline KD caches the mixture's top-k like one teacher's.
    const cached = join(dir, 'pair-cached');
    await distill({ teacher: [teacherDir, teacher2Dir], text, outDir: cached, config: shortConfig({ recipe: 'kd', distillation: { soft_target_cache: { top_k: 16 } } }) });
    assert.ok(stepMetrics(cached).every((m) => m.offline_kd === 1));
  });

  it('alternate: teachers take turns and a resumed run draws the same turns', async () => {
    const whole = join(dir, 'alternate');
    const cfg = shortConfig({ recipe: 'kd', distillation: { teachers: { mix: 'alternate' } } });
    await distill({ teacher: [teacherDir, teacher2Dir], text, outDir: whole, config: cfg });
    const part = join(dir, 'alternate-resumed');
    let calls = 0;
    const first = await distill({ teacher: [teacherDir, teacher2Dir], text, outDir: part, config: cfg, shouldStop: () => ++calls > 7 });
    assert.equal(first.interrupted, true);
    await distill({ teacher: [teacherDir, teacher2Dir], text, outDir: part, config: cfg, resume: true });
    sameCurve(whole, part, 1e-6);
    await assert.rejects(
      distill({ teacher: [teacherDir, teacher2Dir], text, outDir: join(dir, 'alt-cache'), config: shortConfig({ recipe: 'kd', distillation: { teachers: { mix: 'alternate' }, soft_target_cache: { top_k: 8 } } }) }),
      (e: unknown) => e instanceof QkdError && e.field === 'distillation.soft_target_cache',
    );
    await assert.rejects(
      distill({ teacher: [teacherDir, teacher2Dir], text, outDir: join(dir, 'alt-feat'), config: shortConfig({ recipe: 'kd', distillation: { feature_layers: 'all' } }) }),
      (e: unknown) => e instanceof QkdError && e.field === 'distillation.feature_layers',
    );
  });

  it('a teaching assistant: distilled first into DIR/assistant, then it teaches; a run stopped inside the assistant resumes to the same student', async () => {
    const cfg = shortConfig({ recipe: 'kd-qat', assistant: { model: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 }, steps: 8 }, student: { model: { ...small, head_dim: 8 }, init: 'svd' } });
    const whole = join(dir, 'chain');
    const r = await distill({ teacher: teacherDir, text, outDir: whole, config: cfg });
    assert.ok(existsSync(join(whole, 'assistant', 'quantized')));
    assert.equal(readResumePoint(join(whole, 'assistant')).state.step, 8);
    assert.equal(r.assistant?.steps, 8);
    assert.ok(r.assistant!.params > 0 && Number.isFinite(r.assistant!.val_loss));
    assert.equal(stepMetrics(whole).length, 12);
    const part = join(dir, 'chain-resumed');
    let calls = 0;
    const stopped = await distill({ teacher: teacherDir, text, outDir: part, config: cfg, shouldStop: () => ++calls > 5 });
    assert.equal(stopped.interrupted, true);
    assert.ok(!existsSync(join(part, 'latest.json')), 'stopped inside the assistant');
    const resumed = await distill({ teacher: teacherDir, text, outDir: part, config: cfg, resume: true });
    assert.equal(resumed.interrupted, false);
    sameCurve(whole, part, 1e-6);
    sameCurve(join(whole, 'assistant'), join(part, 'assistant'), 1e-6);
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: join(dir, 'chain-corrected'), config: shortConfig({ assistant: { preset: 'tiny' }, distillation: { teacher_correction: { steps: 2 } } }) }), (e: unknown) => e instanceof QkdError && e.field === 'distillation.teacher_correction.steps');
    // A finished chain is not started over without --force.
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: whole, config: cfg }), (e: unknown) => e instanceof QkdError && e.field === '--out');
  });
});

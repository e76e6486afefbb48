// SAT (qkd train --recipe sat) and SAKD (qkd distill --recipe sakd): each
// mechanism is visible in the logs, switches off on its own, resumes exactly,
// and SWDL at T = ∞ is plain uniform feature KD, bit for bit.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama, loadLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { loadDefaultCorpus } from '../../src/data/corpus.js';
import { parseTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';
import { distill } from '../../src/train/distill.js';
import { parseDistillConfig } from '../../src/train/distill-config.js';
import { SakdMechanisms, swdlWeights } from '../../src/train/sakd.js';
import { openSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { PackedArray } from '../../src/sat/dbwa.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-sat-'));
const text = loadDefaultCorpus().slice(0, 60_000);
const model = { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2 };
const metrics = (d: string) => readFileSync(join(d, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

/** Trains until `stopAfter` steps are done (a checkpoint is written there), as Ctrl-C would. */
async function trainUntil(outDir: string, config: ReturnType<typeof satConfig>, stopAfter: number): Promise<void> {
  let n = 0;
  await train({ text, outDir, config, onStep: () => n++, shouldStop: () => n >= stopAfter });
}

function satConfig(sat: Record<string, unknown>, steps = 12) {
  return parseTrainConfig({ model, batch_size: 2, seq_len: 16, steps, lr: 3e-3, eval_every: 6, checkpoint_every: 6, recipe: 'sat', sat: { reprofile_every: 5, ...sat } });
}

describe('SAT', () => {
  it('logs every mechanism, re-profiles on schedule and accounts DBWA bytes below bf16', async () => {
    const out = join(dir, 'sat');
    const notes: string[] = [];
    const r = await train({ text, outDir: out, config: satConfig({ dbwa: { enabled: true }, kurtosis: { kappa_max: 0.01 } }), onNote: (n) => notes.push(n) });
    assert.deepEqual(notes.filter((n) => n.includes('TQNI')).map((n) => n.split(':')[0]), ['step 1', 'step 6', 'step 11']);
    assert.ok(notes.some((n) => /DBWA tiers 16-bit ×8, 12-bit ×14, 8-bit ×8 \(1-D norms: 16-bit\)/.test(n)), notes.join('\n'));
    const step = metrics(out).find((l) => l.step === 3 && 'loss' in l);
    for (const key of ['task', 'kurtosis_penalty', 'spectral_penalty', 'noise_layers']) assert.ok(key in step, key);
    assert.equal(step.noise_layers, 6, '20% of the 30 weights');
    assert.ok(step.kurtosis_penalty > 0, 'a tiny κ_max makes the ceiling bind');
    const bf16 = await train({ text, outDir: join(dir, 'bf16'), config: satConfig({ dbwa: { enabled: true, uniform_tier: 16 }, kurtosis: { enabled: false }, spectral: { enabled: false }, noise: { enabled: false } }) });
    const fp32Bytes = 16 * loadLlama(out).arena.size;
    assert.equal(r.state.storage, 'dbwa');
    assert.ok(r.state.total < 0.5 * fp32Bytes, 'tiered state is far below float32');
    assert.ok(bf16.state.total < 0.55 * fp32Bytes && bf16.state.total > 0.45 * fp32Bytes, 'bf16 ≈ half of float32');
    assert.ok(r.peak_rss_bytes > 0);
  });

  it('switches each mechanism off on its own', async () => {
    const out = join(dir, 'sat-off');
    await train({ text, outDir: out, config: satConfig({ kurtosis: { enabled: false }, spectral: { enabled: false }, noise: { enabled: false } }, 4) });
    const step = metrics(out).find((l) => l.step === 2 && 'loss' in l);
    assert.ok(!('kurtosis_penalty' in step) && !('spectral_penalty' in step));
    assert.equal(step.noise_layers, 0);
    assert.equal(step.loss, step.task, 'nothing but the task loss is left');
  });

  it('resumes exactly with noise, penalties and DBWA stochastic rounding, also on a re-profile boundary', async () => {
    const c = satConfig({ dbwa: { enabled: true } });
    const full = join(dir, 'sat-full');
    await train({ text, outDir: full, config: c });
    const last = (d: string) => metrics(d).filter((l) => l.step === 12 && 'loss' in l)[0];
    // Stopped after 7 steps; and after 5 (reprofile_every 5: step 6 re-profiles, the first step after the resume, so tiers may move there).
    for (const stopAfter of [7, 5]) {
      const part = join(dir, `sat-part-${stopAfter}`);
      await trainUntil(part, c, stopAfter);
      await train({ text, outDir: part, config: c, resume: true });
      assert.deepEqual(last(part), { ...last(full), tokens_per_s: last(part).tokens_per_s }, `stopped after ${stopAfter}`);
      assert.deepEqual(loadLlama(part).arena.data, loadLlama(full).arena.data, `stopped after ${stopAfter}`);
    }
  });

  it('DBWA trains with no float32 arena: the checkpoint holds the packed weights and moments, and the float32 model is their decoding', async () => {
    const c = satConfig({ dbwa: { enabled: true } }, 2);
    const out = join(dir, 'dbwa-packed');
    const r = await train({ text, outDir: out, config: c });
    const ckpt = join(out, 'checkpoint-2');
    const state = JSON.parse(readFileSync(join(ckpt, 'trainer_state.json'), 'utf8')).storage;
    const packed = openSafetensors(join(ckpt, 'storage.safetensors'));
    const optimizer = openSafetensors(join(ckpt, 'optimizer.safetensors'));
    const trained = loadLlama(ckpt);
    try {
      assert.deepEqual(optimizer.entry('exp_avg').shape, [0], 'no float32 moments');
      assert.equal(state.packed.length, trained.arena.entries.length);
      const counts = { 8: 0, 12: 0, 16: 0 } as Record<number, number>;
      for (const [name, tier, length, hasMoments] of state.packed as [string, 8 | 12 | 16, number, boolean][]) {
        counts[tier]!++;
        assert.equal(hasMoments, true);
        const w = PackedArray.fromStorage(tier, length, packed.readBytes(`${name}.packed`)).decode();
        assert.deepEqual(w, trained.arena.get(name).data, `${name}: model.safetensors is the packed weights decoded`);
        for (const field of ['exp_avg', 'exp_avg_sq']) {
          const m = PackedArray.fromStorage(tier, length, packed.readBytes(`${name}.${field}`)).decode();
          assert.ok(m.some((x) => x !== 0), `${name}.${field} was updated`);
        }
      }
      assert.deepEqual(counts, { 8: 8, 12: 14, 16: 8 + 9 }, 'quartile tiers on the 30 matrices; the 9 norm gains at 16 bits');
    } finally {
      packed.close();
      optimizer.close();
    }
    const size = trained.arena.size;
    const s = r.state;
    assert.ok(s.resident < 0.5 * 16 * size, `resident ${s.resident} B: packed state + scratch, under half of float32's 16 B/parameter`);
    assert.ok(s.resident >= s.total, 'the resident bytes include the accounted packed state');
  });

  it('refuses a DBWA checkpoint whose packed moments are damaged, naming the file and tensor', async () => {
    const c = satConfig({ dbwa: { enabled: true } }, 2);
    const out = join(dir, 'dbwa-bad');
    await trainUntil(out, c, 1);
    const path = join(out, 'checkpoint-1', 'storage.safetensors');
    const f = openSafetensors(path);
    const names = f.names;
    const tensors = names.map((name) => ({ name, dtype: 'u8' as const, shape: f.entry(name).shape, data: f.readBytes(name) }));
    f.close();
    tensors[0] = { ...tensors[0]!, shape: [3], data: new Uint8Array(3) };
    writeSafetensors(path, tensors);
    await assert.rejects(train({ text, outDir: out, config: c, resume: true }), (err: Error) => err.message.includes(`'${names[0]!}'`) && (err as { path?: string }).path === path && /expected: \d+ bytes/.test(err.message));
    tensors.splice(0, 1);
    writeSafetensors(path, tensors);
    await assert.rejects(train({ text, outDir: out, config: c, resume: true }), (err: Error) => err.message.includes(`'${names[0]!}' is not in the file`) && (err as { path?: string }).path === path);
  });

  it('refuses to resume a DBWA checkpoint without DBWA or without its packed state; a plain SAT checkpoint has no storage file', async () => {
    const dbwa = join(dir, 'dbwa-switch');
    await trainUntil(dbwa, satConfig({ dbwa: { enabled: true } }, 4), 2);
    // The config check names the switched setting before any checkpoint file is read.
    await assert.rejects(train({ text, outDir: dbwa, config: satConfig({}, 4), resume: true }), /settings differ from the run's checkpoint: sat\.dbwa\.enabled \(checkpoint true, given false\)/);
    const plain = join(dir, 'sat-no-recipe-file');
    await trainUntil(plain, satConfig({}, 4), 2);
    assert.ok(!existsSync(join(plain, 'checkpoint-2', 'storage.safetensors')), 'float32 storage keeps everything in the model and optimizer files');
    const r = await train({ text, outDir: plain, config: satConfig({}, 4), resume: true });
    assert.equal(r.steps, 4);
    rmSync(join(dbwa, 'checkpoint-2', 'storage.safetensors'));
    await assert.rejects(train({ text, outDir: dbwa, config: satConfig({ dbwa: { enabled: true } }, 4), resume: true }), /no storage\.safetensors with the packed weights/);
  });

  it('DBWA is the loop\'s storage, not SAT\'s: the standard recipe trains packed too, with the same tiers', async () => {
    const c = parseTrainConfig({ model, batch_size: 2, seq_len: 16, steps: 3, lr: 3e-3, eval_every: 3, checkpoint_every: 3, sat: { reprofile_every: 5, dbwa: { enabled: true } } });
    assert.equal(c.recipe, 'standard');
    const notes: string[] = [];
    const r = await train({ text, outDir: join(dir, 'dbwa-standard'), config: c, onNote: (n) => notes.push(n) });
    assert.equal(r.recipe, 'standard');
    assert.equal(r.state.storage, 'dbwa');
    assert.ok(notes.some((n) => /step 1: DBWA tiers 16-bit ×8, 12-bit ×14, 8-bit ×8/.test(n)), notes.join('\n'));
    assert.ok(r.state.total < 0.5 * 16 * r.params);
    assert.ok(existsSync(join(dir, 'dbwa-standard', 'checkpoint-3', 'storage.safetensors')));
  });

  it('qkd train --recipe sat prints the accounted bytes', () => {
    const yaml = join(dir, 'sat.yaml');
    writeFileSync(yaml, `model: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4}\nbatch_size: 2\nseq_len: 16\nsteps: 4\nlr: 0.003\nsat: {dbwa: {enabled: true}}\n`);
    const r = spawnSync(process.execPath, ['bin/qkd.js', 'train', '--config', yaml, '--out', join(dir, 'sat-cli'), '--recipe', 'sat'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(j.recipe, 'sat');
    assert.ok(j.state_bytes > 0 && j.peak_rss_bytes > 0 && j.state_resident_bytes > 0);
    assert.match(r.stderr, /re-profiled/);
    assert.match(r.stderr, /training state \(weights \+ gradients \+ AdamW moments, dbwa\): [\d.]+ MB accounted, [\d.]+ MB held, [\d.]+ MB in float32; process peak RSS \d+ MiB/);
  });
});

describe('SAKD', () => {
  const teacherDir = join(dir, 'teacher');
  saveLlama(teacherDir, createLlama({ vocab_size: 256, max_position_embeddings: 32, ...model }, 11));
  writeFileSync(join(teacherDir, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
  const base = { training: { steps: 10, batch_size: 2, seq_len: 16, eval_every: 5, checkpoint_every: 10 }, optimizer: { lr: 3e-3 } };

  it('SWDL weights: softmax(S/T), and exactly uniform at T = ∞', () => {
    assert.deepEqual(swdlWeights([0.3, 0.1, 0.7], Infinity), [1 / 3, 1 / 3, 1 / 3]);
    const w = swdlWeights([0.3, 0.1, 0.7], 0.1);
    assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-12);
    assert.ok(w[2]! > w[0]! && w[0]! > w[1]!);
    assert.ok(Math.abs(w[2]! / w[0]! - Math.exp(4)) < 1e-9);
  });

  it('T = ∞ with SGR and TDNI off reproduces uniform feature KD (kd-qat, all layers) bit for bit', async () => {
    const a = join(dir, 'uniform');
    const b = join(dir, 'swdl-inf');
    await distill({ teacher: teacherDir, text, outDir: a, config: parseDistillConfig({ ...base, recipe: 'kd-qat', distillation: { feature_layers: 'all' } }) });
    await distill({ teacher: teacherDir, text, outDir: b, config: parseDistillConfig({ ...base, recipe: 'sakd', sakd: { swdl: { t0: null }, sgr: { enabled: false }, tdni: { enabled: false }, feedback: { enabled: false }, report: false } }) });
    // Timing and the (infinite) SWDL temperature are the only fields allowed to differ.
    const strip = (l: Record<string, unknown>) => Object.fromEntries(Object.entries(l).filter(([k]) => k !== 'tokens_per_s' && k !== 'swdl_temperature'));
    assert.deepEqual(metrics(b).filter((l) => 'loss' in l).map(strip), metrics(a).filter((l) => 'loss' in l).map(strip));
  });

  it('sakd logs SGR, applies TDNI to aligned layers and writes the post-distillation audit', async () => {
    const out = join(dir, 'sakd');
    const r = await distill({ teacher: teacherDir, text, outDir: out, config: parseDistillConfig({ ...base, recipe: 'sakd' }) });
    // The last step: fake quantization (and L_quant) is on in the last quarter by default.
    const step = metrics(out).filter((l) => 'loss' in l).pop();
    for (const key of ['sgr_spectral', 'feature_kd', 'logit_kd', 'quant']) assert.ok(key in step, key);
    // Each evaluation logs every penalised weight's κ.
    const evals = metrics(out).filter((l) => 'val_loss' in l);
    assert.ok(evals.length > 0 && evals.every((l) => Object.keys(l).filter((k) => k.startsWith('kappa.model.layers.')).length >= 2 && Object.entries(l).every(([k, v]) => !k.startsWith('kappa.') || Number.isFinite(v))));
    const report = r.sakd_report!;
    assert.ok(existsSync(join(out, 'sakd-report.json')));
    assert.equal(report.teacher.tensors.length, loadLlama(teacherDir).arena.entries.length);
    assert.equal(report.student.tensors.length, loadLlama(out).arena.entries.length);
    assert.ok(report.quantized_student.val_ppl > 1 && report.fp32_student_val_ppl > 1);
    assert.ok(report.tdni_modules.length > 0 && report.tdni_modules.every((m) => /^model\.layers\.[01]\./.test(m)), report.tdni_modules.join(','));
    assert.equal(report.swdl_weights!.first.length, 2);
  });

  it('sakd on DBWA storage (training.dbwa): the student trains packed, and resumes exactly', async () => {
    const config = parseDistillConfig({ ...base, recipe: 'sakd', training: { ...base.training, steps: 6, eval_every: 3, checkpoint_every: 3, dbwa: { enabled: true, reprofile_every: 4 } }, sakd: { report: false } });
    const full = join(dir, 'sakd-dbwa');
    const notes: string[] = [];
    const r = await distill({ teacher: teacherDir, text, outDir: full, config, onNote: (n) => notes.push(n) });
    assert.equal(r.state.storage, 'dbwa');
    assert.ok(notes.some((n) => /step 1: DBWA tiers/.test(n)) && notes.some((n) => /step 5: DBWA tiers/.test(n)), notes.join('\n'));
    const step = metrics(full).filter((l) => 'loss' in l).pop();
    for (const key of ['sgr_kurtosis', 'sgr_spectral', 'quant']) assert.ok(key in step, key);
    const part = join(dir, 'sakd-dbwa-part');
    let n = 0;
    await distill({ teacher: teacherDir, text, outDir: part, config, onStep: () => n++, shouldStop: () => n >= 3 });
    await distill({ teacher: teacherDir, text, outDir: part, config, resume: true });
    assert.deepEqual(loadLlama(part).arena.data, loadLlama(full).arena.data, 'resumed = uninterrupted, bit for bit');
  });

  it('refuses GPTQ-initialised step sizes on DBWA storage, naming the field', async () => {
    const config = parseDistillConfig({ ...base, recipe: 'kd-qat', quantization: { learned_step_size: true, scale_init: 'gptq' }, training: { ...base.training, dbwa: { enabled: true } } });
    await assert.rejects(distill({ teacher: teacherDir, text, outDir: join(dir, 'gptq-dbwa'), config }), /field: quantization\.scale_init/);
  });

  it('the feedback monitor raises the coefficient of a weight whose κ keeps rising above the ceiling (bounded)', () => {
    const config = parseDistillConfig({ recipe: 'sakd', sakd: { feedback: { patience: 2, factor: 2, max_scale: 4 }, sgr: { kappa_max: 0.5 }, tdni: { enabled: false } } });
    const student = createLlama({ vocab_size: 256, max_position_embeddings: 32, ...model, num_hidden_layers: 2 }, 3);
    const mech = new SakdMechanisms(config, [0.1, 0.2, 0.3, 0.4], [1, 3]);
    mech.attach(student);
    const w = student.arena.get('model.layers.0.mlp.up_proj.weight').data;
    const notes: string[] = [];
    for (let check = 0; check < 8; check++) {
      // Make the tails heavier at every check: κ rises.
      for (let i = 0; i < 4 + check; i++) w[i * 97]! *= 3;
      notes.push(...mech.feedback(check + 1));
    }
    const raised = notes.filter((n) => n.includes('model.layers.0.mlp.up_proj.weight'));
    assert.ok(raised.length >= 2, notes.join('\n'));
    assert.equal(mech.coefficient.get('model.layers.0.mlp.up_proj.weight'), 4, 'bounded by max_scale');
    assert.equal(mech.coefficient.get('model.layers.1.mlp.up_proj.weight'), 1, 'untouched weights keep 1');
  });

  it('qkd distill --recipe sakd writes the HTML audit', () => {
    const out = join(dir, 'sakd-cli');
    const yaml = join(dir, 'sakd.yaml');
    writeFileSync(yaml, 'training: {steps: 4, batch_size: 2, seq_len: 16, eval_every: 2, checkpoint_every: 4}\n');
    const r = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', teacherDir, '--out', out, '--config', yaml, '--recipe', 'sakd'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(existsSync(join(out, 'sakd-student.html')) && existsSync(join(out, 'sakd-teacher.html')));
    assert.match(r.stdout, /post-distillation audit/);
  });
});

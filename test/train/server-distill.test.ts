// Distillation from a teacher on an inference server: the loopback server
// (vLLM's documented answer on top of a qkd model) fills the training and
// validation caches, and the student comes out as from the in-process
// teacher's own cache; what a server cannot give is refused by field before
// anything runs; a run stopped while the cache fills continues where it
// stopped; the CLI takes --teacher-url and reads the API key from the
// environment.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama, type LlamaModel } from '../../src/models/llama.js';
import { loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { distill } from '../../src/train/distill.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, runMetrics, shortConfig, teacherConfig } from '../helpers/distill.js';
import { startLoopbackTeacher, type LoopbackServer } from '../helpers/teacher-server.js';
import { qkdAsync } from '../helpers/cli.js';

const fixture = distillFixture('qkd-server-distill-');
const { dir, teacherDir } = fixture;
const text = fixture.text.slice(0, 12_000);
const studentDir = join(dir, 'student');
const bytes = new ByteTokenizer();
const tokenText = (id: number) => bytes.decode([id]);
const settings = { recipe: 'kd', distillation: { soft_target_cache: { top_k: 8 } }, student: { from: studentDir } };


/** Runs the CLI without blocking this process (the loopback server lives here). */
const qkd = qkdAsync;

describe('distillation from a teacher on a server', () => {
  let teacher: LlamaModel;
  let server: LoopbackServer;
  before(async () => {
    saveLlama(studentDir, createLlama({ ...teacherConfig, num_hidden_layers: 2 }, 3));
    writeFileSync(join(studentDir, 'tokenizer.json'), JSON.stringify(bytes.toTokenizerJson()));
    teacher = loadLlama(teacherDir);
    server = await startLoopbackTeacher(teacher, { tokenText });
  });
  after(() => server.close());

  it('gives the student the in-process teacher gives from its own cache', async () => {
    const local = join(dir, 'local');
    const l = await distill({ teacher: teacherDir, text, outDir: local, config: shortConfig(settings) });
    const remote = join(dir, 'remote');
    const notes: string[] = [];
    const progress: string[] = [];
    const r = await distill({
      teacher: { server: { url: server.url, model: 'loopback', api: 'vllm' }, concurrency: 3 },
      text,
      outDir: remote,
      config: shortConfig(settings),
      onNote: (n) => notes.push(n),
      onCacheProgress: (what, p) => progress.push(`${what} ${p.done}/${p.total}`),
    });
    assert.ok(!r.interrupted && Number.isFinite(r.val_loss));
    assert.ok(notes.some((n) => /teacher server: vllm at http:\/\/127\.0\.0\.1:\d+, model loopback/.test(n)), notes.join('\n'));
    assert.ok(notes.some((n) => /\(0 differ\)/.test(n)), notes.join('\n'));
    // Only the windows the run's batches read are asked for (12 steps × 2 sequences touch at most 48 windows of the split's ~660).
    const asked = notes.map((n) => /(\d+) of (\d+) windows the run reads \(of (\d+) in the split\)/.exec(n)).find((m) => m !== null);
    assert.ok(asked && Number(asked[2]) <= 48 && Number(asked[3]) > 600, notes.join('\n'));
    assert.ok(progress.some((p) => /^training targets (\d+)\/\1$/.test(p)) && progress.some((p) => /^validation targets (\d+)\/\1$/.test(p)), progress.slice(-3).join('\n'));
    // The training cache is sparse (the job's files stay, ready for a longer run); the validation cache is whole.
    for (const f of ['soft-targets.bin.partial', 'soft-targets.bin.progress', 'soft-targets.validation.bin']) assert.ok(existsSync(join(remote, f)), f);
    const a = runMetrics(local).filter((m) => 'loss' in m);
    const b = runMetrics(remote).filter((m) => 'loss' in m);
    assert.equal(b.length, a.length);
    assert.ok(b.every((m) => m.offline_kd === 1), 'every step reads the cache');
    // The caches agree to float32 rounding of the tail mass: the losses to well within noise.
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]!.loss! - b[i]!.loss!) < 1e-3, `step ${i + 1}: ${a[i]!.loss} vs ${b[i]!.loss}`);
    const evals = runMetrics(remote).filter((m) => 'val_loss' in m);
    assert.ok(evals.length > 0 && evals.every((m) => Number.isFinite(m.val_kl) && m.val_kl! > 0), 'validation KL from the validation cache');
    const localEvals = runMetrics(local).filter((m) => 'val_loss' in m);
    // The server's validation KL is over the top-k and tail buckets: a lower bound of the full KL.
    for (let i = 0; i < evals.length; i++) assert.ok(evals[i]!.val_kl! <= localEvals[i]!.val_kl! + 1e-4, `eval ${i}: ${evals[i]!.val_kl} vs full ${localEvals[i]!.val_kl}`);
    assert.ok(Math.abs(r.val_loss - l.val_loss) < 1e-3, `${r.val_loss} vs ${l.val_loss}`);
  });

  it('refuses by field what a server cannot give, before asking it anything', async () => {
    const spec = { server: { url: server.url, model: 'loopback', api: 'vllm' as const } };
    const before = server.requests;
    const refused = async (extra: Record<string, unknown>, field: string) =>
      assert.rejects(distill({ teacher: spec, text, outDir: join(dir, 'refused'), config: shortConfig({ ...settings, ...extra }) }), (e: unknown) => e instanceof QkdError && e.field === field && /server|weights|student must exist/.test(e.message));
    await refused({ student: { from: null } }, 'student.from');
    await refused({ recipe: 'sakd' }, 'recipe');
    await refused({ recipe: 'qat' }, 'recipe');
    await refused({ distillation: { kl: 'reverse' } }, 'distillation.kl');
    await refused({ distillation: { feature_layers: 'all' } }, 'distillation.feature_layers');
    await refused({ distillation: { attention_weight: 0.5 } }, 'distillation.attention_weight');
    await refused({ distillation: { teacher_correction: { steps: 3 } } }, 'distillation.teacher_correction.steps');
    assert.equal(server.requests, before, 'no request was sent');
  });

  it('a run stopped while the cache fills continues where it stopped, to the same student', async () => {
    const out = join(dir, 'stopped');
    const spec = { server: { url: server.url, model: 'loopback', api: 'vllm' as const }, concurrency: 2 };
    let reports = 0;
    const first = await distill({ teacher: spec, text, outDir: out, config: shortConfig(settings), onCacheProgress: () => reports++, shouldStop: () => reports > 10 });
    assert.ok(first.interrupted && first.steps === 0);
    assert.ok(existsSync(join(out, 'soft-targets.bin.progress')) && !existsSync(join(out, 'latest.json')) && !existsSync(join(out, 'soft-targets.validation.bin')));
    const notes: string[] = [];
    // --resume (what a user types after Ctrl-C) continues the filling, as does the same command.
    const second = await distill({ teacher: spec, text, outDir: out, config: shortConfig(settings), resume: true, onNote: (n) => notes.push(n) });
    assert.ok(!second.interrupted);
    assert.ok(notes.some((n) => /to ask for .*; \d+ done before/.test(n)), notes.join('\n'));
    assert.deepEqual(loadLlama(out).arena.data, loadLlama(join(dir, 'remote')).arena.data, 'the same student as the uninterrupted run');
  });

  it('resumes training from its checkpoint with the server gone: the caches hold every window the run reads', async () => {
    const out = join(dir, 'resumed');
    const gone = await startLoopbackTeacher(teacher, { tokenText });
    const first = await distill({ teacher: { server: { url: gone.url, model: 'loopback', api: 'vllm' } }, text, outDir: out, config: shortConfig(settings), shouldStop: () => existsSync(join(out, 'latest.json')) });
    await gone.close();
    assert.ok(first.interrupted && first.steps > 0 && first.steps < 12, `stopped at step ${first.steps}`);
    const second = await distill({ teacher: { server: { url: gone.url, model: 'loopback', api: 'vllm' } }, text, outDir: out, config: shortConfig(settings), resume: true });
    assert.ok(!second.interrupted && second.steps === 12);
    assert.deepEqual(loadLlama(out).arena.data, loadLlama(join(dir, 'remote')).arena.data, 'the same student as the uninterrupted run');
    // Another served model is another teacher.
    await assert.rejects(distill({ teacher: { server: { url: gone.url, model: 'other', api: 'vllm' } }, text, outDir: out, config: shortConfig(settings), resume: true }), (e: unknown) => e instanceof QkdError && e.field === 'teacher');
  });

  it('the CLI takes --teacher-url, sends the API key from the environment and never prints it', async () => {
    const key = 'sk-test-0123456789';
    const guarded = await startLoopbackTeacher(teacher, { tokenText, apiKey: key });
    try {
      const data = join(dir, 'data.txt');
      writeFileSync(data, text);
      const out = join(dir, 'cli');
      const args = ['distill', '--teacher-url', guarded.url, '--teacher-model', 'loopback', '--student', studentDir, '--data', data, '--out', out, '--recipe', 'kd', '--steps', '4', '--seq-len', '16', '--batch-size', '2', '--top-k', '8', '--teacher-concurrency', '2'];
      const denied = await qkd(args);
      assert.notEqual(denied.status, 0);
      assert.match(denied.stderr, /401/);
      const r = await qkd(args, { QKD_TEACHER_API_KEY: key });
      assert.equal(r.status, 0, r.stderr);
      const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
      assert.equal(j.recipe, 'kd');
      assert.ok(Number.isFinite(j.val_loss));
      assert.match(r.stderr, /training targets \d+\/\d+ windows/);
      assert.ok(!r.stdout.includes(key) && !r.stderr.includes(key), 'the key is not printed');
      for (const f of ['metrics.jsonl', 'trainer_state.json', 'latest.json']) {
        const p = join(out, f);
        if (existsSync(p)) assert.ok(!readFileSync(p, 'utf8').includes(key), `${f} does not hold the key`);
      }
      const both = await qkd(['distill', '--teacher', teacherDir, '--teacher-url', guarded.url, '--teacher-model', 'x', '--out', join(dir, 'both')]);
      assert.notEqual(both.status, 0);
      assert.match(both.stderr, /--teacher-url/);
      const noModel = await qkd(['distill', '--teacher-url', guarded.url, '--student', studentDir, '--out', join(dir, 'nomodel')]);
      assert.match(noModel.stderr, /--teacher-model/);
    } finally {
      await guarded.close();
    }
  });
});

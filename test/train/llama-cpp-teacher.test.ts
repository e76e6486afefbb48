// A GGUF teacher run by llama.cpp in process (node-llama-cpp): its logits
// fill the soft-target caches, and the student comes out as from qkd's own
// teacher with the same cache; a student of another vocabulary is refused
// before llama.cpp loads; the CLI takes --teacher-engine llama.cpp.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { exportGguf } from '../../src/compress/export-gguf.js';
import { distill } from '../../src/train/distill.js';
import { llamaCppScorer } from '../../src/eval/llama-cpp.js';
import { softTargetsFromLogits } from '../../src/distill/soft-targets.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, shortConfig, stepMetrics, teacherConfig } from '../helpers/distill.js';

const fixture = distillFixture('qkd-llamacpp-teacher-');
const { dir, teacherDir } = fixture;
const text = fixture.text.slice(0, 12_000);
const studentDir = join(dir, 'student');
const gguf = join(dir, 'teacher-F32.gguf');
const settings = { recipe: 'kd', distillation: { soft_target_cache: { top_k: 8 } }, student: { from: studentDir } };


describe('a GGUF teacher in llama.cpp', () => {
  before(() => {
    saveLlama(studentDir, createLlama({ ...teacherConfig, num_hidden_layers: 2 }, 3));
    writeFileSync(join(studentDir, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
    exportGguf(teacherDir, { out: gguf, type: 'F32', force: true, name: 'teacher' });
  });

  it("llama.cpp's top-k and softmax sum give the targets its full logits give", async () => {
    const V = 256;
    const k = 8;
    const tokens = Array.from({ length: 16 }, (_, i) => text.charCodeAt(i) & 255);
    const scorer = await llamaCppScorer(gguf, { maxTokens: 16, vocab: V });
    try {
      const full = softTargetsFromLogits(await scorer.logits(tokens), 16, V, k);
      const top = await scorer.topK(tokens, k);
      for (let r = 0; r < 16; r++) {
        const byId = new Map<number, number>();
        for (let i = 0; i < k; i++) byId.set(full.ids[r * k + i]!, full.logp[r * k + i]!);
        for (let i = 0; i < k; i++) {
          const want = byId.get(top.ids[r * k + i]!);
          assert.ok(want !== undefined && Math.abs(want - top.logp[r * k + i]!) < 1e-5, `row ${r}: id ${top.ids[r * k + i]} ${top.logp[r * k + i]} vs ${want}`);
        }
        assert.ok(Math.abs(Math.exp(full.tailLogp[r]!) - Math.exp(top.tailLogp[r]!)) < 1e-5, `row ${r} tail ${full.tailLogp[r]} vs ${top.tailLogp[r]}`);
      }
    } finally {
      await scorer.close();
    }
  });

  it("gives the student qkd's own teacher gives from the same cache", async () => {
    const local = join(dir, 'local');
    const l = await distill({ teacher: teacherDir, text, outDir: local, config: shortConfig(settings) });
    const out = join(dir, 'llama-cpp');
    const notes: string[] = [];
    const r = await distill({ teacher: { engine: 'llama.cpp', gguf, threads: 1 }, text, outDir: out, config: shortConfig(settings), onNote: (n) => notes.push(n) });
    assert.ok(!r.interrupted);
    assert.ok(notes.some((n) => /its tokenizer's 256 tokens checked against the student tokenizer \(0 differ\)/.test(n)), notes.join('\n'));
    assert.ok(notes.some((n) => /windows the run reads/.test(n)), notes.join('\n'));
    const a = stepMetrics(local);
    const b = stepMetrics(out);
    assert.equal(b.length, a.length);
    assert.ok(b.every((m) => m.offline_kd === 1));
    // llama.cpp's F32 logits equal qkd's to ~1e-5 here; the cache stores f16 log-probs either way.
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]!.loss! - b[i]!.loss!) < 1e-3, `step ${i + 1}: ${a[i]!.loss} vs ${b[i]!.loss}`);
    assert.ok(Math.abs(r.val_loss - l.val_loss) < 1e-3, `${r.val_loss} vs ${l.val_loss}`);

    // A rerun (--force) finds every window it reads in the caches and never loads llama.cpp.
    const again: string[] = [];
    await distill({ teacher: { engine: 'llama.cpp', gguf, threads: 1 }, text, outDir: out, config: shortConfig(settings), force: true, onNote: (n) => again.push(n) });
    assert.ok(!again.some((n) => /teacher in llama\.cpp:/.test(n)), again.join('\n'));
  });

  it('refuses a student of another vocabulary before llama.cpp loads, and a teacher inside --out', async () => {
    const other = join(dir, 'student-300');
    saveLlama(other, createLlama({ ...teacherConfig, vocab_size: 300, num_hidden_layers: 1 }, 3));
    writeFileSync(join(other, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
    await assert.rejects(
      distill({ teacher: { engine: 'llama.cpp', gguf, threads: 1 }, text, outDir: join(dir, 'bad-vocab'), config: shortConfig({ ...settings, student: { from: other } }) }),
      (e: unknown) => e instanceof QkdError && (e.field === 'vocab_size' || e.field === '--tokenizer'),
    );
    await assert.rejects(
      distill({ teacher: { engine: 'llama.cpp', gguf, threads: 1 }, text, outDir: dir, config: shortConfig(settings), force: true }),
      (e: unknown) => e instanceof QkdError && e.field === '--teacher',
    );
    await assert.rejects(
      distill({ teacher: { engine: 'llama.cpp', gguf }, text, outDir: join(dir, 'bad-kl'), config: shortConfig({ ...settings, distillation: { kl: 'reverse' } }) }),
      (e: unknown) => e instanceof QkdError && e.field === 'distillation.kl' && /llama\.cpp/.test(e.message),
    );
  });

  it('the CLI takes --teacher model.gguf --teacher-engine llama.cpp', () => {
    const data = join(dir, 'data.txt');
    writeFileSync(data, text);
    const out = join(dir, 'cli');
    const r = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', gguf, '--teacher-engine', 'llama.cpp', '--teacher-threads', '1', '--student', studentDir, '--data', data, '--out', out, '--recipe', 'kd', '--steps', '4', '--seq-len', '16', '--batch-size', '2', '--top-k', '8'], { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.ok(j.recipe === 'kd' && Number.isFinite(j.val_loss));
    assert.match(r.stderr, /training targets \d+\/\d+ windows/);
    assert.ok(existsSync(join(out, 'soft-targets.validation.bin')));
    const notGguf = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', teacherDir, '--teacher-engine', 'llama.cpp', '--student', studentDir, '--out', join(dir, 'cli-bad')], { encoding: 'utf8' });
    assert.notEqual(notGguf.status, 0);
    assert.match(notGguf.stderr, /runs a GGUF file/);
    const threads = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', teacherDir, '--teacher-threads', '2', '--out', join(dir, 'cli-bad2')], { encoding: 'utf8' });
    assert.match(threads.stderr, /--teacher-threads applies to a teacher in llama\.cpp/);
  });
});

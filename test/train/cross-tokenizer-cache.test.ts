// Distillation across tokenizers from soft-target caches over the teacher's
// own tokens: a qkd teacher's offline cache, a teacher on a (loopback)
// server, and a GGUF teacher in llama.cpp give the same student as each
// other (the same cached targets), and a student close to the live teacher's
// (whose targets see a window aligned to each batch instead of the cache's).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { trainBpe, type BpeTokenizer } from '../../src/data/bpe.js';
import { exportGguf } from '../../src/compress/export-gguf.js';
import { openSoftTargetCache } from '../../src/distill/soft-targets.js';
import { distill } from '../../src/train/distill.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, shortConfig, stepMetrics, teacherConfig } from '../helpers/distill.js';
import { startLoopbackTeacher, type LoopbackServer } from '../helpers/teacher-server.js';

const fixture = distillFixture('qkd-xtok-cache-');
const { dir, teacherDir: byteTeacherDir } = fixture;
const text = fixture.text.slice(0, 12_000);
const bpeTeacherDir = join(dir, 'bpe-teacher');
const byteStudentDir = join(dir, 'byte-student');
const bpeStudentDir = join(dir, 'bpe-student');
const gguf = join(dir, 'byte-teacher-F32.gguf');
let bpe: BpeTokenizer;

/** A BPE teacher into a byte-level student (the student exists: a server teacher needs student.from). */
const bpeToBytes = (extra: Record<string, unknown> = {}) =>
  shortConfig({ recipe: 'kd', student: { from: byteStudentDir }, distillation: { soft_target_cache: { top_k: 16 }, cross_tokenizer: { method: 'aligned' }, ...extra } });

/** Loss curves equal within tol, step by step. */
function sameCurve(a: string, b: string, tol: number): void {
  const x = stepMetrics(a);
  const y = stepMetrics(b);
  assert.equal(y.length, x.length);
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]!.loss! - y[i]!.loss!) < tol, `step ${i + 1}: ${x[i]!.loss} vs ${y[i]!.loss}`);
}

describe('distillation across tokenizers from caches', () => {
  let server: LoopbackServer;
  before(async () => {
    bpe = trainBpe(text, 600);
    saveLlama(bpeTeacherDir, createLlama({ ...teacherConfig, vocab_size: bpe.vocabSize }, 21));
    writeFileSync(join(bpeTeacherDir, 'tokenizer.json'), JSON.stringify(bpe.toTokenizerJson()));
    saveLlama(byteStudentDir, createLlama({ ...teacherConfig, num_hidden_layers: 2 }, 3));
    writeFileSync(join(byteStudentDir, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
    saveLlama(bpeStudentDir, createLlama({ ...teacherConfig, vocab_size: bpe.vocabSize, num_hidden_layers: 2 }, 4));
    writeFileSync(join(bpeStudentDir, 'tokenizer.json'), JSON.stringify(bpe.toTokenizerJson()));
    exportGguf(byteTeacherDir, { out: gguf, type: 'F32', force: true, name: 'teacher' });
    server = await startLoopbackTeacher(loadLlama(bpeTeacherDir), { tokenText: (id) => bpe.decode([id]) });
  });
  after(() => server.close());

  it("an offline cache over the teacher's tokens: targets at most positions, near the live teacher's student", async () => {
    const live = join(dir, 'live');
    const l = await distill({ teacher: bpeTeacherDir, text, outDir: live, config: shortConfig({ recipe: 'kd', student: { from: byteStudentDir }, distillation: { cross_tokenizer: { method: 'aligned' } } }) });
    const out = join(dir, 'offline');
    const notes: string[] = [];
    const r = await distill({ teacher: bpeTeacherDir, text, outDir: out, config: bpeToBytes(), onNote: (n) => notes.push(n) });
    const cache = openSoftTargetCache(join(out, 'soft-targets.bin'));
    try {
      // The cache is in the teacher's vocabulary, over its token stream.
      assert.equal(cache.V, bpe.vocabSize);
      assert.equal(cache.k, 16);
    } finally {
      cache.close();
    }
    const m = stepMetrics(out);
    const share = m.reduce((a, s) => a + s.aligned_share!, 0) / m.length;
    assert.ok(share > 0.6, `positions with targets ${share}`);
    assert.ok(m.every((s) => Number.isFinite(s.logit_kd) && s.logit_kd! >= 0 && s.mapped_mass! > 0 && s.mapped_mass! <= 1 + 1e-6), JSON.stringify(m));
    // Other contexts for the teacher (the cache's windows, not one per batch), the same data and steps.
    assert.ok(Math.abs(r.val_loss - l.val_loss) < 0.05, `${r.val_loss} vs ${l.val_loss}`);
  });

  it('a teacher on a server, given its tokenizer, gives the student the offline cache gives', async () => {
    const out = join(dir, 'server');
    const notes: string[] = [];
    const r = await distill({ teacher: { server: { url: server.url, model: 'loopback', api: 'vllm' }, concurrency: 2 }, tokenizer: bpe, text, outDir: out, config: bpeToBytes(), onNote: (n) => notes.push(n) });
    assert.ok(!r.interrupted);
    assert.ok(notes.some((n) => /windows the run reads/.test(n)), notes.join('\n'));
    // No validation KL across tokenizers: no validation cache asked for.
    assert.ok(!existsSync(join(out, 'soft-targets.validation.bin')) && !existsSync(join(out, 'soft-targets.validation.bin.progress')));
    // The same top-k in f16; the server's tail is 1 − Σ top-k instead of the sum over the rest.
    sameCurve(join(dir, 'offline'), out, 1e-3);

    await assert.rejects(
      distill({ teacher: { server: { url: server.url, model: 'loopback', api: 'vllm' } }, text, outDir: join(dir, 'server-no-tokenizer'), config: bpeToBytes() }),
      (e: unknown) => e instanceof QkdError && e.field === '--teacher-tokenizer',
    );
    // The student's byte tokenizer given as the teacher's: the server's token texts say otherwise.
    await assert.rejects(
      distill({ teacher: { server: { url: server.url, model: 'loopback', api: 'vllm' } }, tokenizer: new ByteTokenizer(), text, outDir: join(dir, 'server-wrong-tokenizer'), config: bpeToBytes() }),
      (e: unknown) => e instanceof QkdError && (e.field === '--teacher-tokenizer' || /outside|vocab/.test(e.message)),
    );
  });

  it('the CLI takes --teacher-tokenizer for a server teacher across tokenizers', async () => {
    const data = join(dir, 'data.txt');
    writeFileSync(data, text);
    const bpePath = join(bpeTeacherDir, 'tokenizer.json');
    const args = ['bin/qkd.js', 'distill', '--teacher-url', server.url, '--teacher-model', 'loopback', '--teacher-tokenizer', bpePath, '--student', byteStudentDir, '--student-tokenizer', byteStudentDir, '--data', data, '--out', join(dir, 'cli'), '--recipe', 'kd', '--steps', '3', '--seq-len', '16', '--batch-size', '2', '--temperature', '1'];
    // Not spawnSync: the loopback server answers from this process.
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, args, { env: { ...process.env, CI: 'true' } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /across tokenizers \(aligned/);
    assert.ok(Number.isFinite(JSON.parse(r.stdout.trim().split('\n').pop()!).val_loss));
  });

  it('ULD from a cache', async () => {
    const out = join(dir, 'offline-uld');
    const r = await distill({ teacher: bpeTeacherDir, text, outDir: out, config: bpeToBytes({ cross_tokenizer: { method: 'uld' } }) });
    assert.ok(Number.isFinite(r.val_loss));
    assert.ok(stepMetrics(out).every((s) => Number.isFinite(s.logit_kd) && s.logit_kd! >= 0 && s.aligned_share! > 0));
  });

  it('a byte-level GGUF teacher in llama.cpp into a BPE student gives the student its offline cache gives', async () => {
    const config = shortConfig({ recipe: 'kd', student: { from: bpeStudentDir }, distillation: { soft_target_cache: { top_k: 16 }, cross_tokenizer: { method: 'aligned', mapping: 'identity', top_k: 16 } } });
    const local = join(dir, 'bytes-offline');
    const l = await distill({ teacher: byteTeacherDir, text, outDir: local, config });
    const out = join(dir, 'bytes-llama-cpp');
    const r = await distill({ teacher: { engine: 'llama.cpp', gguf, threads: 1 }, text, outDir: out, config });
    const m = stepMetrics(out);
    // Every BPE boundary is a byte boundary, and the byte teacher's tokens are all in the BPE vocabulary:
    // the whole cached top-16 maps (of a random, nearly flat teacher: about 16/256 of the mass).
    assert.ok(m.every((s) => s.aligned_share! > 0.9 && s.mapped_mass! > 0.05 && s.mapped_mass! <= 1), JSON.stringify(m.map((s) => [s.aligned_share, s.mapped_mass])));
    sameCurve(local, out, 1e-3);
    assert.ok(Math.abs(r.val_loss - l.val_loss) < 1e-3, `${r.val_loss} vs ${l.val_loss}`);
  });
});

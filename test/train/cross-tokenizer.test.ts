// Distillation across tokenizers through distill() and the CLI: a BPE
// teacher and a byte-level student (and the other way round), aligned KD
// and ULD; the share of aligned positions and of mapped mass logged; what
// is not supported refused by field.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { trainBpe, type BpeTokenizer } from '../../src/data/bpe.js';
import { loadTokenizer } from '../../src/data/tokenizer-io.js';
import { distill } from '../../src/train/distill.js';
import { QkdError } from '../../src/errors.js';
import { distillFixture, shortConfig, stepMetrics, teacherConfig } from '../helpers/distill.js';

const fixture = distillFixture('qkd-xtok-');
const { dir, teacherDir: byteTeacherDir } = fixture;
const text = fixture.text.slice(0, 20_000);
const bpeTeacherDir = join(dir, 'bpe-teacher');
let bpe: BpeTokenizer;
const bpePath = join(dir, 'bpe', 'tokenizer.json');


describe('distillation across tokenizers', () => {
  before(() => {
    bpe = trainBpe(text, 600);
    saveLlama(bpeTeacherDir, createLlama({ ...teacherConfig, vocab_size: bpe.vocabSize }, 21));
    writeFileSync(join(bpeTeacherDir, 'tokenizer.json'), JSON.stringify(bpe.toTokenizerJson()));
    saveLlama(join(dir, 'bpe'), createLlama({ ...teacherConfig, vocab_size: bpe.vocabSize, num_hidden_layers: 1 }, 1));
    writeFileSync(bpePath, JSON.stringify(bpe.toTokenizerJson()));
  });

  for (const [method, mapping] of [['aligned', 'first-token'], ['uld', 'prefix']] as const) {
    it(`${method}: a BPE teacher into a byte-level student`, async () => {
      const out = join(dir, `bpe-to-bytes-${method}`);
      const notes: string[] = [];
      const r = await distill({
        teacher: bpeTeacherDir,
        studentTokenizer: new ByteTokenizer(),
        text,
        outDir: out,
        config: shortConfig({ recipe: 'kd', student: { init: 'random' }, distillation: { cross_tokenizer: { method, mapping, top_k: 600 } } }),
        onNote: (n) => notes.push(n),
      });
      assert.ok(Number.isFinite(r.val_loss));
      assert.ok(notes.some((n) => /^across tokenizers/.test(n)), notes.join('\n'));
      const m = stepMetrics(out);
      // Every teacher boundary is a byte boundary: about one byte in (bytes per teacher token) aligns.
      const share = m.reduce((a, l) => a + l.aligned_share!, 0) / m.length;
      assert.ok(share > 0.2 && share < 0.8, `aligned share ${share}`);
      assert.ok(m.every((l) => Number.isFinite(l.logit_kd) && l.logit_kd! >= 0));
      // With the whole teacher vocabulary as top-k, first-token mapping carries every token with bytes: all the mass.
      if (method === 'aligned') assert.ok(m.every((l) => Math.abs(l.mapped_mass! - 1) < 1e-4), `mapped ${m.map((l) => l.mapped_mass)}`);
      const student = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { vocab_size: number };
      assert.equal(student.vocab_size, 256);
      assert.equal(loadTokenizer(join(out, 'tokenizer.json')).kind, 'byte', "the student keeps its own tokenizer");
    });
  }

  it('aligned with prefix mapping: targets at nearly every byte, inside the teacher\'s tokens too', async () => {
    const out = join(dir, 'bpe-to-bytes-prefix');
    await distill({ teacher: bpeTeacherDir, studentTokenizer: new ByteTokenizer(), text, outDir: out, config: shortConfig({ recipe: 'kd', student: { init: 'random' }, distillation: { cross_tokenizer: { method: 'aligned' } } }) });
    const m = stepMetrics(out);
    const share = m.reduce((a, l) => a + l.aligned_share!, 0) / m.length;
    assert.ok(share > 0.8, `positions with targets ${share}`);
    assert.ok(m.every((l) => l.mapped_mass! > 0.5 && l.mapped_mass! <= 1 + 1e-6 && Number.isFinite(l.logit_kd)), `the top-32 bytes hold most of the conditional: ${m.map((l) => l.mapped_mass)}`);
  });

  it('a byte-level teacher into a BPE student: every student boundary is a teacher boundary', async () => {
    const out = join(dir, 'bytes-to-bpe');
    await distill({ teacher: byteTeacherDir, studentTokenizer: bpe, text, outDir: out, config: shortConfig({ recipe: 'kd', student: { init: 'random' }, distillation: { cross_tokenizer: { method: 'aligned', mapping: 'identity', top_k: 256 } } }) });
    const m = stepMetrics(out);
    // 16 BPE tokens span more bytes than the byte teacher's 32-token context at times: nearly all, not all, align.
    const share = m.reduce((a, l) => a + l.aligned_share!, 0) / m.length;
    assert.ok(share > 0.8, `aligned share ${share}`);
    // The byte teacher's tokens are all single bytes, which the BPE student has too.
    assert.ok(m.every((l) => Math.abs(l.mapped_mass! - 1) < 1e-4), `mapped ${m.map((l) => l.mapped_mass)}`);
  });

  it('refuses by field what it does not support', async () => {
    const bad = async (extra: Record<string, unknown>, field: string, tokenizer: boolean = true) =>
      assert.rejects(
        distill({ teacher: bpeTeacherDir, ...(tokenizer ? { studentTokenizer: new ByteTokenizer() } : {}), text, outDir: join(dir, 'refused'), config: shortConfig({ recipe: 'kd', student: { init: 'random' }, distillation: { cross_tokenizer: {} }, ...extra }) }),
        (e: unknown) => e instanceof QkdError && e.field === field,
      );
    await bad({ student: { init: 'pruned' } }, 'student.init');
    await bad({ distillation: { cross_tokenizer: {}, kl: 'reverse' } }, 'distillation.kl');
    await bad({ distillation: { cross_tokenizer: {}, feature_layers: 'all' } }, 'distillation.feature_layers');
    await bad({ recipe: 'sakd' }, 'recipe');
    await bad({}, 'student.tokenizer', false);
  });

  it('the CLI takes --student-tokenizer and --cross-tokenizer', () => {
    const data = join(dir, 'data.txt');
    writeFileSync(data, text);
    const out = join(dir, 'cli');
    const r = spawnSync(process.execPath, ['bin/qkd.js', 'distill', '--teacher', byteTeacherDir, '--student-tokenizer', bpePath, '--cross-tokenizer', 'uld', '--init', 'random', '--data', data, '--out', out, '--recipe', 'kd', '--steps', '4', '--seq-len', '16', '--batch-size', '2'], { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /across tokenizers \(uld\)/);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.ok(Number.isFinite(j.val_loss));
    const student = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { vocab_size: number };
    assert.equal(student.vocab_size, bpe.vocabSize);
  });
});

// Bad input never hangs, crashes or loses a run, and a finished command says
// what it did: one test per defect of the issue, then a matrix that runs
// every command with bad flags and paths and asserts a one-line qkd error,
// exit code 1, no stack trace and no hang.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadDefaultCorpus } from '../../src/data/corpus.js';
import { trainBpe } from '../../src/data/bpe.js';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { generate, sampleToken } from '../../src/models/generate.js';
import { parseDistillConfig, resolveDistillConfig } from '../../src/train/distill-config.js';
import { loadTrainConfig } from '../../src/train/config.js';
import { distill } from '../../src/train/distill.js';
import { QkdError } from '../../src/errors.js';
import { Rng, nativeStatus } from '../../src/tensor/index.js';
import { etaSeconds, fitLine, formatCount, formatSeconds } from '../../src/cli/progress.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function qkd(args: string[], env: Record<string, string> = {}, timeout = 60_000): Run {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, timedOut: (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT' };
}

const lastJson = (r: Run) => JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;

/** A user error: exit 1, one `qkd: error:` line naming what is wrong, and never a stack trace. */
function assertUserError(r: Run, pattern: RegExp, what: string): void {
  assert.equal(r.timedOut, false, `${what}: hung`);
  assert.equal(r.code, 1, `${what}: exit ${r.code}, stderr ${r.stderr}`);
  assert.match(r.stderr, /^qkd: error: /m, `${what}: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at [^\n]*:\d+:\d+/, `${what}: stack trace in ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error/, what);
  assert.match(r.stderr, pattern, what);
}

const dir = mkdtempSync(join(tmpdir(), 'qkd-bad-'));
const corpus = join(dir, 'corpus.txt');
writeFileSync(corpus, loadDefaultCorpus().slice(0, 120_000));
const other = join(dir, 'other.txt');
writeFileSync(other, loadDefaultCorpus().slice(200_000, 320_000));
const run = join(dir, 'run');
const trained = qkd(['train', '--out', run, '--data', corpus, '--steps', '12']);

describe('a run on disk is never lost', () => {
  it('trains the fixture run', () => assert.equal(trained.code, 0, trained.stderr));

  it('refuses --out holding a run without --resume or --force, and keeps the checkpoint', () => {
    const before = readFileSync(join(run, 'latest.json'), 'utf8');
    assertUserError(qkd(['train', '--out', run, '--data', corpus, '--steps', '3']), /--out .*run holds a run; refusing to overwrite it.*--resume.*--force/, 'train over a run');
    assert.equal(readFileSync(join(run, 'latest.json'), 'utf8'), before);
    assert.ok(existsSync(join(run, 'checkpoint-12')));
    const stranger = join(dir, 'stranger');
    mkdirSync(stranger);
    writeFileSync(join(stranger, 'notes.txt'), 'mine');
    assertUserError(qkd(['train', '--out', stranger, '--data', corpus, '--steps', '3']), /is not empty \(notes\.txt\) and holds no qkd run/, 'train into a non-empty directory');
    assertUserError(qkd(['train', '--out', stranger, '--data', corpus, '--steps', '3', '--force']), /holds no qkd run/, '--force never empties a directory that is not a run');
    assert.equal(readFileSync(join(stranger, 'notes.txt'), 'utf8'), 'mine');
    assertUserError(qkd(['train', '--out', run, '--resume', '--force']), /give one of them/, '--resume with --force');
    assertUserError(qkd(['train', '--out', join(dir, 'typo'), '--resume']), /nothing to resume/, '--resume into a mistyped path');
    assert.equal(existsSync(join(dir, 'typo')), false, 'a refused resume creates nothing');
  });

  it('--force deletes nothing when the new run is refused', () => {
    const small = join(dir, 'tiny-corpus.txt');
    writeFileSync(small, 'too short');
    assertUserError(qkd(['train', '--out', run, '--data', small, '--steps', '3', '--force']), /training split has \d+ tokens/, 'a forced run on a tiny corpus');
    assertUserError(qkd(['distill', '--teacher', join(dir, 'no-teacher'), '--out', run, '--force']), /no-teacher/, 'a forced distillation from a missing teacher');
    assertUserError(qkd(['distill', '--teacher', run, '--out', run, '--force']), /the teacher lies inside the output directory/, 'a teacher inside --out');
    // The student too: --force cleared it, then the run failed reading it.
    const teacherCopy = join(dir, 'teacher-copy');
    cpSync(run, teacherCopy, { recursive: true });
    assertUserError(qkd(['distill', '--teacher', teacherCopy, '--student', run, '--out', run, '--force', '--steps', '3', '--data', corpus]), /the student lies inside the output directory.*--student/, 'a student inside --out');
    assert.equal(JSON.parse(readFileSync(join(run, 'latest.json'), 'utf8')).step, 12);
    assert.ok(existsSync(join(run, 'checkpoint-12', 'trainer_state.json')));
  });

  it('--force replaces the run (and only the run files)', () => {
    const again = join(dir, 'again');
    assert.equal(qkd(['train', '--out', again, '--data', corpus, '--steps', '6']).code, 0);
    writeFileSync(join(again, 'notes.txt'), 'mine');
    const r = qkd(['train', '--out', again, '--data', corpus, '--steps', '4', '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(readFileSync(join(again, 'latest.json'), 'utf8')).step, 4);
    assert.deepEqual(readdirSync(again).filter((n) => n.startsWith('checkpoint-')), ['checkpoint-4']);
    assert.equal(readFileSync(join(again, 'notes.txt'), 'utf8'), 'mine');
  });

  it('a damaged run is resumed or refused by name, never with a stack trace: a cut-short metrics line, a bad trainer_state.json', () => {
    const copy = (name: string): string => {
      const to = join(dir, name);
      cpSync(run, to, { recursive: true });
      return to;
    };
    // A crash while appending to metrics.jsonl leaves a partial last line: resume drops it like any line past the checkpoint.
    const cut = copy('cut-metrics');
    writeFileSync(join(cut, 'metrics.jsonl'), readFileSync(join(cut, 'metrics.jsonl'), 'utf8') + '{"step":13,"lo');
    // kill -9 during a write leaves its temporary file: resume removes those of dead processes only.
    const dead = '.latest.json.tmp-4194303-kz1';
    const alive = `.metrics.jsonl.tmp-${process.pid}-kz2`;
    for (const name of [dead, alive]) writeFileSync(join(cut, name), 'partial');
    const resumed = qkd(['train', '--out', cut, '--data', corpus, '--resume', '--steps', '14']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(existsSync(join(cut, dead)), false);
    assert.equal(existsSync(join(cut, alive)), true);
    assert.deepEqual(readFileSync(join(cut, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step).filter((s) => s > 12), [13, 14]);
    const middle = copy('bad-metrics');
    const lines = readFileSync(join(middle, 'metrics.jsonl'), 'utf8').split('\n');
    lines[1] = '{oops';
    writeFileSync(join(middle, 'metrics.jsonl'), lines.join('\n'));
    assertUserError(qkd(['train', '--out', middle, '--data', corpus, '--resume', '--steps', '14']), /line 2 of .*metrics\.jsonl is not JSON/, 'a damaged metrics line');
    const latestDir = (d: string) => join(d, JSON.parse(readFileSync(join(d, 'latest.json'), 'utf8')).dir as string);
    for (const [field, value, pattern] of [['rng', 'hello', /trainer_state\.json is damaged: rng .*expected: \{"words"/], ['step', '12', /trainer_state\.json is damaged: step.*non-negative integer/]] as const) {
      const bad = copy(`bad-state-${field}`);
      const statePath = join(latestDir(bad), 'trainer_state.json');
      const state = JSON.parse(readFileSync(statePath, 'utf8'));
      state[field] = value;
      writeFileSync(statePath, JSON.stringify(state));
      assertUserError(qkd(['train', '--out', bad, '--data', corpus, '--resume', '--steps', '14']), pattern, `trainer_state ${field}`);
    }
  });

  it('eval of a model whose loss is NaN says so (the JSON line said "ppl":null with exit 0)', () => {
    const m = createLlama({ vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 32 }, 4);
    m.arena.get('model.layers.0.mlp.down_proj.weight').data[3] = Number.NaN;
    const broken = join(dir, 'nan-model');
    saveLlama(broken, m);
    assertUserError(qkd(['eval', '--model', broken, '--data', corpus]), /the model's perplexity is NaN: its loss is not finite/, 'eval of a NaN model');
  });

  it('synth checks --out before generating: a directory, or a file of the teacher, is refused even with --force', () => {
    const before = readFileSync(join(run, 'model.safetensors'));
    assertUserError(qkd(['synth', '--teacher', run, '--data-free', '--out', join(run, 'model.safetensors'), '--force', '--sequences', '2', '--length', '8']), /--out .*model\.safetensors is a file of the model; refusing to overwrite it/, 'synth over the teacher');
    assert.deepEqual(readFileSync(join(run, 'model.safetensors')), before);
    assertUserError(qkd(['synth', '--teacher', run, '--data-free', '--out', dir, '--force', '--sequences', '2', '--length', '8']), /--out .* is a directory, not a file/, 'synth into a directory');
  });

  it('a config.json with fewer layers than its checkpoint is refused (eval and export ran a cut model without a word)', () => {
    const m = createLlama({ vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 32 }, 4);
    const cut = join(dir, 'layers-mismatch');
    saveLlama(cut, m);
    const configPath = join(cut, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), num_hidden_layers: 1 }));
    for (const args of [['eval', '--model', cut, '--data', corpus], ['export', cut, '--out', join(dir, 'cut.gguf')], ['quantize', cut, '--out', join(dir, 'cut-q')]]) {
      assertUserError(qkd(args), /the checkpoint holds decoder layers up to 1 \('model\.layers\.1\..*'\), but num_hidden_layers says 1.*config\.json/, args[0]!);
    }
  });

  it('a damaged tokenizer.json is reported as JSON, not read as a llama2.c tokenizer.bin', () => {
    const array = join(dir, 'array-tokenizer.json');
    writeFileSync(array, '[1]');
    const empty = join(dir, 'empty-tokenizer.json');
    writeFileSync(empty, '');
    assertUserError(qkd(['tokenize', '--tokenizer', array, '--text', 'hi']), /tokenizer\.json is not a JSON object/, 'an array');
    assertUserError(qkd(['eval', '--model', run, '--tokenizer', empty, '--data', corpus]), /tokenizer\.json is not valid JSON/, 'an empty file');
    const unknown = join(dir, 'unknown-type-tokenizer.json');
    writeFileSync(unknown, JSON.stringify({ model: { type: 'Sentencepiece', vocab: {} } }));
    assertUserError(qkd(['tokenize', '--tokenizer', unknown, '--text', 'hi']), /model\.type is "Sentencepiece", which Hugging Face tokenizers do not define.*BPE, Unigram, WordPiece or WordLevel/, 'an unknown model type');
  });

  it('--tokenizer takes a model directory in eval and generate, as in train and distill', () => {
    const g = qkd(['generate', '--model', run, '--tokenizer', run, '--prompt', 'the', '--steps', '3']);
    assert.equal(g.code, 0, g.stderr);
    const e = qkd(['eval', '--model', run, '--tokenizer', run, '--data', corpus]);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(Number.isFinite(lastJson(e).ppl as number));
  });

  it('--resume keeps the checkpoint settings: contradictions are refused by name, more steps are stated', () => {
    assertUserError(qkd(['train', '--out', run, '--data', corpus, '--resume', '--preset', 'small', '--steps', '20']), /settings differ from the run's checkpoint: model\.hidden_size \(checkpoint 64, given 128\)/, '--preset on resume');
    assertUserError(qkd(['train', '--out', run, '--data', corpus, '--resume', '--seed', '5', '--steps', '20']), /seed \(checkpoint 1337, given 5\)/, '--seed on resume');
    assertUserError(qkd(['train', '--out', run, '--data', other, '--resume', '--steps', '20']), /the corpus differs from the one the run trained on/, '--data on resume');
    assertUserError(qkd(['train', '--out', run, '--data', corpus, '--resume', '--steps', '5']), /steps 5 is not past the checkpoint's step 12/, '--steps below');
    assertUserError(qkd(['train', '--out', run, '--data', corpus, '--resume']), /the run is finished \(step 12 of 12\)/, 'nothing left');
    const resumed = join(dir, 'resumed');
    assert.equal(qkd(['train', '--out', resumed, '--data', corpus, '--steps', '6']).code, 0);
    const r = qkd(['train', '--out', resumed, '--data', corpus, '--resume', '--steps', '8']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /qkd: steps overridden: 6 → 8/);
    assert.match(r.stderr, /qkd: resuming from .*resumed\/checkpoint-6 \(step 6 of 8\)/);
    assert.equal(lastJson(r).steps, 8);
    assert.ok((lastJson(r).tokens_per_s as number) > 0);
    // A partial --config on resume is laid over the checkpoint's settings, not over a preset.
    const more = join(dir, 'more.yaml');
    writeFileSync(more, 'steps: 10\n');
    const r2 = qkd(['train', '--out', resumed, '--data', corpus, '--resume', '--config', more]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(lastJson(r2).steps, 10);
  });

  it('resumes a checkpoint written before a config key existed (defaults fill it)', () => {
    const old = join(dir, 'old-run');
    assert.equal(qkd(['train', '--out', old, '--data', corpus, '--steps', '4']).code, 0);
    const statePath = join(old, 'checkpoint-4', 'trainer_state.json');
    const state = JSON.parse(readFileSync(statePath, 'utf8'));
    delete state.config.grad_accum;
    delete state.config.sat;
    delete state.corpus;
    writeFileSync(statePath, JSON.stringify(state));
    const r = qkd(['train', '--out', old, '--data', corpus, '--resume', '--steps', '6']);
    assert.equal(r.code, 0, r.stderr);
    const j = lastJson(r);
    assert.equal(j.steps, 6);
    assert.ok(Number.isFinite(j.train_loss as number) && (j.train_loss as number) > 0.5, `loss ${j.train_loss}`);
    assert.ok((j.tokens_per_s as number) > 0);
  });

  it('distill --resume refuses another teacher, and the soft-target cache is rebuilt for one', async () => {
    const otherTeacher = join(dir, 'teacher-2');
    assert.equal(qkd(['train', '--out', otherTeacher, '--data', corpus, '--steps', '3', '--seed', '9']).code, 0);
    const out = join(dir, 'distill-teachers');
    const config = parseDistillConfig({ recipe: 'kd', training: { steps: 3, batch_size: 2, seq_len: 16, eval_every: 3, checkpoint_every: 1 }, distillation: { soft_target_cache: { top_k: 4 } } });
    const text = readFileSync(corpus, 'utf8');
    let steps = 0;
    await distill({ teacher: run, text, outDir: out, config, onStep: () => steps++, shouldStop: () => steps >= 2 });
    await assert.rejects(distill({ teacher: otherTeacher, text, outDir: out, config, resume: true }), /--resume: the teacher differs from the one the run distills/);
    const notes: string[] = [];
    await distill({ teacher: otherTeacher, text, outDir: out, config, force: true, onNote: (n) => notes.push(n) });
    assert.ok(notes.some((n) => n.startsWith('soft-target cache:')), 'a cache of another teacher is rebuilt, not reused');
  });

  it('a corpus too small for one validation batch fails before training, with nothing written', () => {
    const small = join(dir, 'small.txt');
    writeFileSync(small, loadDefaultCorpus().slice(0, 3000));
    const out = join(dir, 'small-run');
    assertUserError(qkd(['train', '--out', out, '--data', small, '--steps', '50']), /held-out split \(validation_fraction 0\.1\) has \d+ tokens, fewer than one validation batch of 8×64\+1 = 513/, 'small corpus');
    assert.deepEqual(readdirSync(out), []);
  });

  it('an interrupted distillation writes no quantized/ student', async () => {
    let steps = 0;
    const out = join(dir, 'distill-stopped');
    const config = parseDistillConfig({ recipe: 'kd-qat', training: { steps: 30, batch_size: 2, seq_len: 16, eval_every: 10, checkpoint_every: 10 } });
    const r = await distill({ teacher: run, text: readFileSync(corpus, 'utf8'), outDir: out, config, onStep: () => steps++, shouldStop: () => steps >= 4 });
    assert.equal(r.interrupted, true);
    assert.equal(r.quantized_dir, '');
    assert.equal(existsSync(join(out, 'quantized')), false);
    assert.ok(existsSync(join(out, 'latest.json')), 'the checkpoint to resume from is there');
  });
});

describe('numbers and environment variables are parsed strictly', () => {
  it('names the flag and what it takes', () => {
    assertUserError(qkd(['quantize', run, '--out', join(dir, 'q-abc'), '--budget', 'abc']), /--budget takes a number > 0 and ≤ 16, got 'abc'/, 'quantize --budget abc');
    assertUserError(qkd(['audit', run, '--budget', 'abc']), /--budget takes a number > 0 and ≤ 16, got 'abc'/, 'audit --budget abc');
    assertUserError(qkd(['generate', '--model', run, '--top-p', '0.9x']), /--top-p takes a number > 0 and ≤ 1, got '0\.9x'/, 'generate --top-p');
    assertUserError(qkd(['eval', '--model', run, '--seq-len', '']), /--seq-len takes a positive whole number, got ''/, 'empty --seq-len');
    assert.equal(existsSync(join(dir, 'q-abc')), false, 'nothing created for a refused command');
  });

  it('refuses QKD_THREADS, QKD_ISA, QKD_MALLOC and QKD_MMAP values the addon would silently ignore', () => {
    assertUserError(qkd(['info'], { QKD_THREADS: 'abc' }), /QKD_THREADS='abc' is not a thread count.*1 to 1024/, 'QKD_THREADS=abc');
    assertUserError(qkd(['info'], { QKD_THREADS: '0' }), /QKD_THREADS='0'/, 'QKD_THREADS=0');
    assertUserError(qkd(['info'], { QKD_ISA: 'avx9' }), /QKD_ISA='avx9' is not an instruction-set path.*portable, avx2, avx512/, 'QKD_ISA=avx9');
    assertUserError(qkd(['info'], { QKD_MALLOC: 'keep' }), /QKD_MALLOC='keep' is not a malloc setting.*retain.*system/, 'QKD_MALLOC=keep');
    assertUserError(qkd(['info'], { QKD_MMAP: 'yes' }), /QKD_MMAP='yes' is not a mapping setting.*on.*off/, 'QKD_MMAP=yes');
    const ok = qkd(['info'], { QKD_THREADS: '1', QKD_ISA: 'avx2', QKD_MALLOC: 'system', QKD_MMAP: 'off' });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((lastJson(ok).native as { threads: number }).threads, 1);
  });
});

describe('output paths are checked before any work', () => {
  it('never hangs on /proc and names what is wrong with /sys, a path under a file, and a file', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const cases: [string, RegExp][] = [
      ['/proc/qkd-x', /cannot create --out \/proc\/qkd-x: the file system does not allow creating it/],
      ['/sys/qkd-x', /cannot create --out \/sys\/qkd-x: (permission denied|the file system does not allow)/],
      [join(file, 'sub'), /a-file is a file, not a directory/],
      [file, /--out .*a-file exists and is a file, not a directory/],
    ];
    for (const [out, pattern] of cases) {
      assertUserError(qkd(['quantize', run, '--out', out], {}, 20_000), pattern, `quantize --out ${out}`);
      assertUserError(qkd(['train', '--out', out, '--data', corpus, '--steps', '2'], {}, 20_000), pattern, `train --out ${out}`);
      assertUserError(qkd(['distill', '--teacher', run, '--out', out, '--steps', '2'], {}, 20_000), pattern, `distill --out ${out}`);
    }
    assertUserError(qkd(['audit', run, '--html', join(file, 'r.html')], {}, 20_000), /a-file .*is a file, not a directory/, 'audit --html under a file');
  });

  it('quantize refuses a packed checkpoint as input and its own model directory as output', () => {
    const q = join(dir, 'q4');
    const r = qkd(['quantize', run, '--out', q]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /rtn, 4-bit \(default\): /, 'the default width is stated');
    assertUserError(qkd(['quantize', q, '--out', join(dir, 'q4-again')]), /this model is already quantized \(4\.\d+ bits per weight\).*the float model it was made from/, 'packed input');
    assertUserError(qkd(['quantize', run, '--out', run]), /the output directory is the model's own directory/, 'quantize into the model');
    assertUserError(qkd(['quantize', run, '--out', q]), /is not empty .*--force/, 'quantize over an output');
    assertUserError(qkd(['quantize', run, '--out', join(run, 'checkpoint-12'), '--force']), /lies in a training run/, 'quantize into a checkpoint');
  });
});

describe('models and tokenizers are checked against each other', () => {
  it('eval scores the held-out tail by default, the whole file on request, and validates --seq-len', () => {
    const held = qkd(['eval', '--model', run, '--data', corpus]);
    const whole = qkd(['eval', '--model', run, '--data', corpus, '--whole-file']);
    assert.equal(held.code, 0, held.stderr);
    assert.equal(lastJson(held).split, 'validation');
    assert.equal(lastJson(whole).split, 'all');
    // The held-out tail is the last 10% of the bytes (byte tokens, windows of 64).
    const ratio = (lastJson(held).tokens as number) / (lastJson(whole).tokens as number);
    assert.ok(ratio > 0.09 && ratio < 0.11, `held-out share ${ratio}`);
    assertUserError(qkd(['eval', '--model', run, '--seq-len', '100000']), /sequence length 100000 is outside the model's context.*1 to 64/, 'eval --seq-len 100000');
  });

  it('loads a .safetensors file by content, never as llama2.c', () => {
    const r = qkd(['eval', '--model', join(run, 'model.safetensors'), '--data', corpus]);
    assert.equal(r.code, 0, r.stderr);
    assertUserError(qkd(['generate', '--model', join(run, 'checkpoint-12', 'optimizer.safetensors')]), /holds tensors but no model configuration/, 'a foreign safetensors file');
    const junk = join(dir, 'junk.bin');
    writeFileSync(junk, Buffer.alloc(10));
    assertUserError(qkd(['eval', '--model', junk]), /llama2\.c checkpoint|not a model file/, 'junk');
  });

  it('refuses a tokenizer whose vocabulary does not match the model', () => {
    const tok = join(dir, 'bpe.json');
    writeFileSync(tok, JSON.stringify(trainBpe(readFileSync(corpus, 'utf8'), 600).toTokenizerJson()));
    assertUserError(qkd(['generate', '--model', run, '--tokenizer', tok, '--steps', '3']), /the tokenizer has 600 tokens but the model's vocabulary has 256/, 'generate with a foreign tokenizer');
    assertUserError(qkd(['eval', '--model', run, '--tokenizer', tok]), /has 600 tokens/, 'eval with a foreign tokenizer');
  });
});

describe('a model given as its file', () => {
  it('quantize and prune never write into its directory, a packed one is refused, its tokenizer goes along; a failed prune leaves no empty --out; --out "" is refused by name', () => {
    const home = join(dir, 'as-file');
    mkdirSync(home);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) cpSync(join(run, f), join(home, f));
    const file = join(home, 'model.safetensors');
    const before = readFileSync(file);
    assertUserError(qkd(['quantize', file, '--out', home, '--force']), /the output directory is the model's own directory/, 'quantize over the directory of its model file');
    assertUserError(qkd(['prune', '--model', file, '--out', home, '--layers', '1', '--force']), /the output directory is the model's own directory/, 'prune over the directory of its model file');
    // Nor the directory a symlinked model file really is in.
    const links = join(dir, 'as-links');
    mkdirSync(links);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) symlinkSync(join(home, f), join(links, f));
    assertUserError(qkd(['quantize', join(links, 'model.safetensors'), '--out', home, '--force']), /the output directory is the model's own directory/, 'quantize of a symlinked model file over its target directory');
    assertUserError(qkd(['quantize', links, '--out', home, '--force']), /the output directory is the model's own directory/, 'quantize of a directory of symlinks over their target directory');
    assert.deepEqual(readFileSync(file), before, 'the float model is kept');
    // The tokenizer beside the file goes into the packed checkpoint; that checkpoint, given as its file, is refused.
    const packed = join(dir, 'as-file-q4');
    assert.equal(qkd(['quantize', file, '--out', packed]).code, 0);
    assert.deepEqual(readFileSync(join(packed, 'tokenizer.json')), readFileSync(join(home, 'tokenizer.json')));
    assertUserError(qkd(['quantize', join(packed, 'model.safetensors'), '--out', join(dir, 'as-file-q2'), '--bits', '2']), /already quantized/, 'a packed checkpoint given as its file');
    assert.equal(existsSync(join(dir, 'as-file-q2')), false);
    const failed = join(dir, 'prune-failed');
    assertUserError(qkd(['prune', '--model', run, '--out', failed, '--layers', '5']), /num_hidden_layers 5 exceeds .*\(field: --layers \(num_hidden_layers\)\)/, 'prune to more layers than the model has');
    // A text too short for its purpose is named by its file and flag.
    const short = join(dir, 'short.txt');
    writeFileSync(short, 'hi');
    assertUserError(qkd(['eval', '--model', run, '--data', short, '--whole-file']), /fewer than one window.*\(file: .*short\.txt\)/, 'eval --whole-file of a short text');
    assertUserError(qkd(['prune', '--model', run, '--out', failed, '--layers', '1', '--calibration', short]), /calibration needs \d+ tokens.*short\.txt.*--calibration/, 'prune with a short calibration text');
    assertUserError(qkd(['quantize', run, '--out', failed, '--method', 'gptq', '--calibration', short]), /calibration text has 2 tokens.*short\.txt.*--calibration/, 'gptq with a short calibration text');
    assert.equal(existsSync(failed), false, 'a failed prune removes the --out it created');
    // Text that is not UTF-8 anywhere in the file (not only in its first 64 KiB) is refused, naming the byte.
    const latin1 = join(dir, 'latin1.txt');
    writeFileSync(latin1, Buffer.concat([Buffer.from(readFileSync(corpus, 'utf8').slice(0, 100_000)), Buffer.from([0x43, 0x61, 0x66, 0xe9, 0x20])]));
    const at = Buffer.byteLength(readFileSync(corpus, 'utf8').slice(0, 100_000)) + 3;
    assertUserError(qkd(['eval', '--model', run, '--data', latin1]), new RegExp(`not UTF-8 text: line \\d+, byte ${at} \\(0xe9\\).*latin1\\.txt`), 'eval of Latin-1 text past 64 KiB');
    assertUserError(qkd(['tokenize', '--tokenizer', run, '--file', latin1, '--ids']), /not UTF-8 text.*latin1\.txt.*--file/, 'tokenize --file of Latin-1 text');
    assertUserError(qkd(['synth', '--teacher-url', 'http://127.0.0.1:9', '--teacher-model', 'x', '--prompts', join(run, 'model.safetensors'), '--out', join(dir, 'never.jsonl')]), /prompts file is not UTF-8 text.*--prompts/, 'synth --prompts of a binary file');
    // A message quoting a binary file's bytes writes no control characters to the terminal.
    const png = join(dir, 'img.png');
    writeFileSync(png, Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x1b, 0x5b, 0x32, 0x4a]));
    const plan = qkd(['quantize', run, '--out', join(dir, 'never'), '--plan', png]);
    assertUserError(plan, /plan file is not valid JSON.*\\x0d/, 'a binary --plan');
    assert.doesNotMatch(plan.stderr, /[\x00\x0d\x1a\x1b]/, 'control characters in the message');
    assert.match(qkd(['generate', '--model', run, '--seed', '99999999999999999999']).stderr, /--seed takes a whole number between ±9007199254740991/);
    assertUserError(qkd(['eval', '--model', run, '--data', corpus, '--engine', 'llama.cpp']), /the llama\.cpp engine runs GGUF files, and this is a directory/, 'the llama.cpp engine on a model directory');
    for (const args of [['quantize', run, '--out', ''], ['prune', '--model', run, '--out', '', '--layers', '1'], ['train', '--out', '', '--steps', '1', '--data', corpus], ['audit', run, '--json', '']]) {
      assertUserError(qkd(args), /--(out|json) is empty/, `${args[0]} with an empty path`);
    }
  });
});

describe('Ctrl-C in a command without a safe point', () => {
  it('ends a synchronous pass at once with 130 and leaves no output (quantize with GPTQ)', { skip: (!nativeStatus().loaded || process.platform === 'win32') && 'needs the addon\'s signal handler' }, async () => {
    const out = join(dir, 'sigint-q');
    // Profiling, then GPTQ over effectively unbounded calibration batches: synchronous passes where a
    // JavaScript SIGINT listener never ran. The signal goes once the first progress line shows the work began.
    const child = spawn(process.execPath, ['bin/qkd.js', 'quantize', run, '--out', out, '--method', 'gptq', '--calibration-batches', '1000000'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: 'true' } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<[number | null, string | null]>((r) => child.once('exit', (code, signal) => r([code, signal])));
    for (let i = 0; i < 3000 && !/profile/.test(stderr); i++) await sleep(20);
    assert.match(stderr, /profile/, 'the work began');
    await sleep(200);
    const sent = Date.now();
    child.kill('SIGINT');
    const [code, signal] = await exited;
    assert.equal(code, 130, `${signal} ${stderr}`);
    assert.ok(Date.now() - sent < 5000, `ended ${Date.now() - sent} ms after the signal`);
    assert.match(stderr, /qkd: interrupted/);
    assert.ok(!existsSync(join(out, 'model.safetensors')), 'no packed model written');
  });
});

describe('generation', () => {
  it('streams tokens, and Ctrl-C keeps what was printed and exits 130', async () => {
    const child = spawn(process.execPath, ['bin/qkd.js', 'generate', '--model', run, '--steps', '1000000000', '--ids'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    for (let i = 0; i < 1500 && stdout.split(' ').length < 20; i++) await sleep(20);
    assert.ok(stdout.split(' ').length >= 20, 'tokens arrive before the end');
    child.kill('SIGINT');
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 130);
    assert.match(stdout, /^\d+( \d+)+\n$/);
    assert.match(stderr, /qkd: interrupted: stopped after \d+ tokens/);
  });

  it('ends quietly when the reader of its output goes away', () => {
    for (const args of [`generate --model ${run} --steps 5000`, 'export --help', `audit ${run}`]) {
      const r = spawnSync('sh', ['-c', `${process.execPath} bin/qkd.js ${args} | head -c 10 > /dev/null`], { encoding: 'utf8', timeout: 60_000 });
      assert.doesNotMatch(r.stderr, /EPIPE|error|\n\s+at /i, `${args}: ${r.stderr}`);
    }
  });

  it('stops at the end-of-sequence token, and top-k restricts the candidates', () => {
    const model = createLlama({ vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 16 }, 9);
    const greedy = generate(model, Int32Array.of(1), { steps: 6, temperature: 0 });
    const stopped = generate(model, Int32Array.of(1), { steps: 6, temperature: 0, eosId: greedy[2]! });
    assert.deepEqual(Array.from(stopped), Array.from(greedy.subarray(0, greedy.indexOf(greedy[2]!) + 1)));
    const logits = Float32Array.from({ length: 32 }, (_, i) => (i === 7 ? 3 : i === 11 ? 2.5 : 0));
    const rng = new Rng(1);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(sampleToken(logits, 1, 1, rng, 2));
    assert.deepEqual([...seen].sort((a, b) => a - b), [7, 11]);
    assert.equal(sampleToken(logits, 1, 1, rng, 1), 7);
  });
});

describe('defaults that work', () => {
  it('distill follows a short teacher context, and --seq-len beyond it names the limit', () => {
    const config = parseDistillConfig({});
    assert.equal(resolveDistillConfig(config, 64).training.seq_len, 64);
    assert.equal(resolveDistillConfig(config, 4096).training.seq_len, 128);
    assert.throws(() => resolveDistillConfig(parseDistillConfig({ training: { seq_len: 100 } }), 64), /training\.seq_len 100 exceeds the teacher's context \(max_position_embeddings 64\)/);
    assertUserError(qkd(['distill', '--teacher', run, '--out', join(dir, 'd-long'), '--seq-len', '100']), /seq_len 100 exceeds the teacher's context/, 'distill --seq-len 100');
    const r = qkd(['distill', '--teacher', run, '--out', join(dir, 'd-default'), '--data', corpus, '--steps', '3', '--batch-size', '2']);
    assert.equal(r.code, 0, r.stderr);
  });

  it('a partial training YAML takes the preset for what it leaves out; an unknown key is named first', () => {
    const partial = join(dir, 'partial.yaml');
    writeFileSync(partial, 'steps: 7\nlr: 0.001\n');
    const c = loadTrainConfig(partial);
    assert.equal(c.steps, 7);
    assert.equal(c.batch_size, 8);
    assert.equal(c.model.hidden_size, 64);
    assert.equal(loadTrainConfig(partial, 'small').model.hidden_size, 128);
    const typo = join(dir, 'typo.yaml');
    writeFileSync(typo, 'stepz: 7\n');
    assert.throws(() => loadTrainConfig(typo), (e: unknown) => e instanceof QkdError && /Unrecognized key\(s\) in object: 'stepz'/.test(e.message));
    const noModel = join(dir, 'nomodel.yaml');
    writeFileSync(noModel, 'model: { hidden_size: 32 }\nbogus: 1\n');
    assert.throws(() => loadTrainConfig(noModel), /'bogus'/);
    assertUserError(qkd(['distill', '--teacher', run, '--out', join(dir, 'd-typo'), '--config', typo]), /Unrecognized key\(s\) in object: 'stepz'/, 'distill config typo');
  });
});

/** Runs a shell command on a pseudo-terminal of 80 columns (util-linux `script`), or null without one. */
function onTerminal(command: string): string | null {
  if (spawnSync('script', ['--version'], { encoding: 'utf8' }).status !== 0) return null;
  const r = spawnSync('script', ['-qfec', `stty cols 80 rows 24; ${command}`, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
  return r.stdout.replace(/\r/g, '');
}

describe('progress output', () => {
  it('on a terminal, bars fit 80 columns and never overwrite the result line', (t) => {
    const out = join(dir, 'q-tty');
    const raw = onTerminal(`${process.execPath} bin/qkd.js quantize ${run} --out ${out} --method gptq`);
    if (raw === null) return t.skip('util-linux script is not installed');
    // Each redraw of a bar is the text between "go to column 1" and "clear to end of line".
    const frames = [...raw.matchAll(/\x1b\[1G(.*?)\x1b\[0K/g)].map((m) => m[1]!);
    assert.ok(frames.some((f) => /^profile .* 21\/21/.test(f)) && frames.some((f) => /^gptq .* 16\/16 .*[\d.]+[kM]? params\/s/.test(f)), `bars reach their totals: ${frames.slice(-2).join(' / ')}`);
    for (const f of frames) assert.ok([...f].length <= 79, `frame of ${[...f].length} columns: ${f}`);
    assert.doesNotMatch(raw, /\b0\.0M params\/s/);
    assert.match(raw, /\ngptq, 4-bit \(default\): 16 weights/, 'the summary starts its own line');
  });


  it('fits the terminal width, gives an ETA once a step is timed, and formats durations and rates', () => {
    for (const width of [40, 79, 120]) {
      const line = fitLine('train', 1, 300, ['loss 5.1234', 'ETA 2m10s', 'val 4.9000', '12345 tok/s'], width);
      assert.ok(line.length <= width, `${line.length} > ${width}: ${line}`);
      assert.match(line, /1\/300/);
    }
    assert.match(fitLine('train', 1, 300, ['loss 5.1234', 'ETA 2m10s'], 79), /ETA 2m10s/);
    assert.equal(etaSeconds(0, 1, 300, 0.5), 149.5);
    assert.equal(etaSeconds(120, 121, 300, 2), 358, 'a resumed run counts from its resume step');
    assert.equal(etaSeconds(5, 5, 300, 0.1), Infinity, 'no rate yet: shown as --');
    assert.equal(formatSeconds(Infinity), '--');
    assert.deepEqual([59.6, 119.6, 3599.9, 7199].map(formatSeconds), ['1m00s', '2m00s', '1h00m', '2h00m']);
    assert.deepEqual([12, 45_600, 1_234_567].map(formatCount), ['12', '45.6k', '1.2M']);
  });
});

/** Every command with bad flags and paths: a named error, exit 1, no stack trace, no hang. */
describe('fuzz: every command with bad flags and paths', () => {
  const missing = join(dir, 'does-not-exist');
  const file = join(dir, 'plain.txt');
  writeFileSync(file, 'not a model');
  const cases: string[][] = [
    ['train', '--out', run, '--steps', '-1'],
    ['train', '--out', run, '--steps', '1.5'],
    ['train', '--out', run, '--seed', 'x'],
    ['train', '--out', join(dir, 'f1'), '--preset', 'huge'],
    ['train', '--out', join(dir, 'f2'), '--recipe', 'magic'],
    ['train', '--out', join(dir, 'f3'), '--config', missing],
    ['train', '--out', join(dir, 'f4'), '--config', file],
    ['train', '--out', join(dir, 'f5'), '--data', missing],
    ['train', '--out', missing, '--resume'],
    ['train'],
    ['eval', '--model', missing],
    ['eval', '--model', file],
    ['eval', '--model', run, '--data', missing],
    ['eval', '--model', run, '--seq-len', '0'],
    ['eval', '--model', run, '--seq-len', '1e400'],
    ['eval', '--model', run, '--tokenizer', missing],
    ['generate', '--model', run, '--steps', 'many'],
    ['generate', '--model', run, '--temperature', '-1'],
    ['generate', '--model', run, '--top-p', '0'],
    ['generate', '--model', run, '--top-k', '-3'],
    ['generate', '--model', missing],
    ['distill', '--teacher', missing, '--out', join(dir, 'f6')],
    ['distill', '--teacher', run, '--out', join(dir, 'f7'), '--bits', '5'],
    ['distill', '--teacher', run, '--out', join(dir, 'f8'), '--temperature', '0'],
    ['distill', '--teacher', run, '--out', join(dir, 'f9'), '--lambda', 'NaN'],
    ['distill', '--teacher', run, '--out', join(dir, 'f10'), '--recipe', 'magic'],
    ['distill', '--teacher', run, '--out', join(dir, 'f11'), '--batch-size', '0'],
    ['distill', '--teacher', run, '--out', run],
    ['audit', missing],
    ['audit', file],
    ['audit', run, '--bits', '1'],
    ['audit', run, '--probes', '0'],
    ['audit', run, '--group', '-8'],
    ['audit', run, '--budget', 'Infinity'],
    ['quantize', missing, '--out', join(dir, 'f12')],
    ['quantize', run, '--out', join(dir, 'f13'), '--method', 'awq'],
    ['quantize', run, '--out', join(dir, 'f14'), '--plan', missing],
    ['quantize', run, '--out', join(dir, 'f15'), '--group', 'x'],
    ['quantize', run, '--out', join(dir, 'f16'), '--calibration-batches', '0'],
    ['demo', '--steps', '0'],
    ['--backend', 'gpu', 'info'],
    ['no-such-command'],
  ];
  it(`${cases.length} bad invocations`, () => {
    for (const args of cases) {
      const r = qkd(args, {}, 30_000);
      const what = `qkd ${args.join(' ')}`;
      assert.equal(r.timedOut, false, `${what}: hung`);
      assert.equal(r.code, 1, `${what}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, /^qkd: error: \S/m, `${what}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at [^\n]*:\d+:\d+/, `${what}: stack trace\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /internal error/, `${what}\n${r.stderr}`);
    }
  });
});

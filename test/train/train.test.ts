import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { train } from '../../src/train/trainer.js';
import { learningRate, loadTrainConfig, parseTrainConfig, presetConfig } from '../../src/train/config.js';
import { loadCorpus, loadDefaultCorpus } from '../../src/data/corpus.js';
import { QkdError } from '../../src/errors.js';

const text = loadDefaultCorpus().slice(0, 200_000);
const yaml = `# small and fast
model:
  hidden_size: 32
  intermediate_size: 64
  num_hidden_layers: 2
  num_attention_heads: 4
  num_key_value_heads: 2
batch_size: 4
seq_len: 32
grad_accum: 2
steps: 40
lr: 0.003
min_lr: 0.0003
warmup_steps: 5
eval_every: 20
eval_batches: 2
checkpoint_every: 10
`;

function losses(dir: string): number[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss as number);
}

describe('training config', () => {
  it('names the bad field of a YAML file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-cfg-'));
    writeFileSync(join(dir, 'bad.yaml'), yaml.replace('seq_len: 32', 'seq_len: -3'));
    assert.throws(() => loadTrainConfig(join(dir, 'bad.yaml')), (e: unknown) => e instanceof QkdError && e.field === 'seq_len' && e.path!.endsWith('bad.yaml'));
    writeFileSync(join(dir, 'typo.yaml'), yaml + 'learning_rate: 1\n');
    assert.throws(() => loadTrainConfig(join(dir, 'typo.yaml')), /learning_rate/);
    writeFileSync(join(dir, 'nested.yaml'), yaml.replace('num_hidden_layers: 2', 'num_hidden_layers: two'));
    assert.throws(() => loadTrainConfig(join(dir, 'nested.yaml')), (e: unknown) => e instanceof QkdError && e.field === 'model.num_hidden_layers');
    assert.throws(() => presetConfig('huge'), /unknown preset 'huge'/);
    // A min_lr above lr would make the cosine schedule rise; a config that lowers only lr keeps its preset's min_lr.
    writeFileSync(join(dir, 'lr.yaml'), 'lr: 1e-4\n');
    assert.throws(() => loadTrainConfig(join(dir, 'lr.yaml')), (e: unknown) => e instanceof QkdError && e.field === 'min_lr' && /min_lr 0\.0003 is above lr 0\.0001/.test(e.message));
    writeFileSync(join(dir, 'lr2.yaml'), 'lr: 1e-4\nmin_lr: 1e-5\n');
    assert.equal(loadTrainConfig(join(dir, 'lr2.yaml')).min_lr, 1e-5);
  });
  it('warm-up then cosine to min_lr', () => {
    const c = { lr: 1, min_lr: 0.1, warmup_steps: 10, steps: 110 };
    assert.equal(learningRate(c, 5), 0.5);
    assert.equal(learningRate(c, 10), 1);
    assert.ok(Math.abs(learningRate(c, 60) - 0.55) < 1e-12);
    assert.ok(Math.abs(learningRate(c, 110) - 0.1) < 1e-12);
  });
  it('rejects missing, empty and binary corpora naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-data-'));
    assert.throws(() => loadCorpus(join(dir, 'missing.txt')), (e: unknown) => e instanceof QkdError && e.path!.endsWith('missing.txt'));
    writeFileSync(join(dir, 'empty.txt'), '');
    assert.throws(() => loadCorpus(join(dir, 'empty.txt')), /empty/);
    writeFileSync(join(dir, 'bin.txt'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]));
    assert.throws(() => loadCorpus(join(dir, 'bin.txt')), /not UTF-8 text/);
  });
});

describe('qkd train', () => {
  it('resumes exactly: 20 + 20 steps equal 40 uninterrupted steps', async () => {
    const config = parseTrainConfig((await import('yaml')).parse(yaml));
    const full = mkdtempSync(join(tmpdir(), 'qkd-full-'));
    const a = await train({ text, outDir: full, config });
    const split = mkdtempSync(join(tmpdir(), 'qkd-split-'));
    let n = 0;
    const first = await train({ text, outDir: split, config, shouldStop: () => ++n >= 20 });
    assert.equal(first.interrupted, true);
    assert.equal(first.steps, 20);
    const b = await train({ text, outDir: split, config, resume: true });
    assert.equal(b.steps, 40);
    assert.deepEqual(losses(split), losses(full));
    assert.equal(b.val_loss, a.val_loss);
    const l = losses(full);
    assert.ok(l[l.length - 1]! < l[0]! - 1, `loss ${l[0]} → ${l[l.length - 1]}`);
  });

  it('trains with a BPE tokenizer, saves it, and evaluates bits per byte', async () => {
    const { evaluatePerplexity } = await import('../../src/eval/perplexity.js');
    const { loadTokenizer } = await import('../../src/data/tokenizer-io.js');
    const { loadLlama } = await import('../../src/models/llama-io.js');
    const config = parseTrainConfig({ ...(await import('yaml')).parse(yaml), steps: 20, tokenizer: { kind: 'bpe', vocab_size: 512 } });
    const dir = mkdtempSync(join(tmpdir(), 'qkd-bpe-'));
    const r = await train({ text, outDir: dir, config });
    assert.ok(Number.isFinite(r.val_loss));
    const tokenizer = loadTokenizer(join(dir, 'tokenizer.json'));
    assert.equal(tokenizer.kind, 'bpe');
    assert.equal(tokenizer.vocabSize, 512);
    const model = loadLlama(dir);
    assert.equal(model.config.vocab_size, 512);
    const e = evaluatePerplexity(model, tokenizer, text.slice(-20000), 32);
    // bits/byte = nats/ln2/bytes < log2(ppl) since BPE tokens cover more than one byte each
    assert.ok(e.bits_per_byte < Math.log2(e.ppl) / 1.5, `${e.bits_per_byte} vs log2 ppl ${Math.log2(e.ppl)}`);
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) it(`${signal === 'SIGINT' ? 'Ctrl-C (SIGINT)' : 'SIGTERM (a scheduler\'s or kill\'s stop)'} saves a checkpoint at the current step and exits cleanly`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-int-'));
    const data = join(dir, 'corpus.txt');
    writeFileSync(data, text);
    const cfg = join(dir, 'c.yaml');
    writeFileSync(cfg, yaml.replace('steps: 40', 'steps: 5000').replace('checkpoint_every: 10', 'checkpoint_every: 1000'));
    const out = join(dir, 'run');
    const child = spawn(process.execPath, ['bin/qkd.js', 'train', '--data', data, '--config', cfg, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // Wait until training is under way (metrics written), then interrupt.
    for (let i = 0; i < 600 && !(existsSync(join(out, 'metrics.jsonl')) && losses(out).length >= 5); i++) await sleep(20);
    child.kill(signal);
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 130, 'the conventional exit code of a run ended by SIGINT (a graceful stop on SIGTERM too)');
    if (signal === 'SIGTERM') assert.match(stderr, /qkd: SIGTERM, /);
    const latest = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8'));
    assert.ok(latest.step >= 5 && latest.step < 5000, `checkpoint at ${latest.step}`);
    assert.match(stderr, new RegExp(`qkd: interrupted: stopped at step ${latest.step}, checkpoint saved; continue with: qkd train --out ${out} --data ${data} --resume`));
    const json = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.equal(json.steps, latest.step);
    assert.equal(json.interrupted, true);
  });

  it('survives kill -9 between checkpoints: nothing saved is lost and resume matches', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-kill-'));
    const data = join(dir, 'corpus.txt');
    writeFileSync(data, text);
    const cfg = join(dir, 'c.yaml');
    writeFileSync(cfg, yaml.replace('steps: 40', 'steps: 1000'));
    const out = join(dir, 'run');
    const child = spawn(process.execPath, ['bin/qkd.js', 'train', '--data', data, '--config', cfg, '--out', out], { stdio: 'ignore' });
    // Wait for a checkpoint beyond step 20, then kill without warning.
    for (let i = 0; i < 600; i++) {
      await sleep(50);
      if (existsSync(join(out, 'latest.json')) && JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')).step >= 20) break;
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const saved = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')).step as number;
    assert.ok(saved >= 20 && saved < 1000, `checkpoint step ${saved} (the run must be killed before it ends)`);
    // Resume to the end and compare with an uninterrupted run of the same config.
    const resumed = spawnSync(process.execPath, ['bin/qkd.js', 'train', '--data', data, '--config', cfg, '--out', out, '--resume'], { encoding: 'utf8' });
    assert.equal(resumed.status, 0, resumed.stderr);
    const ref = join(dir, 'ref');
    const clean = spawnSync(process.execPath, ['bin/qkd.js', 'train', '--data', data, '--config', cfg, '--out', ref], { encoding: 'utf8' });
    assert.equal(clean.status, 0, clean.stderr);
    assert.deepEqual(losses(out), losses(ref));
    assert.equal(resumed.stdout.trim().split('\n').pop(), clean.stdout.trim().split('\n').pop()!.replace(/"tokens_per_s":[^}]*/, resumed.stdout.trim().split('\n').pop()!.match(/"tokens_per_s":[^}]*/)![0]));
  });
});

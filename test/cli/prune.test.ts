// qkd prune and qkd distill --init minitron from the command line.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { loadNodeLlamaCpp } from '../../src/eval/llama-cpp.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-cli-prune-'));
const teacher = join(dir, 'teacher');
saveLlama(teacher, createLlama({ vocab_size: 256, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 }, 5));
writeFileSync(join(teacher, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));

function qkd(...args: string[]) {
  return spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
}
const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;

describe('qkd prune', () => {
  it('prunes to a shape, writes a model every command loads, and says what it kept', () => {
    const out = join(dir, 'pruned');
    const r = qkd('prune', '--model', teacher, '--out', out, '--hidden', '24', '--heads', '2', '--kv-heads', '1', '--ffn', '20', '--layers', '3', '--samples', '4', '--seq-len', '16');
    assert.equal(r.status, 0, r.stderr);
    const j = last(r.stdout) as { params: number; shape: Record<string, number>; layers: number[] };
    assert.deepEqual(j.shape, { hidden_size: 24, intermediate_size: 20, num_attention_heads: 2, num_key_value_heads: 1, num_hidden_layers: 3 });
    assert.equal(j.layers.length, 3);
    assert.equal(loadLlama(out).parameterCount, j.params);
    assert.ok(JSON.parse(readFileSync(join(out, 'prune.json'), 'utf8')).block_influence.length === 4);
    const e = qkd('eval', '--model', out, '--seq-len', '32');
    assert.equal(e.status, 0, e.stderr);
  });

  it('a width-pruned model (head dim ≠ hidden / heads) exports to a GGUF that llama.cpp scores like qkd', async () => {
    const out = join(dir, 'pruned');
    const gguf = join(dir, 'pruned.gguf');
    const x = qkd('export', out, '--out', gguf, '--type', 'F32');
    assert.equal(x.status, 0, x.stderr);
    const ours = last(qkd('eval', '--model', gguf, '--seq-len', '32').stdout) as { ppl: number };
    if ((await loadNodeLlamaCpp()) === null) return; // llama.cpp is checked where node-llama-cpp installs (CI does)
    const r = qkd('eval', '--model', gguf, '--seq-len', '32', '--engine', 'llama.cpp');
    assert.equal(r.status, 0, r.stderr);
    const theirs = last(r.stdout) as { ppl: number };
    assert.ok(Math.abs(theirs.ppl / ours.ppl - 1) < 0.005, `llama.cpp ${theirs.ppl} vs qkd ${ours.ppl}`);
  });

  it('prunes to a parameter budget, and refuses a missing or doubled target by name', () => {
    const out = join(dir, 'budget');
    const r = qkd('prune', '--model', teacher, '--out', out, '--target-params', '20000', '--samples', '4', '--seq-len', '16');
    assert.equal(r.status, 0, r.stderr);
    assert.ok((last(r.stdout) as { params: number }).params <= 20000);
    const neither = qkd('prune', '--model', teacher, '--out', join(dir, 'x'));
    assert.notEqual(neither.status, 0);
    assert.match(neither.stderr, /either a target shape or a parameter budget/);
    const wide = qkd('prune', '--model', teacher, '--out', join(dir, 'y'), '--hidden', '64', '--samples', '4', '--seq-len', '16');
    assert.notEqual(wide.status, 0);
    assert.match(wide.stderr, /hidden_size 64 exceeds the teacher's 32/);
  });

  it('never writes over its own model or into a training run, even with --force', () => {
    const before = readFileSync(join(teacher, 'model.safetensors'));
    const own = qkd('prune', '--model', teacher, '--out', teacher, '--force', '--layers', '2', '--samples', '4', '--seq-len', '16');
    assert.equal(own.status, 1);
    assert.match(own.stderr, /the output directory is the model's own directory; pruning there would overwrite the float model/);
    assert.deepEqual(readFileSync(join(teacher, 'model.safetensors')), before);
    const run = join(dir, 'run');
    mkdirSync(run);
    writeFileSync(join(run, 'latest.json'), '{}');
    const inRun = qkd('prune', '--model', teacher, '--out', run, '--force', '--layers', '2', '--samples', '4', '--seq-len', '16');
    assert.equal(inRun.status, 1);
    assert.match(inRun.stderr, /lies in a training run/);
  });

  it('qkd distill --init minitron prunes the teacher on the training text and retrains by logit-only KD', () => {
    const out = join(dir, 'student');
    const r = qkd('distill', '--teacher', teacher, '--out', out, '--init', 'minitron', '--recipe', 'kd', '--steps', '2', '--seq-len', '16', '--batch-size', '2');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /minitron: pruned the teacher to \d+ parameters/);
    assert.match(r.stderr, /settings: recipe kd; student init minitron; forward KL at τ=4; task weight 0/);
    assert.equal(loadLlama(out).config.num_hidden_layers, 2);
  });
});

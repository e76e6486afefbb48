// recipe mohawk from the CLI (docs/mohawk.md): distill a state-space hybrid,
// then evaluate, generate (greedy twice: identical), audit and quantize it
// like any model; GGUF export is refused with a reason.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { distillFixture } from '../helpers/distill.js';
import { loadLlama } from '../../src/models/llama-io.js';
import { modelDirectory } from '../../src/models/load-any.js';

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, last: () => JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown> };
}

describe('qkd distill --recipe mohawk', () => {
  const fixture = distillFixture('qkd-cli-mohawk-');
  after(() => rmSync(fixture.dir, { recursive: true, force: true }));
  const out = join(fixture.dir, 'student');

  it('distills a hybrid with the most sensitive layer kept as attention', () => {
    const r = qkd('distill', '--recipe', 'mohawk', '--teacher', fixture.teacherDir, '--out', out, '--steps', '12', '--batch-size', '2', '--seq-len', '16', '--attention-layers', 'top:1', '--data', 'default');
    assert.equal(r.code, 0, r.stderr);
    const j = r.last();
    assert.equal(j.recipe, 'mohawk');
    const report = j.mohawk as { attention_layers: number[]; stages: { stage: number; steps: number }[] };
    assert.equal(report.attention_layers.length, 1);
    assert.deepEqual(report.stages.map((s) => s.stage), [1, 2, 3]);
    const student = loadLlama(modelDirectory(out));
    assert.deepEqual(student.config.ssm?.attention_layers, report.attention_layers);
    assert.ok(existsSync(join(out, 'quantized', 'config.json')));
  });

  it('evaluates, generates (greedy is reproducible), audits and quantizes the student', () => {
    const e = qkd('eval', '--model', out);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(Number.isFinite(e.last().ppl as number));
    const a = qkd('generate', '--model', out, '--prompt', 'Call me', '--steps', '12', '--temperature', '0', '--ids');
    const b = qkd('generate', '--model', out, '--prompt', 'Call me', '--steps', '12', '--temperature', '0', '--ids');
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    assert.equal(a.stdout.trim().split(' ').length, 12);
    const audit = qkd('audit', out, '--json', '-');
    assert.equal(audit.code, 0, audit.stderr);
    assert.match(audit.stdout, /mixer\.x_proj\.weight/);
    const q = qkd('quantize', out, '--out', join(fixture.dir, 'q4'), '--bits', '4', '--method', 'gptq', '--calibration-batches', '2');
    assert.equal(q.code, 0, q.stderr);
    assert.equal(qkd('eval', '--model', join(fixture.dir, 'q4')).code, 0);
  });

  it('refuses a GGUF export of a state-space student, saying why', () => {
    const r = qkd('export', out, '--out', join(fixture.dir, 'x.gguf'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /state-space \(MOHAWK\) student/);
  });

  it('refuses bad --attention-layers and --mohawk-stages values', () => {
    assert.match(qkd('distill', '--recipe', 'mohawk', '--teacher', fixture.teacherDir, '--out', join(fixture.dir, 'x'), '--attention-layers', 'a,b').stderr, /--attention-layers takes/);
    assert.match(qkd('distill', '--recipe', 'mohawk', '--teacher', fixture.teacherDir, '--out', join(fixture.dir, 'x'), '--mohawk-stages', '1,2').stderr, /mohawk\.stages/);
  });
});

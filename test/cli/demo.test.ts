// The CLI end to end: `qkd demo` trains and the loss falls; usage errors are
// reported without a stack trace.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cachedDemoTeacher } from '../../src/train/demo.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// A cache of its own, so the first demo run below trains and the second reuses.
const cache = mkdtempSync(join(tmpdir(), 'qkd-demo-cache-'));

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8', env: { ...process.env, QKD_CACHE: cache } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('qkd demo', () => {
  it('trains on the embedded corpus and the training and validation loss fall', () => {
    const r = qkd('demo', '--steps', '25', '--student-steps', '10');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const result = JSON.parse(lines[lines.length - 1]!);
    assert.equal(result.steps, 25);
    assert.ok(result.first_loss > 5, `initial loss ${result.first_loss} should be near ln 256 ≈ 5.55`);
    assert.ok(result.last_loss < result.first_loss - 1.5, `loss ${result.first_loss} → ${result.last_loss}`);
    assert.ok(result.val_loss_after < result.val_loss_before - 1.5, `validation ${result.val_loss_before} → ${result.val_loss_after}`);
    assert.match(r.stdout, /moby-dick/);
    assert.equal(result.teacher_cached, false);
    // The deployment part: a half-depth student in FP32, its PTQ Q4_0 GGUF and a KD+QAT Q4_0 GGUF, scored in qkd and llama.cpp.
    const rows = result.deploy.rows as { method: string; file_bytes: number | null; ppl: number; kld: number; ppl_llamacpp: number | null }[];
    assert.deepEqual(rows.map((x) => x.method), ['teacher-fp32', 'student-fp32', 'student-ptq-Q4_0', 'student-kd-qat-Q4_0']);
    assert.equal(result.deploy.student_layers, 2);
    assert.ok(rows[1]!.kld > 0 && rows[1]!.file_bytes === null);
    for (const row of rows.slice(2)) {
      assert.ok(row.file_bytes! > 100_000 && row.kld > 0 && row.ppl > 1, JSON.stringify(row));
      assert.ok(row.ppl_llamacpp !== null, 'node-llama-cpp is installed by the test runner');
      assert.ok(Math.abs(row.ppl_llamacpp! / row.ppl - 1) < 0.005, `llama.cpp ${row.ppl_llamacpp} vs qkd ${row.ppl}`);
    }
    // A second run with the same settings reuses the cached teacher and reports the same training.
    const again = qkd('demo', '--steps', '25', '--no-deploy');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /reusing the teacher trained earlier/);
    assert.doesNotMatch(again.stdout, /step +1\/25/);
    const cached = JSON.parse(again.stdout.trim().split('\n').pop()!);
    assert.equal(cached.teacher_cached, true);
    assert.equal(cached.val_loss_after, result.val_loss_after);
  });
  it('a cache it cannot write leaves the teacher in a temporary directory and says why', () => {
    const blocker = join(cache, 'not-a-directory');
    writeFileSync(blocker, 'x');
    const t = cachedDemoTeacher({ steps: 2, cacheDir: join(blocker, 'cache') });
    assert.equal(t.cached, false);
    assert.match(t.note ?? '', /could not cache the teacher in .*not-a-directory/);
    assert.ok(existsSync(join(t.dir, 'demo-result.json')), t.dir);
    assert.ok(!t.dir.startsWith(blocker));
    // No cache at all (cacheDir null): trained into a temporary directory, no note.
    const none = cachedDemoTeacher({ steps: 2, cacheDir: null });
    assert.equal(none.note, undefined);
    assert.ok(existsSync(join(none.dir, 'config.json')));
  });
  it('rejects a bad flag value with a clear message and no stack trace', () => {
    const r = qkd('demo', '--steps', 'zero');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--steps takes a positive whole number, got 'zero'/);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/);
  });
  it('reports the backend', () => {
    const r = qkd('info');
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout.trim());
    assert.ok(['native', 'reference'].includes(info.backend));
    assert.equal(typeof info.native.loaded, 'boolean');
  });
});

// Data-parallel runs under a real MPI launcher (Open MPI's mpirun, which
// .ci/run installs): the collectives, a 2-rank run against a 1-rank run,
// resume with another rank count, a rank killed mid-run, and the refusals.
// Without mpirun on the machine these tests are skipped (and say why); with
// mpirun but without the MPI binding they fail, since the install builds it.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDefaultCorpus } from '../../src/data/corpus.js';
import { loadLlama } from '../../src/models/llama-io.js';
import { mpiAddonPath } from '../../src/parallel/mpi.js';

const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
const skip = hasMpirun ? false : 'mpirun is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev; .ci/run does this)';
// Open MPI refuses root unless told, and a 1-core machine needs --oversubscribe for 2 ranks.
const MPI_ENV = { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1', CI: 'true' };

function mpirun(np: number, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync('mpirun', ['-np', String(np), process.execPath, ...args], { encoding: 'utf8', env: { ...process.env, ...MPI_ENV, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function qkd(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8', env: { ...process.env, CI: 'true', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function losses(dir: string): number[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss?: number }).filter((m) => m.loss !== undefined).map((m) => m.loss!);
}
/** Relative differences this small are float32 rounding of a sum split in two (docs/parallel.md). */
function assertClose(a: number[], b: number[], rtol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: ${a.length} vs ${b.length} values`);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= rtol * Math.abs(x), `${what}[${i}]: ${x} vs ${b[i]} (rtol ${rtol})`));
}
const RTOL = 1e-5;

describe('data-parallel training under mpirun', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-mpi-'));
  const data = join(dir, 'corpus.txt');
  // Constant learning rate: a run stopped at step 5 and resumed to 10 follows the same schedule as one of 10.
  const config = join(dir, 'run.yaml');
  before(() => {
    writeFileSync(data, loadDefaultCorpus().slice(0, 120_000));
    writeFileSync(config, 'steps: 10\nlr: 0.002\nmin_lr: 0.002\nwarmup_steps: 0\neval_every: 5\ncheckpoint_every: 5\n');
  });

  it('the MPI binding was built with the install', () => {
    assert.ok(existsSync(mpiAddonPath()), `${mpiAddonPath()} is missing: the install should build it where mpicc exists (see build/mpi-build.log)`);
  });

  it('sums, takes maxima, broadcasts, gathers and checks agreement across 2 ranks', () => {
    const r = mpirun(2, ['dist/test/parallel/collectives-rank.js']);
    assert.equal(r.code, 0, r.stderr);
    const ranks = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).sort((a, b) => (a.rank as number) - (b.rank as number));
    assert.equal(ranks.length, 2);
    for (const o of ranks) {
      assert.equal(o.size, 2);
      assert.match(o.describe as string, /^rank [01] of 2 \(Open MPI/);
      assert.deepEqual(o.sum, [3, 30, -1]);
      assert.deepEqual(o.max, [1, 0, null]); // Infinity prints as null in JSON
      assert.deepEqual(o.broadcast, [9, 8, 7, 6, 5]);
      assert.deepEqual(o.bucketed, Array.from({ length: 10 }, (_, i) => 3 * i));
      assert.deepEqual(o.chunked, Array.from({ length: 10 }, (_, i) => 2 * i + 1));
      assert.match(o.badChunk as string, /qkd_mpi\.allreduce: chunk must be an integer in \[1, 1073741824\]/);
      assert.match(o.oddBatch as string, /batch_size 5 does not divide among 2 ranks/);
      assert.match(o.disagreement as string, /the ranks disagree on the test items: mine differs from rank 0's/);
    }
    assert.deepEqual(ranks[0]!.gathered, [0, 0, 0, 1, 1, 1]);
    assert.deepEqual(ranks[1]!.gathered, []);
    assert.deepEqual(ranks.map((o) => o.shard), [{ first: 0, rows: 4 }, { first: 4, rows: 4 }]);
  });

  const one = join(dir, 'one');
  const two = join(dir, 'two');
  it('2 ranks × 4 rows follow the loss curve of 1 rank × 8 rows', () => {
    const a = qkd(['train', '--data', data, '--config', config, '--out', one]);
    assert.equal(a.code, 0, a.stderr);
    const b = mpirun(2, ['bin/qkd.js', 'train', '--data', data, '--config', config, '--out', two]);
    assert.equal(b.code, 0, b.stderr);
    // Rank 0 alone prints the result and writes the metrics.
    assert.equal(b.stdout.trim().split('\n').filter((l) => l.startsWith('{')).length, 1, b.stdout);
    assert.equal(losses(two).length, 10);
    assertClose(losses(one), losses(two), RTOL, 'loss');
    const ja = JSON.parse(a.stdout.trim().split('\n').pop()!);
    const jb = JSON.parse(b.stdout.trim().split('\n').pop()!);
    assertClose([ja.val_loss], [jb.val_loss], RTOL, 'val_loss');
    const wa = loadLlama(one).arena.data;
    const wb = loadLlama(two).arena.data;
    let worst = 0;
    for (let i = 0; i < wa.length; i++) worst = Math.max(worst, Math.abs(wa[i]! - wb[i]!));
    assert.ok(worst < 1e-4, `largest weight difference ${worst}`);
  });

  it('DBWA storage on 2 ranks: packed gradients summed over the ranks, the ranks identical, the 1-rank curve within 1%', () => {
    const dbwa = join(dir, 'dbwa.yaml');
    writeFileSync(dbwa, readFileSync(config, 'utf8') + 'sat: {dbwa: {enabled: true}}\n');
    const a = qkd(['train', '--data', data, '--config', dbwa, '--out', join(dir, 'dbwa1')]);
    assert.equal(a.code, 0, a.stderr);
    // The checkpoint check compares the ranks' packed weights; a divergence would fail the run.
    const b = mpirun(2, ['bin/qkd.js', 'train', '--data', data, '--config', dbwa, '--out', join(dir, 'dbwa2')]);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(JSON.parse(b.stdout.trim().split('\n').pop()!).storage, 'dbwa');
    // Stochastic rounding packs each rank's partial gradient: the curves agree to rounding noise, not to float32 sums.
    assertClose(losses(join(dir, 'dbwa1')), losses(join(dir, 'dbwa2')), 1e-2, 'DBWA loss');
  });

  it('resumes a 1-rank checkpoint on 2 ranks (the data position is global)', () => {
    const out = join(dir, 'resumed');
    const a = qkd(['train', '--data', data, '--config', config, '--out', out, '--steps', '5']);
    assert.equal(a.code, 0, a.stderr);
    const b = mpirun(2, ['bin/qkd.js', 'train', '--data', data, '--out', out, '--resume', '--steps', '10']);
    assert.equal(b.code, 0, b.stderr);
    assertClose(losses(one), losses(out), RTOL, 'loss');
  });

  /** A 2-rank run that would go on for hours, in the background; `until` polls (up to 60 s) for a state of its output. */
  function longRun(name: string, yaml: string) {
    const out = join(dir, name);
    const config = join(dir, `${name}.yaml`);
    writeFileSync(config, yaml);
    const job = spawn('mpirun', ['-np', '2', process.execPath, 'bin/qkd.js', 'train', '--data', data, '--config', config, '--out', out], { env: { ...process.env, ...MPI_ENV } });
    const log = { stdout: '', stderr: '' };
    job.stdout.on('data', (d: Buffer) => (log.stdout += d.toString()));
    job.stderr.on('data', (d: Buffer) => (log.stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => job.on('close', (code) => resolve(code)));
    const until = async (ready: () => boolean): Promise<boolean> => {
      const deadline = Date.now() + 60_000;
      while (!ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      return ready();
    };
    return { out, job, log, exited, until };
  }

  it('a killed rank ends the job non-zero and leaves the last checkpoint whole', async () => {
    const { out, job, log, exited, until } = longRun('killed', 'steps: 100000\ncheckpoint_every: 3\neval_every: 1000\n');
    // Wait for a checkpoint, then kill rank 1 (a child of mpirun whose environment says so).
    if (!(await until(() => existsSync(join(out, 'latest.json'))))) {
      job.kill('SIGKILL');
      assert.fail('no checkpoint within 60 s');
    }
    const children = spawnSync('pgrep', ['-P', String(job.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    const rank1 = children.find((pid) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('OMPI_COMM_WORLD_RANK=1'));
    assert.ok(rank1 !== undefined, `rank 1 not among mpirun's children ${children.join(', ')}`);
    process.kill(Number(rank1), 'SIGKILL');
    const code = await exited;
    assert.notEqual(code, 0, 'mpirun must fail when a rank dies');
    assert.match(log.stderr, /rank 1 .*exited on signal 9|signal 9/i, log.stderr);
    // The checkpoint latest.json names is complete: one process resumes it.
    const latest = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as { step: number };
    const r = qkd(['train', '--data', data, '--out', out, '--resume', '--steps', String(latest.step + 2)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.trim().split('\n').pop()!).steps, latest.step + 2);
  });

  it('SIGUSR1 to mpirun stops every rank after the same step, with a checkpoint (exit 130)', async () => {
    const { out, job, log, exited, until } = longRun('usr1', 'steps: 100000\ncheckpoint_every: 100000\neval_every: 100000\n');
    try {
      // A step is done when rank 0 has written its metrics line (the progress lines of a 100,000-step run come
      // only every 5,000 steps, which a loaded machine does not reach within the wait).
      const metrics = join(out, 'metrics.jsonl');
      assert.ok(await until(() => existsSync(metrics) && readFileSync(metrics, 'utf8').includes('"step"')), 'no step within 60 s');
      job.kill('SIGUSR1');
      assert.equal(await exited, 130, log.stderr);
    } finally {
      job.kill('SIGKILL'); // a failed assertion must not leave the job running
    }
    assert.equal((log.stderr.match(/qkd: SIGUSR1, saving a checkpoint/g) ?? []).length, 1, 'rank 0 alone says it');
    const latest = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as { step: number };
    assert.ok(latest.step > 0);
    assert.equal(losses(out).length, latest.step, 'the metrics end at the checkpoint');
  });

  it('SIGUSR1 to one rank alone stops them all after the same step; rank 0 says so once (exit 130)', async () => {
    // mpirun forwards a signal to one rank after the other, so one rank can agree to stop before its own copy
    // of the signal has run: here rank 0 never gets one, and still says why the job stopped.
    const { out, job, log, exited, until } = longRun('usr1-rank1', 'steps: 100000\ncheckpoint_every: 100000\neval_every: 100000\n');
    try {
      const metrics = join(out, 'metrics.jsonl');
      assert.ok(await until(() => existsSync(metrics) && readFileSync(metrics, 'utf8').includes('"step"')), 'no step within 60 s');
      const children = spawnSync('pgrep', ['-P', String(job.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
      const rank1 = children.find((pid) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes('OMPI_COMM_WORLD_RANK=1'));
      assert.ok(rank1 !== undefined, `rank 1 not among mpirun's children ${children.join(', ')}`);
      process.kill(Number(rank1), 'SIGUSR1');
      assert.equal(await exited, 130, log.stderr);
    } finally {
      job.kill('SIGKILL');
    }
    assert.equal((log.stderr.match(/qkd: SIGUSR1, saving a checkpoint/g) ?? []).length, 1, log.stderr);
    const latest = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as { step: number };
    assert.equal(losses(out).length, latest.step, 'the metrics end at the checkpoint');
  });

  it('refuses what cannot run on several ranks, naming the field', () => {
    const e = mpirun(2, ['bin/qkd.js', 'eval', '--model', one]);
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, /qkd eval does not run data-parallel/);
    const three = mpirun(3, ['bin/qkd.js', 'train', '--data', data, '--config', config, '--out', join(dir, 'three')]);
    assert.notEqual(three.code, 0);
    assert.match(three.stderr, /batch_size 8 does not divide among 3 ranks/);
  });

  it('refuses ranks that were given different data (MPMD launch)', () => {
    const other = join(dir, 'other.txt');
    writeFileSync(other, loadDefaultCorpus().slice(120_000, 240_000));
    const out = join(dir, 'mixed');
    const args = ['train', '--config', config, '--out', out];
    const r = spawnSync('mpirun', ['-np', '1', process.execPath, 'bin/qkd.js', ...args, '--data', data, ':', '-np', '1', process.execPath, 'bin/qkd.js', ...args, '--data', other], { encoding: 'utf8', env: { ...process.env, ...MPI_ENV } });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /the ranks disagree on the run's settings: corpus differs from rank 0's/);
  });

  it('distils on 2 ranks: the soft-target cache they build together is the 1-rank one, byte for byte', () => {
    const teacher = join(dir, 'teacher');
    assert.equal(qkd(['train', '--data', data, '--out', teacher, '--steps', '5']).code, 0);
    const args = ['distill', '--teacher', teacher, '--data', data, '--recipe', 'kd', '--steps', '4', '--seq-len', '32', '--top-k', '8'];
    const a = qkd([...args, '--out', join(dir, 'd1')]);
    assert.equal(a.code, 0, a.stderr);
    const b = mpirun(2, ['bin/qkd.js', ...args, '--out', join(dir, 'd2')]);
    assert.equal(b.code, 0, b.stderr);
    assert.ok(readFileSync(join(dir, 'd1', 'soft-targets.bin')).equals(readFileSync(join(dir, 'd2', 'soft-targets.bin'))));
    assertClose(losses(join(dir, 'd1')), losses(join(dir, 'd2')), RTOL, 'distill loss');
    assert.ok(existsSync(join(dir, 'd2', 'quantized')), 'rank 0 writes the packed student');
  });
});

describe('without an MPI launcher', () => {
  it('a process that looks launched but lacks the binding stops with a clear error', () => {
    const r = qkd(['train', '--out', join(mkdtempSync(join(tmpdir(), 'qkd-nompi-')), 'x'), '--steps', '1'], { OMPI_COMM_WORLD_SIZE: '2', QKD_MPI_PATH: '/nonexistent/qkd_mpi.node' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /started by an MPI launcher \(OMPI_COMM_WORLD_SIZE is set\), but qkd's MPI binding is not built/);
    assert.match(r.stderr, /QKD_MPI=0/);
  });
  it('QKD_MPI=0 runs one process even under a launcher', () => {
    const r = qkd(['train', '--out', join(mkdtempSync(join(tmpdir(), 'qkd-nompi-')), 'x'), '--steps', '1'], { OMPI_COMM_WORLD_SIZE: '2', QKD_MPI: '0' });
    assert.equal(r.code, 0, r.stderr);
  });
  it('a bad QKD_MPI is named', () => {
    const r = qkd(['train', '--out', join(tmpdir(), 'never'), '--steps', '1'], { QKD_MPI: 'yes' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /QKD_MPI='yes' is not 0 or 1/);
  });
});

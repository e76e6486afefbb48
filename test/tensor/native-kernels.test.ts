// Every native kernel against the TypeScript reference on the sizes, special
// values and threaded shapes of test/helpers/native-kernels.ts: in this
// process (its instruction-set path, normally the best the CPU has) and in a
// child process per lower path (QKD_ISA); the threaded outputs bit-identical
// run to run and for 1 and 3 threads (QKD_THREADS) on every path; two
// threads calling the pool at once; and the addon's argument errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { kernels, nativeStatus, withBackend, type Kernels } from '../../src/tensor/index.js';
import { CASES, threadedDigest } from '../helpers/native-kernels.js';

const skip = nativeStatus().loaded ? false : 'native addon not loaded';
const ISAS = ['portable', 'avx2', 'avx512'];
/** The paths below this process's own (QKD_ISA above what the CPU has would fall back). */
const lowerIsas = ISAS.slice(0, Math.max(0, ISAS.indexOf(nativeStatus().isa ?? 'portable')));
const helper = new URL('../helpers/native-kernels.js', import.meta.url).href;

interface ChildReport { isa: string; threads: number; failures: string[]; digest: string }

/** Runs the per-path cases (or none) and the digest in a child process with QKD_ISA and QKD_THREADS set. */
function inChild(isa: string, threads: number, runCases: boolean): ChildReport {
  const script = `
    import { CASES, threadedDigest } from ${JSON.stringify(helper)};
    import { nativeStatus } from ${JSON.stringify(new URL('../../src/tensor/index.js', import.meta.url).href)};
    const failures = [];
    if (${runCases}) for (const c of CASES.filter((c) => c.perPath)) { try { c.run(); } catch (err) { failures.push(c.name + ': ' + err.message); } }
    const status = nativeStatus();
    console.log(JSON.stringify({ isa: status.isa, threads: status.threads, failures, digest: threadedDigest() }));`;
  const env = { ...process.env, QKD_ISA: isa, QKD_THREADS: String(threads), QKD_BACKEND: 'native' };
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildReport;
  assert.equal(report.isa, isa, 'the child runs the path asked for');
  assert.equal(report.threads, threads);
  return report;
}

describe('native kernels = the TypeScript reference', { skip }, () => {
  for (const c of CASES) it(`${c.name} [${nativeStatus().isa}]`, () => c.run());
});

describe('native kernels on every instruction-set path and thread count', { skip }, () => {
  /** Digest of the threaded outputs per path on 3 threads (from the runs of the cases). */
  const digests = new Map<string, string>();
  for (const isa of lowerIsas) {
    it(`QKD_ISA=${isa} (3 threads): the cases above that are not about thread splits`, () => {
      const report = inChild(isa, 3, true);
      assert.deepEqual(report.failures, []);
      digests.set(isa, report.digest);
    });
  }

  it('threaded outputs are bit-identical run to run, and for 1 thread and several on every path', () => {
    const own = nativeStatus().isa!;
    const here = threadedDigest();
    assert.equal(threadedDigest(), here, 'two runs in one process');
    if (nativeStatus().threads! > 1) digests.set(own, here);
    for (const isa of [...lowerIsas, own]) {
      const several = digests.get(isa) ?? inChild(isa, 3, false).digest;
      assert.equal(inChild(isa, 1, false).digest, several, `QKD_ISA=${isa}: 1 thread and several`);
    }
  });

  it('two threads calling the pool at once (one runs its tasks serially) both get right results', async () => {
    // Each worker runs sgemm big enough for the pool (≥ 2^20 multiply-adds) against the reference.
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.index).then(({ Rng, withBackend, kernels }) => import(workerData.reference).then(({ referenceKernels }) => {
        const rng = new Rng(workerData.seed);
        let bad = 0;
        for (let round = 0; round < 16; round++) {
          const M = 40 + (round % 29), N = 50 + (round % 31), K = 600, ta = (round & 1) === 1, tb = (round & 2) === 2;
          const a = Float32Array.from({ length: M * K }, () => rng.uniform() - 0.5);
          const b = Float32Array.from({ length: K * N }, () => rng.uniform() - 0.5);
          const args = (c) => ({ batch: 1, transA: ta, transB: tb, M, N, K, alpha: 1, a, lda: ta ? M : K, strideA: 0, b, ldb: tb ? K : N, strideB: 0, beta: 0, c, ldc: N, strideC: 0 });
          const got = new Float32Array(M * N), want = new Float32Array(M * N);
          withBackend('native', () => kernels().sgemm(args(got)));
          referenceKernels.sgemm(args(want));
          for (let i = 0; i < got.length; i++) if (!(Math.abs(got[i] - want[i]) <= 1e-6 * K)) { bad++; break; }
        }
        parentPort.postMessage(bad);
      }));`;
    const workerData = (seed: number) => ({
      seed,
      index: new URL('../../src/tensor/index.js', import.meta.url).href,
      reference: new URL('../../src/tensor/reference/kernels.js', import.meta.url).href,
    });
    const run = (seed: number) =>
      new Promise<number>((resolve, reject) => {
        const worker = new Worker(code, { eval: true, workerData: workerData(seed) });
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    assert.deepEqual(await Promise.all([run(1), run(2)]), [0, 0]);
  });
});

describe('native argument errors name the function and the argument', { skip }, () => {
  const N = (): Kernels => withBackend('native', () => kernels());
  const f = (n: number) => new Float32Array(n);
  const u8 = (n: number) => new Uint8Array(n);
  const EMPTY = f(0);
  const gemm = (over: Partial<Parameters<Kernels['sgemm']>[0]>) => () =>
    N().sgemm({ batch: 1, transA: false, transB: false, M: 10, N: 10, K: 10, alpha: 1, a: f(120), lda: 10, strideA: 0, b: f(100), ldb: 10, strideB: 0, beta: 0, c: f(100), ldc: 10, strideC: 0, ...over });
  const shared = f(16);
  const cases: [string, () => unknown, RegExp][] = [
    ['sgemm: short A', gemm({ batch: 2, strideA: 100, c: f(200), strideC: 100 }), /^qkd_native\.sgemm: argument A \(Float32Array\) has 120 elements, needs at least 200$/],
    ['sgemm: short B subarray', gemm({ transB: true, b: f(100).subarray(1) }), /argument B \(Float32Array\) has 99 elements, needs at least 100/],
    ['sgemm: Float64Array A', gemm({ a: new Float64Array(100) as never }), /^qkd_native\.sgemm: argument A must be a Float32Array$/],
    ['sgemm: fractional M', gemm({ M: 10.5 }), /argument M must be a non-negative integer/],
    ['sgemm: lda too small', gemm({ lda: 9 }), /argument lda is 9, must be at least 10/],
    ['softmaxForward: short x', () => N().softmaxForward(f(5), f(6), 2, 3), /^qkd_native\.softmaxForward: argument x \(Float32Array\) has 5 elements, needs at least 6$/],
    ['softmaxForward: x and y overlap', () => N().softmaxForward(shared.subarray(0, 6), shared.subarray(2, 8), 2, 3), /softmaxForward: arguments x and y overlap/],
    ['softmaxBackward: short dx', () => N().softmaxBackward(f(6), f(6), f(4), 2, 3), /^qkd_native\.softmaxBackward: argument dx \(Float32Array\) has 4 elements, needs at least 6$/],
    ['rmsnormForward: short y', () => N().rmsnormForward(f(6), f(3), f(5), f(2), 2, 3, 1e-5), /^qkd_native\.rmsnormForward: argument y \(Float32Array\) has 5 elements, needs at least 6$/],
    ['rmsnormForward: short w', () => N().rmsnormForward(f(6), f(2), f(6), f(2), 2, 3, 1e-5), /argument w \(Float32Array\) has 2 elements, needs at least 3$/],
    ['rmsnormForward: EMPTY y', () => N().rmsnormForward(f(6), f(3), EMPTY, f(2), 2, 3, 1e-5), /rmsnormForward: argument y \(Float32Array\) has 0 elements/],
    ['rmsnormBackward: short (not EMPTY) dx', () => N().rmsnormBackward(f(6), f(3), f(2), f(6), f(5), EMPTY, 2, 3), /^qkd_native\.rmsnormBackward: argument dx \(Float32Array\) has 5 elements, needs at least 6$/],
    ['rmsnormBackward: short rstd', () => N().rmsnormBackward(f(6), f(3), f(1), f(6), f(6), EMPTY, 2, 3), /argument rstd \(Float32Array\) has 1 elements, needs at least 2/],
    ['swigluForward: Float64Array up', () => N().swigluForward(f(4), new Float64Array(4) as never, f(4), 4), /^qkd_native\.swigluForward: argument up must be a Float32Array$/],
    ['rope: odd D', () => N().rope(f(12), f(12), f(3), f(3), 1, 2, 2, 3, 0, 1, false), /^qkd_native\.rope: argument D must be even, got 3$/],
    ['rope: style 2', () => N().rope(f(8), f(8), f(2), f(2), 1, 2, 1, 4, 2 as 0, 1, false), /argument style must be 0 \(half\) or 1 \(interleaved\)/],
    ['rope: direction 0', () => N().rope(f(8), f(8), f(2), f(2), 1, 2, 1, 4, 0, 0 as 1, false), /argument direction must be 1 or -1/],
    ['rope: short cos', () => N().rope(f(8), f(8), f(3), f(4), 1, 2, 1, 4, 0, 1, false), /^qkd_native\.rope: argument cos \(Float32Array\) has 3 elements, needs at least 4$/],
    ['rope: accumulate in place', () => N().rope(shared.subarray(0, 8), shared.subarray(0, 8), f(4), f(4), 1, 2, 1, 4, 1, -1, true), /rope: arguments src and dst must not overlap when accumulate is set/],
    ['adamw: short v', () => N().adamw(f(4), f(4), f(4), f(3), 4, 1e-3, 0.9, 0.999, 1e-8, 1, 1, 1), /^qkd_native\.adamw: argument v \(Float32Array\) has 3 elements, needs at least 4$/],
    ['adamw: NaN lr', () => N().adamw(f(4), f(4), f(4), f(4), 4, NaN, 0.9, 0.999, 1e-8, 1, 1, 1), /adamw: argument lr must be a finite number/],
    ['crossEntropyForward: target out of range', () => N().crossEntropyForward(f(6), Int32Array.of(0, 3), f(2), 2, 3, -100), /^qkd_native\.crossEntropyForward: argument targets\[1\] is 3, must be in \[0, V = 3\) or ignoreIndex \(-100\)$/],
    ['crossEntropyBackward: negative target', () => N().crossEntropyBackward(f(6), Int32Array.of(-5, 0), f(2), f(6), 2, 3, -100, 1), /crossEntropyBackward: argument targets\[0\] is -5/],
    ['crossEntropyForward: Float32Array targets', () => N().crossEntropyForward(f(6), f(2) as never, f(2), 2, 3, -100), /argument targets must be an Int32Array/],
    ['crossEntropyForward: short targets', () => N().crossEntropyForward(f(6), Int32Array.of(0), f(2), 2, 3, -100), /argument targets \(Int32Array\) has 1 elements, needs at least 2/],
    ['crossEntropyForward: fractional ignoreIndex', () => N().crossEntropyForward(f(6), Int32Array.of(0, 0), f(2), 2, 3, 1.5), /argument ignoreIndex must be an integer/],
    ['klForward: short zS', () => N().klForward(f(6), f(5), f(2), f(2), f(2), 2, 3, 1), /^qkd_native\.klForward: argument zS \(Float32Array\) has 5 elements, needs at least 6$/],
    ['klBackward: short dT', () => N().klBackward(f(6), f(6), f(2), f(2), f(2), f(5), EMPTY, 2, 3, 1, 1), /^qkd_native\.klBackward: argument dT \(Float32Array\) has 5 elements, needs at least 6$/],
    ['causalSoftmaxForward: short y', () => N().causalSoftmaxForward(f(8), f(7), 2, 2, 2, 0), /^qkd_native\.causalSoftmaxForward: argument y \(Float32Array\) has 7 elements, needs at least 8$/],
    ['causalSoftmaxBackward: accumulate with dx = dy', () => N().causalSoftmaxBackward(f(8), shared.subarray(0, 8), shared.subarray(0, 8), 2, 2, 2, 0, true), /arguments dy and dx must not overlap when accumulate is set/],
    ['add: a and out partly overlap', () => N().add(shared.subarray(0, 5), f(5), shared.subarray(2, 7), 5), /add: arguments a and out overlap without being the same elements/],
    ['addInto: short src', () => N().addInto(f(4), f(3), 4), /^qkd_native\.addInto: argument src \(Float32Array\) has 3 elements, needs at least 4$/],
  ];
  const fq = (over: Record<number, unknown>) => () => {
    const args: unknown[] = [f(6), f(6), u8(6), 2, 3, 4, false, 2, 32, 1];
    for (const [i, v] of Object.entries(over)) args[Number(i)] = v;
    return (N().fakeQuantForward as (...a: unknown[]) => void)(...args);
  };
  const fqCases: [string, () => unknown, RegExp][] = [
    ['bits 1', fq({ 5: 1 }), /^qkd_native\.fakeQuantForward: argument bits must be an integer from 2 to 8, got 1$/],
    ['bits 9', fq({ 5: 9 }), /argument bits must be an integer from 2 to 8, got 9/],
    ['bits 2.5', fq({ 5: 2.5 }), /argument bits must be an integer/],
    ['granularity 3', fq({ 7: 3 }), /^qkd_native\.fakeQuantForward: argument granularity must be 0 \(tensor\), 1 \(channel\) or 2 \(group\), got 3$/],
    ['granularity -1', fq({ 7: -1 }), /argument granularity must be a non-negative integer/],
    ['groupSize 0', fq({ 8: 0 }), /^qkd_native\.fakeQuantForward: argument groupSize must be a positive integer, got 0$/],
    ['clipRatio 0', fq({ 9: 0 }), /^qkd_native\.fakeQuantForward: argument clipRatio must be in \(0, 1\], got 0$/],
    ['clipRatio 1.5', fq({ 9: 1.5 }), /argument clipRatio must be in \(0, 1\], got 1\.5/],
    ['clipRatio NaN', fq({ 9: NaN }), /argument clipRatio must be in \(0, 1\], got nan/],
    ['symmetric 2', fq({ 6: 2 }), /argument symmetric must be a boolean or 0\/1/],
    ['short w', fq({ 0: f(5) }), /^qkd_native\.fakeQuantForward: argument w \(Float32Array\) has 5 elements, needs at least 6$/],
    ['short out', fq({ 1: f(5) }), /argument out \(Float32Array\) has 5 elements, needs at least 6$/],
    ['short mask', fq({ 2: u8(5) }), /argument mask \(Uint8Array\) has 5 elements, needs at least 6$/],
    ['Int8Array mask', fq({ 2: new Int8Array(6) }), /argument mask must be a Uint8Array/],
    ['w and out partly overlap', fq({ 0: shared.subarray(0, 6), 1: shared.subarray(2, 8) }), /arguments w and out overlap without being the same elements/],
    ['mask inside w', fq({ 0: shared.subarray(0, 6), 2: new Uint8Array(shared.buffer, 8, 6) }), /^qkd_native\.fakeQuantForward: arguments mask and w must not overlap$/],
    ['mask inside out', fq({ 1: shared.subarray(8, 14), 2: new Uint8Array(shared.buffer, 40, 6) }), /arguments mask and out must not overlap/],
    ['backward: short mask', () => N().fakeQuantBackward(f(6), u8(5), f(6), 6), /^qkd_native\.fakeQuantBackward: argument mask \(Uint8Array\) has 5 elements, needs at least 6$/],
    ['backward: short dy', () => N().fakeQuantBackward(f(5), u8(6), f(6), 6), /argument dy \(Float32Array\) has 5 elements, needs at least 6$/],
    ['backward: mask inside dw', () => N().fakeQuantBackward(f(6), new Uint8Array(shared.buffer, 4, 6), shared.subarray(0, 6), 6), /arguments mask and dw must not overlap/],
    ['backward: fractional n', () => N().fakeQuantBackward(f(6), u8(6), f(6), 1.5), /argument n must be a non-negative integer/],
  ];
  for (const [name, call, pattern] of [...cases, ...fqCases.map(([n, c, p]) => [`fakeQuant ${n}`, c, p] as [string, () => unknown, RegExp])]) {
    it(name, () => assert.throws(call, (err: Error) => pattern.test(err.message)));
  }

  it('accepts what the contract allows: dx = dy writing, an ignored last row without logits, rowKl EMPTY without dT, side-by-side views of one buffer', () => {
    const scores = f(8);
    N().causalSoftmaxBackward(f(8), scores, scores, 2, 2, 2, 0, false);
    assert.ok(N().crossEntropyForward(f(3), Int32Array.of(1, -100), f(1), 2, 3, -100) > 0);
    const dS = f(6);
    N().klBackward(f(6), f(6), f(2), f(2), EMPTY, EMPTY, dS, 2, 3, 1, 1);
    assert.ok(dS.every((v) => Math.abs(v) < 1e-7));
    const buffer = f(16);
    N().fakeQuantForward(buffer.subarray(0, 6), buffer.subarray(6, 12), new Uint8Array(buffer.buffer, 48, 6), 2, 3, 4, true, 1, 1, 0.5);
  });
});

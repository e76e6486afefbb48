/**
 * checkOp: the op test of every op, in two parts.
 *  1. Gradient check in float64 on the reference backend: the analytic
 *     vector-Jacobian product against central finite differences of
 *     Σ f(x)·R (R a fixed random projection), so the backward formula is
 *     tested, not float32 rounding.
 *  2. Backend agreement in float32: forward output and every input gradient
 *     of the native backend against the reference within atol + rtol·|ref|.
 */
import assert from 'node:assert/strict';
import { Rng, Tensor, backward, clearTape, floatFrom, nativeStatus, withBackend, withFloat64 } from '../../src/tensor/index.js';

export type InputSpec = { shape: number[]; values?: number[]; noGrad?: boolean; lo?: number; hi?: number };

export interface CheckOpOptions {
  /** Tolerances of the float64 gradient check (default 1e-6 / 1e-5). */
  gradAtol?: number;
  gradRtol?: number;
  /** Tolerances of native vs reference in float32 (default 1e-5 / 1e-4). */
  atol?: number;
  rtol?: number;
  /** Finite-difference step (default 1e-6). */
  eps?: number;
  /** At most this many entries per input are perturbed (default 64). */
  maxProbes?: number;
  seed?: number;
}

function makeInputs(specs: InputSpec[], seed: number): Tensor[] {
  const rng = new Rng(seed);
  return specs.map((s) => {
    const size = s.shape.reduce((a, b) => a * b, 1);
    const lo = s.lo ?? -1;
    const hi = s.hi ?? 1;
    const values = s.values ?? Array.from({ length: size }, () => lo + (hi - lo) * rng.uniform());
    return new Tensor(s.shape, floatFrom(values), !s.noGrad);
  });
}

function projection(size: number, seed: number): number[] {
  const rng = new Rng(seed ^ 0x5bd1e995);
  return Array.from({ length: size }, () => rng.uniform() * 2 - 1);
}

function projected(y: Tensor, r: number[]): number {
  let s = 0;
  for (let i = 0; i < y.size; i++) s += y.data[i]! * r[i]!;
  return s;
}

/** Runs fn and backward with seed R; returns output and input gradients. */
function runWithGrads(fn: (xs: Tensor[]) => Tensor, inputs: Tensor[], seed: number): { out: number[]; grads: (number[] | null)[] } {
  const y = fn(inputs);
  const r = projection(y.size, seed);
  const out = y.toArray();
  if (y.node !== null) backward(y, floatFrom(r));
  else clearTape();
  return { out, grads: inputs.map((t) => (t.grad ? Array.from(t.grad) : null)) };
}

export function gradCheck(name: string, fn: (xs: Tensor[]) => Tensor, specs: InputSpec[], options: CheckOpOptions = {}): void {
  const seed = options.seed ?? 1;
  const eps = options.eps ?? 1e-6;
  const atol = options.gradAtol ?? 1e-6;
  const rtol = options.gradRtol ?? 1e-5;
  const maxProbes = options.maxProbes ?? 64;
  withBackend('reference', () =>
    withFloat64(() => {
      const inputs = makeInputs(specs, seed);
      const y = fn(inputs);
      const r = projection(y.size, seed);
      if (y.node === null) throw new Error(`${name}: output was not recorded for autograd`);
      backward(y, floatFrom(r));
      const rng = new Rng(seed + 7);
      inputs.forEach((x, k) => {
        if (specs[k]!.noGrad) return;
        const analytic = x.grad ?? new Float64Array(x.size);
        const probes = x.size <= maxProbes ? Array.from({ length: x.size }, (_, i) => i) : Array.from({ length: maxProbes }, () => rng.int(x.size));
        for (const i of probes) {
          const saved = x.data[i]!;
          x.data[i] = saved + eps;
          const fPlus = projected(fn(inputs), r);
          x.data[i] = saved - eps;
          const fMinus = projected(fn(inputs), r);
          x.data[i] = saved;
          clearTape();
          const numeric = (fPlus - fMinus) / (2 * eps);
          const a = analytic[i]!;
          const tol = atol + rtol * Math.abs(numeric);
          assert.ok(Math.abs(a - numeric) <= tol, `${name}: d/d(input ${k})[${i}] analytic ${a} vs finite difference ${numeric} (tol ${tol.toExponential(2)})`);
        }
      });
    }),
  );
}

export function backendsAgree(name: string, fn: (xs: Tensor[]) => Tensor, specs: InputSpec[], options: CheckOpOptions = {}): void {
  if (!nativeStatus().loaded) return; // test/tensor/native.test.ts fails loudly in that case
  const seed = options.seed ?? 1;
  const atol = options.atol ?? 1e-5;
  const rtol = options.rtol ?? 1e-4;
  const ref = withBackend('reference', () => runWithGrads(fn, makeInputs(specs, seed), seed));
  const nat = withBackend('native', () => runWithGrads(fn, makeInputs(specs, seed), seed));
  const compare = (what: string, a: number[], b: number[]): void => {
    assert.equal(a.length, b.length, `${name}: ${what} sizes differ`);
    for (let i = 0; i < a.length; i++) {
      const tol = atol + rtol * Math.abs(a[i]!);
      if (!(Math.abs(a[i]! - b[i]!) <= tol) && !(Number.isNaN(a[i]!) && Number.isNaN(b[i]!)) && a[i] !== b[i]) {
        assert.fail(`${name}: native ${what}[${i}] = ${b[i]} vs reference ${a[i]} (tol ${tol.toExponential(2)})`);
      }
    }
  };
  compare('output', ref.out, nat.out);
  ref.grads.forEach((g, k) => {
    if (g && nat.grads[k]) compare(`grad of input ${k}`, g, nat.grads[k]!);
  });
}

/** Gradient check plus backend agreement. */
export function checkOp(name: string, fn: (xs: Tensor[]) => Tensor, specs: InputSpec[], options: CheckOpOptions = {}): void {
  gradCheck(name, fn, specs, options);
  backendsAgree(name, fn, specs, options);
}

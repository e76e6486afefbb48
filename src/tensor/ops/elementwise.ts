/**
 * Elementwise ops: broadcasting add / sub / mul / div (NumPy rules, shapes
 * aligned from the right), scalar scale / shift, and unary functions with
 * their derivatives in one table (exp, log, tanh, sigmoid, silu, gelu, relu,
 * square, sqrt, neg, abs).
 */
import { QkdError, fmtShape } from '../../errors.js';
import { passGrad, record } from '../tape.js';
import { kernels } from '../backend.js';
import { sigmoid as sigmoidScalar } from '../reference/kernels.js';
import { Tensor, type FloatArray } from '../tensor.js';

// ---- broadcasting ---------------------------------------------------------

interface BroadcastPlan {
  outShape: number[];
  /** Per output axis: element stride into a (0 where a is broadcast). */
  aStrides: number[];
  bStrides: number[];
}

function broadcastPlan(op: string, aShape: readonly number[], bShape: readonly number[]): BroadcastPlan {
  const rank = Math.max(aShape.length, bShape.length);
  const outShape = new Array<number>(rank);
  const aStrides = new Array<number>(rank);
  const bStrides = new Array<number>(rank);
  let sa = 1;
  let sb = 1;
  for (let i = rank - 1; i >= 0; i--) {
    const da = aShape[i - (rank - aShape.length)] ?? 1;
    const db = bShape[i - (rank - bShape.length)] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new QkdError('SHAPE', `${op}: shapes ${fmtShape(aShape)} and ${fmtShape(bShape)} do not broadcast (axis ${i}: ${da} vs ${db})`);
    }
    outShape[i] = Math.max(da, db);
    if (da === 0 || db === 0) outShape[i] = 0;
    aStrides[i] = da === 1 ? 0 : sa;
    bStrides[i] = db === 1 ? 0 : sb;
    sa *= da;
    sb *= db;
  }
  return { outShape, aStrides, bStrides };
}

/**
 * Calls body(outOffset, aOffset, bOffset, n, aStep, bStep) for each run of
 * the last output axis.
 */
function forEachRun(
  plan: BroadcastPlan,
  body: (o: number, ia: number, ib: number, n: number, sa: number, sb: number) => void,
): void {
  const { outShape, aStrides, bStrides } = plan;
  const rank = outShape.length;
  if (rank === 0) {
    body(0, 0, 0, 1, 0, 0);
    return;
  }
  const n = outShape[rank - 1]!;
  const sa = aStrides[rank - 1]!;
  const sb = bStrides[rank - 1]!;
  let runs = 1;
  for (let i = 0; i < rank - 1; i++) runs *= outShape[i]!;
  if (n === 0 || runs === 0) return;
  const index = new Array<number>(rank - 1).fill(0);
  let ia = 0;
  let ib = 0;
  for (let r = 0; r < runs; r++) {
    body(r * n, ia, ib, n, sa, sb);
    for (let ax = rank - 2; ax >= 0; ax--) {
      index[ax]!++;
      ia += aStrides[ax]!;
      ib += bStrides[ax]!;
      if (index[ax]! < outShape[ax]!) break;
      ia -= aStrides[ax]! * outShape[ax]!;
      ib -= bStrides[ax]! * outShape[ax]!;
      index[ax] = 0;
    }
  }
}

function sameShape(a: Tensor, b: Tensor): boolean {
  return a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}

type BinaryKind = 'add' | 'sub' | 'mul' | 'div';

function binary(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  if (kind === 'add' && sameShape(a, b)) return addSameShape(a, b);
  // Equal shapes iterate as one flat run (the common case, and the fastest).
  const flat = sameShape(a, b);
  const plan: BroadcastPlan = flat ? { outShape: [a.size], aStrides: [1], bStrides: [1] } : broadcastPlan(kind, a.shape, b.shape);
  const out = new Tensor(flat ? a.shape : plan.outShape);
  const y = out.data;
  const A = a.data;
  const B = b.data;
  forEachRun(plan, (o, ia, ib, n, sa, sb) => {
    switch (kind) {
      case 'add':
        for (let j = 0; j < n; j++) y[o + j] = A[ia + j * sa]! + B[ib + j * sb]!;
        break;
      case 'sub':
        for (let j = 0; j < n; j++) y[o + j] = A[ia + j * sa]! - B[ib + j * sb]!;
        break;
      case 'mul':
        for (let j = 0; j < n; j++) y[o + j] = A[ia + j * sa]! * B[ib + j * sb]!;
        break;
      case 'div':
        for (let j = 0; j < n; j++) y[o + j] = A[ia + j * sa]! / B[ib + j * sb]!;
        break;
    }
  });
  return record(out, kind, [a, b], (dy) => {
    const da = a.requiresGrad ? a.ensureGrad() : null;
    const db = b.requiresGrad ? b.ensureGrad() : null;
    forEachRun(plan, (o, ia, ib, n, sa, sb) => {
      for (let j = 0; j < n; j++) {
        const g = dy[o + j]!;
        const pa = ia + j * sa;
        const pb = ib + j * sb;
        switch (kind) {
          case 'add':
            if (da) da[pa]! += g;
            if (db) db[pb]! += g;
            break;
          case 'sub':
            if (da) da[pa]! += g;
            if (db) db[pb]! -= g;
            break;
          case 'mul':
            if (da) da[pa]! += g * B[pb]!;
            if (db) db[pb]! += g * A[pa]!;
            break;
          case 'div': {
            const bv = B[pb]!;
            if (da) da[pa]! += g / bv;
            if (db) db[pb]! -= (g * A[pa]!) / (bv * bv);
            break;
          }
        }
      }
    });
  });
}

/** Same-shape add (residual connections): one kernel call each way, gradient passed without copies. */
function addSameShape(a: Tensor, b: Tensor): Tensor {
  const out = new Tensor(a.shape);
  kernels().add(a.data, b.data, out.data, a.size);
  return record(out, 'add', [a, b], (dy) => passGrad(dy, a, b));
}

/**
 * SwiGLU gate: silu(gate) ⊙ up, fused (one pass forward, one backward).
 * gate and up have the same shape.
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  if (!sameShape(gate, up)) throw new QkdError('SHAPE', `swiglu: gate ${fmtShape(gate.shape)} and up ${fmtShape(up.shape)} differ`);
  const out = new Tensor(gate.shape);
  kernels().swigluForward(gate.data, up.data, out.data, gate.size);
  return record(out, 'swiglu', [gate, up], (dy) => {
    const empty = gate.data.subarray(0, 0);
    kernels().swigluBackward(gate.data, up.data, dy, gate.requiresGrad ? gate.ensureGrad() : empty, up.requiresGrad ? up.ensureGrad() : empty, gate.size);
  });
}

export const add = (a: Tensor, b: Tensor): Tensor => binary('add', a, b);
export const sub = (a: Tensor, b: Tensor): Tensor => binary('sub', a, b);
export const mul = (a: Tensor, b: Tensor): Tensor => binary('mul', a, b);
export const div = (a: Tensor, b: Tensor): Tensor => binary('div', a, b);

/** x · s for a number s. */
export function scale(x: Tensor, s: number): Tensor {
  const out = new Tensor(x.shape);
  for (let i = 0; i < x.size; i++) out.data[i] = x.data[i]! * s;
  return record(out, 'scale', [x], (dy) => {
    const dx = x.ensureGrad();
    for (let i = 0; i < dy.length; i++) dx[i]! += dy[i]! * s;
  });
}

/** x + s for a number s. */
export function addScalar(x: Tensor, s: number): Tensor {
  const out = new Tensor(x.shape);
  for (let i = 0; i < x.size; i++) out.data[i] = x.data[i]! + s;
  return record(out, 'addScalar', [x], (dy) => {
    const dx = x.ensureGrad();
    for (let i = 0; i < dy.length; i++) dx[i]! += dy[i]!;
  });
}

// ---- unary table ------------------------------------------------------------

/**
 * erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough
 * for float32 GELU; JavaScript has no Math.erf.
 */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

const INV_SQRT_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

interface UnaryRule {
  f(x: number): number;
  /** Derivative given the input x and the output y. */
  df(x: number, y: number): number;
}


export const UNARY = {
  exp: { f: Math.exp, df: (_x, y) => y },
  log: { f: Math.log, df: (x) => 1 / x },
  tanh: { f: Math.tanh, df: (_x, y) => 1 - y * y },
  sigmoid: { f: sigmoidScalar, df: (_x, y) => y * (1 - y) },
  silu: {
    f: (x) => x * sigmoidScalar(x),
    df: (x) => {
      const s = sigmoidScalar(x);
      return s * (1 + x * (1 - s));
    },
  },
  /** Exact GELU, x·Φ(x) (PyTorch's default, not the tanh approximation). */
  gelu: {
    f: (x) => 0.5 * x * (1 + erf(x * INV_SQRT_2)),
    df: (x) => 0.5 * (1 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x),
  },
  /** GELU's tanh approximation, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (PyTorch's approximate='tanh', Gemma's gelu_pytorch_tanh). */
  gelu_tanh: {
    f: (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
    df: (x) => {
      const th = Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
      return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
    },
  },
  relu: { f: (x) => (x > 0 ? x : 0), df: (x) => (x > 0 ? 1 : 0) },
  square: { f: (x) => x * x, df: (x) => 2 * x },
  sqrt: { f: Math.sqrt, df: (_x, y) => 0.5 / y },
  neg: { f: (x) => -x, df: () => -1 },
  abs: { f: Math.abs, df: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0) },
} satisfies Record<string, UnaryRule>;

export type UnaryName = keyof typeof UNARY;

export function unary(name: UnaryName, x: Tensor): Tensor {
  const rule: UnaryRule = UNARY[name];
  if (rule === undefined) throw new QkdError('ARGUMENT', `unary: unknown function '${String(name)}'`);
  const out = new Tensor(x.shape);
  const X = x.data;
  const Y = out.data;
  for (let i = 0; i < X.length; i++) Y[i] = rule.f(X[i]!);
  return record(out, name, [x], (dy: FloatArray) => {
    const dx = x.ensureGrad();
    for (let i = 0; i < dy.length; i++) dx[i]! += dy[i]! * rule.df(X[i]!, Y[i]!);
  });
}

export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const silu = (x: Tensor): Tensor => unary('silu', x);
export const gelu = (x: Tensor): Tensor => unary('gelu', x);
export const geluTanh = (x: Tensor): Tensor => unary('gelu_tanh', x);

/** GeGLU gate (Gemma): gelu_tanh(gate) ⊙ up, composed. */
export function geglu(gate: Tensor, up: Tensor): Tensor {
  return mul(geluTanh(gate), up);
}

/**
 * Soft-capping c·tanh(x / c) (Gemma 2's logits): one pass forward, one
 * backward (dx = dy·(1 − tanh²)); on logits of a 256k vocabulary the
 * composed scale ∘ tanh ∘ scale made three passes and three buffers.
 */
export function softcap(x: Tensor, c: number): Tensor {
  if (!(c > 0)) throw new QkdError('ARGUMENT', `softcap: cap ${c} must be positive`, { field: 'softcap' });
  const out = new Tensor(x.shape);
  const X = x.data;
  const Y = out.data;
  for (let i = 0; i < X.length; i++) Y[i] = c * Math.tanh(X[i]! / c);
  return record(out, 'softcap', [x], (dy) => {
    const dx = x.ensureGrad();
    for (let i = 0; i < dy.length; i++) {
      const t = Y[i]! / c;
      dx[i]! += dy[i]! * (1 - t * t);
    }
  });
}
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const square = (x: Tensor): Tensor => unary('square', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const neg = (x: Tensor): Tensor => unary('neg', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);

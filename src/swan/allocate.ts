/**
 * Mixed-precision bit allocation under a size budget (docs/algorithms.md §1).
 *
 * Each quantizable tensor t gets bits b_t from a set (default {2,3,4,8,16}).
 * The predicted damage of a choice is w_t · e_t(b)², with e_t(b) the
 * measured relative RTN error ‖Q_b(W) − W‖_F/‖W‖_F at b bits and w_t a
 * power of the tensor's composite sensitivity score (floored so no tensor is
 * free to destroy; see weightPower). The greedy starts every tensor at the smallest width and
 * repeatedly applies the upgrade with the largest damage reduction per extra
 * byte that still fits the budget, looking past the next width too (a 4→8
 * jump can be worth more per byte than 4→... nothing in between). The cost in
 * bytes is the packed format's (quant/scheme.ts), so the budget includes the
 * scales and zero points, and the reported average bits are what the
 * checkpoint really holds.
 */
import { QkdError } from '../errors.js';
import { PLAN_BITS, packedBytes, type PlanBits, type QuantPlan, type QuantScheme } from '../quant/scheme.js';

export interface AllocationTensor {
  name: string;
  rows: number;
  cols: number;
  /** Composite sensitivity S_t ∈ [0, 1]. */
  composite: number;
  /** Relative RTN error at each allowed width (16 may be omitted: treated as 0). */
  errors: Partial<Record<number, number>>;
}

export interface AllocationOptions {
  /** Average bits per quantized parameter, scales and zero points included. */
  budgetBits: number;
  scheme: QuantScheme;
  /** Allowed widths (default {2, 3, 4, 8, 16}). */
  choices?: readonly PlanBits[];
  /** 'composite' (default) weights the damage by S_t; 'uniform' by 1 (error only, for ablations). */
  weighting?: 'composite' | 'uniform';
  /** Smallest damage weight (default 0.02). */
  weightFloor?: number;
  /**
   * Sharpness p of the composite weighting, w_t = max(floor, S_t)^p (default 4).
   * Composites of one model often span only a factor 2–3, while an 8-bit
   * upgrade must beat a 3→4-bit one by ~12x per byte to be chosen; p > 1
   * lets the scores move bits between tensors. The default was chosen on the
   * `npm run experiment -- ptq` model (p = 1, 2, 4, 8 tried; see BENCHMARKS.md),
   * so treat it as a tuned default, not a law.
   */
  weightPower?: number;
}

export interface Allocation {
  plan: QuantPlan;
  /** 8 · bytes / params over the planned tensors. */
  avgBits: number;
  bytes: number;
  params: number;
  /** Σ w_t e_t(b_t)² of the plan. */
  predictedDamage: number;
}

/** Bytes and average bits of a plan over the given tensors. */
export function planCost(tensors: readonly { name: string; rows: number; cols: number }[], plan: QuantPlan): { bytes: number; params: number; avgBits: number } {
  let bytes = 0;
  let params = 0;
  for (const t of tensors) {
    const bits = plan.bits[t.name];
    if (bits === undefined) continue;
    bytes += packedBytes(t.rows, t.cols, bits, plan.scheme);
    params += t.rows * t.cols;
  }
  return { bytes, params, avgBits: params > 0 ? (8 * bytes) / params : 0 };
}

/** A plan with the same width for every tensor. */
export function uniformPlan(tensors: readonly { name: string }[], bits: PlanBits, scheme: QuantScheme): QuantPlan {
  return { scheme, bits: Object.fromEntries(tensors.map((t) => [t.name, bits])) };
}

/**
 * The greedy of allocateBits on plain numbers: item i at choice l costs
 * costs[i][l] bytes and does damages[i][l] (choices in ascending cost). Every
 * item starts at choice 0; the upgrade with the largest damage reduction per
 * extra byte that fits the budget is applied until none is left, looking
 * past the next choice too. Returns each item's choice and the bytes used.
 */
export function greedyUpgrade(costs: readonly (readonly number[])[], damages: readonly (readonly number[])[], budgetBytes: number): { level: number[]; bytes: number } {
  const level = costs.map(() => 0);
  let bytes = costs.reduce((s, c) => s + c[0]!, 0);
  for (;;) {
    let best = -1;
    let bestLevel = -1;
    let bestRatio = 0;
    let bestExtra = 0;
    costs.forEach((c, i) => {
      const d = damages[i]!;
      const here = level[i]!;
      for (let l = here + 1; l < c.length; l++) {
        const extra = c[l]! - c[here]!;
        if (bytes + extra > budgetBytes * (1 + 1e-12)) break;
        const gain = d[here]! - d[l]!;
        const ratio = extra > 0 ? gain / extra : gain > 0 ? Infinity : 0;
        if (gain > 0 && ratio > bestRatio) {
          bestRatio = ratio;
          best = i;
          bestLevel = l;
          bestExtra = extra;
        }
      }
    });
    if (best < 0) return { level, bytes };
    level[best] = bestLevel;
    bytes += bestExtra;
  }
}

export function allocateBits(tensors: readonly AllocationTensor[], options: AllocationOptions): Allocation {
  const choices = [...(options.choices ?? PLAN_BITS)].sort((a, b) => a - b);
  if (choices.length === 0 || choices.some((b) => !(PLAN_BITS as readonly number[]).includes(b))) {
    throw new QkdError('ARGUMENT', `allocateBits: choices must be a non-empty subset of {${PLAN_BITS.join(', ')}}, got {${choices.join(', ')}}`, { field: 'choices' });
  }
  const damage = damageModel(options);
  const cost = (t: AllocationTensor, bits: number): number => packedBytes(t.rows, t.cols, bits, options.scheme);

  const params = tensors.reduce((s, t) => s + t.rows * t.cols, 0);
  const budgetBytes = (options.budgetBits * params) / 8;
  const costs = tensors.map((t) => choices.map((b) => cost(t, b)));
  const damages = tensors.map((t) => choices.map((b) => damage(t, b)));
  const minBytes = costs.reduce((s, c) => s + c[0]!, 0);
  if (minBytes > budgetBytes * (1 + 1e-12)) {
    const minBits = params > 0 ? (8 * minBytes) / params : 0;
    throw new QkdError('ARGUMENT', `budget of ${options.budgetBits} bits per weight is below the smallest plan (${minBits.toFixed(3)} bits at ${choices[0]} bits everywhere)`, { field: 'budget', hint: `at least ${minBits.toFixed(3)}` });
  }
  const { level, bytes } = greedyUpgrade(costs, damages, budgetBytes);
  const plan: QuantPlan = { scheme: options.scheme, bits: {} };
  let predictedDamage = 0;
  tensors.forEach((t, i) => {
    const bits = choices[level[i]!]!;
    plan.bits[t.name] = bits;
    predictedDamage += damage(t, bits);
  });
  return { plan, avgBits: params > 0 ? (8 * bytes) / params : 0, bytes, params, predictedDamage };
}

/** The allocator's predicted damage of one tensor at a width: w_t · e_t(b)² (see the file comment). */
function damageModel(options: Pick<AllocationOptions, 'weighting' | 'weightFloor' | 'weightPower'>): (t: AllocationTensor, bits: number) => number {
  const floor = options.weightFloor ?? 0.02;
  const power = options.weightPower ?? 4;
  const weight = (t: AllocationTensor): number => (options.weighting === 'uniform' ? 1 : Math.max(floor, t.composite) ** power);
  const errorAt = (t: AllocationTensor, bits: number): number => {
    const e = t.errors[bits];
    if (e === undefined) {
      if (bits >= 16) return 0;
      throw new QkdError('ARGUMENT', `allocateBits: no measured error for '${t.name}' at ${bits} bits`, { field: `${t.name}.errors.${bits}` });
    }
    return e;
  };
  return (t, bits) => weight(t) * errorAt(t, bits) ** 2;
}

/**
 * Σ w_t e_t(b_t)² of any plan over these tensors, as allocateBits predicts
 * it: how a plan made from one profile (another seed, a user's plan file)
 * scores under the metrics of another. Every tensor must be in the plan.
 */
export function planDamage(tensors: readonly AllocationTensor[], plan: QuantPlan, options: Pick<AllocationOptions, 'weighting' | 'weightFloor' | 'weightPower'> = {}): number {
  const damage = damageModel(options);
  let total = 0;
  for (const t of tensors) {
    const bits = plan.bits[t.name];
    if (bits === undefined) throw new QkdError('ARGUMENT', `planDamage: the plan has no width for '${t.name}'`, { field: t.name });
    total += damage(t, bits);
  }
  return total;
}

/**
 * Reads a user plan file's contents: a JSON object name → bits,
 * { "bits": { name → bits } }, or a `qkd audit --json` report (its plan.bits). Every width must be one of PLAN_BITS and
 * every name a known tensor.
 */
export function parsePlanJson(text: string, known: ReadonlySet<string>, scheme: QuantScheme, path: string): QuantPlan {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new QkdError('IO', `plan file is not valid JSON: ${(err as Error).message}`, { path });
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  // A `qkd audit --json` report holds its plan as { plan: { bits } }.
  const planned = isObject(value) && isObject(value.plan) && isObject(value.plan.bits) ? value.plan : value;
  const table = isObject(planned) && isObject(planned.bits) ? planned.bits : planned;
  if (!isObject(table)) throw new QkdError('IO', 'plan file must be a JSON object of tensor name → bits', { path, hint: '{"model.layers.0.mlp.down_proj.weight": 8, ...}' });
  const plan: QuantPlan = { scheme, bits: {} };
  for (const [name, bits] of Object.entries(table)) {
    if (!known.has(name)) throw new QkdError('IO', `plan names a tensor the model does not have (or that is not a 2-D weight): '${name}'`, { path, field: name });
    if (typeof bits !== 'number' || !(PLAN_BITS as readonly number[]).includes(bits)) {
      throw new QkdError('IO', `plan gives ${JSON.stringify(bits)} bits for '${name}'`, { path, field: name, hint: `one of ${PLAN_BITS.join(', ')}` });
    }
    plan.bits[name] = bits as PlanBits;
  }
  return plan;
}

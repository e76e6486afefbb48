/**
 * From a profile to a bit plan: measure each 2-D weight's RTN error at every
 * candidate width while the profiler has it in memory (so the model is read
 * once), then allocate bits under a budget (allocate.ts) or assign one width
 * everywhere, and apply a user's per-tensor overrides.
 */
import { openTensorSource } from '../io/tensor-source.js';
import { quantizationErrorsStart } from '../quant/rtn.js';
import { PLAN_BITS, type PlanBits, type QuantPlan, type QuantScheme } from '../quant/scheme.js';
import { allocateBits, planCost, uniformPlan, type AllocationTensor } from './allocate.js';
import { profileModel, type ProfileOptions } from './profile.js';
import type { AuditReport } from './types.js';

export interface PlanRequest {
  scheme: QuantScheme;
  /** Average bits per quantized weight (scales included): mixed precision by the greedy allocator. */
  budgetBits?: number;
  /** One width for every tensor (when no budget is given; default 4). */
  bits?: PlanBits;
  /** Allowed widths for the allocator (default {2,3,4,8,16}). */
  choices?: readonly PlanBits[];
  /** Damage weighting of the allocator (default 'composite'). */
  weighting?: 'composite' | 'uniform';
  /** Sharpness of the composite weighting (allocate.ts weightPower). */
  weightPower?: number;
  /** Per-tensor overrides (a plan file), applied last. */
  overrides?: Record<string, PlanBits>;
}

export interface PlannedAudit {
  report: AuditReport;
  plan: QuantPlan;
  /** Tensors the plan covers, with the measured errors the allocator used. */
  tensors: AllocationTensor[];
  avgBits: number;
  bytes: number;
  params: number;
}

/**
 * A visitor for profileModel that records the RTN error of each 2-D weight
 * at each width. Its visit starts the measurement in the background and
 * returns the function that completes it and records the errors (profileModel
 * calls it; a caller visiting by hand must too, before changing the weight).
 */
export function errorCollector(scheme: QuantScheme, widths: readonly number[] = PLAN_BITS): { visit: NonNullable<ProfileOptions['visit']>; measured: Map<string, { rows: number; cols: number; errors: Record<number, number> }> } {
  const measured = new Map<string, { rows: number; cols: number; errors: Record<number, number> }>();
  return {
    measured,
    // The errors are measured in the background while the profiler works on the same weight (profileModel
    // completes the job before the weight's buffer is reused).
    visit(name, w, rows, cols) {
      const quantized = widths.filter((b) => b < 16);
      const done = quantizationErrorsStart(w, rows, cols, quantized, scheme);
      return () => {
        const errors: Record<number, number> = {};
        done().forEach((e, i) => (errors[quantized[i]!] = e));
        measured.set(name, { rows, cols, errors });
      };
    },
  };
}

/** Builds the plan for a profiled model from the measured errors. */
export function planFromProfile(report: AuditReport, measured: ReadonlyMap<string, { rows: number; cols: number; errors: Record<number, number> }>, request: PlanRequest): Omit<PlannedAudit, 'report'> {
  const tensors: AllocationTensor[] = [];
  for (const t of report.tensors) {
    const m = measured.get(t.name);
    if (m === undefined || t.composite === null) continue;
    tensors.push({ name: t.name, rows: m.rows, cols: m.cols, composite: t.composite, errors: m.errors });
  }
  let plan: QuantPlan;
  if (request.budgetBits !== undefined) {
    plan = allocateBits(tensors, { budgetBits: request.budgetBits, scheme: request.scheme, choices: request.choices, weighting: request.weighting, weightPower: request.weightPower }).plan;
  } else {
    plan = uniformPlan(tensors, request.bits ?? 4, request.scheme);
  }
  if (request.overrides) plan = { scheme: plan.scheme, bits: { ...plan.bits, ...request.overrides } };
  const cost = planCost(tensors, plan);
  return { plan, tensors, ...cost };
}

/** Profiles the model at `path` and plans its bits in one streaming pass. */
export function auditAndPlan(path: string, request: PlanRequest, options: ProfileOptions = {}): PlannedAudit {
  const collector = errorCollector(request.scheme, request.budgetBits !== undefined ? (request.choices ?? PLAN_BITS) : []);
  const source = openTensorSource(path);
  let report: AuditReport;
  try {
    report = profileModel(source, { ...options, visit: collector.visit });
  } finally {
    source.close();
  }
  return { report, ...planFromProfile(report, collector.measured, request) };
}

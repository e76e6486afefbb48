/**
 * Learned step sizes (LSQ / LSQ+) outside the autograd graph: their initial
 * values and the packed form of a weight quantized with them (docs/qat.md).
 *
 * Parameters per group (groups as in the packed format: `groupSize` input
 * columns of a row, or the whole row): θ = ln s and, for an asymmetric grid,
 * the real-valued zero point z. learnedFakeQuantize (tensor/ops/quant.ts)
 * rounds s to f16 and z to an integer in [0, 2^b − 1], so the packed
 * checkpoint (codes, f16 scales, U8 zeros) decodes exactly the weights the
 * last training forward used.
 *
 * Initialisation:
 * - 'rtn': the scale and zero point round-to-nearest PTQ uses (quant/rtn.ts),
 *   so the first QAT forward is the RTN-quantized model;
 * - 'clip-search': per group, the range [lo·r, hi·r] with the clip ratio
 *   r ∈ {1, 0.99, …, 0.50} that minimises the group's reconstruction error
 *   ‖ŵ − w‖² (data-free; ties keep the larger r);
 * - GPTQ starts are made by the caller from quantizeLlama's GPTQ result
 *   (scales and zeros of its QuantizedTensor, with the weights set to ŵ).
 */
import { QkdError } from '../errors.js';
import { learnedStep, learnedZero } from '../tensor/ops/quant.js';
import { encode, groupParams, schemeGranularity, type QuantizedTensor } from './rtn.js';
import { groupsPerRow, type QuantScheme } from './scheme.js';

export type ScaleInit = 'rtn' | 'clip-search';

/** Learned quantizer parameters of one weight: θ = ln s per group and, asymmetric, z per group. */
export interface LearnedScales {
  logStep: Float32Array;
  zero: Float32Array | null;
}

/** Clip ratios the search tries, largest first. */
export const CLIP_RATIOS: readonly number[] = Array.from({ length: 51 }, (_, i) => 1 - i / 100);

/** Initial θ and z of a weight [rows, cols] at `bits` (see the module comment). */
export function initLearnedScales(w: Float32Array, rows: number, cols: number, bits: number, scheme: QuantScheme, init: ScaleInit): LearnedScales {
  if (scheme.perTensor) throw new QkdError('ARGUMENT', 'initLearnedScales: learned step sizes are per channel or per group, not per tensor', { field: 'scheme.perTensor' });
  const groups = groupsPerRow(cols, scheme.groupSize);
  const span = scheme.groupSize > 0 ? scheme.groupSize : cols;
  const logStep = new Float32Array(rows * groups);
  const zero = scheme.symmetric ? null : new Float32Array(rows * groups);
  const qmax = 2 ** bits - 1;
  const params = new Float64Array(2);
  const ratios = init === 'clip-search' ? CLIP_RATIOS : [1];
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const start = r * cols + g * span;
      const end = r * cols + Math.min(cols, (g + 1) * span);
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = start; i < end; i++) {
        const v = w[i]!;
        if (!Number.isFinite(v)) throw new QkdError('ARGUMENT', `initLearnedScales: weight ${i} is not finite`, { field: 'weights' });
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      let best = Infinity;
      let bestScale = 1;
      let bestZero = 0;
      for (const ratio of ratios) {
        groupParams(lo * ratio, hi * ratio, bits, scheme.symmetric, params);
        const s = params[0]!;
        const z = params[1]!;
        let err = 0;
        for (let i = start; i < end; i++) {
          const d = (encode(w[i]!, s, z, qmax) - z) * s - w[i]!;
          err += d * d;
        }
        if (err < best) {
          best = err;
          bestScale = s;
          bestZero = z;
        }
      }
      const gi = r * groups + g;
      logStep[gi] = Math.log(bestScale);
      if (zero) zero[gi] = bestZero;
    }
  }
  return { logStep, zero };
}

/** θ and z that reproduce a quantized tensor's own scales and zero points (a GPTQ or RTN start). */
export function scalesOf(q: QuantizedTensor): LearnedScales {
  return { logStep: Float32Array.from(q.scales, (s) => Math.log(s)), zero: q.zeros ? Float32Array.from(q.zeros) : null };
}

/** The packed form of w [rows, cols] under learned parameters: what learnedFakeQuantize's forward decodes. */
export function learnedQuantize(w: Float32Array, rows: number, cols: number, bits: number, scheme: QuantScheme, p: LearnedScales): QuantizedTensor {
  const groups = groupsPerRow(cols, scheme.groupSize);
  const span = scheme.groupSize > 0 ? scheme.groupSize : cols;
  if (p.logStep.length !== rows * groups || (p.zero !== null) === scheme.symmetric) {
    throw new QkdError('SHAPE', `learnedQuantize: parameters for ${p.logStep.length} groups (${p.zero ? 'asymmetric' : 'symmetric'}), the weight has ${rows}×${groups} (${scheme.symmetric ? 'symmetric' : 'asymmetric'})`, { field: 'scales' });
  }
  const qmax = 2 ** bits - 1;
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeros = p.zero ? new Uint8Array(rows * groups) : null;
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const gi = r * groups + g;
      const s = learnedStep(p.logStep[gi]!);
      const z = p.zero ? learnedZero(p.zero[gi]!, bits) : 2 ** (bits - 1);
      scales[gi] = s;
      if (zeros) zeros[gi] = z;
      const end = r * cols + Math.min(cols, (g + 1) * span);
      for (let i = r * cols + g * span; i < end; i++) codes[i] = encode(w[i]!, s, z, qmax);
    }
  }
  return { rows, cols, bits, scheme: { ...scheme }, granularity: schemeGranularity(scheme), codes, scales, zeros };
}

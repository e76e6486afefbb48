/**
 * Rotary position embedding on x [B, T, H, D] (D even).
 * Frequencies: inv_freq_i = theta^(−2i/D), i < D/2, unless given (RoPE
 * scaling computes its own); angle = position · inv_freq_i.
 * Pairing: 'half' rotates (x_i, x_{i+D/2}) — Hugging Face LLaMA's rotate_half;
 * 'interleaved' rotates (x_{2i}, x_{2i+1}) — Meta / llama2.c.
 * Positions are startPos + t. Backward rotates the gradient by −angle.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor, allocFloat, isFloat64Mode, type FloatArray } from '../tensor.js';
import { kernels } from '../backend.js';

export type RopeStyle = 'half' | 'interleaved';

export interface RopeOptions {
  theta?: number;
  startPos?: number;
  style?: RopeStyle;
  /** The D/2 inverse frequencies, replacing theta's (scaled RoPE). Treat as immutable: tables are cached per array. */
  invFreq?: Float64Array;
}

const frequencyIds = new WeakMap<Float64Array, number>();
let nextFrequencyId = 0;

const tableCache = new Map<string, { cos: FloatArray; sin: FloatArray }>();

/** cos / sin tables [T, D/2] for positions startPos..startPos+T−1 (angles in float64). */
function ropeTables(T: number, D: number, theta: number, startPos: number, invFreq?: Float64Array): { cos: FloatArray; sin: FloatArray } {
  let id = '';
  if (invFreq !== undefined) {
    if (invFreq.length !== D / 2) throw new QkdError('SHAPE', `rope: ${invFreq.length} inverse frequencies for head dim ${D}`, { field: 'invFreq', hint: `${D / 2} (D/2)` });
    if (!frequencyIds.has(invFreq)) frequencyIds.set(invFreq, nextFrequencyId++);
    id = `f${frequencyIds.get(invFreq)}`;
  }
  const key = `${T}:${D}:${theta}:${startPos}:${id}:${isFloat64Mode() ? 64 : 32}`;
  let tables = tableCache.get(key);
  if (tables === undefined) {
    const half = D / 2;
    const cos = allocFloat(T * half);
    const sin = allocFloat(T * half);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        const angle = (startPos + t) * (invFreq === undefined ? Math.pow(theta, (-2 * i) / D) : invFreq[i]!);
        cos[t * half + i] = Math.cos(angle);
        sin[t * half + i] = Math.sin(angle);
      }
    }
    if (tableCache.size > 64) tableCache.clear();
    tableCache.set(key, (tables = { cos, sin }));
  }
  return tables;
}

export function rope(x: Tensor, options: RopeOptions = {}): Tensor {
  if (x.rank !== 4 || x.shape[3]! % 2 !== 0) {
    throw new QkdError('SHAPE', `rope: expected x [B, T, H, D] with even D, got ${fmtShape(x.shape)}`);
  }
  const [B, T, H, D] = x.shape as [number, number, number, number];
  const style = (options.style ?? 'half') === 'half' ? 0 : 1;
  const { cos, sin } = ropeTables(T, D, options.theta ?? 10000, options.startPos ?? 0, options.invFreq);
  const out = new Tensor(x.shape);
  kernels().rope(x.data, out.data, cos, sin, B, T, H, D, style, 1, false);
  return record(out, 'rope', [x], (dy) => {
    // The rotation is orthogonal: its transpose rotates by −angle.
    kernels().rope(dy, x.ensureGrad(), cos, sin, B, T, H, D, style, -1, true);
  });
}

/**
 * Rotary position embedding on x [B, T, H, D] (D even).
 * Frequencies: inv_freq_i = theta^(−2i/D), i < D/2; angle = position · inv_freq_i.
 * Pairing: 'half' rotates (x_i, x_{i+D/2}) — Hugging Face LLaMA's rotate_half;
 * 'interleaved' rotates (x_{2i}, x_{2i+1}) — Meta / llama2.c.
 * Positions are startPos + t. Backward rotates the gradient by −angle.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor, type FloatArray } from '../tensor.js';

export type RopeStyle = 'half' | 'interleaved';

export interface RopeOptions {
  theta?: number;
  startPos?: number;
  style?: RopeStyle;
}

const tableCache = new Map<string, { cos: Float64Array; sin: Float64Array }>();

/** cos / sin tables [T, D/2] for positions startPos..startPos+T−1. */
function ropeTables(T: number, D: number, theta: number, startPos: number): { cos: Float64Array; sin: Float64Array } {
  const key = `${T}:${D}:${theta}:${startPos}`;
  let tables = tableCache.get(key);
  if (tables === undefined) {
    const half = D / 2;
    const cos = new Float64Array(T * half);
    const sin = new Float64Array(T * half);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        const angle = (startPos + t) * Math.pow(theta, (-2 * i) / D);
        cos[t * half + i] = Math.cos(angle);
        sin[t * half + i] = Math.sin(angle);
      }
    }
    if (tableCache.size > 64) tableCache.clear();
    tableCache.set(key, (tables = { cos, sin }));
  }
  return tables;
}

function rotate(src: FloatArray, dst: FloatArray, shape: readonly number[], tables: { cos: Float64Array; sin: Float64Array }, style: RopeStyle, direction: 1 | -1, accumulate: boolean): void {
  const [B, T, H, D] = shape as [number, number, number, number];
  const half = D / 2;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const c = tables.cos[t * half + i]!;
          const s = direction * tables.sin[t * half + i]!;
          const ia = style === 'half' ? o + i : o + 2 * i;
          const ib = style === 'half' ? o + i + half : o + 2 * i + 1;
          const xa = src[ia]!;
          const xb = src[ib]!;
          if (accumulate) {
            dst[ia]! += xa * c - xb * s;
            dst[ib]! += xa * s + xb * c;
          } else {
            dst[ia] = xa * c - xb * s;
            dst[ib] = xa * s + xb * c;
          }
        }
      }
    }
  }
}

export function rope(x: Tensor, options: RopeOptions = {}): Tensor {
  if (x.rank !== 4 || x.shape[3]! % 2 !== 0) {
    throw new QkdError('SHAPE', `rope: expected x [B, T, H, D] with even D, got ${fmtShape(x.shape)}`);
  }
  const theta = options.theta ?? 10000;
  const style = options.style ?? 'half';
  const tables = ropeTables(x.shape[1]!, x.shape[3]!, theta, options.startPos ?? 0);
  const out = new Tensor(x.shape);
  rotate(x.data, out.data, x.shape, tables, style, 1, false);
  return record(out, 'rope', [x], (dy) => {
    rotate(dy, x.ensureGrad(), x.shape, tables, style, -1, true);
  });
}

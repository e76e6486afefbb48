/**
 * Ops of the Mamba-2-style state-space mixer (docs/mohawk.md), forward and
 * backward side by side, over the kernels in reference/ssm.ts:
 *
 *   ssmScan(x, b, c, logit)     → y [B,T,H,P]: h_t = a_t·h_{t−1} + b_t x_tᵀ, y_t = h_tᵀ c_t
 *   ssmMixerMatrix(b, c, logit) → M [B,H,T,T]: M[t,s] = (c_t·b_s)·∏_{k=s+1..t} a_k (s ≤ t)
 *   causalConv1d(x, w, bias)    → y [B,T,C]: depthwise causal convolution, kernel K
 *
 * with a_t = σ(−logit_t) per head. y = M·x: the scan is the recurrent form
 * (O(T) time, constant memory per step), the matrix the attention-like form
 * that MOHAWK's first stage compares with the teacher's attention.
 *
 * Legend: B batch, T time, H heads, P head (value) width, N state width,
 * C channels, K kernel length.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { kernels } from '../backend.js';
import { gradOf, record } from '../tape.js';
import { Tensor, allocFloat, type FloatArray } from '../tensor.js';

/** Steps per chunk of the scan: the backward keeps one state per chunk and recomputes the rest. */
export const SCAN_CHUNK = 64;

const EMPTY = new Float32Array(0) as FloatArray;

function scanDims(op: string, b: Tensor, c: Tensor, logit: Tensor): { B: number; T: number; H: number; N: number } {
  if (b.rank !== 4 || c.rank !== 4 || logit.rank !== 3) {
    throw new QkdError('SHAPE', `${op}: expected b, c [B,T,H,N] and logit [B,T,H], got ${fmtShape(b.shape)}, ${fmtShape(c.shape)}, ${fmtShape(logit.shape)}`);
  }
  const [B, T, H, N] = b.shape as [number, number, number, number];
  const same = c.shape.every((d, i) => d === b.shape[i]) && logit.shape[0] === B && logit.shape[1] === T && logit.shape[2] === H;
  if (!same) throw new QkdError('SHAPE', `${op}: b ${fmtShape(b.shape)}, c ${fmtShape(c.shape)} and logit ${fmtShape(logit.shape)} do not fit`, { hint: 'b and c of one shape [B,T,H,N], logit [B,T,H]' });
  return { B, T, H, N };
}

/** y [B,T,H,P] of the selective scan over x [B,T,H,P] (see the file comment). */
export function ssmScan(x: Tensor, b: Tensor, c: Tensor, logit: Tensor, chunk = SCAN_CHUNK): Tensor {
  const { B, T, H, N } = scanDims('ssmScan', b, c, logit);
  if (x.rank !== 4 || x.shape[0] !== B || x.shape[1] !== T || x.shape[2] !== H) {
    throw new QkdError('SHAPE', `ssmScan: x ${fmtShape(x.shape)} does not fit b ${fmtShape(b.shape)}`, { hint: 'x [B,T,H,P]' });
  }
  if (!Number.isInteger(chunk) || chunk < 1) throw new QkdError('ARGUMENT', `ssmScan: chunk ${chunk} is not a positive integer`, { field: 'chunk' });
  const P = x.shape[3]!;
  const L = Math.min(chunk, Math.max(T, 1));
  const y = new Tensor([B, T, H, P]);
  const states = allocFloat(B * H * Math.ceil(T / L) * N * P);
  kernels().ssmScanForward(x.data, b.data, c.data, logit.data, y.data, states, B, T, H, P, N, L);
  return record(y, 'ssmScan', [x, b, c, logit], (dy) => {
    kernels().ssmScanBackward(x.data, b.data, c.data, logit.data, states, dy, gradOf(x) ?? EMPTY, gradOf(b) ?? EMPTY, gradOf(c) ?? EMPTY, gradOf(logit) ?? EMPTY, B, T, H, P, N, L);
  });
}

/** M [B,H,T,T], the scan's mixing matrix (zero above the diagonal). */
export function ssmMixerMatrix(b: Tensor, c: Tensor, logit: Tensor): Tensor {
  const { B, T, H, N } = scanDims('ssmMixerMatrix', b, c, logit);
  const m = new Tensor([B, H, T, T]);
  kernels().ssmMatrixForward(b.data, c.data, logit.data, m.data, B, T, H, N);
  return record(m, 'ssmMixerMatrix', [b, c, logit], (dm) => {
    kernels().ssmMatrixBackward(b.data, c.data, logit.data, m.data, dm, gradOf(b) ?? EMPTY, gradOf(c) ?? EMPTY, gradOf(logit) ?? EMPTY, B, T, H, N);
  });
}

/** Depthwise causal convolution of x [B,T,C] with w [C,K] and an optional bias [C]. */
export function causalConv1d(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  if (x.rank !== 3 || w.rank !== 2 || w.shape[0] !== x.shape[2] || (bias !== undefined && (bias.rank !== 1 || bias.shape[0] !== x.shape[2]))) {
    throw new QkdError('SHAPE', `causalConv1d: x ${fmtShape(x.shape)}, w ${fmtShape(w.shape)}${bias ? `, bias ${fmtShape(bias.shape)}` : ''} do not fit`, { hint: 'x [B,T,C], w [C,K], bias [C]' });
  }
  const [B, T, C] = x.shape as [number, number, number];
  const K = w.shape[1]!;
  const y = new Tensor([B, T, C]);
  kernels().causalConvForward(x.data, w.data, bias?.data ?? EMPTY, y.data, B, T, C, K);
  const inputs = bias === undefined ? [x, w] : [x, w, bias];
  return record(y, 'causalConv1d', inputs, (dy) => {
    kernels().causalConvBackward(x.data, w.data, dy, gradOf(x) ?? EMPTY, gradOf(w) ?? EMPTY, bias === undefined ? EMPTY : (gradOf(bias) ?? EMPTY), B, T, C, K);
  });
}

/**
 * The Mamba-2-style sequence mixer of a state-space student (docs/mohawk.md),
 * in place of attention. Per token of the normed input u:
 *
 *   x = conv_x(x_proj u)   b = conv_B(B_proj u)   (per group of heads)
 *   c = conv_C(C_proj u)                                    (per head)
 *   z = z_proj u           logit = dt_proj u      a = σ(−logit)          (per head)
 *   h_t = a_t·h_{t−1} + b_t x_tᵀ,   y_t = h_tᵀ c_t + D·x_t
 *   out = out_proj(y ⊙ silu(z))
 *
 * conv_* are depthwise causal convolutions of length K. Two ways to run it:
 * `forward` over whole sequences (training, evaluation) through the scan op
 * with autograd, and `forward` with an SsmState (generation, no gradients):
 * a recurrence whose time and memory per token do not depend on how many
 * tokens came before. `mixingMatrix` gives the attention-like matrix M of
 * the scan (y = M·x + D·x), which MOHAWK's first stage fits to the
 * teacher's attention probabilities.
 *
 * Head h reads the x and b of group ⌊h·G/H⌋ (as grouped-query attention's
 * heads share V and K); with G = H every head has its own.
 *
 * Legend: B batch, T time, C model width, H heads, G groups, P head width,
 * N state width, K convolution length.
 */
import { Module } from './module.js';
import { Linear } from './layers.js';
import type { ParameterArena } from '../tensor/arena.js';
import { Tensor, withLoaded } from '../tensor/tensor.js';
import { gradEnabled } from '../tensor/tape.js';
import { add, mul, swiglu } from '../tensor/ops/elementwise.js';
import { reshape, selectRows } from '../tensor/ops/shape.js';
import { causalConv1d, ssmMixerMatrix, ssmScan } from '../tensor/ops/ssm.js';
import { logDecay } from '../tensor/reference/ssm.js';
import { QkdError } from '../errors.js';

export interface SsmMixerDims {
  /** Heads H. */
  heads: number;
  /** Head (value) width P. */
  headDim: number;
  /** State width N. */
  stateSize: number;
  /** Convolution length K. */
  convKernel: number;
  /** Groups G of heads sharing x and b (divides H; H: none shared). */
  groups: number;
}

/**
 * The recurrent state of one mixer for one sequence: the last K − 1 inputs
 * of each convolution and the scan state h [H, N, P]. Its size is fixed
 * whatever the sequence length.
 */
export class SsmState {
  readonly convX: Float32Array;
  readonly convB: Float32Array;
  readonly convC: Float32Array;
  readonly h: Float32Array;

  constructor(readonly dims: SsmMixerDims) {
    const { headDim: P, stateSize: N, convKernel: K, groups: G } = dims;
    const H = dims.heads;
    this.convX = new Float32Array((K - 1) * G * P);
    this.convB = new Float32Array((K - 1) * G * N);
    this.convC = new Float32Array((K - 1) * H * N);
    this.h = new Float32Array(H * N * P);
  }

  /** Bytes held. */
  get bytes(): number {
    return this.convX.byteLength + this.convB.byteLength + this.convC.byteLength + this.h.byteLength;
  }
}

/** The convolved, projected inputs of the scan for a whole sequence. */
interface ScanInputs {
  x: Tensor; // [B,T,H,P]
  b: Tensor; // [B,T,H,N]
  c: Tensor; // [B,T,H,N]
  logit: Tensor; // [B,T,H]
}

export class Mamba2Mixer extends Module {
  readonly xProj: Linear;
  readonly bProj: Linear;
  readonly cProj: Linear;
  readonly zProj: Linear;
  readonly dtProj: Linear;
  readonly outProj: Linear;
  readonly convX: { weight: Tensor; bias: Tensor };
  readonly convB: { weight: Tensor; bias: Tensor };
  readonly convC: { weight: Tensor; bias: Tensor };
  /** [H] skip weight D. */
  readonly D: Tensor;

  constructor(name: string, arena: ParameterArena, readonly dims: SsmMixerDims) {
    super(name);
    const w = (part: string) => arena.get(`${name}.${part}`);
    this.xProj = this.child(new Linear(`${name}.x_proj`, w('x_proj.weight')));
    this.bProj = this.child(new Linear(`${name}.B_proj`, w('B_proj.weight')));
    this.cProj = this.child(new Linear(`${name}.C_proj`, w('C_proj.weight')));
    this.zProj = this.child(new Linear(`${name}.z_proj`, w('z_proj.weight'), w('z_proj.bias')));
    this.dtProj = this.child(new Linear(`${name}.dt_proj`, w('dt_proj.weight'), w('dt_proj.bias')));
    this.outProj = this.child(new Linear(`${name}.out_proj`, w('out_proj.weight')));
    this.convX = { weight: w('conv_x.weight'), bias: w('conv_x.bias') };
    this.convB = { weight: w('conv_B.weight'), bias: w('conv_B.bias') };
    this.convC = { weight: w('conv_C.weight'), bias: w('conv_C.bias') };
    this.D = w('D');
  }

  /** The projections that read the block's input (one GPTQ input group). */
  get inputProjections(): Linear[] {
    return [this.xProj, this.bProj, this.cProj, this.zProj, this.dtProj];
  }

  /** The output projection (attention's o_proj counterpart). */
  get o(): Linear {
    return this.outProj;
  }

  /** u [B,T,C] → [B,T,C]; with a state (B = 1, no gradients) the recurrent form, continuing the state. */
  forward(u: Tensor, state?: SsmState): Tensor {
    if (state !== undefined) return this.emit(this.recurrent(u, state));
    const [B, T] = u.shape as [number, number, number];
    const { heads: H, headDim: P } = this.dims;
    const s = this.scanInputs(u);
    const scanned = ssmScan(s.x, s.b, s.c, s.logit);
    const y = withLoaded(this.D, () => add(scanned, mul(s.x, reshape(this.D, [H, 1]))));
    const gated = swiglu(this.zProj.forward(u), reshape(y, [B, T, H * P]));
    return this.emit(this.outProj.forward(gated));
  }

  /** M [B,H,T,T] of the scan on u [B,T,C]: y = M·x (+ D·x), MOHAWK stage 1's student matrix. */
  mixingMatrix(u: Tensor): Tensor {
    const s = this.scanInputs(u);
    return ssmMixerMatrix(s.b, s.c, s.logit);
  }

  private scanInputs(u: Tensor): ScanInputs {
    const [B, T] = u.shape as [number, number, number];
    const { heads: H, headDim: P, stateSize: N, groups: G } = this.dims;
    // Kernels are stored [channels, 1, K] (Mamba's conv1d layout); the op reads them as [channels, K].
    const conv = (lin: Linear, k: { weight: Tensor; bias: Tensor }) =>
      withLoaded(k.weight, () => withLoaded(k.bias, () => causalConv1d(lin.forward(u), reshape(k.weight, [k.weight.shape[0]!, k.weight.shape[2]!]), k.bias)));
    return {
      x: perHead(conv(this.xProj, this.convX), B * T, G, H, P),
      b: perHead(conv(this.bProj, this.convB), B * T, G, H, N),
      c: reshape(conv(this.cProj, this.convC), [B, T, H, N]),
      logit: reshape(this.dtProj.forward(u), [B, T, H]),
    };
  }

  /**
   * The recurrent form over T new tokens of one sequence: each token updates
   * the convolution windows and the scan state in place. Same function as
   * the whole-sequence forward (tested), at constant cost per token.
   */
  private recurrent(u: Tensor, state: SsmState): Tensor {
    const [B, T] = u.shape as [number, number, number];
    if (B !== 1) throw new QkdError('SHAPE', `a recurrent state holds one sequence; the batch has ${B}`, { field: 'cache' });
    if (gradEnabled() && u.requiresGrad) throw new QkdError('STATE', 'the recurrent form of the mixer runs without gradients (generation)', { hint: 'run it inside noGrad' });
    const { heads: H, headDim: P, stateSize: N, convKernel: K, groups: G } = this.dims;
    const xs = this.xProj.forward(u).data;
    const bs = this.bProj.forward(u).data;
    const cs = this.cProj.forward(u).data;
    const logit = this.dtProj.forward(u).data;
    const z = this.zProj.forward(u);
    const y = new Tensor([1, T, H * P]);
    const xt = new Float32Array(G * P);
    const bt = new Float32Array(G * N);
    const ct = new Float32Array(H * N);
    withLoaded(this.D, () =>
      loadedAll([this.convX.weight, this.convX.bias, this.convB.weight, this.convB.bias, this.convC.weight, this.convC.bias], () => {
        const D = this.D.data;
        const h = state.h;
        for (let t = 0; t < T; t++) {
          convStep(xs.subarray(t * G * P, (t + 1) * G * P), state.convX, this.convX.weight.data, this.convX.bias.data, xt, K);
          convStep(bs.subarray(t * G * N, (t + 1) * G * N), state.convB, this.convB.weight.data, this.convB.bias.data, bt, K);
          convStep(cs.subarray(t * H * N, (t + 1) * H * N), state.convC, this.convC.weight.data, this.convC.bias.data, ct, K);
          const yo = t * H * P;
          for (let hd = 0; hd < H; hd++) {
            const a = Math.exp(logDecay(logit[t * H + hd]!));
            const ho = hd * N * P;
            const g = Math.floor((hd * G) / H);
            for (let n = 0; n < N; n++) {
              const bn = bt[g * N + n]!;
              for (let p = 0; p < P; p++) h[ho + n * P + p] = a * h[ho + n * P + p]! + bn * xt[g * P + p]!;
            }
            for (let p = 0; p < P; p++) {
              let s = 0;
              for (let n = 0; n < N; n++) s += ct[hd * N + n]! * h[ho + n * P + p]!;
              y.data[yo + hd * P + p] = s + D[hd]! * xt[g * P + p]!;
            }
          }
        }
      }),
    );
    return this.outProj.forward(swiglu(z, y));
  }
}

/**
 * x [B, T, G·W] (rows = B·T) → [B, T, H, W]: head h gets group ⌊h·G/H⌋'s
 * W values; the backward pass sums the heads of a group.
 */
function perHead(x: Tensor, rows: number, G: number, H: number, W: number): Tensor {
  const shape = [...x.shape.slice(0, -1), H, W];
  if (G === H) return reshape(x, shape);
  const index = new Int32Array(rows * H);
  for (let r = 0; r < rows; r++) for (let h = 0; h < H; h++) index[r * H + h] = r * G + Math.floor((h * G) / H);
  return reshape(selectRows(reshape(x, [rows * G, W]), index), shape);
}

/**
 * One step of a depthwise causal convolution with its window: out =
 * bias + Σ_j w[ch,j]·(window ++ input)[j]; then the window shifts by one.
 * window [(K−1), Ch] oldest first, input / out [Ch], w [Ch, K].
 */
function convStep(input: Float32Array, window: Float32Array, w: Float32Array, bias: Float32Array, out: Float32Array, K: number): void {
  const Ch = input.length;
  for (let ch = 0; ch < Ch; ch++) {
    let s = bias[ch]! + w[ch * K + K - 1]! * input[ch]!;
    for (let j = 0; j < K - 1; j++) s += w[ch * K + j]! * window[j * Ch + ch]!;
    out[ch] = s;
  }
  if (K > 1) {
    window.copyWithin(0, Ch);
    window.set(input, (K - 2) * Ch);
  }
}

function loadedAll<T>(tensors: Tensor[], fn: () => T): T {
  if (tensors.length === 0) return fn();
  return withLoaded(tensors[0]!, () => loadedAll(tensors.slice(1), fn));
}

/** silu(b) = 1 at b ≈ 1.2785: a gate bias that makes silu(z) start as the identity gate. */
export const UNIT_GATE_BIAS = 1.2784645;

/**
 * Neutral starting values of a mixer's non-projection parameters: identity
 * convolutions (last tap 1), zero conv biases, D = 0, a unit gate (z weight
 * 0, bias UNIT_GATE_BIAS), and slow decays a = σ(−dtBias). The projections
 * are left to the caller (random, or the teacher's Q/K/V/O).
 */
export function initMixerNeutral(mixer: Mamba2Mixer, dtBias = -2.2): void {
  for (const k of [mixer.convX, mixer.convB, mixer.convC]) {
    const K = k.weight.shape[2]!;
    k.weight.data.fill(0);
    for (let ch = 0; ch < k.weight.shape[0]!; ch++) k.weight.data[ch * K + K - 1] = 1;
    k.bias.data.fill(0);
  }
  mixer.D.data.fill(0);
  mixer.zProj.weight.data.fill(0);
  mixer.zProj.bias!.data.fill(UNIT_GATE_BIAS);
  mixer.dtProj.weight.data.fill(0);
  mixer.dtProj.bias!.data.fill(dtBias);
}

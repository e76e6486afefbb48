/**
 * Multi-head attention with grouped-query heads, as two differentiable ops
 * so that the attention probabilities are an ordinary tensor of the graph
 * (attention distillation can put a loss on them):
 *
 *   attentionProbs(q, k)  → P [B, H, T, S] = softmax(cap(scale · Q Kᵀ) + mask)
 *
 * The mask hides future keys (causal) and, with a window W, keys W or more
 * positions older than the query (sliding-window attention: query at
 * position p sees keys p − W + 1 … p). cap(x) = c·tanh(x / c) is Gemma 2's
 * score soft-capping (identity without softcap).
 *   attentionApply(P, v)  → O [B, T, H, D] = P V
 *
 * and, for when nobody needs P, one fused op with the same result that never
 * holds the [B, H, T, S] maps (docs/attention.md):
 *
 *   attentionFused(q, k, v) → O [B, T, H, D], keeping only each row's
 *                             log-sum-exp L [B, H, T] for the backward
 *
 * Legend: B batch, T query steps, S key steps (S ≥ T; with S > T the queries
 * are the last T positions, as in generation with a KV cache), H query heads,
 * G key/value heads (H divisible by G; query head h reads kv head h / (H/G)),
 * D head dim. q [B, T, H, D], k and v [B, S, G, D]: the layouts of the
 * projections before any transpose, so no copies are needed.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { kernels } from '../backend.js';
import { gradOf, record } from '../tape.js';
import { Tensor, allocFloat, type FloatArray } from '../tensor.js';

export interface AttentionOptions {
  /** Mask keys after each query's position (default true). */
  causal?: boolean;
  /** Score scale (default 1/sqrt(D)). */
  scale?: number;
  /** Sliding window W: keys at positions ≤ p − W are masked for the query at p (causal only). */
  window?: number;
  /** Soft-cap c of the scaled scores: c·tanh(x / c). */
  softcap?: number;
}

function dims(op: string, q: Tensor, kv: Tensor) {
  if (q.rank !== 4 || kv.rank !== 4) {
    throw new QkdError('SHAPE', `${op}: expected q [B,T,H,D] and k/v [B,S,G,D], got ${fmtShape(q.shape)} and ${fmtShape(kv.shape)}`);
  }
  const [B, T, H, D] = q.shape as [number, number, number, number];
  const [Bk, S, G, Dk] = kv.shape as [number, number, number, number];
  if (Bk !== B || Dk !== D || G === 0 || H % G !== 0 || S < T) {
    throw new QkdError('SHAPE', `${op}: q ${fmtShape(q.shape)} and k/v ${fmtShape(kv.shape)} do not fit`, {
      hint: 'same B and D, query heads a multiple of kv heads, and S ≥ T',
    });
  }
  return { B, T, H, D, S, G, group: H / G };
}

/** P [B,H,T,S] = softmax over S of scale·q·kᵀ, future keys masked when causal. */
export function attentionProbs(q: Tensor, k: Tensor, options: AttentionOptions = {}): Tensor {
  const { B, T, H, D, S, G, group } = dims('attentionProbs', q, k);
  const causal = options.causal ?? true;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  const kern = kernels();
  const probs = new Tensor([B, H, T, S]);
  const P = probs.data;
  const offset = S - T; // query t sits at absolute position offset + t
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    // scores for head h over the whole batch: [T, D] · [S, D]ᵀ, strided views.
    kern.sgemm({
      batch: B, transA: false, transB: true, M: T, N: S, K: D, alpha: scale,
      a: q.data.subarray(h * D), lda: H * D, strideA: T * H * D,
      b: k.data.subarray(g * D), ldb: G * D, strideB: S * G * D,
      beta: 0, c: P.subarray(h * T * S), ldc: S, strideC: H * T * S,
    });
  }
  // tanh of the capped scores, kept for the backward (1 − tanh²).
  const capped = options.softcap === undefined ? null : softcapInPlace(P, options.softcap);
  // Keys older than the window get −∞ and so probability 0 (each query keeps at least itself).
  const window = options.window;
  if (window !== undefined) {
    if (!causal || !(window >= 1)) throw new QkdError('ARGUMENT', `attentionProbs: window ${window} needs causal attention and W ≥ 1`, { field: 'window' });
    for (let r = 0; r < B * H; r++) {
      for (let t = 0; t < T; t++) {
        const oldest = offset + t - window + 1; // first visible key
        if (oldest > 0) P.fill(-Infinity, (r * T + t) * S, (r * T + t) * S + Math.min(oldest, S));
      }
    }
  }
  // Causal rows only look at their first offset + t + 1 keys; the masked
  // scores are never read and their probabilities are written as 0.
  if (causal) kern.causalSoftmaxForward(P, P, B * H, T, S, offset);
  else kern.softmaxForward(P, P, B * H * T, S);
  return record(probs, 'attentionProbs', [q, k], (dP) => {
    const kb = kernels();
    // dScores from the softmax backward. Causal: computed in place in dP
    // (owned by probs and released after this call); masked entries get 0.
    let dS = dP;
    if (causal) kb.causalSoftmaxBackward(P, dP, dS, B * H, T, S, offset, false);
    else {
      dS = allocFloat(B * H * T * S);
      kb.softmaxBackward(P, dP, dS, B * H * T, S);
    }
    if (capped !== null) for (let i = 0; i < dS.length; i++) dS[i]! *= 1 - capped[i]! * capped[i]!;
    const dq = q.requiresGrad ? q.ensureGrad() : null;
    const dk = k.requiresGrad ? k.ensureGrad() : null;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      const dSh = dS.subarray(h * T * S);
      // dq[t,h,:] += scale · Σ_s dS[t,s] k[s,g,:]
      if (dq) kb.sgemm({ batch: B, transA: false, transB: false, M: T, N: D, K: S, alpha: scale, a: dSh, lda: S, strideA: H * T * S, b: k.data.subarray(g * D), ldb: G * D, strideB: S * G * D, beta: 1, c: dq.subarray(h * D), ldc: H * D, strideC: T * H * D });
      // dk[s,g,:] += scale · Σ_t dS[t,s] q[t,h,:] (heads of a group accumulate in turn)
      if (dk) kb.sgemm({ batch: B, transA: true, transB: false, M: S, N: D, K: T, alpha: scale, a: dSh, lda: S, strideA: H * T * S, b: q.data.subarray(h * D), ldb: H * D, strideB: T * H * D, beta: 1, c: dk.subarray(g * D), ldc: G * D, strideC: S * G * D });
    }
  });
}

/** x ← c·tanh(x / c) in place; returns tanh(x / c) for the backward. */
function softcapInPlace(x: FloatArray, c: number): FloatArray {
  if (!(c > 0)) throw new QkdError('ARGUMENT', `attentionProbs: softcap ${c} must be positive`, { field: 'softcap' });
  const th = allocFloat(x.length);
  for (let i = 0; i < x.length; i++) {
    th[i] = Math.tanh(x[i]! / c);
    x[i] = c * th[i]!;
  }
  return th;
}

/** O [B,T,H,D] = P [B,H,T,S] · v [B,S,G,D] per head. */
export function attentionApply(probs: Tensor, v: Tensor): Tensor {
  if (probs.rank !== 4 || v.rank !== 4) {
    throw new QkdError('SHAPE', `attentionApply: expected P [B,H,T,S] and v [B,S,G,D], got ${fmtShape(probs.shape)} and ${fmtShape(v.shape)}`);
  }
  const [B, H, T, S] = probs.shape as [number, number, number, number];
  const [Bv, Sv, G, D] = v.shape as [number, number, number, number];
  if (Bv !== B || Sv !== S || G === 0 || H % G !== 0) {
    throw new QkdError('SHAPE', `attentionApply: P ${fmtShape(probs.shape)} and v ${fmtShape(v.shape)} do not fit`, { hint: 'same B and S, heads a multiple of kv heads' });
  }
  const group = H / G;
  const kern = kernels();
  const out = new Tensor([B, T, H, D]);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    kern.sgemm({
      batch: B, transA: false, transB: false, M: T, N: D, K: S, alpha: 1,
      a: probs.data.subarray(h * T * S), lda: S, strideA: H * T * S,
      b: v.data.subarray(g * D), ldb: G * D, strideB: S * G * D,
      beta: 0, c: out.data.subarray(h * D), ldc: H * D, strideC: T * H * D,
    });
  }
  return record(out, 'attentionApply', [probs, v], (dO) => {
    const kb = kernels();
    const dP = probs.requiresGrad ? probs.ensureGrad() : null;
    const dv = v.requiresGrad ? v.ensureGrad() : null;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      // dP[t,s] += Σ_d dO[t,h,d] v[s,g,d]
      if (dP) kb.sgemm({ batch: B, transA: false, transB: true, M: T, N: S, K: D, alpha: 1, a: dO.subarray(h * D), lda: H * D, strideA: T * H * D, b: v.data.subarray(g * D), ldb: G * D, strideB: S * G * D, beta: 1, c: dP.subarray(h * T * S), ldc: S, strideC: H * T * S });
      // dv[s,g,:] += Σ_t P[t,s] dO[t,h,:]
      if (dv) kb.sgemm({ batch: B, transA: true, transB: false, M: S, N: D, K: T, alpha: 1, a: probs.data.subarray(h * T * S), lda: S, strideA: H * T * S, b: dO.subarray(h * D), ldb: H * D, strideB: T * H * D, beta: 1, c: dv.subarray(g * D), ldc: G * D, strideC: S * G * D });
    }
  });
}

const EMPTY = new Float32Array(0) as FloatArray;

/**
 * O [B,T,H,D] = softmax(cap(scale·QKᵀ) + mask)·V in one op: the result of
 * attentionApply(attentionProbs(q, k, options), v), same options, without
 * materialising P. The forward runs an online softmax over tiles of keys and
 * keeps the log-sum-exp L of every row; the backward recomputes P tile by
 * tile from L (FlashAttention-2's scheme; docs/attention.md). q [B,T,H,D],
 * k and v [B,S,G,D].
 */
export function attentionFused(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const { B, T, H, D, S, G } = dims('attentionFused', q, k);
  if (v.rank !== 4 || !v.shape.every((d, i) => d === k.shape[i])) {
    throw new QkdError('SHAPE', `attentionFused: k ${fmtShape(k.shape)} and v ${fmtShape(v.shape)} differ`, { hint: 'k and v of one shape [B,S,G,D]' });
  }
  const causal = options.causal ?? true;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  const { window, softcap } = options;
  if (window !== undefined && (!causal || !(window >= 1))) throw new QkdError('ARGUMENT', `attentionFused: window ${window} needs causal attention and W ≥ 1`, { field: 'window' });
  if (softcap !== undefined && !(softcap > 0)) throw new QkdError('ARGUMENT', `attentionFused: softcap ${softcap} must be positive`, { field: 'softcap' });
  // The kernels take a whole window, 0 for none. attentionProbs masks keys
  // before ⌊p − W + 1⌋, i.e. a window of ⌈W⌉; one of S or more masks nothing.
  const keys = window === undefined || window >= S ? 0 : Math.ceil(window);
  const cap = softcap ?? 0;
  const out = new Tensor([B, T, H, D]);
  const lse = allocFloat(B * H * T);
  kernels().attentionFusedForward(q.data, k.data, v.data, out.data, lse, B, T, S, H, G, D, causal, scale, keys, cap);
  return record(out, 'attentionFused', [q, k, v], (dO) => {
    // The kernels add into three distinct buffers: an input passed twice (k
    // as v, say) gets its second share through a scratch buffer.
    const grads: FloatArray[] = [];
    const scratch: [FloatArray, FloatArray][] = [];
    for (const x of [q, k, v]) {
      const g = gradOf(x) ?? EMPTY;
      if (g.length > 0 && grads.includes(g)) {
        const own = allocFloat(g.length);
        scratch.push([g, own]);
        grads.push(own);
      } else grads.push(g);
    }
    kernels().attentionFusedBackward(q.data, k.data, v.data, out.data, lse, dO, grads[0]!, grads[1]!, grads[2]!, B, T, S, H, G, D, causal, scale, keys, cap);
    for (const [g, own] of scratch) kernels().addInto(g, own, g.length);
  });
}

/**
 * Causal grouped-query attention: O = softmax(scale·QKᵀ + mask)·V.
 * With returnProbs, also returns P (a graph tensor) for attention KD.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): { out: Tensor; probs: Tensor } {
  const probs = attentionProbs(q, k, options);
  return { out: attentionApply(probs, v), probs };
}

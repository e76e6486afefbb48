/**
 * Reference kernels of fused attention (docs/attention.md): the output of
 * softmax attention without the [B,H,T,S] probability maps, and its backward
 * from the per-row log-sum-exp alone. Plain loops over one query row at a
 * time with float64 sums: the definition native/kernels/attention.cc is
 * tested against, and the fallback when the addon is absent. (The native
 * kernel tiles rows and keys and runs an online softmax; a row here holds
 * its S scores at once, which is the same function and the clearer one.)
 *
 * Legend: B batch, T query steps, S key steps, H query heads, G key/value
 * heads (query head h reads kv head ⌊h / (H/G)⌋), D head width.
 * Layouts: q, o, dO [B,T,H,D]; k, v [B,S,G,D]; lse [B,H,T].
 *
 * Query t sits at absolute position p = S − T + t. It sees keys j with
 * lo(p) ≤ j < hi(p): hi = min(S, p + 1) when causal, else S; lo = p − W + 1
 * with a sliding window W > 0, else 0. The score of key j is
 * s = cap(scale·q·k_j) with cap(x) = c·tanh(x/c) when softcap c > 0, else x.
 * A row that sees no key (only possible when S < T, which the ops refuse)
 * gets o = 0, lse = −∞ and no gradient.
 */
import type { FloatArray } from '../tensor.js';

/** Keys [lo, hi) visible to query t. */
export function visibleKeys(t: number, T: number, S: number, causal: boolean, window: number): [number, number] {
  const p = S - T + t;
  const hi = causal ? Math.max(0, Math.min(S, p + 1)) : S;
  const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
  return [lo, hi];
}

/**
 * o[b,t,h,:] = Σ_j softmax_j(s) v[b,j,g,:] over the visible keys, and
 * lse[b,h,t] = log Σ_j exp(s_j) (o and lse overwritten).
 */
export function attentionFusedForward(q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, B: number, T: number, S: number, H: number, G: number, D: number, causal: boolean, scale: number, window: number, softcap: number): void {
  const group = H / G;
  const scores = new Float64Array(S);
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      for (let t = 0; t < T; t++) {
        const qo = ((b * T + t) * H + h) * D;
        const [lo, hi] = visibleKeys(t, T, S, causal, window);
        let max = -Infinity;
        for (let j = lo; j < hi; j++) {
          const ko = ((b * S + j) * G + g) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
          const x = scale * dot;
          scores[j] = softcap > 0 ? softcap * Math.tanh(x / softcap) : x;
          max = Math.max(max, scores[j]!); // NaN stays NaN
        }
        // No visible key (or scores of −∞ only, as softmax takes a row of −∞): o = 0.
        const none = max === -Infinity;
        acc.fill(0);
        let sum = 0;
        for (let j = lo; j < hi; j++) {
          const e = Math.exp(scores[j]! - max);
          sum += e;
          const vo = ((b * S + j) * G + g) * D;
          for (let d = 0; d < D; d++) acc[d]! += e * v[vo + d]!;
        }
        for (let d = 0; d < D; d++) o[qo + d] = none ? 0 : acc[d]! / sum;
        lse[(b * H + h) * T + t] = none ? -Infinity : max + Math.log(sum);
      }
    }
  }
}

/**
 * Backward of attentionFusedForward from dO, adding into dq, dk, dv (each
 * may be EMPTY: skipped). With P = exp(s − lse) recomputed per row,
 * Δ = Σ_d dO·o, dP_j = dO·v_j and dS_j = P_j (dP_j − Δ)·cap′_j:
 * dq += scale·Σ_j dS_j k_j, dk_j += scale·dS_j q, dv_j += P_j dO.
 */
export function attentionFusedBackward(q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, dO: FloatArray, dq: FloatArray, dk: FloatArray, dv: FloatArray, B: number, T: number, S: number, H: number, G: number, D: number, causal: boolean, scale: number, window: number, softcap: number): void {
  const group = H / G;
  const wantQ = dq.length > 0;
  const wantK = dk.length > 0;
  const wantV = dv.length > 0;
  if (!wantQ && !wantK && !wantV) return;
  const dqRow = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      for (let t = 0; t < T; t++) {
        const L = lse[(b * H + h) * T + t]!;
        if (L === -Infinity) continue; // a row that saw no key
        const qo = ((b * T + t) * H + h) * D;
        let delta = 0;
        for (let d = 0; d < D; d++) delta += dO[qo + d]! * o[qo + d]!;
        const [lo, hi] = visibleKeys(t, T, S, causal, window);
        dqRow.fill(0);
        for (let j = lo; j < hi; j++) {
          const ko = ((b * S + j) * G + g) * D;
          let dot = 0;
          let dp = 0;
          for (let d = 0; d < D; d++) {
            dot += q[qo + d]! * k[ko + d]!;
            dp += dO[qo + d]! * v[ko + d]!;
          }
          const x = scale * dot;
          const th = softcap > 0 ? Math.tanh(x / softcap) : 0;
          const p = Math.exp((softcap > 0 ? softcap * th : x) - L);
          const ds = p * (dp - delta) * (softcap > 0 ? 1 - th * th : 1);
          if (wantV) for (let d = 0; d < D; d++) dv[ko + d]! += p * dO[qo + d]!;
          if (wantK) for (let d = 0; d < D; d++) dk[ko + d]! += scale * ds * q[qo + d]!;
          if (wantQ) for (let d = 0; d < D; d++) dqRow[d]! += ds * k[ko + d]!;
        }
        if (wantQ) for (let d = 0; d < D; d++) dq[qo + d]! += scale * dqRow[d]!;
      }
    }
  }
}

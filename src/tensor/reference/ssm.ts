/**
 * Reference kernels of the Mamba-2-style state-space mixer (docs/mohawk.md):
 * the selective scan, its materialised mixing matrix and the depthwise
 * causal convolution, each forward next to its backward. Plain loops with
 * float64 accumulation: the definition the native kernels are tested
 * against. Backward kernels ADD into gradient buffers.
 *
 * Legend: B batch, T time, H heads, P head (value) width, N state width,
 * C channels of the convolution, K its kernel length, L scan chunk length.
 *
 * The decay of head h at step t is a_t = σ(−l_t) from a logit l (so
 * log a_t = −softplus(l_t) is computed without underflow, and
 * d log a_t / d l_t = −σ(l_t) = −(1 − a_t)).
 */
import type { FloatArray } from '../tensor.js';

/** log σ(−l) = −softplus(l), stable for large |l|. */
export function logDecay(l: number): number {
  return l > 0 ? -(l + Math.log1p(Math.exp(-l))) : -Math.log1p(Math.exp(l));
}

/** Number of chunks of length L covering T steps. */
export function scanChunks(T: number, L: number): number {
  return Math.ceil(T / L);
}

/**
 * Selective scan, per batch row and head, state h [N, P] starting at 0:
 *   h_t = a_t·h_{t−1} + b_t x_tᵀ,   y_t = h_tᵀ c_t.
 * x [B,T,H,P], b and c [B,T,H,N], logit [B,T,H] → y [B,T,H,P] (overwritten).
 * states [B,H,ceil(T/L),N,P] receives the state entering each chunk of L
 * steps: the backward recomputes the states inside a chunk from it, so the
 * memory is T/L states instead of T.
 */
export function ssmScanForward(x: FloatArray, b: FloatArray, c: FloatArray, logit: FloatArray, y: FloatArray, states: FloatArray, B: number, T: number, H: number, P: number, N: number, L: number): void {
  const chunks = scanChunks(T, L);
  const h = new Float64Array(N * P);
  for (let bi = 0; bi < B; bi++) {
    for (let hd = 0; hd < H; hd++) {
      h.fill(0);
      for (let t = 0; t < T; t++) {
        if (t % L === 0) {
          const s0 = ((bi * H + hd) * chunks + t / L) * N * P;
          for (let i = 0; i < N * P; i++) states[s0 + i] = h[i]!;
        }
        const row = bi * T + t;
        const a = Math.exp(logDecay(logit[row * H + hd]!));
        const xo = (row * H + hd) * P;
        const bo = (row * H + hd) * N;
        for (let n = 0; n < N; n++) {
          const bn = b[bo + n]!;
          for (let p = 0; p < P; p++) h[n * P + p] = a * h[n * P + p]! + bn * x[xo + p]!;
        }
        for (let p = 0; p < P; p++) {
          let s = 0;
          for (let n = 0; n < N; n++) s += c[bo + n]! * h[n * P + p]!;
          y[xo + p] = s;
        }
      }
    }
  }
}

/**
 * Backward of ssmScanForward: given dy [B,T,H,P], adds into dx, db, dc,
 * dlogit (any may be empty to skip). Walks the chunks from the last,
 * recomputing each chunk's states from `states`, then runs the adjoint
 * recurrence backwards in time:
 *   g_t = a_{t+1}·g_{t+1} + c_t dy_tᵀ     (g = dL/dh_t)
 *   dc_t = h_t dy_t,  db_t = g_t x_t,  dx_t = g_tᵀ b_t,
 *   d log a_t = ⟨g_t, h_{t−1}⟩.
 */
export function ssmScanBackward(x: FloatArray, b: FloatArray, c: FloatArray, logit: FloatArray, states: FloatArray, dy: FloatArray, dx: FloatArray, db: FloatArray, dc: FloatArray, dlogit: FloatArray, B: number, T: number, H: number, P: number, N: number, L: number): void {
  const chunks = scanChunks(T, L);
  const NP = N * P;
  const g = new Float64Array(NP);
  // hs[j] = state after step (chunk start + j); hs[-1] is the entering state, kept in `enter`.
  const hs = new Float64Array(L * NP);
  const enter = new Float64Array(NP);
  for (let bi = 0; bi < B; bi++) {
    for (let hd = 0; hd < H; hd++) {
      g.fill(0);
      for (let k = chunks - 1; k >= 0; k--) {
        const t0 = k * L;
        const t1 = Math.min(T, t0 + L);
        const s0 = ((bi * H + hd) * chunks + k) * NP;
        for (let i = 0; i < NP; i++) enter[i] = states[s0 + i]!;
        // Recompute the states inside the chunk.
        for (let t = t0; t < t1; t++) {
          const row = bi * T + t;
          const a = Math.exp(logDecay(logit[row * H + hd]!));
          const xo = (row * H + hd) * P;
          const bo = (row * H + hd) * N;
          const prev = t === t0 ? enter : hs.subarray((t - 1 - t0) * NP);
          const cur = (t - t0) * NP;
          for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) hs[cur + n * P + p] = a * prev[n * P + p]! + b[bo + n]! * x[xo + p]!;
        }
        for (let t = t1 - 1; t >= t0; t--) {
          const row = bi * T + t;
          const l = logit[row * H + hd]!;
          const a = Math.exp(logDecay(l));
          const xo = (row * H + hd) * P;
          const bo = (row * H + hd) * N;
          const cur = (t - t0) * NP;
          const prev = t === t0 ? enter : hs.subarray((t - 1 - t0) * NP);
          // g now holds a_{t+1}·g_{t+1}; add this step's output term.
          for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) g[n * P + p]! += c[bo + n]! * dy[xo + p]!;
          if (dc.length > 0) {
            for (let n = 0; n < N; n++) {
              let s = 0;
              for (let p = 0; p < P; p++) s += hs[cur + n * P + p]! * dy[xo + p]!;
              dc[bo + n]! += s;
            }
          }
          if (db.length > 0) {
            for (let n = 0; n < N; n++) {
              let s = 0;
              for (let p = 0; p < P; p++) s += g[n * P + p]! * x[xo + p]!;
              db[bo + n]! += s;
            }
          }
          if (dx.length > 0) {
            for (let p = 0; p < P; p++) {
              let s = 0;
              for (let n = 0; n < N; n++) s += g[n * P + p]! * b[bo + n]!;
              dx[xo + p]! += s;
            }
          }
          if (dlogit.length > 0) {
            let s = 0;
            for (let i = 0; i < NP; i++) s += g[i]! * prev[i]!;
            dlogit[row * H + hd]! += s * a * -(1 - a);
          }
          for (let i = 0; i < NP; i++) g[i]! *= a;
        }
      }
    }
  }
}

/**
 * Materialised mixing matrix of the scan, per batch row and head:
 *   m[t,s] = (c_t·b_s)·∏_{k=s+1..t} a_k  for s ≤ t, else 0,
 * so that y = m·x. b, c [B,T,H,N], logit [B,T,H] → m [B,H,T,T]
 * (overwritten). The products are exp(Λ_t − Λ_s) of cumulative log
 * decays Λ_t = Σ_{k≤t} log a_k, never above 1.
 */
export function ssmMatrixForward(b: FloatArray, c: FloatArray, logit: FloatArray, m: FloatArray, B: number, T: number, H: number, N: number): void {
  const cum = new Float64Array(T);
  for (let bi = 0; bi < B; bi++) {
    for (let hd = 0; hd < H; hd++) {
      cumulativeLogDecay(logit, cum, bi, hd, T, H);
      const mo = (bi * H + hd) * T * T;
      for (let t = 0; t < T; t++) {
        const co = ((bi * T + t) * H + hd) * N;
        for (let s = 0; s < T; s++) {
          if (s > t) {
            m[mo + t * T + s] = 0;
            continue;
          }
          const bo = ((bi * T + s) * H + hd) * N;
          let dot = 0;
          for (let n = 0; n < N; n++) dot += c[co + n]! * b[bo + n]!;
          m[mo + t * T + s] = dot * Math.exp(cum[t]! - cum[s]!);
        }
      }
    }
  }
}

/**
 * Backward of ssmMatrixForward: dm [B,H,T,T] → adds into db, dc, dlogit
 * (any may be empty). With E[t,s] = exp(Λ_t − Λ_s) and G = dm ⊙ m:
 *   dc_t += Σ_s dm[t,s]·E[t,s]·b_s,   db_s += Σ_t dm[t,s]·E[t,s]·c_t,
 *   dΛ_t = Σ_s G[t,s] − Σ_{t'} G[t',t],   d log a_k = Σ_{t≥k} dΛ_t.
 */
export function ssmMatrixBackward(b: FloatArray, c: FloatArray, logit: FloatArray, m: FloatArray, dm: FloatArray, db: FloatArray, dc: FloatArray, dlogit: FloatArray, B: number, T: number, H: number, N: number): void {
  const cum = new Float64Array(T);
  const dcum = new Float64Array(T);
  for (let bi = 0; bi < B; bi++) {
    for (let hd = 0; hd < H; hd++) {
      cumulativeLogDecay(logit, cum, bi, hd, T, H);
      dcum.fill(0);
      const mo = (bi * H + hd) * T * T;
      for (let t = 0; t < T; t++) {
        const co = ((bi * T + t) * H + hd) * N;
        for (let s = 0; s <= t; s++) {
          const g = dm[mo + t * T + s]!;
          if (g === 0) continue;
          const bo = ((bi * T + s) * H + hd) * N;
          const e = Math.exp(cum[t]! - cum[s]!);
          if (dc.length > 0) for (let n = 0; n < N; n++) dc[co + n]! += g * e * b[bo + n]!;
          if (db.length > 0) for (let n = 0; n < N; n++) db[bo + n]! += g * e * c[co + n]!;
          const gm = g * m[mo + t * T + s]!;
          dcum[t]! += gm;
          dcum[s]! -= gm;
        }
      }
      if (dlogit.length === 0) continue;
      let suffix = 0;
      for (let k = T - 1; k >= 0; k--) {
        suffix += dcum[k]!;
        const idx = (bi * T + k) * H + hd;
        const a = Math.exp(logDecay(logit[idx]!));
        dlogit[idx]! += suffix * -(1 - a);
      }
    }
  }
}

function cumulativeLogDecay(logit: FloatArray, cum: Float64Array, bi: number, hd: number, T: number, H: number): void {
  let acc = 0;
  for (let t = 0; t < T; t++) {
    acc += logDecay(logit[(bi * T + t) * H + hd]!);
    cum[t] = acc;
  }
}

/**
 * Depthwise causal convolution over time, per channel:
 *   y[t,ch] = bias[ch] + Σ_{j<K} w[ch,j]·x[t − K + 1 + j, ch]
 * (x before the sequence start counts as 0, so w[ch,K−1] weighs the
 * current step). x [B,T,C], w [C,K], bias [C] (empty: none) → y [B,T,C].
 */
export function causalConvForward(x: FloatArray, w: FloatArray, bias: FloatArray, y: FloatArray, B: number, T: number, C: number, K: number): void {
  for (let bi = 0; bi < B; bi++) {
    for (let t = 0; t < T; t++) {
      const yo = (bi * T + t) * C;
      for (let ch = 0; ch < C; ch++) {
        let s = bias.length > 0 ? bias[ch]! : 0;
        for (let j = 0; j < K; j++) {
          const src = t - K + 1 + j;
          if (src >= 0) s += w[ch * K + j]! * x[(bi * T + src) * C + ch]!;
        }
        y[yo + ch] = s;
      }
    }
  }
}

/** Backward of causalConvForward: dy [B,T,C] → adds into dx, dw, dbias (any may be empty). */
export function causalConvBackward(x: FloatArray, w: FloatArray, dy: FloatArray, dx: FloatArray, dw: FloatArray, dbias: FloatArray, B: number, T: number, C: number, K: number): void {
  for (let bi = 0; bi < B; bi++) {
    for (let t = 0; t < T; t++) {
      const yo = (bi * T + t) * C;
      for (let ch = 0; ch < C; ch++) {
        const g = dy[yo + ch]!;
        if (dbias.length > 0) dbias[ch]! += g;
        for (let j = 0; j < K; j++) {
          const src = t - K + 1 + j;
          if (src < 0) continue;
          const xi = (bi * T + src) * C + ch;
          if (dw.length > 0) dw[ch * K + j]! += g * x[xi]!;
          if (dx.length > 0) dx[xi]! += g * w[ch * K + j]!;
        }
      }
    }
  }
}

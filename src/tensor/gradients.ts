/**
 * Every op the tape records, with its backward rule: the one place to read
 * how a gradient flows through qkd's autograd. The code of each rule sits
 * beside its forward pass (the file named), where it is checked against
 * float64 finite differences (test/helpers/check-op.ts); this table is what
 * a reader scans. `record` accepts only these names, so an op cannot be
 * added without its rule here: a compile error, not a review comment.
 *
 * Notation: y the op's output and dy its incoming gradient; every rule
 * *adds* into the input gradients (a tensor used twice sums both). Sums
 * over broadcast axes are implied for the elementwise ops. STE: the
 * straight-through estimator (the rounding passes the gradient unchanged).
 * Legend of dimensions: B batch, T query steps, S key steps, H heads, D head
 * width, V vocabulary, C channels.
 */
export const BACKWARD_RULES = {
  // ---- elementwise (ops/elementwise.ts) -----------------------------------
  add: 'da += dy;  db += dy',
  sub: 'da += dy;  db −= dy',
  mul: 'da += dy·b;  db += dy·a',
  div: 'da += dy / b;  db −= dy·a / b²',
  scale: 'dx += s·dy',
  addScalar: 'dx += dy',
  exp: 'dx += dy·y',
  log: 'dx += dy / x',
  tanh: 'dx += dy·(1 − y²)',
  sigmoid: 'dx += dy·y·(1 − y)',
  silu: 'dx += dy·σ(x)·(1 + x·(1 − σ(x)))',
  gelu: 'dx += dy·(Φ(x) + x·φ(x))  (Φ, φ the normal CDF and density)',
  gelu_tanh: "dx += dy·d/dx[½x(1 + tanh(√(2/π)(x + 0.044715x³)))]",
  relu: 'dx += dy·[x > 0]',
  square: 'dx += 2x·dy',
  sqrt: 'dx += dy / (2y)',
  neg: 'dx −= dy',
  abs: 'dx += dy·sign(x)  (0 at 0)',
  swiglu: 'y = silu(g)·u:  dg += dy·u·silu′(g);  du += dy·silu(g)',
  softcap: 'y = c·tanh(x/c):  dx += dy·(1 − (y/c)²)',
  // ---- matrix products and attention (ops/matmul.ts, ops/attention.ts) ----
  matmul: 'C = op(A)·op(B):  dA += dC·op(B)ᵀ;  dB += op(A)ᵀ·dC  (stored as A and B are; summed over a shared operand\'s batch)',
  attentionProbs: 'P = softmax(cap(scale·QKᵀ) + mask):  dS = P ⊙ (dP − rowsum(dP ⊙ P)) (0 where masked), ⊙ cap′;  dQ += scale·dS·K;  dK += scale·dSᵀ·Q  (each kv head sums its query heads)',
  attentionApply: 'O = P·V:  dP += dO·Vᵀ;  dV += Pᵀ·dO',
  attentionFused: 'O = softmax(cap(scale·QKᵀ) + mask)·V with only L = rowwise log-sum-exp kept:  per tile P = exp(s − L), Δ = rowsum(dO ⊙ O), dS = P ⊙ (dO·Vᵀ − Δ) ⊙ cap′;  dQ += scale·dS·K;  dK += scale·dSᵀ·Q;  dV += Pᵀ·dO  (each kv head sums its query heads; docs/attention.md)',
  // ---- reductions and normalisation (ops/reduce.ts, ops/norm.ts) ----------
  sum: 'dx += dy broadcast along the reduced axis',
  mean: 'dx += dy / n broadcast along the reduced axis',
  max: 'dx += dy at the (first) arg max of each reduced run',
  sumAll: 'dx += dy',
  meanAll: 'dx += dy / size',
  softmax: 'dx += y ⊙ (dy − rowsum(dy ⊙ y))',
  logSoftmax: 'dx += dy − softmax(x)·rowsum(dy)',
  rmsNorm: 'y = x·r·w, r = (mean(x²) + ε)^(−½):  dw += Σ_rows dy·x·r;  dx += r·(dy·w − x·r²·mean(dy·w·x))',
  layerNorm: 'y = x̂·w + b, x̂ = (x − μ)·r:  dw += Σ_rows dy·x̂;  db += Σ_rows dy;  dx += r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w',
  // ---- positions and lookups (ops/rope.ts, ops/embedding.ts, ops/shape.ts) -
  rope: 'dx += dy rotated by −angle (the rotation is orthogonal)',
  embedding: 'dtable[id] += dy[row] for each row that looked id up',
  reshape: 'dx += dy (same elements)',
  permute: 'dx += dy permuted back',
  slice: 'dx[slice] += dy',
  concat: 'dxᵢ += its slice of dy',
  selectRows: 'dx[row] += dy[i] for each selected row',
  clone: 'dx += dy',
  // ---- losses (ops/loss.ts) ------------------------------------------------
  crossEntropy: 'L = mean over counted rows of −log softmax(z)[t]:  dz += dy·(softmax(z) − onehot(t)) / counted',
  klDivergence: 'L = τ²·mean KL(p_T ‖ p_S), p = softmax(z/τ):  dz_S += dy·τ·(p_S − p_T) / rows;  dz_T += dy·τ·p_T ⊙ ((log p_T − log p_S) − KL_row) / rows',
  mse: 'L = mean((a − b)²):  da += 2dy·(a − b) / n;  db −= the same',
  // ---- quantization (ops/quant.ts) -----------------------------------------
  fakeQuantize: 'STE: dw += dy where w lies inside the (clipped) range, 0 where clipped',
  blockFakeQuantize: 'STE: dw += dy (the block scales are refit every call, nothing is clipped)',
  learnedFakeQuantize: 'LSQ/LSQ+: dw += dy inside, 0 clipped;  dθ += g·s·Σ dy·(round(w/s) − w/s inside, q − z clipped);  dz += g·Σ −s·dy (clipped), g = 1/√(n·Q_P)',
  // ---- state-space mixer (ops/ssm.ts; docs/mohawk.md) ----------------------
  ssmScan: 'h_t = a_t·h_{t−1} + B_t x_tᵀ, y_t = C_tᵀ h_t:  backward scan of dh_t = C_t dy_tᵀ + a_{t+1}·dh_{t+1} gives dx, dB, dC, and dlogit through a = σ(−logit)',
  ssmMixerMatrix: 'M[t,s] = (C_t·B_s)·∏_{k=s+1..t} a_k:  dC_t += Σ_s dM·decay·B_s;  dB_s += Σ_t dM·decay·C_t;  dlogit_k from every product that holds a_k',
  causalConv1d: 'y[t,c] = b[c] + Σ_j w[c,j]·x[t−K+1+j,c]:  dx, dw by the same taps reversed;  db += Σ_t dy',
  // ---- regularisers and distillation losses (sat/, distill/) ---------------
  kurtosis: 'κ = m₄/m₂² − 3 of w:  dw += dy·(4(w−μ)³/(n·m₂²) − 4m₄(w−μ)/(n·m₂³) − mean of the same)',
  kurtosisPenalty: 'L = Σ_l c_l·max(0, κ_l − κ_max)²:  dw_l += dy·2c_l·(κ_l − κ_max)·∂κ_l/∂w_l above the ceiling, 0 below',
  spectralPenalty: 'L = Σ σ_max(W)/‖W‖_F, σ = uᵀWv (u, v held):  dW += dy·(u vᵀ/‖W‖_F − σ·W/‖W‖_F³)',
  uniformStepNoise: 'w + U(−Δ/2, Δ/2) with Δ held:  dw += dy (STE)',
  cachedKd: 'KL from cached top-k teacher targets (plus a tail bucket):  dz_S += dy·τ·(p_S − p_T over the buckets) / rows',
  attentionKd: 'L = mean over kept entries of (P_S − P_T)²:  dP_S += 2dy·(P_S − P_T)/n;  dP_T −= the same',
  uldLoss: 'L = mean over rows of Σ_i |sort(p_S)_i − sort(p_T)_i|:  dz_S += dy·softmax-Jacobianᵀ·sign(difference) at the sorted ranks / rows',
} as const satisfies Record<string, string>;

/** The name of an op the tape can record (a key of BACKWARD_RULES). */
export type OpName = keyof typeof BACKWARD_RULES;

// The K-quant sub-block fits of ggml_codec.cc, QKD_LANES sub-blocks at a
// time (8 with AVX2, 4 on the SSE2 baseline): lane j of every vector follows sub-block j through exactly the float32
// operations, in exactly the order, of the scalar fit (make_qkx2_quants,
// make_qx_quants in src/quant/ggml-kquants.ts); data-dependent branches
// become per-lane selects. The results are therefore bit-identical, and the
// tests compare them byte for byte.
//
// Included by ggml_codec.cc inside a namespace, once per instruction set
// (GCC vector extensions: baseline SSE2, and AVX2 under a target pragma); it
// must not include headers itself. Floating-point contraction is off in that
// file, so a*b + c stays a rounded product and a rounded sum.

constexpr int kLanes = QKD_LANES;
typedef float V __attribute__((vector_size(4 * QKD_LANES)));
typedef int32_t I __attribute__((vector_size(4 * QKD_LANES)));

inline V splat(float a) {
  V v;
  for (int j = 0; j < kLanes; j++) v[j] = a;
  return v;
}
inline I splat_i(int32_t a) {
  I v;
  for (int j = 0; j < kLanes; j++) v[j] = a;
  return v;
}
inline bool none(I mask) {
  for (int j = 0; j < kLanes; j++) {
    if (mask[j]) return false;
  }
  return true;
}
inline V to_float(I i) { return __builtin_convertvector(i, V); }
inline V vabs(V v) { return (V)((I)v & splat_i(0x7fffffff)); }
inline V select(I mask, V a, V b) { return mask ? a : b; }
inline I select_i(I mask, I a, I b) { return mask ? a : b; }

// ggml's nearest_int per lane.
inline I nearest(V x) {
  const V val = x + splat(12582912.f);
  return ((I)val & splat_i(0x007fffff)) - splat_i(0x00400000);
}

inline I clamp_i(I v, int32_t lo, int32_t hi) {
  v = select_i(v < splat_i(lo), splat_i(lo), v);
  return select_i(v > splat_i(hi), splat_i(hi), v);
}

// xt[i] lane j = x[n·(first + j) + i]: kLanes sub-blocks of n values side by side.
inline void gather(const float* x, int n, int first, V* xt) {
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < kLanes; j++) xt[i][j] = x[n * (first + j) + i];
  }
}

// make_qkx2_quants per lane (n ≤ 32): levels into Lt, returns the scale, *neg_min = −min.
inline V fit_qkx2(int n, int nmax, const V* x, const V* w, I* Lt, float rmin, float rdelta, int nstep, bool use_mad,
                  V* neg_min) {
  V min = x[0], max = x[0];
  V sum_w = w[0];
  V sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    min = select(x[i] < min, x[i], min);
    max = select(x[i] > max, x[i], max);
    sum_w = sum_w + w[i];
    sum_x = sum_x + w[i] * x[i];
  }
  min = select(min > splat(0.f), splat(0.f), min);
  const I flat = max == min;
  const V flat_min = min;
  const V vnmax = splat(static_cast<float>(nmax));
  auto error = [&](V s, V m, const I* levels) {
    V e = splat(0.f);
    for (int i = 0; i < n; i++) {
      V diff = s * to_float(levels[i]) + m - x[i];
      diff = use_mad ? vabs(diff) : diff * diff;
      e = e + w[i] * diff;
    }
    return e;
  };
  V iscale = vnmax / (max - min);
  V scale = splat(1.f) / iscale;
  for (int i = 0; i < n; i++) Lt[i] = clamp_i(nearest(iscale * (x[i] - min)), 0, nmax);
  V best_error = error(scale, min, Lt);
  I laux[32];
  for (int is = 0; is <= nstep; is++) {
    iscale = (splat(rmin) + splat(rdelta) * splat(static_cast<float>(is)) + vnmax) / (max - min);
    V sum_l = splat(0.f), sum_l2 = splat(0.f), sum_xl = splat(0.f);
    for (int i = 0; i < n; i++) {
      laux[i] = clamp_i(nearest(iscale * (x[i] - min)), 0, nmax);
      const V lf = to_float(laux[i]);
      sum_l = sum_l + w[i] * lf;
      sum_l2 = sum_l2 + w[i] * lf * lf;
      sum_xl = sum_xl + w[i] * lf * x[i];
    }
    const V D = sum_w * sum_l2 - sum_l * sum_l;
    const I positive_d = D > splat(0.f);
    if (none(positive_d)) continue;
    V this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    V this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    const I above = this_min > splat(0.f);
    this_min = select(above, splat(0.f), this_min);
    this_scale = select(above, sum_xl / sum_l2, this_scale);
    const V cur_error = error(this_scale, this_min, laux);
    const I accept = positive_d & (cur_error < best_error);
    for (int i = 0; i < n; i++) Lt[i] = select_i(accept, laux[i], Lt[i]);
    best_error = select(accept, cur_error, best_error);
    scale = select(accept, this_scale, scale);
    min = select(accept, this_min, min);
  }
  // A flat sub-block (max == min) is all level 0 with scale 0 and its own min.
  for (int i = 0; i < n; i++) Lt[i] = select_i(flat, splat_i(0), Lt[i]);
  *neg_min = -select(flat, flat_min, min);
  return select(flat, splat(0.f), scale);
}

// make_qx_quants per lane (Q6_K: n = 16, nmax = 32): levels + nmax into Lt, returns the scale.
// imp: per-element importance multiplying the x² weights, or nullptr.
inline V fit_qx(int n, int nmax, const V* x, const V* imp, I* Lt) {
  V amax = splat(0.f), max = splat(0.f);
  for (int i = 0; i < n; i++) {
    const V a = vabs(x[i]);
    const I bigger = amax < a;
    amax = select(bigger, a, amax);
    max = select(bigger, x[i], max);
  }
  const I zero = amax < splat(GROUP_MAX_EPS);
  I laux[32];
  auto fit = [&](V iscale, V* sumlx_out, V* suml2_out) {
    V sumlx = splat(0.f), suml2 = splat(0.f);
    for (int i = 0; i < n; i++) {
      laux[i] = clamp_i(nearest(iscale * x[i]), -nmax, nmax - 1);
      const V l = to_float(laux[i]);
      const V w = imp == nullptr ? x[i] * x[i] : imp[i] * (x[i] * x[i]);
      sumlx = sumlx + w * x[i] * l;
      suml2 = suml2 + w * l * l;
    }
    *sumlx_out = sumlx;
    *suml2_out = suml2;
  };
  V sumlx, suml2;
  fit(splat(static_cast<float>(-nmax)) / max, &sumlx, &suml2);
  for (int i = 0; i < n; i++) Lt[i] = laux[i];
  V scale = select(suml2 != splat(0.f), sumlx / suml2, splat(0.f));
  V best = scale * sumlx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0) continue;
    fit(-(splat(static_cast<float>(nmax)) + splat(0.1f) * splat(static_cast<float>(is))) / max, &sumlx, &suml2);
    const I accept = (suml2 > splat(0.f)) & (sumlx * sumlx > best * suml2);
    for (int i = 0; i < n; i++) Lt[i] = select_i(accept, laux[i], Lt[i]);
    scale = select(accept, sumlx / suml2, scale);
    best = select(accept, scale * sumlx, best);
  }
  for (int i = 0; i < n; i++) Lt[i] = select_i(zero, splat_i(0), Lt[i] + splat_i(nmax));
  return select(zero, splat(0.f), scale);
}

// Q4_K / Q5_K: the eight 32-value sub-blocks of a super-block, kLanes per pass.
inline void fit_q45_k(const float* x, const float* imp, bool five, uint8_t* L, float* scales, float* mins) {
  for (int group = 0; group < 8 / kLanes; group++) {
  V xt[32], wt[32];
  I Lt[32];
  gather(x, 32, kLanes * group, xt);
  V sum_x2 = splat(0.f);
  for (int l = 0; l < 32; l++) sum_x2 = sum_x2 + xt[l] * xt[l];
  V av_x;
  const V mean = sum_x2 / splat(32.f);
  for (int j = 0; j < kLanes; j++) av_x[j] = std::sqrt(mean[j]);
  for (int l = 0; l < 32; l++) wt[l] = av_x + vabs(xt[l]);
  if (imp != nullptr) {
    V it[32];
    gather(imp, 32, kLanes * group, it);
    for (int l = 0; l < 32; l++) wt[l] = it[l] * wt[l];
  }
  V neg_min;
  const V scale = five ? fit_qkx2(32, 31, xt, wt, Lt, -0.5f, 0.1f, 15, false, &neg_min)
                       : fit_qkx2(32, 15, xt, wt, Lt, -1.f, 0.1f, 20, false, &neg_min);
  for (int j = 0; j < kLanes; j++) {
    const int sub = kLanes * group + j;
    scales[sub] = scale[j];
    mins[sub] = neg_min[j];
    for (int i = 0; i < 32; i++) L[32 * sub + i] = static_cast<uint8_t>(Lt[i][j]);
  }
  }
}

// Q2_K: sixteen 16-value sub-blocks, kLanes per pass, weights |x|, absolute error.
inline void fit_q2_k(const float* x, const float* imp, uint8_t* L, float* scales, float* mins) {
  for (int group = 0; group < 16 / kLanes; group++) {
    V xt[16], wt[16];
    I Lt[16];
    gather(x, 16, kLanes * group, xt);
    for (int l = 0; l < 16; l++) wt[l] = vabs(xt[l]);
    if (imp != nullptr) {
      V it[16];
      gather(imp, 16, kLanes * group, it);
      for (int l = 0; l < 16; l++) wt[l] = it[l] * wt[l];
    }
    V neg_min;
    const V scale = fit_qkx2(16, 3, xt, wt, Lt, -0.5f, 0.1f, 15, true, &neg_min);
    for (int j = 0; j < kLanes; j++) {
      const int sub = kLanes * group + j;
      scales[sub] = scale[j];
      mins[sub] = neg_min[j];
      for (int i = 0; i < 16; i++) L[16 * sub + i] = static_cast<uint8_t>(Lt[i][j]);
    }
  }
}

// Q6_K: sixteen 16-value sub-blocks, kLanes per pass.
inline void fit_q6_k(const float* x, const float* imp, uint8_t* L, float* scales) {
  for (int group = 0; group < 16 / kLanes; group++) {
    V xt[16];
    I Lt[16];
    gather(x, 16, kLanes * group, xt);
    V it[16];
    if (imp != nullptr) gather(imp, 16, kLanes * group, it);
    const V scale = fit_qx(16, 32, xt, imp == nullptr ? nullptr : it, Lt);
    for (int j = 0; j < kLanes; j++) {
      const int sub = kLanes * group + j;
      scales[sub] = scale[j];
      for (int i = 0; i < 16; i++) L[16 * sub + i] = static_cast<uint8_t>(Lt[i][j]);
    }
  }
}

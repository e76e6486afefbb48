// The tile kernels of fused attention (attention_kernels.h), written once
// against a vector type V (Avx512, Avx2 or Portable) and compiled once per
// path by attention_avx512.cc, attention_avx2.cc and attention_portable.cc.
// The algorithm is docs/attention.md's; the TypeScript reference
// (src/tensor/reference/attention.ts) is the definition.
//
// The rules of fused_rows.h hold here too: the SIMD files include this header
// after `#pragma GCC target(...)`, so everything lives in an anonymous
// namespace and nothing instantiates a template outside it (no std
// templates; the standard headers are included before the pragma).
//
// A tile pairs up to kAttentionQueryTile (Br) query rows (steps × query
// heads of one kv head, AttentionTile) with up to kAttentionKeyTile (Bc)
// keys of that kv head. Scores and probabilities of a tile live in [Br][Bc]
// scratch; a key tile is transposed into [D][Bc] so that the score product
// runs along keys, a vector of keys at a time.
#pragma once

#include <cmath>
#include <cstdint>

#include "attention_kernels.h"

namespace qkd {
namespace {

constexpr float kAttnInfinity = __builtin_inff();
constexpr int64_t kBr = kAttentionQueryTile;
constexpr int64_t kBc = kAttentionKeyTile;

inline int64_t attn_min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t attn_max(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t attn_clamp(int64_t x, int64_t lo, int64_t hi) { return attn_min(attn_max(x, lo), hi); }

// Keys [*lo, *hi) visible to query t (attention.h).
inline void visible_keys(const AttentionArgs& a, int64_t t, int64_t* lo, int64_t* hi) {
  const int64_t p = a.S - a.T + t;
  *hi = a.causal ? attn_clamp(p + 1, 0, a.S) : a.S;
  *lo = a.window > 0 ? attn_max(0, p - a.window + 1) : 0;
}

// Queries [*lo, *hi) that see at least one key of [j0, j1): the rows of the
// backward that a key tile touches (both ends of visible_keys grow with t,
// so they form one run of steps).
inline void seeing_queries(const AttentionArgs& a, int64_t j0, int64_t j1, int64_t* lo, int64_t* hi) {
  const int64_t offset = a.S - a.T;
  *lo = a.causal ? attn_clamp(j0 - offset, 0, a.T) : 0;
  *hi = a.window > 0 ? attn_clamp(j1 - 1 + a.window - offset, 0, a.T) : a.T;
}

// kt[d·Bc + jj] = rows[jj·ld + d] for jj < n; columns n … ncols − 1 are 0.
inline void transpose_tile(const float* rows, int64_t ld, int64_t n, int64_t ncols, int64_t D, float* kt) {
  for (int64_t d = 0; d < D; ++d) {
    float* out = kt + d * kBc;
    for (int64_t jj = 0; jj < n; ++jj) out[jj] = rows[jj * ld + d];
    for (int64_t jj = n; jj < ncols; ++jj) out[jj] = 0.0f;
  }
}

// c[i·Bc + col] = Σ_d a[i·lda + d]·bt[d·Bc + col] for i < rows and col <
// ncols (a multiple of the width): rows of a against a transposed tile, in
// blocks of 4 rows × 2 vectors of columns.
template <class V>
void panel_product(const float* a, int64_t lda, int64_t rows, const float* bt, int64_t depth, int64_t ncols,
                   float* c) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const float* a0 = a + i * lda;
    const float* a1 = a0 + lda;
    const float* a2 = a1 + lda;
    const float* a3 = a2 + lda;
    float* c0 = c + i * kBc;
    int64_t col = 0;
    for (; col + 2 * W <= ncols; col += 2 * W) {
      F s00 = V::zero(), s01 = V::zero(), s10 = V::zero(), s11 = V::zero();
      F s20 = V::zero(), s21 = V::zero(), s30 = V::zero(), s31 = V::zero();
      for (int64_t d = 0; d < depth; ++d) {
        const F b0 = V::loadn(bt + d * kBc + col, W);
        const F b1 = V::loadn(bt + d * kBc + col + W, W);
        F x = V::set1(a0[d]);
        s00 = V::fmadd(x, b0, s00);
        s01 = V::fmadd(x, b1, s01);
        x = V::set1(a1[d]);
        s10 = V::fmadd(x, b0, s10);
        s11 = V::fmadd(x, b1, s11);
        x = V::set1(a2[d]);
        s20 = V::fmadd(x, b0, s20);
        s21 = V::fmadd(x, b1, s21);
        x = V::set1(a3[d]);
        s30 = V::fmadd(x, b0, s30);
        s31 = V::fmadd(x, b1, s31);
      }
      V::storen(c0 + col, W, s00);
      V::storen(c0 + col + W, W, s01);
      V::storen(c0 + kBc + col, W, s10);
      V::storen(c0 + kBc + col + W, W, s11);
      V::storen(c0 + 2 * kBc + col, W, s20);
      V::storen(c0 + 2 * kBc + col + W, W, s21);
      V::storen(c0 + 3 * kBc + col, W, s30);
      V::storen(c0 + 3 * kBc + col + W, W, s31);
    }
    for (; col < ncols; col += W) {
      F s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
      for (int64_t d = 0; d < depth; ++d) {
        const F b0 = V::loadn(bt + d * kBc + col, W);
        s0 = V::fmadd(V::set1(a0[d]), b0, s0);
        s1 = V::fmadd(V::set1(a1[d]), b0, s1);
        s2 = V::fmadd(V::set1(a2[d]), b0, s2);
        s3 = V::fmadd(V::set1(a3[d]), b0, s3);
      }
      V::storen(c0 + col, W, s0);
      V::storen(c0 + kBc + col, W, s1);
      V::storen(c0 + 2 * kBc + col, W, s2);
      V::storen(c0 + 3 * kBc + col, W, s3);
    }
  }
  for (; i < rows; ++i) {
    const float* a0 = a + i * lda;
    for (int64_t col = 0; col < ncols; col += W) {
      F s0 = V::zero();
      for (int64_t d = 0; d < depth; ++d) s0 = V::fmadd(V::set1(a0[d]), V::loadn(bt + d * kBc + col, W), s0);
      V::storen(c + i * kBc + col, W, s0);
    }
  }
}

// c[r·ldc + d] += alpha·Σ_x a[r·a_row + x·a_inner]·b[x·ldb + d] for r < rows,
// d < width: rows of c as combinations of rows of b, with a read along rows
// (a_inner 1) or down columns (a_row 1, a transposed tile). Blocks of 4 rows
// × 1 vector of c; the last vector of a row is partial when width is not a
// multiple of the vector width.
template <class V>
void accumulate_rows(const float* a, int64_t a_row, int64_t a_inner, int64_t rows, int64_t inner, const float* b,
                     int64_t ldb, int64_t width, float* c, int64_t ldc, float alpha) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  const F scale = V::set1(alpha);
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* a0 = a + r * a_row;
    const float* a1 = a0 + a_row;
    const float* a2 = a1 + a_row;
    const float* a3 = a2 + a_row;
    float* c0 = c + r * ldc;
    for (int64_t d = 0; d < width; d += W) {
      const int64_t left = width - d;
      F s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
      for (int64_t x = 0; x < inner; ++x) {
        const F bv = V::loadn(b + x * ldb + d, left);
        const int64_t ax = x * a_inner;
        s0 = V::fmadd(V::set1(a0[ax]), bv, s0);
        s1 = V::fmadd(V::set1(a1[ax]), bv, s1);
        s2 = V::fmadd(V::set1(a2[ax]), bv, s2);
        s3 = V::fmadd(V::set1(a3[ax]), bv, s3);
      }
      V::storen(c0 + d, left, V::fmadd(scale, s0, V::loadn(c0 + d, left)));
      V::storen(c0 + ldc + d, left, V::fmadd(scale, s1, V::loadn(c0 + ldc + d, left)));
      V::storen(c0 + 2 * ldc + d, left, V::fmadd(scale, s2, V::loadn(c0 + 2 * ldc + d, left)));
      V::storen(c0 + 3 * ldc + d, left, V::fmadd(scale, s3, V::loadn(c0 + 3 * ldc + d, left)));
    }
  }
  for (; r < rows; ++r) {
    const float* a0 = a + r * a_row;
    float* c0 = c + r * ldc;
    for (int64_t d = 0; d < width; d += W) {
      const int64_t left = width - d;
      F s0 = V::zero();
      for (int64_t x = 0; x < inner; ++x) s0 = V::fmadd(V::set1(a0[x * a_inner]), V::loadn(b + x * ldb + d, left), s0);
      V::storen(c0 + d, left, V::fmadd(scale, s0, V::loadn(c0 + d, left)));
    }
  }
}

// x[0, n) ← c·tanh(x/c), the soft-capped scores; slope[0, n) ← 1 − tanh², the
// cap's derivative (nullptr: not wanted).
inline void softcap_row(float* x, float* slope, int64_t n, float c) {
  for (int64_t j = 0; j < n; ++j) {
    const float th = std::tanh(x[j] / c);
    x[j] = c * th;
    if (slope != nullptr) slope[j] = 1.0f - th * th;
  }
}

inline void zero_floats(float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = 0.0f;
}

// p[ca, cb) ← exp(s − shift), zero on [0, ca) and [cb, n); returns Σ p in double.
template <class V>
double exp_row(float* p, int64_t ca, int64_t cb, int64_t n, float shift) {
  using F = typename V::F;
  using D = typename V::D;
  constexpr int64_t W = V::kWidth;
  zero_floats(p, ca);
  zero_floats(p + cb, n - cb);
  const F m = V::set1(shift);
  D sum = V::dzero();
  for (int64_t c = ca; c < cb; c += W) {
    const int64_t left = cb - c;
    V::storen(p + c, left, V::exp(V::sub(V::loadn(p + c, left), m)));
    sum = V::dadd(sum, V::to_double(V::loadn(p + c, left)));  // lanes past `left` load as 0
  }
  return V::dsum(sum);
}

// Offset of row i of a tile in q, o, dO, dq ([B,T,H,D]), and of its lse.
inline int64_t row_offset(const AttentionArgs& a, const AttentionTile& r, int64_t i) {
  return ((r.b * a.T + r.t0 + i / r.heads) * a.H + r.h0 + i % r.heads) * a.D;
}
inline int64_t lse_index(const AttentionArgs& a, const AttentionTile& r, int64_t i) {
  return (r.b * a.H + r.h0 + i % r.heads) * a.T + r.t0 + i / r.heads;
}

// ---- Forward ----------------------------------------------------------------------

// One task: the rows of one tile. An online softmax over tiles of keys: per
// row the running maximum m, the running sum l of exp(s − m) (double) and the
// unnormalised output acc; a key tile that raises m rescales l and acc by
// exp(m_old − m_new). At the end o = acc / l and lse = m + log l.
template <class V>
void forward_tile(const AttentionBuffers& io, const AttentionArgs& a, const AttentionTile& r, float* scratch) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  const int64_t D = a.D, S = a.S, G = a.G;
  const int64_t g = r.h0 / (a.H / G);
  const int64_t rows = r.steps * r.heads;
  float* qs = scratch;                          // [Br][D] scale·q
  float* acc = qs + attention_region(kBr * D);  // [Br][D]
  float* kt = acc + attention_region(kBr * D);  // [D][Bc]
  float* sc = kt + attention_region(D * kBc);   // [Br][Bc]
  float m[kBr];
  double l[kBr];
  int64_t lo[kBr], hi[kBr];
  for (int64_t i = 0; i < rows; ++i) {
    const float* qrow = io.q + row_offset(a, r, i);
    for (int64_t d = 0; d < D; ++d) qs[i * D + d] = a.scale * qrow[d];
    zero_floats(acc + i * D, D);
    visible_keys(a, r.t0 + i / r.heads, &lo[i], &hi[i]);
    m[i] = -kAttnInfinity;
    l[i] = 0.0;
  }
  // The keys any row of the tile sees (lo and hi grow with the step).
  const int64_t first = lo[0], last = hi[rows - 1];
  const float* kbase = io.k + (r.b * S * G + g) * D;
  const float* vbase = io.v + (r.b * S * G + g) * D;
  for (int64_t j0 = first; j0 < last; j0 += kBc) {
    const int64_t n = attn_min(kBc, last - j0);
    const int64_t ncols = (n + W - 1) / W * W;
    transpose_tile(kbase + j0 * G * D, G * D, n, ncols, D, kt);
    panel_product<V>(qs, D, rows, kt, D, ncols, sc);
    for (int64_t i = 0; i < rows; ++i) {
      float* s = sc + i * kBc;
      const int64_t ca = attn_clamp(lo[i] - j0, 0, n), cb = attn_clamp(hi[i] - j0, 0, n);
      if (ca >= cb) {  // nothing visible to this row here
        zero_floats(s, n);
        continue;
      }
      if (a.softcap > 0) softcap_row(s + ca, nullptr, cb - ca, a.softcap);
      F mv = V::set1(-kAttnInfinity);
      for (int64_t c = ca; c < cb; c += W) mv = V::max(mv, V::loadn_fill(s + c, cb - c, V::set1(-kAttnInfinity)));
      const float tile_max = V::reduce_max(mv);
      if (tile_max == -kAttnInfinity && m[i] == -kAttnInfinity) {  // scores of −∞ so far: nothing to add yet
        zero_floats(s, n);
        continue;
      }
      // (A NaN score makes l NaN below, whatever the maximum, so the row comes out NaN.)
      const float m_new = tile_max > m[i] ? tile_max : m[i];
      const float correction = std::exp(m[i] - m_new);  // 0 on the row's first tile
      l[i] = l[i] * correction + exp_row<V>(s, ca, cb, n, m_new);
      m[i] = m_new;
      if (correction != 1.0f) {
        const F cv = V::set1(correction);
        float* arow = acc + i * D;
        for (int64_t d = 0; d < D; d += W) V::storen(arow + d, D - d, V::mul(V::loadn(arow + d, D - d), cv));
      }
    }
    // acc += P·V over the tile (masked probabilities are 0).
    accumulate_rows<V>(sc, kBc, 1, rows, n, vbase + j0 * G * D, G * D, D, acc, D, 1.0f);
  }
  for (int64_t i = 0; i < rows; ++i) {
    float* orow = io.o_out + row_offset(a, r, i);
    if (l[i] != 0.0) {  // 0: the row saw no key (NaN takes this branch and stays NaN)
      const F inv = V::set1(static_cast<float>(1.0 / l[i]));
      for (int64_t d = 0; d < D; d += W) V::storen(orow + d, D - d, V::mul(V::loadn(acc + i * D + d, D - d), inv));
      io.lse_out[lse_index(a, r, i)] = static_cast<float>(static_cast<double>(m[i]) + std::log(l[i]));
    } else {
      zero_floats(orow, D);
      io.lse_out[lse_index(a, r, i)] = -kAttnInfinity;
    }
  }
}

// ---- Backward ---------------------------------------------------------------------

// One task: kv head g of batch row b over every chunks-th key tile from
// tile `chunk` on, i.e. those tiles' dk and dv rows, which no other task
// touches, and their share of the dq rows of g's query heads (no other task
// adds into io.dq's rows: with chunks > 1 it is this chunk's partial
// buffer). Outer loop over the key tiles (their dk and dv accumulate in
// scratch across the query tiles), inner over the tiles of query rows that
// see the key tile; per pair
// P = exp(s − lse) is recomputed, then dv += Pᵀ·dO, dP = dO·vᵀ,
// dS = P ⊙ (dP − Δ) ⊙ cap′, dq += scale·dS·k, dk += scale·dSᵀ·q.
template <class V>
void backward_group(const AttentionBuffers& io, const AttentionArgs& a, int64_t b, int64_t g, int64_t chunk, int64_t chunks,
                    float* scratch) {
  using F = typename V::F;
  constexpr int64_t W = V::kWidth;
  const int64_t D = a.D, T = a.T, S = a.S, H = a.H, G = a.G, group = H / G;
  const bool want_q = io.dq != nullptr, want_k = io.dk != nullptr, want_v = io.dv != nullptr;
  const bool want_ds = want_q || want_k;
  float* kt = scratch;                                 // [D][Bc] keys, transposed
  float* vt = kt + attention_region(D * kBc);          // [D][Bc] values, transposed
  float* dk_acc = vt + attention_region(D * kBc);      // [Bc][D]
  float* dv_acc = dk_acc + attention_region(kBc * D);  // [Bc][D]
  float* qs = dv_acc + attention_region(kBc * D);      // [Br][D] scale·q of the rows
  float* dos = qs + attention_region(kBr * D);         // [Br][D] dO of the rows
  float* dqs = dos + attention_region(kBr * D);        // [Br][D] the pair's share of dq
  float* p = dqs + attention_region(kBr * D);          // [Br][Bc] probabilities
  float* ds = p + attention_region(kBr * kBc);         // [Br][Bc] dP, then dS
  float* slope = ds + attention_region(kBr * kBc);     // [Br][Bc] cap′ (softcap only)
  float* delta = slope + attention_region(kBr * kBc);  // [group][T] Δ = Σ_d dO·o
  if (want_ds) {
    for (int64_t hh = 0; hh < group; ++hh) {
      const int64_t h = g * group + hh;
      for (int64_t t = 0; t < T; ++t) {
        const float* dorow = io.dO + ((b * T + t) * H + h) * D;
        const float* orow = io.o + ((b * T + t) * H + h) * D;
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(dorow[d]) * orow[d];
        delta[hh * T + t] = static_cast<float>(dot);
      }
    }
  }
  int64_t tile_heads = 0, tile_steps = 0;
  attention_tiling(a, &tile_heads, &tile_steps);
  const float* kbase = io.k + (b * S * G + g) * D;
  const float* vbase = io.v + (b * S * G + g) * D;
  int64_t lo[kBr], hi[kBr];
  for (int64_t j0 = chunk * kBc; j0 < S; j0 += chunks * kBc) {
    const int64_t n = attn_min(kBc, S - j0);
    const int64_t ncols = (n + W - 1) / W * W;
    int64_t t_lo = 0, t_hi = 0;
    seeing_queries(a, j0, j0 + n, &t_lo, &t_hi);
    if (t_lo >= t_hi) continue;
    transpose_tile(kbase + j0 * G * D, G * D, n, ncols, D, kt);
    if (want_ds) transpose_tile(vbase + j0 * G * D, G * D, n, ncols, D, vt);
    zero_floats(dk_acc, n * D);
    zero_floats(dv_acc, n * D);
    for (int64_t h0 = g * group; h0 < (g + 1) * group; h0 += tile_heads) {
      for (int64_t t0 = t_lo; t0 < t_hi; t0 += tile_steps) {
        const AttentionTile r{b, t0, attn_min(tile_steps, t_hi - t0), h0, attn_min(tile_heads, (g + 1) * group - h0)};
        const int64_t rows = r.steps * r.heads;
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t at = row_offset(a, r, i);
          for (int64_t d = 0; d < D; ++d) {
            qs[i * D + d] = a.scale * io.q[at + d];
            dos[i * D + d] = io.dO[at + d];
          }
        }
        panel_product<V>(qs, D, rows, kt, D, ncols, p);
        for (int64_t i = 0; i < rows; ++i) {
          float* pi = p + i * kBc;
          visible_keys(a, r.t0 + i / r.heads, &lo[i], &hi[i]);
          const int64_t ca = attn_clamp(lo[i] - j0, 0, n), cb = attn_clamp(hi[i] - j0, 0, n);
          const float L = io.lse[lse_index(a, r, i)];
          if (ca >= cb || L == -kAttnInfinity) {
            lo[i] = hi[i] = 0;  // dS of this row: all 0
            zero_floats(pi, n);
            continue;
          }
          if (a.softcap > 0) softcap_row(pi + ca, slope + i * kBc + ca, cb - ca, a.softcap);
          exp_row<V>(pi, ca, cb, n, L);
          lo[i] = ca;
          hi[i] = cb;
        }
        if (want_v) accumulate_rows<V>(p, 1, kBc, n, rows, dos, D, D, dv_acc, D, 1.0f);
        if (!want_ds) continue;
        panel_product<V>(dos, D, rows, vt, D, ncols, ds);
        for (int64_t i = 0; i < rows; ++i) {
          float* dsi = ds + i * kBc;
          const float* pi = p + i * kBc;
          const int64_t ca = lo[i], cb = hi[i];
          zero_floats(dsi, ca);
          zero_floats(dsi + cb, n - cb);
          const F dv = V::set1(delta[(r.h0 + i % r.heads - g * group) * T + r.t0 + i / r.heads]);
          for (int64_t c = ca; c < cb; c += W) {
            const int64_t left = cb - c;
            F x = V::mul(V::loadn(pi + c, left), V::sub(V::loadn(dsi + c, left), dv));
            if (a.softcap > 0) x = V::mul(x, V::loadn(slope + i * kBc + c, left));
            V::storen(dsi + c, left, x);
          }
        }
        if (want_q) {
          // dq rows of the tile += scale·dS·k (summed over the key tile first, then added).
          zero_floats(dqs, rows * D);
          accumulate_rows<V>(ds, kBc, 1, rows, n, kbase + j0 * G * D, G * D, D, dqs, D, a.scale);
          for (int64_t i = 0; i < rows; ++i) {
            float* dqrow = io.dq + row_offset(a, r, i);
            for (int64_t d = 0; d < D; d += W) V::storen(dqrow + d, D - d, V::add(V::loadn(dqrow + d, D - d), V::loadn(dqs + i * D + d, D - d)));
          }
        }
        if (want_k) accumulate_rows<V>(ds, 1, kBc, n, rows, qs, D, D, dk_acc, D, 1.0f);
      }
    }
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t row = ((b * S + j0 + jj) * G + g) * D;
      if (want_k) {
        for (int64_t d = 0; d < D; d += W) V::storen(io.dk + row + d, D - d, V::add(V::loadn(io.dk + row + d, D - d), V::loadn(dk_acc + jj * D + d, D - d)));
      }
      if (want_v) {
        for (int64_t d = 0; d < D; d += W) V::storen(io.dv + row + d, D - d, V::add(V::loadn(io.dv + row + d, D - d), V::loadn(dv_acc + jj * D + d, D - d)));
      }
    }
  }
}

template <class V>
constexpr AttentionKernels make_attention_kernels() {
  return AttentionKernels{forward_tile<V>, backward_group<V>};
}

}  // namespace
}  // namespace qkd

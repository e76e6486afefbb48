// See ssm.h. Each kernel is a parallel loop over independent slices; the
// body of one slice is the reference kernel's loop nest for that slice.
#include "ssm.h"

#include <cmath>
#include <vector>

#include "thread_pool.h"

namespace qkd {
namespace {

// log sigmoid(-l) = -softplus(l), without overflow for large |l|.
inline double log_decay(double l) { return l > 0 ? -(l + std::log1p(std::exp(-l))) : -std::log1p(std::exp(l)); }

int64_t chunks_of(int64_t T, int64_t L) { return (T + L - 1) / L; }

// Runs body(task) for task in [0, count) on the shared pool.
template <class Body>
void parallel(int64_t count, Body& body) {
  ThreadPool::shared().run(
      count, [](void* ctx, int64_t task, int) { (*static_cast<Body*>(ctx))(task); }, &body);
}

}  // namespace

void ssm_scan_forward(const float* x, const float* b, const float* c, const float* logit, float* y, float* states,
                      const ScanDims& d) {
  const int64_t T = d.T, H = d.H, P = d.P, N = d.N, L = d.L, NP = N * P;
  const int64_t chunks = chunks_of(T, L);
  auto body = [&](int64_t slice) {
    const int64_t bi = slice / H, hd = slice % H;
    std::vector<double> h(NP, 0.0);
    for (int64_t t = 0; t < T; t++) {
      if (t % L == 0) {
        float* s = states + ((bi * H + hd) * chunks + t / L) * NP;
        for (int64_t i = 0; i < NP; i++) s[i] = static_cast<float>(h[i]);
      }
      const int64_t row = bi * T + t;
      const double a = std::exp(log_decay(logit[row * H + hd]));
      const float* xt = x + (row * H + hd) * P;
      const float* bt = b + (row * H + hd) * N;
      const float* ct = c + (row * H + hd) * N;
      for (int64_t n = 0; n < N; n++) {
        const double bn = bt[n];
        double* hn = h.data() + n * P;
        for (int64_t p = 0; p < P; p++) hn[p] = a * hn[p] + bn * xt[p];
      }
      float* yt = y + (row * H + hd) * P;
      for (int64_t p = 0; p < P; p++) {
        double s = 0;
        for (int64_t n = 0; n < N; n++) s += ct[n] * h[n * P + p];
        yt[p] = static_cast<float>(s);
      }
    }
  };
  parallel(d.B * H, body);
}

void ssm_scan_backward(const float* x, const float* b, const float* c, const float* logit, const float* states,
                       const float* dy, float* dx, float* db, float* dc, float* dlogit, const ScanDims& d) {
  const int64_t T = d.T, H = d.H, P = d.P, N = d.N, L = d.L, NP = N * P;
  const int64_t chunks = chunks_of(T, L);
  auto body = [&](int64_t slice) {
    const int64_t bi = slice / H, hd = slice % H;
    std::vector<double> g(NP, 0.0), hs(L * NP), enter(NP);
    for (int64_t k = chunks - 1; k >= 0; k--) {
      const int64_t t0 = k * L, t1 = t0 + L < T ? t0 + L : T;
      const float* s0 = states + ((bi * H + hd) * chunks + k) * NP;
      for (int64_t i = 0; i < NP; i++) enter[i] = s0[i];
      // The states inside the chunk, recomputed from the one entering it.
      for (int64_t t = t0; t < t1; t++) {
        const int64_t row = bi * T + t;
        const double a = std::exp(log_decay(logit[row * H + hd]));
        const float* xt = x + (row * H + hd) * P;
        const float* bt = b + (row * H + hd) * N;
        const double* prev = t == t0 ? enter.data() : hs.data() + (t - 1 - t0) * NP;
        double* cur = hs.data() + (t - t0) * NP;
        for (int64_t n = 0; n < N; n++)
          for (int64_t p = 0; p < P; p++) cur[n * P + p] = a * prev[n * P + p] + static_cast<double>(bt[n]) * xt[p];
      }
      for (int64_t t = t1 - 1; t >= t0; t--) {
        const int64_t row = bi * T + t;
        const double a = std::exp(log_decay(logit[row * H + hd]));
        const float* xt = x + (row * H + hd) * P;
        const float* bt = b + (row * H + hd) * N;
        const float* ct = c + (row * H + hd) * N;
        const float* dyt = dy + (row * H + hd) * P;
        const double* cur = hs.data() + (t - t0) * NP;
        const double* prev = t == t0 ? enter.data() : hs.data() + (t - 1 - t0) * NP;
        // g holds a_{t+1}·g_{t+1}; add this step's output term.
        for (int64_t n = 0; n < N; n++)
          for (int64_t p = 0; p < P; p++) g[n * P + p] += static_cast<double>(ct[n]) * dyt[p];
        if (dc != nullptr) {
          for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t p = 0; p < P; p++) s += cur[n * P + p] * dyt[p];
            dc[(row * H + hd) * N + n] += static_cast<float>(s);
          }
        }
        if (db != nullptr) {
          for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t p = 0; p < P; p++) s += g[n * P + p] * xt[p];
            db[(row * H + hd) * N + n] += static_cast<float>(s);
          }
        }
        if (dx != nullptr) {
          for (int64_t p = 0; p < P; p++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += g[n * P + p] * bt[n];
            dx[(row * H + hd) * P + p] += static_cast<float>(s);
          }
        }
        if (dlogit != nullptr) {
          double s = 0;
          for (int64_t i = 0; i < NP; i++) s += g[i] * prev[i];
          dlogit[row * H + hd] += static_cast<float>(s * a * -(1 - a));
        }
        for (int64_t i = 0; i < NP; i++) g[i] *= a;
      }
    }
  };
  parallel(d.B * H, body);
}

namespace {

void cumulative_log_decay(const float* logit, double* cum, int64_t bi, int64_t hd, int64_t T, int64_t H) {
  double acc = 0;
  for (int64_t t = 0; t < T; t++) {
    acc += log_decay(logit[(bi * T + t) * H + hd]);
    cum[t] = acc;
  }
}

}  // namespace

void ssm_matrix_forward(const float* b, const float* c, const float* logit, float* m, int64_t B, int64_t T, int64_t H,
                        int64_t N) {
  auto body = [&](int64_t slice) {
    const int64_t bi = slice / H, hd = slice % H;
    std::vector<double> cum(T);
    cumulative_log_decay(logit, cum.data(), bi, hd, T, H);
    float* mo = m + (bi * H + hd) * T * T;
    for (int64_t t = 0; t < T; t++) {
      const float* ct = c + ((bi * T + t) * H + hd) * N;
      for (int64_t s = 0; s < T; s++) {
        if (s > t) {
          mo[t * T + s] = 0;
          continue;
        }
        const float* bs = b + ((bi * T + s) * H + hd) * N;
        double dot = 0;
        for (int64_t n = 0; n < N; n++) dot += static_cast<double>(ct[n]) * bs[n];
        mo[t * T + s] = static_cast<float>(dot * std::exp(cum[t] - cum[s]));
      }
    }
  };
  parallel(B * H, body);
}

void ssm_matrix_backward(const float* b, const float* c, const float* logit, const float* m, const float* dm, float* db,
                         float* dc, float* dlogit, int64_t B, int64_t T, int64_t H, int64_t N) {
  auto body = [&](int64_t slice) {
    const int64_t bi = slice / H, hd = slice % H;
    std::vector<double> cum(T), dcum(T, 0.0);
    std::vector<double> dcRow(N);
    cumulative_log_decay(logit, cum.data(), bi, hd, T, H);
    const float* mo = m + (bi * H + hd) * T * T;
    const float* dmo = dm + (bi * H + hd) * T * T;
    for (int64_t t = 0; t < T; t++) {
      const int64_t co = ((bi * T + t) * H + hd) * N;
      for (int64_t n = 0; n < N; n++) dcRow[n] = 0;
      for (int64_t s = 0; s <= t; s++) {
        const double g = dmo[t * T + s];
        if (g == 0) continue;
        const int64_t bo = ((bi * T + s) * H + hd) * N;
        const double e = std::exp(cum[t] - cum[s]);
        if (dc != nullptr)
          for (int64_t n = 0; n < N; n++) dcRow[n] += g * e * b[bo + n];
        if (db != nullptr)
          for (int64_t n = 0; n < N; n++) db[bo + n] += static_cast<float>(g * e * c[co + n]);
        const double gm = g * mo[t * T + s];
        dcum[t] += gm;
        dcum[s] -= gm;
      }
      if (dc != nullptr)
        for (int64_t n = 0; n < N; n++) dc[co + n] += static_cast<float>(dcRow[n]);
    }
    if (dlogit == nullptr) return;
    double suffix = 0;
    for (int64_t k = T - 1; k >= 0; k--) {
      suffix += dcum[k];
      const int64_t idx = (bi * T + k) * H + hd;
      const double a = std::exp(log_decay(logit[idx]));
      dlogit[idx] += static_cast<float>(suffix * -(1 - a));
    }
  };
  parallel(B * H, body);
}

void causal_conv_forward(const float* x, const float* w, const float* bias, float* y, int64_t B, int64_t T, int64_t C,
                         int64_t K) {
  auto body = [&](int64_t row) {  // one (batch row, time step)
    const int64_t bi = row / T, t = row % T;
    float* yo = y + row * C;
    for (int64_t ch = 0; ch < C; ch++) {
      double s = bias != nullptr ? bias[ch] : 0.0;
      for (int64_t j = 0; j < K; j++) {
        const int64_t src = t - K + 1 + j;
        if (src >= 0) s += static_cast<double>(w[ch * K + j]) * x[(bi * T + src) * C + ch];
      }
      yo[ch] = static_cast<float>(s);
    }
  };
  parallel(B * T, body);
}

void causal_conv_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* dbias,
                          int64_t B, int64_t T, int64_t C, int64_t K) {
  auto body = [&](int64_t ch) {  // one channel: its dx column, dw row and dbias entry
    double gb = 0;
    std::vector<double> gw(K, 0.0);
    for (int64_t bi = 0; bi < B; bi++) {
      for (int64_t t = 0; t < T; t++) {
        const double g = dy[(bi * T + t) * C + ch];
        gb += g;
        for (int64_t j = 0; j < K; j++) {
          const int64_t src = t - K + 1 + j;
          if (src < 0) continue;
          const int64_t xi = (bi * T + src) * C + ch;
          gw[j] += g * x[xi];
          if (dx != nullptr) dx[xi] += static_cast<float>(g * w[ch * K + j]);
        }
      }
    }
    if (dbias != nullptr) dbias[ch] += static_cast<float>(gb);
    if (dw != nullptr)
      for (int64_t j = 0; j < K; j++) dw[ch * K + j] += static_cast<float>(gw[j]);
  };
  parallel(C, body);
}

}  // namespace qkd

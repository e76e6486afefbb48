// Checks qkd::sgemm against a naive triple loop in double on every ISA path
// this CPU has, over transposes, batches with a shared B, alpha/beta values,
// NaN-filled C with beta == 0, odd sizes and padded leading dimensions.
//
// Build and run (from native/):
//   g++ -O2 -std=c++17 -pthread -Ikernels test/test_sgemm.cc kernels/*.cc -o /tmp/test_sgemm
//   /tmp/test_sgemm
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "cpu.h"
#include "sgemm.h"

namespace {

int g_failures = 0;
int g_checks = 0;

struct Case {
  int64_t batch, m, n, k;
  bool ta, tb;
  float alpha, beta;
  int64_t pad;  // extra leading-dimension padding
  bool share_b;  // stride_b = 0
  int threads;
};

// Returns max |C - ref| / (|alpha| Σ|a||b| + |beta||c0| + tiny) over all entries.
double run_case(const Case& t, qkd::Isa isa, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int64_t a_rows = t.ta ? t.k : t.m, a_cols = t.ta ? t.m : t.k;
  const int64_t b_rows = t.tb ? t.n : t.k, b_cols = t.tb ? t.k : t.n;
  const int64_t lda = a_cols + t.pad, ldb = b_cols + t.pad, ldc = t.n + t.pad;
  const int64_t stride_a = a_rows * lda + 3, stride_b = t.share_b ? 0 : b_rows * ldb + 5;
  const int64_t stride_c = t.m * ldc + 7;
  std::vector<float> a(t.batch * stride_a + 1), b((t.share_b ? 1 : t.batch) * (b_rows * ldb + 5) + 1);
  std::vector<float> c(t.batch * stride_c + 1);
  for (float& x : a) x = dist(rng);
  for (float& x : b) x = dist(rng);
  for (float& x : c) x = t.beta == 0.0f ? NAN : dist(rng);
  const std::vector<float> c0 = c;

  qkd::SgemmArgs g;
  g.batch = t.batch; g.trans_a = t.ta; g.trans_b = t.tb;
  g.m = t.m; g.n = t.n; g.k = t.k; g.alpha = t.alpha; g.beta = t.beta;
  g.a = a.data(); g.lda = lda; g.stride_a = stride_a;
  g.b = b.data(); g.ldb = ldb; g.stride_b = stride_b;
  g.c = c.data(); g.ldc = ldc; g.stride_c = stride_c;
  qkd::sgemm_with(g, isa, t.threads);

  double worst = 0.0;
  for (int64_t i = 0; i < t.batch; ++i) {
    const float* ai = a.data() + i * stride_a;
    const float* bi = b.data() + i * stride_b;
    for (int64_t r = 0; r < t.m; ++r) {
      for (int64_t col = 0; col < t.n; ++col) {
        double sum = 0.0, magnitude = 0.0;
        for (int64_t p = 0; p < t.k; ++p) {
          const double x = t.ta ? ai[p * lda + r] : ai[r * lda + p];
          const double y = t.tb ? bi[col * ldb + p] : bi[p * ldb + col];
          sum += x * y;
          magnitude += std::fabs(x * y);
        }
        const size_t at = i * stride_c + r * ldc + col;
        const double old = t.beta == 0.0f ? 0.0 : c0[at];
        const double want = t.alpha * sum + t.beta * old;
        const double scale = std::fabs(t.alpha) * magnitude + std::fabs(t.beta * old) + 1e-30;
        const double err = std::fabs(c[at] - want) / scale;
        if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
      }
    }
    // Padding between rows and between matrices must be untouched.
    for (int64_t r = 0; r < t.m; ++r) {
      for (int64_t col = t.n; col < ldc && r * ldc + col < stride_c; ++col) {
        const size_t at = i * stride_c + r * ldc + col;
        const bool same = (std::isnan(c[at]) && std::isnan(c0[at])) || c[at] == c0[at];
        if (!same) worst = INFINITY;
      }
    }
  }
  return worst;
}

void check(const Case& t, qkd::Isa isa, std::mt19937& rng) {
  const double err = run_case(t, isa, rng);
  ++g_checks;
  if (!(err < 1e-5)) {
    ++g_failures;
    std::printf("FAIL %s batch=%lld m=%lld n=%lld k=%lld ta=%d tb=%d alpha=%g beta=%g pad=%lld shareB=%d threads=%d: rel err %g\n",
                qkd::isa_name(isa), (long long)t.batch, (long long)t.m, (long long)t.n, (long long)t.k, t.ta, t.tb,
                t.alpha, t.beta, (long long)t.pad, t.share_b, t.threads, err);
  }
}

// Many back-to-back pool jobs, from two caller threads at once (one gets
// the pool, the other runs serially): every result must still be right.
void stress_thread_pool() {
  std::atomic<int> bad{0};
  auto caller = [&](unsigned seed) {
    std::mt19937 rng(seed);
    for (int round = 0; round < 150; ++round) {
      const Case t{1 + round % 3, 40 + round % 29, 50 + round % 31, 300, (round & 1) != 0, (round & 2) != 0,
                   1, round % 4 == 0 ? 0.0f : 0.5f, 1, round % 5 == 0, 2};
      if (!(run_case(t, qkd::active_isa(), rng) < 1e-5)) bad.fetch_add(1);
    }
  };
  std::thread first(caller, 1u), second(caller, 2u);
  first.join();
  second.join();
  ++g_checks;
  if (bad.load() != 0) {
    ++g_failures;
    std::printf("FAIL thread-pool stress: %d wrong results\n", bad.load());
  } else {
    std::printf("pool     ok (300 concurrent calls)\n");
  }
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  const int sizes[] = {1, 2, 3, 7, 13, 17, 31, 33, 63, 65, 127, 129, 255, 257};
  const float scalars[][2] = {{1, 0}, {1, 1}, {0.5f, -2}, {-2, 0.5f}, {0, 0.5f}, {0, 0}};
  std::vector<qkd::Isa> paths = {qkd::Isa::kPortable};
  if (qkd::detected_isa() >= qkd::Isa::kAvx2) paths.push_back(qkd::Isa::kAvx2);
  if (qkd::detected_isa() >= qkd::Isa::kAvx512) paths.push_back(qkd::Isa::kAvx512);

  for (qkd::Isa isa : paths) {
    const int before = g_failures;
    // Square sizes, all transposes, both thread modes.
    for (int s : sizes) {
      for (int trans = 0; trans < 4; ++trans) {
        for (int threads : {1, 2}) {
          const float* ab = scalars[(s + trans) % 6];
          check({1, s, s, s, (trans & 1) != 0, (trans & 2) != 0, ab[0], ab[1], s % 3, false, threads}, isa, rng);
        }
      }
    }
    // Every alpha/beta pair on an awkward shape, all transposes.
    for (const auto& ab : scalars) {
      for (int trans = 0; trans < 4; ++trans) {
        check({1, 37, 45, 29, (trans & 1) != 0, (trans & 2) != 0, ab[0], ab[1], 2, false, 2}, isa, rng);
      }
    }
    // Mixed sizes, each dimension independently odd.
    for (int m : {1, 3, 17, 33}) {
      for (int n : {1, 2, 31, 65}) {
        for (int k : {1, 7, 63, 129}) {
          const int trans = (m + n + k) % 4;
          check({1, m, n, k, (trans & 1) != 0, (trans & 2) != 0, 0.5f, -2, 1, false, 2}, isa, rng);
        }
      }
    }
    // Rectangular mixes from the contract, large K, many K blocks.
    for (int trans = 0; trans < 4; ++trans) {
      const bool ta = (trans & 1) != 0, tb = (trans & 2) != 0;
      check({1, 1, 300, 5, ta, tb, 1, 0, 0, false, 2}, isa, rng);
      check({1, 257, 3, 1000, ta, tb, 1, 0, 3, false, 2}, isa, rng);
      check({1, 300, 700, 2, ta, tb, -2, 0.5f, 0, false, 2}, isa, rng);
      check({1, 130, 1100, 600, ta, tb, 1, 1, 4, false, 2}, isa, rng);
      check({1, 2, 2, 3000, ta, tb, 1, 0, 0, false, 2}, isa, rng);
      // Skinny shapes (few rows or few columns), threaded.
      check({1, 3, 1000, 700, ta, tb, 0.5f, -2, 1, false, 2}, isa, rng);
      check({1, 700, 2, 1000, ta, tb, 1, 1, 2, false, 2}, isa, rng);
      check({1, 4, 1500, 33, ta, tb, 1, 0, 0, false, 2}, isa, rng);
      check({1, 5, 600, 1100, ta, tb, 1, 0, 0, false, 2}, isa, rng);
      check({3, 1, 900, 800, ta, tb, -2, 0.5f, 0, true, 2}, isa, rng);
      check({2, 1, 1, 5000, ta, tb, 1, 0, 0, false, 2}, isa, rng);
    }
    // Batches: shared B, small and large batch counts, odd batch vs threads.
    for (int batch : {2, 3, 5, 17}) {
      for (int trans = 0; trans < 4; ++trans) {
        const bool ta = (trans & 1) != 0, tb = (trans & 2) != 0;
        check({batch, 33, 65, 31, ta, tb, 1, 0, 1, true, 2}, isa, rng);
        check({batch, 129, 70, 100, ta, tb, 0.5f, 1, 0, batch % 2 == 1, 2}, isa, rng);
        check({batch, 7, 5, 3, ta, tb, -2, 0.5f, 2, true, 1}, isa, rng);
      }
    }
    // K == 0 (C = beta*C) and beta == 0 with NaN in C.
    check({2, 5, 9, 0, false, false, 1, 0, 1, false, 2}, isa, rng);
    check({2, 5, 9, 0, false, true, 1, -2, 1, false, 2}, isa, rng);
    std::printf("%-8s %s\n", qkd::isa_name(isa), g_failures == before ? "ok" : "FAILED");
  }
  stress_thread_pool();
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}

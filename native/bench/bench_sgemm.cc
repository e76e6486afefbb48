// SGEMM throughput on square row-major problems, per ISA path and thread
// count. Checks one result against a double-precision spot check before
// timing (a fast wrong kernel is worthless).
//
// Build and run (from native/):
//   g++ -O3 -std=c++17 -pthread -Ikernels bench/bench_sgemm.cc kernels/*.cc -o /tmp/bench_sgemm
//   /tmp/bench_sgemm [shapes...]   e.g. /tmp/bench_sgemm 256 512 1024 2048
//   a shape is N (square) or MxNxK, e.g. 1x4096x4096 (a decoding step), or
//   BATCH@MxNxK for a batched product, e.g. 32@256x256x64 (attention scores)
// Environment: BENCH_ISA=portable|avx2|avx512 (default: all available),
//              BENCH_THREADS=1,2 (default: 1 and the pool size),
//              BENCH_TRANS=nn|nt|tn|tt (default nn).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "sgemm.h"
#include "thread_pool.h"

namespace {

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best GFLOPS over repeated runs lasting at least ~0.4 s in total.
double measure(const qkd::SgemmArgs& g, qkd::Isa isa, int threads) {
  qkd::sgemm_with(g, isa, threads);  // warm up: buffers, pool, caches
  const double flops = 2.0 * g.batch * g.m * g.n * g.k;
  double best = 0.0, spent = 0.0;
  int runs = 0;
  while ((spent < 1.0 || runs < 5) && runs < 2000) {
    const double start = seconds_now();
    qkd::sgemm_with(g, isa, threads);
    const double elapsed = seconds_now() - start;
    spent += elapsed;
    ++runs;
    best = std::max(best, flops / elapsed * 1e-9);
  }
  return best;
}

bool spot_check(const qkd::SgemmArgs& g, const std::vector<float>& a, const std::vector<float>& b,
                const std::vector<float>& c) {
  std::mt19937 rng(7);
  for (int t = 0; t < 64; ++t) {
    const int64_t i = rng() % g.m, j = rng() % g.n;
    double sum = 0.0, magnitude = 0.0;
    for (int64_t p = 0; p < g.k; ++p) {
      const double x = g.trans_a ? a[p * g.lda + i] : a[i * g.lda + p];
      const double y = g.trans_b ? b[j * g.ldb + p] : b[p * g.ldb + j];
      sum += x * y;
      magnitude += std::fabs(x * y);
    }
    if (std::fabs(c[i * g.ldc + j] - sum) > 1e-5 * magnitude) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  struct Shape {
    int m, n, k, batch;
  };
  std::vector<Shape> shapes;
  for (int i = 1; i < argc; ++i) {
    int m = 0, n = 0, k = 0, batch = 1;
    if (std::sscanf(argv[i], "%d@%dx%dx%d", &batch, &m, &n, &k) == 4 ||
        (batch = 1, std::sscanf(argv[i], "%dx%dx%d", &m, &n, &k) == 3)) {
      shapes.push_back({m, n, k, batch});
    } else {
      m = std::atoi(argv[i]);
      shapes.push_back({m, m, m, 1});
    }
  }
  if (shapes.empty()) {
    shapes = {{256, 256, 256, 1}, {512, 512, 512, 1}, {1024, 1024, 1024, 1}, {2048, 2048, 2048, 1}};
  }

  std::vector<qkd::Isa> paths;
  const char* isa_env = std::getenv("BENCH_ISA");
  for (qkd::Isa isa : {qkd::Isa::kPortable, qkd::Isa::kAvx2, qkd::Isa::kAvx512}) {
    if (isa > qkd::detected_isa()) continue;
    if (isa_env != nullptr && std::strcmp(isa_env, qkd::isa_name(isa)) != 0) continue;
    paths.push_back(isa);
  }
  std::vector<int> thread_counts = {1, qkd::ThreadPool::shared().size()};
  if (const char* t = std::getenv("BENCH_THREADS")) {
    thread_counts.clear();
    for (const char* p = t; *p;) {
      thread_counts.push_back(std::atoi(p));
      while (*p && *p != ',') ++p;
      if (*p == ',') ++p;
    }
  }
  thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
  const char* trans = std::getenv("BENCH_TRANS");
  const bool ta = trans != nullptr && trans[0] == 't';
  const bool tb = trans != nullptr && trans[0] != '\0' && trans[1] == 't';

  std::printf("%-9s %7s %16s %10s %10s %8s\n", "isa", "threads", "MxNxK", "GFLOPS", "ms", "GB/s");
  for (qkd::Isa isa : paths) {
    for (int threads : thread_counts) {
      for (const Shape& shape : shapes) {
        std::mt19937 rng(42);
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        const size_t sa = size_t(shape.m) * shape.k, sb = size_t(shape.k) * shape.n, sc = size_t(shape.m) * shape.n;
        std::vector<float> a(sa * shape.batch), b(sb * shape.batch), c(sc * shape.batch);
        for (float& x : a) x = dist(rng);
        for (float& x : b) x = dist(rng);
        qkd::SgemmArgs g;
        g.trans_a = ta; g.trans_b = tb;
        g.m = shape.m; g.n = shape.n; g.k = shape.k;
        g.batch = shape.batch;
        g.stride_a = sa; g.stride_b = sb; g.stride_c = sc;
        g.a = a.data(); g.lda = ta ? shape.m : shape.k;
        g.b = b.data(); g.ldb = tb ? shape.k : shape.n;
        g.c = c.data(); g.ldc = shape.n;
        g.alpha = 1.0f; g.beta = 0.0f;
        qkd::sgemm_with(g, isa, threads);
        char name[48];
        if (shape.batch == 1) {
          std::snprintf(name, sizeof name, "%dx%dx%d", shape.m, shape.n, shape.k);
        } else {
          std::snprintf(name, sizeof name, "%d@%dx%dx%d", shape.batch, shape.m, shape.n, shape.k);
        }
        if (!spot_check(g, a, b, c)) {
          std::printf("%-9s %7d %16s   WRONG RESULT\n", qkd::isa_name(isa), threads, name);
          return 1;
        }
        const double gflops = measure(g, isa, threads);
        const double ms = 2.0 * shape.batch * shape.m * shape.n * shape.k / gflops * 1e-6;
        const double bytes = 4.0 * shape.batch * double(sa + sb + sc);
        std::printf("%-9s %7d %16s %10.1f %10.3f %8.1f\n", qkd::isa_name(isa), threads, name, gflops, ms,
                    bytes / ms * 1e-6);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

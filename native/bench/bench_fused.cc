// Throughput of the fused kernels (kernels/fused.h) at training sizes, per
// ISA path and thread count, in GB/s of compulsory traffic: every buffer
// element the call must read or write, counted once per direction (an
// accumulated gradient is read and written). Before timing, each case is
// checked against the portable path on one thread (a fast wrong kernel is
// worthless).
//
// Build and run (from native/):
//   g++ -O3 -std=c++17 -pthread -Ikernels bench/bench_fused.cc kernels/*.cc -o /tmp/bench_fused
//   /tmp/bench_fused                 # rows 2048 × cols 256 and 704, V 256
// Environment: BENCH_ISA=portable|avx2|avx512 (default: all available),
//              BENCH_THREADS=1,2 (default: 1 and the pool size),
//              BENCH_FILTER=substring of the case names.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "fused.h"
#include "thread_pool.h"

namespace {

using Floats = std::vector<float>;

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void fill(Floats& v, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& x : v) x = dist(rng);
}

// One benchmark: `reset` puts the buffers in their initial state, `run` is
// the call, `outputs` what the correctness check compares.
struct Case {
  std::string name;
  double bytes;
  std::function<void()> reset;
  std::function<void(qkd::Exec)> run;
  std::vector<const Floats*> outputs;
  std::vector<const std::vector<uint8_t>*> byte_outputs = {};  // compared exactly
};

// Buffers shared by the cases of one size (allocated once per size).
struct Buffers {
  int64_t rows, cols, vocab;
  Floats x, w, y, rstd, dy, dx, dw;           // R×C, C
  Floats gate, up, dgate, dup;                // R×C
  Floats rope_src, rope_dst, cos, sin;        // R×C, T×D/2
  Floats m, v, g;                             // R×C
  Floats zT, zS, lse, lseT, lseS, kl, dT, dS, dz;  // R×V, R
  std::vector<int32_t> targets;
  Floats scores, probs, dscores;              // BH×T×T
  Floats out;
  Floats qout;                                // R×C, fake-quantized weights
  std::vector<uint8_t> qmask;                 // R×C
  double loss = 0.0;
  Floats loss_out = Floats(2);
};

constexpr int64_t kRopeDim = 64, kRopeTime = 256;
constexpr int64_t kAttnTime = 256;  // causal blocks of T = S = 256

std::vector<Case> make_cases(Buffers& b) {
  const int64_t R = b.rows, C = b.cols, V = b.vocab, n = R * C;
  const int64_t heads = C / kRopeDim, rope_batch = R / kRopeTime;
  const int64_t bh = n / (kAttnTime * kAttnTime);  // same element count as x
  b.x.resize(n); b.w.resize(C); b.y.resize(n); b.rstd.resize(R); b.dy.resize(n); b.dx.resize(n); b.dw.resize(C);
  b.gate.resize(n); b.up.resize(n); b.dgate.resize(n); b.dup.resize(n);
  b.rope_src.resize(n); b.rope_dst.resize(n); b.cos.resize(kRopeTime * kRopeDim / 2); b.sin.resize(b.cos.size());
  b.m.resize(n); b.v.resize(n); b.g.resize(n); b.out.resize(n); b.qout.resize(n); b.qmask.resize(n);
  b.zT.resize(R * V); b.zS.resize(R * V); b.dT.resize(R * V); b.dS.resize(R * V); b.dz.resize(R * V);
  b.lse.resize(R); b.lseT.resize(R); b.lseS.resize(R); b.kl.resize(R); b.targets.resize(R);
  b.scores.resize(bh * kAttnTime * kAttnTime); b.probs.resize(b.scores.size()); b.dscores.resize(b.scores.size());
  fill(b.x, 1, -2, 2); fill(b.w, 2, -1, 1); fill(b.dy, 3, -1, 1); fill(b.gate, 4, -6, 6); fill(b.up, 5, -2, 2);
  fill(b.rope_src, 6, -1, 1); fill(b.cos, 7, -1, 1); fill(b.sin, 8, -1, 1); fill(b.g, 9, -0.1f, 0.1f);
  fill(b.zT, 10, -8, 8); fill(b.zS, 11, -8, 8); fill(b.scores, 12, -6, 6);
  for (int64_t r = 0; r < R; ++r) b.targets[r] = r % 17 == 0 ? -100 : static_cast<int32_t>((r * 31) % V);
  qkd::rmsnorm_forward(b.x.data(), b.w.data(), b.y.data(), b.rstd.data(), R, C, 1e-5f);
  qkd::cross_entropy_forward(b.zT.data(), b.targets.data(), b.lse.data(), R, V, -100, &b.loss);
  qkd::kl_forward(b.zT.data(), b.zS.data(), b.lseT.data(), b.lseS.data(), b.kl.data(), R, V, 0.5f, &b.loss);
  qkd::causal_softmax_forward(b.scores.data(), b.probs.data(), bh, kAttnTime, kAttnTime, 0);

  const double f = sizeof(float);
  const auto zero = [](Floats& v) { std::fill(v.begin(), v.end(), 0.0f); };
  const auto store_loss = [&b](double value) {
    b.loss_out[0] = static_cast<float>(value);
    b.loss_out[1] = static_cast<float>(value - b.loss_out[0]);
  };
  // Kept (lower-triangle) elements of the causal blocks.
  const double kept = bh * (kAttnTime * (kAttnTime + 1) / 2.0);
  std::vector<Case> cases;
  cases.push_back({"rmsnormForward", f * (2 * n + C + R), [] {},
                   [&b, R, C](qkd::Exec e) { qkd::rmsnorm_forward(b.x.data(), b.w.data(), b.y.data(), b.rstd.data(), R, C, 1e-5f, e); },
                   {&b.y, &b.rstd}});
  cases.push_back({"rmsnormBackward", f * (4 * n + 3 * C + R), [&b, zero] { zero(b.dx); zero(b.dw); },
                   [&b, R, C](qkd::Exec e) {
                     qkd::rmsnorm_backward(b.x.data(), b.w.data(), b.rstd.data(), b.dy.data(), b.dx.data(), b.dw.data(), R, C, e);
                   },
                   {&b.dx, &b.dw}});
  cases.push_back({"swigluForward", f * 3 * n, [] {},
                   [&b, n](qkd::Exec e) { qkd::swiglu_forward(b.gate.data(), b.up.data(), b.out.data(), n, e); }, {&b.out}});
  cases.push_back({"swigluBackward", f * 7 * n, [&b, zero] { zero(b.dgate); zero(b.dup); },
                   [&b, n](qkd::Exec e) {
                     qkd::swiglu_backward(b.gate.data(), b.up.data(), b.dy.data(), b.dgate.data(), b.dup.data(), n, e);
                   },
                   {&b.dgate, &b.dup}});
  for (int interleaved = 0; interleaved < 2; ++interleaved) {
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
      std::string name = std::string("rope ") + (interleaved ? "interleaved" : "half") + (accumulate ? " +=" : "");
      cases.push_back({name, f * (accumulate ? 3 : 2) * n, [&b, zero] { zero(b.rope_dst); },
                       [&b, interleaved, accumulate, heads, rope_batch](qkd::Exec e) {
                         qkd::RopeArgs a;
                         a.src = b.rope_src.data(), a.dst = b.rope_dst.data(), a.cos = b.cos.data(), a.sin = b.sin.data();
                         a.batch = rope_batch, a.time = kRopeTime, a.heads = heads, a.dim = kRopeDim;
                         a.interleaved = interleaved == 1, a.accumulate = accumulate == 1;
                         qkd::rope(a, e);
                       },
                       {&b.rope_dst}});
    }
  }
  cases.push_back({"adamw", f * 7 * n,
                   [&b] { fill(b.out, 13, -1, 1); fill(b.m, 14, -0.01f, 0.01f); fill(b.v, 15, 0, 1e-3f); },
                   [&b, n](qkd::Exec e) {
                     qkd::AdamwArgs a;
                     a.w = b.out.data(), a.g = b.g.data(), a.m = b.m.data(), a.v = b.v.data(), a.n = n;
                     a.lr = 1e-3f, a.beta1 = 0.9f, a.beta2 = 0.95f, a.eps = 1e-8f, a.shrink = 0.9999f, a.c1 = 1.1f, a.c2 = 1.3f;
                     qkd::adamw(a, e);
                   },
                   {&b.out, &b.m, &b.v}});
  cases.push_back({"crossEntropyForward", f * (R * V + 2 * R), [] {},
                   [&b, R, V, store_loss](qkd::Exec e) {
                     double loss = 0.0;
                     qkd::cross_entropy_forward(b.zT.data(), b.targets.data(), b.lse.data(), R, V, -100, &loss, e);
                     store_loss(loss);
                   },
                   {&b.lse, &b.loss_out}});
  cases.push_back({"crossEntropyBackward", f * (3 * R * V + 2 * R), [&b, zero] { zero(b.dz); },
                   [&b, R, V](qkd::Exec e) {
                     qkd::cross_entropy_backward(b.zT.data(), b.targets.data(), b.lse.data(), b.dz.data(), R, V, -100, 1e-3f, e);
                   },
                   {&b.dz}});
  cases.push_back({"klForward", f * (2 * R * V + 3 * R), [] {},
                   [&b, R, V, store_loss](qkd::Exec e) {
                     double total = 0.0;
                     qkd::kl_forward(b.zT.data(), b.zS.data(), b.lseT.data(), b.lseS.data(), b.kl.data(), R, V, 0.5f, &total, e);
                     store_loss(total);
                   },
                   {&b.lseT, &b.lseS, &b.kl, &b.loss_out}});
  cases.push_back({"klBackward", f * (6 * R * V + 3 * R), [&b, zero] { zero(b.dT); zero(b.dS); },
                   [&b, R, V](qkd::Exec e) {
                     qkd::kl_backward(b.zT.data(), b.zS.data(), b.lseT.data(), b.lseS.data(), b.kl.data(), b.dT.data(),
                                      b.dS.data(), R, V, 0.5f, 0.25f, e);
                   },
                   {&b.dT, &b.dS}});
  cases.push_back({"causalSoftmaxForward", f * (kept + n), [] {},
                   [&b, bh](qkd::Exec e) {
                     qkd::causal_softmax_forward(b.scores.data(), b.probs.data(), bh, kAttnTime, kAttnTime, 0, e);
                   },
                   {&b.probs}});
  cases.push_back({"causalSoftmaxBackward", f * (2 * kept + n), [] {},
                   [&b, bh](qkd::Exec e) {
                     qkd::causal_softmax_backward(b.probs.data(), b.scores.data(), b.dscores.data(), bh, kAttnTime, kAttnTime,
                                                  0, false, e);
                   },
                   {&b.dscores}});
  cases.push_back({"add", f * 3 * n, [] {},
                   [&b, n](qkd::Exec e) { qkd::add(b.x.data(), b.dy.data(), b.out.data(), n, e); }, {&b.out}});
  cases.push_back({"addInto", f * 3 * n, [&b] { std::copy(b.x.begin(), b.x.end(), b.out.begin()); },
                   [&b, n](qkd::Exec e) { qkd::add_into(b.out.data(), b.dy.data(), n, e); }, {&b.out}});
  // Fake quantization, 4 bits, asymmetric, clip 1: reads w, writes out and
  // the byte mask; the backward reads dy and the mask, updates dw.
  for (int granularity : {1, 2}) {
    std::string name = granularity == 1 ? "fakeQuant channel 4b" : "fakeQuant group128 4b";
    cases.push_back({name, (2 * f + 1) * n, [] {},
                     [&b, R, C, granularity](qkd::Exec e) {
                       qkd::FakeQuantArgs a;
                       a.w = b.x.data(), a.out = b.qout.data(), a.mask = b.qmask.data(), a.rows = R, a.cols = C;
                       a.bits = 4, a.granularity = static_cast<qkd::QuantGranularity>(granularity), a.group_size = 128;
                       qkd::fake_quant_forward(a, e);
                     },
                     {&b.qout}, {&b.qmask}});
  }
  cases.push_back({"fakeQuantBackward", (3 * f + 1) * n,
                   [&b, n] {
                     std::copy(b.x.begin(), b.x.end(), b.out.begin());
                     for (int64_t i = 0; i < n; ++i) b.qmask[i] = static_cast<uint8_t>(i % 5 != 0);
                   },
                   [&b, n](qkd::Exec e) { qkd::fake_quant_backward(b.dy.data(), b.qmask.data(), b.out.data(), n, e); },
                   {&b.out}});
  return cases;
}

// The case on `isa`/`threads` against the portable path on one thread.
bool agrees_with_portable(Case& c, qkd::Isa isa, int threads) {
  c.reset();
  c.run(qkd::Exec{qkd::Isa::kPortable, 1});
  std::vector<Floats> want;
  for (const Floats* out : c.outputs) want.push_back(*out);
  std::vector<std::vector<uint8_t>> want_bytes;
  for (const std::vector<uint8_t>* out : c.byte_outputs) want_bytes.push_back(*out);
  c.reset();
  c.run(qkd::Exec{isa, threads});
  for (size_t k = 0; k < want_bytes.size(); ++k) {
    if (*c.byte_outputs[k] != want_bytes[k]) {
      std::printf("  %s: byte output %zu differs from the portable path\n", c.name.c_str(), k);
      return false;
    }
  }
  for (size_t k = 0; k < want.size(); ++k) {
    const Floats& got = *c.outputs[k];
    double scale = 0.0;
    for (float v : want[k]) scale = std::max(scale, std::fabs(double(v)));
    for (size_t i = 0; i < got.size(); ++i) {
      // Relative, with a floor of 1e-6 of the output's largest value (sums
      // that cancel, e.g. silu' near its zero).
      if (!(std::fabs(double(got[i]) - want[k][i]) <= 1e-5 * std::fabs(double(want[k][i])) + 1e-6 * scale)) {
        std::printf("  %s: output %zu element %zu is %.9g, portable gives %.9g\n", c.name.c_str(), k, i, got[i],
                    want[k][i]);
        return false;
      }
    }
  }
  return true;
}

// Median time of repeated calls lasting at least ~0.25 s in total.
double median_seconds(Case& c, qkd::Exec exec) {
  c.reset();
  c.run(exec);  // warm up
  std::vector<double> times;
  double spent = 0.0;
  while ((spent < 0.25 || times.size() < 7) && times.size() < 5000) {
    const double start = seconds_now();
    c.run(exec);
    const double elapsed = seconds_now() - start;
    times.push_back(elapsed);
    spent += elapsed;
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

int main() {
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
  const char* filter = std::getenv("BENCH_FILTER");

  std::printf("%-24s %-11s %-9s %7s %9s %8s\n", "kernel", "size", "isa", "threads", "ms", "GB/s");
  for (int64_t cols : {256, 704}) {
    Buffers buffers;
    buffers.rows = 2048, buffers.cols = cols, buffers.vocab = 256;
    std::vector<Case> cases = make_cases(buffers);
    for (Case& c : cases) {
      if (filter != nullptr && c.name.find(filter) == std::string::npos) continue;
      // The vocabulary cases do not depend on cols: run them once.
      const bool vocab_case = c.name.find("ntropy") != std::string::npos || c.name.find("kl") == 0;
      if (vocab_case && cols != 256) continue;
      char size[32];
      std::snprintf(size, sizeof size, vocab_case ? "2048x%lld V" : "2048x%lld", (long long)(vocab_case ? 256 : cols));
      for (qkd::Isa isa : paths) {
        for (int threads : thread_counts) {
          if (!agrees_with_portable(c, isa, threads)) {
            std::printf("%-24s %-11s %-9s %7d   WRONG RESULT\n", c.name.c_str(), size, qkd::isa_name(isa), threads);
            return 1;
          }
          const double s = median_seconds(c, qkd::Exec{isa, threads});
          std::printf("%-24s %-11s %-9s %7d %9.3f %8.1f\n", c.name.c_str(), size, qkd::isa_name(isa), threads, s * 1e3,
                      c.bytes / s * 1e-9);
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

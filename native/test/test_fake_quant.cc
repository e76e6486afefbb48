// Checks fake_quant_forward / fake_quant_backward (kernels/fused.h) for
// bit-identity with a straightforward double implementation of the same
// definition (the TypeScript quantizeDequantize, operation for operation),
// on every ISA path this CPU has:
//   bits 2, 3, 4, 8 × symmetric or not × granularity tensor / channel /
//   group × groupSize 32, 64, 128 × clipRatio 1 and 0.5, on shapes 1×1, 3×7,
//   5×200 (partial groups), 64×1000, 333×101 (threaded, split inside a
//   row), 1×40000 (one-row channel = tensor path, threaded), 2048×704
//   (threaded), and 0×5;
//   data: random (a spread per row), "special" rows (constant, all ±0,
//   dyadic values giving exact .5 ties, NaN elements, ±Inf, all positive,
//   subnormal), a constant tensor and an all-zero tensor;
//   every call also with mask skipped (nullptr), in place (out == w), and
//   threaded sizes on 1 and 2 threads.
// Backward: random flags (0, 1, other non-zero), −0 and NaN where the flag
// is 0, odd sizes and a threaded size, in place (dw == dy).
//
// Build and run (from native/):
//   g++ -O2 -std=c++17 -pthread -Ikernels test/test_fake_quant.cc kernels/*.cc -o /tmp/test_fake_quant
//   /tmp/test_fake_quant
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "fused.h"

namespace {

using Floats = std::vector<float>;
using Bytes = std::vector<uint8_t>;
const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

int g_checks = 0;
int g_failures = 0;
int64_t g_ties = 0;       // reference elements whose w/scale was exactly k + 0.5
int64_t g_clipped = 0;    // reference elements outside [qmin, qmax]
int64_t g_copied = 0;     // reference groups copied (scale not > 0 or not finite)

void expect(bool ok, qkd::Isa isa, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 30) std::printf("FAIL %-8s %s\n", qkd::isa_name(isa), what.c_str());
  }
}

// Half to even without nearbyint: std::round (half away from zero, exact,
// −0 for (−0.5, 0)), then an exact tie goes to the even neighbour.
double round_half_even(double x) {
  const double r = std::round(x);
  if (std::fabs(r - x) == 0.5) {
    ++g_ties;
    return 2.0 * std::round(x / 2.0);
  }
  return r;
}

struct Config {
  int bits;
  bool symmetric;
  int granularity;
  int64_t group_size;
  double clip;
};

// The definition, element by element, in double.
void reference(const Floats& w, int64_t rows, int64_t cols, const Config& c, Floats& out, Bytes& mask) {
  const double qmax_asym = std::pow(2.0, c.bits) - 1, qmax_sym = std::pow(2.0, c.bits - 1) - 1;
  const double qmin_sym = -std::pow(2.0, c.bits - 1);
  auto run = [&](int64_t start, int64_t len) {
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = start; i < start + len; ++i) {
      const double v = w[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    lo *= c.clip;
    hi *= c.clip;
    double scale, zero, qmin, qmax;
    if (c.symmetric) {
      scale = std::fmax(std::fabs(lo), std::fabs(hi)) / qmax_sym;
      zero = 0;
      qmin = qmin_sym;
      qmax = qmax_sym;
    } else {
      scale = (hi - lo) / qmax_asym;
      zero = scale > 0 ? round_half_even(-lo / scale) : 0;
      qmin = 0;
      qmax = qmax_asym;
    }
    if (!(scale > 0) || !std::isfinite(scale)) {
      ++g_copied;
      for (int64_t i = start; i < start + len; ++i) {
        out[i] = w[i];
        mask[i] = 1;
      }
      return;
    }
    for (int64_t i = start; i < start + len; ++i) {
      const double q = round_half_even(double(w[i]) / scale) + zero;
      const bool inside = q >= qmin && q <= qmax;
      if (!inside) ++g_clipped;
      const double qc = inside ? q : q < qmin ? qmin : qmax;
      out[i] = static_cast<float>((qc - zero) * scale);
      mask[i] = inside ? 1 : 0;
    }
  };
  if (c.granularity == 0) {
    run(0, rows * cols);
    return;
  }
  const int64_t span = c.granularity == 1 ? cols : std::min(c.group_size, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t begin = 0; begin < cols; begin += span) run(r * cols + begin, std::min(span, cols - begin));
  }
}

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

// First differing element, for the failure message.
std::string first_difference(const Floats& got, const Bytes& got_mask, const Floats& want, const Bytes& want_mask) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0 || got_mask[i] != want_mask[i]) {
      char text[160];
      std::snprintf(text, sizeof text, "element %zu: got %.9g/%d, want %.9g/%d", i, got[i], got_mask[i], want[i],
                    want_mask[i]);
      return text;
    }
  }
  return "no difference";
}

enum class Data { kRandom, kSpecial, kConstant, kZeros };

Floats make_data(Data kind, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t n = rows * cols;
  Floats w(n);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_real_distribution<float> spread(-6.0f, 3.0f);
  switch (kind) {
    case Data::kConstant:
      for (float& v : w) v = -0.3125f;
      return w;
    case Data::kZeros:
      for (int64_t i = 0; i < n; ++i) w[i] = i % 3 == 1 ? -0.0f : 0.0f;
      return w;
    case Data::kRandom:
    case Data::kSpecial:
      break;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::exp2(spread(rng));
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = unit(rng) * scale;
  }
  if (kind == Data::kRandom) {
    // The tensor's extremes late in the buffer (outside the first thread's
    // part), so a wrong merge of the per-thread minima and maxima shows.
    if (n >= 4) w[n - 2] = 9.5f, w[n * 3 / 4] = -9.25f;
    return w;
  }
  std::uniform_int_distribution<int> grid(-8, 8);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.data() + r * cols;
    switch (r % 9) {
      case 0:  // constant
        for (int64_t c = 0; c < cols; ++c) row[c] = 1.75f;
        break;
      case 1:  // zeros of both signs
        for (int64_t c = 0; c < cols; ++c) row[c] = c % 2 ? -0.0f : 0.0f;
        break;
      case 2:  // dyadic grid: exact .5 ties at several bit widths
        for (int64_t c = 0; c < cols; ++c) row[c] = 0.25f * static_cast<float>(grid(rng));
        if (cols > 1) row[0] = -2.0f, row[cols - 1] = 2.0f;
        break;
      case 3:  // NaN elements (skipped by min/max; q = NaN clamps to qmax)
        for (int64_t c = 0; c < cols; c += 5) row[c] = kNan;
        break;
      case 4:  // an infinity: the group (or tensor) is copied
        row[cols / 2] = (r / 9) % 2 ? -kInf : kInf;
        break;
      case 5:  // all positive, far from 0: large negative zero point
        for (int64_t c = 0; c < cols; ++c) row[c] = 1000.0f + std::fabs(row[c]);
        break;
      case 6:  // subnormal magnitudes
        for (int64_t c = 0; c < cols; ++c) row[c] *= 1e-40f;
        break;
      case 7:  // a lone large outlier (clipped at clipRatio < 1)
        row[cols / 3] = 50.0f;
        break;
      default:
        break;
    }
  }
  return w;
}

const char* data_name(Data kind) {
  switch (kind) {
    case Data::kRandom: return "random";
    case Data::kSpecial: return "special";
    case Data::kConstant: return "constant";
    case Data::kZeros: return "zeros";
  }
  return "?";
}

void check_forward(qkd::Isa isa, const Floats& w, int64_t rows, int64_t cols, const Config& c, const char* data) {
  const int64_t n = rows * cols;
  Floats want(n, kNan);
  Bytes want_mask(n, 7);
  reference(w, rows, cols, c, want, want_mask);
  char what[200];
  std::snprintf(what, sizeof what, "%lldx%lld %s bits %d %s gran %d group %lld clip %g", (long long)rows,
                (long long)cols, data, c.bits, c.symmetric ? "sym" : "asym", c.granularity, (long long)c.group_size,
                c.clip);
  qkd::FakeQuantArgs a;
  a.rows = rows, a.cols = cols, a.bits = c.bits, a.symmetric = c.symmetric;
  a.granularity = static_cast<qkd::QuantGranularity>(c.granularity);
  a.group_size = c.group_size, a.clip_ratio = c.clip;
  const bool threaded = n >= qkd::kMinParallelWork;
  for (int threads : threaded ? std::vector<int>{1, 2} : std::vector<int>{1}) {
    const qkd::Exec exec{isa, threads};
    const std::string tag = std::string(what) + (threads == 2 ? " 2 threads" : "");
    // Separate out, with mask.
    Floats out(n, kNan);
    Bytes mask(n, 7);
    a.w = w.data(), a.out = out.data(), a.mask = mask.data();
    qkd::fake_quant_forward(a, exec);
    const bool ok = same_bits(out.data(), want.data(), n * sizeof(float)) && mask == want_mask;
    expect(ok, isa, tag + ": " + (ok ? "" : first_difference(out, mask, want, want_mask)));
    // In place, mask skipped.
    Floats inplace = w;
    a.w = inplace.data(), a.out = inplace.data(), a.mask = nullptr;
    qkd::fake_quant_forward(a, exec);
    expect(same_bits(inplace.data(), want.data(), n * sizeof(float)), isa, tag + ": in place without mask");
  }
}

void check_backward(qkd::Isa isa, int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> flag(0, 5);
  Floats dy(n), dw(n);
  Bytes mask(n);
  for (int64_t i = 0; i < n; ++i) {
    const int f = flag(rng);
    mask[i] = static_cast<uint8_t>(f == 0 ? 0 : f == 1 ? 1 : f == 2 ? 255 : f == 3 ? 0 : 1);
    dy[i] = unit(rng);
    dw[i] = unit(rng);
    if (i % 7 == 3) dw[i] = -0.0f;            // stays −0 where the flag is 0
    if (i % 11 == 5 && mask[i] == 0) dy[i] = kNan;  // never read into dw
  }
  Floats want = dw;
  for (int64_t i = 0; i < n; ++i) {
    if (mask[i]) want[i] = static_cast<float>(double(dw[i]) + double(dy[i]));
  }
  const bool threaded = n >= qkd::kMinParallelWork;
  for (int threads : threaded ? std::vector<int>{1, 2} : std::vector<int>{1}) {
    Floats got = dw;
    qkd::fake_quant_backward(dy.data(), mask.data(), got.data(), n, qkd::Exec{isa, threads});
    char what[96];
    std::snprintf(what, sizeof what, "backward n %lld threads %d", (long long)n, threads);
    expect(same_bits(got.data(), want.data(), n * sizeof(float)), isa, what);
  }
  // In place: dw == dy doubles the flagged elements.
  Floats both = dw, twice = dw;
  for (int64_t i = 0; i < n; ++i) {
    if (mask[i]) twice[i] = dw[i] + dw[i];
  }
  qkd::fake_quant_backward(both.data(), mask.data(), both.data(), n, qkd::Exec{isa, 2});
  expect(same_bits(both.data(), twice.data(), n * sizeof(float)), isa, "backward in place n " + std::to_string(n));
}

}  // namespace

int main() {
  std::vector<qkd::Isa> paths = {qkd::Isa::kPortable};
  if (qkd::detected_isa() >= qkd::Isa::kAvx2) paths.push_back(qkd::Isa::kAvx2);
  if (qkd::detected_isa() >= qkd::Isa::kAvx512) paths.push_back(qkd::Isa::kAvx512);
  // 333×101 and 1×40000 are threaded with a split inside a row.
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 200}, {64, 1000}, {333, 101}, {1, 40000}, {2048, 704}, {0, 5}};
  for (qkd::Isa isa : paths) {
    const int before = g_failures;
    std::mt19937 rng(7);
    for (const auto& shape : shapes) {
      const int64_t rows = shape[0], cols = shape[1];
      const bool big = rows * cols >= qkd::kMinParallelWork;
      for (Data kind : {Data::kRandom, Data::kSpecial, Data::kConstant, Data::kZeros}) {
        // The uniform tensors only need the small shapes and one big one.
        if ((kind == Data::kConstant || kind == Data::kZeros) && big && rows != 2048) continue;
        const Floats w = make_data(kind, rows, cols, rng);
        for (int bits : {2, 3, 4, 8}) {
          for (bool symmetric : {false, true}) {
            for (int granularity : {0, 1, 2}) {
              for (int64_t group_size : {32, 64, 128}) {
                // groupSize only matters for groups; one extra value checks it is ignored otherwise.
                if (granularity != 2 && group_size != 64) continue;
                for (double clip : {1.0, 0.5}) {
                  // The big shapes: every combination on random data, a cut on the rest.
                  if (big && kind != Data::kRandom && (bits == 3 || clip != 1.0)) continue;
                  check_forward(isa, w, rows, cols, Config{bits, symmetric, granularity, group_size, clip},
                                data_name(kind));
                }
              }
            }
          }
        }
      }
    }
    for (int64_t n : {1, 7, 15, 16, 17, 33, 1000, 2048 * 704 + 3}) check_backward(isa, n, rng);
    std::printf("%-8s %s\n", qkd::isa_name(isa), g_failures == before ? "ok" : "FAILED");
  }
  std::printf("reference exercised: %lld exact ties, %lld clipped elements, %lld copied groups\n",
              (long long)g_ties, (long long)g_clipped, (long long)g_copied);
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}

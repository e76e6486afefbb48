// See factor.h. Plain float64 arithmetic in src/tensor/factor.ts's order.
// JavaScript rounds each product before the sum: no fused multiply-adds.
#include "no_fp_contract.h"

#include "factor.h"

#include <cmath>
#include <vector>

namespace qkd {

int64_t pivoted_cholesky_inverse(const double* a, int64_t n, const double* scale, double tolerance, double* order,
                                 double* diag, double* inverse, double* work) {
  double* factor = work;     // factor[i·n + t]: column t of L at original row i
  double* rest = work + n * n;
  std::vector<char> taken(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n * n; ++i) factor[i] = 0.0;
  for (int64_t i = 0; i < n; ++i) rest[i] = a[i * n + i];
  int64_t r = 0;
  for (int64_t t = 0; t < n; ++t) {
    int64_t best = -1;
    double best_ratio = tolerance;
    for (int64_t i = 0; i < n; ++i) {
      const double ratio = scale[i] > 0 ? rest[i] / scale[i] : 0.0;
      if (!taken[static_cast<size_t>(i)] && ratio > best_ratio) {
        best = i;
        best_ratio = ratio;
      }
    }
    if (best < 0) break;
    const double pivot = std::sqrt(rest[best]);
    taken[static_cast<size_t>(best)] = 1;
    order[r++] = static_cast<double>(best);
    const double* fb = factor + best * n;
    factor[best * n + t] = pivot;
    for (int64_t i = 0; i < n; ++i) {
      if (taken[static_cast<size_t>(i)]) continue;
      double* fi = factor + i * n;
      double s = i > best ? a[i * n + best] : a[best * n + i];
      for (int64_t u = 0; u < t; ++u) {
        const double p = fi[u] * fb[u];
        s -= p;
      }
      const double l = s / pivot;
      fi[t] = l;
      const double l2 = l * l;
      rest[i] -= l2;
    }
  }
  // L[i, j] = factor[order[i]·n + j]; its inverse row by row (sums over k ascending, as in factor.ts).
  for (int64_t i = 0; i < r * r; ++i) inverse[i] = 0.0;
  for (int64_t i = 0; i < r; ++i) {
    const double* Li = factor + static_cast<int64_t>(order[i]) * n;
    double* row = inverse + i * r;
    for (int64_t k = 0; k < i; ++k) {
      const double l = Li[k];
      const double* from = inverse + k * r;
      for (int64_t j = 0; j <= k; ++j) {
        const double p = l * from[j];
        row[j] += p;
      }
    }
    const double d = Li[i];
    diag[i] = d;
    for (int64_t j = 0; j < i; ++j) row[j] = -row[j] / d;
    row[i] = 1.0 / d;
  }
  return r;
}

}  // namespace qkd

// Softmax driver: picks the ISA path and spreads rows over the thread pool;
// the portable row loops live here too.
#include "softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "softmax_rows.h"
#include "thread_pool.h"

namespace qkd {
namespace {

// Below this many elements a call stays on the calling thread.
constexpr int64_t kMinParallelElements = 1 << 16;

void forward_rows_portable(const float* x, float* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    float maximum = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < cols; ++c) maximum = x[c] > maximum ? x[c] : maximum;
    if (maximum == -std::numeric_limits<float>::infinity()) {
      softmax_row_without_maximum(x, y, cols);
      continue;
    }
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const float e = std::exp(x[c] - maximum);  // NaN in x stays NaN here
      y[c] = e;
      sum += e;
    }
    const float scale = static_cast<float>(1.0 / sum);
    for (int64_t c = 0; c < cols; ++c) y[c] *= scale;
  }
}

void backward_rows_portable(const float* y, const float* dy, float* dx, int64_t rows,
                            int64_t cols) {
  for (int64_t r = 0; r < rows; ++r, y += cols, dy += cols, dx += cols) {
    double dot = 0.0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(y[c]) * dy[c];
    const float dotf = static_cast<float>(dot);
    for (int64_t c = 0; c < cols; ++c) dx[c] += y[c] * (dy[c] - dotf);
  }
}

void exp_portable(const float* x, float* y, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] = std::exp(x[i]);
}

const SoftmaxRows kPortableRows = {forward_rows_portable, backward_rows_portable, exp_portable};

struct RowJob {
  const SoftmaxRows* kernels;
  bool forward;
  const float* in0;  // x (forward) or y (backward)
  const float* in1;  // dy (backward)
  float* out;        // y (forward) or dx (backward)
  int64_t rows, cols, tasks;
};

void run_rows(void* context, int64_t task, int /*worker*/) {
  const RowJob& job = *static_cast<const RowJob*>(context);
  const int64_t first = task * job.rows / job.tasks;
  const int64_t last = (task + 1) * job.rows / job.tasks;
  const int64_t offset = first * job.cols;
  if (job.forward) {
    job.kernels->forward(job.in0 + offset, job.out + offset, last - first, job.cols);
  } else {
    job.kernels->backward(job.in0 + offset, job.in1 + offset, job.out + offset, last - first,
                          job.cols);
  }
}

void run(RowJob& job, int max_threads) {
  if (job.rows <= 0 || job.cols <= 0) return;
  int64_t threads = 1;
  if (max_threads > 1 && job.rows > 1 && job.rows * job.cols >= kMinParallelElements) {
    threads = std::min<int64_t>(std::min<int64_t>(max_threads, ThreadPool::shared().size()), job.rows);
  }
  job.tasks = threads;
  if (threads == 1) {
    run_rows(&job, 0, 0);
  } else {
    ThreadPool::shared().run(threads, run_rows, &job);
  }
}

}  // namespace

void softmax_row_without_maximum(const float* x, float* y, int64_t cols) {
  bool has_nan = false;
  for (int64_t c = 0; c < cols; ++c) has_nan = has_nan || std::isnan(x[c]);
  const float fill = has_nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  for (int64_t c = 0; c < cols; ++c) y[c] = fill;
}

const SoftmaxRows* portable_softmax_rows() { return &kPortableRows; }

const SoftmaxRows& softmax_rows_for(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  const SoftmaxRows* rows = nullptr;
  if (isa == Isa::kAvx512) rows = avx512_softmax_rows();
  if (isa == Isa::kAvx2) rows = avx2_softmax_rows();
  return rows != nullptr ? *rows : kPortableRows;
}

void softmax_forward_with(const float* x, float* y, int64_t rows, int64_t cols, Isa isa,
                          int max_threads) {
  RowJob job{&softmax_rows_for(isa), true, x, nullptr, y, rows, cols, 1};
  run(job, max_threads);
}

void softmax_backward_with(const float* y, const float* dy, float* dx, int64_t rows,
                           int64_t cols, Isa isa, int max_threads) {
  RowJob job{&softmax_rows_for(isa), false, y, dy, dx, rows, cols, 1};
  run(job, max_threads);
}

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols) {
  softmax_forward_with(x, y, rows, cols, active_isa(), ThreadPool::shared().size());
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols) {
  softmax_backward_with(y, dy, dx, rows, cols, active_isa(), ThreadPool::shared().size());
}

void exp_with(const float* x, float* y, int64_t count, Isa isa) { softmax_rows_for(isa).exp(x, y, count); }

}  // namespace qkd

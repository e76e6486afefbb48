// N-API entry points of qkd_native. This file only marshals: it reads and
// checks the JavaScript arguments (types, integer ranges, and that every
// buffer is long enough for the elements the call will touch), then calls
// the kernels in kernels/, which know nothing of N-API.
//
// Every TypedArray is used in place (zero copy) from its byteOffset, so the
// TypeScript side can pass subarrays of one arena.
//
// Exports (all numbers are JS numbers; sizes are non-negative integers):
//   info(): { version: 1, isa: "avx512" | "avx2" | "portable", threads }
//   sgemm(batch, transA, transB, M, N, K, alpha, A, lda, strideA,
//         B, ldb, strideB, beta, C, ldc, strideC): undefined
//   softmaxForward(x, y, rows, cols): undefined
//   softmaxBackward(y, dy, dx, rows, cols): undefined
#include <node_api.h>

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

#include "kernels/cpu.h"
#include "kernels/sgemm.h"
#include "kernels/softmax.h"
#include "kernels/thread_pool.h"

namespace {

constexpr int kInfoVersion = 1;
// Largest integer a double holds exactly: sizes beyond it are rejected.
constexpr double kMaxSafeInteger = 9007199254740991.0;

// Throws a JS Error "qkd_native.<fn>: <message>" and returns false, so that
// callers can write `if (!check(...)) return nullptr;`.
bool fail(napi_env env, const char* fn, const char* format, ...) {
  char message[512];
  int used = std::snprintf(message, sizeof message, "qkd_native.%s: ", fn);
  if (used < 0 || used >= static_cast<int>(sizeof message)) used = 0;
  va_list args;
  va_start(args, format);
  std::vsnprintf(message + used, sizeof message - used, format, args);
  va_end(args);
  napi_throw_error(env, nullptr, message);
  return false;
}

// The call's arguments; fails unless exactly `expected` were passed.
bool get_args(napi_env env, napi_callback_info info, const char* fn, size_t expected, napi_value* args) {
  size_t count = expected;
  if (napi_get_cb_info(env, info, &count, args, nullptr, nullptr) != napi_ok) {
    return fail(env, fn, "could not read the arguments");
  }
  if (count != expected) {
    return fail(env, fn, "expected %zu arguments, got %zu", expected, count);
  }
  return true;
}

bool read_number(napi_env env, napi_value value, const char* fn, const char* name, double* out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) {
    return fail(env, fn, "argument %s must be a number", name);
  }
  napi_get_value_double(env, value, out);
  return true;
}

// A non-negative integer (sizes, leading dimensions, strides).
bool read_size(napi_env env, napi_value value, const char* fn, const char* name, int64_t* out) {
  double number;
  if (!read_number(env, value, fn, name, &number)) return false;
  if (!(number >= 0.0 && number <= kMaxSafeInteger) || std::floor(number) != number) {
    return fail(env, fn, "argument %s must be a non-negative integer, got %g", name, number);
  }
  *out = static_cast<int64_t>(number);
  return true;
}

// A transpose flag: a boolean, or the number 0 or 1.
bool read_flag(napi_env env, napi_value value, const char* fn, const char* name, bool* out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return fail(env, fn, "could not read argument %s", name);
  if (type == napi_boolean) {
    napi_get_value_bool(env, value, out);
    return true;
  }
  if (type == napi_number) {
    double number;
    napi_get_value_double(env, value, &number);
    if (number == 0.0 || number == 1.0) {
      *out = number == 1.0;
      return true;
    }
  }
  return fail(env, fn, "argument %s must be a boolean or 0/1", name);
}

struct FloatView {
  float* data = nullptr;
  int64_t length = 0;  // elements
};

bool read_float32_array(napi_env env, napi_value value, const char* fn, const char* name, FloatView* out) {
  bool is_typed_array = false;
  napi_is_typedarray(env, value, &is_typed_array);
  if (!is_typed_array) return fail(env, fn, "argument %s must be a Float32Array", name);
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  // `data` already points at byteOffset within the underlying ArrayBuffer.
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
    return fail(env, fn, "could not read argument %s", name);
  }
  if (type != napi_float32_array) return fail(env, fn, "argument %s must be a Float32Array", name);
  out->data = static_cast<float*>(data);
  out->length = static_cast<int64_t>(length);
  return true;
}

// Elements touched by `count` matrices of `rows` × `cols` with leading
// dimension ld and `stride` between matrices: (count-1)*stride +
// (rows-1)*ld + cols, or 0 if any extent is 0. False on int64 overflow.
bool extent(int64_t count, int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t* out) {
  if (count == 0 || rows == 0 || cols == 0) {
    *out = 0;
    return true;
  }
  int64_t batch_part, row_part, total;
  if (__builtin_mul_overflow(count - 1, stride, &batch_part)) return false;
  if (__builtin_mul_overflow(rows - 1, ld, &row_part)) return false;
  if (__builtin_add_overflow(batch_part, row_part, &total)) return false;
  if (__builtin_add_overflow(total, cols, &total)) return false;
  *out = total;
  return true;
}

bool check_length(napi_env env, const char* fn, const char* name, const FloatView& view, int64_t needed,
                  bool overflowed) {
  if (overflowed) return fail(env, fn, "argument %s: the sizes and strides overflow a 64-bit index", name);
  if (view.length < needed) {
    return fail(env, fn, "argument %s (Float32Array) has %lld elements, needs at least %lld", name,
                static_cast<long long>(view.length), static_cast<long long>(needed));
  }
  return true;
}

bool check_leading_dimension(napi_env env, const char* fn, const char* name, int64_t ld, int64_t cols,
                             const char* what) {
  if (ld < cols) {
    return fail(env, fn, "argument %s is %lld, must be at least %lld (the row length of %s)", name,
                static_cast<long long>(ld), static_cast<long long>(cols), what);
  }
  return true;
}

// Two views of `count` elements each must be the same memory or disjoint:
// the kernels support exact in-place calls only.
bool check_same_or_disjoint(napi_env env, const char* fn, const char* first, const FloatView& a,
                            const char* second, const FloatView& b, int64_t count) {
  if (count == 0 || a.data == b.data) return true;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  const uintptr_t bytes = static_cast<uintptr_t>(count) * sizeof(float);
  if (a0 < b0 + bytes && b0 < a0 + bytes) {
    return fail(env, fn, "arguments %s and %s overlap without being the same elements (in place means the same "
                "offset)", first, second);
  }
  return true;
}

napi_value undefined_value(napi_env env) {
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

napi_value Info(napi_env env, napi_callback_info /*info*/) {
  napi_value result, version, isa, threads;
  napi_create_object(env, &result);
  napi_create_int32(env, kInfoVersion, &version);
  napi_create_string_utf8(env, qkd::isa_name(qkd::active_isa()), NAPI_AUTO_LENGTH, &isa);
  napi_create_int32(env, qkd::ThreadPool::shared().size(), &threads);
  napi_set_named_property(env, result, "version", version);
  napi_set_named_property(env, result, "isa", isa);
  napi_set_named_property(env, result, "threads", threads);
  return result;
}

// sgemm(batch, transA, transB, M, N, K, alpha, A, lda, strideA,
//       B, ldb, strideB, beta, C, ldc, strideC)
napi_value Sgemm(napi_env env, napi_callback_info info) {
  const char* fn = "sgemm";
  napi_value args[17];
  if (!get_args(env, info, fn, 17, args)) return nullptr;
  qkd::SgemmArgs g;
  double alpha, beta;
  FloatView a, b, c;
  if (!read_size(env, args[0], fn, "batch", &g.batch) || !read_flag(env, args[1], fn, "transA", &g.trans_a) ||
      !read_flag(env, args[2], fn, "transB", &g.trans_b) || !read_size(env, args[3], fn, "M", &g.m) ||
      !read_size(env, args[4], fn, "N", &g.n) || !read_size(env, args[5], fn, "K", &g.k) ||
      !read_number(env, args[6], fn, "alpha", &alpha) || !read_float32_array(env, args[7], fn, "A", &a) ||
      !read_size(env, args[8], fn, "lda", &g.lda) || !read_size(env, args[9], fn, "strideA", &g.stride_a) ||
      !read_float32_array(env, args[10], fn, "B", &b) || !read_size(env, args[11], fn, "ldb", &g.ldb) ||
      !read_size(env, args[12], fn, "strideB", &g.stride_b) || !read_number(env, args[13], fn, "beta", &beta) ||
      !read_float32_array(env, args[14], fn, "C", &c) || !read_size(env, args[15], fn, "ldc", &g.ldc) ||
      !read_size(env, args[16], fn, "strideC", &g.stride_c)) {
    return nullptr;
  }
  g.alpha = static_cast<float>(alpha);
  g.beta = static_cast<float>(beta);
  g.a = a.data;
  g.b = b.data;
  g.c = c.data;

  // Stored shapes: A is M×K (K×M if transposed), B is K×N (N×K if transposed).
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  if (g.batch == 0 || g.m == 0 || g.n == 0) return undefined_value(env);  // nothing is touched

  int64_t needed = 0;
  if (!check_leading_dimension(env, fn, "ldc", g.ldc, g.n, "C (M×N)")) return nullptr;
  bool ok = extent(g.batch, g.m, g.n, g.ldc, g.stride_c, &needed);
  if (!check_length(env, fn, "C", c, needed, !ok)) return nullptr;
  if (g.k > 0) {  // with K == 0 the call only scales C and never reads A or B
    if (!check_leading_dimension(env, fn, "lda", g.lda, a_cols, g.trans_a ? "A (K×M, transA)" : "A (M×K)") ||
        !check_leading_dimension(env, fn, "ldb", g.ldb, b_cols, g.trans_b ? "B (N×K, transB)" : "B (K×N)")) {
      return nullptr;
    }
    ok = extent(g.batch, a_rows, a_cols, g.lda, g.stride_a, &needed);
    if (!check_length(env, fn, "A", a, needed, !ok)) return nullptr;
    ok = extent(g.batch, b_rows, b_cols, g.ldb, g.stride_b, &needed);
    if (!check_length(env, fn, "B", b, needed, !ok)) return nullptr;
  }
  if (!qkd::sgemm(g)) {
    fail(env, fn, "out of memory for the packing buffers");
    return nullptr;
  }
  return undefined_value(env);
}

// Reads rows and cols and checks that each of the `count` views holds rows*cols elements.
bool read_rows_and_cols(napi_env env, const char* fn, napi_value rows_value, napi_value cols_value,
                        const char* const* names, const FloatView* views, int count, int64_t* rows,
                        int64_t* cols) {
  if (!read_size(env, rows_value, fn, "rows", rows) || !read_size(env, cols_value, fn, "cols", cols)) return false;
  int64_t needed = 0;
  const bool overflowed = __builtin_mul_overflow(*rows, *cols, &needed);
  for (int i = 0; i < count; ++i) {
    if (!check_length(env, fn, names[i], views[i], needed, overflowed)) return false;
  }
  return true;
}

// softmaxForward(x, y, rows, cols)
napi_value SoftmaxForward(napi_env env, napi_callback_info info) {
  const char* fn = "softmaxForward";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  FloatView views[2];
  const char* const names[2] = {"x", "y"};
  int64_t rows, cols;
  if (!read_float32_array(env, args[0], fn, names[0], &views[0]) ||
      !read_float32_array(env, args[1], fn, names[1], &views[1]) ||
      !read_rows_and_cols(env, fn, args[2], args[3], names, views, 2, &rows, &cols) ||
      !check_same_or_disjoint(env, fn, "x", views[0], "y", views[1], rows * cols)) {
    return nullptr;
  }
  qkd::softmax_forward(views[0].data, views[1].data, rows, cols);
  return undefined_value(env);
}

// softmaxBackward(y, dy, dx, rows, cols)
napi_value SoftmaxBackward(napi_env env, napi_callback_info info) {
  const char* fn = "softmaxBackward";
  napi_value args[5];
  if (!get_args(env, info, fn, 5, args)) return nullptr;
  FloatView views[3];
  const char* const names[3] = {"y", "dy", "dx"};
  int64_t rows, cols;
  if (!read_float32_array(env, args[0], fn, names[0], &views[0]) ||
      !read_float32_array(env, args[1], fn, names[1], &views[1]) ||
      !read_float32_array(env, args[2], fn, names[2], &views[2]) ||
      !read_rows_and_cols(env, fn, args[3], args[4], names, views, 3, &rows, &cols) ||
      !check_same_or_disjoint(env, fn, "y", views[0], "dx", views[2], rows * cols) ||
      !check_same_or_disjoint(env, fn, "dy", views[1], "dx", views[2], rows * cols)) {
    return nullptr;
  }
  qkd::softmax_backward(views[0].data, views[1].data, views[2].data, rows, cols);
  return undefined_value(env);
}

}  // namespace

NAPI_MODULE_INIT() {
  const napi_property_descriptor properties[] = {
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"sgemm", nullptr, Sgemm, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxForward", nullptr, SoftmaxForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxBackward", nullptr, SoftmaxBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}

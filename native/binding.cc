// N-API entry points of qkd_native. This file only marshals: it reads and
// checks the JavaScript arguments (types, integer ranges, and that every
// buffer is long enough for the elements the call will touch), then calls
// the kernels in kernels/, which know nothing of N-API.
//
// Every TypedArray is used in place (zero copy) from its byteOffset, so the
// TypeScript side can pass subarrays of one arena.
//
// Exports (all numbers are JS numbers; sizes are non-negative integers):
//   info(): { version: 6, isa: "avx512" | "avx2" | "portable", threads }
//   sgemm(batch, transA, transB, M, N, K, alpha, A, lda, strideA,
//         B, ldb, strideB, beta, C, ldc, strideC): undefined
//   softmaxForward(x, y, rows, cols): undefined
//   softmaxBackward(y, dy, dx, rows, cols): undefined
// Version 2 adds the fused kernels of kernels/fused.h (EMPTY: a zero-length
// Float32Array, accepted where a gradient may be skipped):
//   rmsnormForward(x, w, y, rstd, rows, cols, eps)
//   rmsnormBackward(x, w, rstd, dy, dx|EMPTY, dw|EMPTY, rows, cols)
//   swigluForward(gate, up, y, n)
//   swigluBackward(gate, up, dy, dgate|EMPTY, dup|EMPTY, n)
//   rope(src, dst, cos, sin, B, T, H, D, style 0|1, direction 1|-1, accumulate)
//   adamw(w, g, m, v, n, lr, beta1, beta2, eps, shrink, c1, c2)
//   crossEntropyForward(logits, targets: Int32Array, lse, rows, V, ignoreIndex): number
//   crossEntropyBackward(logits, targets: Int32Array, lse, dz, rows, V, ignoreIndex, scale)
//   klForward(zT, zS, lseT, lseS, rowKl, rows, V, invTau): number
//   klBackward(zT, zS, lseT, lseS, rowKl, dT|EMPTY, dS|EMPTY, rows, V, invTau, g)
//   causalSoftmaxForward(x, y, BH, T, S, offset)
//   causalSoftmaxBackward(y, dy, dx, BH, T, S, offset, accumulate)
//   addInto(dst, src, n); add(a, b, out, n)
// Version 3 adds fake quantization (kernels/fused.h; mask is a Uint8Array,
// EMPTY_U8 a zero-length one: skip the mask):
//   fakeQuantForward(w, out, mask|EMPTY_U8, rows, cols, bits 2..8, symmetric,
//                    granularity 0|1|2, groupSize >= 1, clipRatio in (0, 1])
//   fakeQuantBackward(dy, mask, dw, n)
// Version 4 adds the kernels of the data-free profiler (kernels/gemm_bf16.h,
// weight_stats.h, sym_eig.h; bf16 arrays are Uint16Arrays of raw bfloat16 bits):
//   bf16Gemm(transA, M, N, K, A: bf16, lda, B, ldb, C, ldc, accumulate)   C (+)= op(A)·bf16(B)
//   weightStats(w, rows, cols, bits 0|2..8, shift, rowMin, rowMax, totals: Float64Array)
//   weightStatsBf16(w: bf16, rows, cols, bits, shift, rowMin, rowMax, totals)
//   symmetricEigenvalues(a: Float64Array, n, count, out: Float64Array)   the count largest, descending
//   f32ToBf16(src: Float32Array, dst: bf16, n)                 round to nearest even, NaN quiet
// Without a version bump (the TypeScript side uses it when exported; rtn_error.h):
//   rtnErrors(w, rows, cols, groupSize, symmetric, perTensor, bits: Int32Array, out: Float64Array)
//     → −1, the index of a NaN weight, or −2 (a scale beyond f16); out[j] the RTN error at bits[j]
//   rtnErrorsBf16(w: bf16, ...)   the same for raw bfloat16 bits
//   transpose(src, dst, rows, cols)   dst [cols, rows] = srcᵀ (transpose.h; src and dst disjoint)
// Interface version 5 adds DBWA's packed formats (dbwa_codec.h):
//   dbwaEncode(tier 8|12|16, src: Float32Array, storage: Uint8Array, seed: Uint32Array(4) | null) → −1 or
//     the index of a non-finite value;  dbwaDecode(tier, storage, dst: Float32Array)
// Interface version 6 adds ggml's block formats (ggml_codec.h; type is the ggml type id of Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0 or Q2_K..Q6_K, and the element count a multiple of its block):
//   ggmlEncode(type, src: Float32Array, dst: Uint8Array, importance: Float32Array | null)
//     dst gets exactly the encoded bytes; importance: one weight per column (its length the row length)
//   ggmlDecode(type, src: Uint8Array, dst: Float32Array)    src holds exactly dst.length elements' blocks
//   ggmlRoundTrip(type, src: Float32Array, dst: Float32Array)  dst = decode(encode(src)); dst may be src
// The state-space mixer's kernels (ssm.h; docs/mohawk.md), without an interface version bump: the TypeScript
// side uses each kernel the addon exports and the reference for the rest. EMPTY skips a gradient:
//   ssmScanForward(x, b, c, logit, y, states, B, T, H, P, N, L)
//   ssmScanBackward(x, b, c, logit, states, dy, dx|EMPTY, db|EMPTY, dc|EMPTY, dlogit|EMPTY, B, T, H, P, N, L)
//   ssmMatrixForward(b, c, logit, m, B, T, H, N)
//   ssmMatrixBackward(b, c, logit, m, dm, db|EMPTY, dc|EMPTY, dlogit|EMPTY, B, T, H, N)
//   causalConvForward(x, w, bias|EMPTY, y, B, T, C, K)
//   causalConvBackward(x, w, dy, dx|EMPTY, dw|EMPTY, dbias|EMPTY, B, T, C, K)
// Flags (accumulate, symmetric) are booleans or 0/1, like the transpose flags of sgemm.
#include <node_api.h>

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

#include "kernels/cpu.h"
#include "kernels/dbwa_codec.h"
#include "kernels/fused.h"
#include "kernels/gemm_bf16.h"
#include "kernels/ggml_codec.h"
#include "kernels/sgemm.h"
#include "kernels/softmax.h"
#include "kernels/ssm.h"
#include "kernels/sym_eig.h"
#include "kernels/thread_pool.h"
#include "kernels/weight_stats.h"
#include "kernels/rtn_error.h"
#include "kernels/transpose.h"

namespace {

constexpr int kInfoVersion = 6;
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


// ---- Version 2: the fused kernels of kernels/fused.h --------------------------

// A Float32Array that may be EMPTY (zero length: skip that output). `data`
// is nullptr when it is empty or when nothing would be touched.
bool read_optional_float32_array(napi_env env, napi_value value, const char* fn, const char* name,
                                 int64_t needed, FloatView* out) {
  if (!read_float32_array(env, value, fn, name, out)) return false;
  if (out->length == 0 || needed == 0) {
    out->data = nullptr;
    return true;
  }
  return check_length(env, fn, name, *out, needed, false);
}

struct Int32View {
  const int32_t* data = nullptr;
  int64_t length = 0;
};

bool read_int32_array(napi_env env, napi_value value, const char* fn, const char* name, Int32View* out) {
  bool is_typed_array = false;
  napi_is_typedarray(env, value, &is_typed_array);
  if (!is_typed_array) return fail(env, fn, "argument %s must be an Int32Array", name);
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
    return fail(env, fn, "could not read argument %s", name);
  }
  if (type != napi_int32_array) return fail(env, fn, "argument %s must be an Int32Array", name);
  out->data = static_cast<const int32_t*>(data);
  out->length = static_cast<int64_t>(length);
  return true;
}

// An integer in the int32 range (may be negative: ignore indices).
bool read_int32(napi_env env, napi_value value, const char* fn, const char* name, int32_t* out) {
  double number;
  if (!read_number(env, value, fn, name, &number)) return false;
  if (!(number >= -2147483648.0 && number <= 2147483647.0) || std::floor(number) != number) {
    return fail(env, fn, "argument %s must be an integer in the int32 range, got %g", name, number);
  }
  *out = static_cast<int32_t>(number);
  return true;
}

// A number the kernels take as float: finite, and finite as a float.
bool read_float(napi_env env, napi_value value, const char* fn, const char* name, float* out) {
  double number;
  if (!read_number(env, value, fn, name, &number)) return false;
  if (!std::isfinite(number) || !std::isfinite(static_cast<float>(number))) {
    return fail(env, fn, "argument %s must be a finite number (as float32), got %g", name, number);
  }
  *out = static_cast<float>(number);
  return true;
}

// Product of sizes; false (with a JS error naming `what`) on int64 overflow.
bool multiply(napi_env env, const char* fn, const char* what, std::initializer_list<int64_t> sizes, int64_t* out) {
  int64_t product = 1;
  for (int64_t size : sizes) {
    if (__builtin_mul_overflow(product, size, &product)) {
      return fail(env, fn, "the sizes of %s overflow a 64-bit index", what);
    }
  }
  *out = product;
  return true;
}

bool check_elements(napi_env env, const char* fn, const char* name, const FloatView& view, int64_t needed) {
  return check_length(env, fn, name, view, needed, false);
}

// The first count_a elements of a and count_b of b must not share memory,
// except (when allow_same) by starting at the same element. Skipped views
// (data == nullptr) never overlap.
bool check_overlap(napi_env env, const char* fn, const char* first, const FloatView& a, int64_t count_a,
                   const char* second, const FloatView& b, int64_t count_b, bool allow_same, const char* why) {
  if (count_a == 0 || count_b == 0 || a.data == nullptr || b.data == nullptr) return true;
  if (allow_same && a.data == b.data) return true;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  const uintptr_t a1 = a0 + static_cast<uintptr_t>(count_a) * sizeof(float);
  const uintptr_t b1 = b0 + static_cast<uintptr_t>(count_b) * sizeof(float);
  if (a0 < b1 && b0 < a1) {
    if (allow_same) {
      return fail(env, fn, "arguments %s and %s overlap without being the same elements (in place means the "
                  "same offset)", first, second);
    }
    return fail(env, fn, "arguments %s and %s must not overlap%s", first, second, why);
  }
  return true;
}

bool check_disjoint(napi_env env, const char* fn, const char* first, const FloatView& a, int64_t count_a,
                    const char* second, const FloatView& b, int64_t count_b, const char* why) {
  return check_overlap(env, fn, first, a, count_a, second, b, count_b, false, why);
}

napi_value number_value(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

napi_value out_of_memory(napi_env env, const char* fn) {
  fail(env, fn, "out of memory for the scratch buffers");
  return nullptr;
}

// rmsnormForward(x, w, y, rstd, rows, cols, eps)
napi_value RmsnormForward(napi_env env, napi_callback_info info) {
  const char* fn = "rmsnormForward";
  napi_value args[7];
  if (!get_args(env, info, fn, 7, args)) return nullptr;
  FloatView x, w, y, rstd;
  int64_t rows = 0, cols = 0, total = 0;
  double eps;
  if (!read_float32_array(env, args[0], fn, "x", &x) || !read_float32_array(env, args[1], fn, "w", &w) ||
      !read_float32_array(env, args[2], fn, "y", &y) || !read_float32_array(env, args[3], fn, "rstd", &rstd) ||
      !read_size(env, args[4], fn, "rows", &rows) || !read_size(env, args[5], fn, "cols", &cols) ||
      !read_number(env, args[6], fn, "eps", &eps) || !multiply(env, fn, "x (rows×cols)", {rows, cols}, &total)) {
    return nullptr;
  }
  if (!(eps >= 0.0 && std::isfinite(eps))) {
    fail(env, fn, "argument eps must be a finite number >= 0");
    return nullptr;
  }
  if (total == 0) return undefined_value(env);  // nothing is touched
  if (!check_elements(env, fn, "x", x, total) || !check_elements(env, fn, "w", w, cols) ||
      !check_elements(env, fn, "y", y, total) || !check_elements(env, fn, "rstd", rstd, rows) ||
      !check_same_or_disjoint(env, fn, "x", x, "y", y, total)) {
    return nullptr;
  }
  qkd::rmsnorm_forward(x.data, w.data, y.data, rstd.data, rows, cols, static_cast<float>(eps));
  return undefined_value(env);
}

// rmsnormBackward(x, w, rstd, dy, dx|EMPTY, dw|EMPTY, rows, cols)
napi_value RmsnormBackward(napi_env env, napi_callback_info info) {
  const char* fn = "rmsnormBackward";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  FloatView x, w, rstd, dy, dx, dw;
  int64_t rows = 0, cols = 0, total = 0;
  if (!read_size(env, args[6], fn, "rows", &rows) || !read_size(env, args[7], fn, "cols", &cols) ||
      !multiply(env, fn, "x (rows×cols)", {rows, cols}, &total) ||
      !read_float32_array(env, args[0], fn, "x", &x) || !read_float32_array(env, args[1], fn, "w", &w) ||
      !read_float32_array(env, args[2], fn, "rstd", &rstd) || !read_float32_array(env, args[3], fn, "dy", &dy) ||
      !read_optional_float32_array(env, args[4], fn, "dx", total, &dx) ||
      !read_optional_float32_array(env, args[5], fn, "dw", total == 0 ? 0 : cols, &dw)) {
    return nullptr;
  }
  if (dx.data == nullptr && dw.data == nullptr) return undefined_value(env);  // nothing is touched
  if (!check_elements(env, fn, "x", x, total) || !check_elements(env, fn, "rstd", rstd, rows) ||
      !check_elements(env, fn, "dy", dy, total) ||
      (dx.data != nullptr && !check_elements(env, fn, "w", w, cols)) ||
      !check_same_or_disjoint(env, fn, "x", x, "dx", dx, dx.data == nullptr ? 0 : total) ||
      !check_same_or_disjoint(env, fn, "dy", dy, "dx", dx, dx.data == nullptr ? 0 : total)) {
    return nullptr;
  }
  if (!qkd::rmsnorm_backward(x.data, w.data, rstd.data, dy.data, dx.data, dw.data, rows, cols)) {
    return out_of_memory(env, fn);
  }
  return undefined_value(env);
}

// swigluForward(gate, up, y, n)
napi_value SwigluForward(napi_env env, napi_callback_info info) {
  const char* fn = "swigluForward";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  FloatView gate, up, y;
  int64_t n;
  if (!read_float32_array(env, args[0], fn, "gate", &gate) || !read_float32_array(env, args[1], fn, "up", &up) ||
      !read_float32_array(env, args[2], fn, "y", &y) || !read_size(env, args[3], fn, "n", &n) ||
      !check_elements(env, fn, "gate", gate, n) || !check_elements(env, fn, "up", up, n) ||
      !check_elements(env, fn, "y", y, n) || !check_same_or_disjoint(env, fn, "gate", gate, "y", y, n) ||
      !check_same_or_disjoint(env, fn, "up", up, "y", y, n)) {
    return nullptr;
  }
  qkd::swiglu_forward(gate.data, up.data, y.data, n);
  return undefined_value(env);
}

// swigluBackward(gate, up, dy, dgate|EMPTY, dup|EMPTY, n)
napi_value SwigluBackward(napi_env env, napi_callback_info info) {
  const char* fn = "swigluBackward";
  napi_value args[6];
  if (!get_args(env, info, fn, 6, args)) return nullptr;
  FloatView gate, up, dy, dgate, dup;
  int64_t n;
  if (!read_size(env, args[5], fn, "n", &n) || !read_float32_array(env, args[0], fn, "gate", &gate) ||
      !read_float32_array(env, args[1], fn, "up", &up) || !read_float32_array(env, args[2], fn, "dy", &dy) ||
      !read_optional_float32_array(env, args[3], fn, "dgate", n, &dgate) ||
      !read_optional_float32_array(env, args[4], fn, "dup", n, &dup)) {
    return nullptr;
  }
  if (dgate.data == nullptr && dup.data == nullptr) return undefined_value(env);
  // up is read for dgate only.
  if (!check_elements(env, fn, "gate", gate, n) || !check_elements(env, fn, "dy", dy, n) ||
      (dgate.data != nullptr && !check_elements(env, fn, "up", up, n)) ||
      !check_disjoint(env, fn, "dgate", dgate, n, "dup", dup, n, "")) {
    return nullptr;
  }
  qkd::swiglu_backward(gate.data, up.data, dy.data, dgate.data, dup.data, n);
  return undefined_value(env);
}

// rope(src, dst, cos, sin, B, T, H, D, style, direction, accumulate)
napi_value Rope(napi_env env, napi_callback_info info) {
  const char* fn = "rope";
  napi_value args[11];
  if (!get_args(env, info, fn, 11, args)) return nullptr;
  FloatView src, dst, cos, sin;
  qkd::RopeArgs rope;
  double style, direction;
  int64_t total = 0, table = 0;
  if (!read_float32_array(env, args[0], fn, "src", &src) || !read_float32_array(env, args[1], fn, "dst", &dst) ||
      !read_float32_array(env, args[2], fn, "cos", &cos) || !read_float32_array(env, args[3], fn, "sin", &sin) ||
      !read_size(env, args[4], fn, "B", &rope.batch) || !read_size(env, args[5], fn, "T", &rope.time) ||
      !read_size(env, args[6], fn, "H", &rope.heads) || !read_size(env, args[7], fn, "D", &rope.dim) ||
      !read_number(env, args[8], fn, "style", &style) || !read_number(env, args[9], fn, "direction", &direction) ||
      !read_flag(env, args[10], fn, "accumulate", &rope.accumulate) ||
      !multiply(env, fn, "src (B×T×H×D)", {rope.batch, rope.time, rope.heads, rope.dim}, &total) ||
      !multiply(env, fn, "cos (T×D/2)", {rope.time, rope.dim / 2}, &table)) {
    return nullptr;
  }
  if (rope.dim % 2 != 0) {
    fail(env, fn, "argument D must be even, got %lld", static_cast<long long>(rope.dim));
    return nullptr;
  }
  if (style != 0.0 && style != 1.0) {
    fail(env, fn, "argument style must be 0 (half) or 1 (interleaved), got %g", style);
    return nullptr;
  }
  if (direction != 1.0 && direction != -1.0) {
    fail(env, fn, "argument direction must be 1 or -1, got %g", direction);
    return nullptr;
  }
  if (total == 0) return undefined_value(env);
  if (!check_elements(env, fn, "src", src, total) || !check_elements(env, fn, "dst", dst, total) ||
      !check_elements(env, fn, "cos", cos, table) || !check_elements(env, fn, "sin", sin, table)) {
    return nullptr;
  }
  if (!check_overlap(env, fn, "src", src, total, "dst", dst, total, !rope.accumulate, " when accumulate is set")) {
    return nullptr;
  }
  rope.src = src.data;
  rope.dst = dst.data;
  rope.cos = cos.data;
  rope.sin = sin.data;
  rope.interleaved = style == 1.0;
  rope.direction = static_cast<float>(direction);
  qkd::rope(rope);
  return undefined_value(env);
}

// adamw(w, g, m, v, n, lr, beta1, beta2, eps, shrink, c1, c2)
napi_value Adamw(napi_env env, napi_callback_info info) {
  const char* fn = "adamw";
  napi_value args[12];
  if (!get_args(env, info, fn, 12, args)) return nullptr;
  FloatView w, g, m, v;
  qkd::AdamwArgs a;
  if (!read_float32_array(env, args[0], fn, "w", &w) || !read_float32_array(env, args[1], fn, "g", &g) ||
      !read_float32_array(env, args[2], fn, "m", &m) || !read_float32_array(env, args[3], fn, "v", &v) ||
      !read_size(env, args[4], fn, "n", &a.n) || !read_float(env, args[5], fn, "lr", &a.lr) ||
      !read_float(env, args[6], fn, "beta1", &a.beta1) || !read_float(env, args[7], fn, "beta2", &a.beta2) ||
      !read_float(env, args[8], fn, "eps", &a.eps) || !read_float(env, args[9], fn, "shrink", &a.shrink) ||
      !read_float(env, args[10], fn, "c1", &a.c1) || !read_float(env, args[11], fn, "c2", &a.c2) ||
      !check_elements(env, fn, "w", w, a.n) || !check_elements(env, fn, "g", g, a.n) ||
      !check_elements(env, fn, "m", m, a.n) || !check_elements(env, fn, "v", v, a.n) ||
      !check_disjoint(env, fn, "w", w, a.n, "m", m, a.n, "") || !check_disjoint(env, fn, "w", w, a.n, "v", v, a.n, "") ||
      !check_disjoint(env, fn, "m", m, a.n, "v", v, a.n, "")) {
    return nullptr;
  }
  a.w = w.data;
  a.g = g.data;
  a.m = m.data;
  a.v = v.data;
  qkd::adamw(a);
  return undefined_value(env);
}

// Checks the targets of the counted rows (0 ≤ target < V) and finds the last
// counted row (-1 if none): the buffers must reach it, and no further.
bool check_targets(napi_env env, const char* fn, const Int32View& targets, int64_t rows, int64_t vocab,
                   int32_t ignore_index, int64_t* last_counted) {
  if (targets.length < rows) {
    return fail(env, fn, "argument targets (Int32Array) has %lld elements, needs at least %lld",
                static_cast<long long>(targets.length), static_cast<long long>(rows));
  }
  *last_counted = -1;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t target = targets.data[r];
    if (target == ignore_index) continue;
    if (target < 0 || target >= vocab) {
      return fail(env, fn, "argument targets[%lld] is %d, must be in [0, V = %lld) or ignoreIndex (%d)",
                  static_cast<long long>(r), target, static_cast<long long>(vocab), ignore_index);
    }
    *last_counted = r;
  }
  return true;
}

// crossEntropyForward(logits, targets, lse, rows, V, ignoreIndex): number
napi_value CrossEntropyForward(napi_env env, napi_callback_info info) {
  const char* fn = "crossEntropyForward";
  napi_value args[6];
  if (!get_args(env, info, fn, 6, args)) return nullptr;
  FloatView logits, lse;
  Int32View targets;
  int64_t rows = 0, vocab = 0, last = -1, used = 0;
  int32_t ignore_index;
  if (!read_float32_array(env, args[0], fn, "logits", &logits) ||
      !read_int32_array(env, args[1], fn, "targets", &targets) || !read_float32_array(env, args[2], fn, "lse", &lse) ||
      !read_size(env, args[3], fn, "rows", &rows) || !read_size(env, args[4], fn, "V", &vocab) ||
      !read_int32(env, args[5], fn, "ignoreIndex", &ignore_index) ||
      !multiply(env, fn, "logits (rows×V)", {rows, vocab}, &used) ||
      !check_targets(env, fn, targets, rows, vocab, ignore_index, &last) ||
      !check_elements(env, fn, "logits", logits, (last + 1) * vocab) ||
      !check_elements(env, fn, "lse", lse, last + 1)) {
    return nullptr;
  }
  double loss = 0.0;
  if (last >= 0 && !qkd::cross_entropy_forward(logits.data, targets.data, lse.data, last + 1, vocab, ignore_index,
                                               &loss)) {
    return out_of_memory(env, fn);
  }
  return number_value(env, loss);
}

// crossEntropyBackward(logits, targets, lse, dz, rows, V, ignoreIndex, scale)
napi_value CrossEntropyBackward(napi_env env, napi_callback_info info) {
  const char* fn = "crossEntropyBackward";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  FloatView logits, lse, dz;
  Int32View targets;
  int64_t rows = 0, vocab = 0, last = -1, used = 0;
  int32_t ignore_index;
  float scale;
  if (!read_float32_array(env, args[0], fn, "logits", &logits) ||
      !read_int32_array(env, args[1], fn, "targets", &targets) || !read_float32_array(env, args[2], fn, "lse", &lse) ||
      !read_float32_array(env, args[3], fn, "dz", &dz) || !read_size(env, args[4], fn, "rows", &rows) ||
      !read_size(env, args[5], fn, "V", &vocab) || !read_int32(env, args[6], fn, "ignoreIndex", &ignore_index) ||
      !read_float(env, args[7], fn, "scale", &scale) ||
      !multiply(env, fn, "logits (rows×V)", {rows, vocab}, &used) ||
      !check_targets(env, fn, targets, rows, vocab, ignore_index, &last) ||
      !check_elements(env, fn, "logits", logits, (last + 1) * vocab) ||
      !check_elements(env, fn, "lse", lse, last + 1) || !check_elements(env, fn, "dz", dz, (last + 1) * vocab) ||
      !check_same_or_disjoint(env, fn, "logits", logits, "dz", dz, (last + 1) * vocab)) {
    return nullptr;
  }
  if (last >= 0) {
    qkd::cross_entropy_backward(logits.data, targets.data, lse.data, dz.data, last + 1, vocab, ignore_index, scale);
  }
  return undefined_value(env);
}

// klForward(zT, zS, lseT, lseS, rowKl, rows, V, invTau): number
napi_value KlForward(napi_env env, napi_callback_info info) {
  const char* fn = "klForward";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  FloatView zT, zS, lseT, lseS, rowKl;
  int64_t rows = 0, vocab = 0, total = 0;
  float inv_tau;
  if (!read_float32_array(env, args[0], fn, "zT", &zT) || !read_float32_array(env, args[1], fn, "zS", &zS) ||
      !read_float32_array(env, args[2], fn, "lseT", &lseT) || !read_float32_array(env, args[3], fn, "lseS", &lseS) ||
      !read_float32_array(env, args[4], fn, "rowKl", &rowKl) || !read_size(env, args[5], fn, "rows", &rows) ||
      !read_size(env, args[6], fn, "V", &vocab) || !read_float(env, args[7], fn, "invTau", &inv_tau) ||
      !multiply(env, fn, "zT (rows×V)", {rows, vocab}, &total)) {
    return nullptr;
  }
  if (rows == 0) return number_value(env, 0.0);
  if (vocab == 0) {
    fail(env, fn, "argument V must be positive when rows > 0");
    return nullptr;
  }
  if (!check_elements(env, fn, "zT", zT, total) || !check_elements(env, fn, "zS", zS, total) ||
      !check_elements(env, fn, "lseT", lseT, rows) || !check_elements(env, fn, "lseS", lseS, rows) ||
      !check_elements(env, fn, "rowKl", rowKl, rows)) {
    return nullptr;
  }
  double kl = 0.0;
  if (!qkd::kl_forward(zT.data, zS.data, lseT.data, lseS.data, rowKl.data, rows, vocab, inv_tau, &kl)) {
    return out_of_memory(env, fn);
  }
  return number_value(env, kl);
}

// klBackward(zT, zS, lseT, lseS, rowKl, dT|EMPTY, dS|EMPTY, rows, V, invTau, g)
napi_value KlBackward(napi_env env, napi_callback_info info) {
  const char* fn = "klBackward";
  napi_value args[11];
  if (!get_args(env, info, fn, 11, args)) return nullptr;
  FloatView zT, zS, lseT, lseS, rowKl, dT, dS;
  int64_t rows = 0, vocab = 0, total = 0;
  float inv_tau, g;
  if (!read_size(env, args[7], fn, "rows", &rows) || !read_size(env, args[8], fn, "V", &vocab) ||
      !read_float(env, args[9], fn, "invTau", &inv_tau) || !read_float(env, args[10], fn, "g", &g) ||
      !multiply(env, fn, "zT (rows×V)", {rows, vocab}, &total) ||
      !read_float32_array(env, args[0], fn, "zT", &zT) || !read_float32_array(env, args[1], fn, "zS", &zS) ||
      !read_float32_array(env, args[2], fn, "lseT", &lseT) || !read_float32_array(env, args[3], fn, "lseS", &lseS) ||
      !read_float32_array(env, args[4], fn, "rowKl", &rowKl) ||
      !read_optional_float32_array(env, args[5], fn, "dT", total, &dT) ||
      !read_optional_float32_array(env, args[6], fn, "dS", total, &dS)) {
    return nullptr;
  }
  if (dT.data == nullptr && dS.data == nullptr) return undefined_value(env);
  if (!check_elements(env, fn, "zT", zT, total) || !check_elements(env, fn, "zS", zS, total) ||
      !check_elements(env, fn, "lseT", lseT, rows) || !check_elements(env, fn, "lseS", lseS, rows) ||
      (dT.data != nullptr && !check_elements(env, fn, "rowKl", rowKl, rows)) ||
      !check_disjoint(env, fn, "dT", dT, total, "dS", dS, total, "")) {
    return nullptr;
  }
  qkd::kl_backward(zT.data, zS.data, lseT.data, lseS.data, rowKl.data, dT.data, dS.data, rows, vocab, inv_tau, g);
  return undefined_value(env);
}

// Reads BH, T, S and offset of a causal softmax; `total` = BH·T·S, `kept` the
// elements up to the last kept column of the last row (what x, y or dy are
// read up to).
bool read_causal_sizes(napi_env env, const char* fn, napi_value* args, int64_t* bh, int64_t* t, int64_t* s,
                       int64_t* offset, int64_t* total, int64_t* kept) {
  if (!read_size(env, args[0], fn, "BH", bh) || !read_size(env, args[1], fn, "T", t) ||
      !read_size(env, args[2], fn, "S", s) || !read_size(env, args[3], fn, "offset", offset) ||
      !multiply(env, fn, "BH×T×S", {*bh, *t, *s}, total)) {
    return false;
  }
  *kept = 0;
  if (*total > 0) {
    const int64_t last_valid = *offset + *t < *s ? *offset + *t : *s;
    *kept = *total - *s + last_valid;
  }
  return true;
}

// causalSoftmaxForward(x, y, BH, T, S, offset)
napi_value CausalSoftmaxForward(napi_env env, napi_callback_info info) {
  const char* fn = "causalSoftmaxForward";
  napi_value args[6];
  if (!get_args(env, info, fn, 6, args)) return nullptr;
  FloatView x, y;
  int64_t bh = 0, t = 0, s = 0, offset = 0, total = 0, kept = 0;
  if (!read_float32_array(env, args[0], fn, "x", &x) || !read_float32_array(env, args[1], fn, "y", &y) ||
      !read_causal_sizes(env, fn, args + 2, &bh, &t, &s, &offset, &total, &kept) ||
      !check_elements(env, fn, "x", x, kept) || !check_elements(env, fn, "y", y, total) ||
      !check_overlap(env, fn, "x", x, kept, "y", y, total, true, "")) {
    return nullptr;
  }
  qkd::causal_softmax_forward(x.data, y.data, bh, t, s, offset);
  return undefined_value(env);
}

// causalSoftmaxBackward(y, dy, dx, BH, T, S, offset, accumulate)
napi_value CausalSoftmaxBackward(napi_env env, napi_callback_info info) {
  const char* fn = "causalSoftmaxBackward";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  FloatView y, dy, dx;
  int64_t bh = 0, t = 0, s = 0, offset = 0, total = 0, kept = 0;
  bool accumulate;
  if (!read_float32_array(env, args[0], fn, "y", &y) || !read_float32_array(env, args[1], fn, "dy", &dy) ||
      !read_float32_array(env, args[2], fn, "dx", &dx) ||
      !read_causal_sizes(env, fn, args + 3, &bh, &t, &s, &offset, &total, &kept) ||
      !read_flag(env, args[7], fn, "accumulate", &accumulate)) {
    return nullptr;
  }
  const int64_t written = accumulate ? kept : total;
  if (!check_elements(env, fn, "y", y, kept) || !check_elements(env, fn, "dy", dy, kept) ||
      !check_elements(env, fn, "dx", dx, written) ||
      !check_overlap(env, fn, "y", y, kept, "dx", dx, written, true, "") ||
      !check_overlap(env, fn, "dy", dy, kept, "dx", dx, written, !accumulate, " when accumulate is set")) {
    return nullptr;
  }
  qkd::causal_softmax_backward(y.data, dy.data, dx.data, bh, t, s, offset, accumulate);
  return undefined_value(env);
}

// addInto(dst, src, n)
napi_value AddInto(napi_env env, napi_callback_info info) {
  const char* fn = "addInto";
  napi_value args[3];
  if (!get_args(env, info, fn, 3, args)) return nullptr;
  FloatView dst, src;
  int64_t n;
  if (!read_float32_array(env, args[0], fn, "dst", &dst) || !read_float32_array(env, args[1], fn, "src", &src) ||
      !read_size(env, args[2], fn, "n", &n) || !check_elements(env, fn, "dst", dst, n) ||
      !check_elements(env, fn, "src", src, n) || !check_same_or_disjoint(env, fn, "dst", dst, "src", src, n)) {
    return nullptr;
  }
  qkd::add_into(dst.data, src.data, n);
  return undefined_value(env);
}

// transpose(src, dst, rows, cols): dst [cols, rows] = srcᵀ (transpose.h)
napi_value Transpose(napi_env env, napi_callback_info info) {
  const char* fn = "transpose";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  FloatView src, dst;
  int64_t rows, cols, count = 0;
  if (!read_float32_array(env, args[0], fn, "src", &src) || !read_float32_array(env, args[1], fn, "dst", &dst) ||
      !read_size(env, args[2], fn, "rows", &rows) || !read_size(env, args[3], fn, "cols", &cols) ||
      !multiply(env, fn, "src (rows×cols)", {rows, cols}, &count) || !check_elements(env, fn, "src", src, count) ||
      !check_elements(env, fn, "dst", dst, count) || !check_disjoint(env, fn, "src", src, count, "dst", dst, count, " (a transpose cannot run in place)")) {
    return nullptr;
  }
  qkd::transpose(src.data, dst.data, rows, cols);
  return undefined_value(env);
}

// add(a, b, out, n)
napi_value Add(napi_env env, napi_callback_info info) {
  const char* fn = "add";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  FloatView a, b, out;
  int64_t n;
  if (!read_float32_array(env, args[0], fn, "a", &a) || !read_float32_array(env, args[1], fn, "b", &b) ||
      !read_float32_array(env, args[2], fn, "out", &out) || !read_size(env, args[3], fn, "n", &n) ||
      !check_elements(env, fn, "a", a, n) || !check_elements(env, fn, "b", b, n) ||
      !check_elements(env, fn, "out", out, n) || !check_same_or_disjoint(env, fn, "a", a, "out", out, n) ||
      !check_same_or_disjoint(env, fn, "b", b, "out", out, n)) {
    return nullptr;
  }
  qkd::add(a.data, b.data, out.data, n);
  return undefined_value(env);
}

// ---- Version 3: fake quantization -------------------------------------------

struct ByteView {
  uint8_t* data = nullptr;
  int64_t length = 0;
};

bool read_uint8_array(napi_env env, napi_value value, const char* fn, const char* name, ByteView* out) {
  bool is_typed_array = false;
  napi_is_typedarray(env, value, &is_typed_array);
  if (!is_typed_array) return fail(env, fn, "argument %s must be a Uint8Array", name);
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
    return fail(env, fn, "could not read argument %s", name);
  }
  if (type != napi_uint8_array) return fail(env, fn, "argument %s must be a Uint8Array", name);
  out->data = static_cast<uint8_t*>(data);
  out->length = static_cast<int64_t>(length);
  return true;
}

bool check_bytes(napi_env env, const char* fn, const char* name, const ByteView& view, int64_t needed) {
  if (view.length < needed) {
    return fail(env, fn, "argument %s (Uint8Array) has %lld elements, needs at least %lld", name,
                static_cast<long long>(view.length), static_cast<long long>(needed));
  }
  return true;
}

// The first `count` bytes of a mask must not share memory with the first
// `count` floats of a Float32Array (they may view one ArrayBuffer).
bool check_mask_apart(napi_env env, const char* fn, const char* mask_name, const ByteView& mask,
                      const char* float_name, const FloatView& floats, int64_t count) {
  if (count == 0 || mask.data == nullptr || floats.data == nullptr) return true;
  const uintptr_t m0 = reinterpret_cast<uintptr_t>(mask.data), f0 = reinterpret_cast<uintptr_t>(floats.data);
  const uintptr_t m1 = m0 + static_cast<uintptr_t>(count), f1 = f0 + static_cast<uintptr_t>(count) * sizeof(float);
  if (m0 < f1 && f0 < m1) return fail(env, fn, "arguments %s and %s must not overlap", mask_name, float_name);
  return true;
}

// fakeQuantForward(w, out, mask|EMPTY_U8, rows, cols, bits, symmetric, granularity, groupSize, clipRatio)
napi_value FakeQuantForward(napi_env env, napi_callback_info info) {
  const char* fn = "fakeQuantForward";
  napi_value args[10];
  if (!get_args(env, info, fn, 10, args)) return nullptr;
  FloatView w, out;
  ByteView mask;
  int64_t rows = 0, cols = 0, total = 0, granularity = 0, group_size = 0;
  int32_t bits = 0;
  bool symmetric = false;
  double clip_ratio = 0.0;
  if (!read_float32_array(env, args[0], fn, "w", &w) || !read_float32_array(env, args[1], fn, "out", &out) ||
      !read_uint8_array(env, args[2], fn, "mask", &mask) || !read_size(env, args[3], fn, "rows", &rows) ||
      !read_size(env, args[4], fn, "cols", &cols) || !read_int32(env, args[5], fn, "bits", &bits) ||
      !read_flag(env, args[6], fn, "symmetric", &symmetric) ||
      !read_size(env, args[7], fn, "granularity", &granularity) ||
      !read_size(env, args[8], fn, "groupSize", &group_size) ||
      !read_number(env, args[9], fn, "clipRatio", &clip_ratio) ||
      !multiply(env, fn, "w (rows×cols)", {rows, cols}, &total)) {
    return nullptr;
  }
  if (bits < 2 || bits > 8) {
    fail(env, fn, "argument bits must be an integer from 2 to 8, got %d", bits);
    return nullptr;
  }
  if (granularity > 2) {
    fail(env, fn, "argument granularity must be 0 (tensor), 1 (channel) or 2 (group), got %lld",
         static_cast<long long>(granularity));
    return nullptr;
  }
  if (group_size < 1) {
    fail(env, fn, "argument groupSize must be a positive integer, got %lld", static_cast<long long>(group_size));
    return nullptr;
  }
  if (!(clip_ratio > 0.0 && clip_ratio <= 1.0)) {
    fail(env, fn, "argument clipRatio must be in (0, 1], got %g", clip_ratio);
    return nullptr;
  }
  if (mask.length == 0) mask.data = nullptr;  // EMPTY_U8: skip
  if (total == 0) return undefined_value(env);  // nothing is touched
  if (!check_elements(env, fn, "w", w, total) || !check_elements(env, fn, "out", out, total) ||
      (mask.data != nullptr && !check_bytes(env, fn, "mask", mask, total)) ||
      !check_same_or_disjoint(env, fn, "w", w, "out", out, total) ||
      !check_mask_apart(env, fn, "mask", mask, "w", w, total) ||
      !check_mask_apart(env, fn, "mask", mask, "out", out, total)) {
    return nullptr;
  }
  qkd::FakeQuantArgs a;
  a.w = w.data;
  a.out = out.data;
  a.mask = mask.data;
  a.rows = rows;
  a.cols = cols;
  a.bits = bits;
  a.symmetric = symmetric;
  a.granularity = static_cast<qkd::QuantGranularity>(granularity);
  a.group_size = group_size;
  a.clip_ratio = clip_ratio;
  qkd::fake_quant_forward(a);
  return undefined_value(env);
}

// fakeQuantBackward(dy, mask, dw, n)
napi_value FakeQuantBackward(napi_env env, napi_callback_info info) {
  const char* fn = "fakeQuantBackward";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  FloatView dy, dw;
  ByteView mask;
  int64_t n = 0;
  if (!read_float32_array(env, args[0], fn, "dy", &dy) || !read_uint8_array(env, args[1], fn, "mask", &mask) ||
      !read_float32_array(env, args[2], fn, "dw", &dw) || !read_size(env, args[3], fn, "n", &n)) {
    return nullptr;
  }
  if (n == 0) return undefined_value(env);
  if (!check_elements(env, fn, "dy", dy, n) || !check_bytes(env, fn, "mask", mask, n) ||
      !check_elements(env, fn, "dw", dw, n) || !check_same_or_disjoint(env, fn, "dy", dy, "dw", dw, n) ||
      !check_mask_apart(env, fn, "mask", mask, "dw", dw, n)) {
    return nullptr;
  }
  qkd::fake_quant_backward(dy.data, mask.data, dw.data, n);
  return undefined_value(env);
}

// ---- Version 4: the profiler's kernels ----------------------------------------

// A typed array of one element type (data at its byteOffset, length in elements).
template <typename T>
struct TypedView {
  T* data = nullptr;
  int64_t length = 0;
};

template <typename T>
bool read_typed_array(napi_env env, napi_value value, const char* fn, const char* name, napi_typedarray_type want,
                      const char* type_name, TypedView<T>* out) {
  bool is_typed_array = false;
  napi_is_typedarray(env, value, &is_typed_array);
  if (!is_typed_array) return fail(env, fn, "argument %s must be a %s", name, type_name);
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
    return fail(env, fn, "could not read argument %s", name);
  }
  if (type != want) return fail(env, fn, "argument %s must be a %s", name, type_name);
  out->data = static_cast<T*>(data);
  out->length = static_cast<int64_t>(length);
  return true;
}

template <typename T>
bool check_typed_length(napi_env env, const char* fn, const char* name, const char* type_name,
                        const TypedView<T>& view, int64_t needed, bool overflowed) {
  if (overflowed) return fail(env, fn, "argument %s: the sizes overflow a 64-bit index", name);
  if (view.length < needed) {
    return fail(env, fn, "argument %s (%s) has %lld elements, needs at least %lld", name, type_name,
                static_cast<long long>(view.length), static_cast<long long>(needed));
  }
  return true;
}

// bf16Gemm(transA, M, N, K, A: Uint16Array, lda, B: Float32Array, ldb, C: Float32Array, ldc, accumulate)
napi_value Bf16Gemm(napi_env env, napi_callback_info info) {
  const char* fn = "bf16Gemm";
  napi_value args[11];
  if (!get_args(env, info, fn, 11, args)) return nullptr;
  qkd::Bf16GemmArgs g;
  TypedView<uint16_t> a;
  FloatView b, c;
  if (!read_flag(env, args[0], fn, "transA", &g.trans_a) || !read_size(env, args[1], fn, "M", &g.m) ||
      !read_size(env, args[2], fn, "N", &g.n) || !read_size(env, args[3], fn, "K", &g.k) ||
      !read_typed_array(env, args[4], fn, "A", napi_uint16_array, "Uint16Array", &a) ||
      !read_size(env, args[5], fn, "lda", &g.lda) || !read_float32_array(env, args[6], fn, "B", &b) ||
      !read_size(env, args[7], fn, "ldb", &g.ldb) || !read_float32_array(env, args[8], fn, "C", &c) ||
      !read_size(env, args[9], fn, "ldc", &g.ldc) || !read_flag(env, args[10], fn, "accumulate", &g.accumulate)) {
    return nullptr;
  }
  if (g.m == 0 || g.n == 0) return undefined_value(env);  // nothing is touched
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  int64_t needed = 0;
  if (!check_leading_dimension(env, fn, "ldc", g.ldc, g.n, "C (M×N)")) return nullptr;
  bool ok = extent(1, g.m, g.n, g.ldc, 0, &needed);
  if (!check_length(env, fn, "C", c, needed, !ok)) return nullptr;
  if (g.k > 0) {  // with K == 0 the call only zeroes C (or leaves it)
    if (!check_leading_dimension(env, fn, "lda", g.lda, a_cols, g.trans_a ? "A (K×M, transA)" : "A (M×K)") ||
        !check_leading_dimension(env, fn, "ldb", g.ldb, g.n, "B (K×N)")) {
      return nullptr;
    }
    ok = extent(1, a_rows, a_cols, g.lda, 0, &needed);
    if (!check_typed_length(env, fn, "A", "Uint16Array", a, needed, !ok)) return nullptr;
    ok = extent(1, g.k, g.n, g.ldb, 0, &needed);
    if (!check_length(env, fn, "B", b, needed, !ok)) return nullptr;
  }
  g.a = a.data;
  g.b = b.data;
  g.c = c.data;
  if (!qkd::bf16_gemm(g)) {
    fail(env, fn, "out of memory for the packing buffers");
    return nullptr;
  }
  return undefined_value(env);
}

// weightStats(w, rows, cols, bits, shift, rowMin, rowMax, totals) with w a
// Float32Array (bf16 false) or a Uint16Array of bf16 bits (bf16 true).
napi_value WeightStats(napi_env env, napi_callback_info info, bool bf16) {
  const char* fn = bf16 ? "weightStatsBf16" : "weightStats";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  qkd::WeightStatsArgs a;
  FloatView w32, row_min, row_max;
  TypedView<uint16_t> w16;
  TypedView<double> totals;
  int32_t bits = 0;
  int64_t count = 0;
  const bool read_w = bf16 ? read_typed_array(env, args[0], fn, "w", napi_uint16_array, "Uint16Array", &w16)
                           : read_float32_array(env, args[0], fn, "w", &w32);
  if (!read_w || !read_size(env, args[1], fn, "rows", &a.rows) || !read_size(env, args[2], fn, "cols", &a.cols) ||
      !read_int32(env, args[3], fn, "bits", &bits) || !read_number(env, args[4], fn, "shift", &a.shift) ||
      !read_float32_array(env, args[5], fn, "rowMin", &row_min) ||
      !read_float32_array(env, args[6], fn, "rowMax", &row_max) ||
      !read_typed_array(env, args[7], fn, "totals", napi_float64_array, "Float64Array", &totals) ||
      !multiply(env, fn, "w (rows×cols)", {a.rows, a.cols}, &count)) {
    return nullptr;
  }
  if (bits != 0 && (bits < 2 || bits > 8)) {
    fail(env, fn, "argument bits must be 0 (no quantization error) or an integer from 2 to 8, got %d", bits);
    return nullptr;
  }
  if (!std::isfinite(a.shift)) {
    fail(env, fn, "argument shift must be a finite number, got %g", a.shift);
    return nullptr;
  }
  const bool w_ok = bf16 ? check_typed_length(env, fn, "w", "Uint16Array", w16, count, false)
                         : check_elements(env, fn, "w", w32, count);
  if (!w_ok || !check_elements(env, fn, "rowMin", row_min, a.rows) ||
      !check_elements(env, fn, "rowMax", row_max, a.rows) ||
      !check_typed_length(env, fn, "totals", "Float64Array", totals, 6, false)) {
    return nullptr;
  }
  a.bits = bits;
  a.w32 = bf16 ? nullptr : w32.data;
  a.w16 = bf16 ? w16.data : nullptr;
  a.row_min = row_min.data;
  a.row_max = row_max.data;
  const qkd::WeightStatsTotals t = qkd::weight_stats(a);
  const double values[6] = {t.s1, t.s2, t.s3, t.s4, t.sum_squares, t.rtn_error};
  for (int i = 0; i < 6; ++i) totals.data[i] = values[i];
  return undefined_value(env);
}

napi_value WeightStatsF32(napi_env env, napi_callback_info info) { return WeightStats(env, info, false); }
napi_value WeightStatsBf16(napi_env env, napi_callback_info info) { return WeightStats(env, info, true); }

// rtnErrors(w, rows, cols, groupSize, symmetric, perTensor, bits: Int32Array, out: Float64Array): −1, a NaN index or −2;
// w a Float32Array (bf16 false) or a Uint16Array of bf16 bits (rtnErrorsBf16).
napi_value RtnErrors(napi_env env, napi_callback_info info, bool bf16) {
  const char* fn = bf16 ? "rtnErrorsBf16" : "rtnErrors";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  qkd::RtnErrorArgs a;
  FloatView w;
  TypedView<uint16_t> w16;
  Int32View bits;
  TypedView<double> out;
  int64_t count = 0;
  const bool read_w = bf16 ? read_typed_array(env, args[0], fn, "w", napi_uint16_array, "Uint16Array", &w16)
                           : read_float32_array(env, args[0], fn, "w", &w);
  if (!read_w || !read_size(env, args[1], fn, "rows", &a.rows) ||
      !read_size(env, args[2], fn, "cols", &a.cols) || !read_size(env, args[3], fn, "groupSize", &a.group_size) ||
      !read_flag(env, args[4], fn, "symmetric", &a.symmetric) || !read_flag(env, args[5], fn, "perTensor", &a.per_tensor) ||
      !read_int32_array(env, args[6], fn, "bits", &bits) ||
      !read_typed_array(env, args[7], fn, "out", napi_float64_array, "Float64Array", &out) ||
      !multiply(env, fn, "w (rows×cols)", {a.rows, a.cols}, &count)) {
    return nullptr;
  }
  if (bf16 ? !check_typed_length(env, fn, "w", "Uint16Array", w16, count, false) : !check_elements(env, fn, "w", w, count)) return nullptr;
  if (bits.length > 16) {
    fail(env, fn, "at most 16 bit widths per call, got %lld", static_cast<long long>(bits.length));
    return nullptr;
  }
  for (int64_t j = 0; j < bits.length; ++j) {
    if (bits.data[j] < 2 || bits.data[j] > 8) {
      fail(env, fn, "bits[%lld] must be an integer from 2 to 8, got %d", static_cast<long long>(j), bits.data[j]);
      return nullptr;
    }
  }
  if (!check_typed_length(env, fn, "out", "Float64Array", out, bits.length, false)) return nullptr;
  a.w = bf16 ? nullptr : w.data;
  a.w16 = bf16 ? w16.data : nullptr;
  a.bits = bits.data;
  a.count = static_cast<int>(bits.length);
  return number_value(env, static_cast<double>(qkd::rtn_errors(a, out.data)));
}

napi_value RtnErrorsF32(napi_env env, napi_callback_info info) { return RtnErrors(env, info, false); }
napi_value RtnErrorsBf16(napi_env env, napi_callback_info info) { return RtnErrors(env, info, true); }

// symmetricEigenvalues(a: Float64Array, n, count, out: Float64Array)
napi_value SymmetricEigenvalues(napi_env env, napi_callback_info info) {
  const char* fn = "symmetricEigenvalues";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  TypedView<double> a, out;
  int64_t n = 0, count = 0, elements = 0;
  if (!read_typed_array(env, args[0], fn, "a", napi_float64_array, "Float64Array", &a) ||
      !read_size(env, args[1], fn, "n", &n) || !read_size(env, args[2], fn, "count", &count) ||
      !read_typed_array(env, args[3], fn, "out", napi_float64_array, "Float64Array", &out) ||
      !multiply(env, fn, "a (n×n)", {n, n}, &elements)) {
    return nullptr;
  }
  if (count > n) {
    fail(env, fn, "argument count (%lld) must be at most n (%lld)", static_cast<long long>(count),
         static_cast<long long>(n));
    return nullptr;
  }
  if (!check_typed_length(env, fn, "a", "Float64Array", a, elements, false) ||
      !check_typed_length(env, fn, "out", "Float64Array", out, count, false)) {
    return nullptr;
  }
  if (!qkd::symmetric_eigenvalues(a.data, n, count, out.data)) {
    fail(env, fn, "no eigenvalues for a matrix that is not finite (or out of memory)");
    return nullptr;
  }
  return undefined_value(env);
}

// f32ToBf16(src: Float32Array, dst: Uint16Array, n)
napi_value F32ToBf16(napi_env env, napi_callback_info info) {
  const char* fn = "f32ToBf16";
  napi_value args[3];
  if (!get_args(env, info, fn, 3, args)) return nullptr;
  FloatView src;
  TypedView<uint16_t> dst;
  int64_t n = 0;
  if (!read_float32_array(env, args[0], fn, "src", &src) ||
      !read_typed_array(env, args[1], fn, "dst", napi_uint16_array, "Uint16Array", &dst) ||
      !read_size(env, args[2], fn, "n", &n) || !check_elements(env, fn, "src", src, n) ||
      !check_typed_length(env, fn, "dst", "Uint16Array", dst, n, false)) {
    return nullptr;
  }
  qkd::float_to_bf16(src.data, dst.data, n);
  return undefined_value(env);
}

bool read_tier(napi_env env, napi_value value, const char* fn, int* tier) {
  int64_t t = 0;
  if (!read_size(env, value, fn, "tier", &t)) return false;
  if (t != 8 && t != 12 && t != 16) return fail(env, fn, "argument tier must be 8, 12 or 16, got %lld", static_cast<long long>(t));
  *tier = static_cast<int>(t);
  return true;
}

// dbwaEncode(tier, src: Float32Array, storage: Uint8Array, seed: Uint32Array | null) → number
napi_value DbwaEncode(napi_env env, napi_callback_info info) {
  const char* fn = "dbwaEncode";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  int tier = 0;
  FloatView src;
  TypedView<uint8_t> storage;
  if (!read_tier(env, args[0], fn, &tier) || !read_float32_array(env, args[1], fn, "src", &src) ||
      !read_typed_array(env, args[2], fn, "storage", napi_uint8_array, "Uint8Array", &storage) ||
      !check_typed_length(env, fn, "storage", "Uint8Array", storage, qkd::dbwa_storage_bytes(tier, src.length), false)) {
    return nullptr;
  }
  napi_valuetype seed_type;
  napi_typeof(env, args[3], &seed_type);
  const uint32_t* seed = nullptr;
  if (seed_type != napi_null) {
    TypedView<uint32_t> words;
    if (!read_typed_array(env, args[3], fn, "seed", napi_uint32_array, "Uint32Array or null", &words) ||
        !check_typed_length(env, fn, "seed", "Uint32Array", words, 4, false)) {
      return nullptr;
    }
    if ((words.data[0] | words.data[1] | words.data[2] | words.data[3]) == 0) {
      fail(env, fn, "argument seed must not be all zero (xorshift128 would stay at zero)");
      return nullptr;
    }
    seed = words.data;
  }
  return number_value(env, static_cast<double>(qkd::dbwa_encode(tier, src.data, src.length, storage.data, seed)));
}

// dbwaDecode(tier, storage: Uint8Array, dst: Float32Array)
napi_value DbwaDecode(napi_env env, napi_callback_info info) {
  const char* fn = "dbwaDecode";
  napi_value args[3];
  if (!get_args(env, info, fn, 3, args)) return nullptr;
  int tier = 0;
  TypedView<uint8_t> storage;
  FloatView dst;
  if (!read_tier(env, args[0], fn, &tier) ||
      !read_typed_array(env, args[1], fn, "storage", napi_uint8_array, "Uint8Array", &storage) ||
      !read_float32_array(env, args[2], fn, "dst", &dst) ||
      !check_typed_length(env, fn, "storage", "Uint8Array", storage, qkd::dbwa_storage_bytes(tier, dst.length), false)) {
    return nullptr;
  }
  qkd::dbwa_decode(tier, storage.data, dst.data, dst.length);
  return undefined_value(env);
}

// The ggml type id (argument 0) and the element count: a type the codec knows, a whole number of blocks.
bool read_ggml_type(napi_env env, napi_value value, const char* fn, int64_t count, int* type, int64_t* bytes) {
  int64_t t = 0;
  if (!read_size(env, value, fn, "type", &t)) return false;
  const int64_t block = t <= 64 ? qkd::ggml_block_size(static_cast<int>(t)) : 0;
  if (block == 0) return fail(env, fn, "argument type: ggml type id %lld is not one of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K", static_cast<long long>(t));
  if (count % block != 0) {
    return fail(env, fn, "%lld elements is not a multiple of the block size %lld", static_cast<long long>(count),
                static_cast<long long>(block));
  }
  *type = static_cast<int>(t);
  *bytes = count / block * qkd::ggml_block_bytes(*type);
  return true;
}

// Two argument ranges of a and b bytes must not share memory (views of one ArrayBuffer may).
bool check_apart(napi_env env, const char* fn, const char* a_name, const void* a, int64_t a_bytes, const char* b_name,
                 const void* b, int64_t b_bytes) {
  if (a == nullptr || b == nullptr || a_bytes == 0 || b_bytes == 0) return true;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  if (a0 < b0 + static_cast<uintptr_t>(b_bytes) && b0 < a0 + static_cast<uintptr_t>(a_bytes)) {
    return fail(env, fn, "arguments %s and %s must not overlap", a_name, b_name);
  }
  return true;
}

bool check_exact_bytes(napi_env env, const char* fn, const char* name, const ByteView& view, int64_t needed) {
  if (view.length != needed) {
    return fail(env, fn, "argument %s (Uint8Array) has %lld bytes, expected exactly %lld", name,
                static_cast<long long>(view.length), static_cast<long long>(needed));
  }
  return true;
}

// ggmlEncode(type, src: Float32Array, dst: Uint8Array, importance: Float32Array | null)
napi_value GgmlEncode(napi_env env, napi_callback_info info) {
  const char* fn = "ggmlEncode";
  napi_value args[4];
  if (!get_args(env, info, fn, 4, args)) return nullptr;
  FloatView src, importance;
  ByteView dst;
  int type = 0;
  int64_t bytes = 0;
  if (!read_float32_array(env, args[1], fn, "src", &src) || !read_uint8_array(env, args[2], fn, "dst", &dst) ||
      !read_ggml_type(env, args[0], fn, src.length, &type, &bytes) || !check_exact_bytes(env, fn, "dst", dst, bytes)) {
    return nullptr;
  }
  napi_valuetype kind;
  napi_typeof(env, args[3], &kind);
  if (kind != napi_null) {
    if (!read_float32_array(env, args[3], fn, "importance", &importance)) return nullptr;
    const int64_t cols = importance.length;
    if (cols == 0 || cols % qkd::ggml_block_size(type) != 0 || src.length % cols != 0) {
      fail(env, fn, "argument importance has %lld values: it needs one per column of rows that are a whole number of "
           "%lld-blocks and divide the %lld elements", static_cast<long long>(cols),
           static_cast<long long>(qkd::ggml_block_size(type)), static_cast<long long>(src.length));
      return nullptr;
    }
    if (!check_apart(env, fn, "importance", importance.data, cols * 4, "dst", dst.data, dst.length)) return nullptr;
  }
  if (!check_apart(env, fn, "src", src.data, src.length * 4, "dst", dst.data, dst.length)) return nullptr;
  qkd::ggml_encode(type, src.data, src.length, dst.data, importance.data, importance.length);
  return undefined_value(env);
}

// ggmlDecode(type, src: Uint8Array, dst: Float32Array)
napi_value GgmlDecode(napi_env env, napi_callback_info info) {
  const char* fn = "ggmlDecode";
  napi_value args[3];
  if (!get_args(env, info, fn, 3, args)) return nullptr;
  ByteView src;
  FloatView dst;
  int type = 0;
  int64_t bytes = 0;
  if (!read_uint8_array(env, args[1], fn, "src", &src) || !read_float32_array(env, args[2], fn, "dst", &dst) ||
      !read_ggml_type(env, args[0], fn, dst.length, &type, &bytes) || !check_exact_bytes(env, fn, "src", src, bytes) ||
      !check_apart(env, fn, "src", src.data, src.length, "dst", dst.data, dst.length * 4)) {
    return nullptr;
  }
  qkd::ggml_decode(type, src.data, dst.length, dst.data);
  return undefined_value(env);
}

// ggmlRoundTrip(type, src: Float32Array, dst: Float32Array)
napi_value GgmlRoundTrip(napi_env env, napi_callback_info info) {
  const char* fn = "ggmlRoundTrip";
  napi_value args[3];
  if (!get_args(env, info, fn, 3, args)) return nullptr;
  FloatView src, dst;
  int type = 0;
  int64_t bytes = 0;
  if (!read_float32_array(env, args[1], fn, "src", &src) || !read_float32_array(env, args[2], fn, "dst", &dst) ||
      !read_ggml_type(env, args[0], fn, src.length, &type, &bytes)) {
    return nullptr;
  }
  if (dst.length != src.length) {
    fail(env, fn, "argument dst has %lld elements, expected %lld (as src)", static_cast<long long>(dst.length),
         static_cast<long long>(src.length));
    return nullptr;
  }
  if (!check_overlap(env, fn, "src", src, src.length, "dst", dst, dst.length, true, "")) return nullptr;
  qkd::ggml_round_trip(type, src.data, src.length, dst.data);
  return undefined_value(env);
}

// ---- The state-space mixer (kernels/ssm.h) ---------------------------------------

// A sized view to check: name, view, elements needed; optional views with data == nullptr are skipped.
struct Needed {
  const char* name;
  FloatView* view;
  int64_t count;
  bool optional;
};

// Reads the Float32Array arguments args[0..n) into `views` (optional ones may be EMPTY), checks their
// lengths, and that every written view (written[i]) shares no memory with any other view.
bool read_views(napi_env env, const char* fn, napi_value* args, std::initializer_list<Needed> views,
                std::initializer_list<bool> written) {
  int i = 0;
  for (const Needed& v : views) {
    if (v.optional ? !read_optional_float32_array(env, args[i], fn, v.name, v.count, v.view)
                   : (!read_float32_array(env, args[i], fn, v.name, v.view) || !check_elements(env, fn, v.name, *v.view, v.count))) {
      return false;
    }
    i++;
  }
  const Needed* all = views.begin();
  const bool* out = written.begin();
  const int n = static_cast<int>(views.size());
  for (int a = 0; a < n; a++) {
    if (!out[a]) continue;
    for (int b = 0; b < n; b++) {
      if (b == a) continue;
      if (!check_overlap(env, fn, all[a].name, *all[a].view, all[a].count, all[b].name, *all[b].view, all[b].count, false, "")) return false;
    }
  }
  return true;
}

bool read_scan_dims(napi_env env, const char* fn, napi_value* args, qkd::ScanDims* d, int64_t* xs, int64_t* bs,
                    int64_t* ls, int64_t* ss) {
  if (!read_size(env, args[0], fn, "B", &d->B) || !read_size(env, args[1], fn, "T", &d->T) ||
      !read_size(env, args[2], fn, "H", &d->H) || !read_size(env, args[3], fn, "P", &d->P) ||
      !read_size(env, args[4], fn, "N", &d->N) || !read_size(env, args[5], fn, "L", &d->L)) {
    return false;
  }
  if (d->L < 1) return fail(env, fn, "argument L must be at least 1");
  const int64_t chunks = (d->T + d->L - 1) / d->L;
  return multiply(env, fn, "x (B×T×H×P)", {d->B, d->T, d->H, d->P}, xs) && multiply(env, fn, "b (B×T×H×N)", {d->B, d->T, d->H, d->N}, bs) &&
         multiply(env, fn, "logit (B×T×H)", {d->B, d->T, d->H}, ls) && multiply(env, fn, "states", {d->B, d->H, chunks, d->N, d->P}, ss);
}

// ssmScanForward(x, b, c, logit, y, states, B, T, H, P, N, L)
napi_value SsmScanForward(napi_env env, napi_callback_info info) {
  const char* fn = "ssmScanForward";
  napi_value args[12];
  if (!get_args(env, info, fn, 12, args)) return nullptr;
  qkd::ScanDims d{};
  int64_t xs = 0, bs = 0, ls = 0, ss = 0;
  FloatView x, b, c, logit, y, states;
  if (!read_scan_dims(env, fn, args + 6, &d, &xs, &bs, &ls, &ss) ||
      !read_views(env, fn, args, {{"x", &x, xs, false}, {"b", &b, bs, false}, {"c", &c, bs, false}, {"logit", &logit, ls, false}, {"y", &y, xs, false}, {"states", &states, ss, false}},
                  {false, false, false, false, true, true})) {
    return nullptr;
  }
  qkd::ssm_scan_forward(x.data, b.data, c.data, logit.data, y.data, states.data, d);
  return undefined_value(env);
}

// ssmScanBackward(x, b, c, logit, states, dy, dx|EMPTY, db|EMPTY, dc|EMPTY, dlogit|EMPTY, B, T, H, P, N, L)
napi_value SsmScanBackward(napi_env env, napi_callback_info info) {
  const char* fn = "ssmScanBackward";
  napi_value args[16];
  if (!get_args(env, info, fn, 16, args)) return nullptr;
  qkd::ScanDims d{};
  int64_t xs = 0, bs = 0, ls = 0, ss = 0;
  FloatView x, b, c, logit, states, dy, dx, db, dc, dlogit;
  if (!read_scan_dims(env, fn, args + 10, &d, &xs, &bs, &ls, &ss) ||
      !read_views(env, fn, args,
                  {{"x", &x, xs, false}, {"b", &b, bs, false}, {"c", &c, bs, false}, {"logit", &logit, ls, false}, {"states", &states, ss, false}, {"dy", &dy, xs, false},
                   {"dx", &dx, xs, true}, {"db", &db, bs, true}, {"dc", &dc, bs, true}, {"dlogit", &dlogit, ls, true}},
                  {false, false, false, false, false, false, true, true, true, true})) {
    return nullptr;
  }
  qkd::ssm_scan_backward(x.data, b.data, c.data, logit.data, states.data, dy.data, dx.data, db.data, dc.data, dlogit.data, d);
  return undefined_value(env);
}

bool read_matrix_dims(napi_env env, const char* fn, napi_value* args, int64_t* B, int64_t* T, int64_t* H, int64_t* N,
                      int64_t* bs, int64_t* ls, int64_t* ms) {
  return read_size(env, args[0], fn, "B", B) && read_size(env, args[1], fn, "T", T) && read_size(env, args[2], fn, "H", H) &&
         read_size(env, args[3], fn, "N", N) && multiply(env, fn, "b (B×T×H×N)", {*B, *T, *H, *N}, bs) &&
         multiply(env, fn, "logit (B×T×H)", {*B, *T, *H}, ls) && multiply(env, fn, "m (B×H×T×T)", {*B, *H, *T, *T}, ms);
}

// ssmMatrixForward(b, c, logit, m, B, T, H, N)
napi_value SsmMatrixForward(napi_env env, napi_callback_info info) {
  const char* fn = "ssmMatrixForward";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  int64_t B = 0, T = 0, H = 0, N = 0, bs = 0, ls = 0, ms = 0;
  FloatView b, c, logit, m;
  if (!read_matrix_dims(env, fn, args + 4, &B, &T, &H, &N, &bs, &ls, &ms) ||
      !read_views(env, fn, args, {{"b", &b, bs, false}, {"c", &c, bs, false}, {"logit", &logit, ls, false}, {"m", &m, ms, false}}, {false, false, false, true})) {
    return nullptr;
  }
  qkd::ssm_matrix_forward(b.data, c.data, logit.data, m.data, B, T, H, N);
  return undefined_value(env);
}

// ssmMatrixBackward(b, c, logit, m, dm, db|EMPTY, dc|EMPTY, dlogit|EMPTY, B, T, H, N)
napi_value SsmMatrixBackward(napi_env env, napi_callback_info info) {
  const char* fn = "ssmMatrixBackward";
  napi_value args[12];
  if (!get_args(env, info, fn, 12, args)) return nullptr;
  int64_t B = 0, T = 0, H = 0, N = 0, bs = 0, ls = 0, ms = 0;
  FloatView b, c, logit, m, dm, db, dc, dlogit;
  if (!read_matrix_dims(env, fn, args + 8, &B, &T, &H, &N, &bs, &ls, &ms) ||
      !read_views(env, fn, args,
                  {{"b", &b, bs, false}, {"c", &c, bs, false}, {"logit", &logit, ls, false}, {"m", &m, ms, false}, {"dm", &dm, ms, false},
                   {"db", &db, bs, true}, {"dc", &dc, bs, true}, {"dlogit", &dlogit, ls, true}},
                  {false, false, false, false, false, true, true, true})) {
    return nullptr;
  }
  qkd::ssm_matrix_backward(b.data, c.data, logit.data, m.data, dm.data, db.data, dc.data, dlogit.data, B, T, H, N);
  return undefined_value(env);
}

bool read_conv_dims(napi_env env, const char* fn, napi_value* args, int64_t* B, int64_t* T, int64_t* C, int64_t* K,
                    int64_t* xs, int64_t* ws) {
  return read_size(env, args[0], fn, "B", B) && read_size(env, args[1], fn, "T", T) && read_size(env, args[2], fn, "C", C) &&
         read_size(env, args[3], fn, "K", K) && multiply(env, fn, "x (B×T×C)", {*B, *T, *C}, xs) && multiply(env, fn, "w (C×K)", {*C, *K}, ws);
}

// causalConvForward(x, w, bias|EMPTY, y, B, T, C, K)
napi_value CausalConvForward(napi_env env, napi_callback_info info) {
  const char* fn = "causalConvForward";
  napi_value args[8];
  if (!get_args(env, info, fn, 8, args)) return nullptr;
  int64_t B = 0, T = 0, C = 0, K = 0, xs = 0, ws = 0;
  FloatView x, w, bias, y;
  if (!read_conv_dims(env, fn, args + 4, &B, &T, &C, &K, &xs, &ws) ||
      !read_views(env, fn, args, {{"x", &x, xs, false}, {"w", &w, ws, false}, {"bias", &bias, C, true}, {"y", &y, xs, false}}, {false, false, false, true})) {
    return nullptr;
  }
  qkd::causal_conv_forward(x.data, w.data, bias.data, y.data, B, T, C, K);
  return undefined_value(env);
}

// causalConvBackward(x, w, dy, dx|EMPTY, dw|EMPTY, dbias|EMPTY, B, T, C, K)
napi_value CausalConvBackward(napi_env env, napi_callback_info info) {
  const char* fn = "causalConvBackward";
  napi_value args[10];
  if (!get_args(env, info, fn, 10, args)) return nullptr;
  int64_t B = 0, T = 0, C = 0, K = 0, xs = 0, ws = 0;
  FloatView x, w, dy, dx, dw, dbias;
  if (!read_conv_dims(env, fn, args + 6, &B, &T, &C, &K, &xs, &ws) ||
      !read_views(env, fn, args,
                  {{"x", &x, xs, false}, {"w", &w, ws, false}, {"dy", &dy, xs, false}, {"dx", &dx, xs, true}, {"dw", &dw, ws, true}, {"dbias", &dbias, C, true}},
                  {false, false, false, true, true, true})) {
    return nullptr;
  }
  qkd::causal_conv_backward(x.data, w.data, dy.data, dx.data, dw.data, dbias.data, B, T, C, K);
  return undefined_value(env);
}

}  // namespace

NAPI_MODULE_INIT() {
  const napi_property_descriptor properties[] = {
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"sgemm", nullptr, Sgemm, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxForward", nullptr, SoftmaxForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"softmaxBackward", nullptr, SoftmaxBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"rmsnormForward", nullptr, RmsnormForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"rmsnormBackward", nullptr, RmsnormBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"swigluForward", nullptr, SwigluForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"swigluBackward", nullptr, SwigluBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"rope", nullptr, Rope, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"adamw", nullptr, Adamw, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"crossEntropyForward", nullptr, CrossEntropyForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"crossEntropyBackward", nullptr, CrossEntropyBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"klForward", nullptr, KlForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"klBackward", nullptr, KlBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"causalSoftmaxForward", nullptr, CausalSoftmaxForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"causalSoftmaxBackward", nullptr, CausalSoftmaxBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"addInto", nullptr, AddInto, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"transpose", nullptr, Transpose, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"add", nullptr, Add, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"fakeQuantForward", nullptr, FakeQuantForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"fakeQuantBackward", nullptr, FakeQuantBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"bf16Gemm", nullptr, Bf16Gemm, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"weightStats", nullptr, WeightStatsF32, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"rtnErrors", nullptr, RtnErrorsF32, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"rtnErrorsBf16", nullptr, RtnErrorsBf16, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"weightStatsBf16", nullptr, WeightStatsBf16, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"symmetricEigenvalues", nullptr, SymmetricEigenvalues, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"f32ToBf16", nullptr, F32ToBf16, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"dbwaEncode", nullptr, DbwaEncode, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"dbwaDecode", nullptr, DbwaDecode, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ggmlEncode", nullptr, GgmlEncode, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ggmlDecode", nullptr, GgmlDecode, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ggmlRoundTrip", nullptr, GgmlRoundTrip, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ssmScanForward", nullptr, SsmScanForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ssmScanBackward", nullptr, SsmScanBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ssmMatrixForward", nullptr, SsmMatrixForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ssmMatrixBackward", nullptr, SsmMatrixBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"causalConvForward", nullptr, CausalConvForward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"causalConvBackward", nullptr, CausalConvBackward, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}

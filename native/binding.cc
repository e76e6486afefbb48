// N-API entry points of qkd_native. This file only marshals: the kernels'
// one declaration (native/kernels.mjs) generates, in generated/kernels.inc,
// each entry point's argument count, the reading and type checks of its
// arguments into a <Name>Args struct, and the registration table. What is
// written here is each kernel's <Name>Body: the checks that need the sizes
// (every buffer long enough for the elements the call will touch, allowed
// and forbidden overlaps, value ranges), then the call into kernels/, which
// know nothing of N-API. A body that no longer matches its declaration does
// not compile. native/README.md lists the kernels with their arguments.
//
// Every TypedArray is used in place (zero copy) from its byteOffset, so the
// TypeScript side can pass subarrays of one arena. EMPTY is a zero-length
// Float32Array, accepted where a gradient (or an optional output) may be
// skipped. Flags are booleans or 0/1.
#include <node_api.h>

#include <cmath>
#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <vector>
#if defined(__GLIBC__)  // set by the C++ headers above on glibc systems
#include <malloc.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "kernels/attention.h"
#include "kernels/cpu.h"
#include "kernels/dbwa_codec.h"
#include "kernels/fused.h"
#include "kernels/gemm_bf16.h"
#include "kernels/gemm_int8.h"
#include "kernels/ggml_codec.h"
#include "kernels/normal_fill.h"
#include "kernels/sgemm.h"
#include "kernels/softmax.h"
#include "kernels/ssm.h"
#include "kernels/sym_eig.h"
#include "kernels/thread_pool.h"
#include "kernels/weight_stats.h"
#include "kernels/background.h"
#include "kernels/file_read.h"
#include "kernels/factor.h"
#include "kernels/rtn_error.h"
#include "kernels/vector_ops.h"

namespace {

// 1–6 added kernels group by group; 7: every kernel generated from native/kernels.mjs.
constexpr int kInfoVersion = 9;
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
  bool given = false;  // false for a null argument (kind f32|null)
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
  out->given = true;
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

// A typed array of one element type (data at its byteOffset, length in elements).
template <typename T>
struct TypedView {
  T* data = nullptr;
  int64_t length = 0;
};

template <typename T>
bool read_typed_array(napi_env env, napi_value value, const char* fn, const char* name, napi_typedarray_type want,
                      const char* type_name, TypedView<T>* out) {
  const char* article = type_name[0] == 'I' ? "an" : "a";  // an Int32Array, a Uint8Array
  bool is_typed_array = false;
  napi_is_typedarray(env, value, &is_typed_array);
  if (!is_typed_array) return fail(env, fn, "argument %s must be %s %s", name, article, type_name);
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
    return fail(env, fn, "could not read argument %s", name);
  }
  if (type != want) return fail(env, fn, "argument %s must be %s %s", name, article, type_name);
  out->data = static_cast<T*>(data);
  out->length = static_cast<int64_t>(length);
  return true;
}

using Int32View = TypedView<const int32_t>;  // kind i32
using ByteView = TypedView<uint8_t>;         // kind u8


// null, or a Float32Array (an optional input given as null: data nullptr, length 0).
bool read_nullable_float32_array(napi_env env, napi_value value, const char* fn, const char* name, FloatView* out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return fail(env, fn, "could not read argument %s", name);
  if (type == napi_null) {
    *out = FloatView{};
    return true;
  }
  return read_float32_array(env, value, fn, name, out);
}

// null, or a typed array of one element type.
template <typename T>
bool read_nullable_typed_array(napi_env env, napi_value value, const char* fn, const char* name,
                               napi_typedarray_type want, const char* type_name, TypedView<T>* out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return fail(env, fn, "could not read argument %s", name);
  if (type == napi_null) {
    *out = TypedView<T>{};
    return true;
  }
  return read_typed_array(env, value, fn, name, want, type_name, out);
}

// The generated entry points: argument reading into <Name>Args, and register_kernels().
#include "generated/kernels.inc"

// ---- Checks the bodies share ---------------------------------------------------

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

bool check_elements(napi_env env, const char* fn, const char* name, const FloatView& view, int64_t needed) {
  return check_length(env, fn, name, view, needed, false);
}

// An optional output read as a Float32Array: EMPTY (zero length) or nothing to
// touch makes `data` nullptr (skip it); otherwise it must hold `needed` elements.
bool optional_view(napi_env env, const char* fn, const char* name, int64_t needed, FloatView* view) {
  if (view->length == 0 || needed == 0) {
    view->data = nullptr;
    return true;
  }
  return check_length(env, fn, name, *view, needed, false);
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

// Checks that each of the `count` views holds rows*cols elements.
bool check_rows_and_cols(napi_env env, const char* fn, const char* const* names, const FloatView* views, int count,
                         int64_t rows, int64_t cols) {
  int64_t needed = 0;
  const bool overflowed = __builtin_mul_overflow(rows, cols, &needed);
  for (int i = 0; i < count; ++i) {
    if (!check_length(env, fn, names[i], views[i], needed, overflowed)) return false;
  }
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

bool check_bytes(napi_env env, const char* fn, const char* name, const ByteView& view, int64_t needed) {
  if (view.length < needed) {
    return fail(env, fn, "argument %s (Uint8Array) has %lld elements, needs at least %lld", name,
                static_cast<long long>(view.length), static_cast<long long>(needed));
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

napi_value undefined_value(napi_env env) {
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
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

// ---- The addon ------------------------------------------------------------------

napi_value InfoBody(napi_env env, const char* /*fn*/, InfoArgs& /*args*/) {
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

napi_value AdviseHugePagesBody(napi_env env, const char* /*fn*/, AdviseHugePagesArgs& args) {
#if defined(__linux__)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(args.buffer.data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(args.buffer.data) + static_cast<uintptr_t>(args.buffer.length)) & ~(kHuge - 1);
  if (end > begin && madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE) == 0) {
    return number_value(env, static_cast<double>(end - begin));
  }
#endif
  return number_value(env, 0);
}

// The mapping behind a mapFile buffer: what munmap needs when the buffer is collected.
struct FileMapping {
  void* base;
  size_t length;
};

// V8 is told of each mapping's size, so that its collector weighs the buffers. Node runs their finalizers
// (and so munmap) only between event-loop turns, so a long synchronous pass drops the pages it is done with
// by releaseMapped.
napi_value MapFileBody(napi_env env, const char* fn, MapFileArgs& args) {
  napi_value result;
  napi_get_null(env, &result);
#if defined(__unix__) || defined(__APPLE__)
  if (args.fd < 0) {
    fail(env, fn, "fd (%d) must be an open file descriptor", args.fd);
    return nullptr;
  }
  const long page = sysconf(_SC_PAGESIZE);
  if (args.length == 0 || page <= 0) return result;
  // mmap takes a page-aligned offset: map from the page holding `offset` and hand out the bytes from there.
  const int64_t lead = args.offset % page;
  const size_t length = static_cast<size_t>(args.length + lead);
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, args.fd, static_cast<off_t>(args.offset - lead));
  if (base == MAP_FAILED) return result;
  auto* mapping = new FileMapping{base, length};
  napi_value buffer;
  const napi_status status = napi_create_external_arraybuffer(
      env, static_cast<uint8_t*>(base) + lead, static_cast<size_t>(args.length),
      [](napi_env finalizing, void*, void* hint) {
        auto* m = static_cast<FileMapping*>(hint);
        munmap(m->base, m->length);
        int64_t ignored;
        napi_adjust_external_memory(finalizing, -static_cast<int64_t>(m->length), &ignored);
        delete m;
      },
      mapping, &buffer);
  if (status != napi_ok) {
    // Runtimes that refuse external buffers (a V8 sandbox): the caller reads the file instead.
    munmap(base, length);
    delete mapping;
    bool pending = false;
    napi_value ignored;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &ignored);
    return result;
  }
  int64_t ignored;
  napi_adjust_external_memory(env, static_cast<int64_t>(length), &ignored);
  return buffer;
#else
  (void)fn;
  (void)args;
  return result;
#endif
}

napi_value ReleaseMappedBody(napi_env env, const char* /*fn*/, ReleaseMappedArgs& args) {
#if defined(__unix__) || defined(__APPLE__)
  const long page = sysconf(_SC_PAGESIZE);
  if (page > 0 && args.buffer.length > 0) {
    const uintptr_t mask = static_cast<uintptr_t>(page) - 1;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(args.buffer.data) & ~mask;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(args.buffer.data) + static_cast<uintptr_t>(args.buffer.length) + mask) & ~mask;
    // The whole pages at both ends belong to the same mapping: mapFile maps from the page holding the first
    // byte, and mmap maps whole pages.
    if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) == 0) return number_value(env, static_cast<double>(end - begin));
  }
#else
  (void)args;
#endif
  return number_value(env, 0);
}

napi_value AdviseWillNeedBody(napi_env env, const char* fn, AdviseWillNeedArgs& args) {
  if (args.fd < 0) {
    fail(env, fn, "fd (%d) must be an open file descriptor", args.fd);
    return nullptr;
  }
#if defined(__linux__)
  if (args.length > 0 && posix_fadvise(args.fd, static_cast<off_t>(args.offset), static_cast<off_t>(args.length), POSIX_FADV_WILLNEED) == 0) {
    return number_value(env, 1);
  }
#endif
  return number_value(env, 0);
}

napi_value ReadFileStartBody(napi_env env, const char* fn, ReadFileStartArgs& args) {
  if (args.fd < 0) {
    fail(env, fn, "fd (%d) must be an open file descriptor", args.fd);
    return nullptr;
  }
  if (args.buffer.length == 0) return number_value(env, 0);
  return number_value(env, static_cast<double>(qkd::file_read_start(args.fd, args.offset, args.buffer.length, args.buffer.data)));
}

#if defined(__unix__) || defined(__APPLE__)
namespace {
// What the SIGINT handler writes: set before the handler is installed, read only by it.
char g_sigint_message[256];
size_t g_sigint_length = 0;

// The file the handler deletes (sigintRemoves): two buffers, the one in use named by g_removal (−1: none).
// A new path goes into the other buffer before g_removal switches to it, so a handler running on another
// thread meanwhile reads a whole path.
constexpr size_t kRemovalBytes = 4096;
char g_removal_paths[2][kRemovalBytes];
std::atomic<int> g_removal{-1};

void exit_on_sigint(int /*signal*/) {
  // write, unlink and _exit are async-signal-safe (and so is a lock-free atomic load); the pool's threads end
  // with the process.
  const int slot = g_removal.load(std::memory_order_acquire);
  if (slot >= 0) unlink(g_removal_paths[slot]);
  if (g_sigint_length > 0) {
    const ssize_t written = write(2, g_sigint_message, g_sigint_length);
    (void)written;
  }
  _exit(130);
}
}  // namespace
#endif

napi_value ExitOnSigintBody(napi_env env, const char* /*fn*/, ExitOnSigintArgs& args) {
#if defined(__unix__) || defined(__APPLE__)
  const size_t length = std::min<size_t>(static_cast<size_t>(args.message.length), sizeof g_sigint_message - 1);
  std::copy(args.message.data, args.message.data + length, g_sigint_message);
  g_sigint_length = length;
  struct sigaction action = {};
  action.sa_handler = exit_on_sigint;
  sigemptyset(&action.sa_mask);
  return number_value(env, sigaction(SIGINT, &action, nullptr) == 0 ? 1 : 0);
#else
  return number_value(env, 0);
#endif
}

napi_value SigintRemovesBody(napi_env env, const char* /*fn*/, SigintRemovesArgs& args) {
#if defined(__unix__) || defined(__APPLE__)
  const size_t length = static_cast<size_t>(args.path.length);
  if (length == 0) {
    g_removal.store(-1, std::memory_order_release);
    return number_value(env, 1);
  }
  if (length >= kRemovalBytes) return number_value(env, 0);
  const int next = g_removal.load(std::memory_order_relaxed) == 0 ? 1 : 0;
  std::copy(args.path.data, args.path.data + length, g_removal_paths[next]);
  g_removal_paths[next][length] = '\0';
  g_removal.store(next, std::memory_order_release);
  return number_value(env, 1);
#else
  return number_value(env, 0);
#endif
}

napi_value RetainFreedMemoryBody(napi_env env, const char* fn, RetainFreedMemoryArgs& args) {
  constexpr int64_t kIntMax = 2147483647;
  if (args.mappedBlocks > kIntMax || args.trimThreshold > kIntMax) {
    fail(env, fn, "mappedBlocks (%lld) and trimThreshold (%lld) must be at most 2^31 - 1",
         static_cast<long long>(args.mappedBlocks), static_cast<long long>(args.trimThreshold));
    return nullptr;
  }
#if defined(__GLIBC__)
  // With no block mapped on its own, a freed block of any size goes back to the heap and the next allocation
  // reuses its pages; glibc still maps memory when the heap cannot grow, and threads' arenas map their heaps.
  const bool ok = mallopt(M_MMAP_MAX, static_cast<int>(args.mappedBlocks)) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, static_cast<int>(args.trimThreshold)) == 1;
  return number_value(env, ok ? 1 : 0);
#else
  return number_value(env, 0);
#endif
}

// ---- Training ops -----------------------------------------------------------------

napi_value SgemmBody(napi_env env, const char* fn, SgemmArgs& args) {
  qkd::SgemmArgs g;
  g.batch = args.batch;
  g.trans_a = args.transA;
  g.trans_b = args.transB;
  g.m = args.M;
  g.n = args.N;
  g.k = args.K;
  g.lda = args.lda;
  g.ldb = args.ldb;
  g.ldc = args.ldc;
  g.stride_a = args.strideA;
  g.stride_b = args.strideB;
  g.stride_c = args.strideC;
  g.alpha = static_cast<float>(args.alpha);
  g.beta = static_cast<float>(args.beta);
  g.a = args.A.data;
  g.b = args.B.data;
  g.c = args.C.data;

  // Stored shapes: A is M×K (K×M if transposed), B is K×N (N×K if transposed).
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  if (g.batch == 0 || g.m == 0 || g.n == 0) return undefined_value(env);  // nothing is touched

  int64_t needed = 0;
  if (!check_leading_dimension(env, fn, "ldc", g.ldc, g.n, "C (M×N)")) return nullptr;
  bool ok = extent(g.batch, g.m, g.n, g.ldc, g.stride_c, &needed);
  if (!check_length(env, fn, "C", args.C, needed, !ok)) return nullptr;
  if (g.k > 0) {  // with K == 0 the call only scales C and never reads A or B
    if (!check_leading_dimension(env, fn, "lda", g.lda, a_cols, g.trans_a ? "A (K×M, transA)" : "A (M×K)") ||
        !check_leading_dimension(env, fn, "ldb", g.ldb, b_cols, g.trans_b ? "B (N×K, transB)" : "B (K×N)")) {
      return nullptr;
    }
    ok = extent(g.batch, a_rows, a_cols, g.lda, g.stride_a, &needed);
    if (!check_length(env, fn, "A", args.A, needed, !ok)) return nullptr;
    ok = extent(g.batch, b_rows, b_cols, g.ldb, g.stride_b, &needed);
    if (!check_length(env, fn, "B", args.B, needed, !ok)) return nullptr;
  }
  if (!qkd::sgemm(g)) {
    fail(env, fn, "out of memory for the packing buffers");
    return nullptr;
  }
  return undefined_value(env);
}

napi_value SoftmaxForwardBody(napi_env env, const char* fn, SoftmaxForwardArgs& args) {
  auto& [x, y, rows, cols] = args;
  const FloatView views[2] = {x, y};
  const char* const names[2] = {"x", "y"};
  if (!check_rows_and_cols(env, fn, names, views, 2, rows, cols) ||
      !check_same_or_disjoint(env, fn, "x", x, "y", y, rows * cols)) {
    return nullptr;
  }
  qkd::softmax_forward(x.data, y.data, rows, cols);
  return undefined_value(env);
}

napi_value SoftmaxBackwardBody(napi_env env, const char* fn, SoftmaxBackwardArgs& args) {
  auto& [y, dy, dx, rows, cols] = args;
  const FloatView views[3] = {y, dy, dx};
  const char* const names[3] = {"y", "dy", "dx"};
  if (!check_rows_and_cols(env, fn, names, views, 3, rows, cols) ||
      !check_same_or_disjoint(env, fn, "y", y, "dx", dx, rows * cols) ||
      !check_same_or_disjoint(env, fn, "dy", dy, "dx", dx, rows * cols)) {
    return nullptr;
  }
  qkd::softmax_backward(y.data, dy.data, dx.data, rows, cols);
  return undefined_value(env);
}

// BH·T·S of a causal softmax in `total`, and in `kept` the elements up to the
// last kept column of the last row (what x, y or dy are read up to).
bool causal_sizes(napi_env env, const char* fn, int64_t bh, int64_t t, int64_t s, int64_t offset, int64_t* total,
                  int64_t* kept) {
  if (!multiply(env, fn, "BH×T×S", {bh, t, s}, total)) return false;
  *kept = 0;
  if (*total > 0) {
    const int64_t last_valid = offset + t < s ? offset + t : s;
    *kept = *total - s + last_valid;
  }
  return true;
}

napi_value CausalSoftmaxForwardBody(napi_env env, const char* fn, CausalSoftmaxForwardArgs& args) {
  auto& [x, y, bh, t, s, offset] = args;
  int64_t total = 0, kept = 0;
  if (!causal_sizes(env, fn, bh, t, s, offset, &total, &kept) || !check_elements(env, fn, "x", x, kept) ||
      !check_elements(env, fn, "y", y, total) || !check_overlap(env, fn, "x", x, kept, "y", y, total, true, "")) {
    return nullptr;
  }
  qkd::causal_softmax_forward(x.data, y.data, bh, t, s, offset);
  return undefined_value(env);
}

napi_value CausalSoftmaxBackwardBody(napi_env env, const char* fn, CausalSoftmaxBackwardArgs& args) {
  auto& [y, dy, dx, bh, t, s, offset, accumulate] = args;
  int64_t total = 0, kept = 0;
  if (!causal_sizes(env, fn, bh, t, s, offset, &total, &kept)) return nullptr;
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

// rows × cols of an RMSNorm in `total`, and a usable eps.
bool norm_sizes(napi_env env, const char* fn, int64_t rows, int64_t cols, double eps, int64_t* total) {
  if (!multiply(env, fn, "x (rows×cols)", {rows, cols}, total)) return false;
  if (!(eps >= 0.0 && std::isfinite(eps))) return fail(env, fn, "argument eps must be a finite number >= 0");
  return true;
}

napi_value RmsnormForwardBody(napi_env env, const char* fn, RmsnormForwardArgs& args) {
  auto& [x, w, y, rstd, rows, cols, eps] = args;
  int64_t total = 0;
  if (!norm_sizes(env, fn, rows, cols, eps, &total)) return nullptr;
  if (total == 0) return undefined_value(env);  // nothing is touched
  if (!check_elements(env, fn, "x", x, total) || !check_elements(env, fn, "w", w, cols) ||
      !check_elements(env, fn, "y", y, total) || !check_elements(env, fn, "rstd", rstd, rows) ||
      !check_same_or_disjoint(env, fn, "x", x, "y", y, total)) {
    return nullptr;
  }
  qkd::rmsnorm_forward(x.data, w.data, y.data, rstd.data, rows, cols, static_cast<float>(eps));
  return undefined_value(env);
}

napi_value AddRmsnormForwardBody(napi_env env, const char* fn, AddRmsnormForwardArgs& args) {
  auto& [x, delta, s, w, y, rstd, rows, cols, eps] = args;
  int64_t total = 0;
  if (!norm_sizes(env, fn, rows, cols, eps, &total)) return nullptr;
  if (total == 0) return undefined_value(env);  // nothing is touched
  if (!check_elements(env, fn, "x", x, total) || !check_elements(env, fn, "delta", delta, total) ||
      !check_elements(env, fn, "s", s, total) || !check_elements(env, fn, "w", w, cols) ||
      !check_elements(env, fn, "y", y, total) || !check_elements(env, fn, "rstd", rstd, rows) ||
      !check_same_or_disjoint(env, fn, "x", x, "s", s, total) || !check_same_or_disjoint(env, fn, "delta", delta, "s", s, total) ||
      !check_disjoint(env, fn, "y", y, total, "x", x, total, "") || !check_disjoint(env, fn, "y", y, total, "delta", delta, total, "") ||
      !check_disjoint(env, fn, "y", y, total, "s", s, total, "")) {
    return nullptr;
  }
  qkd::add_rmsnorm_forward(x.data, delta.data, s.data, w.data, y.data, rstd.data, rows, cols, static_cast<float>(eps));
  return undefined_value(env);
}

napi_value RmsnormBackwardBody(napi_env env, const char* fn, RmsnormBackwardArgs& args) {
  auto& [x, w, rstd, dy, dx, dw, rows, cols] = args;
  int64_t total = 0;
  if (!multiply(env, fn, "x (rows×cols)", {rows, cols}, &total) || !optional_view(env, fn, "dx", total, &dx) ||
      !optional_view(env, fn, "dw", total == 0 ? 0 : cols, &dw)) {
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

napi_value SwigluForwardBody(napi_env env, const char* fn, SwigluForwardArgs& args) {
  auto& [gate, up, y, n] = args;
  if (!check_elements(env, fn, "gate", gate, n) || !check_elements(env, fn, "up", up, n) ||
      !check_elements(env, fn, "y", y, n) || !check_same_or_disjoint(env, fn, "gate", gate, "y", y, n) ||
      !check_same_or_disjoint(env, fn, "up", up, "y", y, n)) {
    return nullptr;
  }
  qkd::swiglu_forward(gate.data, up.data, y.data, n);
  return undefined_value(env);
}

napi_value SwigluBackwardBody(napi_env env, const char* fn, SwigluBackwardArgs& args) {
  auto& [gate, up, dy, dgate, dup, n] = args;
  if (!optional_view(env, fn, "dgate", n, &dgate) || !optional_view(env, fn, "dup", n, &dup)) return nullptr;
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

napi_value RopeBody(napi_env env, const char* fn, RopeArgs& args) {
  qkd::RopeArgs rope;
  rope.batch = args.B;
  rope.time = args.T;
  rope.heads = args.H;
  rope.dim = args.D;
  rope.accumulate = args.accumulate;
  int64_t total = 0, table = 0;
  if (!multiply(env, fn, "src (B×T×H×D)", {rope.batch, rope.time, rope.heads, rope.dim}, &total) ||
      !multiply(env, fn, "cos (T×D/2)", {rope.time, rope.dim / 2}, &table)) {
    return nullptr;
  }
  if (rope.dim % 2 != 0) {
    fail(env, fn, "argument D must be even, got %lld", static_cast<long long>(rope.dim));
    return nullptr;
  }
  if (args.style != 0.0 && args.style != 1.0) {
    fail(env, fn, "argument style must be 0 (half) or 1 (interleaved), got %g", args.style);
    return nullptr;
  }
  if (args.direction != 1.0 && args.direction != -1.0) {
    fail(env, fn, "argument direction must be 1 or -1, got %g", args.direction);
    return nullptr;
  }
  if (total == 0) return undefined_value(env);
  if (!check_elements(env, fn, "src", args.src, total) || !check_elements(env, fn, "dst", args.dst, total) ||
      !check_elements(env, fn, "cos", args.cos, table) || !check_elements(env, fn, "sin", args.sin, table)) {
    return nullptr;
  }
  if (!check_overlap(env, fn, "src", args.src, total, "dst", args.dst, total, !rope.accumulate, " when accumulate is set")) {
    return nullptr;
  }
  rope.src = args.src.data;
  rope.dst = args.dst.data;
  rope.cos = args.cos.data;
  rope.sin = args.sin.data;
  rope.interleaved = args.style == 1.0;
  rope.direction = static_cast<float>(args.direction);
  qkd::rope(rope);
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

napi_value CrossEntropyForwardBody(napi_env env, const char* fn, CrossEntropyForwardArgs& args) {
  auto& [logits, targets, lse, rows, vocab, ignore_index] = args;
  int64_t last = -1, used = 0;
  if (!multiply(env, fn, "logits (rows×V)", {rows, vocab}, &used) ||
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

napi_value CrossEntropyBackwardBody(napi_env env, const char* fn, CrossEntropyBackwardArgs& args) {
  auto& [logits, targets, lse, dz, rows, vocab, ignore_index, scale] = args;
  int64_t last = -1, used = 0;
  if (!multiply(env, fn, "logits (rows×V)", {rows, vocab}, &used) ||
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

napi_value KlForwardBody(napi_env env, const char* fn, KlForwardArgs& args) {
  auto& [zT, zS, lseT, lseS, rowKl, rows, vocab, inv_tau] = args;
  int64_t total = 0;
  if (!multiply(env, fn, "zT (rows×V)", {rows, vocab}, &total)) return nullptr;
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

napi_value KlBackwardBody(napi_env env, const char* fn, KlBackwardArgs& args) {
  auto& [zT, zS, lseT, lseS, rowKl, dT, dS, rows, vocab, inv_tau, g] = args;
  int64_t total = 0;
  if (!multiply(env, fn, "zT (rows×V)", {rows, vocab}, &total) || !optional_view(env, fn, "dT", total, &dT) ||
      !optional_view(env, fn, "dS", total, &dS)) {
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

napi_value AddIntoBody(napi_env env, const char* fn, AddIntoArgs& args) {
  auto& [dst, src, n] = args;
  if (!check_elements(env, fn, "dst", dst, n) || !check_elements(env, fn, "src", src, n) ||
      !check_same_or_disjoint(env, fn, "dst", dst, "src", src, n)) {
    return nullptr;
  }
  qkd::add_into(dst.data, src.data, n);
  return undefined_value(env);
}

napi_value AddBody(napi_env env, const char* fn, AddArgs& args) {
  auto& [a, b, out, n] = args;
  if (!check_elements(env, fn, "a", a, n) || !check_elements(env, fn, "b", b, n) ||
      !check_elements(env, fn, "out", out, n) || !check_same_or_disjoint(env, fn, "a", a, "out", out, n) ||
      !check_same_or_disjoint(env, fn, "b", b, "out", out, n)) {
    return nullptr;
  }
  qkd::add(a.data, b.data, out.data, n);
  return undefined_value(env);
}

// ---- Optimizer ------------------------------------------------------------------

napi_value SumSquaresBody(napi_env env, const char* fn, SumSquaresArgs& args) {
  if (!check_elements(env, fn, "x", args.x, args.n)) return nullptr;
  return number_value(env, qkd::sum_squares(args.x.data, args.n));
}

napi_value ScaleInPlaceBody(napi_env env, const char* fn, ScaleInPlaceArgs& args) {
  if (!check_elements(env, fn, "x", args.x, args.n)) return nullptr;
  qkd::scale_in_place(args.x.data, args.n, args.s);
  return undefined_value(env);
}

napi_value AdamwBody(napi_env env, const char* fn, AdamwArgs& args) {
  qkd::AdamwArgs a;
  a.n = args.n;
  a.lr = args.lr;
  a.beta1 = args.beta1;
  a.beta2 = args.beta2;
  a.eps = args.eps;
  a.shrink = args.shrink;
  a.c1 = args.c1;
  a.c2 = args.c2;
  if (!check_elements(env, fn, "w", args.w, a.n) || !check_elements(env, fn, "g", args.g, a.n) ||
      !check_elements(env, fn, "m", args.m, a.n) || !check_elements(env, fn, "v", args.v, a.n) ||
      !check_disjoint(env, fn, "w", args.w, a.n, "m", args.m, a.n, "") ||
      !check_disjoint(env, fn, "w", args.w, a.n, "v", args.v, a.n, "") ||
      !check_disjoint(env, fn, "m", args.m, a.n, "v", args.v, a.n, "")) {
    return nullptr;
  }
  a.w = args.w.data;
  a.g = args.g.data;
  a.m = args.m.data;
  a.v = args.v.data;
  qkd::adamw(a);
  return undefined_value(env);
}

// ---- Fake quantization ------------------------------------------------------------

napi_value FakeQuantForwardBody(napi_env env, const char* fn, FakeQuantForwardArgs& args) {
  auto& [w, out, mask, rows, cols, bits, symmetric, granularity, group_size, clip_ratio] = args;
  int64_t total = 0;
  if (!multiply(env, fn, "w (rows×cols)", {rows, cols}, &total)) return nullptr;
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

napi_value FakeQuantBackwardBody(napi_env env, const char* fn, FakeQuantBackwardArgs& args) {
  auto& [dy, mask, dw, n] = args;
  if (n == 0) return undefined_value(env);
  if (!check_elements(env, fn, "dy", dy, n) || !check_bytes(env, fn, "mask", mask, n) ||
      !check_elements(env, fn, "dw", dw, n) || !check_same_or_disjoint(env, fn, "dy", dy, "dw", dw, n) ||
      !check_mask_apart(env, fn, "mask", mask, "dw", dw, n)) {
    return nullptr;
  }
  qkd::fake_quant_backward(dy.data, mask.data, dw.data, n);
  return undefined_value(env);
}

// ---- The data-free profiler -------------------------------------------------------

napi_value Bf16GemmBody(napi_env env, const char* fn, Bf16GemmArgs& args) {
  qkd::Bf16GemmArgs g;
  g.trans_a = args.transA;
  g.trans_b = args.transB;
  g.trans_c = args.transC;
  g.m = args.M;
  g.n = args.N;
  g.k = args.K;
  g.lda = args.lda;
  g.ldb = args.ldb;
  g.ldc = args.ldc;
  g.accumulate = args.accumulate;
  if (g.m == 0 || g.n == 0) return undefined_value(env);  // nothing is touched
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  const int64_t c_rows = g.trans_c ? g.n : g.m, c_cols = g.trans_c ? g.m : g.n;
  int64_t needed = 0;
  if (!check_leading_dimension(env, fn, "ldc", g.ldc, c_cols, g.trans_c ? "C (N×M, transC)" : "C (M×N)")) return nullptr;
  bool ok = extent(1, c_rows, c_cols, g.ldc, 0, &needed);
  if (!check_length(env, fn, "C", args.C, needed, !ok)) return nullptr;
  if (g.k > 0) {  // with K == 0 the call only zeroes C (or leaves it)
    if (!check_leading_dimension(env, fn, "lda", g.lda, a_cols, g.trans_a ? "A (K×M, transA)" : "A (M×K)") ||
        !check_leading_dimension(env, fn, "ldb", g.ldb, b_cols, g.trans_b ? "B (N×K, transB)" : "B (K×N)")) {
      return nullptr;
    }
    ok = extent(1, a_rows, a_cols, g.lda, 0, &needed);
    if (!check_typed_length(env, fn, "A", "Uint16Array", args.A, needed, !ok)) return nullptr;
    ok = extent(1, b_rows, b_cols, g.ldb, 0, &needed);
    if (!check_length(env, fn, "B", args.B, needed, !ok)) return nullptr;
  }
  g.a = args.A.data;
  g.b = args.B.data;
  g.c = args.C.data;
  if (!qkd::bf16_gemm(g)) {
    fail(env, fn, "out of memory for the packing buffers");
    return nullptr;
  }
  return undefined_value(env);
}

napi_value Int8QuantizeBody(napi_env env, const char* fn, Int8QuantizeArgs& args) {
  qkd::Int8QuantizeArgs a;
  a.rows = args.rows;
  a.cols = args.cols;
  a.per_row = args.perRow;
  if (a.rows % 4 != 0 || a.cols % 4 != 0) {
    fail(env, fn, "rows (%lld) and cols (%lld) must be multiples of 4", static_cast<long long>(a.rows),
         static_cast<long long>(a.cols));
    return nullptr;
  }
  int64_t count = 0, by_rows = 0, by_cols = 0;
  if (!multiply(env, fn, "w (rows×cols)", {a.rows, a.cols}, &count) ||
      !multiply(env, fn, "byRows", {a.rows, qkd::int8_stride(a.cols)}, &by_rows) ||
      !multiply(env, fn, "byCols", {a.cols, qkd::int8_stride(a.rows)}, &by_cols) ||
      !check_typed_length(env, fn, "w", "Uint16Array", args.w, count, false) ||
      !check_bytes(env, fn, "byRows", args.byRows, by_rows) || !check_bytes(env, fn, "byCols", args.byCols, by_cols) ||
      !check_elements(env, fn, "scales", args.scales, a.per_row ? a.rows : a.cols)) {
    return nullptr;
  }
  if (count == 0) return number_value(env, 0);
  a.w = args.w.data;
  a.by_rows = args.byRows.data;
  a.by_cols = args.byCols.data;
  a.scales = args.scales.data;
  return number_value(env, qkd::int8_quantize(a));
}

napi_value Int8GemmBody(napi_env env, const char* fn, Int8GemmArgs& args) {
  qkd::Int8GemmArgs g;
  g.stride = args.stride;
  g.m = args.m;
  g.n = args.n;
  g.k = args.k;
  g.ldb = args.ldb;
  g.ldc = args.ldc;
  if (g.k % 4 != 0) {
    fail(env, fn, "argument k (%lld) must be a multiple of 4", static_cast<long long>(g.k));
    return nullptr;
  }
  if (g.stride % 16 != 0 || g.stride < g.m) {
    fail(env, fn, "argument stride (%lld) must be a multiple of 16 and at least m (%lld)",
         static_cast<long long>(g.stride), static_cast<long long>(g.m));
    return nullptr;
  }
  if (g.m == 0 || g.n == 0) return number_value(env, 0);
  int64_t needed = 0;
  if (!check_leading_dimension(env, fn, "ldc", g.ldc, g.n, "C (m×n)") ||
      !check_leading_dimension(env, fn, "ldb", g.ldb, g.n, "B (k×n)")) {
    return nullptr;
  }
  bool ok = extent(1, g.m, g.n, g.ldc, 0, &needed);
  if (!check_length(env, fn, "c", args.c, needed, !ok)) return nullptr;
  if (g.k > 0) {
    ok = extent(1, g.k, g.n, g.ldb, 0, &needed);
    if (!check_length(env, fn, "b", args.b, needed, !ok)) return nullptr;
  }
  if (!multiply(env, fn, "a (k × stride)", {g.k, g.stride}, &needed) || !check_bytes(env, fn, "a", args.a, needed)) {
    return nullptr;
  }
  if (args.fold.data != nullptr && !check_elements(env, fn, "fold", args.fold, g.k)) return nullptr;
  if (args.rowScale.data != nullptr && !check_elements(env, fn, "rowScale", args.rowScale, g.m)) return nullptr;
  g.a = args.a.data;
  g.fold = args.fold.data;
  g.b = args.b.data;
  g.row_scale = args.rowScale.data;
  g.c = args.c.data;
  const int64_t result = qkd::int8_gemm(g);
  if (result == -2) {
    fail(env, fn, "out of memory for the packing buffers");
    return nullptr;
  }
  return number_value(env, static_cast<double>(result));
}

napi_value Int8GemmFastBody(napi_env env, const char* /*fn*/, Int8GemmFastArgs& /*args*/) {
  return number_value(env, qkd::int8_gemm_fast() ? 1 : 0);
}

bool check_length_of(napi_env env, const char* fn, const char* name, const FloatView& w, int64_t count) {
  return check_elements(env, fn, name, w, count);
}
bool check_length_of(napi_env env, const char* fn, const char* name, const TypedView<uint16_t>& w, int64_t count) {
  return check_typed_length(env, fn, name, "Uint16Array", w, count, false);
}
void set_weight(qkd::WeightStatsArgs& a, const FloatView& w) { a.w32 = w.data; a.w16 = nullptr; }
void set_weight(qkd::WeightStatsArgs& a, const TypedView<uint16_t>& w) { a.w32 = nullptr; a.w16 = w.data; }
void set_weight(qkd::RtnErrorArgs& a, const FloatView& w) { a.w = w.data; a.w16 = nullptr; }
void set_weight(qkd::RtnErrorArgs& a, const TypedView<uint16_t>& w) { a.w = nullptr; a.w16 = w.data; }

// weightStats and weightStatsBf16: w a Float32Array or a Uint16Array of bf16 bits.
template <typename Args>
napi_value weight_stats_body(napi_env env, const char* fn, Args& args) {
  qkd::WeightStatsArgs a;
  a.rows = args.rows;
  a.cols = args.cols;
  a.shift = args.shift;
  int64_t count = 0;
  if (!multiply(env, fn, "w (rows×cols)", {a.rows, a.cols}, &count)) return nullptr;
  if (args.bits != 0 && (args.bits < 2 || args.bits > 8)) {
    fail(env, fn, "argument bits must be 0 (no quantization error) or an integer from 2 to 8, got %d", args.bits);
    return nullptr;
  }
  if (!std::isfinite(a.shift)) {
    fail(env, fn, "argument shift must be a finite number, got %g", a.shift);
    return nullptr;
  }
  if (!check_length_of(env, fn, "w", args.w, count) || !check_elements(env, fn, "rowMin", args.rowMin, a.rows) ||
      !check_elements(env, fn, "rowMax", args.rowMax, a.rows) ||
      !check_typed_length(env, fn, "totals", "Float64Array", args.totals, 6, false)) {
    return nullptr;
  }
  a.bits = args.bits;
  set_weight(a, args.w);
  a.row_min = args.rowMin.data;
  a.row_max = args.rowMax.data;
  const qkd::WeightStatsTotals t = qkd::weight_stats(a);
  const double values[6] = {t.s1, t.s2, t.s3, t.s4, t.sum_squares, t.rtn_error};
  for (int i = 0; i < 6; ++i) args.totals.data[i] = values[i];
  return undefined_value(env);
}

napi_value WeightStatsBody(napi_env env, const char* fn, WeightStatsArgs& args) { return weight_stats_body(env, fn, args); }
napi_value WeightStatsBf16Body(napi_env env, const char* fn, WeightStatsBf16Args& args) { return weight_stats_body(env, fn, args); }

// rtnErrors and rtnErrorsBf16: −1, a NaN index or −2.
template <typename Args>
napi_value rtn_errors_body(napi_env env, const char* fn, Args& args, bool background = false) {
  qkd::RtnErrorArgs a;
  a.rows = args.rows;
  a.cols = args.cols;
  a.group_size = args.groupSize;
  a.symmetric = args.symmetric;
  a.per_tensor = args.perTensor;
  int64_t count = 0;
  if (!multiply(env, fn, "w (rows×cols)", {a.rows, a.cols}, &count) || !check_length_of(env, fn, "w", args.w, count)) {
    return nullptr;
  }
  const Int32View& bits = args.bits;
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
  if (!check_typed_length(env, fn, "out", "Float64Array", args.out, bits.length, false)) return nullptr;
  set_weight(a, args.w);
  a.bits = bits.data;
  a.count = static_cast<int>(bits.length);
  const int64_t result = background ? qkd::rtn_errors_start(a, args.out.data) : qkd::rtn_errors(a, args.out.data);
  return number_value(env, static_cast<double>(result));
}

napi_value RtnErrorsBody(napi_env env, const char* fn, RtnErrorsArgs& args) { return rtn_errors_body(env, fn, args); }
napi_value RtnErrorsBf16Body(napi_env env, const char* fn, RtnErrorsBf16Args& args) { return rtn_errors_body(env, fn, args); }
napi_value RtnErrorsStartBody(napi_env env, const char* fn, RtnErrorsStartArgs& args) { return rtn_errors_body(env, fn, args, true); }
napi_value RtnErrorsBf16StartBody(napi_env env, const char* fn, RtnErrorsBf16StartArgs& args) { return rtn_errors_body(env, fn, args, true); }

napi_value BackgroundWaitBody(napi_env env, const char* fn, BackgroundWaitArgs& args) {
  int64_t result = 0;
  if (!qkd::background_wait(args.handle, &result)) {
    fail(env, fn, "no background job %lld in flight (each handle is waited for once)", static_cast<long long>(args.handle));
    return nullptr;
  }
  return number_value(env, static_cast<double>(result));
}

napi_value SymmetricEigenvaluesBody(napi_env env, const char* fn, SymmetricEigenvaluesArgs& args) {
  auto& [a, n, count, out] = args;
  int64_t elements = 0;
  if (!multiply(env, fn, "a (n×n)", {n, n}, &elements)) return nullptr;
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

napi_value NormalFillBody(napi_env env, const char* fn, NormalFillArgs& args) {
  auto& [state, spare, out, n] = args;
  if (state.data == nullptr) {
    fail(env, fn, "argument state must be the generator's Uint32Array of 4 words, got null");
    return nullptr;
  }
  if (!check_typed_length(env, fn, "state", "Uint32Array", state, 4, false) ||
      !check_typed_length(env, fn, "spare", "Float64Array", spare, 2, false) ||
      !check_typed_length(env, fn, "out", "Float64Array", out, n, false)) {
    return nullptr;
  }
  qkd::normal_fill(state.data, spare.data, out.data, n);
  return undefined_value(env);
}

napi_value PivotedCholeskyInverseBody(napi_env env, const char* fn, PivotedCholeskyInverseArgs& args) {
  auto& [a, n, scale, tolerance, order, diag, inverse] = args;
  int64_t elements = 0;
  if (!multiply(env, fn, "a (n×n)", {n, n}, &elements) ||
      !check_typed_length(env, fn, "a", "Float64Array", a, elements, false) ||
      !check_typed_length(env, fn, "scale", "Float64Array", scale, n, false) ||
      !check_typed_length(env, fn, "order", "Float64Array", order, n, false) ||
      !check_typed_length(env, fn, "diag", "Float64Array", diag, n, false) ||
      !check_typed_length(env, fn, "inverse", "Float64Array", inverse, elements, false)) {
    return nullptr;
  }
  std::vector<double> work(static_cast<size_t>(elements + n));
  const int64_t r = qkd::pivoted_cholesky_inverse(a.data, n, scale.data, tolerance, order.data, diag.data, inverse.data, work.data());
  return number_value(env, static_cast<double>(r));
}

napi_value StartBlockFillBody(napi_env env, const char* fn, StartBlockFillArgs& args) {
  auto& [state, spare, out, n, width, gaussian] = args;
  if (state.data == nullptr) {
    fail(env, fn, "argument state must be the generator's Uint32Array of 4 words, got null");
    return nullptr;
  }
  int64_t count = 0;
  if (gaussian > width) {
    fail(env, fn, "argument gaussian (%lld) must be at most width (%lld)", static_cast<long long>(gaussian), static_cast<long long>(width));
    return nullptr;
  }
  if (!multiply(env, fn, "out (n×width)", {n, width}, &count) ||
      !check_typed_length(env, fn, "state", "Uint32Array", state, 4, false) ||
      !check_typed_length(env, fn, "spare", "Float64Array", spare, 2, false) ||
      !check_elements(env, fn, "out", out, count)) {
    return nullptr;
  }
  qkd::start_block_fill(state.data, spare.data, out.data, n, width, gaussian);
  return undefined_value(env);
}

napi_value EigenBatchStartBody(napi_env env, const char* fn, EigenBatchStartArgs& args) {
  auto& [a, sizes, counts, heads, tails] = args;
  if (sizes.length != counts.length || sizes.length != heads.length || sizes.length != tails.length) {
    fail(env, fn, "arguments sizes (%lld), counts (%lld), heads (%lld) and tails (%lld) must have one entry per matrix",
         static_cast<long long>(sizes.length), static_cast<long long>(counts.length),
         static_cast<long long>(heads.length), static_cast<long long>(tails.length));
    return nullptr;
  }
  int64_t values = 0;
  for (int64_t i = 0; i < sizes.length; ++i) {
    const int64_t n = sizes.data[i], count = counts.data[i], head = heads.data[i], tail = tails.data[i];
    if (n < 0 || count < 0 || count > n) {
      fail(env, fn, "matrix %lld: sizes[i] (%lld) and counts[i] (%lld) must satisfy 0 <= count <= size",
           static_cast<long long>(i), static_cast<long long>(n), static_cast<long long>(count));
      return nullptr;
    }
    if (head < 0 || tail < 0 || head + tail > n) {
      fail(env, fn, "matrix %lld: heads[i] (%lld) and tails[i] (%lld) must be >= 0 with heads[i] + tails[i] <= size (%lld)",
           static_cast<long long>(i), static_cast<long long>(head), static_cast<long long>(tail),
           static_cast<long long>(n));
      return nullptr;
    }
    values += n * n;
  }
  if (!check_elements(env, fn, "a", a, values)) return nullptr;
  return number_value(env, static_cast<double>(qkd::eigen_batch_start(a.data, sizes.data, counts.data, heads.data,
                                                                      tails.data, sizes.length)));
}

napi_value EigenBatchWaitBody(napi_env env, const char* fn, EigenBatchWaitArgs& args) {
  const int64_t failed = qkd::eigen_batch_wait(args.handle, args.out.data, args.out.length);
  if (failed == -2) {
    fail(env, fn, "no job %lld in flight (each handle is waited for once)", static_cast<long long>(args.handle));
    return nullptr;
  }
  if (failed == -3) {
    fail(env, fn, "argument out (Float64Array) has %lld elements, fewer than the job's results",
         static_cast<long long>(args.out.length));
    return nullptr;
  }
  if (failed >= 0) {
    fail(env, fn, "matrix %lld: no eigenvalues for a matrix that is not finite (or out of memory)",
         static_cast<long long>(failed));
    return nullptr;
  }
  return undefined_value(env);
}

napi_value F32ToBf16Body(napi_env env, const char* fn, F32ToBf16Args& args) {
  auto& [src, dst, n] = args;
  if (!check_elements(env, fn, "src", src, n) || !check_typed_length(env, fn, "dst", "Uint16Array", dst, n, false)) {
    return nullptr;
  }
  qkd::float_to_bf16(src.data, dst.data, n);
  return undefined_value(env);
}

// 16-bit values widened to float32 by `widen` (bf16 or IEEE half).
template <typename Args>
napi_value widen_body(napi_env env, const char* fn, Args& args, void (*widen)(const uint16_t*, float*, int64_t)) {
  auto& [src, dst, n] = args;
  if (!check_typed_length(env, fn, "src", "Uint16Array", src, n, false) || !check_elements(env, fn, "dst", dst, n) ||
      !check_apart(env, fn, "src", src.data, n * 2, "dst", dst.data, n * 4)) {
    return nullptr;
  }
  widen(src.data, dst.data, n);
  return undefined_value(env);
}

napi_value Bf16ToF32Body(napi_env env, const char* fn, Bf16ToF32Args& args) {
  return widen_body(env, fn, args, qkd::bf16_to_float);
}

napi_value F16ToF32Body(napi_env env, const char* fn, F16ToF32Args& args) {
  return widen_body(env, fn, args, qkd::half_to_float);
}

// ---- Storage codecs -----------------------------------------------------------------

bool check_tier(napi_env env, const char* fn, int64_t tier) {
  if (tier != 8 && tier != 12 && tier != 16) return fail(env, fn, "argument tier must be 8, 12 or 16, got %lld", static_cast<long long>(tier));
  return true;
}

napi_value DbwaEncodeBody(napi_env env, const char* fn, DbwaEncodeArgs& args) {
  auto& [tier, src, storage, seed] = args;
  if (!check_tier(env, fn, tier) ||
      !check_bytes(env, fn, "storage", storage, qkd::dbwa_storage_bytes(static_cast<int>(tier), src.length))) {
    return nullptr;
  }
  if (seed.data != nullptr) {
    if (!check_typed_length(env, fn, "seed", "Uint32Array", seed, 4, false)) return nullptr;
    if ((seed.data[0] | seed.data[1] | seed.data[2] | seed.data[3]) == 0) {
      fail(env, fn, "argument seed must not be all zero (xorshift128 would stay at zero)");
      return nullptr;
    }
  }
  return number_value(env, static_cast<double>(qkd::dbwa_encode(static_cast<int>(tier), src.data, src.length, storage.data, seed.data)));
}

napi_value DbwaDecodeBody(napi_env env, const char* fn, DbwaDecodeArgs& args) {
  auto& [tier, storage, dst] = args;
  if (!check_tier(env, fn, tier) ||
      !check_bytes(env, fn, "storage", storage, qkd::dbwa_storage_bytes(static_cast<int>(tier), dst.length))) {
    return nullptr;
  }
  qkd::dbwa_decode(static_cast<int>(tier), storage.data, dst.data, dst.length);
  return undefined_value(env);
}

// The ggml type id and the element count: a type the codec knows, a whole number of blocks; `bytes` its encoded size.
bool check_ggml_type(napi_env env, const char* fn, int64_t type, int64_t count, int64_t* bytes) {
  const int64_t block = type <= 64 ? qkd::ggml_block_size(static_cast<int>(type)) : 0;
  if (block == 0) return fail(env, fn, "argument type: ggml type id %lld is not one of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K", static_cast<long long>(type));
  if (count % block != 0) {
    return fail(env, fn, "%lld elements is not a multiple of the block size %lld", static_cast<long long>(count),
                static_cast<long long>(block));
  }
  *bytes = count / block * qkd::ggml_block_bytes(static_cast<int>(type));
  return true;
}

napi_value GgmlEncodeBody(napi_env env, const char* fn, GgmlEncodeArgs& args) {
  auto& [type, src, dst, importance] = args;
  int64_t bytes = 0;
  if (!check_ggml_type(env, fn, type, src.length, &bytes) || !check_exact_bytes(env, fn, "dst", dst, bytes)) return nullptr;
  if (importance.given) {
    const int64_t cols = importance.length;
    const int64_t block = qkd::ggml_block_size(static_cast<int>(type));
    if (cols == 0 || cols % block != 0 || src.length % cols != 0) {
      fail(env, fn, "argument importance has %lld values: it needs one per column of rows that are a whole number of "
           "%lld-blocks and divide the %lld elements", static_cast<long long>(cols), static_cast<long long>(block),
           static_cast<long long>(src.length));
      return nullptr;
    }
    if (!check_apart(env, fn, "importance", importance.data, cols * 4, "dst", dst.data, dst.length)) return nullptr;
  }
  if (!check_apart(env, fn, "src", src.data, src.length * 4, "dst", dst.data, dst.length)) return nullptr;
  qkd::ggml_encode(static_cast<int>(type), src.data, src.length, dst.data, importance.data, importance.length);
  return undefined_value(env);
}

napi_value GgmlDecodeBody(napi_env env, const char* fn, GgmlDecodeArgs& args) {
  auto& [type, src, dst] = args;
  int64_t bytes = 0;
  if (!check_ggml_type(env, fn, type, dst.length, &bytes) || !check_exact_bytes(env, fn, "src", src, bytes) ||
      !check_apart(env, fn, "src", src.data, src.length, "dst", dst.data, dst.length * 4)) {
    return nullptr;
  }
  qkd::ggml_decode(static_cast<int>(type), src.data, dst.length, dst.data);
  return undefined_value(env);
}

napi_value GgmlRoundTripBody(napi_env env, const char* fn, GgmlRoundTripArgs& args) {
  auto& [type, src, dst] = args;
  int64_t bytes = 0;
  if (!check_ggml_type(env, fn, type, src.length, &bytes)) return nullptr;
  if (dst.length != src.length) {
    fail(env, fn, "argument dst has %lld elements, expected %lld (as src)", static_cast<long long>(dst.length),
         static_cast<long long>(src.length));
    return nullptr;
  }
  if (!check_overlap(env, fn, "src", src, src.length, "dst", dst, dst.length, true, "")) return nullptr;
  qkd::ggml_round_trip(static_cast<int>(type), src.data, src.length, dst.data);
  return undefined_value(env);
}

// ---- The state-space mixer (kernels/ssm.h) ---------------------------------------

// A view to check: name, view, elements needed; `optional` views may be EMPTY (then skipped),
// `written` ones may share no memory with any other view.
struct Needed {
  const char* name;
  FloatView* view;
  int64_t count;
  bool optional;
  bool written;
};

bool check_views(napi_env env, const char* fn, std::initializer_list<Needed> views) {
  for (const Needed& v : views) {
    if (v.optional ? !optional_view(env, fn, v.name, v.count, v.view) : !check_elements(env, fn, v.name, *v.view, v.count)) {
      return false;
    }
  }
  for (const Needed& a : views) {
    if (!a.written) continue;
    for (const Needed& b : views) {
      if (&b == &a) continue;
      if (!check_overlap(env, fn, a.name, *a.view, a.count, b.name, *b.view, b.count, false, "")) return false;
    }
  }
  return true;
}

// The scan's sizes: x (B·T·H·P), b (B·T·H·N), logit (B·T·H) and states (B·H·⌈T/L⌉·N·P) elements.
bool scan_sizes(napi_env env, const char* fn, const qkd::ScanDims& d, int64_t* xs, int64_t* bs, int64_t* ls, int64_t* ss) {
  if (d.L < 1) return fail(env, fn, "argument L must be at least 1");
  const int64_t chunks = (d.T + d.L - 1) / d.L;
  return multiply(env, fn, "x (B×T×H×P)", {d.B, d.T, d.H, d.P}, xs) && multiply(env, fn, "b (B×T×H×N)", {d.B, d.T, d.H, d.N}, bs) &&
         multiply(env, fn, "logit (B×T×H)", {d.B, d.T, d.H}, ls) && multiply(env, fn, "states", {d.B, d.H, chunks, d.N, d.P}, ss);
}

napi_value SsmScanForwardBody(napi_env env, const char* fn, SsmScanForwardArgs& args) {
  auto& [x, b, c, logit, y, states, B, T, H, P, N, L] = args;
  const qkd::ScanDims d{B, T, H, P, N, L};
  int64_t xs = 0, bs = 0, ls = 0, ss = 0;
  if (!scan_sizes(env, fn, d, &xs, &bs, &ls, &ss) ||
      !check_views(env, fn, {{"x", &x, xs, false, false}, {"b", &b, bs, false, false}, {"c", &c, bs, false, false}, {"logit", &logit, ls, false, false},
                             {"y", &y, xs, false, true}, {"states", &states, ss, false, true}})) {
    return nullptr;
  }
  qkd::ssm_scan_forward(x.data, b.data, c.data, logit.data, y.data, states.data, d);
  return undefined_value(env);
}

napi_value SsmScanBackwardBody(napi_env env, const char* fn, SsmScanBackwardArgs& args) {
  auto& [x, b, c, logit, states, dy, dx, db, dc, dlogit, B, T, H, P, N, L] = args;
  const qkd::ScanDims d{B, T, H, P, N, L};
  int64_t xs = 0, bs = 0, ls = 0, ss = 0;
  if (!scan_sizes(env, fn, d, &xs, &bs, &ls, &ss) ||
      !check_views(env, fn, {{"x", &x, xs, false, false}, {"b", &b, bs, false, false}, {"c", &c, bs, false, false}, {"logit", &logit, ls, false, false},
                             {"states", &states, ss, false, false}, {"dy", &dy, xs, false, false}, {"dx", &dx, xs, true, true}, {"db", &db, bs, true, true},
                             {"dc", &dc, bs, true, true}, {"dlogit", &dlogit, ls, true, true}})) {
    return nullptr;
  }
  qkd::ssm_scan_backward(x.data, b.data, c.data, logit.data, states.data, dy.data, dx.data, db.data, dc.data, dlogit.data, d);
  return undefined_value(env);
}

// The mixing matrix's sizes: b (B·T·H·N), logit (B·T·H) and m (B·H·T·T) elements.
bool matrix_sizes(napi_env env, const char* fn, int64_t B, int64_t T, int64_t H, int64_t N, int64_t* bs, int64_t* ls, int64_t* ms) {
  return multiply(env, fn, "b (B×T×H×N)", {B, T, H, N}, bs) && multiply(env, fn, "logit (B×T×H)", {B, T, H}, ls) &&
         multiply(env, fn, "m (B×H×T×T)", {B, H, T, T}, ms);
}

napi_value SsmMatrixForwardBody(napi_env env, const char* fn, SsmMatrixForwardArgs& args) {
  auto& [b, c, logit, m, B, T, H, N] = args;
  int64_t bs = 0, ls = 0, ms = 0;
  if (!matrix_sizes(env, fn, B, T, H, N, &bs, &ls, &ms) ||
      !check_views(env, fn, {{"b", &b, bs, false, false}, {"c", &c, bs, false, false}, {"logit", &logit, ls, false, false}, {"m", &m, ms, false, true}})) {
    return nullptr;
  }
  qkd::ssm_matrix_forward(b.data, c.data, logit.data, m.data, B, T, H, N);
  return undefined_value(env);
}

napi_value SsmMatrixBackwardBody(napi_env env, const char* fn, SsmMatrixBackwardArgs& args) {
  auto& [b, c, logit, m, dm, db, dc, dlogit, B, T, H, N] = args;
  int64_t bs = 0, ls = 0, ms = 0;
  if (!matrix_sizes(env, fn, B, T, H, N, &bs, &ls, &ms) ||
      !check_views(env, fn, {{"b", &b, bs, false, false}, {"c", &c, bs, false, false}, {"logit", &logit, ls, false, false}, {"m", &m, ms, false, false},
                             {"dm", &dm, ms, false, false}, {"db", &db, bs, true, true}, {"dc", &dc, bs, true, true}, {"dlogit", &dlogit, ls, true, true}})) {
    return nullptr;
  }
  qkd::ssm_matrix_backward(b.data, c.data, logit.data, m.data, dm.data, db.data, dc.data, dlogit.data, B, T, H, N);
  return undefined_value(env);
}

napi_value CausalConvForwardBody(napi_env env, const char* fn, CausalConvForwardArgs& args) {
  auto& [x, w, bias, y, B, T, C, K] = args;
  int64_t xs = 0, ws = 0;
  if (!multiply(env, fn, "x (B×T×C)", {B, T, C}, &xs) || !multiply(env, fn, "w (C×K)", {C, K}, &ws) ||
      !check_views(env, fn, {{"x", &x, xs, false, false}, {"w", &w, ws, false, false}, {"bias", &bias, C, true, false}, {"y", &y, xs, false, true}})) {
    return nullptr;
  }
  qkd::causal_conv_forward(x.data, w.data, bias.data, y.data, B, T, C, K);
  return undefined_value(env);
}

napi_value CausalConvBackwardBody(napi_env env, const char* fn, CausalConvBackwardArgs& args) {
  auto& [x, w, dy, dx, dw, dbias, B, T, C, K] = args;
  int64_t xs = 0, ws = 0;
  if (!multiply(env, fn, "x (B×T×C)", {B, T, C}, &xs) || !multiply(env, fn, "w (C×K)", {C, K}, &ws) ||
      !check_views(env, fn, {{"x", &x, xs, false, false}, {"w", &w, ws, false, false}, {"dy", &dy, xs, false, false}, {"dx", &dx, xs, true, true},
                             {"dw", &dw, ws, true, true}, {"dbias", &dbias, C, true, true}})) {
    return nullptr;
  }
  qkd::causal_conv_backward(x.data, w.data, dy.data, dx.data, dw.data, dbias.data, B, T, C, K);
  return undefined_value(env);
}

// ---- Fused attention (kernels/attention.h, docs/attention.md) --------------------
//
// attentionFusedForward and attentionFusedBackward, in one block: the sizes
// and options are checked here (with the shared helpers above: fail,
// multiply, check_views), then kernels/attention.h runs. Layouts: q, o, dO
// [B,T,H,D]; k, v [B,S,G,D]; lse [B,H,T]. S < T is accepted (the first T − S
// causal rows see no key: o = 0, lse = −∞); the TypeScript op refuses it.

// The options (H a multiple of G, a window only with causal, softcap 0 or
// positive) and the element counts of q and o, k and v, and lse.
bool attention_sizes(napi_env env, const char* fn, const qkd::AttentionArgs& a, int64_t* qs, int64_t* ks, int64_t* ls) {
  if (a.H > 0 && (a.G == 0 || a.H % a.G != 0)) {
    return fail(env, fn, "argument H (%lld query heads) must be a multiple of G (%lld kv heads)", static_cast<long long>(a.H),
                static_cast<long long>(a.G));
  }
  if (a.window > 0 && !a.causal) return fail(env, fn, "argument window (%lld) needs causal attention", static_cast<long long>(a.window));
  if (!(a.softcap >= 0.0f)) return fail(env, fn, "argument softcap (%g) must be 0 (none) or positive", static_cast<double>(a.softcap));
  return multiply(env, fn, "q (B×T×H×D)", {a.B, a.T, a.H, a.D}, qs) && multiply(env, fn, "k (B×S×G×D)", {a.B, a.S, a.G, a.D}, ks) &&
         multiply(env, fn, "lse (B×H×T)", {a.B, a.H, a.T}, ls);
}

napi_value AttentionFusedForwardBody(napi_env env, const char* fn, AttentionFusedForwardArgs& args) {
  auto& [q, k, v, o, lse, B, T, S, H, G, D, causal, scale, window, softcap] = args;
  const qkd::AttentionArgs a{B, T, S, H, G, D, causal, scale, window, softcap};
  int64_t qs = 0, ks = 0, ls = 0;
  if (!attention_sizes(env, fn, a, &qs, &ks, &ls) ||
      !check_views(env, fn, {{"q", &q, qs, false, false}, {"k", &k, ks, false, false}, {"v", &v, ks, false, false}, {"o", &o, qs, false, true},
                             {"lse", &lse, ls, false, true}})) {
    return nullptr;
  }
  if (!qkd::attention_forward(q.data, k.data, v.data, o.data, lse.data, a)) return out_of_memory(env, fn);
  return undefined_value(env);
}

napi_value AttentionFusedBackwardBody(napi_env env, const char* fn, AttentionFusedBackwardArgs& args) {
  auto& [q, k, v, o, lse, dO, dq, dk, dv, B, T, S, H, G, D, causal, scale, window, softcap] = args;
  const qkd::AttentionArgs a{B, T, S, H, G, D, causal, scale, window, softcap};
  int64_t qs = 0, ks = 0, ls = 0;
  if (!attention_sizes(env, fn, a, &qs, &ks, &ls) ||
      !check_views(env, fn, {{"q", &q, qs, false, false}, {"k", &k, ks, false, false}, {"v", &v, ks, false, false}, {"o", &o, qs, false, false},
                             {"lse", &lse, ls, false, false}, {"dO", &dO, qs, false, false}, {"dq", &dq, qs, true, true}, {"dk", &dk, ks, true, true},
                             {"dv", &dv, ks, true, true}})) {
    return nullptr;
  }
  if (!qkd::attention_backward(q.data, k.data, v.data, o.data, lse.data, dO.data, dq.data, dk.data, dv.data, a)) {
    return out_of_memory(env, fn);
  }
  return undefined_value(env);
}

}  // namespace

NAPI_MODULE_INIT() { return register_kernels(env, exports); }

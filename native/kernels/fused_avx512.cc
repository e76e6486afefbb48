// The fused kernels (fused_rows.h) compiled for AVX-512.
//
// The templates are built under a target pragma rather than per-function
// attributes: one body serves three paths. The standard headers come first,
// so that nothing they define is compiled for AVX-512.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu.h"
#include "fused_kernels.h"

#if QKD_X86
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma")
#include "simd_avx512.h"
#include "fused_rows.h"

namespace qkd {
namespace {
constexpr FusedKernels kAvx512Kernels = make_fused_kernels<Avx512>();
}  // namespace
}  // namespace qkd
#pragma GCC pop_options

namespace qkd {
const FusedKernels* avx512_fused_kernels() { return &kAvx512Kernels; }
}  // namespace qkd

#else

namespace qkd {
const FusedKernels* avx512_fused_kernels() { return nullptr; }
}  // namespace qkd

#endif

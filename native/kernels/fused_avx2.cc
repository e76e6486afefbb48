// The fused kernels (fused_rows.h) compiled for AVX2 + FMA; see
// fused_avx512.cc for why a target pragma.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu.h"
#include "fused_kernels.h"

#if QKD_X86
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "simd_avx2.h"
#include "fused_rows.h"

namespace qkd {
namespace {
constexpr FusedKernels kAvx2Kernels = make_fused_kernels<Avx2>();
}  // namespace
}  // namespace qkd
#pragma GCC pop_options

namespace qkd {
const FusedKernels* avx2_fused_kernels() { return &kAvx2Kernels; }
}  // namespace qkd

#else

namespace qkd {
const FusedKernels* avx2_fused_kernels() { return nullptr; }
}  // namespace qkd

#endif

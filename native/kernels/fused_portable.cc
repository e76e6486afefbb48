// The fused kernels (fused_rows.h) in plain C++: one-lane vectors, std::exp.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fused_kernels.h"
#include "simd_portable.h"
#include "fused_rows.h"

namespace qkd {
namespace {
constexpr FusedKernels kPortableKernels = make_fused_kernels<Portable>();
}  // namespace

const FusedKernels* portable_fused_kernels() { return &kPortableKernels; }

}  // namespace qkd

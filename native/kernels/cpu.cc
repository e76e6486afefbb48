#include "cpu.h"

#include <cstdlib>
#include <cstring>

namespace qkd {

Isa detected_isa() {
#if QKD_X86
  // libgcc's cpu model also checks XCR0, so "supported" means the OS saves
  // the wide registers too.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kPortable;
}

static Isa isa_from_environment() {
  const Isa best = detected_isa();
  const char* requested = std::getenv("QKD_ISA");
  if (requested == nullptr) return best;
  Isa wanted = best;
  if (std::strcmp(requested, "portable") == 0) wanted = Isa::kPortable;
  else if (std::strcmp(requested, "avx2") == 0) wanted = Isa::kAvx2;
  else if (std::strcmp(requested, "avx512") == 0) wanted = Isa::kAvx512;
  // Only ever lower the path: asking for more than the CPU has falls back.
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

Isa active_isa() {
  static const Isa isa = isa_from_environment();
  return isa;
}

bool cpu_has_avx512_bf16() {
#if QKD_X86
  __builtin_cpu_init();
  static const bool available = detected_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  return available;
#else
  return false;
#endif
}

bool cpu_has_avx512_vnni() {
#if QKD_X86
  __builtin_cpu_init();
  static const bool available = detected_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vnni");
  return available;
#else
  return false;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace qkd

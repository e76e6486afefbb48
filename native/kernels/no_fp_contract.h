// Include first in a .cc file whose float arithmetic must round like its
// reference (TypeScript, or ggml's C): no multiply and add of that file is
// contracted into a fused multiply-add, on any target. A fused multiply-add
// rounds once where the reference rounds twice, and the bits would differ.
// It applies to the whole translation unit from here on, so only .cc files
// include it.
#pragma once

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

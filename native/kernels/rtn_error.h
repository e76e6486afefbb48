// The relative error of round-to-nearest quantization of a weight matrix at
// several bit widths in one pass (the bit allocator's input; docs/algorithms.md
// §2). The TypeScript reference is src/tensor/reference/rtn-error.ts; this
// kernel computes the same arithmetic in the same order, so its results are
// identical to it, for any thread count.
#pragma once

#include <cstdint>

namespace qkd {

struct RtnErrorArgs {
  const float* w = nullptr;      // rows × cols, row-major: exactly one of w and w16 (bf16 bits)
  const uint16_t* w16 = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t group_size = 0;    // columns per group; 0: a whole row
  bool symmetric = false;
  bool per_tensor = false;   // one group for the whole tensor (group_size ignored)
  const int32_t* bits = nullptr;  // widths, each 2..8
  int count = 0;
};

// out[j] = ‖Q_j(W) − W‖_F / ‖W‖_F (0 for an all-zero W). Returns −1, or the
// index of the first NaN weight, or −2 when a scale exceeds the f16 range.
int64_t rtn_errors(const RtnErrorArgs& args, double* out);

// The same as an idle-priority background job (background.h): returns its
// handle; background_wait gives the result above and fills `out`. args.bits
// is copied; w and out must stay alive and unchanged until then.
int64_t rtn_errors_start(const RtnErrorArgs& args, double* out);

}  // namespace qkd

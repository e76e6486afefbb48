// The per-ISA tile kernels behind attention.h: one table per path, each
// entry doing one task of the driver (attention.cc) on the calling thread
// with the scratch memory it is handed.
#pragma once

#include <cstdint>

#include "attention.h"

namespace qkd {

// The buffers of one call (attention.h): the forward reads q, k, v and
// writes o_out, lse_out; the backward reads q, k, v, o, lse, dO and adds into
// dq, dk, dv (nullptr: skipped). Unused ones are nullptr.
struct AttentionBuffers {
  const float* q;
  const float* k;
  const float* v;
  const float* o;
  const float* lse;
  const float* dO;
  float* o_out;
  float* lse_out;
  float* dq;
  float* dk;
  float* dv;
};

// A tile of query rows of one kv head's group: steps [t0, t0 + steps) ×
// query heads [h0, h0 + heads), step-major (row i is step t0 + i / heads of
// head h0 + i % heads), so that the keys a row sees only grow with i. The
// heads of a group share their keys and values: one transposed key tile
// serves them all, which is what makes a decoding step (T = 1) efficient.
struct AttentionTile {
  int64_t b, t0, steps, h0, heads;
};

// The tiling of a call: heads of a group per tile (up to the whole group),
// and query steps per tile, so that a tile has at most kAttentionQueryTile rows.
inline void attention_tiling(const AttentionArgs& a, int64_t* heads, int64_t* steps) {
  const int64_t group = a.H / a.G;
  *heads = group < kAttentionQueryTile ? group : kAttentionQueryTile;
  *steps = kAttentionQueryTile / *heads;
}

// Floats of scratch per task (each region starts on a 64-byte boundary).
constexpr int64_t attention_region(int64_t floats) { return (floats + 15) / 16 * 16; }
constexpr int64_t attention_forward_scratch(int64_t D) {
  return 2 * attention_region(kAttentionQueryTile * D) + attention_region(D * kAttentionKeyTile) +
         attention_region(kAttentionQueryTile * kAttentionKeyTile);
}
constexpr int64_t attention_backward_scratch(int64_t D, int64_t group, int64_t T) {
  return 2 * attention_region(D * kAttentionKeyTile) + 2 * attention_region(kAttentionKeyTile * D) +
         3 * attention_region(kAttentionQueryTile * D) + 3 * attention_region(kAttentionQueryTile * kAttentionKeyTile) +
         attention_region(group * T);
}

struct AttentionKernels {
  // The rows of one tile (at most kAttentionQueryTile).
  void (*forward)(const AttentionBuffers& io, const AttentionArgs& a, const AttentionTile& tile, float* scratch);
  // Every query head of kv head g of batch row b, over the key tiles j with
  // j ≡ chunk (mod chunks): those tiles' dk and dv rows, and their share of
  // the group's dq rows (added into io.dq, which the driver points at a
  // partial buffer when chunks > 1).
  void (*backward)(const AttentionBuffers& io, const AttentionArgs& a, int64_t b, int64_t g, int64_t chunk, int64_t chunks,
                   float* scratch);
};

// nullptr when the path is not compiled in (non-x86 builds).
const AttentionKernels* avx512_attention_kernels();
const AttentionKernels* avx2_attention_kernels();
const AttentionKernels* portable_attention_kernels();

}  // namespace qkd

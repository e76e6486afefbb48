// Fused attention (docs/attention.md): softmax attention's output without
// the [B,H,T,S] probability maps, and its backward from each row's
// log-sum-exp (FlashAttention-2's scheme on the CPU). The TypeScript
// definitions in src/tensor/reference/attention.ts are the oracle.
//
// Legend: B batch, T query steps, S key steps, H query heads, G key/value
// heads (query head h reads kv head h / (H/G)), D head width.
// Layouts: q, o, dO [B,T,H,D]; k, v [B,S,G,D]; lse [B,H,T].
//
// Query t sits at absolute position p = S − T + t and sees keys j with
// lo ≤ j < hi: hi = min(S, p + 1) when causal, else S; lo = max(0, p − W + 1)
// with a window W > 0, else 0. Its scores are s_j = cap(scale·q·k_j), cap(x)
// = c·tanh(x/c) for softcap c > 0, else x. A row that sees no key (S < T
// only) gets o = 0, lse = −∞ and adds nothing to any gradient.
//
// Work split: the forward runs one tile of query rows per task (up to
// kAttentionQueryTile rows: a run of steps × the query heads of one kv head,
// which share each transposed key tile), the backward one (b, kv head g) per
// task (the heads of g add into the same dk and dv rows). When B·G is below
// kAttentionBackwardTasks, each (b, g) is cut further into
// attention_backward_chunks interleaved sets of key tiles (chunk c takes
// tiles c, c + chunks, …, so a causal mask leaves them about equal work):
// each chunk owns its tiles' dk and dv rows and adds its share of dq into a
// partial buffer of its own, and the partials are added into dq in chunk
// order afterwards. Every output element is computed in an order fixed by
// the sizes, so results are the same bits for any thread count.
#pragma once

#include <cstdint>

namespace qkd {

struct AttentionArgs {
  int64_t B, T, S, H, G, D;
  bool causal;
  float scale;
  int64_t window;  // 0: no window
  float softcap;   // 0: no soft-capping
};

// Query rows (steps × heads) per tile; keys per tile.
constexpr int64_t kAttentionQueryTile = 64;
constexpr int64_t kAttentionKeyTile = 64;

// o = softmax(s)·v per row (overwritten), lse = log Σ exp(s) per row.
// False when the scratch memory could not be allocated (nothing written then).
bool attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, const AttentionArgs& a);

// Below this many (b, kv head) tasks the backward splits each one's key
// tiles into chunks (up to this many tasks in all), and the partial dq
// buffers that takes hold at most kAttentionPartialFloats floats.
constexpr int64_t kAttentionBackwardTasks = 4;
constexpr int64_t kAttentionPartialFloats = int64_t{1} << 25;

// Key-tile chunks per (b, kv head) of a backward (1: no split). A function
// of the sizes only (not of the thread count).
int64_t attention_backward_chunks(const AttentionArgs& a, bool with_dq);

// The backward from dO, adding into dq, dk and dv; a nullptr gradient is
// skipped. o and lse are the forward's outputs. False when out of memory.
bool attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                        const float* dO, float* dq, float* dk, float* dv, const AttentionArgs& a);

}  // namespace qkd

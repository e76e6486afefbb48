/**
 * The reference of the int8 kernels of the profiler's Krylov passes
 * (docs/algorithms.md §1, "int8 products"): the definition the native
 * kernels (native/kernels/gemm_int8.cc) follow.
 *
 * int8Quantize: a bf16 weight W [rows, cols] (both multiples of 4) gets one
 * scale per row (perRow) or per column, s = float32(max|w| / 127), and
 * q = clamp(rint(float32(w · float32(127 / max|w|))), −127, 127) with ties to
 * even, stored as the byte q + 128 in two "quad" layouts, 4 consecutive
 * values of the summed index side by side:
 *   byRows [rows/4][S][4]: (i, j) at ((⌊i/4⌋·S + j)·4 + i mod 4), S = int8Stride(cols)
 *   byCols [cols/4][S][4]: (i, j) at ((⌊j/4⌋·S + i)·4 + j mod 4), S = int8Stride(rows)
 * with 128 (the value 0) in the padding. The stride, ceil16(m) + 16, keeps
 * a row's successive quads off the same cache sets (native/kernels/gemm_int8.h). Returns ‖W − s·q‖² / ‖W‖² (float64),
 * or −1 when W holds a value that is not finite.
 *
 * int8Gemm: for a layout a [k/4][stride][4] (either of the above), output
 * rows i < m and the summed index t < k,
 *   C[i, c] = rowScale_i · Σ_t A(i, t) · B'(t, c),   B' = fold ⊙ B (float32 products),
 * where B' is quantized per column: T_c = min(max_t |b'|, float32(6·rms_t b'),
 * float32(6·rms'_t b')), rms' taking only the values within the first two
 * (a few rows far above the rest would otherwise lift the rms, and with it
 * the scale, far above the bulk of the column); Σ b² in float64 over
 * blocks of 1024 rows, blocks added in order (in both, the mean is over k);
 * scale_c = float32(T_c / 127); |b'| ≤ T_c becomes scale_c·rint(b'·127/T_c)
 * and |b'| > T_c (an outlier) is used as it is. Here the sum is exact
 * (float64); the native kernel sums int8 products exactly in int32 and the
 * rest in float32. Returns the outlier count, or −1 when B' is not finite.
 */

const BLOCK = 1024;
const OUTLIER_RMS = 6;
/** 1.5·2^52: (x + M) − M rounds x to an integer half-to-even for |x| < 2^51. */
const ROUND_MAGIC = 6755399441055744;

const f32 = Math.fround;
/** The quad layouts' stride for m output rows (16 rows more than a multiple of 16). */
export function int8Stride(m: number): number {
  return Math.ceil(m / 16) * 16 + 16;
}

const word = new Uint32Array(1);
const wordAsFloat = new Float32Array(word.buffer);

function bf16(bits: number): number {
  word[0] = bits << 16;
  return wordAsFloat[0]!;
}

function rintClamped(x: number): number {
  const r = x + ROUND_MAGIC - ROUND_MAGIC;
  return Math.min(127, Math.max(-127, r));
}

export function int8Quantize(w: Uint16Array, rows: number, cols: number, perRow: boolean, byRows: Uint8Array, byCols: Uint8Array, scales: Float32Array): number {
  const count = perRow ? rows : cols;
  const top = new Uint16Array(count);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const s = perRow ? i : j;
      top[s] = Math.max(top[s]!, w[i * cols + j]! & 0x7fff);
    }
  }
  const inv = new Float32Array(count);
  for (let s = 0; s < count; s++) {
    if (top[s]! >= 0x7f80) return -1;
    const m = bf16(top[s]!);
    scales[s] = f32(m / 127);
    inv[s] = m > 0 ? f32(127 / m) : 0;
  }
  const sRows = int8Stride(cols);
  const sCols = int8Stride(rows);
  byRows.fill(128, 0, rows * sRows);
  byCols.fill(128, 0, cols * sCols);
  let error = 0;
  let total = 0;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = bf16(w[i * cols + j]!);
      const s = perRow ? i : j;
      const q = rintClamped(f32(v * inv[s]!));
      byRows[(Math.floor(i / 4) * sRows + j) * 4 + (i % 4)] = q + 128;
      byCols[(Math.floor(j / 4) * sCols + i) * 4 + (j % 4)] = q + 128;
      const d = v - scales[s]! * q;
      error += d * d;
      total += v * v;
    }
  }
  return total > 0 ? error / total : 0;
}

export function int8Gemm(a: Uint8Array, stride: number, m: number, n: number, k: number, fold: Float32Array | null, b: Float32Array, ldb: number, rowScale: Float32Array | null, c: Float32Array, ldc: number): number {
  if (m === 0 || n === 0) return 0;
  const folded = (t: number, col: number): number => (fold === null ? b[t * ldb + col]! : f32(b[t * ldb + col]! * fold[t]!));
  let outliers = 0;
  const sums = new Float64Array(m * n);
  for (let col = 0; col < n; col++) {
    let max = 0;
    for (let t = 0; t < k; t++) {
      const v = folded(t, col);
      if (!Number.isFinite(v)) return -1;
      max = Math.max(max, Math.abs(v));
    }
    // Two passes: 6 rms of the column, then 6 rms of its values within that.
    let threshold = max;
    for (let pass = 0; pass < 2; pass++) {
      let ss = 0;
      for (let t0 = 0; t0 < k; t0 += BLOCK) {
        let block = 0;
        for (let t = t0; t < Math.min(k, t0 + BLOCK); t++) {
          const v = folded(t, col);
          if (pass === 0 || Math.abs(v) <= threshold) block += v * v;
        }
        ss += block;
      }
      threshold = Math.min(threshold, f32(OUTLIER_RMS * Math.sqrt(ss / k)));
    }
    const scale = f32(threshold / 127);
    const inv = threshold > 0 ? f32(127 / threshold) : 0;
    for (let t = 0; t < k; t++) {
      const v = folded(t, col);
      let used: number;
      if (Math.abs(v) > threshold) {
        used = v;
        outliers++;
      } else {
        used = scale * rintClamped(f32(v * inv));
      }
      if (used === 0) continue;
      const base = Math.floor(t / 4) * stride * 4 + (t % 4);
      for (let i = 0; i < m; i++) sums[i * n + col]! += (a[base + i * 4]! - 128) * used;
    }
  }
  for (let i = 0; i < m; i++) {
    const rs = rowScale === null ? 1 : rowScale[i]!;
    for (let col = 0; col < n; col++) c[i * ldc + col] = sums[i * n + col]! * rs;
  }
  return outliers;
}

/** The reference has no fast path: 0. */
export function int8GemmFast(): number {
  return 0;
}

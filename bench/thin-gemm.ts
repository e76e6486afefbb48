/**
 * The bf16 GEMM on thin blocks, as the Krylov route multiplies the
 * embedding: a 1018 × 2048 bf16 slice (one 4 MB chunk of a 128256 × 2048
 * embedding, in cache after the first call) times 16, 32 and 64 columns,
 * A·x and Aᵀ·u (accumulated), median of 50 calls. The figure to read is
 * the time of 16 columns over the time of 32 within this run: 0.5 when the
 * thin product runs at the wide one's rate.
 *
 * Usage: npm run bench -- thin-gemm. Last stdout line: JSON.
 */
import { Rng, kernels } from '../src/tensor/index.js';
import { toBf16 } from '../src/tensor/dtype.js';
import { requireNative, timeMedian } from './_util.js';

requireNative();
const rows = 1018;
const cols = 2048;
const rng = new Rng(7);
const a = toBf16(Float32Array.from({ length: rows * cols }, () => rng.normal()));
const out: { width: number; ax_ms: number; atu_ms: number }[] = [];
for (const width of [16, 32, 64]) {
  const x = Float32Array.from({ length: cols * width }, () => rng.normal());
  const u = new Float32Array(rows * width);
  const y = new Float32Array(cols * width);
  const ax = 1000 * timeMedian(() => kernels().bf16Gemm({ transA: false, M: rows, N: width, K: cols, a, lda: cols, b: x, ldb: width, c: u, ldc: width, accumulate: false }), 50, 10);
  const atu = 1000 * timeMedian(() => kernels().bf16Gemm({ transA: true, M: cols, N: width, K: rows, a, lda: cols, b: u, ldb: width, c: y, ldc: width, accumulate: true }), 50, 10);
  out.push({ width, ax_ms: ax, atu_ms: atu });
  const gmac = (ms: number): string => ((rows * cols * width) / ms / 1e6).toFixed(0);
  console.log(`${String(width).padStart(2)} columns: A·x ${ax.toFixed(3)} ms (${gmac(ax)} GMAC/s), Aᵀ·u ${atu.toFixed(3)} ms (${gmac(atu)} GMAC/s)`);
}
const r16 = out[0]!;
const r32 = out[1]!;
console.log(`16 over 32 columns: A·x ${(r16.ax_ms / r32.ax_ms).toFixed(2)}, Aᵀ·u ${(r16.atu_ms / r32.atu_ms).toFixed(2)}`);
console.log(JSON.stringify({ widths: out, ratio_16_32: { ax: r16.ax_ms / r32.ax_ms, atu: r16.atu_ms / r32.atu_ms } }));

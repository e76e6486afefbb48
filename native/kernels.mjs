// The one declaration of the native kernels: name, arguments (in call
// order, each `name: kind`), result and a line of documentation.
// scripts/gen-kernels.mjs derives from it
//   native/generated/kernels.inc           the N-API entry points: argument count, reading and
//                                          type checks into a <Name>Args struct, the registration
//                                          table; binding.cc holds only each <Name>Body (the
//                                          length rules and the call), which takes that struct,
//                                          so a changed declaration no longer compiles there;
//   src/tensor/native/addon.generated.ts   the addon's TypeScript type, which the backend's
//                                          calls and a compile-time check against the Kernels
//                                          interface (backend.ts) are typed by;
//   native/README.md                       the table of kernels between its generated markers.
// `npm run gen:kernels` rewrites them (the native build runs it too);
// test/tensor/kernel-declarations.test.ts fails when a committed copy is stale.
//
// Kinds (C++ view ← JavaScript value):
//   f32      FloatView ← Float32Array (used in place from its byteOffset)
//   f32?     the same; a zero-length array (EMPTY) skips an optional output
//   f32|null FloatView ← Float32Array or null (data nullptr)
//   u8       ByteView ← Uint8Array;  u16 TypedView<uint16_t> ← Uint16Array (raw bfloat16 bits)
//   u32|null TypedView<uint32_t> ← Uint32Array or null;  i32 Int32View ← Int32Array
//   f64      TypedView<double> ← Float64Array
//   size     int64_t ← a non-negative integer number;  int32 int32_t ← an integer in the int32 range
//   float    float ← a number finite as float32;  number double ← any number
//   flag     bool ← a boolean or the number 0 / 1
// Results: void (undefined), number, info (the object of info()), or buffer (an ArrayBuffer or null).

/** @typedef {{ name: string, concern: string, args: string, returns: 'void' | 'number' | 'info' | 'buffer', doc: string }} KernelDeclaration */

/** Concerns, in the order the docs list them. */
export const CONCERNS = {
  meta: 'The addon',
  training: 'Training ops (forward and backward passes of tensor/ops)',
  optimizer: 'Optimizer',
  quantization: 'Fake quantization (QAT)',
  profiler: 'Data-free profiler',
  codecs: 'Number formats and storage codecs (bfloat16, half, DBWA, ggml blocks)',
  ssm: 'State-space mixer (docs/mohawk.md)',
  attention: 'Fused attention (docs/attention.md)',
};

/** @type {KernelDeclaration[]} */
export const KERNELS = [
  { name: 'info', concern: 'meta', args: '', returns: 'info', doc: '{ version: 9, isa: "avx512" | "avx2" | "portable", threads }' },
  { name: 'adviseHugePages', concern: 'meta', returns: 'number', args: 'buffer: u8', doc: 'madvise(MADV_HUGEPAGE) on the whole 2 MiB pages inside buffer (Linux); the bytes advised' },
  { name: 'mapFile', concern: 'meta', returns: 'buffer', args: 'fd: int32, offset: size, length: size',
    doc: 'bytes [offset, offset + length) of the open file fd as an ArrayBuffer over a private copy-on-write mapping (mmap, POSIX; writes never reach the file), unmapped when the buffer is collected; null when the file cannot be mapped, or elsewhere' },
  { name: 'releaseMapped', concern: 'meta', returns: 'number', args: 'buffer: u8',
    doc: 'drops the pages of a mapFile buffer from this process (madvise MADV_DONTNEED on the pages it spans; a later read maps the file again); only for mapFile buffers. The bytes released' },
  { name: 'adviseWillNeed', concern: 'meta', returns: 'number', args: 'fd: int32, offset: size, length: size',
    doc: 'asks the OS to start reading bytes [offset, offset + length) of the open file fd into its cache in the background (posix_fadvise POSIX_FADV_WILLNEED); 1 when asked, 0 elsewhere or when refused' },
  { name: 'readFileStart', concern: 'meta', returns: 'number', args: 'fd: int32, offset: size, buffer: u8',
    doc: 'starts reading buffer.length bytes at offset of the open file fd into buffer as a background job (pread in 1 MiB chunks; buffer must stay alive and untouched until backgroundWait, whose result is the bytes read, fewer when the file ends first, or −errno); returns the handle, or 0 where the OS has no pread' },
  { name: 'backgroundWait', concern: 'meta', returns: 'number', args: 'handle: size',
    doc: 'completes a background job (its tasks nobody started run on the pool, then it waits for those in progress) and returns its result; each handle once' },
  { name: 'exitOnSigint', concern: 'meta', returns: 'number', args: 'message: u8',
    doc: 'installs a SIGINT handler (POSIX sigaction) that writes message (at most 255 bytes) to stderr and ends the process with exit code 130 at once, also in the middle of a synchronous call (a JavaScript listener runs only when the event loop does); a JavaScript SIGINT listener added later replaces it. 1 when installed, 0 elsewhere' },
  { name: 'sigintRemoves', concern: 'meta', returns: 'number', args: 'path: u8',
    doc: 'the file (a UTF-8 path, fewer than 4096 bytes; empty: none) that the exitOnSigint handler deletes before it ends the process: the temporary file of an atomic write in progress. 1 when set, 0 when the path is too long or elsewhere' },
  { name: 'retainFreedMemory', concern: 'meta', returns: 'number', args: 'mappedBlocks: size, trimThreshold: size', doc: 'glibc malloc maps at most mappedBlocks blocks on their own (0: every block comes from the heap, whatever its size) and gives free heap back to the OS only above trimThreshold (mallopt M_MMAP_MAX and M_TRIM_THRESHOLD, each at most 2^31 − 1); 1 when applied, 0 elsewhere' },

  { name: 'sgemm', concern: 'training', returns: 'void',
    args: 'batch: size, transA: flag, transB: flag, M: size, N: size, K: size, alpha: number, A: f32, lda: size, strideA: size, B: f32, ldb: size, strideB: size, beta: number, C: f32, ldc: size, strideC: size',
    doc: 'C_i = alpha·op(A_i)·op(B_i) + beta·C_i for i < batch (row-major, strided; beta 0 never reads C)' },
  { name: 'softmaxForward', concern: 'training', returns: 'void', args: 'x: f32, y: f32, rows: size, cols: size', doc: 'y = softmax of each row of x (y may be x)' },
  { name: 'softmaxBackward', concern: 'training', returns: 'void', args: 'y: f32, dy: f32, dx: f32, rows: size, cols: size', doc: 'dx += y ⊙ (dy − Σ y·dy) per row' },
  { name: 'causalSoftmaxForward', concern: 'training', returns: 'void', args: 'x: f32, y: f32, BH: size, T: size, S: size, offset: size', doc: 'softmax of [BH, T, S] scores keeping columns ≤ offset + t in row t (y may be x)' },
  { name: 'causalSoftmaxBackward', concern: 'training', returns: 'void', args: 'y: f32, dy: f32, dx: f32, BH: size, T: size, S: size, offset: size, accumulate: flag', doc: 'its backward; accumulate adds into dx, else writes it (masked columns 0)' },
  { name: 'rmsnormForward', concern: 'training', returns: 'void', args: 'x: f32, w: f32, y: f32, rstd: f32, rows: size, cols: size, eps: number', doc: 'y = x / rms(x) · w per row, rstd = 1 / rms' },
  { name: 'addRmsnormForward', concern: 'training', returns: 'void', args: 'x: f32, delta: f32, s: f32, w: f32, y: f32, rstd: f32, rows: size, cols: size, eps: number', doc: 's = x + delta, then rmsnormForward(s) into y and rstd, in one pass (s may be x or delta; y apart from all three)' },
  { name: 'rmsnormBackward', concern: 'training', returns: 'void', args: 'x: f32, w: f32, rstd: f32, dy: f32, dx: f32?, dw: f32?, rows: size, cols: size', doc: 'its backward into dx and dw (each may be EMPTY)' },
  { name: 'swigluForward', concern: 'training', returns: 'void', args: 'gate: f32, up: f32, y: f32, n: size', doc: 'y = silu(gate) ⊙ up' },
  { name: 'swigluBackward', concern: 'training', returns: 'void', args: 'gate: f32, up: f32, dy: f32, dgate: f32?, dup: f32?, n: size', doc: 'its backward into dgate and dup (each may be EMPTY)' },
  { name: 'rope', concern: 'training', returns: 'void',
    args: 'src: f32, dst: f32, cos: f32, sin: f32, B: size, T: size, H: size, D: size, style: number, direction: number, accumulate: flag',
    doc: 'rotary embedding of [B, T, H, D] by the [T, D/2] tables; style 0 half / 1 interleaved, direction 1 or −1 (the backward)' },
  { name: 'crossEntropyForward', concern: 'training', returns: 'number', args: 'logits: f32, targets: i32, lse: f32, rows: size, V: size, ignoreIndex: int32', doc: 'Σ over counted rows of lse − logit[target]; lse per row' },
  { name: 'crossEntropyBackward', concern: 'training', returns: 'void', args: 'logits: f32, targets: i32, lse: f32, dz: f32, rows: size, V: size, ignoreIndex: int32, scale: float', doc: 'dz += scale·(softmax − onehot) for counted rows' },
  { name: 'klForward', concern: 'training', returns: 'number', args: 'zT: f32, zS: f32, lseT: f32, lseS: f32, rowKl: f32, rows: size, V: size, invTau: float', doc: 'Σ rows KL(softmax(zT/τ) ‖ softmax(zS/τ)), per row in rowKl' },
  { name: 'klBackward', concern: 'training', returns: 'void', args: 'zT: f32, zS: f32, lseT: f32, lseS: f32, rowKl: f32, dT: f32?, dS: f32?, rows: size, V: size, invTau: float, g: float', doc: 'its backward, times g, into dT and dS (each may be EMPTY)' },
  { name: 'addInto', concern: 'training', returns: 'void', args: 'dst: f32, src: f32, n: size', doc: 'dst += src' },
  { name: 'add', concern: 'training', returns: 'void', args: 'a: f32, b: f32, out: f32, n: size', doc: 'out = a + b (out may be a or b)' },

  { name: 'sumSquares', concern: 'optimizer', returns: 'number', args: 'x: f32, n: size', doc: 'Σ x² in float64 over fixed chunks added in order (the same for any thread count): the global gradient norm²' },
  { name: 'scaleInPlace', concern: 'optimizer', returns: 'void', args: 'x: f32, n: size, s: float', doc: 'x *= s (gradient clipping)' },
  { name: 'adamw', concern: 'optimizer', returns: 'void',
    args: 'w: f32, g: f32, m: f32, v: f32, n: size, lr: float, beta1: float, beta2: float, eps: float, shrink: float, c1: float, c2: float',
    doc: 'one AdamW step in place (shrink = 1 − lr·weight decay, c1 / c2 the bias corrections)' },

  { name: 'fakeQuantForward', concern: 'quantization', returns: 'void',
    args: 'w: f32, out: f32, mask: u8, rows: size, cols: size, bits: int32, symmetric: flag, granularity: size, groupSize: size, clipRatio: number',
    doc: 'out = dequant(quant(w)) at 2–8 bits, granularity 0 tensor / 1 channel / 2 group; mask (or an empty Uint8Array) marks the unclipped weights' },
  { name: 'fakeQuantBackward', concern: 'quantization', returns: 'void', args: 'dy: f32, mask: u8, dw: f32, n: size', doc: 'dw += dy where mask (straight-through)' },

  { name: 'bf16Gemm', concern: 'profiler', returns: 'void',
    args: 'transA: flag, transB: flag, transC: flag, M: size, N: size, K: size, A: u16, lda: size, B: f32, ldb: size, C: f32, ldc: size, accumulate: flag',
    doc: 'C (+)= op(A)·bf16(op(B)) with A raw bfloat16 bits; transC stores the M×N result transposed (N×M)' },
  { name: 'weightStats', concern: 'profiler', returns: 'void', args: 'w: f32, rows: size, cols: size, bits: int32, shift: number, rowMin: f32, rowMax: f32, totals: f64', doc: 'moments about shift, Σw², row extremes and the RTN error at bits (0: none) in one pass; totals[6]' },
  { name: 'weightStatsBf16', concern: 'profiler', returns: 'void', args: 'w: u16, rows: size, cols: size, bits: int32, shift: number, rowMin: f32, rowMax: f32, totals: f64', doc: 'the same for raw bfloat16 bits' },
  { name: 'rtnErrors', concern: 'profiler', returns: 'number', args: 'w: f32, rows: size, cols: size, groupSize: size, symmetric: flag, perTensor: flag, bits: i32, out: f64', doc: 'out[j] = the RTN error at bits[j] (at most 16); −1, the index of a NaN weight, or −2 (a scale beyond f16)' },
  { name: 'rtnErrorsBf16', concern: 'profiler', returns: 'number', args: 'w: u16, rows: size, cols: size, groupSize: size, symmetric: flag, perTensor: flag, bits: i32, out: f64', doc: 'the same for raw bfloat16 bits' },
  { name: 'rtnErrorsStart', concern: 'profiler', returns: 'number', args: 'w: f32, rows: size, cols: size, groupSize: size, symmetric: flag, perTensor: flag, bits: i32, out: f64',
    doc: 'rtnErrors as an idle-priority background job (backgroundWait gives its result and fills out; w and out must stay alive and unchanged until then); returns the handle' },
  { name: 'rtnErrorsBf16Start', concern: 'profiler', returns: 'number', args: 'w: u16, rows: size, cols: size, groupSize: size, symmetric: flag, perTensor: flag, bits: i32, out: f64', doc: 'the same for raw bfloat16 bits' },
  { name: 'int8Quantize', concern: 'profiler', returns: 'number',
    args: 'w: u16, rows: size, cols: size, perRow: flag, byRows: u8, byCols: u8, scales: f32',
    doc: 'bf16 w (rows, cols multiples of 4) to int8 with one scale max|w|/127 per row (perRow) or column, as bytes q + 128 in the quad layouts byRows [rows/4][S(cols)][4] and byCols [cols/4][S(rows)][4], S(m) = ceil16(m) + 16; returns ‖w − s·q‖²/‖w‖², or −1 for a weight that is not finite' },
  { name: 'int8Gemm', concern: 'profiler', returns: 'number',
    args: 'a: u8, stride: size, m: size, n: size, k: size, fold: f32|null, b: f32, ldb: size, rowScale: f32|null, c: f32, ldc: size',
    doc: 'C [m, n] = rowScale ⊙ (A · (fold ⊙ B)) for a quad layout a [k/4][stride][4] of int8Quantize, B [k, n] quantized per column to int8 (values beyond 6 rms in float32); returns that outlier count, or −1 when fold ⊙ B is not finite' },
  { name: 'int8GemmFast', concern: 'profiler', returns: 'number', args: '', doc: '1 when int8Gemm runs on AVX-512 VNNI, 0 on its portable loop' },
  { name: 'symmetricEigenvalues', concern: 'profiler', returns: 'void', args: 'a: f64, n: size, count: size, out: f64', doc: 'the count largest eigenvalues of the symmetric n×n a, descending' },
  { name: 'normalFill', concern: 'profiler', returns: 'void', args: 'state: u32|null, spare: f64, out: f64, n: size', doc: 'n standard normals from the Rng state (4 words) and its cached value (spare[0] 1/0, spare[1]), advancing both as n Rng.normal() calls' },
  { name: 'pivotedCholeskyInverse', concern: 'profiler', returns: 'number', args: 'a: f64, n: size, scale: f64, tolerance: number, order: f64, diag: f64, inverse: f64',
    doc: 'pivoted Cholesky of the symmetric positive semi-definite n×n a (lower triangle read): each step takes the column whose remaining diagonal over scale[i] is largest, stopping once that ratio is at most tolerance; returns r, with order[0, r) the columns taken (as doubles), diag[0, r) the factor L\'s diagonal and inverse[0, r²) L⁻¹ (r×r, row-major); float64 in the order of src/tensor/factor.ts, the same bits' },
  { name: 'startBlockFill', concern: 'profiler', returns: 'void', args: 'state: u32|null, spare: f64, out: f32, n: size, width: size, gaussian: size',
    doc: 'the Krylov start block out [n, width]: in each row `gaussian` standard normals, then random signs ±1 (bit k of the generator word, a new word every 32 signs, none left over from a call before), advancing the Rng state and cached normal as that loop of Rng.normal() and Rng.nextUint32() calls' },
  { name: 'eigenBatchStart', concern: 'profiler', returns: 'number', args: 'a: f32, sizes: i32, counts: i32, heads: i32, tails: i32', doc: 'starts, in the background, the counts[i] largest eigenvalues of each symmetric float32 matrix packed in a (sizes[i]² values each; copied), reduced in float32, one matrix per thread, with rows [0, heads[i]) and [n − tails[i], n) of their unit eigenvectors; returns the handle' },
  { name: 'eigenBatchWait', concern: 'profiler', returns: 'void', args: 'handle: size, out: f64', doc: 'waits for the job and writes its results to out: per matrix its eigenvalues (descending), then the eigenvector rows (row-major, counts[i] columns)' },

  { name: 'f32ToBf16', concern: 'codecs', returns: 'void', args: 'src: f32, dst: u16, n: size', doc: 'round to nearest even (NaN stays a quiet NaN)' },
  { name: 'bf16ToF32', concern: 'codecs', returns: 'void', args: 'src: u16, dst: f32, n: size', doc: 'bfloat16 bits widened to float32 (a shift, exact)' },
  { name: 'f16ToF32', concern: 'codecs', returns: 'void', args: 'src: u16, dst: f32, n: size', doc: 'IEEE half bits widened to float32, exactly (a signalling NaN comes out quiet)' },
  { name: 'dbwaEncode', concern: 'codecs', returns: 'number', args: 'tier: size, src: f32, storage: u8, seed: u32|null', doc: 'pack src at tier 8, 12 or 16 bits (stochastic rounding with a 4-word seed, or nearest); −1 or the index of a non-finite value' },
  { name: 'dbwaDecode', concern: 'codecs', returns: 'void', args: 'tier: size, storage: u8, dst: f32', doc: 'unpack into dst' },
  { name: 'ggmlEncode', concern: 'codecs', returns: 'void', args: 'type: size, src: f32, dst: u8, importance: f32|null', doc: 'ggml blocks of type id Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 or Q2_K..Q6_K; dst exactly the encoded bytes; importance one weight per column' },
  { name: 'ggmlDecode', concern: 'codecs', returns: 'void', args: 'type: size, src: u8, dst: f32', doc: 'src holds exactly dst.length elements\' blocks' },
  { name: 'ggmlRoundTrip', concern: 'codecs', returns: 'void', args: 'type: size, src: f32, dst: f32', doc: 'dst = decode(encode(src)); dst may be src' },

  { name: 'ssmScanForward', concern: 'ssm', returns: 'void', args: 'x: f32, b: f32, c: f32, logit: f32, y: f32, states: f32, B: size, T: size, H: size, P: size, N: size, L: size', doc: 'the scan, keeping the state entering each chunk of L steps' },
  { name: 'ssmScanBackward', concern: 'ssm', returns: 'void',
    args: 'x: f32, b: f32, c: f32, logit: f32, states: f32, dy: f32, dx: f32?, db: f32?, dc: f32?, dlogit: f32?, B: size, T: size, H: size, P: size, N: size, L: size',
    doc: 'its backward (each gradient may be EMPTY)' },
  { name: 'ssmMatrixForward', concern: 'ssm', returns: 'void', args: 'b: f32, c: f32, logit: f32, m: f32, B: size, T: size, H: size, N: size', doc: 'the materialised mixer matrix M [B, H, T, T]' },
  { name: 'ssmMatrixBackward', concern: 'ssm', returns: 'void', args: 'b: f32, c: f32, logit: f32, m: f32, dm: f32, db: f32?, dc: f32?, dlogit: f32?, B: size, T: size, H: size, N: size', doc: 'its backward (each gradient may be EMPTY)' },
  { name: 'causalConvForward', concern: 'ssm', returns: 'void', args: 'x: f32, w: f32, bias: f32?, y: f32, B: size, T: size, C: size, K: size', doc: 'depthwise causal convolution of [B, T, C] by w [C, K] (bias may be EMPTY)' },
  { name: 'causalConvBackward', concern: 'ssm', returns: 'void', args: 'x: f32, w: f32, dy: f32, dx: f32?, dw: f32?, dbias: f32?, B: size, T: size, C: size, K: size', doc: 'its backward (each gradient may be EMPTY)' },

  { name: 'attentionFusedForward', concern: 'attention', returns: 'void',
    args: 'q: f32, k: f32, v: f32, o: f32, lse: f32, B: size, T: size, S: size, H: size, G: size, D: size, causal: flag, scale: float, window: size, softcap: float',
    doc: 'o [B, T, H, D] = softmax(cap(scale·q·kᵀ) + mask)·v for k, v [B, S, G, D] without the [B, H, T, S] maps; lse [B, H, T] each row\'s log-sum-exp (window, softcap 0: none)' },
  { name: 'attentionFusedBackward', concern: 'attention', returns: 'void',
    args: 'q: f32, k: f32, v: f32, o: f32, lse: f32, dO: f32, dq: f32?, dk: f32?, dv: f32?, B: size, T: size, S: size, H: size, G: size, D: size, causal: flag, scale: float, window: size, softcap: float',
    doc: 'its backward from o and lse (each gradient may be EMPTY)' },
];

/**
 * Types the C++ addon and loads it with a single require. Every load error
 * is reported as a reason string (never thrown): the caller decides whether
 * to fall back to the reference backend.
 */
import { createRequire } from 'node:module';
import { QkdError } from '../../errors.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../package-root.js';

export interface NativeAddon {
  info(): { version: number; isa: string; threads: number };
  sgemm(
    batch: number, transA: number, transB: number, M: number, N: number, K: number, alpha: number,
    A: Float32Array, lda: number, strideA: number,
    B: Float32Array, ldb: number, strideB: number,
    beta: number, C: Float32Array, ldc: number, strideC: number,
  ): void;
  softmaxForward(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  softmaxBackward(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void;
  /** Version 4: C = op(A)·bf16(B) with A raw bf16 bits (see kernel-types.ts Bf16GemmArgs). */
  bf16Gemm?(transA: number, M: number, N: number, K: number, A: Uint16Array, lda: number, B: Float32Array, ldb: number, C: Float32Array, ldc: number, accumulate: number): void;
  /** Version 6: ggml's block formats (type = ggml type id; see native/README.md). */
  ggmlEncode?(type: number, src: Float32Array, dst: Uint8Array, importance: Float32Array | null): void;
  ggmlDecode?(type: number, src: Uint8Array, dst: Float32Array): void;
  ggmlRoundTrip?(type: number, src: Float32Array, dst: Float32Array): void;
  /** Interface version 2 adds the fused kernels of kernel-types.ts under the same names (4 the profiler's, 5 DBWA's codecs). */
  [fused: string]: unknown;
}

export interface NativeStatus {
  loaded: boolean;
  /** Why it did not load (empty when loaded). */
  reason: string;
  path: string;
  isa?: string;
  threads?: number;
  version?: number;
}

/**
 * Interface versions this build understands (1: GEMM + softmax; 2: + fused
 * kernels; 3: + fake quantization; 4: + the profiler's bf16 GEMM, weight
 * statistics and symmetric eigenvalues; 5: + DBWA's packed-format codecs; 6: + ggml's block formats).
 */
const SUPPORTED_VERSIONS = [1, 2, 3, 4, 5, 6];
const REQUIRED = ['info', 'sgemm', 'softmaxForward', 'softmaxBackward'] as const;


/** The addon's thread limit (it caps larger values at 1024). */
const MAX_THREADS = 1024;
const ISA_NAMES = ['portable', 'avx2', 'avx512'] as const;

/**
 * Checks the environment variables the addon reads (QKD_THREADS, QKD_ISA).
 * The C++ side ignores a value it cannot parse, so a typo would silently
 * run with the defaults; here it is an error that names the variable.
 */
export function checkNativeEnvironment(env: NodeJS.ProcessEnv = process.env): void {
  const threads = env.QKD_THREADS;
  if (threads !== undefined && (!/^[1-9][0-9]*$/.test(threads) || Number(threads) > MAX_THREADS)) {
    throw new QkdError('CONFIG', `QKD_THREADS='${threads}' is not a thread count`, { field: 'QKD_THREADS', hint: `a whole number from 1 to ${MAX_THREADS}, or unset for every core` });
  }
  const isa = env.QKD_ISA;
  if (isa !== undefined && !(ISA_NAMES as readonly string[]).includes(isa)) {
    throw new QkdError('CONFIG', `QKD_ISA='${isa}' is not an instruction-set path`, { field: 'QKD_ISA', hint: `${ISA_NAMES.join(', ')} (a path above what the CPU has falls back), or unset` });
  }
}

export function loadNativeAddon(): { status: NativeStatus; addon: NativeAddon | null } {
  checkNativeEnvironment();
  const path = process.env.QKD_NATIVE_PATH ?? join(packageRoot(), 'build', 'Release', 'qkd_native.node');
  const fail = (reason: string) => ({ status: { loaded: false, reason, path }, addon: null });
  if (!existsSync(path)) return fail(`addon not built: ${path} does not exist (run \`npm run build:native\`)`);
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (err) {
    return fail(`could not load ${path}: ${(err as Error).message}`);
  }
  for (const fn of REQUIRED) {
    if (typeof addon[fn] !== 'function') return fail(`${path} lacks the function '${fn}' (stale build? run \`npm run build:native\`)`);
  }
  const info = addon.info();
  if (!SUPPORTED_VERSIONS.includes(info.version)) {
    return fail(`${path} has interface version ${info.version}, expected one of ${SUPPORTED_VERSIONS.join(', ')} (run \`npm run build:native\`)`);
  }
  return { status: { loaded: true, reason: '', path, isa: info.isa, threads: info.threads, version: info.version }, addon };
}

/**
 * Kernel registry: two backends behind one interface.
 *
 * `reference` is plain TypeScript (slow, obviously right: the definition and
 * the test oracle). `native` is the C++ addon for the kernels it provides,
 * falling back to the reference kernel for the rest. Kernels work on raw
 * buffers with explicit sizes; shapes, autograd and validation stay in the
 * ops that call them.
 */
import { QkdError } from '../errors.js';
import { referenceKernels } from './reference/kernels.js';
import { loadNativeAddon, type NativeStatus } from './native/binding.js';
import { isFloat64Mode, type FloatArray } from './tensor.js';

export type BackendName = 'reference' | 'native';

/**
 * Batched strided GEMM, row-major: for i < batch,
 * C_i = alpha · op(A_i) · op(B_i) + beta · C_i, with A_i = a[i·strideA ..].
 * op(A) is M×K: op(A)[m,k] = transA ? A[k·lda + m] : A[m·lda + k].
 * op(B) is K×N: op(B)[k,n] = transB ? B[n·ldb + k] : B[k·ldb + n].
 * beta = 0 overwrites C without reading it. A stride of 0 shares an operand.
 */
export interface GemmArgs {
  batch: number;
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  a: FloatArray;
  lda: number;
  strideA: number;
  b: FloatArray;
  ldb: number;
  strideB: number;
  beta: number;
  c: FloatArray;
  ldc: number;
  strideC: number;
}

export interface Kernels {
  readonly name: BackendName;
  sgemm(p: GemmArgs): void;
  /** y[r,:] = softmax(x[r,:]) for rows × cols contiguous rows; a row of all -Inf gives zeros. */
  softmaxForward(x: FloatArray, y: FloatArray, rows: number, cols: number): void;
  /** dx[r,c] += y[r,c]·(dy[r,c] − Σ_c' y[r,c']·dy[r,c']). */
  softmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, rows: number, cols: number): void;
}

let nativeKernels: Kernels | null | undefined; // undefined: not tried yet
let nativeStatusCache: NativeStatus | undefined;
let current: BackendName | undefined;
let warnedFallback = false;

/** Status of the C++ addon (loads it on first call). */
export function nativeStatus(): NativeStatus {
  if (nativeStatusCache === undefined) {
    const { status, addon } = loadNativeAddon();
    nativeStatusCache = status;
    nativeKernels = addon === null ? null : makeNativeKernels(addon);
  }
  return nativeStatusCache;
}

function makeNativeKernels(addon: NonNullable<ReturnType<typeof loadNativeAddon>['addon']>): Kernels {
  const guard = (name: string): void => {
    if (isFloat64Mode()) {
      throw new QkdError('STATE', `native.${name}: float64 buffers are for reference gradient checks only`, {
        hint: "useBackend('reference') inside withFloat64",
      });
    }
  };
  return {
    ...referenceKernels,
    name: 'native',
    sgemm(p) {
      guard('sgemm');
      addon.sgemm(p.batch, p.transA ? 1 : 0, p.transB ? 1 : 0, p.M, p.N, p.K, p.alpha, p.a, p.lda, p.strideA, p.b, p.ldb, p.strideB, p.beta, p.c, p.ldc, p.strideC);
    },
    softmaxForward(x, y, rows, cols) {
      guard('softmaxForward');
      addon.softmaxForward(x, y, rows, cols);
    },
    softmaxBackward(y, dy, dx, rows, cols) {
      guard('softmaxBackward');
      addon.softmaxBackward(y, dy, dx, rows, cols);
    },
  };
}

/**
 * Selects the backend for all following ops. `native` fails with a clear
 * error when the addon is not available.
 */
export function useBackend(name: BackendName): void {
  if (name === 'native') {
    const status = nativeStatus();
    if (!status.loaded) {
      throw new QkdError('NATIVE', `the native backend is not available: ${status.reason}`, {
        hint: 'a built addon (npm run build:native), or QKD_BACKEND=reference',
      });
    }
  } else if (name !== 'reference') {
    throw new QkdError('ARGUMENT', `unknown backend '${String(name)}'`, { field: 'backend', hint: "'reference' or 'native'" });
  }
  current = name;
}

/** Name of the backend in use (resolving the default on first call). */
export function currentBackend(): BackendName {
  if (current === undefined) current = defaultBackend();
  return current;
}

/** The kernels of the current backend. */
export function kernels(): Kernels {
  const name = currentBackend();
  if (name === 'native' && nativeKernels) return nativeKernels;
  return referenceKernels;
}

/**
 * Default: QKD_BACKEND if set, else native when it loads, else reference
 * with a single clear message on stderr.
 */
function defaultBackend(): BackendName {
  const requested = process.env.QKD_BACKEND;
  if (requested === 'reference') return 'reference';
  const status = nativeStatus();
  if (requested === 'native' && !status.loaded) {
    throw new QkdError('NATIVE', `QKD_BACKEND=native but the native addon did not load: ${status.reason}`);
  }
  if (requested !== undefined && requested !== 'native') {
    throw new QkdError('CONFIG', `QKD_BACKEND='${requested}' is not a backend`, { field: 'QKD_BACKEND', hint: "'reference' or 'native'" });
  }
  if (status.loaded) return 'native';
  if (!warnedFallback) {
    warnedFallback = true;
    process.stderr.write(`qkd: native kernels unavailable (${status.reason}); using the TypeScript reference backend (slower).\n`);
  }
  return 'reference';
}

/** Runs fn on a given backend, restoring the previous one afterwards. */
export function withBackend<T>(name: BackendName, fn: () => T): T {
  const previous = currentBackend();
  useBackend(name);
  try {
    return fn();
  } finally {
    current = previous;
  }
}

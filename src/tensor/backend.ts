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
import { loadNativeAddon, type NativeAddon, type NativeStatus } from './native/binding.js';
import { isFloat64Mode } from './tensor.js';
import type { BackendName, Kernels } from './kernel-types.js';
import type { FloatArray } from './tensor.js';

export type { BackendName, Bf16GemmArgs, GemmArgs, Kernels } from './kernel-types.js';

let nativeKernels: Kernels | null | undefined; // undefined: not tried yet
/** Kernels on fixed-type arrays (not tensor buffers), exempt from the float64-mode guard. */
const TYPED_KERNELS = new Set<string>(['weightStats', 'weightStatsBf16', 'symmetricEigenvalues', 'eigenBatchStart', 'eigenBatchWait', 'normalFill', 'pivotedCholeskyInverse', 'startBlockFill', 'rtnErrors', 'rtnErrorsBf16', 'rtnErrorsStart', 'rtnErrorsBf16Start', 'backgroundWait', 'int8Quantize', 'int8Gemm', 'int8GemmFast', 'f32ToBf16', 'bf16ToF32', 'f16ToF32', 'dbwaEncode', 'dbwaDecode']);
let nativeStatusCache: NativeStatus | undefined;
let loadedAddon: NativeAddon | null = null;
let current: BackendName | undefined;
let warnedFallback = false;

/** Status of the C++ addon (loads it on first call). */
export function nativeStatus(): NativeStatus {
  if (nativeStatusCache === undefined) {
    const { status, addon } = loadNativeAddon();
    nativeStatusCache = status;
    loadedAddon = addon;
    nativeKernels = addon === null ? null : makeNativeKernels(addon);
  }
  return nativeStatusCache;
}

/**
 * Kernels the native backend passes straight to the addon: their positional
 * arguments are the addon's (booleans become 0/1). sgemm and bf16Gemm take
 * an argument object in TypeScript and are adapted below.
 */
type Passthrough = Exclude<keyof Kernels & keyof NativeAddon, 'name' | 'sgemm' | 'bf16Gemm'>;
/** A Kernels signature's arguments as the addon receives them (float32 buffers in native mode). */
type AsPassed<P> = { [I in keyof P]: P[I] extends FloatArray ? Float32Array : P[I] };
/** The pass-through kernels whose TypeScript arguments the addon's declaration does not accept. */
type Mismatched = { [K in Passthrough]: AsPassed<Parameters<Kernels[K]>> extends Parameters<NativeAddon[K]> ? never : K }[Passthrough];
/** Compile-time check: a kernel named here has drifted from native/kernels.mjs. */
const declarationsAgree: [Mismatched] extends [never] ? true : { drifted: Mismatched } = true;
void declarationsAgree;

/**
 * The native kernel set: every Kernels member the addon declares runs
 * natively; the rest (kernels with no native version) stay on the reference.
 */
function makeNativeKernels(addon: NativeAddon): Kernels {
  const guard = (name: string): void => {
    if (isFloat64Mode()) {
      throw new QkdError('STATE', `native.${name}: float64 buffers are for reference gradient checks only`, {
        hint: "useBackend('reference') inside withFloat64",
      });
    }
  };
  const kernels: Record<string, unknown> = { ...referenceKernels, name: 'native' };
  const table = addon as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const key of Object.keys(referenceKernels) as (keyof Kernels)[]) {
    if (key === 'name' || key === 'sgemm' || key === 'bf16Gemm' || !(key in addon)) continue;
    const fn = table[key]!.bind(addon);
    // The profiler's kernels take typed arrays of fixed types, never float64 tensors.
    const guarded = !TYPED_KERNELS.has(key);
    kernels[key] = (...args: unknown[]) => {
      if (guarded) guard(key);
      return fn(...args.map((a) => (typeof a === 'boolean' ? (a ? 1 : 0) : a)));
    };
  }
  kernels.bf16Gemm = (p: Parameters<Kernels['bf16Gemm']>[0]) => addon.bf16Gemm(p.transA, p.transB ?? false, p.transC ?? false, p.M, p.N, p.K, p.a, p.lda, p.b, p.ldb, p.c, p.ldc, p.accumulate ?? false);
  kernels.sgemm = (p: Parameters<Kernels['sgemm']>[0]) => {
    guard('sgemm');
    addon.sgemm(p.batch, p.transA, p.transB, p.M, p.N, p.K, p.alpha, p.a as Float32Array, p.lda, p.strideA, p.b as Float32Array, p.ldb, p.strideB, p.beta, p.c as Float32Array, p.ldc, p.strideC);
  };
  return kernels as unknown as Kernels;
}

/** Names of the kernels the native backend runs natively (the rest use the reference). */
export function nativeKernelNames(): string[] {
  nativeStatus();
  if (!nativeKernels) return [];
  return (Object.keys(referenceKernels) as (keyof Kernels)[]).filter((k) => k !== 'name' && nativeKernels![k] !== referenceKernels[k]);
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

/** The addon's codec for ggml's block formats (`type` is the ggml type id). */
export type GgmlCodec = Pick<NativeAddon, 'ggmlEncode' | 'ggmlDecode' | 'ggmlRoundTrip'>;

/**
 * The native ggml codec when the native backend is in use, else null:
 * src/quant/ then runs its TypeScript definitions (the oracle the native
 * codec is tested against, byte for byte).
 */
export function nativeGgmlCodec(): GgmlCodec | null {
  if (currentBackend() !== 'native') return null;
  nativeStatus();
  return loadedAddon;
}

/**
 * Asks the OS to back a large buffer with huge pages (Linux transparent
 * huge pages, which many systems grant only on request): its first touch
 * then faults once per 2 MiB instead of once per 4 KiB. For buffers of
 * tens of megabytes or more that are allocated once and reused (the
 * profiler's read buffers); call it before writing to the buffer. A no-op
 * without the addon, elsewhere than Linux, and below 4 MiB.
 */
export function adviseHugePages<T extends ArrayBufferView>(array: T): T {
  if (array.byteLength >= 4 << 20 && nativeStatus().loaded) loadedAddon!.adviseHugePages(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
  return array;
}

const utf8 = new TextEncoder();

/**
 * From now on SIGINT writes `message` to stderr and ends the process with
 * exit code 130 at once, also during a long synchronous call (a JavaScript
 * SIGINT listener runs only when the event loop does, so a command busy in
 * one pass would ignore Ctrl-C until it was done). A JavaScript SIGINT
 * listener added later replaces it. False without the addon or where the
 * OS has no sigaction.
 */
export function exitOnSigint(message: string): boolean {
  if (!nativeStatus().loaded) return false;
  return loadedAddon!.exitOnSigint(utf8.encode(message)) === 1;
}

/**
 * The file the addon's SIGINT handler (exitOnSigint) deletes before it ends
 * the process, or null for none: the temporary file of an atomic write in
 * progress, so that a Ctrl-C in the middle of writing a large file leaves
 * no partial copy behind. A no-op unless the addon is already loaded.
 */
export function removeOnSigint(path: string | null): void {
  if (loadedAddon === null) return;
  loadedAddon.sigintRemoves(utf8.encode(path ?? ''));
}

/**
 * Bytes [offset, offset + length) of an open file, as a view of a private
 * memory mapping: no copy and no fresh memory (the pages are the OS's file
 * cache), undone when the view is collected. Writes to the view stay in
 * this process (copy-on-write). Null without the addon, where the OS has
 * no mmap, for an empty range, or with QKD_MMAP=off: the caller then reads
 * the file. docs/architecture.md, "Memory".
 */
export function mapFileRange(fd: number, offset: number, length: number): Uint8Array | null {
  if (length === 0 || process.env.QKD_MMAP === 'off' || !nativeStatus().loaded) return null;
  const buffer = loadedAddon!.mapFile(fd, offset, length);
  if (buffer === null) return null;
  mappedBuffers.add(buffer);
  return new Uint8Array(buffer);
}

/**
 * Asks the OS to start reading bytes [offset, offset + length) of an open
 * file into its cache in the background (Linux; a no-op elsewhere and
 * without the addon). A reader that knows what it will read next (the
 * profiler: the next tensor) asks for it before working on the current
 * one, so that a file not yet in memory comes off the disk while the CPU
 * works, instead of in the read that needs it.
 */
export function prefetchFileRange(fd: number, offset: number, length: number): void {
  if (length > 0 && nativeStatus().loaded) loadedAddon!.adviseWillNeed(fd, offset, length);
}

/**
 * Starts reading bytes [offset, offset + into.length) of an open file into
 * `into` on the addon's idle-priority background thread (1 MiB chunks; a
 * chunk nobody has started when the result is wanted is read by the thread
 * pool then). Returns the function that completes the read and gives the
 * number of bytes read (fewer when the file ends first; it throws the OS's
 * error), or null without the addon or pread: the caller then reads the
 * bytes itself. `into` is kept alive, and must not be touched, until then.
 * docs/architecture.md, "Threads".
 */
export function readFileRangeStart(fd: number, offset: number, into: Uint8Array): (() => number) | null {
  if (into.length === 0 || !nativeStatus().loaded) return null;
  const handle = loadedAddon!.readFileStart(fd, offset, into);
  if (handle === 0) return null;
  readsInFlight.add(into);
  let result: number | null = null;
  return () => {
    if (result === null) {
      try {
        result = loadedAddon!.backgroundWait(handle);
      } finally {
        readsInFlight.delete(into);
      }
    }
    if (result < 0) throw new Error(`read of ${into.length} bytes at ${offset} failed (errno ${-result})`);
    return result;
  };
}

/** Buffers a background read writes into (kept reachable until it is waited for). */
const readsInFlight = new Set<Uint8Array>();

/** The buffers mapFileRange made (releaseMapped touches no other memory). */
const mappedBuffers = new WeakSet<ArrayBuffer>();

/**
 * Drops the pages of a view of mapFileRange's from this process's memory (a
 * later read of it maps the file again). A mapping is undone only when its
 * buffer is collected, which Node does between event-loop turns, so a long
 * synchronous pass over a model (the profiler) releases each tensor when it
 * is done with it; otherwise every page it touched would count as the
 * process's memory until the pass ends. A no-op for any other array.
 */
export function releaseMapped(array: ArrayBufferView): void {
  if (mappedBuffers.has(array.buffer as ArrayBuffer)) loadedAddon!.releaseMapped(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
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

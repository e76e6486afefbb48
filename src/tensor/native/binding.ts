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
import { KERNEL_NAMES, type NativeAddon } from './addon.generated.js';

export type { AddonInfo, NativeAddon } from './addon.generated.js';

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
 * The interface version this build understands. Versions 1–6 added kernels
 * one group at a time; 7 generates every kernel from native/kernels.mjs, and
 * an addon must export all of them. 9: bf16Gemm takes transB and transC, and
 * the transpose kernel is gone (a build of 8 would take the new bf16Gemm
 * arguments in the old order).
 */
const INTERFACE_VERSION = 9;


/** The addon's thread limit (it caps larger values at 1024). */
const MAX_THREADS = 1024;
const ISA_NAMES = ['portable', 'avx2', 'avx512'] as const;

/**
 * Checks the environment variables the addon reads (QKD_THREADS, QKD_ISA)
 * QKD_MALLOC (retainFreedMemory) and QKD_MMAP (backend.mapFileRange).
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
  const mmap = env.QKD_MMAP;
  if (mmap !== undefined && mmap !== 'on' && mmap !== 'off') {
    throw new QkdError('CONFIG', `QKD_MMAP='${mmap}' is not a mapping setting`, { field: 'QKD_MMAP', hint: 'on (map the largest tensors of a model file when profiling it, the default), off (read them), or unset' });
  }
  const malloc = env.QKD_MALLOC;
  if (malloc !== undefined && malloc !== 'system' && malloc !== 'retain') {
    throw new QkdError('CONFIG', `QKD_MALLOC='${malloc}' is not a malloc setting`, { field: 'QKD_MALLOC', hint: "retain (keep freed memory in the heap, the default), system (leave malloc as it is), or unset" });
  }
}

/**
 * Keeps freed buffers in the C library's heap instead of handing them back
 * to the OS. A training step allocates and frees the same activation and
 * gradient buffers every step (typed arrays, which Node allocates with
 * malloc); by default glibc maps each large one fresh and unmaps it when it
 * is freed, so every step page-faults its memory in again. On this machine
 * that was a fifth to a third of a step, and half of a teacher's forward
 * (docs/architecture.md, "Memory"). Every block then comes from the heap,
 * whatever its size (no block is mapped on its own), and free heap is
 * returned to the OS only beyond 2 GiB. The heap keeps its peak size until
 * the process ends. QKD_MALLOC=system leaves malloc as it is.
 */
function retainFreedMemory(addon: NativeAddon): void {
  if (process.env.QKD_MALLOC === 'system') return;
  addon.retainFreedMemory(0, 2 ** 31 - 1);
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
  // Built from the same declaration (native/kernels.mjs) as this type: anything missing is a stale build.
  const missing = KERNEL_NAMES.filter((fn) => typeof (addon as unknown as Record<string, unknown>)[fn] !== 'function');
  if (missing.length > 0) return fail(`${path} lacks ${missing.map((fn) => `'${fn}'`).join(', ')} (a stale build: run \`npm run build:native\`)`);
  const info = addon.info();
  if (info.version !== INTERFACE_VERSION) {
    return fail(`${path} has interface version ${info.version}, expected ${INTERFACE_VERSION} (run \`npm run build:native\`)`);
  }
  retainFreedMemory(addon);
  return { status: { loaded: true, reason: '', path, isa: info.isa, threads: info.threads, version: info.version }, addon };
}

/**
 * The profile runner: streams a model's tensors one at a time from any
 * tensor source and computes the docs/algorithms.md §1 profile of each. Memory is
 * bounded by the largest tensor plus its scratch, so models larger than RAM
 * can be audited; the heavy part (randomised SVD) runs on the threaded GEMM.
 */
import { QkdError } from '../errors.js';
import { Rng } from '../tensor/random.js';
import { compositeScore, metricScores, noiseFromProbes, weightStatistics, type WeightData } from './metrics.js';
import { adviseHugePages, kernels, releaseMapped } from '../tensor/backend.js';
import { deferredSpectralSummary, solveNow, solveResults, type DeferredSpectrum } from './spectrum.js';
import type { AuditReport, MetricScores, ProfileSettings, TensorProfile } from './types.js';
import type { MappedTensor } from '../io/tensor-source.js';

/** What the runner needs from a model reader (io/tensor-source.ts provides it). */
export interface ProfileSource {
  readonly path: string;
  readonly tensors: readonly { name: string; shape: readonly number[] }[];
  /** The tensor as float32; a source may read into `scratch` (then valid until the next read into it). */
  readFloat32(name: string, scratch?: Float32Array): Float32Array;
  /**
   * The tensor's raw bfloat16 bits when it is stored as bf16, else null
   * (optional): the profiler then multiplies the weight as stored, with no
   * widened float32 copy. With `scratch` big enough the bits are read into
   * it (a view of it is returned).
   */
  readBf16?(name: string, scratch?: Uint16Array): Uint16Array | null;
  /**
   * Starts reading a bf16 tensor's bits into `scratch` in the background
   * (optional): the function it returns completes the read; null when the
   * source cannot (readBf16 then). The profiler reads the next tensor so
   * while it profiles this one.
   */
  readBf16Start?(name: string, scratch: Uint16Array): (() => Uint16Array) | null;
  /**
   * The tensor where it lies in a mapping of the file, when the source can
   * map it (optional; see mapAbove): bfloat16 or half bits, or float32.
   */
  mapped?(name: string): MappedTensor | null;
  /** Starts reading a tensor into the OS's file cache in the background (optional): the next one, while this one is profiled. */
  prefetch?(name: string): void;
}

export const DEFAULT_PROFILE_SETTINGS: ProfileSettings = {
  bits: 4,
  probes: 8,
  maxRank: 256,
  krylovDepth: 8,
  krylovDimensions: 0.7,
  products: 'auto',
  seed: 1234,
  weights: { kurtosis: 1, spectral_concentration: 1, noise_amplification: 1, reconstruction_error: 1 },
  noiseRef: 0.5,
  errorRef: 0.5,
};

export interface ProfileProgress {
  done: number;
  total: number;
  name: string;
  params: number;
}

export interface ProfileOptions extends Partial<Omit<ProfileSettings, 'weights'>> {
  weights?: Partial<MetricScores>;
  /** Only tensors whose name passes (default: all). */
  filter?: (name: string) => boolean;
  onTensor?: (progress: ProfileProgress) => void;
  /**
   * Called with each 2-D weight while it is in memory (for example to
   * measure quantization error at several bit widths for the allocator),
   * so the model is read once. It is called before the weight is profiled;
   * a function it returns is called once the profile has read the weight,
   * before the weight's memory is reused (so a visitor can measure in the
   * background meanwhile: plan.ts errorCollector).
   */
  visit?: (name: string, w: WeightData, rows: number, cols: number) => void | (() => void);
  /**
   * Tensors with more values than this are used where they lie in a
   * mapping of the file when the source can map them (ProfileSource.mapped;
   * default MAPPED_ABOVE, 2²⁶); the rest are read into the reused buffers.
   */
  mapAbove?: number;
}

export function profileSettings(options: ProfileOptions = {}): ProfileSettings {
  const s: ProfileSettings = {
    ...DEFAULT_PROFILE_SETTINGS,
    ...Object.fromEntries(Object.entries(options).filter(([k, v]) => v !== undefined && k in DEFAULT_PROFILE_SETTINGS && k !== 'weights')),
    weights: { ...DEFAULT_PROFILE_SETTINGS.weights, ...(options.weights ?? {}) },
  };
  const check = (ok: boolean, field: string, hint: string): void => {
    if (!ok) throw new QkdError('ARGUMENT', `profile: invalid ${field}`, { field, hint });
  };
  check(Number.isInteger(s.bits) && s.bits >= 2 && s.bits <= 8, 'bits', 'an integer from 2 to 8');
  check(Number.isInteger(s.probes) && s.probes >= 1 && s.probes <= 4096, 'probes', 'an integer from 1 to 4096');
  check(Number.isInteger(s.maxRank) && s.maxRank >= 1 && s.maxRank <= 4096, 'maxRank', 'an integer from 1 to 4096');
  check(Number.isInteger(s.krylovDepth) && s.krylovDepth >= 1 && s.krylovDepth <= 64, 'krylovDepth', 'an integer from 1 to 64');
  check(typeof s.krylovDimensions === 'number' && s.krylovDimensions >= 0.25 && s.krylovDimensions <= 16, 'krylovDimensions', 'a number from 0.25 to 16');
  check(['auto', 'int8', 'bf16'].includes(s.products), 'products', "'auto', 'int8' or 'bf16'");
  check(s.noiseRef > 0 && s.errorRef > 0, 'noiseRef/errorRef', 'positive numbers');
  for (const [k, v] of Object.entries(s.weights)) check(Number.isFinite(v) && v >= 0, `weights.${k}`, 'a non-negative number');
  return s;
}

/** Decoder layer index and a short kind ('q_proj', 'embed_tokens', ...) from a tensor name. */
export function tensorLayerAndKind(name: string): { layer: number | null; kind: string } {
  const m = /(?:^|\.)(?:layers|h|blk|block|blocks)\.(\d+)\.(.+)$/.exec(name);
  const stem = (m ? m[2]! : name).replace(/\.(weight|bias)$/, '');
  const kind = stem.split('.').pop() ?? stem;
  return { layer: m ? Number(m[1]) : null, kind };
}

/**
 * Profile of one tensor held in memory (float32, or bf16 used as stored).
 * One pass of weightStatistics gives the kurtosis, ‖W‖_F², the row steps and
 * the RTN error; the randomised SVD also returns the probe products of the
 * noise metric, so W is read by the GEMMs of the SVD and once more.
 */
export function profileTensor(name: string, shape: readonly number[], w: WeightData, settings: ProfileSettings, rng: Rng): TensorProfile {
  const pending = beginProfile(name, shape, w, settings, rng);
  const solve = pending.solve;
  return pending.finish(solve === null ? null : solveNow(solve));
}

/**
 * The error for a tensor holding NaN or ±Inf (its sums of powers are not
 * finite): its metrics would be NaN, or silently 0, and its spectrum has no
 * eigenvalues.
 */
function nonFiniteTensor(name: string, shape: readonly number[], w: WeightData, file: string | undefined): QkdError {
  let count = 0;
  let first = -1;
  if (w instanceof Float32Array) {
    for (let i = 0; i < w.length; i++) {
      if (Number.isFinite(w[i]!)) continue;
      if (count++ === 0) first = i;
    }
  } else {
    // bf16: exponent bits all ones.
    for (let i = 0; i < w.bf16.length; i++) {
      if ((w.bf16[i]! & 0x7f80) !== 0x7f80) continue;
      if (count++ === 0) first = i;
    }
  }
  const n = w instanceof Float32Array ? w.length : w.bf16.length;
  const cols = shape.length >= 2 && shape[0]! > 0 ? n / shape[0]! : n;
  const where = first < 0 ? '' : shape.length >= 2 ? ` (the first at row ${Math.floor(first / cols)}, column ${first % cols})` : ` (the first at index ${first})`;
  const message = `tensor ${name} [${shape.join(', ')}] holds ${count} NaN or infinite value${count === 1 ? '' : 's'}${where}: its profile would be meaningless`;
  return new QkdError(file === undefined ? 'ARGUMENT' : 'IO', message, { ...(file === undefined ? {} : { path: file }), hint: 'finite weights' });
}

/** A tensor's profile with its spectrum's eigen-solve still to do (DeferredSpectrum). */
interface PendingProfile {
  readonly solve: DeferredSpectrum['solve'];
  finish(theta: Float64Array | null): TensorProfile;
}

/**
 * profileTensor up to the eigen-solve: everything that reads `w` is done
 * (the solve only needs the Gram matrix, and uses no random numbers, so the
 * result is the same whenever it runs). `place` as in deferredSpectralSummary.
 */
function beginProfile(name: string, shape: readonly number[], w: WeightData, settings: ProfileSettings, rng: Rng, place?: (values: number) => Float32Array, file?: string): PendingProfile {
  const { layer, kind } = tensorLayerAndKind(name);
  const n = w instanceof Float32Array ? w.length : w.bf16.length;
  const matrix = shape.length >= 2 && n > 0;
  const rows = matrix ? shape[0]! : 1;
  const cols = n / rows;
  const stats = weightStatistics(w, rows, cols, matrix ? settings.bits : 0);
  if (!Number.isFinite(stats.frobenius2)) throw nonFiniteTensor(name, shape, w, file);
  const base = { name, shape: [...shape], kurtosis: stats.kurtosis, layer, kind };
  if (!matrix) {
    const profile: TensorProfile = { ...base, spectral_concentration: null, sigma_max_over_fro: null, noise_amplification: null, reconstruction_error: null, spectrum: null, scores: null, composite: null };
    return { solve: null, finish: () => profile };
  }
  const spectrum = deferredSpectralSummary(w, rows, cols, stats.frobenius2, { maxRank: settings.maxRank, depth: settings.krylovDepth, dimensionsPerRank: settings.krylovDimensions, rng, probes: settings.probes, int8: settings.products === 'auto' ? undefined : settings.products === 'int8' }, place);
  const noise = spectrum.probes ? noiseFromProbes(spectrum.probes, stats.steps, rng) : 0;
  const error = stats.reconstructionError;
  return {
    solve: spectrum.solve,
    finish: (theta) => {
      const summary = spectrum.finish(theta);
      const raw = { kurtosis: stats.kurtosis, spectral_concentration: summary.concentration, noise_amplification: noise, reconstruction_error: error };
      const scores = metricScores(raw, settings);
      return {
        ...base,
        spectral_concentration: summary.concentration,
        sigma_max_over_fro: summary.sigmaMaxOverFro,
        noise_amplification: noise,
        reconstruction_error: error,
        spectrum: summary.method,
        scores,
        composite: compositeScore(scores, settings.weights),
      };
    },
  };
}

/**
 * Collects pending profiles and runs their eigen-solves a batch at a time in
 * the background (kernels().eigenBatchStart: one matrix per pool thread, on
 * a thread of its own), finishing them in the order they came. While one
 * batch is solved the caller reads and measures the next tensors; a batch's
 * profiles are finished when the next batch is sent (or at the end). The
 * Gram matrices are packed into one buffer of SOLVE_BATCH_VALUES floats
 * (or one larger solve alone), which the kernel copies.
 */
class SolveBatch {
  private readonly pending: PendingProfile[] = [];
  private buffer = new Float32Array(0);
  private used = 0;
  private inFlight: { handle: number; profiles: PendingProfile[]; results: number } | null = null;

  constructor(private readonly done: (profile: TensorProfile) => void) {}

  /** Where the next tensor's Gram matrix goes; sends the batch first when it would not fit. */
  readonly place = (values: number): Float32Array => {
    if (this.used + values > this.buffer.length) {
      this.send();
      if (values > this.buffer.length) this.buffer = new Float32Array(Math.max(values, Math.min(SOLVE_BATCH_VALUES, 8 * values)));
    }
    const region = this.buffer.subarray(this.used, this.used + values);
    this.used += values;
    return region;
  };

  add(profile: PendingProfile): void {
    this.pending.push(profile);
    if (this.pending.length >= SOLVE_BATCH_TENSORS) this.send();
  }

  /** Sends what is pending and finishes everything. */
  finish(): void {
    this.send();
    const job = this.inFlight;
    this.inFlight = null;
    this.collect(job);
  }

  /** Waits for a batch in flight without finishing it (after an error elsewhere). */
  abandon(): void {
    const job = this.inFlight;
    this.inFlight = null;
    if (job !== null && job.handle > 0) kernels().eigenBatchWait(job.handle, new Float64Array(job.results));
  }

  /** Starts the pending batch's solves, then finishes the batch sent before it. */
  private send(): void {
    if (this.pending.length === 0) return;
    const solves = this.pending.filter((p) => p.solve !== null).map((p) => p.solve!);
    const results = solves.reduce((s, x) => s + solveResults(x), 0);
    const handle =
      solves.length > 0
        ? kernels().eigenBatchStart(this.buffer.subarray(0, this.used), Int32Array.from(solves, (s) => s.n), Int32Array.from(solves, (s) => s.count), Int32Array.from(solves, (s) => s.heads), Int32Array.from(solves, (s) => s.tails))
        : 0;
    const profiles = this.pending.splice(0);
    this.used = 0;
    // The new job is in flight before the previous one is collected, so that abandon() still waits for it
    // when collecting throws.
    const previous = this.inFlight;
    this.inFlight = { handle, profiles, results };
    this.collect(previous);
  }

  /** Waits for a batch and finishes its profiles in order. */
  private collect(job: { handle: number; profiles: PendingProfile[]; results: number } | null): void {
    if (job === null) return;
    const out = new Float64Array(job.results);
    if (job.handle > 0) kernels().eigenBatchWait(job.handle, out);
    let at = 0;
    for (const p of job.profiles) {
      const count = p.solve === null ? 0 : solveResults(p.solve);
      this.done(p.finish(p.solve === null ? null : out.subarray(at, at + count)));
      at += count;
    }
  }
}

/** At most this many tensors wait for a batched solve (a few per thread balances the pool). */
const SOLVE_BATCH_TENSORS = 8;
/**
 * The packed Gram matrices of one batch (4.7 MB: 8 matrices of 384², 4 of
 * the largest exact-route size, 512²). The kernel copies them into fresh
 * memory at first, so a larger batch costs more page faults than it saves
 * (8 × 512² was no faster on a width-512 model).
 */
const SOLVE_BATCH_VALUES = 8 * 384 * 384;

/** A tensor being read in the background (ProfileSource.readBf16Start) into one of the profiler's bf16 buffers. */
interface PendingRead {
  index: number;
  buffer: Uint16Array;
  finish: () => Uint16Array;
}

/**
 * Tensors with more values than this are used where they lie in a mapping
 * of the file when the source can map them (safetensors: BF16 and F32 as
 * they are, F16 widened from there), not read into the reused read
 * buffers. Those are sized for the largest tensor, but a page costs only
 * when first touched: on the Llama-3.2-1B shape the embedding alone had
 * touched 525 MB of the bf16 buffer, about 0.4 s of page zeroing during
 * which no other thread had work. Smaller tensors are still read: mapping
 * every tensor was a tie (docs/architecture.md, "Memory").
 */
const MAPPED_ABOVE = 1 << 26;

/**
 * Profiles every tensor of a source, one at a time. Each tensor gets its own
 * generator (seed, index) so a tensor's result does not depend on which
 * other tensors were profiled.
 */
export function profileModel(source: ProfileSource, options: ProfileOptions = {}): AuditReport {
  const settings = profileSettings(options);
  const start = performance.now();
  const chosen = source.tensors.filter((t) => (options.filter ? options.filter(t.name) : true));
  let params = 0;
  const tensors: TensorProfile[] = [];
  // One read buffer for all bf16 tensors and one for the float ones (the largest tensor's size), allocated on first use:
  // reading into them spares a fresh buffer (and its page faults) per tensor. Nothing keeps a tensor past its turn.
  // Untouched pages of them cost nothing, so a mapped largest tensor leaves most of them alone.
  const mapAbove = options.mapAbove ?? MAPPED_ABOVE;
  const largest = Math.max(0, ...chosen.map((t) => t.shape.reduce((a, b) => a * b, 1)));
  const scratch16 = source.readBf16 ? adviseHugePages(new Uint16Array(largest)) : undefined;
  // A second bf16 buffer for reading the next tensor in the background while this one is profiled (allocated when
  // such a read is first started): the read's copy then runs on a core the profile leaves idle, not between them.
  let spare16: Uint16Array | undefined;
  let pending: PendingRead | null = null;
  let scratch32: Float32Array | undefined;
  const float32Buffer = (): Float32Array => (scratch32 ??= adviseHugePages(new Float32Array(largest)));
  // The tensors' eigen-solves run a batch at a time in the background, one matrix per thread: a small tensor's
  // solve is serial work that would otherwise leave the other threads idle (993 width-256 tensors: most of the
  // audit's time), and meanwhile the next tensors are read and measured.
  const batch = new SolveBatch((profile) => {
    tensors.push(profile);
    params += profile.shape.reduce((a, b) => a * b, 1);
    options.onTensor?.({ done: tensors.length, total: chosen.length, name: profile.name, params });
  });
  // Starts the background read of tensor `next` (bf16 and not to be mapped) into the bf16 buffer the current
  // tensor is not in (inUse: its buffer, or undefined when it is in neither).
  const startNextRead = (next: number, inUse: Uint16Array | undefined): PendingRead | null => {
    const t = chosen[next];
    if (t === undefined || !source.readBf16Start || scratch16 === undefined) return null;
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (size > mapAbove && source.mapped) return null;
    const buffer = inUse === scratch16 ? (spare16 ??= adviseHugePages(new Uint16Array(largest))) : scratch16;
    const finish = source.readBf16Start(t.name, buffer);
    return finish === null ? null : { index: next, buffer, finish };
  };
  try {
    chosen.forEach((t, index) => {
      // A file not yet in memory then comes off the disk while this tensor is profiled.
      if (index + 1 < chosen.length) source.prefetch?.(chosen[index + 1]!.name);
      const size = t.shape.reduce((a, b) => a * b, 1);
      const read = pending?.index === index ? pending : null;
      pending = null;
      const map = read === null && size > mapAbove ? (source.mapped?.(t.name) ?? null) : null;
      let w: WeightData;
      let inUse: Uint16Array | undefined;
      if (read !== null) {
        w = { bf16: read.finish() };
        inUse = read.buffer;
      } else if (map?.dtype === 'f16') {
        // Halves are widened from the mapping into the float32 buffer (no copy of them on the way).
        w = float32Buffer().subarray(0, size);
        kernels().f16ToF32(map.data, w, size);
        releaseMapped(map.data);
      } else if (map?.dtype === 'bf16') w = { bf16: map.data };
      else if (map?.dtype === 'f32') w = map.data;
      else {
        const bf16 = source.readBf16?.(t.name, scratch16) ?? null;
        if (bf16 !== null && bf16.buffer === scratch16?.buffer) inUse = scratch16;
        w = bf16 !== null ? { bf16 } : source.readFloat32(t.name, float32Buffer());
      }
      pending = startNextRead(index + 1, inUse);
      const n = w instanceof Float32Array ? w.length : w.bf16.length;
      // Visitors build quantization plans, and only 2-D weights are quantized (a convolution kernel is not).
      const visited = t.shape.length === 2 && n > 0 && options.visit ? options.visit(t.name, w, t.shape[0]!, n / t.shape[0]!) : undefined;
      let profile: PendingProfile;
      try {
        profile = beginProfile(t.name, t.shape, w, settings, new Rng(settings.seed * 1000003 + index), batch.place, source.path);
      } catch (error) {
        // A visitor's background work on w must end before w is let go, even when profiling failed;
        // the profiling error is the one reported.
        try {
          if (typeof visited === 'function') visited();
        } catch {
          // reported below instead
        }
        throw error;
      }
      if (typeof visited === 'function') visited();
      batch.add(profile);
      // Nothing reads the tensor after this: a mapped one gives its pages back now.
      if (map !== null && map.dtype !== 'f16') releaseMapped(map.data);
    });
    batch.finish();
  } catch (error) {
    batch.abandon();
    // A read still in flight writes into a buffer this function owns: it ends before the error leaves.
    try {
      (pending as PendingRead | null)?.finish();
    } catch {
      // the first error is the one reported
    }
    throw error;
  }
  return { model: source.path, params, seconds: (performance.now() - start) / 1000, settings, tensors };
}

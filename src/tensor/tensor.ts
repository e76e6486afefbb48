/**
 * Float32 tensors with a shape, an optional gradient buffer and a link to the
 * op that produced them (for the autograd tape in tape.ts).
 *
 * Storage is contiguous and row-major. `reshape` is a free view (it shares
 * `data`); transposes and slices copy. Integer and half-precision data live
 * in RawTensor (dtype.ts) and take no part in autograd.
 *
 * Precision: tensors are float32. For gradient checks only, the reference
 * backend can run in float64 (`withFloat64`): every float buffer is then a
 * Float64Array behind the same type, so finite differences are exact to
 * ~1e-10 and test the backward formulas themselves.
 */
import { QkdError, fmtShape } from '../errors.js';

/** The float buffer type (Float64Array at run time inside withFloat64). */
export type FloatArray = Float32Array;

let float64Mode = false;

/** Allocates a zeroed float buffer of the current precision. */
export function allocFloat(size: number): FloatArray {
  return (float64Mode ? new Float64Array(size) : new Float32Array(size)) as FloatArray;
}

/**
 * A float buffer whose contents are arbitrary, for outputs a kernel writes
 * in full (a GEMM with beta 0). Large buffers skip the zero fill that typed
 * arrays get (Buffer.allocUnsafeSlow: malloc without memset; with the
 * addon's malloc setting the memory is usually a block the previous step
 * freed). Float64 mode and small sizes allocate as allocFloat does.
 */
export function allocUninitialized(size: number): FloatArray {
  if (float64Mode || size < UNINITIALIZED_MIN) return allocFloat(size);
  const bytes = Buffer.allocUnsafeSlow(size * 4);
  return new Float32Array(bytes.buffer, bytes.byteOffset, size);
}

/** Below this many values a zeroed allocation costs next to nothing. */
const UNINITIALIZED_MIN = 16384;

/**
 * Recycled gradient buffers, by length. Gradients of intermediate tensors
 * live only during one backward pass; reusing their memory avoids mapping
 * and page-faulting fresh memory every step (tens of MB per layer for
 * attention maps). Only float32 buffers are pooled.
 */
const gradPool = new Map<number, Float32Array[]>();
let pooledBytes = 0;
const MAX_POOLED_BYTES = 1 << 30;

/** A zeroed buffer, recycled when one of this length is free. */
export function takeZeroed(size: number): FloatArray {
  return takeBuffer(size, true);
}

/**
 * A buffer of `size` values, recycled when one of this length is free; its
 * contents are arbitrary unless `zero` (for callers that overwrite it all).
 */
export function takeBuffer(size: number, zero = false): FloatArray {
  if (!float64Mode) {
    const free = gradPool.get(size);
    const buf = free?.pop();
    if (buf !== undefined) {
      pooledBytes -= buf.byteLength;
      if (zero) buf.fill(0);
      return buf;
    }
  }
  return allocFloat(size);
}

/** Returns a buffer nobody uses any more to the pool. */
export function recycle(buf: FloatArray): void {
  // Views into larger buffers (arena gradients) and float64 buffers are never pooled.
  if (!(buf instanceof Float32Array) || buf.byteOffset !== 0 || buf.byteLength !== buf.buffer.byteLength) return;
  if (pooledBytes + buf.byteLength > MAX_POOLED_BYTES) return;
  let free = gradPool.get(buf.length);
  if (free === undefined) gradPool.set(buf.length, (free = []));
  free.push(buf);
  pooledBytes += buf.byteLength;
}

/** Copies numbers into a new float buffer of the current precision. */
export function floatFrom(values: ArrayLike<number>): FloatArray {
  const out = allocFloat(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i]!;
  return out;
}

/** True inside withFloat64 (then only the reference backend may run). */
export function isFloat64Mode(): boolean {
  return float64Mode;
}

/**
 * Runs `fn` with float64 buffers. Test-only: used by gradient checks. The
 * native backend refuses float64 buffers.
 */
export function withFloat64<T>(fn: () => T): T {
  const previous = float64Mode;
  float64Mode = true;
  try {
    return fn();
  } finally {
    float64Mode = previous;
  }
}

/**
 * Where a parameter's values live when they are not kept as float32 (DBWA
 * stores them packed). Such a tensor's `data` is an empty placeholder except
 * between `load` and `unload`; the layers load around their forward, the
 * tape loads a node's sourced inputs around that node's backward and hands
 * each finished gradient contribution to `addGrad` instead of keeping a
 * float32 gradient buffer.
 */
export interface ParameterSource {
  /** Points t.data at float32 values of the parameter (nested loads are counted). */
  load(t: Tensor): void;
  /** Ends one load; the last one releases the values (t.data becomes empty). */
  unload(t: Tensor): void;
  /** Adds one gradient contribution of t (the buffer stays the caller's). */
  addGrad(t: Tensor, grad: FloatArray): void;
}

/** The data of an unloaded sourced tensor. */
export const UNLOADED: FloatArray = new Float32Array(0);

/** Runs fn with t's values loaded when t has a ParameterSource (else just runs fn). */
export function withLoaded<T>(t: Tensor, fn: () => T): T {
  const source = t.source;
  if (source === null) return fn();
  source.load(t);
  try {
    return fn();
  } finally {
    source.unload(t);
  }
}

/** A node on the autograd tape: how to push an output's gradient to inputs. */
export interface GradNode {
  /** Op name, for error messages and debugging. */
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /** Adds this op's contribution into the inputs' gradient buffers. */
  backward(outGrad: FloatArray): void;
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(op: string, shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new QkdError('SHAPE', `${op}: invalid shape ${fmtShape(shape)}`, { hint: 'non-negative integer dimensions' });
    }
  }
}

export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  data: FloatArray;
  /** Gradient buffer (same size as data), allocated on first use in backward. */
  grad: FloatArray | null = null;
  requiresGrad: boolean;
  /** The op that produced this tensor, when recorded on the tape. */
  node: GradNode | null = null;
  /** Optional name (parameters carry their Hugging Face name). */
  name: string | undefined;
  /** Set on parameters whose values are stored elsewhere (see ParameterSource). */
  source: ParameterSource | null = null;

  constructor(shape: readonly number[], data?: FloatArray, requiresGrad = false) {
    checkShape('tensor', shape);
    this.shape = Object.freeze([...shape]);
    this.size = shapeSize(shape);
    if (data === undefined) {
      this.data = allocFloat(this.size);
    } else {
      // UNLOADED: a parameter whose values live in a ParameterSource.
      if (data.length !== this.size && data !== UNLOADED) {
        throw new QkdError('SHAPE', `tensor: data has ${data.length} elements but shape ${fmtShape(shape)} needs ${this.size}`);
      }
      this.data = data;
    }
    this.requiresGrad = requiresGrad;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Size of one dimension; negative indices count from the end. */
  dim(axis: number): number {
    const a = normaliseAxis('dim', axis, this.rank);
    return this.shape[a]!;
  }

  /** Returns the gradient buffer, allocating zeros if needed. */
  ensureGrad(): FloatArray {
    if (this.grad === null) this.grad = takeZeroed(this.size);
    return this.grad;
  }

  /** Copies the data out as a plain array (for tests and printing). */
  toArray(): number[] {
    return Array.from(this.data);
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new QkdError('SHAPE', `item: tensor has shape ${fmtShape(this.shape)}, not a single element`);
    return this.data[0]!;
  }

  toString(): string {
    return `Tensor${fmtShape(this.shape)}${this.name ? ` '${this.name}'` : ''}`;
  }
}

export function normaliseAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new QkdError('SHAPE', `${op}: axis ${axis} is out of range for a tensor of rank ${rank}`);
  }
  return a;
}

// ---- constructors -------------------------------------------------------

export function zeros(shape: readonly number[], requiresGrad = false): Tensor {
  return new Tensor(shape, undefined, requiresGrad);
}

export function full(shape: readonly number[], value: number, requiresGrad = false): Tensor {
  const t = new Tensor(shape, undefined, requiresGrad);
  t.data.fill(value);
  return t;
}

export function ones(shape: readonly number[], requiresGrad = false): Tensor {
  return full(shape, 1, requiresGrad);
}

export function scalar(value: number, requiresGrad = false): Tensor {
  return full([], value, requiresGrad);
}

/** Builds a tensor from numbers (copied into a float buffer). */
export function tensor(values: ArrayLike<number>, shape?: readonly number[], requiresGrad = false): Tensor {
  return new Tensor(shape ?? [values.length], floatFrom(values), requiresGrad);
}

/** Normal(0, std) entries from a seeded generator. */
export function randn(shape: readonly number[], rng: { normal(): number }, std = 1, requiresGrad = false): Tensor {
  const t = new Tensor(shape, undefined, requiresGrad);
  for (let i = 0; i < t.size; i++) t.data[i] = rng.normal() * std;
  return t;
}

/** Uniform [lo, hi) entries from a seeded generator. */
export function randu(shape: readonly number[], rng: { uniform(): number }, lo = 0, hi = 1, requiresGrad = false): Tensor {
  const t = new Tensor(shape, undefined, requiresGrad);
  for (let i = 0; i < t.size; i++) t.data[i] = lo + (hi - lo) * rng.uniform();
  return t;
}

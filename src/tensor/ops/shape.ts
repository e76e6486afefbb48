/**
 * Shape ops: reshape (a free view), permute / transpose, slice, concat,
 * selectRows (a gather of rows, for losses counted on some positions only).
 * Legend: the [outer, n, inner] view splits a shape around one axis.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { passGrad, record } from '../tape.js';
import { Tensor, allocFloat, normaliseAxis, shapeSize } from '../tensor.js';

/** Product of dims before `axis`, the axis size, product of dims after it. */
export function splitAround(shape: readonly number[], axis: number): { outer: number; n: number; inner: number } {
  let outer = 1;
  let inner = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i]!;
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i]!;
  return { outer, n: shape[axis]!, inner };
}

/** Shares x's data under a new shape; one dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const resolved = [...shape];
  const unknown = resolved.indexOf(-1);
  if (unknown !== resolved.lastIndexOf(-1)) throw new QkdError('SHAPE', `reshape: at most one -1 allowed in ${fmtShape(shape)}`);
  if (unknown >= 0) {
    const known = resolved.reduce((a, d, i) => (i === unknown ? a : a * d), 1);
    if (known === 0 || x.size % known !== 0) {
      throw new QkdError('SHAPE', `reshape: cannot reshape ${fmtShape(x.shape)} into ${fmtShape(shape)}`);
    }
    resolved[unknown] = x.size / known;
  }
  if (shapeSize(resolved) !== x.size || resolved.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new QkdError('SHAPE', `reshape: cannot reshape ${fmtShape(x.shape)} (${x.size} elements) into ${fmtShape(shape)}`);
  }
  const out = new Tensor(resolved, x.data);
  return record(out, 'reshape', [x], (dy) => passGrad(dy, x));
}

function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** Copies `src` (shape) into `dst` with axes reordered by `dims`; add=true accumulates. */
function permuteCopy(src: Float32Array, shape: readonly number[], dims: readonly number[], dst: Float32Array, inverse: boolean, add: boolean): void {
  const rank = shape.length;
  const inStrides = stridesOf(shape);
  const outShape = dims.map((d) => shape[d]!);
  // Source stride for each output axis.
  const srcStride = dims.map((d) => inStrides[d]!);
  const index = new Array<number>(rank).fill(0);
  const total = shapeSize(shape);
  let srcOff = 0;
  for (let o = 0; o < total; o++) {
    if (inverse) {
      if (add) src[srcOff]! += dst[o]!;
      else src[srcOff] = dst[o]!;
    } else if (add) dst[o]! += src[srcOff]!;
    else dst[o] = src[srcOff]!;
    // Odometer increment over the output index.
    for (let ax = rank - 1; ax >= 0; ax--) {
      index[ax]!++;
      srcOff += srcStride[ax]!;
      if (index[ax]! < outShape[ax]!) break;
      srcOff -= srcStride[ax]! * outShape[ax]!;
      index[ax] = 0;
    }
  }
}

/** Reorders axes (a copy): out.shape[i] = x.shape[dims[i]]. */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const rank = x.rank;
  const norm = dims.map((d) => normaliseAxis('permute', d, rank));
  if (norm.length !== rank || new Set(norm).size !== rank) {
    throw new QkdError('SHAPE', `permute: ${fmtShape(dims)} is not a permutation of the ${rank} axes of ${fmtShape(x.shape)}`);
  }
  const out = new Tensor(norm.map((d) => x.shape[d]!));
  permuteCopy(x.data, x.shape, norm, out.data, false, false);
  return record(out, 'permute', [x], (dy) => {
    permuteCopy(x.ensureGrad(), x.shape, norm, dy, true, true);
  });
}

/** Swaps two axes (a copy). */
export function transpose(x: Tensor, axis0 = -2, axis1 = -1): Tensor {
  const a = normaliseAxis('transpose', axis0, x.rank);
  const b = normaliseAxis('transpose', axis1, x.rank);
  const dims = x.shape.map((_, i) => i);
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

/** x[..., start:end, ...] along one axis (a copy). */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const ax = normaliseAxis('slice', axis, x.rank);
  const size = x.shape[ax]!;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > size || start > end) {
    throw new QkdError('SHAPE', `slice: range [${start}, ${end}) is invalid for axis ${ax} of size ${size} in ${fmtShape(x.shape)}`);
  }
  const { outer, inner } = splitAround(x.shape, ax);
  const len = end - start;
  const shape = [...x.shape];
  shape[ax] = len;
  const out = new Tensor(shape);
  for (let o = 0; o < outer; o++) {
    const src = (o * size + start) * inner;
    out.data.set(x.data.subarray(src, src + len * inner), o * len * inner);
  }
  return record(out, 'slice', [x], (dy) => {
    const dx = x.ensureGrad();
    for (let o = 0; o < outer; o++) {
      const dst = (o * size + start) * inner;
      const srcOff = o * len * inner;
      for (let i = 0; i < len * inner; i++) dx[dst + i]! += dy[srcOff + i]!;
    }
  });
}

/** Joins tensors along one axis; all other dims must agree. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new QkdError('SHAPE', 'concat: needs at least one tensor');
  const first = xs[0]!;
  const ax = normaliseAxis('concat', axis, first.rank);
  for (const t of xs) {
    const same = t.rank === first.rank && t.shape.every((d, i) => i === ax || d === first.shape[i]);
    if (!same) throw new QkdError('SHAPE', `concat: ${fmtShape(t.shape)} does not match ${fmtShape(first.shape)} outside axis ${ax}`);
  }
  const { outer, inner } = splitAround(first.shape, ax);
  const total = xs.reduce((s, t) => s + t.shape[ax]!, 0);
  const shape = [...first.shape];
  shape[ax] = total;
  const out = new Tensor(shape);
  let offset = 0;
  const offsets: number[] = [];
  for (const t of xs) {
    offsets.push(offset);
    const n = t.shape[ax]! * inner;
    for (let o = 0; o < outer; o++) out.data.set(t.data.subarray(o * n, (o + 1) * n), o * total * inner + offset * inner);
    offset += t.shape[ax]!;
  }
  return record(out, 'concat', xs, (dy) => {
    xs.forEach((t, k) => {
      if (!t.requiresGrad) return;
      const dx = t.ensureGrad();
      const n = t.shape[ax]! * inner;
      for (let o = 0; o < outer; o++) {
        const src = o * total * inner + offsets[k]! * inner;
        for (let i = 0; i < n; i++) dx[o * n + i]! += dy[src + i]!;
      }
    });
  });
}

/**
 * Rows `rows` of a matrix x [R, D] (any leading dims flatten into R): out[i] =
 * x[rows[i]], shape [rows.length, D]. A row may repeat; the backward pass
 * adds each output row's gradient into the row it came from.
 */
export function selectRows(x: Tensor, rows: Int32Array): Tensor {
  const D = x.shape[x.rank - 1];
  if (x.rank < 1 || D === undefined) throw new QkdError('SHAPE', `selectRows: needs at least one axis, got ${fmtShape(x.shape)}`);
  const R = D === 0 ? 0 : x.size / D;
  rows.forEach((r, i) => {
    if (!Number.isInteger(r) || r < 0 || r >= R) throw new QkdError('SHAPE', `selectRows: row ${r} at position ${i} is outside [0, ${R}) of ${fmtShape(x.shape)}`);
  });
  const out = new Tensor([rows.length, D]);
  rows.forEach((r, i) => out.data.set(x.data.subarray(r * D, (r + 1) * D), i * D));
  return record(out, 'selectRows', [x], (dy) => {
    const dx = x.ensureGrad();
    rows.forEach((r, i) => {
      for (let j = 0; j < D; j++) dx[r * D + j]! += dy[i * D + j]!;
    });
  });
}

/** A copy that owns new storage (no graph link when not needed). */
export function clone(x: Tensor): Tensor {
  const data = allocFloat(x.size);
  data.set(x.data);
  const out = new Tensor(x.shape, data);
  return record(out, 'clone', [x], (dy) => {
    const dx = x.ensureGrad();
    for (let i = 0; i < dy.length; i++) dx[i]! += dy[i]!;
  });
}

/** A tensor that shares data but is cut from the graph (no gradient flows back). */
export function detach(x: Tensor): Tensor {
  return new Tensor(x.shape, x.data);
}

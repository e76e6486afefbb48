/**
 * Embedding lookup: gather rows of a table [V, C] by integer ids; backward
 * scatter-adds into the table's gradient (repeated ids accumulate).
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor } from '../tensor.js';

/** ids (any shape, given by idsShape) → [...idsShape, C]. */
export function embedding(ids: Int32Array, idsShape: readonly number[], table: Tensor): Tensor {
  if (table.rank !== 2) throw new QkdError('SHAPE', `embedding: table must be 2-D [V, C], got ${fmtShape(table.shape)}`);
  const [V, C] = table.shape as [number, number];
  const n = idsShape.reduce((a, b) => a * b, 1);
  if (n !== ids.length) throw new QkdError('SHAPE', `embedding: ${ids.length} ids do not fill shape ${fmtShape(idsShape)}`);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= V) {
      throw new QkdError('ARGUMENT', `embedding: token id ${id} at position ${i} is outside the vocabulary [0, ${V})`, { field: 'ids' });
    }
  }
  const out = new Tensor([...idsShape, C]);
  for (let i = 0; i < n; i++) out.data.set(table.data.subarray(ids[i]! * C, (ids[i]! + 1) * C), i * C);
  return record(out, 'embedding', [table], (dy) => {
    const dt = table.ensureGrad();
    for (let i = 0; i < n; i++) {
      const row = ids[i]! * C;
      for (let c = 0; c < C; c++) dt[row + c]! += dy[i * C + c]!;
    }
  });
}

/** Rows of a bfloat16 table [V, C] (raw bits), widened: a frozen embedding's lookup outside autograd. */
export function embeddingBf16(ids: Int32Array, idsShape: readonly number[], table: Uint16Array, V: number, C: number): Tensor {
  const n = idsShape.reduce((a, b) => a * b, 1);
  if (n !== ids.length || table.length !== V * C) throw new QkdError('SHAPE', `embeddingBf16: ${ids.length} ids for shape ${fmtShape(idsShape)}, table of ${table.length} values for [${V}, ${C}]`);
  const out = new Tensor([...idsShape, C]);
  const bits = new Uint32Array(out.data.buffer as ArrayBuffer, out.data.byteOffset, out.data.length);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= V) throw new QkdError('ARGUMENT', `embedding: token id ${id} at position ${i} is outside the vocabulary [0, ${V})`, { field: 'ids' });
    // bf16 is the high half of a float32.
    for (let c = 0; c < C; c++) bits[i * C + c] = table[id * C + c]! << 16;
  }
  return out;
}

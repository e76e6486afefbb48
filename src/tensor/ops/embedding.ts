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

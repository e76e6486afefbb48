/**
 * The packed tensors of a quantized weight in a safetensors checkpoint
 * (layout: quant/packed.ts): what to write, and reading them back with every
 * mismatch named. Kept out of quant/ so that number formats do not depend on
 * a file format.
 */
import { QkdError, fmtShape } from '../errors.js';
import type { SafetensorsFile, TensorToWrite } from '../io/safetensors.js';
import { fromF16, toF16 } from '../tensor/dtype.js';
import { packCodes, packedRowBytes, packedTensorNames, unpackCodes, type PackedTensorSpec } from '../quant/packed.js';
import { schemeGranularity, type QuantizedTensor } from '../quant/rtn.js';
import { groupsPerRow, type QuantScheme } from '../quant/scheme.js';

/** The safetensors tensors of a quantized weight (scales are f16-exact, so F16 is lossless). */
export function packedTensorsToWrite(name: string, q: QuantizedTensor): TensorToWrite[] {
  const names = packedTensorNames(name);
  const groups = groupsPerRow(q.cols, q.scheme.groupSize);
  const out: TensorToWrite[] = [
    { name: names.qweight, dtype: 'u8', shape: [q.rows, packedRowBytes(q.cols, q.bits)], data: () => packCodes(q.codes, q.rows, q.cols, q.bits) },
    { name: names.scales, dtype: 'f16', shape: [q.rows, groups], data: () => toF16(q.scales) },
  ];
  if (q.zeros) out.push({ name: names.zeros, dtype: 'u8', shape: [q.rows, groups], data: q.zeros });
  return out;
}

/** Finds the file holding a checkpoint tensor (sharded checkpoints have several). */
export type TensorLocator = (tensorName: string) => SafetensorsFile | undefined;

/**
 * Reads and validates the packed tensors of weight `name` [rows, cols].
 * Every mismatch is a QkdError naming the tensor (e.g. "X.qweight").
 */
export function readPackedTensor(locate: TensorLocator, dir: string, name: string, rows: number, cols: number, spec: PackedTensorSpec): QuantizedTensor {
  const { bits } = spec;
  if (bits >= 16) throw new QkdError('ARGUMENT', `readPackedTensor: '${name}' is stored as F16, not packed`, { field: name });
  const names = packedTensorNames(name);
  const groups = groupsPerRow(cols, spec.groupSize);
  const read = (tensor: string, dtype: 'u8' | 'f16', shape: number[], why: string) => {
    const file = locate(tensor);
    if (file === undefined) throw new QkdError('IO', `quantized checkpoint lacks tensor '${tensor}'`, { path: dir, field: tensor, hint: `${dtype.toUpperCase()} ${fmtShape(shape)} (${why})` });
    const e = file.entry(tensor);
    if (e.dtype !== dtype) throw new QkdError('DTYPE', `tensor '${tensor}' has dtype ${e.dtype.toUpperCase()}`, { path: file.path, field: tensor, hint: dtype.toUpperCase() });
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new QkdError('SHAPE', `tensor '${tensor}' has shape ${fmtShape(e.shape)}, expected ${fmtShape(shape)} (${why})`, { path: file.path, field: tensor });
    }
    return { data: file.read(tensor).data, path: file.path };
  };
  const rowBytes = packedRowBytes(cols, bits);
  const qweight = read(names.qweight, 'u8', [rows, rowBytes], `${rows} rows of ceil(${cols}·${bits}/8) = ${rowBytes} bytes`);
  const scalesRaw = read(names.scales, 'f16', [rows, groups], `${groups} group(s) per row for group_size ${spec.groupSize}`);
  const scales = fromF16(scalesRaw.data as Uint16Array);
  for (let i = 0; i < scales.length; i++) {
    if (!Number.isFinite(scales[i]!)) throw new QkdError('IO', `tensor '${names.scales}' holds a non-finite scale at index ${i}`, { path: scalesRaw.path, field: names.scales, hint: 'finite f16 scales' });
  }
  let zeros: Uint8Array | null = null;
  if (!spec.symmetric) {
    const z = read(names.zeros, 'u8', [rows, groups], 'one zero point per group, asymmetric');
    zeros = z.data as Uint8Array;
    const qmax = 2 ** bits - 1;
    const bad = zeros.findIndex((v) => v > qmax);
    if (bad >= 0) throw new QkdError('IO', `tensor '${names.zeros}' holds zero point ${zeros[bad]} at index ${bad}, above 2^${bits} − 1`, { path: z.path, field: names.zeros, hint: `zero points in [0, ${qmax}]` });
  } else if (locate(names.zeros) !== undefined) {
    throw new QkdError('IO', `tensor '${names.zeros}' is present but quantization_config says '${name}' is symmetric`, { path: dir, field: names.zeros, hint: 'no zeros tensor for symmetric weights' });
  }
  const codes = unpackCodes(qweight.data as Uint8Array, rows, cols, bits);
  const scheme: QuantScheme = { groupSize: spec.groupSize, symmetric: spec.symmetric, ...(spec.perTensor ? { perTensor: true } : {}) };
  return { rows, cols, bits, scheme, granularity: schemeGranularity(scheme), codes, scales, zeros };
}

/**
 * The packed quantized checkpoint format (format_version 1): bit-packing of
 * codes, the safetensors tensors of one quantized weight, and the
 * `quantization_config` section of config.json.
 *
 * Layout. A weight named X (e.g. "model.layers.0.mlp.up_proj.weight") of
 * shape [rows, cols] = [out, in], quantized at b ∈ {2..8} bits with groups of
 * g input columns (g = 0: one group per row), is stored as
 *
 *   X.qweight  U8  [rows, ceil(cols·b/8)]   codes, each row its own bitstream
 *   X.scales   F16 [rows, G]                G = ceil(cols/g), or 1 when g = 0
 *   X.zeros    U8  [rows, G]                asymmetric only
 *
 * Row r of X.qweight is an LSB-first bitstream: code c of the row occupies
 * stream bits [c·b, (c+1)·b), and stream bit k is bit (k mod 8) of byte
 * ⌊k/8⌋ (so at b = 4 code 0 is the low nibble of byte 0, code 1 the high
 * nibble; at b = 3 code 2 straddles bytes 0 and 1). Unused high bits of a
 * row's last byte are 0. Codes are unsigned; weight (r, c) in group
 * j = ⌊c/g⌋ dequantizes to (code − zero[r, j]) · scale[r, j], with zero =
 * 2^(b−1) when symmetric (no X.zeros tensor). A per-tensor scale is
 * replicated in every row. Weights at 16 bits are stored as F16 `X`; weights
 * not in `tensors` (1-D norms) as F32 `X`.
 *
 * config.json carries the float model's fields plus
 *   quantization_config: { quant_method: "qkd", format_version: 1,
 *     group_size, symmetric, per_tensor, method, avg_bits, bytes,
 *     tensors: { X: { bits, group_size, symmetric } } }
 * where `tensors` lists every quantized or 16-bit weight and is what the
 * loader trusts; the top-level scheme fields are defaults for entries that
 * omit them. `bytes` counts qweight + scales + zeros (or the F16 data) of
 * those weights and avg_bits = 8·bytes / their parameter count.
 */
import { QkdError } from '../errors.js';
import { PLAN_BITS, type PlanBits } from './scheme.js';

export const QUANT_METHOD = 'qkd';
export const QUANT_FORMAT_VERSION = 1;

/** Bytes of one packed row of `cols` codes at `bits`. */
export function packedRowBytes(cols: number, bits: number): number {
  return Math.ceil((cols * bits) / 8);
}

function checkPackArgs(op: string, length: number, expected: number, bits: number, what: string): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) {
    throw new QkdError('ARGUMENT', `${op}: bits must be an integer from 1 to 8, got ${bits}`, { field: 'bits' });
  }
  if (length !== expected) throw new QkdError('SHAPE', `${op}: ${length} ${what}, expected ${expected}`, { field: what });
}

/** Packs codes [rows, cols] (each < 2^bits) into rows of ceil(cols·bits/8) bytes, LSB first. */
export function packCodes(codes: Uint8Array, rows: number, cols: number, bits: number): Uint8Array {
  checkPackArgs('packCodes', codes.length, rows * cols, bits, 'codes');
  const rowBytes = packedRowBytes(cols, bits);
  const out = new Uint8Array(rows * rowBytes);
  const limit = 1 << bits;
  for (let r = 0; r < rows; r++) {
    let acc = 0; // pending bits, fewer than 8 between codes
    let pending = 0;
    let o = r * rowBytes;
    for (let c = r * cols; c < (r + 1) * cols; c++) {
      const v = codes[c]!;
      if (v >= limit) throw new QkdError('ARGUMENT', `packCodes: code ${v} at index ${c} does not fit ${bits} bits`, { field: 'codes', hint: `codes below ${limit}` });
      acc |= v << pending;
      pending += bits;
      while (pending >= 8) {
        out[o++] = acc & 0xff;
        acc >>>= 8;
        pending -= 8;
      }
    }
    if (pending > 0) out[o] = acc;
  }
  return out;
}

/** Inverse of packCodes. */
export function unpackCodes(packed: Uint8Array, rows: number, cols: number, bits: number): Uint8Array {
  checkPackArgs('unpackCodes', packed.length, rows * packedRowBytes(cols, bits), bits, 'packed bytes');
  const rowBytes = packedRowBytes(cols, bits);
  const out = new Uint8Array(rows * cols);
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    let available = 0;
    let i = r * rowBytes;
    for (let c = r * cols; c < (r + 1) * cols; c++) {
      while (available < bits) {
        acc |= packed[i++]! << available;
        available += 8;
      }
      out[c] = acc & mask;
      acc >>>= bits;
      available -= bits;
    }
  }
  return out;
}

/** Checkpoint tensor names of a quantized weight X. */
export function packedTensorNames(name: string): { qweight: string; scales: string; zeros: string } {
  return { qweight: `${name}.qweight`, scales: `${name}.scales`, zeros: `${name}.zeros` };
}

/** How one weight is stored, from quantization_config.tensors. */
export interface PackedTensorSpec {
  bits: PlanBits;
  groupSize: number;
  symmetric: boolean;
  perTensor: boolean;
}

/** JSON of one entry of quantization_config.tensors. */
export interface PackedTensorJson {
  bits: number;
  group_size: number;
  symmetric: boolean;
  per_tensor?: boolean;
}

/**
 * Parses quantization_config from config.json into the per-weight specs.
 * `path` names config.json in errors; fields are named in full, e.g.
 * "quantization_config.tensors.lm_head.weight.bits".
 */
export function parseQuantizationConfig(value: unknown, path: string): Map<string, PackedTensorSpec> {
  const field = (f: string): string => `quantization_config.${f}`;
  const bad = (f: string, message: string, hint: string): QkdError => new QkdError('CONFIG', `quantized checkpoint: ${message}`, { path, field: field(f), hint });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new QkdError('CONFIG', 'quantization_config is not an object', { path, field: 'quantization_config' });
  const qc = value as Record<string, unknown>;
  if (qc.quant_method !== QUANT_METHOD) throw bad('quant_method', `quant_method is ${JSON.stringify(qc.quant_method)}; only qkd's own packed format loads`, `"${QUANT_METHOD}"`);
  if (qc.format_version !== QUANT_FORMAT_VERSION) throw bad('format_version', `format_version is ${JSON.stringify(qc.format_version)}`, String(QUANT_FORMAT_VERSION));
  const tensors = qc.tensors;
  if (typeof tensors !== 'object' || tensors === null || Array.isArray(tensors)) throw bad('tensors', 'tensors is not an object', '{ name: { bits, group_size, symmetric } }');
  const specs = new Map<string, PackedTensorSpec>();
  for (const [name, raw] of Object.entries(tensors as Record<string, unknown>)) {
    const f = `tensors.${name}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(f, `entry for '${name}' is not an object`, '{ bits, group_size, symmetric }');
    const entry = raw as Record<string, unknown>;
    const bits = entry.bits;
    if (typeof bits !== 'number' || !(PLAN_BITS as readonly number[]).includes(bits)) throw bad(`${f}.bits`, `bits is ${JSON.stringify(bits)}`, PLAN_BITS.join(', '));
    const groupSize = entry.group_size ?? qc.group_size;
    if (typeof groupSize !== 'number' || !Number.isInteger(groupSize) || groupSize < 0) throw bad(`${f}.group_size`, `group_size is ${JSON.stringify(groupSize)}`, 'a non-negative integer (0 = per output channel)');
    const symmetric = entry.symmetric ?? qc.symmetric;
    if (typeof symmetric !== 'boolean') throw bad(`${f}.symmetric`, `symmetric is ${JSON.stringify(symmetric)}`, 'true or false');
    const perTensor = entry.per_tensor ?? qc.per_tensor ?? false;
    if (typeof perTensor !== 'boolean') throw bad(`${f}.per_tensor`, `per_tensor is ${JSON.stringify(perTensor)}`, 'true or false');
    specs.set(name, { bits: bits as PlanBits, groupSize, symmetric, perTensor });
  }
  return specs;
}

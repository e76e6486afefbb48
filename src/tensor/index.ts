/** The tensor engine's public surface. */
export * from './tensor.js';
export * from './dtype.js';
export * from './tape.js';
export * from './arena.js';
export * from './random.js';
export { useBackend, withBackend, currentBackend, nativeStatus, nativeKernelNames, kernels, type BackendName, type Kernels, type GemmArgs } from './backend.js';
export * from './ops/shape.js';
export * from './ops/elementwise.js';
export * from './ops/reduce.js';
export * from './ops/matmul.js';
export * from './ops/norm.js';
export * from './ops/embedding.js';
export * from './ops/rope.js';
export * from './ops/attention.js';
export * from './ops/loss.js';
export * from './ops/quant.js';
export * from './ops/ssm.js';

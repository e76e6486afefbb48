/**
 * Reverse-mode autograd on a tape.
 *
 * Ops call `record` after computing their output; when gradients are enabled
 * and some input requires a gradient, the node is appended to the tape.
 * `backward(loss)` walks the tape in reverse, calling each node's backward
 * with its output gradient; backward functions ADD into input gradients, so
 * several backward passes accumulate (gradient accumulation) until the
 * caller zeroes the gradients (ParameterArena.zeroGrad).
 *
 * Gradients of intermediate tensors are released after backward; leaf
 * tensors (parameters, inputs with requiresGrad) keep theirs, except
 * parameters with a ParameterSource (DBWA): the tape loads their values
 * around each node's backward and hands that node's gradient contribution
 * to the source at once.
 */
import { QkdError } from '../errors.js';
import { Tensor, recycle, type FloatArray, type GradNode } from './tensor.js';
import { kernels } from './backend.js';
import type { OpName } from './gradients.js';

let tape: Tensor[] = [];
let noGradDepth = 0;

/** True when ops should record gradients. */
export function gradEnabled(): boolean {
  return noGradDepth === 0;
}

/** Runs fn with gradient recording off (teacher forward passes, evaluation). */
export function noGrad<T>(fn: () => T): T {
  noGradDepth++;
  try {
    return fn();
  } finally {
    noGradDepth--;
  }
}

/**
 * Attaches `backward` to `output` if any input requires a gradient and
 * recording is on. Returns the output for chaining.
 */
export function record(output: Tensor, op: OpName, inputs: readonly Tensor[], backward: (outGrad: FloatArray) => void): Tensor {
  if (noGradDepth > 0) return output;
  let needed = false;
  for (const t of inputs) if (t.requiresGrad) needed = true;
  if (!needed) return output;
  const node: GradNode = { op, inputs, backward };
  output.node = node;
  output.requiresGrad = true;
  tape.push(output);
  return output;
}

/** Number of recorded nodes (for tests and leak checks). */
export function tapeLength(): number {
  return tape.length;
}

/** Drops the tape without running backward (e.g. after an evaluation forward with grads on). */
export function clearTape(): void {
  for (const t of tape) {
    t.node = null;
    t.grad = null;
  }
  tape = [];
}

/**
 * Back-propagates from `loss`. With no `seed`, loss must have one element
 * and its gradient is 1. With a seed (same size as loss), that buffer is the
 * output gradient (vector-Jacobian product).
 */
export function backward(loss: Tensor, seed?: FloatArray): void {
  if (loss.node === null) {
    throw new QkdError('STATE', `backward: ${loss} was not produced by a recorded op`, {
      hint: 'a tensor computed from inputs with requiresGrad, outside noGrad, and backward called once per forward',
    });
  }
  if (seed === undefined && loss.size !== 1) {
    throw new QkdError('SHAPE', `backward: loss has ${loss.size} elements; pass a seed gradient or reduce it to a scalar first`);
  }
  if (seed !== undefined && seed.length !== loss.size) {
    throw new QkdError('SHAPE', `backward: seed has ${seed.length} elements but the loss has ${loss.size}`);
  }
  const lossGrad = loss.ensureGrad();
  if (seed === undefined) lossGrad[0]! += 1;
  else for (let i = 0; i < seed.length; i++) lossGrad[i]! += seed[i]!;

  const nodes = tape;
  tape = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const out = nodes[i]!;
    const node = out.node!;
    const grad = out.grad;
    if (grad !== null) {
      const sourced = sourcedInputs(node.inputs);
      for (const t of sourced) t.source!.load(t);
      try {
        node.backward(grad);
        // A sourced parameter's contribution goes to its source; no float32 gradient buffer stays.
        for (const t of sourced) if (t.grad !== null) t.source!.addGrad(t, t.grad);
      } finally {
        // Also on an error, so the source is not left loaded with a stale gradient.
        for (const t of sourced) {
          if (t.grad !== null && t.grad !== grad) recycle(t.grad);
          t.grad = null;
          t.source!.unload(t);
        }
      }
      // Recycle the gradient unless an input adopted it (passGrad).
      if (!node.inputs.some((t) => t.grad === grad)) recycle(grad);
    }
    // Intermediate: release its gradient and graph link (keeps memory flat).
    out.node = null;
    out.grad = null;
  }
}

const NONE: readonly Tensor[] = [];

/** The distinct inputs that have a ParameterSource (usually none: no allocation then); loaded even when frozen, as a backward may read them. */
function sourcedInputs(inputs: readonly Tensor[]): readonly Tensor[] {
  let out: Tensor[] | null = null;
  for (const t of inputs) {
    if (t.source === null) continue;
    if (out === null) out = [];
    if (!out.includes(t)) out.push(t);
  }
  return out ?? NONE;
}

/** Gradient of an input that requires one, or null to skip the work. */
export function gradOf(t: Tensor): FloatArray | null {
  return t.requiresGrad ? t.ensureGrad() : null;
}

/**
 * Passes an op's output gradient `dy` unchanged to several inputs (add,
 * reshape, ...). The first input without a gradient buffer adopts `dy`
 * itself (no copy: the op's output releases it right after its backward);
 * the others add it in.
 */
export function passGrad(dy: FloatArray, ...inputs: Tensor[]): void {
  let adopter: Tensor | null = null;
  for (const t of inputs) {
    if (!t.requiresGrad) continue;
    if (t.grad === null && adopter === null) adopter = t;
    else kernels().addInto(t.ensureGrad(), dy, dy.length);
  }
  if (adopter !== null) {
    if (adopter.grad === null) adopter.grad = dy;
    else kernels().addInto(adopter.grad, dy, dy.length); // the same tensor passed twice
  }
}

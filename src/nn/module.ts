/**
 * Modules: named building blocks with forward hooks. A hook sees the module,
 * its full name and its output tensor after every forward; distillation
 * captures teacher and student features with them.
 */
import type { Tensor } from '../tensor/tensor.js';

export interface ForwardHookEvent {
  module: Module;
  /** Full dotted name, e.g. "model.layers.3.mlp". */
  name: string;
  output: Tensor;
  /** The input, for modules with one tensor input (Linear); GPTQ calibration reads it. */
  input?: Tensor;
}

export type ForwardHook = (event: ForwardHookEvent) => void;

export abstract class Module {
  readonly name: string;
  private hooks: ForwardHook[] = [];
  private readonly childModules: Module[] = [];

  constructor(name: string) {
    this.name = name;
  }

  /** Registers a submodule (for namedModules). Returns it for assignment. */
  protected child<M extends Module>(module: M): M {
    this.childModules.push(module);
    return module;
  }

  /** Calls the hooks with the output (and optionally the input) of a forward computation and returns the output. */
  protected emit(output: Tensor, input?: Tensor): Tensor {
    for (const hook of this.hooks) hook({ module: this, name: this.name, output, input });
    return output;
  }

  /** Adds a hook; the returned function removes it. */
  registerForwardHook(hook: ForwardHook): () => void {
    this.hooks.push(hook);
    return () => {
      this.hooks = this.hooks.filter((h) => h !== hook);
    };
  }

  /** This module and all descendants, by full name. */
  namedModules(): Map<string, Module> {
    const out = new Map<string, Module>();
    const visit = (m: Module): void => {
      out.set(m.name, m);
      for (const c of m.childModules) visit(c);
    };
    visit(this);
    return out;
  }
}

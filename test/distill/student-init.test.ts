import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { initStudent, prunedLayers, resolveStudentConfig, symmetricEigen, type StudentConfigInput } from '../../src/distill/student-init.js';
import { LlamaModel, createLlama } from '../../src/models/llama.js';
import type { LlamaConfig } from '../../src/models/llama-config.js';
import { AdamW, clipGradNorm } from '../../src/optim/adamw.js';
import { symmetricEigenvalues } from '../../src/swan/linalg.js';
import { byteTokens, loadDefaultCorpus, sampleBatch, sequentialBatches, splitTokens } from '../../src/data/corpus.js';
import { QkdError } from '../../src/errors.js';
import { Rng, backward, noGrad } from '../../src/tensor/index.js';

const base: Partial<LlamaConfig> = {
  vocab_size: 48, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2,
};

/** A random teacher with non-trivial norm weights (so folding them is tested) and larger weights than the default init. */
function teacherModel(config: Partial<LlamaConfig>, seed: number): LlamaModel {
  const model = createLlama({ ...config, initializer_range: 0.2 }, seed);
  const rng = new Rng(seed + 100);
  for (const e of model.arena.entries) if (e.shape.length === 1) for (let i = 0; i < e.size; i++) e.tensor.data[i] = 0.5 + rng.uniform();
  return model;
}

function ids(n: number, vocab: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: n }, () => rng.int(vocab));
}

function logits(model: LlamaModel, input: Int32Array, B: number, T: number): Float32Array {
  return noGrad(() => model.forward(input, B, T)).data.slice();
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function sameData(student: LlamaModel, name: string, teacher: LlamaModel, from: string): void {
  assert.deepEqual(Array.from(student.arena.get(name).data), Array.from(teacher.arena.get(from).data), `${name} ← ${from}`);
}

function configError(field: string, pattern: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof QkdError, `not a QkdError: ${String(err)}`);
    assert.equal(err.code, 'CONFIG');
    assert.equal(err.field, field);
    assert.match(err.message, pattern);
    return true;
  };
}

describe('prunedLayers', () => {
  it('takes every other layer from the first at half depth, evenly spaced otherwise', () => {
    assert.deepEqual(prunedLayers(8, 4), [0, 2, 4, 6]);
    assert.deepEqual(prunedLayers(4, 4), [0, 1, 2, 3]);
    assert.deepEqual(prunedLayers(4, 2), [0, 2]);
    assert.deepEqual(prunedLayers(12, 3), [0, 4, 8]);
    assert.throws(() => prunedLayers(2, 3), (e: unknown) => e instanceof QkdError && e.field === 'num_hidden_layers');
  });
});

describe('initStudent: pruned', () => {
  it('reproduces the teacher exactly when the student keeps every layer', () => {
    const teacher = teacherModel(base, 1);
    const student = initStudent(teacher, {}, 'pruned', 7);
    assert.deepEqual(Array.from(student.arena.data), Array.from(teacher.arena.data));
    const x = ids(12, 48, 2);
    assert.deepEqual(logits(student, x, 2, 6), logits(teacher, x, 2, 6));
  });

  it('copies embeddings, final norm, lm_head and layers 0 and 2 of four', () => {
    const teacher = teacherModel(base, 3);
    const student = initStudent(teacher, { num_hidden_layers: 2 }, 'pruned', 7);
    assert.equal(student.config.num_hidden_layers, 2);
    for (const name of ['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight']) sameData(student, name, teacher, name);
    for (const [l, from] of [[0, 0], [1, 2]] as const) {
      for (const suffix of ['input_layernorm.weight', 'self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight', 'self_attn.o_proj.weight', 'post_attention_layernorm.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight', 'mlp.down_proj.weight']) {
        sameData(student, `model.layers.${l}.${suffix}`, teacher, `model.layers.${from}.${suffix}`);
      }
    }
    const perLayer = teacher.arena.entries.filter((e) => e.name.startsWith('model.layers.0.')).reduce((n, e) => n + e.size, 0);
    assert.equal(student.parameterCount, teacher.parameterCount - 2 * perLayer);
  });

  it('unties a tied teacher: lm_head starts as the embedding', () => {
    const teacher = teacherModel({ ...base, tie_word_embeddings: true }, 4);
    const untied = initStudent(teacher, { tie_word_embeddings: false }, 'pruned', 7);
    sameData(untied, 'lm_head.weight', teacher, 'model.embed_tokens.weight');
    const x = ids(8, 48, 5);
    assert.deepEqual(logits(untied, x, 1, 8), logits(teacher, x, 1, 8));
  });

  it('rejects width, head and tying changes, naming the field', () => {
    const teacher = teacherModel(base, 5);
    assert.throws(() => initStudent(teacher, { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 1 }, 'pruned', 1), configError('hidden_size', /layer pruning keeps the width/));
    assert.throws(() => initStudent(teacher, { num_key_value_heads: 4 }, 'pruned', 1), configError('num_key_value_heads', /teacher's is 2/));
    assert.throws(() => initStudent(teacher, { num_hidden_layers: 5 }, 'pruned', 1), configError('num_hidden_layers', /exceeds the teacher's 4/));
    assert.throws(() => initStudent(teacher, { tie_word_embeddings: true }, 'pruned', 1), configError('tie_word_embeddings', /teacher does not/));
  });
});

describe('initStudent: svd', () => {
  it('reproduces the teacher at full width (norm weights folded exactly)', () => {
    const teacher = teacherModel(base, 6);
    const student = initStudent(teacher, {}, 'svd', 1);
    for (const e of student.arena.entries) if (e.name.endsWith('norm.weight')) assert.ok(e.tensor.data.every((v) => v === 1), `${e.name} is ones`);
    const x = ids(16, 48, 7);
    const t = logits(teacher, x, 2, 8);
    const scale = t.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(maxAbsDiff(logits(student, x, 2, 8), t) < 1e-4 * Math.max(scale, 1), 'logits match');
  });

  it('reproduces a tied teacher at full width as a tied student', () => {
    const teacher = teacherModel({ ...base, tie_word_embeddings: true }, 8);
    const student = initStudent(teacher, {}, 'svd', 1);
    assert.equal(student.config.tie_word_embeddings, true);
    const x = ids(16, 48, 9);
    assert.ok(maxAbsDiff(logits(student, x, 2, 8), logits(teacher, x, 2, 8)) < 1e-4);
  });

  it('shrinks width, heads, neurons and depth to the student shapes, deterministically', () => {
    const teacher = teacherModel(base, 10);
    const shape: StudentConfigInput = { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 1, intermediate_size: 24, num_hidden_layers: 2 };
    const a = initStudent(teacher, shape, 'svd', 1);
    const b = initStudent(teacher, shape, 'svd', 2);
    assert.deepEqual(a.arena.get('model.layers.1.self_attn.q_proj.weight').shape, [16, 16]);
    assert.deepEqual(a.arena.get('model.layers.1.self_attn.k_proj.weight').shape, [8, 16]);
    assert.deepEqual(a.arena.get('model.layers.0.mlp.down_proj.weight').shape, [16, 24]);
    assert.deepEqual(a.arena.get('lm_head.weight').shape, [48, 16]);
    assert.deepEqual(Array.from(a.arena.data), Array.from(b.arena.data), 'svd init does not depend on the seed');
    assert.ok(a.arena.data.every(Number.isFinite));
  });

  it('rejects shapes it cannot map, naming the field', () => {
    const teacher = teacherModel(base, 11);
    assert.throws(() => initStudent(teacher, { hidden_size: 16 }, 'svd', 1), configError('num_attention_heads', /head dim 4 .* differs from the teacher's 8.*expected: 2 heads/));
    assert.throws(() => initStudent(teacher, { hidden_size: 48, num_attention_heads: 6, num_key_value_heads: 2 }, 'svd', 1), configError('hidden_size', /exceeds the teacher's 32/));
    assert.throws(() => initStudent(teacher, { intermediate_size: 64 }, 'svd', 1), configError('intermediate_size', /exceeds/));
    assert.throws(() => initStudent(teacher, { num_key_value_heads: 4 }, 'svd', 1), configError('num_key_value_heads', /exceeds the teacher's 2 key\/value heads/));
    const mqa = teacherModel({ ...base, num_key_value_heads: 4 }, 12);
    assert.throws(() => initStudent(mqa, { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 1 }, 'svd', 1), configError('num_key_value_heads', /2 query heads per key\/value head, more than the teacher's 1/));
  });
});

describe('initStudent: svd across families', () => {
  for (const model_type of ['qwen2', 'qwen3', 'phi3', 'mistral'] as const) {
    it(`${model_type}: reproduces the teacher at full width and narrows it (biases, q/k norms, fused matrices)`, () => {
      const teacher = teacherModel({ ...base, model_type }, 21);
      const full = initStudent(teacher, {}, 'svd', 1);
      const x = ids(16, 48, 3);
      const t = logits(teacher, x, 2, 8);
      const scale = t.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(maxAbsDiff(logits(full, x, 2, 8), t) < 1e-4 * Math.max(scale, 1), 'logits match');
      const narrow = initStudent(teacher, { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 1, intermediate_size: 24, num_hidden_layers: 2 }, 'svd', 1);
      assert.equal(narrow.config.model_type, model_type);
      assert.ok(logits(narrow, x, 2, 8).every(Number.isFinite));
    });
  }
  for (const model_type of ['gemma2', 'gemma3_text'] as const) {
    it(`${model_type}: reproduces the teacher at full width (1 + w norms, output norms, √width embedding) and narrows it`, () => {
      const teacher = teacherModel({ ...base, model_type, head_dim: 8 }, 22);
      const full = initStudent(teacher, {}, 'svd', 1);
      for (const e of full.arena.entries) if (/(input_layernorm|pre_feedforward_layernorm)\.weight$/.test(e.name)) assert.ok(e.tensor.data.every((v) => v === 0), `${e.name} is 1 + 0`);
      const x = ids(16, 48, 3);
      const t = logits(teacher, x, 2, 8);
      const scale = t.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(maxAbsDiff(logits(full, x, 2, 8), t) < 1e-4 * Math.max(scale, 1), 'logits match');
      const narrow = initStudent(teacher, { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 1, intermediate_size: 24, num_hidden_layers: 2 }, 'svd', 1);
      assert.equal(narrow.config.model_type, model_type);
      assert.ok(logits(narrow, x, 2, 8).every(Number.isFinite));
    });
  }
});

describe('initStudent: svd on a trained teacher', () => {
  // A small byte-level teacher trained for a few seconds on the corpus.
  const teacherShape: Partial<LlamaConfig> = { vocab_size: 256, hidden_size: 32, intermediate_size: 88, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
  const B = 8;
  const T = 32;
  let teacher: LlamaModel;
  let validation: Int32Array;
  const evalLoss = (m: LlamaModel): number =>
    noGrad(() => {
      const batches = [...sequentialBatches(validation, B, T, 4)];
      return batches.reduce((s, b) => s + m.loss(m.forward(b.inputs, B, T), b.targets).item(), 0) / batches.length;
    });

  before(() => {
    const split = splitTokens(byteTokens(loadDefaultCorpus()));
    validation = split.validation;
    teacher = createLlama(teacherShape, 1);
    const opt = new AdamW(teacher.arena, { lr: 1e-2, weightDecay: 0.01 });
    const rng = new Rng(2);
    for (let step = 1; step <= 150; step++) {
      const batch = sampleBatch(split.train, B, T, rng);
      teacher.arena.zeroGrad();
      backward(teacher.loss(teacher.forward(batch.inputs, B, T), batch.targets));
      clipGradNorm(teacher.arena.grad, 1);
      opt.update(1e-2 * Math.min(1, step / 10));
    }
  });

  it('starts a half-width student far below the random-init loss', () => {
    const shape: StudentConfigInput = { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 2, intermediate_size: 44 };
    const teacherLoss = evalLoss(teacher);
    const svd = evalLoss(initStudent(teacher, shape, 'svd', 3));
    const random = evalLoss(initStudent(teacher, shape, 'random', 3));
    assert.ok(teacherLoss < 3, `teacher trained (${teacherLoss})`);
    assert.ok(svd < random - 1, `svd init ${svd.toFixed(3)} vs random ${random.toFixed(3)} (teacher ${teacherLoss.toFixed(3)})`);
  });
});

describe('initStudent: svd on a trained Gemma 3 teacher', () => {
  const teacherShape: Partial<LlamaConfig> = { model_type: 'gemma3_text', vocab_size: 256, hidden_size: 32, intermediate_size: 88, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, sliding_window: 16 };
  const B = 8;
  const T = 32;
  let teacher: LlamaModel;
  let validation: Int32Array;
  const evalLoss = (m: LlamaModel): number =>
    noGrad(() => {
      const batches = [...sequentialBatches(validation, B, T, 4)];
      return batches.reduce((s, b) => s + m.loss(m.forward(b.inputs, B, T), b.targets).item(), 0) / batches.length;
    });

  before(() => {
    const split = splitTokens(byteTokens(loadDefaultCorpus()));
    validation = split.validation;
    teacher = createLlama(teacherShape, 1);
    const opt = new AdamW(teacher.arena, { lr: 1e-2, weightDecay: 0.01 });
    const rng = new Rng(2);
    for (let step = 1; step <= 150; step++) {
      const batch = sampleBatch(split.train, B, T, rng);
      teacher.arena.zeroGrad();
      backward(teacher.loss(teacher.forward(batch.inputs, B, T), batch.targets));
      clipGradNorm(teacher.arena.grad, 1);
      opt.update(1e-2 * Math.min(1, step / 10));
    }
  });

  it('starts a half-width student far below the random-init loss', (t) => {
    const shape: StudentConfigInput = { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 2, intermediate_size: 44 };
    const teacherLoss = evalLoss(teacher);
    const svd = evalLoss(initStudent(teacher, shape, 'svd', 3));
    const random = evalLoss(initStudent(teacher, shape, 'random', 3));
    t.diagnostic(`val loss: teacher ${teacherLoss.toFixed(3)}, svd ${svd.toFixed(3)}, random ${random.toFixed(3)}`);
    assert.ok(teacherLoss < 3, `teacher trained (${teacherLoss})`);
    assert.ok(svd < random - 1, `svd init ${svd.toFixed(3)} vs random ${random.toFixed(3)} (teacher ${teacherLoss.toFixed(3)})`);
  });
});

describe('initStudent: random and config', () => {
  it('random is createLlama(studentConfig, seed)', () => {
    const teacher = teacherModel(base, 13);
    const student = initStudent(teacher, { hidden_size: 16, num_attention_heads: 2, num_key_value_heads: 1 }, 'random', 21);
    const expected = createLlama({ ...student.config }, 21);
    assert.deepEqual(Array.from(student.arena.data), Array.from(expected.arena.data));
  });

  it('inherits unset fields from the teacher and insists on its vocabulary', () => {
    const teacher = teacherModel({ ...base, rope_theta: 500 }, 14);
    const c = resolveStudentConfig(teacher.config, { num_hidden_layers: 1 });
    assert.equal(c.rope_theta, 500);
    assert.equal(c.hidden_size, 32);
    assert.equal(c.num_hidden_layers, 1);
    for (const method of ['pruned', 'svd', 'random'] as const) {
      assert.throws(() => initStudent(teacher, { vocab_size: 50 }, method, 1), configError('vocab_size', /student vocab_size 50 differs from the teacher's 48/));
    }
    assert.throws(() => initStudent(teacher, { rope_theta: 10000 }, 'pruned', 1), configError('rope_theta', /RoPE/));
    assert.throws(() => initStudent(teacher, {}, 'copy' as never, 1), configError('student.init', /unknown student init method 'copy'/));
  });
});

describe('symmetricEigen', () => {
  function check(a: Float64Array, n: number, what: string): void {
    const { values, vectors } = symmetricEigen(a, n);
    const reference = symmetricEigenvalues(a, n);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(values[i]! - reference[i]!) < 1e-9, `${what}: eigenvalue ${i}`);
    for (let i = 1; i < n; i++) assert.ok(values[i]! <= values[i - 1]!, `${what}: descending`);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let rebuilt = 0;
        let gram = 0;
        for (let k = 0; k < n; k++) {
          rebuilt += vectors[i * n + k]! * values[k]! * vectors[j * n + k]!;
          gram += vectors[k * n + i]! * vectors[k * n + j]!;
        }
        assert.ok(Math.abs(rebuilt - a[i * n + j]!) < 1e-9, `${what}: A[${i},${j}]`);
        assert.ok(Math.abs(gram - (i === j ? 1 : 0)) < 1e-9, `${what}: VᵀV[${i},${j}]`);
      }
    }
  }

  it('decomposes symmetric matrices: A = V Λ Vᵀ, V orthonormal, Λ descending', () => {
    const rng = new Rng(15);
    for (const n of [1, 2, 3, 9, 24]) {
      const a = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = rng.normal();
      check(a, n, `random ${n}`);
    }
    // Repeated eigenvalues, an already-diagonal matrix, and a rank-2 Gram matrix (many zero eigenvalues).
    const n = 8;
    const diag = new Float64Array(n * n);
    for (let i = 0; i < n; i++) diag[i * n + i] = i % 3;
    check(diag, n, 'diagonal with repeats');
    const low = new Float64Array(n * n);
    const x = Array.from({ length: 2 * n }, () => rng.normal());
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) low[i * n + j] = x[i]! * x[j]! + x[n + i]! * x[n + j]!;
    check(low, n, 'rank 2');
  });
});

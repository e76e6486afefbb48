// A frozen teacher held in bfloat16: no float32 copy of its weights, the
// bf16 GEMM in its forward, logits close to float32's (stated bound), a
// model too big for the memory refused before loading with the bytes it
// needs, and a distillation from a bf16 teacher.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomizeModel, scaledConfig } from '../helpers/families.js';
import { LlamaModel } from '../../src/models/llama.js';
import { saveLlama, loadLlama } from '../../src/models/llama-io.js';
import { parameterBytes, refuseIfTooBig } from '../../src/models/precision.js';
import { Bf16Store } from '../../src/tensor/bf16-store.js';
import { noGrad } from '../../src/tensor/index.js';
import { distill } from '../../src/train/distill.js';
import { parseDistillConfig } from '../../src/train/distill-config.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-bf16-'));

describe('frozen bf16 teachers', () => {
  for (const name of ['llama-3.2-1b', 'qwen2.5-0.5b', 'gemma-3-270m', 'phi-3-mini-4k'] as const) {
    it(`${name}: weights stay bf16 (no float32 arena), logits within 2% of float32's`, () => {
      const model = new LlamaModel(scaledConfig(name, 256, 64, 'quant'));
      randomizeModel(model, 9, 1 / 16);
      const path = join(dir, name);
      saveLlama(path, model);
      const f32 = loadLlama(path);
      const bf16 = loadLlama(path, { precision: 'bf16' });
      assert.equal(bf16.arena.data.length, 0, 'no float32 values');
      assert.equal(bf16.arena.grad.length, 0, 'no gradients');
      const store = bf16.arena.entries[0]!.tensor.source;
      assert.ok(store instanceof Bf16Store);
      assert.equal(store.bytes, parameterBytes(model.config, 'bf16'));
      const ids = Int32Array.from({ length: 32 }, (_, i) => (i * 29 + 3) % 256);
      const a = noGrad(() => f32.forward(ids, 1, 32)).data;
      const b = noGrad(() => bf16.forward(ids, 1, 32)).data;
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < a.length; i++) {
        diff += (a[i]! - b[i]!) ** 2;
        scale += a[i]! ** 2;
      }
      // Weights and activations rounded to bf16 (8-bit mantissa): RMS error relative to the logits' RMS.
      assert.ok(Math.sqrt(diff / scale) < 0.02, `${name}: relative RMS error ${Math.sqrt(diff / scale)}`);
    });
  }

  it('a model that does not fit is refused before loading, with the bytes it needs', () => {
    const config = scaledConfig('llama-3.2-1b', 256);
    assert.throws(() => refuseIfTooBig(config, 'float32', 'big', 1000), (e: Error & { field?: string }) => /needs 0\.00 GiB .* float32 \(values and gradients\), and 0\.00 GiB are available/.test(e.message) && e.field === 'precision');
    assert.doesNotThrow(() => refuseIfTooBig(config, 'bf16', 'big', parameterBytes(config, 'bf16')));
  });

  it('distills from a bf16 teacher (pruned init widens the copied layers)', async () => {
    const model = new LlamaModel(scaledConfig('qwen3-0.6b', 256, 32));
    randomizeModel(model, 4, 0.1);
    const teacher = join(dir, 'teacher');
    saveLlama(teacher, model);
    const config = parseDistillConfig({ recipe: 'kd', training: { steps: 2, batch_size: 2, seq_len: 16, eval_every: 2, checkpoint_every: 2 }, distillation: { teacher_precision: 'bf16' }, student: { init: 'pruned' } }, 'test');
    const r = await distill({ teacher, text: 'Call me Ishmael. '.repeat(200), outDir: join(dir, 'student'), config });
    assert.equal(r.steps, 2);
  });
});

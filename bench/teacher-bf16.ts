/**
 * npm run bench -- teacher-bf16 [--skip-1b]
 *
 * Frozen teachers held in bfloat16, in one run:
 * 1. The reference shape (width 1024, 8 layers, ~156M parameters): the same
 *    weights loaded in float32 and in bf16, a teacher forward batch (4 × 128
 *    tokens, no gradient) timed in each, the ratio, and the bf16 logits'
 *    RMS error relative to float32's.
 * 2. A synthetic model of Llama-3.2-1B's shape (its real config.json, 1.24B
 *    parameters, 128,256-token vocabulary), written as a bf16 checkpoint
 *    (2.5 GB), then in a fresh process: loaded as a bf16 teacher, two
 *    forward batches (1 × 128 tokens; the first also touches the process's
 *    activation memory for the first time), and the peak resident memory
 *    against the weights' bf16 bytes and the float32 bytes (values and
 *    gradients) the model would otherwise take.
 * Last stdout line: JSON {"reference":{...},"llama_3_2_1b":{...}}.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Rng, noGrad } from '../src/tensor/index.js';
import { toBf16 } from '../src/tensor/dtype.js';
import { LlamaModel } from '../src/models/llama.js';
import { llamaParameterSpecs } from '../src/models/llama-config.js';
import { configFromHfJson, llamaConfigJson, loadLlama, saveLlama } from '../src/models/llama-io.js';
import { parameterBytes } from '../src/models/precision.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { writeBytesAtomic } from '../src/io/atomic.js';
import { benchLlamaConfig, timeMedian, trainedLookingWeights } from './_util.js';

const GIB = 1024 ** 3;
const args = process.argv.slice(2);

/** The child: load a bf16 teacher, run one batch, report time and peak memory. */
if (args[0] === '--child') {
  const dir = args[1]!;
  const t0 = performance.now();
  const model = loadLlama(dir, { precision: 'bf16' });
  const loadSeconds = (performance.now() - t0) / 1000;
  const T = 128;
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919) % model.config.vocab_size);
  const t1 = performance.now();
  const logits = noGrad(() => model.forward(ids, 1, T));
  const forwardSeconds = (performance.now() - t1) / 1000;
  // A second forward: the first one also pays for the process's first touch of its activation memory.
  const t2 = performance.now();
  noGrad(() => model.forward(ids, 1, T));
  const warmSeconds = (performance.now() - t2) / 1000;
  let finite = true;
  for (const v of logits.data) if (!Number.isFinite(v)) finite = false;
  console.log(JSON.stringify({ params: model.parameterCount, load_s: loadSeconds, forward_s: forwardSeconds, warm_forward_s: warmSeconds, tokens: T, finite, peak_rss_bytes: process.resourceUsage().maxRSS * 1024 }));
  process.exit(0);
}

function reference(): Record<string, number> {
  const config = benchLlamaConfig(8);
  const model = new LlamaModel(config);
  const rng = new Rng(1);
  model.arena.entries.forEach((e, i) => e.tensor.data.set(trainedLookingWeights(e.shape, rng, i)));
  const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-bf16-'));
  try {
    saveLlama(dir, model);
    const f32 = loadLlama(dir);
    const bf16 = loadLlama(dir, { precision: 'bf16' });
    const B = 4;
    const T = 128;
    const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % config.vocab_size);
    let a: Float32Array | undefined;
    let b: Float32Array | undefined;
    const f32Seconds = timeMedian(() => (a = noGrad(() => f32.forward(ids, B, T)).data as Float32Array), 3, 1);
    const bf16Seconds = timeMedian(() => (b = noGrad(() => bf16.forward(ids, B, T)).data as Float32Array), 3, 1);
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < a!.length; i++) {
      diff += (a![i]! - b![i]!) ** 2;
      norm += a![i]! ** 2;
    }
    const r = { params: model.parameterCount, float32_tokens_per_s: (B * T) / f32Seconds, bf16_tokens_per_s: (B * T) / bf16Seconds, ratio: f32Seconds / bf16Seconds, logits_rel_rms_error: Math.sqrt(diff / norm) };
    console.log(`reference shape (${(r.params / 1e6).toFixed(1)}M params), teacher forward of ${B}×${T} tokens: float32 ${r.float32_tokens_per_s.toFixed(0)} tok/s, bf16 ${r.bf16_tokens_per_s.toFixed(0)} tok/s (${r.ratio.toFixed(2)}×); bf16 logits' RMS error ${(100 * r.logits_rel_rms_error).toFixed(3)}% of float32's`);
    return r;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function llama1b(): Record<string, unknown> {
  const json = JSON.parse(readFileSync(join('test', 'fixtures', 'hf-configs', 'llama-3.2-1b.json'), 'utf8')) as Record<string, unknown>;
  const config = configFromHfJson(json, 'llama-3.2-1b.json');
  const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-1b-'));
  try {
    // Random bf16 weights with a trained model's scale, one tensor in memory at a time; a 1M-value block is reused with a shifting offset (the values do not matter here, their bytes do).
    const rng = new Rng(2);
    const block = toBf16(Float32Array.from({ length: 1 << 20 }, () => rng.normal() * 0.02));
    const t0 = performance.now();
    writeSafetensors(
      join(dir, 'model.safetensors'),
      llamaParameterSpecs(config).map((s, k) => ({
        name: s.name,
        dtype: 'bf16' as const,
        shape: s.shape,
        data: () => {
          const n = s.shape.reduce((a, d) => a * d, 1);
          if (s.shape.length === 1) return toBf16(new Float32Array(n).fill(1));
          const out = new Uint16Array(n);
          for (let i = 0; i < n; i += block.length) out.set(block.subarray(0, Math.min(block.length, n - i)), i);
          out[k % n] = block[k % block.length]!;
          return out;
        },
      })),
      { format: 'pt' },
    );
    writeBytesAtomic(join(dir, 'config.json'), JSON.stringify(llamaConfigJson(config), null, 2) + '\n');
    console.log(`wrote a Llama-3.2-1B-shaped bf16 checkpoint in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const child = spawnSync(process.execPath, [process.argv[1]!, '--child', dir], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (child.status !== 0) throw new Error(`the 1B child failed: ${child.stderr}`);
    const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as { params: number; load_s: number; forward_s: number; warm_forward_s: number; tokens: number; finite: boolean; peak_rss_bytes: number };
    const bf16Bytes = parameterBytes(config, 'bf16');
    const f32Bytes = parameterBytes(config, 'float32');
    console.log(`Llama-3.2-1B shape (${(r.params / 1e9).toFixed(3)}B params) as a bf16 teacher: loaded in ${r.load_s.toFixed(1)} s, forward of ${r.tokens} tokens in ${r.forward_s.toFixed(2)} s (${(r.tokens / r.forward_s).toFixed(0)} tok/s, logits ${r.finite ? 'finite' : 'NOT finite'}), a second one in ${r.warm_forward_s.toFixed(2)} s (${(r.tokens / r.warm_forward_s).toFixed(0)} tok/s); peak RSS ${(r.peak_rss_bytes / GIB).toFixed(2)} GiB for ${(bf16Bytes / GIB).toFixed(2)} GiB of bf16 weights (float32 values + gradients would be ${(f32Bytes / GIB).toFixed(2)} GiB)`);
    return { ...r, bf16_weight_bytes: bf16Bytes, float32_bytes: f32Bytes, rss_over_weights: r.peak_rss_bytes / bf16Bytes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ref = reference();
const big = args.includes('--skip-1b') ? null : llama1b();
console.log(JSON.stringify({ reference: ref, llama_3_2_1b: big }));

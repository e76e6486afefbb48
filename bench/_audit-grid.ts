/**
 * `npm run bench -- audit --grid [--shapes a,b] [--dtypes f32,...] [--keep] [--no-torch]`:
 * `qkd audit` against a plain PyTorch implementation of the same metrics
 * (bench/torch_audit.py) on a grid of model shapes and file dtypes, both
 * timed as a user runs them: one process each, start-up and file reading
 * included (wall time of the child process).
 *
 * Shapes (synthetic LLaMA-family weights, Gaussian with outlier columns):
 *   w256-990t    width 256, 110 layers: 993 small tensors (per-tensor overhead)
 *   w512-42m     width 512, 8 layers, 42M parameters: the size of the float32
 *                model the speed issue first measured (short side 512: the
 *                Krylov route at its smallest)
 *   smollm2-135m SmolLM2-135M's shape (width 576, 30 layers, tied embeddings)
 *   qwen2.5-0.5b Qwen2.5-0.5B's shape (width 896, 24 layers, q/k/v biases, tied)
 *   w8192-1l     width 8192, one layer: 12 tensors of up to 67M values
 *   llama3.2-1b  Llama-3.2-1B's shape (width 2048, 16 layers, tied)
 * Dtypes: f32, f16, bf16 safetensors, and gguf-q8_0 (2-D weights in Q8_0).
 * Files are generated once per shape into the temp directory and removed
 * after the shape unless --keep. Last stdout line: JSON
 * {"cells":[{"shape","dtype","params","tensors","qkd_s","torch_s","ratio"}]}.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Rng } from '../src/tensor/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { writeGguf } from '../src/io/gguf-writer.js';
import { toBf16, toF16 } from '../src/tensor/dtype.js';
import { llamaConfig, llamaParameterSpecs, type LlamaConfig } from '../src/models/llama-config.js';
import { torchPython, trainedLookingWeights } from './_util.js';

const SHAPES: Record<string, Partial<LlamaConfig> & Record<string, unknown>> = {
  'w256-990t': { vocab_size: 8192, hidden_size: 256, intermediate_size: 768, num_hidden_layers: 110, num_attention_heads: 4, num_key_value_heads: 4 },
  'w512-42m': { vocab_size: 16000, hidden_size: 512, intermediate_size: 1408, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 8 },
  'smollm2-135m': { vocab_size: 49152, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, tie_word_embeddings: true },
  'qwen2.5-0.5b': { model_type: 'qwen2', vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, tie_word_embeddings: true },
  'w8192-1l': { vocab_size: 1024, hidden_size: 8192, intermediate_size: 8192, num_hidden_layers: 1, num_attention_heads: 64, num_key_value_heads: 8 },
  'llama3.2-1b': { vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, tie_word_embeddings: true },
};
const DTYPES = ['f32', 'f16', 'bf16', 'gguf-q8_0'] as const;
type Dtype = (typeof DTYPES)[number];

export interface GridCell {
  shape: string;
  dtype: Dtype;
  params: number;
  tensors: number;
  qkd_s: number;
  torch_s: number | null;
  ratio: number | null;
  qkd_params_per_s: number;
}

function listFlag(args: string[], name: string, all: readonly string[]): string[] {
  const at = args.indexOf(name);
  if (at < 0) return [...all];
  const picked = (args[at + 1] ?? '').split(',').filter(Boolean);
  for (const p of picked) if (!all.includes(p)) throw new Error(`${name}: unknown '${p}' (one of ${all.join(', ')})`);
  return picked;
}

/** Writes the shape's weights in one dtype (deterministic: the same values in every dtype). */
function writeModel(path: string, config: LlamaConfig, dtype: Dtype): void {
  const specs = llamaParameterSpecs(config);
  const rng = new Rng(7);
  const values = specs.map((s, i) => () => trainedLookingWeights(s.shape, rng, i));
  if (dtype === 'gguf-q8_0') {
    writeGguf(path, {
      metadata: { 'general.architecture': { type: 'string', value: 'qkd-bench' }, 'general.name': { type: 'string', value: 'audit grid' } },
      // Q8_0 blocks run along rows of 32: every weight here has a multiple of 32 columns.
      tensors: specs.map((s, i) => ({ name: s.name, shape: s.shape, type: s.shape.length === 2 ? ('Q8_0' as const) : ('F32' as const), data: values[i]! })),
    });
    return;
  }
  writeSafetensors(
    path,
    specs.map((s, i) => ({
      name: s.name,
      dtype: dtype,
      shape: s.shape,
      data: dtype === 'f32' ? values[i]! : dtype === 'f16' ? () => toF16(values[i]!()) : () => toBf16(values[i]!()),
    })),
    { format: 'pt' },
  );
}

/** Reads a file through once (into the page cache). */
function warm(file: string): void {
  const fd = openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 24);
    while (readSync(fd, chunk, 0, chunk.length, null) > 0);
  } finally {
    closeSync(fd);
  }
}

function timeChild(cmd: string, args: string[], env: NodeJS.ProcessEnv): { seconds: number; stdout: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, maxBuffer: 1 << 26 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return { seconds, stdout: r.stdout };
}

export function runAuditGrid(args: string[]): GridCell[] {
  const shapes = listFlag(args, '--shapes', Object.keys(SHAPES));
  const dtypes = listFlag(args, '--dtypes', DTYPES) as Dtype[];
  const keep = args.includes('--keep');
  const noTorch = args.includes('--no-torch');
  const python = noTorch ? null : torchPython();
  if (python === null && !noTorch) console.log('torch not installed: no reference column (apt-get install python3-torch libopenblas0-pthread)');
  const env = { ...process.env, QKD_THREADS: '2', CI: 'true' };
  const cells: GridCell[] = [];
  for (const shape of shapes) {
    const config = llamaConfig({ max_position_embeddings: 2048, ...SHAPES[shape]! });
    const specs = llamaParameterSpecs(config);
    const params = specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    const dir = join(tmpdir(), 'qkd-bench-audit-grid', shape);
    mkdirSync(dir, { recursive: true });
    for (const dtype of dtypes) {
      const file = join(dir, dtype === 'gguf-q8_0' ? 'model-Q8_0.gguf' : `model-${dtype}.safetensors`);
      if (!existsSync(file)) {
        const t0 = performance.now();
        writeModel(file, config, dtype);
        console.log(`generated ${shape} ${dtype}: ${(params / 1e6).toFixed(1)}M parameters, ${specs.length} tensors in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      } else {
        // A file kept from an earlier run may have left the page cache since; read it once, so that both sides
        // start from the warm cache a fresh write leaves (otherwise qkd, which runs first, pays the disk alone).
        warm(file);
      }
      // Both sides once untimed would hide the page cache's effect; each runs once, qkd first, on a warm cache from the write.
      const json = join(dir, 'report.json');
      const q = timeChild(process.execPath, ['bin/qkd.js', 'audit', file, '--json', json], env);
      let torchSeconds: number | null = null;
      if (python !== null) {
        const s = timeChild(python, ['bench/torch_audit.py', file, '4', '8', '64'], env);
        torchSeconds = s.seconds;
      }
      const cell: GridCell = { shape, dtype, params, tensors: specs.length, qkd_s: q.seconds, torch_s: torchSeconds, ratio: torchSeconds === null ? null : torchSeconds / q.seconds, qkd_params_per_s: params / q.seconds };
      cells.push(cell);
      console.log(`${shape.padEnd(13)} ${dtype.padEnd(10)} ${(params / 1e6).toFixed(1).padStart(7)}M ${String(specs.length).padStart(4)} tensors: qkd ${q.seconds.toFixed(2)} s (${(cell.qkd_params_per_s / 1e6).toFixed(0)}M params/s)` + (torchSeconds === null ? '' : `, PyTorch ${torchSeconds.toFixed(2)} s → ${cell.ratio!.toFixed(2)}x`));
      if (!keep) rmSync(file, { force: true });
    }
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
  return cells;
}

// llama.cpp's own quantizer (llama_model_quantize in the prebuilt libllama
// of the devDependency @node-llama-cpp/linux-x64), through the small
// harness bench/native/llama_quantize.cc compiled here once: the reference
// qkd's GGUF export is compared with, tensor by tensor.
import { mkdtempSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { FILE_TYPES, type MixtureName } from '../../src/compress/ggml-mixtures.js';

let harness: { exe: string; lib: string } | undefined;

function build(): { exe: string; lib: string } {
  if (harness !== undefined) return harness;
  const require = createRequire(import.meta.url);
  const bins = join(dirname(dirname(require.resolve('@node-llama-cpp/linux-x64'))), 'bins', 'linux-x64');
  const name = readdirSync(bins).find((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f));
  if (name === undefined) throw new Error(`no libllama*.so in ${bins}`);
  const exe = join(mkdtempSync(join(tmpdir(), 'qkd-llama-quantize-')), 'llama_quantize');
  const cc = spawnSync('c++', ['-O2', '-o', exe, 'bench/native/llama_quantize.cc', '-ldl'], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`compiling the llama_quantize harness: ${cc.stderr}`);
  return (harness = { exe, lib: join(bins, name) });
}

/** Quantizes an F32 GGUF with llama.cpp into `output` as file type `type` (no importance matrix). */
export function llamaQuantize(input: string, output: string, type: MixtureName, threads = 1): void {
  const { exe, lib } = build();
  const r = spawnSync(exe, [lib, input, output, String(FILE_TYPES[type]), String(threads)], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`llama_model_quantize failed: ${r.stderr.split('\n').slice(-5).join('\n')}`);
}

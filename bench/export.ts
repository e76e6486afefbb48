/**
 * `qkd export` to Q4_K_M against llama.cpp's own quantizer, same run, same
 * input: a generated LLaMA-shaped model of about 155M parameters stored as an
 * F32 GGUF (the usual input of llama-quantize) is converted by qkd's
 * exportGguf and by llama_model_quantize from the libllama that
 * @node-llama-cpp/linux-x64 ships (a devDependency), through a small harness
 * compiled here (bench/native/llama_quantize.cc). Both use the same number
 * of threads; both times include reading the input and writing the output.
 *
 * It also checks that the two files agree tensor by tensor: the same ggml
 * type and the same bytes (llama.cpp's mixture rules and its reference
 * quantizers, no importance matrix).
 *
 * Usage: npm run bench -- export [LAYERS=8]. Last stdout line: JSON.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Rng, nativeStatus } from '../src/tensor/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { writeBytesAtomic } from '../src/io/atomic.js';
import { openGguf } from '../src/io/gguf-reader.js';
import { llamaConfigJson } from '../src/models/llama-io.js';
import { llamaParameterSpecs } from '../src/models/llama-config.js';
import { writeLlama2cTokenizer } from '../src/data/llama2c-tokenizer.js';
import { exportGguf } from '../src/compress/export-gguf.js';
import { FILE_TYPES } from '../src/compress/ggml-mixtures.js';
import { benchLlamaConfig, trainedLookingWeights } from './_util.js';

const layers = Number(process.argv[2] ?? 8);
const config = benchLlamaConfig(layers);
const specs = llamaParameterSpecs(config);
const totalParams = specs.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
const dir = join(tmpdir(), `qkd-bench-export-${layers}`);
const input = join(dir, 'model-F32.gguf');

if (!existsSync(input)) {
  mkdirSync(dir, { recursive: true });
  console.log(`generating a ${(totalParams / 1e6).toFixed(1)}M-parameter F32 GGUF in ${dir} ...`);
  const rng = new Rng(7);
  writeSafetensors(join(dir, 'model.safetensors'), specs.map((s, i) => ({ name: s.name, dtype: 'f32' as const, shape: [...s.shape], data: () => trainedLookingWeights(s.shape, rng, i) })), { format: 'pt' });
  writeBytesAtomic(join(dir, 'config.json'), JSON.stringify(llamaConfigJson(config), null, 2));
  // A SentencePiece-style vocabulary of the model's size: <unk> <s> </s>, the 256 byte tokens, then pieces.
  const pieces = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
  while (pieces.length < config.vocab_size) pieces.push(` p${pieces.length}`);
  writeLlama2cTokenizer(join(dir, 'tokenizer.bin'), pieces, pieces.map((_, i) => (i < 259 ? 0 : -i)));
  exportGguf(dir, { out: input, type: 'F32', tokenizer: join(dir, 'tokenizer.bin'), name: 'bench' });
  rmSync(join(dir, 'model.safetensors'));
}

const status = nativeStatus();
if (!status.loaded) console.warn(`native addon not loaded (${status.reason}); timing the TypeScript codec`);
const threads = status.threads ?? 1;
const work = mkdtempSync(join(tmpdir(), 'qkd-bench-export-out-'));
const ours = join(work, 'qkd-Q4_K_M.gguf');
const theirs = join(work, 'llama-Q4_K_M.gguf');

const t0 = performance.now();
const result = exportGguf(input, { out: ours, type: 'Q4_K_M' });
const qkdSeconds = (performance.now() - t0) / 1000;
console.log(`qkd export:           ${(result.params / 1e6).toFixed(1)}M params in ${qkdSeconds.toFixed(2)} s = ${(result.params / qkdSeconds / 1e6).toFixed(1)}M params/s (${threads} threads, ${status.loaded ? 'native' : 'TypeScript'} codec)`);

const require = createRequire(import.meta.url);
let llamaSeconds: number | null = null;
let note = '';
try {
  const bins = join(dirname(dirname(require.resolve('@node-llama-cpp/linux-x64'))), 'bins', 'linux-x64');
  // libllama.v<version>.so (the version changes with the package; libllama-common is another library).
  const name = readdirSync(bins).find((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f));
  if (name === undefined) throw new Error(`no libllama*.so in ${bins}`);
  const lib = join(bins, name);
  const harness = join(work, 'llama_quantize');
  const cc = spawnSync('c++', ['-O2', '-o', harness, 'bench/native/llama_quantize.cc', '-ldl'], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`compiling the harness: ${cc.stderr}`);
  const r = spawnSync(harness, [lib, input, theirs, String(FILE_TYPES.Q4_K_M), String(threads)], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`llama_model_quantize failed: ${r.stderr.split('\n').slice(-5).join('\n')}`);
  llamaSeconds = Number(r.stdout.trim().split('\n').pop());
} catch (err) {
  note = (err as Error).message;
  console.log(`llama.cpp reference unavailable: ${note}`);
}

let sameType = 0;
let sameBytes = 0;
let tensors = 0;
if (llamaSeconds !== null) {
  console.log(`llama_model_quantize: ${(result.params / 1e6).toFixed(1)}M params in ${llamaSeconds.toFixed(2)} s = ${(result.params / llamaSeconds / 1e6).toFixed(1)}M params/s (${threads} threads)`);
  const a = openGguf(ours);
  const b = openGguf(theirs);
  try {
    for (const t of a.tensors) {
      tensors++;
      const u = b.tensors.find((x) => x.name === t.name);
      if (u === undefined || u.typeName !== t.typeName) continue;
      sameType++;
      if (Buffer.from(a.readBytes(t.name)).equals(Buffer.from(b.readBytes(t.name)))) sameBytes++;
    }
  } finally {
    a.close();
    b.close();
  }
  console.log(`tensors: ${sameType}/${tensors} of the same ggml type, ${sameBytes}/${tensors} byte-identical; files ${statSync(ours).size} vs ${statSync(theirs).size} bytes`);
  console.log(`ratio (qkd params/s over llama.cpp's): ${(llamaSeconds / qkdSeconds).toFixed(2)}×`);
}
rmSync(work, { recursive: true, force: true });
console.log(JSON.stringify({
  params: result.params,
  threads,
  qkd_s: qkdSeconds,
  llamacpp_s: llamaSeconds,
  ratio: llamaSeconds === null ? null : llamaSeconds / qkdSeconds,
  tensors,
  same_type: sameType,
  same_bytes: sameBytes,
  ...(note ? { note } : {}),
}));

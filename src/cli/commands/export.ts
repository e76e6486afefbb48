/** `qkd export`: a GGUF file that llama.cpp (ollama, LM Studio) runs. */
import { prepareCorpus } from '../corpus.js';
import type { Command } from 'commander';
import { QkdError } from '../../errors.js';
import { explicitly } from '../explicit.js';
import { exportGguf } from '../../compress/export-gguf.js';
import { choice, decimal, integer, positiveInt } from '../options.js';
import { GGUF_TYPE_NAMES } from '../../compress/ggml-mixtures.js';

interface ExportFlags {
  out: string;
  type?: string;
  budget?: number;
  plan?: string;
  tokenizer?: string;
  name?: string;
  force?: boolean;
  pure?: boolean;
  seed: number;
  imatrix?: string;
  imatrixBatches?: number;
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('write a GGUF file for llama.cpp: one ggml type, a llama.cpp mixture (Q4_K_M …), or a sensitivity-guided mix under a size budget')
    .argument('<model>', 'any model qkd loads: a model or run directory, a distill output, a packed checkpoint, a .gguf, a llama2.c .bin')
    .requiredOption('--out <file.gguf>', 'the GGUF file to write (an existing file only with --force)')
    .option('--type <type>', `a llama.cpp file type or ggml format: ${GGUF_TYPE_NAMES.join(', ')} (default Q8_0)`, choice('--type', GGUF_TYPE_NAMES))
    .option('--budget <bits>', 'bits per weight over the 2-D weights, block scales included: K-quant types chosen by sensitivity', decimal('--budget', { min: 0, exclusiveMin: true, max: 16 }))
    .option('--plan <file.json>', 'per-tensor ggml types (name → type) overriding the chosen ones')
    .option('--tokenizer <path>', "tokenizer file (default: the model's own)")
    .option('--name <name>', 'general.name in the file (default: the model path)')
    .option('--seed <n>', 'seed of the sensitivity profile (--budget)', integer('--seed'), 1234)
    .option('--imatrix <text>', "calibration text (a file, a directory or 'default'): weight the K-quant fits by each input feature's importance")
    .option('--imatrix-batches <n>', 'forward passes of 4 windows × 128 tokens for --imatrix', positiveInt('--imatrix-batches'), 8)
    .option('--pure', "every 2-D weight in the file type's base format, without llama.cpp's per-tensor rules (llama-quantize --pure)")
    .option('--force', 'replace an existing --out file')
    .action(async (model: string, o: ExportFlags, cmd: Command) => {
      if (o.imatrix === undefined && explicitly(cmd).has('imatrixBatches')) throw new QkdError('ARGUMENT', '--imatrix-batches needs --imatrix (the calibration text)', { field: '--imatrix-batches', hint: '--imatrix default, or a text file or directory' });
      if (o.imatrix !== undefined) await prepareCorpus(o.imatrix);
      const r = exportGguf(model, { out: o.out, type: o.type, budgetBits: o.budget, planFile: o.plan, tokenizer: o.tokenizer, name: o.name, force: o.force, pure: o.pure, seed: o.seed, imatrix: o.imatrix, imatrixBatches: o.imatrix === undefined ? undefined : o.imatrixBatches });
      for (const note of r.fallbacks) process.stderr.write(`qkd: ${note}\n`);
      if (r.imatrix !== undefined) {
        if (r.imatrix.weighted.length > 0) process.stderr.write(`qkd: importance from ${r.imatrix.tokens} calibration tokens weights the fits of ${r.imatrix.weighted.length} K-quant tensors\n`);
        else process.stderr.write('qkd: no tensor has a K-quant type, so --imatrix has nothing to weight (no calibration was run)\n');
        if (r.imatrix.unweighted.length > 0) process.stderr.write(`qkd: ${r.imatrix.unweighted.length} tensors have types with no fit to weight (${[...new Set(r.imatrix.unweighted.map((n) => r.types[n]))].join(', ')}), written as without --imatrix: ${r.imatrix.unweighted.join(', ')}\n`);
      }
      const histogram: Record<string, number> = {};
      for (const t of Object.values(r.types)) histogram[t] = (histogram[t] ?? 0) + 1;
      console.log(`${Object.keys(r.types).length} tensors (${Object.entries(histogram).map(([t, n]) => `${n}×${t}`).join(', ')}), ${r.bitsPerWeight.toFixed(3)} bits per weight, ${r.bytes} bytes -> ${r.out}`);
      console.log(JSON.stringify({ out: r.out, bytes: r.bytes, params: r.params, bits_per_weight: r.bitsPerWeight, file_type: r.fileType, types: histogram, fallbacks: r.fallbacks.length, ...(r.imatrix ? { imatrix_tokens: r.imatrix.tokens, imatrix_tensors: r.imatrix.weighted.length } : {}) }));
    });
}

/** `qkd eval`: perplexity and bits per byte of a model on held-out text. */
import type { Command } from 'commander';
import { evaluateModel, evaluateModelInLlamaCpp } from '../../eval/perplexity.js';
import { choice, positiveInt } from '../options.js';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('perplexity and bits per byte of a model on a text (by default its held-out last 10%)')
    .requiredOption('--model <path>', 'model directory, qkd run directory, or llama2.c .bin')
    .option('--data <path>', "text file, directory, or 'default' (embedded Moby-Dick)", 'default')
    .option('--tokenizer <path>', 'tokenizer.json or llama2.c tokenizer.bin (default: tokenizer.json beside the model)')
    .option('--seq-len <n>', "window length, at most the model's context (default: the model's max_position_embeddings)", positiveInt('--seq-len'))
    .option('--whole-file', 'score the whole text, not only its held-out last 10% (the part training does not see)')
    .option('--engine <name>', "'qkd' (default) or 'llama.cpp': run a GGUF in llama.cpp itself (needs the npm package node-llama-cpp)", choice('--engine', ['qkd', 'llama.cpp'] as const), 'qkd')
    .action(async (o: { model: string; data: string; tokenizer?: string; seqLen?: number; wholeFile?: boolean; engine: 'qkd' | 'llama.cpp' }) => {
      const options = { data: o.data, tokenizer: o.tokenizer, seqLen: o.seqLen, wholeText: o.wholeFile ?? false };
      const r = o.engine === 'llama.cpp' ? await evaluateModelInLlamaCpp(o.model, options) : evaluateModel(o.model, options);
      for (const w of 'warnings' in r ? (r.warnings as string[]) : []) process.stderr.write(`qkd: llama.cpp ${w}\n`);
      console.log(`perplexity ${r.ppl.toFixed(3)}, ${r.bits_per_byte.toFixed(4)} bits/byte over ${r.tokens} tokens (${r.split === 'validation' ? 'held-out last 10%' : 'whole text'}, windows of ${r.seq_len}, engine ${o.engine})`);
      console.log(JSON.stringify({ ppl: r.ppl, bits_per_byte: r.bits_per_byte, tokens: r.tokens, split: r.split, seq_len: r.seq_len, engine: o.engine }));
    });
}

/** `qkd eval`: perplexity and bits per byte of a model on held-out text. */
import type { Command } from 'commander';
import { evaluateModel, evaluateModelInLlamaCpp } from '../../eval/perplexity.js';
import { compareModels } from '../../eval/compare.js';
import { QkdError } from '../../errors.js';
import { choice, positiveInt } from '../options.js';
import { SKIP_BAD_ROWS, TEXT_COLUMN, corpusOptions, prepareCorpus, type CorpusFlags } from '../corpus.js';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('perplexity and bits per byte of a model on a text (by default its held-out last 10%)')
    .requiredOption('--model <path>', 'model directory, qkd run directory, or llama2.c .bin')
    .option('--data <path>', "text file, JSON Lines ({\"text\"} or chat {\"messages\"} rows: the assistant's tokens are scored), Parquet shard, a directory of them, or 'default' (embedded Moby-Dick)", 'default')
    .option(...SKIP_BAD_ROWS)
    .option(...TEXT_COLUMN)
    .option('--tokenizer <path>', 'tokenizer.json or llama2.c tokenizer.bin (default: tokenizer.json beside the model)')
    .option('--seq-len <n>', "window length, at most the model's context (default: the model's max_position_embeddings)", positiveInt('--seq-len'))
    .option('--whole-file', 'score the whole text, not only its held-out last 10% (the part training does not see)')
    .option('--engine <name>', "'qkd' (default) or 'llama.cpp': run a GGUF in llama.cpp itself (needs the npm package node-llama-cpp)", choice('--engine', ['qkd', 'llama.cpp'] as const), 'qkd')
    .option('--reference <path>', 'compare with a reference model (the FP32 one, or the teacher): both perplexities, KL(reference ‖ model) mean and percentiles, Δp, same-top-token share, retention (reference ppl / ppl) and compression (parameters, weight bytes)')
    .action(async (o: { model: string; data: string; tokenizer?: string; seqLen?: number; wholeFile?: boolean; engine: 'qkd' | 'llama.cpp'; reference?: string } & CorpusFlags) => {
      await prepareCorpus(o.data, o);
      const options = { data: o.data, tokenizer: o.tokenizer, seqLen: o.seqLen, wholeText: o.wholeFile ?? false, corpus: corpusOptions(o) };
      if (o.reference !== undefined) {
        if (o.engine !== 'qkd') throw new QkdError('ARGUMENT', '--reference compares in qkd; use --engine llama.cpp on its own to check one GGUF in llama.cpp', { field: '--engine' });
        const c = compareModels(o.model, o.reference, options);
        refuseNonFinitePerplexity(c.ppl, o.model);
        refuseNonFinitePerplexity(c.reference_ppl, o.reference);
        const k = c.kld;
        console.log(`ppl ${c.ppl.toFixed(4)} vs reference ${c.reference_ppl.toFixed(4)} (${((c.ppl / c.reference_ppl - 1) * 100).toFixed(2)}%) over ${c.tokens} tokens`);
        console.log(`KL(reference ‖ model): mean ${k.mean.toFixed(6)}, median ${k.median.toFixed(6)}, p90 ${k.p90.toFixed(6)}, p95 ${k.p95.toFixed(6)}, p99 ${k.p99.toFixed(6)}, p99.9 ${k.p999.toFixed(6)}, max ${k.max.toFixed(6)}`);
        console.log(`Δp: mean ${(100 * c.delta_p.mean).toFixed(3)}%, RMS ${(100 * c.delta_p.rms).toFixed(3)}%; same top token ${(100 * c.same_top).toFixed(2)}%`);
        console.log(`retention ${(100 * c.retention).toFixed(1)}% (reference ppl / ppl); ${c.compression.params.toFixed(2)}× fewer parameters (${c.params} vs ${c.reference_params}), ${c.compression.bytes.toFixed(2)}× fewer weight bytes (${c.bytes} vs ${c.reference_bytes})`);
        console.log(JSON.stringify(c));
        return;
      }
      const r = o.engine === 'llama.cpp' ? await evaluateModelInLlamaCpp(o.model, options) : evaluateModel(o.model, options);
      for (const w of 'warnings' in r ? (r.warnings as string[]) : []) process.stderr.write(`qkd: llama.cpp ${w}\n`);
      refuseNonFinitePerplexity(r.ppl, o.model);
      console.log(`perplexity ${r.ppl.toFixed(3)}, ${r.bits_per_byte.toFixed(4)} bits/byte over ${r.tokens} tokens (${r.split === 'validation' ? 'held-out last 10%' : 'whole text'}, windows of ${r.seq_len}, engine ${o.engine})`);
      console.log(JSON.stringify({ ppl: r.ppl, bits_per_byte: r.bits_per_byte, tokens: r.tokens, split: r.split, seq_len: r.seq_len, engine: o.engine }));
    });
}

/** A NaN or infinite loss is not a perplexity to report (the JSON line would say null). */
function refuseNonFinitePerplexity(ppl: number, model: string): void {
  if (Number.isFinite(ppl)) return;
  throw new QkdError('ARGUMENT', `the model's perplexity is ${ppl}: its loss is not finite (weights holding NaN or ±Inf, or activations that overflow)`, { path: model, hint: 'a model with finite weights (qkd audit names a tensor holding NaN or ±Inf)' });
}

// Every model family through every command, from the CLI: a scaled-down
// model of each family's real config (test/fixtures/hf-configs) is the
// teacher; eval, generate, audit, quantize (RTN and GPTQ), distill with
// KD+QAT into a pruned student of the same family, and export to GGUF all
// run, and what each writes is the family it read.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAMILY_FIXTURES, randomizeModel, scaledConfig } from '../helpers/families.js';
import { LlamaModel } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { saveTokenizerJson } from '../../src/data/bpe.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-cli-families-'));
const text = join(dir, 'text.txt');
writeFileSync(text, 'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse. '.repeat(40));

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, `qkd ${args.join(' ')}\n${r.stderr}`);
  return r.stdout;
}

describe('every family through every command', () => {
  for (const name of FAMILY_FIXTURES) {
    it(`${name}: eval, generate, audit, quantize, distill (pruned, KD+QAT) and export`, () => {
      const config = scaledConfig(name, 256, 32);
      const model = new LlamaModel(config);
      randomizeModel(model, 5, 0.1);
      const teacher = join(dir, name);
      saveLlama(teacher, model);
      saveTokenizerJson(join(teacher, 'tokenizer.json'), new ByteTokenizer());
      const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;

      assert.ok(Number(last(qkd('eval', '--model', teacher, '--data', text, '--seq-len', '16', '--whole-file')).ppl) > 1);
      assert.match(qkd('generate', '--model', teacher, '--prompt', 'Call me', '--steps', '20', '--temperature', '0', '--ids'), /^[\d ]+\s*$/m);
      const audit = JSON.parse(qkd('audit', teacher, '--json', '-', '--probes', '2')) as { tensors: unknown[] };
      assert.ok(audit.tensors.length > 0);
      for (const method of ['rtn', 'gptq']) {
        const q = join(dir, `${name}-q-${method}`);
        qkd('quantize', teacher, '--out', q, '--bits', '4', '--group', '0', '--method', method, ...(method === 'gptq' ? ['--calibration', text, '--calibration-batches', '1'] : []));
        assert.equal(JSON.parse(readFileSync(join(q, 'config.json'), 'utf8')).model_type, config.model_type);
        assert.ok(Number(last(qkd('eval', '--model', q, '--data', text, '--seq-len', '16', '--whole-file')).ppl) > 1);
      }
      const student = join(dir, `${name}-student`);
      qkd('distill', '--teacher', teacher, '--out', student, '--data', text, '--recipe', 'kd-qat', '--bits', '4', '--init', 'pruned', '--steps', '3', '--seq-len', '16', '--batch-size', '2', '--export', 'gguf:Q8_0');
      const studentConfig = JSON.parse(readFileSync(join(student, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(studentConfig.model_type, config.model_type);
      assert.equal(studentConfig.num_hidden_layers, Math.ceil(config.num_hidden_layers / 2));
      const gguf = join(dir, `${name}-student.gguf`);
      qkd('export', student, '--out', gguf, '--type', 'Q8_0', '--name', 'scaled');
      assert.ok(Number(last(qkd('eval', '--model', gguf, '--data', text, '--seq-len', '16', '--whole-file')).ppl) > 1);
    });
  }
});

describe('qkd train with a family config', () => {
  for (const [family, extra] of [
    ['qwen3', 'model_type: qwen3\n  head_dim: 16\n'],
    ['gemma3_text', 'model_type: gemma3_text\n  head_dim: 16\n  sliding_window: 8\n  layer_types: [sliding_attention, full_attention]\n  query_pre_attn_scalar: 16\n'],
  ] as const) {
    it(`${family}: trains from a YAML config and writes its family`, () => {
      const yaml = join(dir, `${family}.yaml`);
      writeFileSync(yaml, `model:\n  hidden_size: 32\n  intermediate_size: 64\n  num_hidden_layers: 2\n  num_attention_heads: 4\n  num_key_value_heads: 2\n  ${extra}batch_size: 2\nseq_len: 16\nsteps: 3\nlr: 0.001\neval_every: 3\ncheckpoint_every: 3\n`);
      const out = join(dir, `train-${family}`);
      qkd('train', '--config', yaml, '--data', text, '--out', out);
      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(config.model_type, family);
      assert.equal(config.head_dim, 16);
    });
  }
});

// qkd synth --data-free and qkd distill --recipe seqkd / several teachers /
// --assistant from the command line.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { trainBpe } from '../../src/data/bpe.js';
import { startSynthServer } from '../helpers/synth-server.js';
import { qkdAsync } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-cli-synth-'));
const teacherConfig = { vocab_size: 256, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 };
const teachers = [join(dir, 'teacher-a'), join(dir, 'teacher-b')];
teachers.forEach((t, i) => {
  saveLlama(t, createLlama(teacherConfig, 5 + i));
  writeFileSync(join(t, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
});

function qkd(...args: string[]) {
  return spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
}
const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
const short = ['--steps', '6', '--batch-size', '2', '--seq-len', '16'];

describe('qkd synth and seqkd', () => {
  it('synth --teacher-url: completions of a prompt file with the key from the environment, then seqkd on them', async () => {
    const key = 'sk-test-SECRET-1234';
    const server = await startSynthServer({ apiKey: key, fault: (n) => (n === 1 ? '500' : n === 3 ? '429-retry-after' : null), retryAfter: '0' });
    try {
      const prompts = join(dir, 'prompts.txt');
      writeFileSync(prompts, Array.from({ length: 30 }, (_, i) => `Prompt number ${i}: tell me about the whale.`).join('\n') + '\n');
      const out = join(dir, 'remote.jsonl');
      const r = await qkdAsync(['synth', '--teacher-url', server.url, '--teacher-model', 'loop', '--teacher-api', 'completions', '--prompts', prompts, '--n-per-prompt', '2', '--max-tokens', '64', '--seed', '5', '--out', out], { QKD_TEACHER_API_KEY: key });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /60 requests/);
      const j = last(r.stdout);
      assert.equal(j.rows, 60);
      assert.ok((j.retries as number) >= 2);
      const rows = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { prompt: string; completion: string });
      assert.equal(rows.length, 60);
      assert.ok(rows.every((row) => typeof row.completion === 'string' && row.completion.startsWith('answer ')));
      for (const text of [r.stdout, r.stderr, readFileSync(out, 'utf8')]) assert.ok(!text.includes(key), 'the key is never written');
      const bad = await qkdAsync(['synth', '--teacher-url', server.url, '--teacher-model', 'loop', '--teacher-api', 'completions', '--prompts', prompts, '--out', join(dir, 'denied.jsonl')], { QKD_TEACHER_API_KEY: 'wrong' });
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /401/);
      assert.match(bad.stderr, /QKD_TEACHER_API_KEY/);
      const student = qkd('distill', '--recipe', 'seqkd', '--init', 'random', '--student-preset', 'tiny', '--data', out, '--out', join(dir, 'black-box'), ...short);
      assert.equal(student.status, 0, student.stderr);
    } finally {
      await server.close();
    }
  });

  it('synth --data-free writes a corpus that distill --recipe seqkd trains on, with and without the teacher', () => {
    const corpus = join(dir, 'free.jsonl');
    const r = qkd('synth', '--teacher', teachers[0]!, '--data-free', '--sequences', '40', '--length', '40', '--seed', '2', '--out', corpus);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(last(r.stdout).rows, 40);
    assert.equal(readFileSync(corpus, 'utf8').trim().split('\n').length, 40);
    const again = qkd('synth', '--teacher', teachers[0]!, '--data-free', '--sequences', '40', '--length', '40', '--seed', '2', '--out', corpus);
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /--out/);
    const withTeacher = qkd('distill', '--recipe', 'seqkd', '--teacher', teachers[0]!, '--data', corpus, '--out', join(dir, 'seqkd-t'), ...short);
    assert.equal(withTeacher.status, 0, withTeacher.stderr);
    const alone = qkd('distill', '--recipe', 'seqkd-qat', '--init', 'random', '--student-preset', 'tiny', '--data', corpus, '--out', join(dir, 'seqkd-alone'), ...short);
    assert.equal(alone.status, 0, alone.stderr);
    assert.equal(last(alone.stdout).recipe, 'seqkd-qat');
    // The student's own tokenizer without a teacher: nothing to cross, the text is simply encoded with it.
    const bpeDir = join(dir, 'bpe');
    mkdirSync(bpeDir);
    const bpe = trainBpe(readFileSync(corpus, 'utf8'), 512);
    writeFileSync(join(bpeDir, 'tokenizer.json'), JSON.stringify(bpe.toTokenizerJson()));
    const ownTokenizer = qkd('distill', '--recipe', 'seqkd', '--init', 'random', '--student-preset', 'tiny', '--student-tokenizer', bpeDir, '--data', corpus, '--out', join(dir, 'seqkd-bpe'), ...short);
    assert.equal(ownTokenizer.status, 0, ownTokenizer.stderr);
    assert.match(ownTokenizer.stderr, /no teacher: the task loss on the text alone/);
    assert.equal(JSON.parse(readFileSync(join(dir, 'seqkd-bpe', 'config.json'), 'utf8')).vocab_size, bpe.vocabSize);
    const refused = qkd('distill', '--recipe', 'kd', '--init', 'random', '--student-preset', 'tiny', '--data', corpus, '--out', join(dir, 'kd-alone'), ...short);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /no teacher given/);
  });

  it('synth refuses flags of the other mode, and a missing mode, by name', () => {
    const r = qkd('synth', '--teacher', teachers[0]!, '--data-free', '--prompts', 'x.txt', '--out', join(dir, 'x.jsonl'));
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--prompts/);
    const n = qkd('synth', '--teacher', teachers[0]!, '--out', join(dir, 'y.jsonl'));
    assert.notEqual(n.status, 0);
    assert.match(n.stderr, /--data-free/);
  });

  it('distill --teacher A --teacher B --teacher-mix confidence, and --assistant', () => {
    const two = qkd('distill', '--teacher', teachers[0]!, '--teacher', teachers[1]!, '--teacher-mix', 'confidence', '--teacher-weights', '2,1', '--recipe', 'kd', '--out', join(dir, 'two'), ...short);
    assert.equal(two.status, 0, two.stderr);
    assert.match(two.stderr, /2 teachers, mix confidence, weights 0\.667 \/ 0\.333/);
    const badWeights = qkd('distill', '--teacher', teachers[0]!, '--teacher', teachers[1]!, '--teacher-weights', '1,2,3', '--recipe', 'kd', '--out', join(dir, 'bad'), ...short);
    assert.notEqual(badWeights.status, 0);
    assert.match(badWeights.stderr, /3 teacher weights for 2 teachers/);
    const oneMixed = qkd('distill', '--teacher', teachers[0]!, '--teacher-mix', 'mean', '--out', join(dir, 'one'), ...short);
    assert.notEqual(oneMixed.status, 0);
    assert.match(oneMixed.stderr, /--teacher-mix/);
    const chain = qkd('distill', '--teacher', teachers[0]!, '--assistant', 'tiny', '--assistant-steps', '4', '--init', 'random', '--student-preset', 'tiny', '--recipe', 'kd', '--out', join(dir, 'chain'), ...short);
    assert.equal(chain.status, 0, chain.stderr);
    assert.ok(existsSync(join(dir, 'chain', 'assistant', 'quantized')));
    assert.match(chain.stderr, /teaching assistant/);
  });
});

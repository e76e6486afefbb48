// JSON Lines corpora: {"text"} rows become the corpus; a bad row is an error
// naming the file and line (chat rows: test/data/chat.test.ts).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCorpus } from '../../src/data/corpus.js';

describe('JSON Lines corpora', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-jsonl-'));
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('joins the text rows with blank lines, skipping blank lines, and reads .jsonl files in a directory', () => {
    assert.equal(loadCorpus(file('ok.jsonl', '{"text": "first row"}\n\n{"text": "second\\nrow", "id": 7}\n')), 'first row\n\nsecond\nrow');
    assert.equal(loadCorpus(file('bom.jsonl', '\uFEFF{"text": "after a byte-order mark"}\n')), 'after a byte-order mark');
    const sub = join(dir, 'mixed');
    mkdirSync(sub);
    writeFileSync(join(sub, 'a.txt'), 'plain');
    writeFileSync(join(sub, 'b.jsonl'), '{"text": "json"}\n');
    assert.equal(loadCorpus(sub), 'plain\n\njson');
  });

  it('names the file and line of a bad row', () => {
    assert.throws(() => loadCorpus(file('bad.jsonl', '{"text": "ok"}\n{"text": oops}\n')), (e: Error & { path?: string; field?: string }) => /line 2 is not JSON/.test(e.message) && e.field === 'line 2' && e.path!.endsWith('bad.jsonl'));
    assert.throws(() => loadCorpus(file('array.jsonl', '["text"]\n')), /line 1 is not a JSON object/);
    assert.throws(() => loadCorpus(file('notext.jsonl', '{"body": "x"}\n')), /line 1 has no string "text" field, no "messages" and no "completion"/);
    assert.throws(() => loadCorpus(file('empty.jsonl', '\n\n')), /text file is empty|has no rows/);
  });
});

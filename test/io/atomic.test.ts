// Atomic writes and Ctrl-C: the addon's SIGINT handler ends the process at
// once, also in the middle of writing a file; it deletes the temporary file
// of the write in progress, so no partial copy is left beside the target.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { nativeStatus } from '../../src/tensor/index.js';

describe('atomic writes and Ctrl-C', () => {
  it('a SIGINT in the middle of an atomic write ends the process with 130 and leaves no temporary file', { skip: (!nativeStatus().loaded || process.platform === 'win32') && "needs the addon's signal handler" }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-atomic-'));
    const url = (p: string) => pathToFileURL(resolve(p)).href;
    const script = join(dir, 'child.mjs');
    writeFileSync(
      script,
      `import { exitOnSigint } from ${JSON.stringify(url('dist/src/tensor/backend.js'))};
import { writeFileAtomic, writeAll } from ${JSON.stringify(url('dist/src/io/atomic.js'))};
if (!exitOnSigint('stopped\\n')) process.exit(3);
writeFileAtomic(${JSON.stringify(join(dir, 'big.bin'))}, (fd) => {
  writeAll(fd, new Uint8Array(1 << 20));
  process.kill(process.pid, 'SIGINT');
  for (;;) {} // a long synchronous write: only the native handler ends it
});
`,
    );
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 130, `${r.signal} ${r.stderr}`);
    assert.match(r.stderr, /stopped/);
    assert.deepEqual(readdirSync(dir), ['child.mjs'], 'neither the target nor its temporary file');
  });
});

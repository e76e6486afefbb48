// SIGUSR1 is qkd's stop request (what an MPI launcher forwards to every
// rank). One that arrives before a command has set up its graceful stop
// must be kept for it: Node's own action for SIGUSR1 would open the
// inspector and the request would be lost.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { exitOnInterrupt, gracefulInterrupt } from '../../src/cli/interrupt.js';

describe('SIGUSR1 before and during a graceful stop', () => {
  it('an early SIGUSR1 becomes the next graceful stop request; a later one too, once', () => {
    exitOnInterrupt();
    const before = process.listeners('SIGUSR1').length;
    assert.ok(before >= 1, 'the CLI holds SIGUSR1 from the start');
    process.emit('SIGUSR1', 'SIGUSR1');
    const first = gracefulInterrupt('stopping');
    assert.equal(first.requested(), true, 'the early request is kept');
    first.dispose();
    assert.equal(process.listeners('SIGUSR1').length, before, 'dispose restores the early handler');
    const second = gracefulInterrupt('stopping');
    assert.equal(second.requested(), false, 'an early request is used once');
    process.emit('SIGUSR1', 'SIGUSR1');
    assert.equal(second.requested(), true);
    second.dispose();
  });

  it('SIGTERM asks for the same graceful stop (the CLI otherwise ends at once on it), and dispose hands it back', () => {
    exitOnInterrupt();
    const before = process.listeners('SIGTERM').length;
    assert.equal(before, 0, "outside a graceful stop SIGTERM keeps Node's default (the process ends at once)");
    const said: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (said.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      const g = gracefulInterrupt('saving a checkpoint');
      assert.equal(process.listeners('SIGTERM').length, 1, 'the graceful handler');
      process.emit('SIGTERM', 'SIGTERM');
      assert.equal(g.requested(), true);
      g.dispose();
    } finally {
      process.stderr.write = write;
    }
    assert.deepEqual(said, ['\nqkd: SIGTERM, saving a checkpoint (SIGTERM again to quit at once)\n']);
    assert.equal(process.listeners('SIGTERM').length, before);
  });

  it('a stop the ranks agreed on is announced once on rank 0, and a late SIGUSR1 stays quiet', () => {
    exitOnInterrupt();
    const said: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (said.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      const g = gracefulInterrupt('saving a checkpoint');
      assert.equal(g.requested(), false);
      g.stopAgreed();
      assert.equal(g.requested(), true);
      process.emit('SIGUSR1', 'SIGUSR1');
      g.stopAgreed();
      g.dispose();
    } finally {
      process.stderr.write = write;
    }
    assert.deepEqual(said.filter((s) => s.includes('SIGUSR1')), ['\nqkd: SIGUSR1, saving a checkpoint\n']);
  });
});

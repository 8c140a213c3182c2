// The host's one log (extension/src/util/log.ts): what a vscode-free service logs reaches the
// channel activate() hands over, and nothing after it is disposed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSlurmStatus } from '../../extension/src/jobs/slurmArgs';
import { Emitter } from '../../extension/src/util/emitter';
import { useLog } from '../../extension/src/util/log';
import { captureLog } from './fixtures';

describe('host log', () => {
  it('a failing event listener is logged as an error and the other listeners still run', () => {
    const { lines, log } = captureLog();
    const d = useLog(log);
    const e = new Emitter<number>();
    let got = 0;
    e.event(() => {
      throw new Error('panel gone');
    });
    e.event((n) => (got = n));
    e.fire(7);
    d.dispose();
    assert.equal(got, 7);
    assert.deepEqual(lines, ['error an event listener failed']);
    e.fire(8);
    assert.equal(lines.length, 1, 'logged after the channel was disposed');
  });

  it('a malformed Slurm status is a warning that quotes it, and no job', () => {
    const { lines, log } = captureLog();
    const d = useLog(log);
    try {
      assert.deepEqual(parseSlurmStatus('sacct: error: slurmdbd down'), []);
    } finally {
      d.dispose();
    }
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^warn moelab slurm status: not JSON .*slurmdbd down$/);
  });
});

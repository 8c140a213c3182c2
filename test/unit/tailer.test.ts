import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { MetricRecord } from '../../extension/src/runs/model';
import { isMetricRecord } from '../../extension/src/runs/records';
import { JsonlTailer, parseJsonLine } from '../../extension/src/runs/tailer';
import { tmpDir } from './fixtures';

const dir = tmpDir();

async function drain(t: JsonlTailer<MetricRecord>) {
  const got: MetricRecord[] = [];
  const r = await t.poll((b) => got.push(...b));
  return { got, ...r };
}

describe('JsonlTailer', () => {
  it('reads only appended bytes and holds a partial last line until its newline', async () => {
    const file = path.join(dir, 'partial.jsonl');
    fs.writeFileSync(file, '{"step":1,"loss":2.5}\n{"step":2,"lo');
    const t = new JsonlTailer(file, { accept: isMetricRecord });
    let r = await drain(t);
    assert.deepEqual(
      r.got.map((m) => m.step),
      [1],
    );
    assert.equal(r.badLines, 0);
    fs.appendFileSync(file, 'ss":2.4}\n');
    r = await drain(t);
    assert.deepEqual(r.got, [{ step: 2, loss: 2.4 }]);
    assert.equal(r.bytes, 9, 'only the new bytes are read');
    r = await drain(t);
    assert.equal(r.bytes, 0);
    assert.equal(r.got.length, 0);
  });

  it('counts and skips garbage, wrong shapes and over-long lines, keeps multi-byte text intact', async () => {
    const file = path.join(dir, 'garbage.jsonl');
    const huge = '{"step":9,"pad":"' + 'x'.repeat(300_000) + '"}';
    fs.writeFileSync(
      file,
      [
        '{"step":1}',
        'not json at all',
        '',
        '[1,2,3]',
        '{"loss":1}',
        '\u0000\u0001\u0002',
        huge,
        '{"step":2,"domain":{"prosé ✓":1.5}}',
        '{"step":3,"loss":NaN,"grad_norm":Infinity,"lr":-Infinity}',
        '{"step":4}\r',
      ].join('\n') + '\n',
    );
    // Small chunks: lines and a multi-byte character straddle chunk boundaries.
    const t = new JsonlTailer(file, { accept: isMetricRecord, maxLineBytes: 100_000, chunkBytes: 7 });
    const r = await drain(t);
    assert.deepEqual(
      r.got.map((m) => m.step),
      [1, 2, 3, 4],
    );
    assert.equal(r.got[1].domain?.['prosé ✓'], 1.5);
    assert.ok(Number.isNaN(r.got[2].loss));
    assert.equal(r.got[2].grad_norm, Infinity);
    assert.equal(r.got[2].lr, -Infinity);
    assert.equal(r.badLines, 5);
    assert.equal(t.badLines, 5);
  });

  it('an endless line without newline does not grow memory, and reading resumes after it', async () => {
    const file = path.join(dir, 'endless.jsonl');
    fs.writeFileSync(file, '{"step":1}\n' + 'y'.repeat(5_000_000));
    const t = new JsonlTailer(file, { accept: isMetricRecord, maxLineBytes: 1_000_000, chunkBytes: 65536 });
    let r = await drain(t);
    assert.deepEqual(
      r.got.map((m) => m.step),
      [1],
    );
    assert.equal(r.badLines, 1);
    fs.appendFileSync(file, 'yyy\n{"step":2}\n');
    r = await drain(t);
    assert.deepEqual(
      r.got.map((m) => m.step),
      [2],
    );
    assert.equal(r.badLines, 0, 'the long line is counted once');
  });

  it('restarts on truncation and on recreation', async () => {
    const file = path.join(dir, 'trunc.jsonl');
    fs.writeFileSync(file, '{"step":1}\n{"step":2}\n{"step":3}\n');
    const t = new JsonlTailer(file, { accept: isMetricRecord });
    assert.equal((await drain(t)).got.length, 3);
    fs.writeFileSync(file, '{"step":10}\n');
    let resets = 0;
    let got: MetricRecord[] = [];
    let r = await t.poll(
      (b) => (got = got.concat(b)),
      () => resets++,
    );
    assert.ok(r.reset);
    assert.equal(resets, 1);
    assert.deepEqual(
      got.map((m) => m.step),
      [10],
    );
    // Recreated with more bytes than before: only the inode tells.
    fs.unlinkSync(file);
    fs.writeFileSync(file, '{"step":20}\n{"step":21}\n{"step":22}\n');
    got = [];
    r = await t.poll((b) => (got = got.concat(b)));
    assert.ok(r.reset);
    assert.deepEqual(
      got.map((m) => m.step),
      [20, 21, 22],
    );
  });

  it('a missing file is not an error', async () => {
    const t = new JsonlTailer(path.join(dir, 'nope.jsonl'), { accept: isMetricRecord });
    const r = await drain(t);
    assert.equal(r.records, 0);
  });

  it('parseJsonLine leaves NaN inside strings alone', () => {
    assert.deepEqual(parseJsonLine('{"note":"NaN, Infinity","step":1}'), { note: 'NaN, Infinity', step: 1 });
  });

  it('streams a 200 MB file with flat memory', async () => {
    const file = path.join(dir, 'big.jsonl');
    const line = (i: number) =>
      JSON.stringify({
        step: i,
        tokens: i * 4096,
        time: i * 0.1,
        split: 'train',
        loss: 3 - i * 1e-7,
        lr: 3e-4,
        lb_loss: 0.01,
        z_loss: 0.001,
        grad_norm: 1.2,
        tokens_per_s: 51234.5,
        domain: { code: 1.9, math: 2.1, prose: 2.3 },
      }) + '\n';
    const fd = fs.openSync(file, 'w');
    let size = 0;
    let i = 0;
    const target = 200 * 1024 * 1024;
    while (size < target) {
      let block = '';
      for (let k = 0; k < 2000; k++) block += line(i++);
      fs.writeSync(fd, block);
      size += Buffer.byteLength(block);
    }
    fs.closeSync(fd);
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    let count = 0;
    let last = -1;
    const t = new JsonlTailer(file, { accept: isMetricRecord });
    const t0 = performance.now();
    await t.poll((batch) => {
      count += batch.length;
      last = batch[batch.length - 1].step;
      peak = Math.max(peak, process.memoryUsage().rss);
    });
    const secs = (performance.now() - t0) / 1000;
    fs.unlinkSync(file);
    assert.equal(count, i);
    assert.equal(last, i - 1);
    const grewMb = (peak - before) / 2 ** 20;
    console.log(
      `# tailer: ${(size / 2 ** 20).toFixed(0)} MB, ${count} records in ${secs.toFixed(2)} s (${(size / 2 ** 20 / secs).toFixed(0)} MB/s), RSS grew ${grewMb.toFixed(1)} MB`,
    );
    assert.ok(grewMb < 100, `memory grew by ${grewMb.toFixed(1)} MB while streaming ${size} bytes`);
  });
});

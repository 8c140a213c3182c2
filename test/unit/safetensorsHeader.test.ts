import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import {
  DTYPE_BITS,
  MAX_HEADER_BYTES,
  readCheckpointTensors,
  readSafetensorsHeader,
  SafetensorsError,
} from '../../extension/src/checkpoints/safetensorsHeader';
import { headerBytes, mixtralTensors, tmpDir, writeRaw, writeSafetensors, writeSharded } from './fixtures';

const dir = tmpDir();

async function rejects(file: string, pattern: RegExp): Promise<void> {
  await assert.rejects(readSafetensorsHeader(file), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

function rawFile(name: string, header: string | Buffer, dataSize = 0, declared?: bigint): string {
  const file = path.join(dir, name);
  const buf = typeof header === 'string' ? Buffer.from(header) : header;
  writeRaw(file, buf, dataSize, declared ?? BigInt(buf.length));
  return file;
}

describe('safetensors header reader', () => {
  it('reads a valid file: tensors, metadata, sizes', async () => {
    const file = path.join(dir, 'ok.safetensors');
    writeSafetensors(
      file,
      [
        { name: 'a', dtype: 'F32', shape: [2, 3] },
        { name: 'b', dtype: 'BF16', shape: [4] },
        { name: 'scalar', dtype: 'I64', shape: [] },
        { name: 'empty', dtype: 'F16', shape: [0, 5] },
        { name: 'f4', dtype: 'F4', shape: [4] },
      ],
      { format: 'pt' },
    );
    const h = await readSafetensorsHeader(file);
    assert.deepEqual(h.metadata, { format: 'pt' });
    assert.deepEqual(
      h.tensors.map((t) => [t.name, t.dtype, t.shape, t.end - t.begin]),
      [
        ['a', 'F32', [2, 3], 24],
        ['b', 'BF16', [4], 8],
        ['scalar', 'I64', [], 8],
        ['empty', 'F16', [0, 5], 0],
        ['f4', 'F4', [4], 2],
      ],
    );
    assert.equal(h.fileSize, 8 + h.headerLength + 42);
  });

  it('never reads tensor data: a 64 GiB sparse file is listed instantly', async () => {
    const file = path.join(dir, 'huge.safetensors');
    writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [1 << 17, 1 << 17] }]);
    const t0 = performance.now();
    const h = await readSafetensorsHeader(file);
    assert.equal(h.tensors[0].end, 2 ** 36);
    assert.ok(performance.now() - t0 < 1000);
  });

  const bad: [string, string | Buffer, number, RegExp, bigint?][] = [
    ['not json', '{"a": ', 0, /not valid JSON/],
    ['array', '[1, 2, 3]', 0, /does not start|not a JSON object/],
    ['null', 'null', 0, /does not start/],
    ['bad utf8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 0, /UTF-8/],
    ['unknown dtype', '{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', 16, /unknown dtype/],
    ['negative dim', '{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', 4, /non-negative integers/],
    ['float dim', '{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,6]}}', 6, /non-negative integers/],
    [
      'size mismatch',
      '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}',
      4,
      /8 bytes but data_offsets span 4/,
    ],
    ['offsets past end', '{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}', 4, /past the data section/],
    ['begin > end', '{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}', 4, /begin > end/],
    [
      'overlap',
      '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}',
      8,
      /overlap/,
    ],
    [
      'overflowing shape',
      '{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}}',
      0,
      /bytes but/,
    ],
    ['metadata not strings', '{"__metadata__":{"x":1}}', 0, /not a string/],
    ['entry not object', '{"a":3}', 0, /not an object/],
    ['offsets wrong arity', '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}}', 1, /two non-negative/],
  ];
  for (const [name, header, dataSize, pattern] of bad) {
    it(`rejects: ${name}`, async () => rejects(rawFile(`${name}.safetensors`, header, dataSize), pattern));
  }

  it('rejects a length beyond the file, a length over 100 MB, and a short file', async () => {
    await rejects(rawFile('len.safetensors', '{}', 0, 1000n), /exceeds the file size/);
    await rejects(rawFile('len64.safetensors', '{}', 0, 2n ** 64n - 1n), /exceeds the file size/);
    const big = path.join(dir, 'big-header.safetensors');
    writeRaw(big, Buffer.from('{}'), MAX_HEADER_BYTES + 10, BigInt(MAX_HEADER_BYTES + 1));
    await rejects(big, /exceeds the 104857600-byte limit/);
    const tiny = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(tiny, Buffer.from([1, 2, 3]));
    await rejects(tiny, /too small/);
  });

  it('reads a sharded checkpoint through its index and reports inconsistencies', async () => {
    const ck = path.join(dir, 'sharded');
    const tensors = mixtralTensors(2, 4, 16, 32, 64);
    writeSharded(ck, tensors, 3, { model_type: 'mixtral' });
    const r = await readCheckpointTensors(ck);
    assert.deepEqual(r.errors, []);
    assert.equal(r.files.length, 3);
    assert.equal(r.tensors.length, tensors.length);
    const idx = JSON.parse(fs.readFileSync(path.join(ck, 'model.safetensors.index.json'), 'utf8'));
    idx.weight_map['model.layers.0.ghost.weight'] = 'model-00001-of-00003.safetensors';
    idx.weight_map['x'] = 'model-00009-of-00009.safetensors';
    fs.writeFileSync(path.join(ck, 'model.safetensors.index.json'), JSON.stringify(idx));
    fs.writeFileSync(path.join(ck, 'model-00002-of-00003.safetensors'), 'garbage!garbage!');
    const r2 = await readCheckpointTensors(ck);
    assert.equal(r2.files.length, 2);
    assert.ok(r2.errors.some((e) => /model-00009-of-00009.safetensors is missing/.test(e)));
    assert.ok(r2.errors.some((e) => /ghost.weight: listed in/.test(e)));
    assert.ok(r2.errors.some((e) => /model-00002-of-00003.safetensors:/.test(e)));
  });

  it('refuses shard names that leave the folder', async () => {
    const ck = path.join(dir, 'escape');
    fs.mkdirSync(ck);
    fs.writeFileSync(
      path.join(ck, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { a: '../../etc/passwd' } }),
    );
    const r = await readCheckpointTensors(ck);
    assert.ok(r.errors.some((e) => /not a shard file name inside the folder/.test(e)));
  });
});

describe('safetensors header fuzz (fast-check)', () => {
  // Each case must settle quickly: a hang or an exception other than SafetensorsError fails.
  const settle = async (file: string): Promise<'ok' | 'error'> => {
    try {
      await readSafetensorsHeader(file);
      return 'ok';
    } catch (e) {
      if (e instanceof SafetensorsError) return 'error';
      throw e;
    }
  };
  let n = 0;
  const opts = { numRuns: 300, timeout: 2000, seed: 42 };

  it('arbitrary bytes never throw anything but SafetensorsError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        const file = path.join(dir, `fuzz-${n++}.bin`);
        fs.writeFileSync(file, bytes);
        await settle(file);
        fs.unlinkSync(file);
      }),
      opts,
    );
  });

  const dtype = fc.oneof(fc.constantFrom(...Object.keys(DTYPE_BITS)), fc.string({ maxLength: 6 }));
  const dim = fc.oneof(
    fc.nat({ max: 16 }),
    fc.integer({ min: -3, max: 2 ** 53 }),
    fc.double(),
    fc.constant(2 ** 40),
  );
  const entry = fc.record({
    dtype: fc.oneof(dtype, fc.anything()),
    shape: fc.oneof(fc.array(dim, { maxLength: 4 }), fc.anything()),
    data_offsets: fc.oneof(fc.tuple(fc.nat({ max: 4096 }), fc.nat({ max: 4096 })), fc.anything()),
  });
  const header = fc.dictionary(
    fc.oneof(fc.string({ maxLength: 8 }), fc.constant('__metadata__'), fc.constant('__proto__')),
    fc.oneof(entry, fc.jsonValue()),
    { maxKeys: 8 },
  );

  it('structured hostile headers: only SafetensorsError, and accepted ones are consistent', async () => {
    await fc.assert(
      fc.asyncProperty(
        header,
        fc.nat({ max: 4096 }),
        fc.option(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
        async (h, dataSize, declared) => {
          const text = Buffer.from(JSON.stringify(h));
          const file = path.join(dir, `fuzz-${n++}.safetensors`);
          writeRaw(file, text, dataSize, declared ?? BigInt(text.length));
          try {
            const parsed = await readSafetensorsHeader(file);
            const data = parsed.fileSize - 8 - parsed.headerLength;
            const spans = parsed.tensors.map((t) => [t.begin, t.end]).sort((a, b) => a[0] - b[0]);
            for (const t of parsed.tensors) {
              assert.ok(t.end <= data && t.begin <= t.end);
              assert.equal(
                BigInt(t.end - t.begin) * 8n,
                t.shape.reduce((a, b) => a * BigInt(b), 1n) * BigInt(DTYPE_BITS[t.dtype]),
              );
            }
            for (let i = 1; i < spans.length; i++) assert.ok(spans[i][0] >= spans[i - 1][1]);
          } catch (e) {
            if (!(e instanceof SafetensorsError)) throw e;
          } finally {
            fs.unlinkSync(file);
          }
        },
      ),
      opts,
    );
  });

  it('valid files round-trip; byte flips in the header never escape as other errors', async () => {
    const spec = fc.array(
      fc.record({
        name: fc.string({ minLength: 1, maxLength: 12 }),
        dtype: fc.constantFrom('F32', 'BF16', 'F16', 'I8', 'F8_E4M3', 'F64'),
        shape: fc.array(fc.nat({ max: 8 }), { maxLength: 3 }),
      }),
      { maxLength: 6 },
    );
    await fc.assert(
      fc.asyncProperty(
        spec,
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 4 }),
        async (tensorsRaw, flips) => {
          const seen = new Set<string>();
          const tensors = tensorsRaw.filter(
            (t) =>
              t.name !== '__metadata__' && t.name !== '__proto__' && !seen.has(t.name) && seen.add(t.name),
          );
          const { header: hb, dataSize } = headerBytes(tensors);
          const file = path.join(dir, `fuzz-${n++}.safetensors`);
          writeRaw(file, hb, dataSize);
          const parsed = await readSafetensorsHeader(file);
          assert.deepEqual(parsed.tensors.map((t) => t.name).sort(), tensors.map((t) => t.name).sort());
          const flipped = Buffer.from(hb);
          for (const [pos, byte] of flips) flipped[pos % flipped.length] = byte;
          writeRaw(file, flipped, dataSize);
          await settle(file);
          fs.unlinkSync(file);
        },
      ),
      opts,
    );
  });
});

describe('files that are not regular files', () => {
  it('a FIFO named *.safetensors is refused without blocking', { timeout: 5000 }, async () => {
    const fifo = path.join(dir, 'fifo.safetensors');
    execFileSync('mkfifo', [fifo]);
    await rejects(fifo, /not a regular file/);
    const r = await readCheckpointTensors(dir);
    assert.ok(r.errors.some((e) => /fifo.safetensors: not a regular file/.test(e)));
  });
});

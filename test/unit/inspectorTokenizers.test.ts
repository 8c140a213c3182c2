import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as fs from 'node:fs';
import fc from 'fast-check';
import { ByteTokenizer } from '../../extension/src/inspector/byteTokenizer';
import { alignTokens, HfTokenizer } from '../../extension/src/inspector/hfTokenizer';
import { HAVE_VENV, NO_VENV_REASON, python, tempDir } from './inspectorFixtures';

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();

  it('gives the UTF-8 bytes, each mapped to its character range', () => {
    const text = 'aé🎉\n';
    const t = tok.tokenize(text);
    assert.deepEqual(
      t.map((x) => x.id),
      [...Buffer.from(text, 'utf8')],
    );
    assert.deepEqual(
      t.map((x) => [x.start, x.end]),
      [
        [0, 1],
        [1, 2],
        [1, 2],
        [2, 4],
        [2, 4],
        [2, 4],
        [2, 4],
        [4, 5],
      ],
    );
  });

  it('agrees with TextEncoder on any string, lone surrogates included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const t = tok.tokenize(s);
        assert.deepEqual(
          t.map((x) => x.id),
          [...new TextEncoder().encode(s)],
        );
        // Ranges cover the text in order, never splitting a surrogate pair.
        let prev = 0;
        for (const x of t) {
          assert.ok(x.start === prev || x.start === t.find((y) => y.end === x.end)?.start);
          prev = x.end;
        }
        if (t.length) assert.equal(t[t.length - 1].end, s.length);
      }),
    );
  });

  it('displays bytes readably', () => {
    assert.equal(tok.display(0x41), 'A');
    assert.equal(tok.display(0x20), '␠');
    assert.equal(tok.display(0x0a), '\\n');
    assert.equal(tok.display(0xc3), '<0xC3>');
  });
});

describe('alignTokens', () => {
  it('locates pieces with leading spaces and groups partial UTF-8 characters', () => {
    const pieces: Record<number, string> = {
      1: 'Hello',
      2: ' wor',
      3: 'ld',
      4: '\uFFFD',
      5: '\uFFFD',
      6: ' !',
    };
    // Bytes 4 and 5 are the two halves of " é": alone or with only one, a replacement character.
    const decode = (ids: number[]) =>
      ids
        .map((i) => pieces[i])
        .join('')
        .replace('\uFFFD\uFFFD', ' é');
    const t = alignTokens('Hello world é !', [1, 2, 3, 4, 5, 6], decode);
    assert.deepEqual(
      t.map((x) => [x.start, x.end]),
      [
        [0, 5],
        [5, 9],
        [9, 11],
        [11, 13],
        [11, 13],
        [13, 15],
      ],
    );
  });

  it('gives special tokens without text an empty range', () => {
    const pieces: Record<number, string> = { 0: '<s>', 1: 'Hi' };
    const t = alignTokens('Hi', [0, 1], (ids) => ids.map((i) => pieces[i]).join(''));
    assert.deepEqual(
      t.map((x) => [x.start, x.end]),
      [
        [0, 0],
        [0, 2],
      ],
    );
  });

  it('handles decoders that drop the leading space (sentencepiece)', () => {
    const pieces: Record<number, string> = { 1: 'a', 2: 'b', 3: 'c' };
    const t = alignTokens('a  b c', [1, 2, 3], (ids) => ids.map((i) => pieces[i]).join(''));
    assert.deepEqual(
      t.map((x) => [x.start, x.end]),
      [
        [0, 1],
        [1, 4],
        [4, 6],
      ],
    );
  });
});

describe('HfTokenizer on a real tokenizer.json', { skip: HAVE_VENV ? false : NO_VENV_REASON }, () => {
  let dir = '';
  before(() => {
    dir = tempDir('moelab-hftok-');
    python([
      '-c',
      `
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
corpus = ["def add(a, b):\\n    return a + b", "naïve café — déjà vu", "The quick brown fox"] * 30
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
tok.save(sys.argv[1] + "/tokenizer.json")
# A sentencepiece-style one (Llama 2, Mistral): "▁" for spaces, byte fallback for unknown bytes.
sp = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
sp.pre_tokenizer = pre_tokenizers.Metaspace()
sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
bytes_ = [f"<0x{i:02X}>" for i in range(256)]
sp.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", *bytes_], show_progress=False))
sp.save(sys.argv[1] + "/sp.json")
`,
      dir,
    ]);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const file of ['tokenizer.json', 'sp.json'])
    it(`${file}: gives the ids Python gives, with ranges that cover the text`, () => {
      const json = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
      const tok = new HfTokenizer(json, {}, file);
      const texts = ['def add(a, b):\n    return a + b', 'naïve café — déjà vu 🎉!', 'The  quick\tbrown fox'];
      const want = JSON.parse(
        python(
          [
            '-c',
            `import json, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
print(json.dumps([t.encode(s).ids for s in json.loads(sys.stdin.read())]))`,
            path.join(dir, file),
          ],
          JSON.stringify(texts),
        ),
      ) as number[][];
      texts.forEach((text, i) => {
        const t = tok.tokenize(text);
        assert.deepEqual(
          t.map((x) => x.id),
          want[i],
        );
        // Every character belongs to some token, in order.
        let covered = 0;
        for (const x of t) {
          assert.ok(
            x.start <= covered && x.end >= x.start,
            `token ${x.id} at ${x.start}-${x.end} after ${covered}`,
          );
          covered = Math.max(covered, x.end);
        }
        assert.equal(covered, text.length);
      });
    });

  it('rejects a file that is not a tokenizer with one message', () => {
    assert.throws(
      () => new HfTokenizer({ model: { type: 'Nope' } }, {}, '/x/tokenizer.json'),
      /\/x\/tokenizer\.json: cannot be loaded/,
    );
  });
});

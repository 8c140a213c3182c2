// Hugging Face tokenizer.json, run by @huggingface/tokenizers (pure JS, the tokenizer of
// transformers.js). That library gives ids but no offsets, so each token is located in the text by
// decoding it in context and searching forward from the previous token's end; tokens that decode
// to part of a UTF-8 character are grouped until the character is complete and share its range.
import { Tokenizer } from '@huggingface/tokenizers';
import { InspectorError } from './errors';
import type { TextToken, TextTokenizer } from './tokens';

const MAX_GROUP = 8; // a UTF-8 character is at most 4 byte tokens; 8 bounds garbage input
const LOOKBACK = 4; // tokens of left context for incremental decoding
const DECODE = { skip_special_tokens: false, clean_up_tokenization_spaces: false };

export class HfTokenizer implements TextTokenizer {
  readonly kind = 'hf' as const;
  private readonly tok: Tokenizer;

  constructor(tokenizerJson: unknown, tokenizerConfig: unknown, where: string) {
    try {
      this.tok = new Tokenizer(tokenizerJson as object, (tokenizerConfig ?? {}) as object);
    } catch (e) {
      throw new InspectorError(
        `${where}: cannot be loaded as a Hugging Face tokenizer (${(e as Error).message})`,
      );
    }
  }

  tokenize(text: string): TextToken[] {
    const ids = this.tok.encode(text).ids;
    return alignTokens(text, ids, (group) => this.tok.decode(group, DECODE));
  }

  display(id: number): string {
    return this.tok.id_to_token(id) ?? `#${id}`;
  }
}

/** Offsets for `ids` in `text`, given a decoder of id sequences. Exported for tests.
 *
 *  A token's text is what it adds to the decoding of the few tokens before it (incremental
 *  detokenization, as serving stacks stream text): decoding a token alone loses what decoders do
 *  at the start of a sequence (sentencepiece's Strip drops the space of "▁return"). Tokens that
 *  leave a partial UTF-8 character (U+FFFD) are grouped until the character is complete. */
export function alignTokens(text: string, ids: number[], decode: (ids: number[]) => string): TextToken[] {
  const out: TextToken[] = [];
  let cursor = 0;
  let g = 0; // first token of the current group
  for (let i = 0; i < ids.length; i++) {
    const from = Math.max(0, g - LOOKBACK);
    const upto = decode(ids.slice(from, i + 1));
    if (upto.endsWith('\uFFFD') && i + 1 - g < MAX_GROUP && i + 1 < ids.length) continue;
    const before = from < g ? decode(ids.slice(from, g)) : '';
    const piece = upto.startsWith(before) ? upto.slice(before.length) : decode(ids.slice(g, i + 1));
    const [start, end] = locate(text, cursor, piece);
    for (let t = g; t <= i; t++) out.push({ id: ids[t], start, end });
    cursor = end;
    g = i + 1;
  }
  return out;
}

/** Where `piece` continues the text at `cursor`: a leading space in the piece may be a space the
 *  text has (" Hello") or one the decoder added or dropped (sentencepiece's "▁"). */
function locate(text: string, cursor: number, piece: string): [number, number] {
  const core = piece.replace(/^\s+/, '').replace(/\uFFFD+$/, '');
  if (!core) {
    // Whitespace-only token: it covers the whitespace at the cursor, if any.
    let end = cursor;
    while (end < text.length && end - cursor < piece.length && /\s/.test(text[end])) end++;
    return [cursor, end];
  }
  // Only a few characters ahead: a far match would be another occurrence, and a bounded search
  // keeps alignment linear in the text length.
  const slack = piece.length - core.length + 2;
  const ahead = text.slice(cursor, cursor + core.length + slack);
  let rel = ahead.indexOf(core);
  // Normalizers that lowercase: search case-insensitively before giving up.
  if (rel < 0) rel = ahead.toLowerCase().indexOf(core.toLowerCase());
  if (rel < 0) return [cursor, cursor];
  const at = cursor + rel;
  const gap = text.slice(cursor, at);
  const start = /^\s*$/.test(gap) ? cursor : at;
  return [start, at + core.length];
}

// The engine's own models are byte-level: token ids are the UTF-8 bytes of the text. Every byte of
// a multi-byte character maps back to that character's whole UTF-16 range, so a decoration never
// splits a character (or a surrogate pair).
import type { TextToken, TextTokenizer } from './tokens';

export class ByteTokenizer implements TextTokenizer {
  readonly kind = 'byte-level' as const;

  tokenize(text: string): TextToken[] {
    const out: TextToken[] = [];
    for (let i = 0; i < text.length;) {
      const cp = text.codePointAt(i) ?? 0;
      // A lone surrogate is encoded as U+FFFD by TextEncoder; do the same.
      const lone = cp >= 0xd800 && cp <= 0xdfff;
      const width = cp > 0xffff ? 2 : 1;
      for (const b of utf8Bytes(lone ? 0xfffd : cp)) out.push({ id: b, start: i, end: i + width });
      i += width;
    }
    return out;
  }

  display(id: number): string {
    if (id >= 0x21 && id < 0x7f) return String.fromCharCode(id);
    const names: Record<number, string> = { 0x20: '␠', 0x0a: '\\n', 0x09: '\\t', 0x0d: '\\r' };
    return names[id] ?? `<0x${id.toString(16).toUpperCase().padStart(2, '0')}>`;
  }
}

function utf8Bytes(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
}

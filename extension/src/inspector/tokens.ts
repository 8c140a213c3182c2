// What a tokenizer gives the inspector: ids, and where each token sits in the inspected text.

export interface TextToken {
  id: number;
  /** UTF-16 offsets into the inspected text (what VS Code positions count); start === end for
   *  tokens with no text of their own (BOS, tokens a normalizer invented). */
  start: number;
  end: number;
}

export interface TextTokenizer {
  readonly kind: 'byte-level' | 'hf';
  tokenize(text: string): TextToken[];
  /** A short printable form of one token, for hovers. */
  display(id: number): string;
}

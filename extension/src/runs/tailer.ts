// Incremental reader of an append-only JSON-lines file (metrics.jsonl, routing.jsonl).
// No vscode import, so node tests can stream gigabytes through it.
//
// Why this shape: training appends and flushes lines while we read, so the last line is often
// partial; files can be truncated or recreated when a run restarts; and a file may be huge.
// We therefore read only the bytes past `offset`, in fixed-size chunks, hand records to the
// caller chunk by chunk (so memory is bounded by the chunk, not the file), and keep an
// unterminated tail until its newline arrives.
import { promises as fsp } from 'node:fs';
import { log, why } from '../util/log';

export interface TailOptions<T> {
  /** Accepts a parsed JSON value as a record, or rejects it (counted as a bad line). */
  accept: (value: unknown) => value is T;
  /** Lines longer than this are skipped and counted as bad without being buffered. */
  maxLineBytes?: number;
  chunkBytes?: number;
}

export interface TailPoll {
  /** The file shrank or was replaced: everything read before is void. */
  reset: boolean;
  records: number;
  bytes: number;
  badLines: number;
}

const NEWLINE = 0x0a;
const HEAD_BYTES = 256;
// Python's json.dumps writes NaN and Infinity bare (a diverged loss is exactly that).
const NON_FINITE = /(?<=[:[,]\s*)(-?)(NaN|Infinity)(?=\s*[,\]}])/g;
const NON_FINITE_TAG = '\u0000moelab-nonfinite:';

function reviveNonFinite(_key: string, v: unknown): unknown {
  if (typeof v === 'string' && v.startsWith(NON_FINITE_TAG)) {
    const s = v.slice(NON_FINITE_TAG.length);
    return s === 'NaN' ? NaN : s === '-Infinity' ? -Infinity : Infinity;
  }
  return v;
}

/** JSON.parse that also accepts Python's bare NaN / Infinity / -Infinity numbers. */
export function parseJsonLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch (e) {
    if (!/NaN|Infinity/.test(line)) throw e;
    const patched = line.replace(NON_FINITE, (_m, sign: string, word: string) =>
      JSON.stringify(`${NON_FINITE_TAG}${sign}${word}`),
    );
    return JSON.parse(patched, reviveNonFinite);
  }
}

export class JsonlTailer<T> {
  private offset = 0;
  private identity: string | undefined;
  /** The file's first bytes as we read them: a recreated file rarely starts the same way. */
  private head: Buffer = Buffer.alloc(0);
  /** Bytes of an unterminated last line, kept until its newline arrives. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** True while skipping the rest of an over-long line. */
  private skippingLongLine = false;
  private bad = 0;
  private readonly maxLineBytes: number;
  private readonly chunkBytes: number;

  constructor(
    readonly file: string,
    private readonly opts: TailOptions<T>,
  ) {
    this.maxLineBytes = opts.maxLineBytes ?? 16 * 1024 * 1024;
    this.chunkBytes = opts.chunkBytes ?? 1024 * 1024;
  }

  /** Bytes consumed so far (complete lines plus the buffered partial line). */
  get position(): number {
    return this.offset;
  }

  get badLines(): number {
    return this.bad;
  }

  /**
   * Reads whatever was appended since the last poll and passes the records to `sink`,
   * one batch per chunk. A missing file is not an error: runs create their files lazily.
   * `onReset` runs before the first batch when the file was truncated or replaced.
   */
  async poll(sink: (batch: T[]) => void, onReset?: () => void): Promise<TailPoll> {
    const result: TailPoll = { reset: false, records: 0, bytes: 0, badLines: 0 };
    let fh: fsp.FileHandle;
    try {
      // A FIFO would block the open forever; only regular files are tailed.
      if (!(await fsp.stat(this.file)).isFile()) return result;
      fh = await fsp.open(this.file, 'r');
    } catch (e) {
      log.trace(`${this.file} is not there yet: ${why(e)}`);
      return result;
    }
    try {
      const st = await fh.stat();
      // A smaller size means truncation; a new inode, or different first bytes (inode numbers
      // are reused at once on Linux), mean the file was recreated, e.g. by a restarted run.
      const identity = `${st.dev}:${st.ino}`;
      if (
        (this.identity !== undefined && identity !== this.identity) ||
        st.size < this.offset ||
        !(await this.sameHead(fh))
      ) {
        this.restart();
        result.reset = true;
        onReset?.();
      }
      this.identity = identity;
      const badBefore = this.bad;
      const buf = Buffer.allocUnsafe(this.chunkBytes);
      while (this.offset < st.size) {
        const want = Math.min(this.chunkBytes, st.size - this.offset);
        const { bytesRead } = await fh.read(buf, 0, want, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        result.bytes += bytesRead;
        if (this.head.length < HEAD_BYTES) {
          const take = Math.min(HEAD_BYTES - this.head.length, bytesRead);
          this.head = Buffer.concat([this.head, buf.subarray(0, take)]);
        }
        const batch = this.consume(buf.subarray(0, bytesRead));
        if (batch.length > 0) {
          result.records += batch.length;
          sink(batch);
        }
      }
      result.badLines = this.bad - badBefore;
    } finally {
      await fh.close();
    }
    return result;
  }

  private async sameHead(fh: fsp.FileHandle): Promise<boolean> {
    if (this.head.length === 0) return true;
    const now = Buffer.alloc(this.head.length);
    const { bytesRead } = await fh.read(now, 0, now.length, 0);
    return bytesRead === now.length && now.equals(this.head);
  }

  private restart(): void {
    this.offset = 0;
    this.head = Buffer.alloc(0);
    this.pending = [];
    this.pendingBytes = 0;
    this.skippingLongLine = false;
    this.bad = 0;
  }

  private consume(chunk: Buffer): T[] {
    const out: T[] = [];
    const firstNl = chunk.indexOf(NEWLINE);
    if (firstNl < 0) {
      this.hold(chunk);
      return out;
    }
    // The first line may continue what earlier chunks left pending.
    if (this.skippingLongLine) {
      this.skippingLongLine = false;
    } else if (this.pendingBytes + firstNl > this.maxLineBytes) {
      this.bad++;
    } else {
      const piece = chunk.subarray(0, firstNl);
      this.parseLine(
        (this.pendingBytes > 0 ? Buffer.concat([...this.pending, piece]) : piece).toString('utf8'),
        out,
      );
    }
    this.pending = [];
    this.pendingBytes = 0;
    // Complete lines in between: one decode per chunk (a newline byte is never inside a UTF-8 sequence).
    const lastNl = chunk.lastIndexOf(NEWLINE);
    if (lastNl > firstNl) {
      for (const line of chunk.toString('utf8', firstNl + 1, lastNl).split('\n')) {
        if (line.length > this.maxLineBytes) this.bad++;
        else this.parseLine(line, out);
      }
    }
    if (lastNl + 1 < chunk.length) this.hold(chunk.subarray(lastNl + 1));
    return out;
  }

  /** Keeps an unterminated tail, unless the line is already too long to ever accept. */
  private hold(rest: Buffer): void {
    if (this.skippingLongLine) return;
    if (this.pendingBytes + rest.length > this.maxLineBytes) {
      // Count it now and drop what we hold: an endless line must not grow memory.
      this.bad++;
      this.skippingLongLine = true;
      this.pending = [];
      this.pendingBytes = 0;
    } else {
      // Copy: the chunk buffer is reused by the next read.
      this.pending.push(Buffer.from(rest));
      this.pendingBytes += rest.length;
    }
  }

  private parseLine(raw: string, out: T[]): void {
    const line = raw.trim();
    if (line.length === 0) return;
    let value: unknown;
    try {
      value = parseJsonLine(line);
    } catch {
      this.bad++;
      return;
    }
    if (this.opts.accept(value)) out.push(value);
    else this.bad++;
  }
}

// The run filter: a regular expression when the text is one, else a plain
// case-insensitive substring (a half-typed regex must not hide every run).
import type { RunSummary } from '../protocol';

export function runMatcher(text: string): (run: RunSummary) => boolean {
  const q = text.trim();
  if (!q) return () => true;
  let re: RegExp | undefined;
  const slashed = /^\/(.*)\/([a-z]*)$/.exec(q);
  try {
    re = slashed
      ? new RegExp(slashed[1], slashed[2].includes('i') ? slashed[2] : slashed[2] + 'i')
      : new RegExp(q, 'i');
  } catch {
    re = undefined;
  }
  const lower = q.toLowerCase();
  return (run) => {
    const hay = [run.name, run.id, run.experiment ?? '', run.method ?? ''];
    return re ? hay.some((h) => re.test(h)) : hay.some((h) => h.toLowerCase().includes(lower));
  };
}

// An experiment's eval.json with many models, for the Results panel's speed checks (the unit and
// webview tests, bench/results_open.mjs): every model shaped like the real file the engine wrote
// (test/fixtures/results/eval-tasks.json: per-domain loss and perplexity, the average, lm-eval
// task scores), its numbers varied deterministically.
import * as fs from 'node:fs';
import * as path from 'node:path';

const FIXTURE = path.resolve(import.meta.dirname, '..', 'fixtures', 'results', 'eval-tasks.json');

type Json = Record<string, unknown>;

/** Labels as a study names them: the seed, branches, the methods, then variants of them. */
function labels(n: number): string[] {
  const fixed = ['seed', 'branch-code', 'branch-math', 'branch-prose', 'dense-continued'];
  const methods = ['sparse', 'btx', 'bam-ekv', 'bam-skv', 'upit'];
  const out = [...fixed, ...methods];
  for (let i = 0; out.length < n; i++) out.push(`${methods[i % methods.length]}-v${Math.floor(i / 5) + 1}`);
  return out.slice(0, n);
}

/** eval.json text with `n` models (one per run). */
export function syntheticEvalJson(n: number): string {
  const real = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as Json;
  const template = Object.values(real.models as Json)[0] as Json;
  let seed = 7;
  const jitter = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return 0.8 + (0.4 * seed) / 2147483648;
  };
  // Scale every number but token counts: a structurally identical entry with other values.
  const vary = (v: unknown, key = ''): unknown => {
    if (typeof v === 'number')
      return key === 'tokens' ? v : key.startsWith('acc') ? Math.min(1, v * jitter()) : v * jitter();
    if (Array.isArray(v)) return v.map((x) => vary(x));
    if (v && typeof v === 'object')
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, vary(x, k)]));
    return v;
  };
  const models = Object.fromEntries(labels(n).map((label) => [label, vary(template)]));
  return JSON.stringify({ ...real, models });
}

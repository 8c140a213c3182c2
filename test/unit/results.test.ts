import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { csvParseRows } from 'd3';
import { parseResults, ResultsFileError, roleOf } from '../../extension/src/results/resultsFile';
import { resultsCandidates, runForLabel } from '../../extension/src/results/resultsTarget';
import { runColors } from '../../extension/src/runs/runColors';
import { isResultsDoc, parseHostToResults, parseWebviewToHost } from '../../webview/src/protocolGuards';
import {
  bestPerColumn,
  columnsOf,
  fmtMargin,
  fmtSpread,
  groupRows,
  latexEscape,
  toCsv,
  toLatex,
  toMarkdown,
  valueColumns,
} from '../../webview/src/results/resultsTable';
import { demoRuns } from './demoRuns';
import { syntheticEvalJson } from './resultsSynthetic';

// Written by `moelab demo --quick` (one seed): study.json, the eval run's eval.json, a run's own eval.json.
const FIXTURES = path.resolve(import.meta.dirname, '..', 'fixtures', 'results');
const read = (name: string): string => fs.readFileSync(path.join(FIXTURES, name), 'utf8');
const study = () => parseResults(read('study.json'), 'study.json');
const raw = JSON.parse(read('study.json'));

describe('results file reader', () => {
  it('reads study.json: every model with its role, budget and spread, every claim with its verdict', () => {
    const doc = study();
    assert.ok(isResultsDoc(doc));
    assert.equal(doc.kind, 'study');
    assert.deepEqual(doc.domains, raw.domains);
    const s = doc.settings[0];
    const rs = raw.settings[0];
    assert.deepEqual(
      s.models.map((m) => m.label),
      Object.keys(rs.models),
    );
    for (const m of s.models) {
      assert.equal(m.role, rs.models[m.label].role, m.label);
      assert.equal(m.ppl.average.mean, rs.models[m.label].ppl.average.mean);
      assert.equal(m.budget.tokensAfterSeed, rs.models[m.label].budget.tokens_after_seed);
      assert.equal(m.budget.matchedTo, rs.models[m.label].budget.matched_to);
    }
    assert.deepEqual(
      s.claims.map((c) => c.verdict),
      rs.claims.map((c: { verdict: string }) => c.verdict),
    );
    const equalCompute = s.claims.find((c) => c.claim === 'BAM below BTX at equal compute');
    assert.equal(
      equalCompute?.comparisons[0].marginPct,
      rs.claims.find((c: { claim: string }) => c.claim === 'BAM below BTX at equal compute').comparisons[0]
        .margin_pct,
    );
  });

  it("reads the eval run's eval.json as one seed without claims, with the same numbers the study reports", () => {
    const doc = parseResults(read('eval.json'), 'eval.json');
    assert.ok(isResultsDoc(doc));
    assert.equal(doc.kind, 'eval');
    const byLabel = new Map(study().settings[0].models.map((m) => [m.label, m]));
    const s = doc.settings[0];
    assert.equal(s.claims.length, 0);
    assert.ok(s.models.length >= 10);
    for (const m of s.models) {
      assert.equal(m.role, byLabel.get(m.label)?.role, m.label);
      for (const d of columnsOf(doc.domains)) {
        assert.equal(m.ppl[d].std, null);
        assert.equal(m.ppl[d].mean, byLabel.get(m.label)?.ppl[d].mean, `${m.label} ${d}`);
      }
    }
  });

  it("reads a run's own eval.json as one model", () => {
    const doc = parseResults(read('run-eval.json'), 'eval.json');
    assert.equal(doc.settings[0].models.length, 1);
    assert.equal(doc.settings[0].models[0].label, 'demo-moe-btx');
    assert.equal(doc.settings[0].models[0].ppl.average.mean, JSON.parse(read('run-eval.json')).average.ppl);
  });

  it('bad files are one line of error naming the file', () => {
    assert.throws(
      () => parseResults('{"schema": 1, "settings": [', 'study.json'),
      (e: Error) =>
        e instanceof ResultsFileError &&
        /^study\.json is not valid JSON/.test(e.message) &&
        !e.message.includes('\n'),
    );
    assert.throws(
      () => parseResults(JSON.stringify({ ...raw, schema: 2 }), 'study.json'),
      /schema 2 is not supported/,
    );
    assert.throws(() => parseResults('{"experiment": "x"}', 'eval.json'), /eval\.json has neither/);
    assert.throws(() => parseResults('[]', 'eval.json'), /not a JSON object/);
  });

  it('roles follow the engine (study.py role)', () => {
    assert.deepEqual(['seed', 'tune', 'branch-code', 'dense-continued', 'btx', 'btx-compute'].map(roleOf), [
      'seed',
      'tune',
      'branch',
      'baseline',
      'method',
      'variant',
    ]);
  });

  it('an eval run opens its study first, then its own eval.json', () => {
    assert.deepEqual(resultsCandidates('/w/runs/demo-eval'), [
      '/w/runs/study.json',
      '/w/study.json',
      '/w/runs/demo-eval/eval.json',
    ]);
  });
});

describe('results protocol guards', () => {
  const doc = study();
  const message = { type: 'results', file: '/w/runs/study.json', label: 'runs/study.json', doc, error: null };
  it('accept what the reader produces and reject the rest', () => {
    assert.ok(parseHostToResults(message));
    assert.ok(parseHostToResults({ ...message, doc: null, error: 'study.json cannot be read' }));
    assert.equal(parseHostToResults({ ...message, doc: null, error: null }), undefined);
    const badColor = structuredClone(doc);
    badColor.settings[0].models[0].color = 'url(https://evil)';
    assert.equal(parseHostToResults({ ...message, doc: badColor }), undefined);
    const badVerdict = structuredClone(doc);
    (badVerdict.settings[0].claims[0] as { verdict: string }).verdict = 'holds, probably';
    assert.equal(parseHostToResults({ ...message, doc: badVerdict }), undefined);
    const missingDomain = structuredClone(doc);
    delete missingDomain.settings[0].models[0].ppl.code;
    assert.equal(parseHostToResults({ ...message, doc: missingDomain }), undefined);
  });
  it('copyText carries one of the three formats', () => {
    assert.deepEqual(parseWebviewToHost({ type: 'copyText', format: 'latex', text: 'x' }), {
      type: 'copyText',
      format: 'latex',
      text: 'x',
    });
    assert.equal(parseWebviewToHost({ type: 'copyText', format: 'html', text: 'x' }), undefined);
  });
});

describe('results table and writers', () => {
  const doc = study();
  const s = doc.settings[0];
  const cols = columnsOf(doc.domains);

  it('formats mean ± std, one seed and failed cells', () => {
    assert.equal(fmtSpread({ mean: 12.6093, std: 0.0412, values: [12.6, 12.65, 12.58] }), '12.61 ± 0.04');
    assert.equal(fmtSpread({ mean: 12.6093, std: null, values: [12.6093] }), '12.61');
    assert.equal(fmtSpread({ mean: null, std: null, values: [null] }), '—');
    assert.equal(fmtMargin(0.451), '+0.45 %');
    assert.equal(fmtMargin(-5.457), '−5.46 %');
    assert.equal(fmtMargin(null), '—');
  });

  it('marks the lowest mean per column, ties included, failed rows never', () => {
    const best = bestPerColumn(s.models, cols);
    for (const c of cols) {
      const means = s.models.map((m) => m.ppl[c].mean).filter((v): v is number => v !== null);
      const lo = Math.min(...means);
      assert.deepEqual(
        [...(best.get(c) ?? [])],
        s.models.filter((m) => m.ppl[c].mean === lo).map((m) => m.label),
        c,
      );
    }
    const tie = [
      { ...s.models[0], label: 'a', ppl: { x: { mean: 2, std: null, values: [2] } } },
      { ...s.models[0], label: 'b', ppl: { x: { mean: 2, std: null, values: [2] } } },
      { ...s.models[0], label: 'c', ppl: { x: { mean: null, std: null, values: [null] } } },
    ];
    assert.deepEqual([...(bestPerColumn(tie, ['x']).get('x') ?? [])], ['a', 'b']);
  });

  it('groups rows by role: seed, dense runs, baselines, methods, variants', () => {
    const groups = groupRows(s.models);
    assert.deepEqual(
      groups.map((g) => g.title),
      ['Seed', 'Dense runs', 'Baselines', 'Methods', 'Variants'],
    );
    assert.equal(
      groups.reduce((n, g) => n + g.models.length, 0),
      s.models.length,
    );
  });

  it('Markdown: one row per model, the best per column in bold', () => {
    const md = toMarkdown(s, doc.domains);
    const rows = md.split('\n').filter((l) => l.startsWith('| '));
    assert.equal(rows.length, s.models.length + 2);
    const best = bestPerColumn(s.models, cols);
    for (const c of cols) {
      for (const label of best.get(c) ?? []) {
        const row = rows.find((r) => r.startsWith(`| ${label} |`));
        assert.ok(
          row?.includes(`**${fmtSpread(s.models.find((m) => m.label === label)?.ppl[c])}**`),
          `${label} ${c}`,
        );
      }
    }
  });

  it('LaTeX: booktabs rules, a \\midrule per group, escaped text, \\pm with several seeds', () => {
    const tex = toLatex(s, doc.domains);
    assert.match(tex, /\\toprule[\s\S]*\\midrule[\s\S]*\\bottomrule/);
    assert.equal(tex.match(/\\midrule/g)?.length, groupRows(s.models).length);
    assert.equal(
      tex.match(/\\mathbf\{/g)?.length,
      [...bestPerColumn(s.models, cols).values()].reduce((n, b) => n + b.size, 0),
    );
    assert.equal(latexEscape('a_b & 5% #1'), 'a\\_b \\& 5\\% \\#1');
    const seeds = structuredClone(s);
    seeds.seeds = [0, 1, 2];
    seeds.models[0].ppl.code = { mean: 11.5, std: 0.25, values: [11.2, 11.6, 11.7] };
    assert.match(toLatex(seeds, doc.domains), /\$11\.50 \\pm 0\.25\$/);
  });

  it('CSV parses back to the same numbers', () => {
    const rows = csvParseRows(toCsv(s, doc.domains).trim());
    const head = rows[0];
    const byLabel = new Map(s.models.map((m) => [m.label, m]));
    assert.equal(rows.length, s.models.length + 1);
    for (const r of rows.slice(1)) {
      const m = byLabel.get(r[0]);
      assert.ok(m);
      for (const c of cols) assert.equal(Number(r[head.indexOf(`${c}_ppl_mean`)]), m.ppl[c].mean);
      assert.equal(r[head.indexOf('matched_to')], m.budget.matchedTo ?? '');
    }
  });
});

describe('lm-eval task columns', () => {
  // The eval stage of a real experiment with `tasks` (make_lm_eval.py): lm-eval's own scores.
  const text = read('eval-tasks.json');
  /** The file as the engine writes it (pipeline.py `_eval`, harness.py `run_harness`). */
  type Entry = { lm_eval?: { tasks: Record<string, Record<string, number>> } };
  const raw = JSON.parse(text) as { models: Record<string, Entry> };
  const doc = parseResults(text, 'eval.json');
  const s = doc.settings[0];
  const scores = (label: string) => raw.models[label].lm_eval?.tasks ?? {};
  const taskNames = Object.keys(scores(Object.keys(raw.models)[0]));

  it('one column per task, the accuracy lm-eval reported, higher is better', () => {
    assert.ok(isResultsDoc(doc));
    assert.deepEqual(
      doc.tasks.map((t) => [t.name, t.metric, t.higherIsBetter]),
      taskNames.map((t) => [t, 'acc,none', true]),
    );
    for (const m of s.models)
      for (const t of taskNames) assert.equal(m.scores[t].mean, scores(m.label)[t]['acc,none']);
    // study.json aggregates perplexity only: no task columns, still a valid document.
    assert.deepEqual(study().tasks, []);
  });

  it('marks the highest accuracy, and the lowest of a perplexity-like lm-eval metric', () => {
    const cols = valueColumns(doc.domains, doc.tasks);
    const best = bestPerColumn(s.models, cols);
    for (const t of taskNames) {
      const acc = s.models.map((m) => m.scores[t].mean as number);
      assert.deepEqual(
        [...(best.get(`task/${t}`) ?? [])],
        s.models.filter((m) => m.scores[t].mean === Math.max(...acc)).map((m) => m.label),
      );
    }
    // wikitext-style tasks report only word_perplexity / bits_per_byte: lower is better there.
    const wiki = structuredClone(raw);
    Object.values(wiki.models).forEach((m, i) => {
      (m.lm_eval as NonNullable<Entry['lm_eval']>).tasks.wikitext = {
        'word_perplexity,none': 30 - i,
        'bits_per_byte,none': 1.5 - i / 10,
      };
    });
    const w = parseResults(JSON.stringify(wiki), 'eval.json');
    const task = w.tasks.find((t) => t.name === 'wikitext');
    assert.deepEqual(task, { name: 'wikitext', metric: 'word_perplexity,none', higherIsBetter: false });
    const last = w.settings[0].models.at(-1)?.label;
    assert.deepEqual(
      [...(bestPerColumn(w.settings[0].models, valueColumns(w.domains, w.tasks)).get('task/wikitext') ?? [])],
      [last],
    );
  });

  it('a model evaluated without a task shows a dash, not a zero', () => {
    const some = structuredClone(raw);
    const first = Object.keys(some.models)[0];
    delete some.models[first].lm_eval;
    const d = parseResults(JSON.stringify(some), 'eval.json');
    assert.ok(isResultsDoc(d));
    assert.equal(d.tasks.length, taskNames.length);
    assert.equal(d.settings[0].models[0].scores[taskNames[0]].mean, null);
    assert.match(toMarkdown(d.settings[0], d.domains, d.tasks), new RegExp(`\\| ${first} \\|.*\\| — \\|`));
  });

  it('Markdown, LaTeX and CSV carry the task columns with their best marked', () => {
    const cols = valueColumns(doc.domains, doc.tasks);
    const best = bestPerColumn(s.models, cols);
    const marks = [...best.values()].reduce((n, b) => n + b.size, 0);
    const md = toMarkdown(s, doc.domains, doc.tasks);
    for (const t of taskNames) assert.ok(md.includes(`| ${t} (acc) |`), t);
    assert.match(md, /acc, higher is better/);
    assert.equal(md.match(/\*\*[^*]+\*\*/g)?.length, marks);
    const tex = toLatex(s, doc.domains, doc.tasks);
    for (const t of taskNames) assert.ok(tex.includes(latexEscape(`${t} (acc)`)), t);
    assert.equal(tex.match(/\\mathbf\{/g)?.length, marks);
    assert.ok(tex.includes(`\\begin{tabular}{l${'r'.repeat(cols.length)}}`));
    const rows = csvParseRows(toCsv(s, doc.domains, doc.tasks).trim());
    for (const r of rows.slice(1))
      for (const t of taskNames)
        assert.equal(Number(r[rows[0].indexOf(`${t}_acc_mean`)]), scores(r[0])[t]['acc,none']);
  });

  it('builds the table of 100 runs quickly (read, best marks, all three writers)', () => {
    const big = syntheticEvalJson(100);
    const t0 = performance.now();
    const d = parseResults(big, 'eval.json');
    const cols = valueColumns(d.domains, d.tasks);
    bestPerColumn(d.settings[0].models, cols);
    const md = toMarkdown(d.settings[0], d.domains, d.tasks);
    toLatex(d.settings[0], d.domains, d.tasks);
    toCsv(d.settings[0], d.domains, d.tasks);
    const ms = performance.now() - t0;
    assert.equal(d.settings[0].models.length, 100);
    assert.equal(md.split('\n').filter((l) => l.startsWith('| ')).length, 102);
    // A loose bound (the 300 ms budget of the whole panel is bench/results_open.mjs's to measure).
    assert.ok(ms < 1500, `${ms.toFixed(0)} ms`);
  });
});

describe('run colours', () => {
  it('20+ demo runs get distinct colours, far apart in Lab', async () => {
    const { lab } = await import('d3');
    const runs = demoRuns();
    assert.ok(runs.length >= 20);
    const colors = runColors(runs);
    const list = runs.map((r) => colors.get(r.id) as string);
    assert.equal(new Set(list).size, runs.length);
    let min = Infinity;
    for (let i = 0; i < list.length; i++)
      for (let j = i + 1; j < list.length; j++) {
        const a = lab(list[i]),
          b = lab(list[j]);
        min = Math.min(min, Math.hypot(a.l - b.l, a.a - b.a, a.b - b.b));
      }
    assert.ok(min > 10, `closest pair ΔE ${min.toFixed(1)}`);
  });

  it('a run keeps its colour when later runs join, and a method family shares a hue band', async () => {
    const { hsl } = await import('d3');
    const runs = demoRuns();
    const before = runColors(runs.slice(0, 12));
    const after = runColors(runs);
    for (const r of runs.slice(0, 12)) assert.equal(after.get(r.id), before.get(r.id), r.id);
    const hue = (id: string): number => hsl(after.get(id) as string).h;
    const d = (a: number, b: number): number => Math.min(Math.abs(a - b), 360 - Math.abs(a - b));
    assert.ok(d(hue('demo-moe-bam-ekv'), hue('demo-upcycle-bam-ekv-attn-top2')) <= 24);
    assert.ok(d(hue('demo-moe-bam-ekv'), hue('demo-moe-btx')) > 30);
  });

  it("the Results panel colours a model with its run's colour", () => {
    const runs = demoRuns('/w/runs');
    const colors = runColors(runs);
    const doc = parseResults(read('study.json'), 'study.json', (label) =>
      colors.get(runForLabel(label, runs, '/w/runs')?.id ?? ''),
    );
    const model = (label: string) => doc.settings[0].models.find((m) => m.label === label);
    assert.equal(model('btx')?.color, colors.get('demo-moe-btx'));
    assert.equal(model('seed')?.color, colors.get('demo-seed'));
    assert.equal(model('branch-code')?.color, colors.get('demo-branch-code'));
    assert.equal(new Set(doc.settings[0].models.map((m) => m.color)).size, doc.settings[0].models.length);
  });
});

describe('Open Results in the manifest', () => {
  const pkg = JSON.parse(
    fs.readFileSync(path.resolve(import.meta.dirname, '..', '..', 'package.json'), 'utf8'),
  );
  const menus = pkg.contributes.menus as Record<string, { command: string; when?: string }[]>;
  /** The viewItem regexes of a `when` clause, as VS Code evaluates `viewItem =~ /…/`. */
  const matches = (when: string, viewItem: string): boolean =>
    [...when.matchAll(/viewItem =~ \/(.+?)\/(?= |$)/g)].some((m) => new RegExp(m[1]).test(viewItem));
  it('is offered on eval runs only, and eval runs keep every other run action', () => {
    const item = menus['view/item/context'];
    const open = item.find((m) => m.command === 'moelab.openResults');
    assert.ok(open?.when);
    assert.ok(matches(open.when, 'moelab.run.done.eval'));
    assert.ok(!matches(open.when, 'moelab.run.done'));
    for (const command of ['moelab.openDashboard', 'moelab.openRunLog', 'moelab.revealRunFolder']) {
      const m = item.find((x) => x.command === command);
      assert.ok(m?.when && matches(m.when, 'moelab.run.done.eval'), command);
    }
    const stop = item.filter((m) => m.command === 'moelab.stopRun');
    assert.ok(
      stop.length &&
        stop.every(
          (m) =>
            m.when && matches(m.when, 'moelab.run.running.eval') && !matches(m.when, 'moelab.run.done.eval'),
        ),
    );
  });
  it('is offered on study.json and eval.json in the explorer and the editor title', () => {
    for (const where of ['explorer/context', 'editor/title']) {
      const m = menus[where].find((x) => x.command === 'moelab.openResults');
      assert.ok(m?.when, where);
      const re = new RegExp((m.when.match(/resourceFilename =~ \/(.+)\/$/) ?? [])[1]);
      assert.ok(
        re.test('study.json') && re.test('eval.json') && !re.test('run.json') && !re.test('my-study.json'),
        where,
      );
    }
    assert.ok(pkg.activationEvents.includes('onWebviewPanel:moelab.results'));
  });
});

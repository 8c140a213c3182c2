// Hostile inputs on the extension side, each under a time bound: JSONL streams (garbage, huge and
// partial lines, a 1 GB file), webview messages and saved state, and the webview's CSP.
// Safetensors headers are fuzzed in safetensorsHeader.test.ts, task arguments in taskArgs.test.ts,
// corrupt ONNX files in inspectorOnnx.test.ts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { contentSecurityPolicy, webviewHtml } from '../../extension/src/panels/webviewHtml';
import { isMetricRecord, isRoutingRecord } from '../../extension/src/runs/records';
import { JsonlTailer } from '../../extension/src/runs/tailer';
import {
  parseDashboardState,
  parseHostToDashboard,
  parseHostToRouter,
  parseRouterState,
  parseWebviewToHost,
  runIdsFromState,
} from '../../webview/src/protocolGuards';
import { tmpDir } from './fixtures';

const dir = tmpDir('moelab-hostile-');

/** Runs `fn` and fails if it takes longer than `ms` (a hang is a failure, not a stuck test run). */
async function within<T>(ms: number, what: string, fn: () => Promise<T> | T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([Promise.resolve().then(fn), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function drainAll<T>(t: JsonlTailer<T>): Promise<T[]> {
  const got: T[] = [];
  await t.poll((batch) => got.push(...batch));
  return got;
}

describe('JSONL streams from hostile writers', () => {
  it(
    'arbitrary bytes appended in arbitrary chunks: no throw, every complete good line read once',
    { timeout: 60_000 },
    async () => {
      const good = fc.record({
        step: fc.nat(1e9),
        split: fc.constantFrom('train', 'eval'),
        loss: fc.double({ noNaN: true, noDefaultInfinity: true }),
      });
      const line = fc.oneof(
        good.map((r) => ({ good: true, text: JSON.stringify(r) })),
        fc
          .string({ maxLength: 200 })
          .filter((s) => !s.includes('\n'))
          .map((text) => ({ good: false, text })),
        fc
          .uint8Array({ maxLength: 300 })
          .map((b) => ({ good: false, text: Buffer.from(b.filter((x) => x !== 0x0a)).toString('latin1') })),
        fc.constantFrom(
          { good: false, text: '{"step": 1, "spl' },
          { good: false, text: '[]' },
          { good: false, text: 'null' },
          { good: false, text: '{"step": "x"}' },
          { good: false, text: '\u0000\u0000\u0000' },
          { good: false, text: '{'.repeat(10_000) },
        ),
      );
      let n = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(line, { maxLength: 40 }),
          fc.array(fc.nat(4000), { minLength: 1, maxLength: 8 }),
          async (lines, cuts) => {
            const file = path.join(dir, `fuzz-${n++}.jsonl`);
            const bytes = Buffer.from(lines.map((l) => l.text + '\n').join(''), 'latin1');
            fs.writeFileSync(file, '');
            const t = new JsonlTailer(file, { accept: isMetricRecord, maxLineBytes: 4096, chunkBytes: 257 });
            const got: unknown[] = [];
            let at = 0;
            for (const c of [...cuts, bytes.length]) {
              const end = Math.min(bytes.length, at + c);
              fs.appendFileSync(file, bytes.subarray(at, end));
              at = end;
              got.push(...(await within(5000, 'a poll', () => drainAll(t))));
            }
            fs.unlinkSync(file);
            // Every line that is a record is delivered, in order; nothing is invented.
            const expected = lines
              .filter((l) => isMetricRecord(safeParse(l.text)))
              .map((l) => JSON.parse(l.text));
            assert.deepEqual(got, expected);
          },
        ),
        { numRuns: 150, seed: 12 },
      );
    },
  );

  it(
    'a 1 GB file (a 1 GB line without newline, then records) streams at flat memory, in bounded time',
    { timeout: 120_000 },
    async () => {
      const file = path.join(dir, 'gigabyte.jsonl');
      const GB = 1024 ** 3;
      // A sparse 1 GB run of NUL bytes (a torn write's hole) followed by real records.
      fs.writeFileSync(file, '{"step":1,"split":"train","loss":3}\n');
      fs.truncateSync(file, GB);
      fs.appendFileSync(
        file,
        '\n{"step":2,"split":"train","loss":2.5}\n{"step":3,"split":"train","loss":2.4}\n',
      );
      global.gc?.();
      const before = process.memoryUsage().rss;
      let peak = before;
      const t = new JsonlTailer(file, { accept: isMetricRecord });
      const t0 = performance.now();
      const got: { step: number }[] = [];
      const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
      try {
        await within(90_000, 'reading 1 GB', () =>
          t.poll((batch) => {
            got.push(...batch);
            peak = Math.max(peak, process.memoryUsage().rss);
          }),
        );
      } finally {
        clearInterval(timer);
        fs.unlinkSync(file);
      }
      const secs = (performance.now() - t0) / 1000;
      assert.deepEqual(
        got.map((r) => r.step),
        [1, 2, 3],
      );
      assert.equal(t.badLines, 1, 'the 1 GB line is one bad line');
      const grewMb = (peak - before) / 2 ** 20;
      assert.ok(grewMb < 96, `memory grew by ${grewMb.toFixed(0)} MB`);
      console.log(`    1 GB in ${secs.toFixed(1)} s, memory +${grewMb.toFixed(0)} MB`);
    },
  );

  it('routing rows with hostile shapes are rejected, not crashed on', async () => {
    const file = path.join(dir, 'routing.jsonl');
    const rows = [
      { step: 1, layer: 0, router: 'ffn', load: [0.5, 0.5], prob: [0.5, 0.5] },
      { step: 1, layer: 0, router: 'ffn', load: 'x' },
      { step: 1, layer: -1, router: 'ffn', load: [1] },
      { step: 1, layer: 0, router: 'ffn', load: new Array(100).fill(1e308) },
      { __proto__: { polluted: true }, step: 1 },
      { step: 1, layer: 0, router: 'attn', load: [NaN] },
    ];
    fs.writeFileSync(
      file,
      rows.map((r) => JSON.stringify(r)).join('\n') + '\n{"constructor":{"prototype":{"x":1}}}\n',
    );
    const t = new JsonlTailer(file, { accept: isRoutingRecord });
    await within(2000, 'routing poll', () => drainAll(t));
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });
});

function safeParse(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

describe('webview messages and saved state from a hostile side', () => {
  const parsers = {
    parseWebviewToHost,
    parseHostToDashboard,
    parseHostToRouter,
    parseDashboardState,
    parseRouterState,
  };

  for (const [name, parse] of Object.entries(parsers)) {
    it(`${name}: any JSON value gives a message or undefined, fast, never a throw`, async () => {
      await within(30_000, name, () =>
        fc.assert(
          fc.property(fc.oneof(fc.jsonValue({ maxDepth: 6 }), fc.anything({ maxDepth: 4 })), (v) => {
            const t0 = performance.now();
            const out = parse(v);
            assert.ok(performance.now() - t0 < 200, 'one message took over 200 ms');
            if (out !== undefined) assert.equal(typeof out, 'object');
          }),
          { numRuns: 2000, seed: 7 },
        ),
      );
    });
  }

  it('messages shaped like real ones but with hostile fields are refused', () => {
    const hostile: unknown[] = [
      { type: 'openRun', runId: { toString: 'x' } },
      { type: 'ready', extra: 'x'.repeat(10_000_000) },
      { type: '__proto__' },
      { type: 'constructor' },
      Object.create(null),
      { type: 'requestRuns', runIds: new Array(1e6).fill(1) },
      { type: 'copy', text: 1 },
    ];
    for (const v of hostile) {
      const t0 = performance.now();
      assert.doesNotThrow(() => parseWebviewToHost(v));
      assert.ok(performance.now() - t0 < 1000);
    }
  });

  it('runIdsFromState keeps only strings, whatever the saved state holds', () => {
    fc.assert(
      fc.property(fc.anything({ maxDepth: 4 }), (v) => {
        const ids = runIdsFromState(v);
        assert.ok(Array.isArray(ids) && ids.every((x) => typeof x === 'string'));
      }),
      { numRuns: 2000, seed: 3 },
    );
  });
});

describe('webview security', () => {
  const nonce = 'AbC123xyz';
  const csp = contentSecurityPolicy('https://file+.vscode-resource.vscode-cdn.net', nonce);
  const directives = new Map(
    csp
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .map(([k, ...v]) => [k, v]),
  );

  it('CSP: nothing by default, scripts only by nonce, no unsafe-inline or unsafe-eval anywhere', () => {
    assert.deepEqual(directives.get('default-src'), ["'none'"]);
    assert.deepEqual(directives.get('script-src'), [`'nonce-${nonce}'`]);
    assert.ok(!/unsafe-inline|unsafe-eval|unsafe-hashes|wasm-unsafe-eval|\*/.test(csp), csp);
    for (const k of ['style-src', 'font-src', 'img-src']) {
      for (const src of directives.get(k) ?? [])
        assert.ok(src === 'https://file+.vscode-resource.vscode-cdn.net' || src === 'data:', `${k} ${src}`);
    }
    for (const k of directives.keys())
      assert.ok(
        ['default-src', 'script-src', 'style-src', 'font-src', 'img-src'].includes(k),
        `unexpected directive ${k}`,
      );
  });

  it('the HTML has no inline script, handler or style, and escapes what it embeds', () => {
    const html = webviewHtml({
      title: '"><script>alert(1)</script>',
      cspSource: 'https://x',
      nonce,
      scriptUri: 'https://x/a.js"onload="alert(1)',
      styleUri: 'https://x/a.css',
    });
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1);
    assert.equal(scripts[0][2].trim(), '', 'inline script');
    assert.match(scripts[0][1], new RegExp(`nonce="${nonce}"`));
    assert.ok(!/\son[a-z]+="/i.test(html.replace(/&quot;/g, '')), 'an event handler attribute');
    assert.ok(!/<style\b|\sstyle="/i.test(html), 'inline style');
    assert.ok(!html.includes('<script>alert'), 'title not escaped');
  });

  it('every panel is built by webviewHtml, and local resources come only from dist/webview', () => {
    const src = path.resolve('extension', 'src');
    const files = fs
      .readdirSync(src, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.ts'));
    const read = (f: string): string => fs.readFileSync(path.join(src, f), 'utf8');
    // The panels' hosts: panelHost (dashboard, router panel) and the Results panel, which reuses its options.
    const hosts = [path.join('panels', 'panelHost.ts'), path.join('results', 'resultsPanel.ts')];
    const htmlSetters = files.filter((f) => /\.html\s*=/.test(read(f)));
    assert.deepEqual(htmlSetters.sort(), [...hosts].sort());
    for (const f of htmlSetters) assert.match(read(f), /\.html\s*=\s*webviewHtml\(/, f);
    const host = read(hosts[0]);
    assert.match(host, /localResourceRoots:\s*\[vscode\.Uri\.joinPath\(extensionUri, 'dist', 'webview'\)\]/);
    assert.ok(!/enableCommandUris:\s*true/.test(host));
    const creators = files.filter((f) => /createWebviewPanel|registerWebviewViewProvider/.test(read(f)));
    assert.deepEqual(creators.sort(), [...hosts].sort());
    // Every panel is created with panelHost's options (scripts on, roots limited to the bundle).
    for (const f of creators)
      assert.match(read(f), /createWebviewPanel\([^)]*webviewOptions\(extensionUri\),?\s*\)/, f);
  });
});

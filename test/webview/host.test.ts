// Host-side pieces of the panels, without VS Code: the HTML's CSP, message
// validation on both sides, and the shaping of run-store records.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  isEmptyBlock,
  toMetricBlocks,
  toRoutingBlock,
  toRoutingRows,
  toRunSummary,
} from '../../extension/src/panels/panelData';
import { isRoutingRecord } from '../../extension/src/runs/records';
import { WarningLedger } from '../../extension/src/panels/warningLedger';
import { webviewHtml } from '../../extension/src/panels/webviewHtml';
import { makeNonce } from '../../extension/src/panels/nonce';
import {
  isMetricBlock,
  isRoutingBlock,
  isRoutingRow,
  isSaturationPoint,
  parseHostToDashboard,
  parseHostToRouter,
  parseWebviewToHost,
} from '../../webview/src/protocolGuards';

describe('webview HTML', () => {
  const nonce = makeNonce();
  const html = webviewHtml({
    title: 'Dash <x>',
    cspSource: 'https://file+.vscode-resource.vscode-cdn.net',
    nonce,
    scriptUri: 'https://r/dist/webview/dashboard.js',
    styleUri: 'https://r/dist/webview/dashboard.css',
  });
  const csp = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html)?.[1] ?? '';
  const directive = (name: string): string =>
    csp
      .split(';')
      .map((d) => d.trim())
      .find((d) => d.startsWith(`${name} `)) ?? '';

  it('has a CSP whose script-src is only the nonce', () => {
    assert.match(nonce, /^[A-Za-z0-9]{16,}$/);
    assert.equal(directive('default-src'), "default-src 'none'");
    assert.equal(directive('script-src'), `script-src 'nonce-${nonce}'`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  });

  it("loads only the nonce'd bundle script and escapes the title", () => {
    const scripts = html.match(/<script[^>]*>/g) ?? [];
    assert.equal(scripts.length, 1);
    assert.ok(scripts[0].includes(`nonce="${nonce}"`) && scripts[0].includes('dist/webview/dashboard.js'));
    assert.ok(html.includes('Dash &lt;x&gt;'));
    assert.doesNotMatch(html, /style="/);
  });

  it('makes a new nonce each time', () => assert.notEqual(makeNonce(), makeNonce()));
});

describe('message validation', () => {
  it('never throws and rejects arbitrary values', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        parseHostToDashboard(v);
        parseHostToRouter(v);
        parseWebviewToHost(v);
      }),
    );
  });

  it('accepts well-formed webview messages and rejects bad ones', () => {
    assert.deepEqual(parseWebviewToHost({ type: 'ready' }), { type: 'ready' });
    assert.ok(parseWebviewToHost({ type: 'saveFile', suggestedName: 'a.png', format: 'png', data: 'AAAA' }));
    assert.equal(
      parseWebviewToHost({ type: 'saveFile', suggestedName: '../a.png', format: 'png', data: '' }),
      undefined,
    );
    assert.equal(
      parseWebviewToHost({ type: 'saveFile', suggestedName: 'a.exe', format: 'exe', data: '' }),
      undefined,
    );
    assert.equal(
      parseWebviewToHost({
        type: 'routerWarnings',
        warnings: [{ runId: 'r', kind: 'boom', layer: 0, router: 'ffn', experts: [], message: '' }],
      }),
      undefined,
    );
    assert.equal(parseWebviewToHost({ type: 'eval', code: '1' }), undefined);
  });
});

describe('panel data shaping', () => {
  it('turns metrics.jsonl records into valid columnar blocks', () => {
    const blocks = toMetricBlocks('r1', [
      { step: 0, tokens: 0, time: 5, split: 'train', loss: 4, lr: 0 },
      {
        step: 10,
        tokens: 40960,
        flops: 1.5e12,
        time: 6,
        split: 'train',
        loss: 3.5,
        lr: 1e-4,
        grad_norm: 2,
        note: 'x',
      },
      { step: 10, split: 'eval', loss: 3.6, domain: { code: 3.2, math: 3.9 } },
      { step: Number.NaN, split: 'train', loss: 1 },
      { step: 20, split: 'train', loss: Number.POSITIVE_INFINITY },
    ]);
    assert.equal(blocks.length, 2);
    assert.ok(blocks.every(isMetricBlock));
    assert.deepEqual([...blocks[0].step], [0, 10]);
    assert.deepEqual([...blocks[0].values.grad_norm], [NaN, 2]);
    // flops is an x-axis column (NaN before the engine counted it), not a metric chart
    assert.deepEqual([...(blocks[0].flops ?? [])], [NaN, 1.5e12]);
    assert.equal(blocks[0].values.flops, undefined);
    assert.equal(isMetricBlock({ ...blocks[0], flops: [1] }), false); // one cell per step, or none at all
    assert.deepEqual([...blocks[1].values['domain/code']], [3.2]);
    // Typed columns, all views of one buffer per block: VS Code transfers it into the webview whole.
    for (const b of blocks) {
      const cols = [b.step, b.tokens, b.time, b.flops, ...Object.values(b.values)];
      assert.ok(cols.every((c) => c instanceof Float64Array && c.buffer === (b.step as Float64Array).buffer));
    }
    // What the webview receives is a structured clone of it (with the buffers transferred): still valid.
    const buffer = (blocks[0].step as Float64Array).buffer;
    const cloned = structuredClone(blocks, { transfer: [buffer] });
    assert.ok(cloned.every(isMetricBlock) && buffer.byteLength === 0);
    assert.deepEqual([...cloned[0].tokens], [0, 40960]);
  });

  it('keeps only well-formed routing records', () => {
    const rows = toRoutingRows([
      {
        step: 1,
        layer: 0,
        router: 'ffn',
        load: [0.5, 0.5],
        prob: [0.4, 0.6],
        by_domain: { code: [1, 0], bad: [1] },
      },
      { step: 1, layer: 1, router: 'attn', load: [], prob: [] },
    ]);
    assert.equal(rows.length, 1);
    // A router kind the engine does not write never leaves the run store.
    assert.equal(isRoutingRecord({ step: 1, layer: 0, router: 'moe', load: [1], prob: [1] }), false);
    assert.ok(isRoutingRow(rows[0]));
    assert.deepEqual(Object.keys(rows[0].by_domain ?? {}), ['code']);
  });

  it('splits routing.jsonl into rows with co-activation and saturation to merge', () => {
    const lines: unknown[] = [
      {
        step: 1,
        layer: 0,
        router: 'ffn',
        load: [0.5, 0.5],
        prob: [0.4, 0.6],
        coact: [
          [1, 0.25],
          [0.5, 1],
        ],
      },
      { step: 1, layer: 1, router: 'ffn', load: [0.5, 0.5], prob: [0.4, 0.6], coact: [[1, 0.25]] },
      // appended when the run is done: no load, so no row (and no zero-load row)
      { step: 1, layer: 0, router: 'ffn', saturation: 0.75 },
      { step: 1, layer: 1, router: 'ffn', saturation: 1.5 },
      { step: 1, layer: 0, router: 'moe', saturation: 0.5 },
    ];
    const records = lines.filter(isRoutingRecord);
    assert.equal(records.length, 4, 'the run store keeps saturation records, not those of an unknown router');
    assert.equal(isRoutingRecord({ step: 1, layer: 0, router: 'ffn' }), false);
    const block = toRoutingBlock('r', records);
    assert.ok(isRoutingBlock(block));
    assert.deepEqual(
      block.rows.map((r) => [r.layer, r.coact]),
      [
        [
          0,
          [
            [1, 0.25],
            [0.5, 1],
          ],
        ],
        [1, undefined],
      ],
    );
    assert.ok(block.rows.every((r) => r.load.length === 2));
    assert.deepEqual(block.saturation, [{ step: 1, layer: 0, router: 'ffn', saturation: 0.75 }]);
    assert.ok(!isEmptyBlock(toRoutingBlock('r', records.slice(2))) && isEmptyBlock(toRoutingBlock('r', [])));
    assert.equal(toRoutingBlock('r', records.slice(0, 1)).saturation, undefined);
  });

  it('validates co-activation matrices and saturation points', () => {
    const row = { step: 1, layer: 0, router: 'ffn', load: [0.5, 0.5], prob: [0.5, 0.5] };
    assert.ok(
      isRoutingRow({
        ...row,
        coact: [
          [1, 0],
          [0.5, 1],
        ],
      }),
    );
    for (const coact of [
      [[1, 0]],
      [[1, 0], [0.5]],
      [
        [1, 0],
        [0.5, 'x'],
      ],
      'no',
      [[1, 0], null],
    ])
      assert.equal(isRoutingRow({ ...row, coact }), false, JSON.stringify(coact));
    assert.ok(isRoutingRow({ ...row, saturation: 0.5 }));
    assert.equal(isRoutingRow({ ...row, saturation: '0.5' }), false);
    const point = { step: 10, layer: 2, router: 'attn', saturation: 1 };
    assert.ok(isSaturationPoint(point) && isSaturationPoint({ ...point, saturation: 0 }));
    for (const bad of [
      { ...point, saturation: 1.01 },
      { ...point, saturation: -0.1 },
      { ...point, saturation: Number.NaN },
      { ...point, layer: 0.5 },
      { ...point, router: 'moe' },
      { ...point, step: '1' },
      null,
    ]) {
      assert.equal(isSaturationPoint(bad), false, JSON.stringify(bad));
    }
    assert.ok(isRoutingBlock({ runId: 'r', rows: [], saturation: [point] }));
    assert.equal(isRoutingBlock({ runId: 'r', rows: [], saturation: point }), false);
    assert.equal(isRoutingBlock({ runId: 'r', rows: [], saturation: [{ ...point, saturation: 2 }] }), false);
    assert.ok(
      parseHostToRouter({
        type: 'appendRouting',
        routing: [{ runId: 'r', rows: [row], saturation: [point] }],
      }),
    );
    assert.equal(
      parseHostToRouter({
        type: 'appendRouting',
        routing: [{ runId: 'r', rows: [row], saturation: [{ ...point, router: 'x' }] }],
      }),
      undefined,
    );
  });

  it('summarizes run.json', () => {
    assert.deepEqual(
      toRunSummary({ id: 'btx-1', dir: '/r', status: 'running', experiment: 'btx', method: 'btx' }),
      { id: 'btx-1', name: 'btx-1', status: 'running', experiment: 'btx', method: 'btx', stage: undefined },
    );
  });

  it('notifies router warnings once per run and kind', () => {
    const ledger = new WarningLedger();
    const w = {
      runId: 'r',
      kind: 'dead' as const,
      layer: 0,
      router: 'ffn' as const,
      experts: [3],
      message: 'x',
    };
    assert.equal(ledger.take([w, { ...w, layer: 1 }], (id) => id).length, 1);
    assert.equal(ledger.take([w], (id) => id).length, 0);
    assert.equal(ledger.take([{ ...w, kind: 'collapse' }], (id) => id).length, 1);
  });
});

// The Weights tab's drawings: an E × E similarity heatmap (canvas for the cells,
// since E reaches 256; SVG for the axes and the marks over collapsed pairs),
// per-expert bars and drift lines (SVG with d3 scales: at most E bars or lines).
import { axisBottom, axisLeft, format, line, scaleBand, scaleLinear, select } from 'd3';
import type { Cell } from '../protocol';
import { el } from '../shared/dom';
import { fmtValue } from '../shared/format';
import type { ThemeColors } from '../shared/theme';
import { drawMatrix, type CellColor } from './heatmap';

const SVG_NS = 'http://www.w3.org/2000/svg';
const fmtTick = format('.2~g');

const num = (v: Cell | undefined): number => (v === null || v === undefined ? NaN : v);

/** Every k-th expert as an axis tick, so 256 labels do not overprint. */
function expertTicks(n: number, maxTicks: number): number[] {
  const k = Math.max(1, Math.ceil(n / maxTicks));
  const out: number[] = [];
  for (let i = 0; i < n; i += k) out.push(i);
  return out;
}

export interface MatrixViewOptions {
  label: string;
  matrix: Cell[][];
  color: CellColor;
  theme: ThemeColors;
  /** Cells to outline (collapsed pairs, identical routers); drawn when cells are big enough to see. */
  marks?: [number, number][];
  /** Hover text for a cell. */
  describe: (row: number, col: number, value: Cell) => string;
}

const PLOT = 300;
const MM = { top: 4, right: 4, bottom: 30, left: 34 };

export function matrixView(o: MatrixViewOptions): HTMLElement {
  const n = o.matrix.length;
  const canvas = el('canvas', {
    class: 'matrix-cells',
    role: 'img',
    'aria-label': `${o.label}, ${n} by ${n} experts`,
  });
  canvas.style.left = `${MM.left}px`;
  canvas.style.top = `${MM.top}px`;
  canvas.style.width = `${PLOT}px`;
  canvas.style.height = `${PLOT}px`;
  drawMatrix(canvas, n, n, (r, c) => num(o.matrix[r]?.[c]), o.color);

  const w = MM.left + PLOT + MM.right;
  const h = MM.top + PLOT + MM.bottom;
  const svg = select(document.createElementNS(SVG_NS, 'svg'))
    .attr('class', 'matrix-axes')
    .attr('width', w)
    .attr('height', h)
    .attr('aria-hidden', 'true');
  const band = scaleBand<number>()
    .domain(Array.from({ length: n }, (_, i) => i))
    .range([0, PLOT]);
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(${MM.left},${MM.top})`)
    .call(axisLeft(band).tickValues(expertTicks(n, 16)).tickSizeOuter(0));
  // Three-digit labels need more room side by side than stacked.
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(${MM.left},${MM.top + PLOT})`)
    .call(
      axisBottom(band)
        .tickValues(expertTicks(n, n > 99 ? 8 : 16))
        .tickSizeOuter(0),
    );
  svg
    .append('text')
    .attr('class', 'axis-label')
    .attr('x', MM.left + PLOT / 2)
    .attr('y', h - 2)
    .attr('text-anchor', 'middle')
    .text('expert');
  svg
    .append('rect')
    .attr('class', 'matrix-frame')
    .attr('x', MM.left)
    .attr('y', MM.top)
    .attr('width', PLOT)
    .attr('height', PLOT);
  const cell = PLOT / Math.max(1, n);
  if (o.marks && cell >= 4) {
    for (const [r, c] of o.marks) {
      svg
        .append('rect')
        .attr('class', 'matrix-mark')
        .attr('x', MM.left + c * cell + 0.5)
        .attr('y', MM.top + r * cell + 0.5)
        .attr('width', cell - 1)
        .attr('height', cell - 1);
    }
  }
  const readout = el('div', {
    class: 'hover-readout',
    'aria-live': 'polite',
    text: `${n} × ${n} experts · hover a cell, or focus the matrix and use the arrow keys`,
  });
  const plot = el('div', { class: 'matrix-view' }, [canvas, svg.node() as SVGSVGElement]);
  plot.style.width = `${w}px`;
  plot.style.height = `${h}px`;
  // A cursor cell, so that keyboard users can read values too (arrows move it, Home/End jump).
  const cursor = svg
    .append('rect')
    .attr('class', 'matrix-cursor')
    .attr('width', Math.max(2, cell))
    .attr('height', Math.max(2, cell))
    .attr('visibility', 'hidden');
  let at: [number, number] = [0, Math.min(1, n - 1)];
  const pick = (r: number, c: number, showCursor: boolean): void => {
    if (r < 0 || r >= n || c < 0 || c >= n) return;
    at = [r, c];
    readout.textContent = o.describe(r, c, o.matrix[r][c]);
    cursor
      .attr('x', MM.left + c * cell)
      .attr('y', MM.top + r * cell)
      .attr('visibility', showCursor ? 'visible' : 'hidden');
  };
  canvas.tabIndex = 0;
  canvas.addEventListener('pointermove', (ev) =>
    pick(Math.floor((ev.offsetY / PLOT) * n), Math.floor((ev.offsetX / PLOT) * n), false),
  );
  canvas.addEventListener('focus', () => pick(at[0], at[1], true));
  canvas.addEventListener('blur', () => cursor.attr('visibility', 'hidden'));
  canvas.addEventListener('keydown', (ev) => {
    const [r, c] = at;
    const moves: Record<string, [number, number]> = {
      ArrowUp: [r - 1, c],
      ArrowDown: [r + 1, c],
      ArrowLeft: [r, c - 1],
      ArrowRight: [r, c + 1],
      Home: [r, 0],
      End: [r, n - 1],
    };
    const next = moves[ev.key];
    if (!next) return;
    ev.preventDefault();
    pick(Math.max(0, Math.min(n - 1, next[0])), Math.max(0, Math.min(n - 1, next[1])), true);
  });
  return el('div', { class: 'matrix-wrap' }, [plot, readout]);
}

export interface BarOptions {
  label: string;
  values: Cell[];
  theme: ThemeColors;
  /** Bars drawn in the error colour (near-zero routers, collapsed experts). */
  flagged?: Set<number>;
  /** A dashed reference line (the near-zero threshold, 1/E). */
  reference?: { value: number; label: string };
  yLabel: string;
}

const BW = 420;
const BH = 150;
const BM = { top: 18, right: 10, bottom: 30, left: 44 };

export function barChart(o: BarOptions): SVGSVGElement {
  const n = o.values.length;
  const svg = select(document.createElementNS(SVG_NS, 'svg'))
    .attr('class', 'bar-chart')
    .attr('viewBox', `0 0 ${BW} ${BH}`)
    .attr('role', 'img')
    .attr('aria-label', o.label);
  const finite = o.values.map(num).filter(Number.isFinite);
  const hi = Math.max(1e-12, ...finite, o.reference?.value ?? 0);
  const x = scaleBand<number>()
    .domain(Array.from({ length: n }, (_, i) => i))
    .range([BM.left, BW - BM.right])
    .paddingInner(n > 64 ? 0 : 0.2);
  const y = scaleLinear()
    .domain([0, hi * 1.05])
    .nice()
    .range([BH - BM.bottom, BM.top]);
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(0,${BH - BM.bottom})`)
    .call(axisBottom(x).tickValues(expertTicks(n, 16)).tickSizeOuter(0));
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(${BM.left},0)`)
    .call(
      axisLeft(y)
        .ticks(4)
        .tickFormat((v) => fmtTick(Number(v))),
    );
  svg
    .append('text')
    .attr('class', 'axis-label')
    .attr('x', (BM.left + BW - BM.right) / 2)
    .attr('y', BH - 2)
    .attr('text-anchor', 'middle')
    .text('expert');
  svg.append('text').attr('class', 'axis-label').attr('x', 2).attr('y', 9).text(o.yLabel);
  o.values.forEach((v, i) => {
    const value = num(v);
    const flagged = o.flagged?.has(i) ?? false;
    const bar = svg
      .append('rect')
      .attr('x', x(i) ?? 0)
      .attr('width', Math.max(1, x.bandwidth()))
      .attr('y', Number.isFinite(value) ? y(value) : BM.top)
      .attr('height', Number.isFinite(value) ? Math.max(0, y(0) - y(value)) : 0);
    bar.style('fill', flagged ? o.theme.error : o.theme.series[0]);
    bar
      .append('title')
      .text(
        `expert ${i}: ${Number.isFinite(value) ? fmtValue(value) : 'undefined'}${flagged ? ' (flagged)' : ''}`,
      );
    // A flagged bar may be too short to see (a router row of norm 0): mark it under the axis.
    if (flagged)
      svg
        .append('circle')
        .attr('cx', (x(i) ?? 0) + x.bandwidth() / 2)
        .attr('cy', BH - BM.bottom + 3)
        .attr('r', 2)
        .style('fill', o.theme.error);
  });
  if (o.reference) {
    const ry = y(o.reference.value);
    svg
      .append('line')
      .attr('class', 'reference')
      .attr('x1', BM.left)
      .attr('x2', BW - BM.right)
      .attr('y1', ry)
      .attr('y2', ry);
    svg
      .append('text')
      .attr('class', 'axis-label')
      .attr('x', BW - BM.right)
      .attr('y', ry - 3)
      .attr('text-anchor', 'end')
      .text(o.reference.label);
  }
  return svg.node() as SVGSVGElement;
}

export interface DriftLine {
  label: string;
  color: string;
  values: Cell[];
  dashed?: boolean;
}

const DW = 420;
const DH = 180;
const DM = { top: 18, right: 12, bottom: 30, left: 44 };

/** Lines over checkpoints: x is the step when every checkpoint has one, else its position. */
export function driftChart(label: string, steps: (number | null)[], lines: DriftLine[]): HTMLElement {
  const bySteps = steps.every((s) => s !== null) && new Set(steps).size === steps.length;
  const xs = steps.map((s, i) => (bySteps ? (s as number) : i));
  const svg = select(document.createElementNS(SVG_NS, 'svg'))
    .attr('class', 'drift-chart')
    .attr('viewBox', `0 0 ${DW} ${DH}`)
    .attr('role', 'img')
    .attr('aria-label', label);
  const ys = lines.flatMap((l) => l.values.map(num)).filter(Number.isFinite);
  const x = scaleLinear()
    .domain(xs.length > 1 ? [Math.min(...xs), Math.max(...xs)] : [(xs[0] ?? 0) - 1, (xs[0] ?? 0) + 1])
    .range([DM.left, DW - DM.right]);
  const y = scaleLinear()
    .domain([0, Math.max(1e-9, ...ys) * 1.08])
    .nice()
    .range([DH - DM.bottom, DM.top]);
  const xAxis = axisBottom(x).tickSizeOuter(0);
  if (!bySteps) xAxis.tickValues(xs).tickFormat((v) => `#${Number(v) + 1}`);
  else if (xs.length <= 8) xAxis.tickValues(xs).tickFormat((v) => format('~s')(Number(v)));
  else xAxis.ticks(6).tickFormat((v) => format('~s')(Number(v)));
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(0,${DH - DM.bottom})`)
    .call(xAxis);
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(${DM.left},0)`)
    .call(
      axisLeft(y)
        .ticks(4)
        .tickFormat((v) => fmtTick(Number(v))),
    );
  svg
    .append('text')
    .attr('class', 'axis-label')
    .attr('x', (DM.left + DW - DM.right) / 2)
    .attr('y', DH - 2)
    .attr('text-anchor', 'middle')
    .text(bySteps ? 'step' : 'checkpoint');
  svg.append('text').attr('class', 'axis-label').attr('x', 2).attr('y', 9).text('‖W − W₀‖ / ‖W₀‖');
  const path = line<[number, number]>()
    .defined((p) => Number.isFinite(p[1]))
    .x((p) => x(p[0]))
    .y((p) => y(p[1]));
  for (const l of lines) {
    const pts = l.values.map((v, i) => [xs[i], num(v)] as [number, number]);
    const g = svg
      .append('path')
      .attr('class', 'line')
      .attr('d', path(pts) ?? '');
    g.style('stroke', l.color);
    if (l.dashed) g.attr('stroke-dasharray', '5 3');
    // Dots mark the checkpoints; with hundreds of lines they would only clutter (and slow) the chart.
    if (lines.length * pts.length <= 400)
      for (const p of pts)
        if (Number.isFinite(p[1]))
          svg.append('circle').attr('cx', x(p[0])).attr('cy', y(p[1])).attr('r', 2).style('fill', l.color);
  }
  const readout = el('div', {
    class: 'hover-readout',
    text: `${lines.length} lines over ${steps.length} checkpoints · hover the chart for values`,
  });
  const node = svg.node() as SVGSVGElement;
  node.addEventListener('pointermove', (ev) => {
    const rect = node.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * DW;
    let best = 0;
    xs.forEach((v, i) => {
      if (Math.abs(x(v) - px) < Math.abs(x(xs[best]) - px)) best = i;
    });
    const vals = lines
      .map((l) => [l.label, num(l.values[best])] as [string, number])
      .filter(([, v]) => Number.isFinite(v))
      .sort((a, b) => b[1] - a[1]);
    const where = steps[best] !== null ? `step ${steps[best]}` : `checkpoint ${best + 1}`;
    readout.textContent = `${where}: ${vals
      .slice(0, 6)
      .map(([k, v]) => `${k} ${fmtValue(v)}`)
      .join(' · ')}${vals.length > 6 ? ' …' : ''}`;
  });
  const legend =
    lines.length > 17
      ? ''
      : el(
          'div',
          { class: 'legend compact' },
          lines.map((l) => {
            const sw = el('span', { class: `swatch${l.dashed ? ' dashed' : ''}` });
            sw.style.background = l.dashed ? 'transparent' : l.color;
            sw.style.borderColor = l.color;
            return el('span', { class: 'legend-key' }, [sw, l.label]);
          }),
        );
  return el('div', {}, [node, legend, readout]);
}

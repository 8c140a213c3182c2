// Matrices as images: one pixel per cell in an offscreen canvas, scaled up
// without smoothing. A 200-step × 256-expert heatmap is one putImageData.
import { color as d3color, interpolateRgb, interpolateRgbBasis, scaleDiverging, scaleSequential } from 'd3';
import type { ThemeColors } from '../shared/theme';

export type CellColor = (v: number) => string;

/** Utilization (load / ideal) on a log2 scale: blue = starved, background = fair share, red = overloaded. */
export function utilizationColor(theme: ThemeColors): CellColor {
  const s = scaleDiverging(interpolateRgbBasis([theme.cold, theme.background, theme.hot]))
    .domain([-3, 0, 3])
    .clamp(true);
  return (v) => s(Math.log2(Math.max(v, 1e-3)));
}

/** Shares (0..max) from the background to the accent colour. */
export function shareColor(theme: ThemeColors, max: number): CellColor {
  const s = scaleSequential(interpolateRgb(theme.background, theme.cold))
    .domain([0, max || 1])
    .clamp(true);
  return (v) => s(v);
}

function rgba(css: string): [number, number, number] {
  const c = d3color(css)?.rgb();
  return c ? [c.r, c.g, c.b] : [128, 128, 128];
}

/**
 * Draws value(row, col) for rows × cols into the canvas, which keeps its CSS
 * size; the canvas's backing store is the matrix itself (crisp via image-rendering).
 */
export function drawMatrix(
  canvas: HTMLCanvasElement,
  rows: number,
  cols: number,
  value: (r: number, c: number) => number,
  color: CellColor,
): void {
  canvas.width = Math.max(1, cols);
  canvas.height = Math.max(1, rows);
  const ctx = canvas.getContext('2d');
  if (!ctx || rows === 0 || cols === 0) return;
  const img = ctx.createImageData(cols, rows);
  const cache = new Map<string, [number, number, number]>();
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = value(r, c);
      const o = (r * cols + c) * 4;
      if (!Number.isFinite(v)) continue;
      const css = color(v);
      let rgb = cache.get(css);
      if (!rgb) {
        rgb = rgba(css);
        cache.set(css, rgb);
      }
      img.data[o] = rgb[0];
      img.data[o + 1] = rgb[1];
      img.data[o + 2] = rgb[2];
      img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

/** A small colour ramp with end labels, so each heatmap can be read; an empty middle label is left out. */
export function colorLegend(
  color: CellColor,
  lo: number,
  hi: number,
  labels: [string, string, string],
): HTMLElement {
  const canvas = document.createElement('canvas');
  const n = 64;
  drawMatrix(canvas, 1, n, (_r, c) => lo + ((hi - lo) * c) / (n - 1), color);
  canvas.className = 'heat';
  const wrap = document.createElement('div');
  wrap.className = 'legend-scale';
  const [low, middle, high] = labels;
  // Spans, not bare text: adjacent text nodes in a flex row merge into one run ("fair shareoverloaded").
  const span = (text: string) => Object.assign(document.createElement('span'), { textContent: text });
  wrap.append(span(low), canvas, span(high));
  if (middle) wrap.append(span(`(centre: ${middle})`));
  return wrap;
}

/** Cosine similarity, −1..1: cold for opposite, the background for orthogonal, hot for the same direction. */
export function cosineColor(theme: ThemeColors): CellColor {
  const s = scaleDiverging(interpolateRgbBasis([theme.cold, theme.background, theme.hot]))
    .domain([-1, 0, 1])
    .clamp(true);
  return (v) => s(v);
}

export interface HeatAxes {
  xLabel: string;
  yLabel: string;
  /** One label per column / row; at most ~8 are shown as ticks, every one on hover. */
  xTicks: string[];
  yTicks: string[];
  /** The hover text of cell (row, col). */
  describe: (r: number, c: number) => string;
  /** Where the hover text goes besides the canvas's title (default: a readout under the axes). */
  readout?: HTMLElement;
}

/** Evenly spaced tick indices, first and last included. */
export function tickIndices(n: number, max = 8): number[] {
  if (n <= max) return Array.from({ length: n }, (_, i) => i);
  const step = (n - 1) / (max - 1);
  return [...new Set(Array.from({ length: max }, (_, i) => Math.round(i * step)))];
}

/**
 * A heatmap canvas with axis names, tick labels and the value of the cell under the pointer (in
 * the readout and as the canvas's tooltip). Ticks sit at cell centres, in percent of the canvas,
 * so they follow its CSS size.
 */
export function withAxes(canvas: HTMLCanvasElement, rows: number, cols: number, axes: HeatAxes): HTMLElement {
  const tick = (text: string, cls: string, pos: number, vertical: boolean): HTMLElement => {
    const s = Object.assign(document.createElement('span'), { className: cls, textContent: text });
    if (vertical) s.style.top = `${pos}%`;
    else s.style.left = `${pos}%`;
    return s;
  };
  const div = (cls: string, children: (Node | string)[] = []): HTMLElement => {
    const d = document.createElement('div');
    d.className = cls;
    d.append(...children);
    return d;
  };
  const yTicks = div(
    'heat-yticks',
    tickIndices(rows).map((r) =>
      tick(axes.yTicks[r] ?? String(r), 'heat-tick', ((r + 0.5) / rows) * 100, true),
    ),
  );
  // As wide as the longest label shown, so short expert numbers leave the matrix its room.
  yTicks.style.minWidth = `${0.6 * Math.max(1, ...tickIndices(rows).map((r) => (axes.yTicks[r] ?? String(r)).length)) + 0.5}em`;
  // Long labels (steps) need more room side by side than expert numbers.
  const xMax = Math.max(...tickIndices(cols).map((c) => (axes.xTicks[c] ?? String(c)).length)) > 3 ? 5 : 8;
  const xTicks = div(
    'heat-xticks',
    tickIndices(cols, xMax).map((c) =>
      tick(axes.xTicks[c] ?? String(c), 'heat-tick', ((c + 0.5) / cols) * 100, false),
    ),
  );
  const readout = axes.readout ?? div('heat-readout', [`${rows} × ${cols} · hover a cell for its value`]);
  const wrap = div('heat-axes', [
    div('heat-ylabel', [axes.yLabel]),
    yTicks,
    div('heat-body', [canvas]),
    div(''),
    div(''),
    xTicks,
    div(''),
    div(''),
    div('heat-xlabel', [axes.xLabel]),
  ]);
  wrap.dataset.xLabel = axes.xLabel;
  wrap.dataset.yLabel = axes.yLabel;
  canvas.addEventListener('pointermove', (ev) => {
    const rect = canvas.getBoundingClientRect();
    const c = Math.floor(((ev.clientX - rect.left) / rect.width) * cols);
    const r = Math.floor(((ev.clientY - rect.top) / rect.height) * rows);
    if (r < 0 || r >= rows || c < 0 || c >= cols) return;
    const text = axes.describe(r, c);
    readout.textContent = text;
    canvas.title = text;
  });
  const out = div('heat-with-axes', [wrap]);
  if (!axes.readout) out.append(readout);
  return out;
}

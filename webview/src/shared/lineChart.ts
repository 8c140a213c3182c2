// One chart: d3 scales, axes and zoom on an SVG overlay; the lines themselves on
// a canvas, decimated per pixel column so that a million points stay fluid.
import {
  axisBottom,
  axisLeft,
  format,
  scaleLinear,
  scaleLog,
  select,
  zoom,
  zoomIdentity,
  type D3ZoomEvent,
  type ScaleContinuousNumeric,
  type Selection,
  type ZoomBehavior,
  type ZoomTransform,
} from 'd3';
import { decimateM4, lowerBound } from './decimate';
import { el } from './dom';
import { timed } from './perf';
import type { ThemeColors } from './theme';
import { yDomain } from './yRange';

export interface ChartLine {
  id: string;
  label: string;
  color: string;
  xs: ArrayLike<number>;
  /** The curve drawn strong (smoothed when smoothing is on). */
  ys: ArrayLike<number>;
  /** The raw curve drawn faint behind, when smoothing is on. */
  raw?: ArrayLike<number>;
  n: number;
  band?: { lo: ArrayLike<number>; hi: ArrayLike<number> };
}

export interface ChartOptions {
  logScale: boolean;
  ignoreOutliers: boolean;
  xLabel: string;
  /** The x axis label's tooltip: how the axis is computed, where that is not obvious. */
  xTitle?: string;
  xFormat: (v: number) => string;
  highlighted?: string;
  theme: ThemeColors;
}

type YScale = ScaleContinuousNumeric<number, number>;
const MARGIN = { top: 8, right: 14, bottom: 24, left: 56 };
/** Room for a lone point's dot (radius up to 4 px) inside the plot. */
const DOT_PAD_PX = 6;
const valueFormat = format('.4~g');
const siFormat = format('.3~s');
const smallFormat = format('.3~g');
/** SI prefixes for big values (tokens/s), plain digits otherwise (losses, learning rates). */
function tickFormat(v: number): string {
  return Math.abs(v) >= 1e4 ? siFormat(v) : smallFormat(v);
}

export class LineChart {
  readonly root: HTMLElement;
  private readonly plot: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly svg: Selection<SVGSVGElement, unknown, null, undefined>;
  private readonly tooltip: HTMLDivElement;
  private readonly zoomBehavior: ZoomBehavior<SVGSVGElement, unknown>;
  private transform: ZoomTransform = zoomIdentity;
  private lines: ChartLine[] = [];
  private opts: ChartOptions | undefined;
  private width = 0;
  private height = 0;
  private x: ScaleContinuousNumeric<number, number> = scaleLinear();
  private y: YScale = scaleLinear();
  /** The requestAnimationFrame of a scheduled draw, 0 when none. */
  private frame = 0;
  private hoverPx: number | undefined;
  /** Milliseconds the last draw took (read by the benchmark). */
  lastDrawMs = 0;

  constructor(
    readonly title: string,
    actions: HTMLElement,
  ) {
    this.canvas = el('canvas', { class: 'chart-canvas', 'aria-hidden': 'true' });
    const svgNode = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svgNode.setAttribute('class', 'chart-overlay');
    this.tooltip = el('div', { class: 'chart-tooltip', role: 'status', 'aria-live': 'off', hidden: true });
    this.plot = el(
      'div',
      {
        class: 'chart-plot',
        tabindex: 0,
        role: 'img',
        'aria-label': `${title}. Arrow keys pan, plus and minus zoom, 0 resets the zoom.`,
      },
      [this.canvas, svgNode, this.tooltip],
    );
    this.root = el('figure', { class: 'chart' }, [
      el('figcaption', { class: 'chart-header' }, [el('h3', { class: 'chart-title', text: title }), actions]),
      this.plot,
    ]);
    this.svg = select(svgNode);
    this.svg.append('g').attr('class', 'grid grid-y');
    this.svg.append('g').attr('class', 'axis axis-x');
    this.svg.append('g').attr('class', 'axis axis-y');
    this.svg.append('text').attr('class', 'axis-label').attr('text-anchor', 'end');
    this.svg.append('line').attr('class', 'crosshair').attr('visibility', 'hidden');
    this.svg.append('g').attr('class', 'hover-dots');

    this.zoomBehavior = zoom<SVGSVGElement, unknown>()
      .scaleExtent([1, 1e5])
      .filter((event: Event) => event.type !== 'dblclick' && !(event as MouseEvent).button)
      .on('zoom', (event: D3ZoomEvent<SVGSVGElement, unknown>) => {
        this.transform = event.transform;
        this.schedule();
      });
    this.svg
      .call(this.zoomBehavior)
      .on('dblclick.zoom', null)
      .on('dblclick', () => this.resetZoom());
    svgNode.addEventListener('pointermove', (e) => this.hover(e.offsetX));
    svgNode.addEventListener('pointerleave', () => this.hover(undefined));
    this.plot.addEventListener('keydown', (e) => this.key(e));
    // Its first report comes with the first layout, after drawNow's first draw: redraw only on a change.
    new ResizeObserver(([entry]) => {
      const box = entry.borderBoxSize?.[0];
      const [w, h] = box
        ? [box.inlineSize, box.blockSize]
        : [entry.contentRect.width, entry.contentRect.height];
      if (Math.max(10, Math.floor(w)) !== this.width || Math.max(10, Math.floor(h)) !== this.height)
        this.schedule();
    }).observe(this.plot);
  }

  setData(lines: ChartLine[], opts: ChartOptions): void {
    this.lines = lines;
    this.opts = opts;
    this.schedule();
  }

  resetZoom(): void {
    this.svg.call(this.zoomBehavior.transform, zoomIdentity);
  }

  /** Coalesce redraws into the next frame: live appends and zoom events come in bursts. */
  schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  /** Draws now, for a caller already in an animation frame: a scheduled draw would wait one more. */
  drawNow(): void {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.draw();
  }

  private key(e: KeyboardEvent): void {
    const step = this.width / 10 / this.transform.k;
    const actions: Record<string, () => void> = {
      ArrowLeft: () => this.zoomBehavior.translateBy(this.svg, step, 0),
      ArrowRight: () => this.zoomBehavior.translateBy(this.svg, -step, 0),
      '+': () => this.zoomBehavior.scaleBy(this.svg, 1.5),
      '=': () => this.zoomBehavior.scaleBy(this.svg, 1.5),
      '-': () => this.zoomBehavior.scaleBy(this.svg, 1 / 1.5),
      '0': () => this.resetZoom(),
    };
    const action = actions[e.key];
    if (action) {
      action();
      e.preventDefault();
    }
  }

  /** The x range of the data, padded where a line ends in a lone point: its dot would be half-clipped at the edge. */
  private xExtent(iw: number): [number, number] {
    let lo = Infinity,
      hi = -Infinity;
    let dotLo = false,
      dotHi = false;
    const finite = (l: ChartLine, i: number): boolean =>
      i >= 0 && i < l.n && Number.isFinite(l.xs[i]) && Number.isFinite(l.ys[i]);
    const lone = (l: ChartLine, i: number): boolean => !finite(l, i - 1) && !finite(l, i + 1);
    for (const l of this.lines) {
      for (let i = 0; i < l.n; i++)
        if (Number.isFinite(l.xs[i])) {
          if (l.xs[i] < lo || (l.xs[i] === lo && !dotLo)) dotLo = finite(l, i) && lone(l, i);
          lo = Math.min(lo, l.xs[i]);
          break;
        }
      for (let i = l.n - 1; i >= 0; i--)
        if (Number.isFinite(l.xs[i])) {
          if (l.xs[i] > hi || (l.xs[i] === hi && !dotHi)) dotHi = finite(l, i) && lone(l, i);
          hi = Math.max(hi, l.xs[i]);
          break;
        }
    }
    if (!Number.isFinite(lo)) return [0, 1];
    if (lo === hi) return [lo - 1, hi + 1];
    const pad = (DOT_PAD_PX * (hi - lo)) / Math.max(1, iw - 2 * DOT_PAD_PX);
    return [dotLo ? lo - pad : lo, dotHi ? hi + pad : hi];
  }

  draw(): void {
    const opts = this.opts;
    if (!opts) return;
    const t0 = performance.now();
    const rect = timed('chart: read size', () => this.plot.getBoundingClientRect());
    this.width = Math.max(10, Math.floor(rect.width));
    this.height = Math.max(10, Math.floor(rect.height));
    const dpr = window.devicePixelRatio || 1;
    if (
      this.canvas.width !== Math.round(this.width * dpr) ||
      this.canvas.height !== Math.round(this.height * dpr)
    ) {
      this.canvas.width = Math.round(this.width * dpr);
      this.canvas.height = Math.round(this.height * dpr);
    }
    const iw = this.width - MARGIN.left - MARGIN.right;
    const ih = this.height - MARGIN.top - MARGIN.bottom;
    this.zoomBehavior
      .extent([
        [MARGIN.left, 0],
        [MARGIN.left + iw, ih],
      ])
      .translateExtent([
        [MARGIN.left, -Infinity],
        [MARGIN.left + iw, Infinity],
      ]);

    const base = scaleLinear()
      .domain(this.xExtent(iw))
      .range([MARGIN.left, MARGIN.left + iw]);
    this.x = this.transform.rescaleX(base);
    const [x0, x1] = this.x.domain();
    const columns = Math.max(1, Math.ceil(iw));

    // Decimate every visible curve once; the y range comes from what is visible.
    const strong: Float64Array[] = [];
    const faint: (Float64Array | undefined)[] = [];
    const bands: ({ lo: Float64Array; hi: Float64Array } | undefined)[] = [];
    const samples: number[] = [];
    timed('chart: decimate', () => this.decimate(x0, x1, columns, opts, strong, faint, bands, samples));
    const domainSources = [
      ...strong,
      ...faint.filter((f): f is Float64Array => !!f),
      ...bands.flatMap((b) => (b ? [b.lo, b.hi] : [])),
    ];
    const yd = yDomain(domainSources, samples, opts.logScale, opts.ignoreOutliers);
    this.y = (opts.logScale ? scaleLog() : scaleLinear()).domain(yd).range([MARGIN.top + ih, MARGIN.top]);
    if (!opts.ignoreOutliers) this.y.nice();

    timed('chart: axes', () => this.drawAxes(iw, opts));
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.width, this.height);
    timed('chart: canvas', () => this.drawLines(ctx, strong, faint, bands, opts));
    if (this.hoverPx !== undefined) this.hover(this.hoverPx);
    this.lastDrawMs = performance.now() - t0;
    this.root.dataset.points = String(this.lines.reduce((s, l) => s + l.n, 0));
    // The curves drawn (one per run, or per group): what tests and screen readers can check.
    this.root.dataset.series = JSON.stringify(this.lines.filter((l) => l.n > 0).map((l) => l.id));
    this.root.dispatchEvent(new CustomEvent('chart-drawn', { bubbles: true }));
  }

  /** Every visible curve decimated once (M4); with "ignore outliers", a sample of the raw values too. */
  private decimate(
    x0: number,
    x1: number,
    columns: number,
    opts: ChartOptions,
    strong: Float64Array[],
    faint: (Float64Array | undefined)[],
    bands: ({ lo: Float64Array; hi: Float64Array } | undefined)[],
    samples: number[],
  ): void {
    for (const l of this.lines) {
      strong.push(decimateM4(l.xs, l.ys, l.n, x0, x1, columns));
      faint.push(l.raw ? decimateM4(l.xs, l.raw, l.n, x0, x1, columns) : undefined);
      bands.push(
        l.band
          ? {
              lo: decimateM4(l.xs, l.band.lo, l.n, x0, x1, columns),
              hi: decimateM4(l.xs, l.band.hi, l.n, x0, x1, columns),
            }
          : undefined,
      );
      if (opts.ignoreOutliers) {
        const src = l.raw ?? l.ys;
        const a = Math.max(0, lowerBound(l.xs, l.n, x0));
        const b = Math.min(l.n, lowerBound(l.xs, l.n, x1) + 1);
        const stride = Math.max(1, Math.floor((b - a) / 2000));
        for (let i = a; i < b; i += stride) samples.push(src[i]);
      }
    }
  }

  private drawAxes(iw: number, opts: ChartOptions): void {
    const ih = this.height - MARGIN.top - MARGIN.bottom;
    const xAxis = axisBottom(this.x)
      .ticks(Math.max(2, Math.floor(iw / 80)))
      .tickFormat((v) => opts.xFormat(Number(v)));
    const yTicks = Math.max(2, Math.floor(ih / 40));
    const yAxis = axisLeft(this.y)
      .ticks(yTicks)
      .tickFormat((v) => tickFormat(Number(v)));
    this.svg
      .select<SVGGElement>('.axis-x')
      .attr('transform', `translate(0,${MARGIN.top + ih})`)
      .call(xAxis);
    this.svg.select<SVGGElement>('.axis-y').attr('transform', `translate(${MARGIN.left},0)`).call(yAxis);
    this.svg
      .select<SVGGElement>('.grid-y')
      .attr('transform', `translate(${MARGIN.left},0)`)
      .call(
        axisLeft(this.y)
          .ticks(yTicks)
          .tickSize(-iw)
          .tickFormat(() => ''),
      );
    this.svg
      .select('.axis-label')
      .attr('x', MARGIN.left + iw)
      .attr('y', MARGIN.top + ih - 4)
      .text(opts.xLabel);
    if (opts.xTitle) this.svg.select('.axis-label').append('title').text(opts.xTitle);
  }

  private path(ctx: CanvasRenderingContext2D, pts: Float64Array, log: boolean): void {
    ctx.beginPath();
    let pen = false;
    // The x scale is linear (a zoom rescales it): px = ax·x + bx inline, not a d3 scale call per point.
    const [d0, d1] = this.x.domain();
    const [r0, r1] = this.x.range();
    const ax = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
    const bx = d1 === d0 ? (r0 + r1) / 2 : r0 - ax * d0;
    for (let i = 0; i < pts.length; i += 2) {
      const v = pts[i + 1];
      const xv = pts[i];
      if (!Number.isFinite(v) || !Number.isFinite(xv) || (log && v <= 0)) {
        pen = false;
        continue;
      }
      const px = ax * xv + bx;
      const py = this.y(v);
      if (pen) ctx.lineTo(px, py);
      else ctx.moveTo(px, py);
      pen = true;
    }
  }

  private drawLines(
    ctx: CanvasRenderingContext2D,
    strong: Float64Array[],
    faint: (Float64Array | undefined)[],
    bands: ({ lo: Float64Array; hi: Float64Array } | undefined)[],
    opts: ChartOptions,
  ): void {
    const iw = this.width - MARGIN.left - MARGIN.right;
    const ih = this.height - MARGIN.top - MARGIN.bottom;
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, iw, ih);
    ctx.clip();
    ctx.lineJoin = 'round';
    // The highlighted line last, so it sits on top.
    const order = this.lines
      .map((_, i) => i)
      .sort(
        (a, b) =>
          Number(this.lines[a].id === opts.highlighted) - Number(this.lines[b].id === opts.highlighted),
      );
    for (const i of order) {
      const l = this.lines[i];
      const dim = opts.highlighted !== undefined && opts.highlighted !== l.id;
      ctx.strokeStyle = l.color;
      ctx.fillStyle = l.color;
      const band = bands[i];
      if (band && band.lo.length && band.lo.length === band.hi.length) {
        ctx.globalAlpha = dim ? 0.05 : 0.18;
        this.path(ctx, band.hi, opts.logScale);
        for (let k = band.lo.length - 2; k >= 0; k -= 2) {
          const v = band.lo[k + 1];
          if (Number.isFinite(v) && (!opts.logScale || v > 0)) ctx.lineTo(this.x(band.lo[k]), this.y(v));
        }
        ctx.closePath();
        ctx.fill();
      }
      const f = faint[i];
      if (f) {
        ctx.globalAlpha = dim ? 0.06 : 0.25;
        ctx.lineWidth = 1;
        this.path(ctx, f, opts.logScale);
        ctx.stroke();
      }
      ctx.globalAlpha = dim ? 0.2 : 1;
      ctx.lineWidth = opts.highlighted === l.id ? 2.5 : opts.theme.highContrast ? 2 : 1.5;
      this.path(ctx, strong[i], opts.logScale);
      ctx.stroke();
      this.dots(ctx, strong[i], opts.logScale, ctx.lineWidth + 1.5);
    }
    ctx.restore();
  }

  /** A point with no drawable neighbour (a run with one eval so far, a point between gaps) gets a
   *  dot: a path of one point strokes nothing. */
  private dots(ctx: CanvasRenderingContext2D, pts: Float64Array, log: boolean, r: number): void {
    const ok = (k: number) =>
      k >= 0 &&
      k < pts.length &&
      Number.isFinite(pts[k]) &&
      Number.isFinite(pts[k + 1]) &&
      (!log || pts[k + 1] > 0);
    for (let k = 0; k < pts.length; k += 2) {
      if (!ok(k) || ok(k - 2) || ok(k + 2)) continue;
      ctx.beginPath();
      ctx.arc(this.x(pts[k]), this.y(pts[k + 1]), r, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  private hover(px: number | undefined): void {
    this.hoverPx = px;
    const cross = this.svg.select('.crosshair');
    const dots = this.svg.select('.hover-dots');
    const [r0, r1] = this.x.range();
    if (px === undefined || px < r0 || px > r1 || !this.opts) {
      cross.attr('visibility', 'hidden');
      dots.selectAll('*').remove();
      this.tooltip.hidden = true;
      return;
    }
    const xv = this.x.invert(px);
    const rows: { label: string; color: string; x: number; y: number }[] = [];
    for (const l of this.lines) {
      const i = lowerBound(l.xs, l.n, xv);
      const cand = [i - 1, i].filter((k) => k >= 0 && k < l.n);
      if (!cand.length) continue;
      const k = cand.reduce((a, b) => (Math.abs(l.xs[b] - xv) < Math.abs(l.xs[a] - xv) ? b : a));
      // A run that ended before (or starts after) the cursor has no value there.
      if ((k === l.n - 1 || k === 0) && Math.abs(this.x(l.xs[k]) - px) > 8) continue;
      if (!Number.isFinite(l.ys[k])) continue;
      rows.push({ label: l.label, color: l.color, x: l.xs[k], y: l.ys[k] });
    }
    const ih = this.height - MARGIN.bottom;
    cross.attr('visibility', 'visible').attr('x1', px).attr('x2', px).attr('y1', MARGIN.top).attr('y2', ih);
    dots
      .selectAll('circle')
      .data(rows.filter((r) => !this.opts?.logScale || r.y > 0))
      .join('circle')
      .attr('r', 3)
      .attr('cx', (r) => this.x(r.x))
      .attr('cy', (r) => this.y(r.y))
      .attr('fill', (r) => r.color);
    this.tooltip.replaceChildren(
      el('div', { class: 'tooltip-x', text: `${this.opts.xLabel} ${this.opts.xFormat(xv)}` }),
      ...rows
        .sort((a, b) => a.y - b.y)
        .map((r) => {
          const swatch = el('span', { class: 'swatch' });
          swatch.style.background = r.color;
          return el('div', { class: 'tooltip-row' }, [
            swatch,
            el('span', { class: 'tooltip-label', text: r.label }),
            el('span', { class: 'tooltip-value', text: valueFormat(r.y) }),
          ]);
        }),
    );
    this.tooltip.hidden = rows.length === 0;
    const left =
      px + 12 + 220 > this.width ? px - 12 - Math.min(220, this.tooltip.offsetWidth || 220) : px + 12;
    this.tooltip.style.left = `${Math.max(0, left)}px`;
    this.tooltip.style.top = `${MARGIN.top}px`;
  }

  /** The chart as one image (axes included), for the PNG export. */
  toCanvas(): HTMLCanvasElement {
    const opts = this.opts;
    const dpr = window.devicePixelRatio || 1;
    const out = document.createElement('canvas');
    out.width = this.canvas.width;
    out.height = this.canvas.height + Math.round(24 * dpr);
    const ctx = out.getContext('2d');
    if (!ctx || !opts) return out;
    ctx.fillStyle = opts.theme.background;
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.scale(dpr, dpr);
    ctx.fillStyle = opts.theme.foreground;
    ctx.font = '12px sans-serif';
    ctx.fillText(this.title, MARGIN.left, 16);
    ctx.translate(0, 24);
    const iw = this.width - MARGIN.left - MARGIN.right;
    const ih = this.height - MARGIN.top - MARGIN.bottom;
    ctx.strokeStyle = opts.theme.grid;
    ctx.fillStyle = opts.theme.muted;
    ctx.font = '10px sans-serif';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of this.y.ticks(5)) {
      const py = this.y(t);
      ctx.beginPath();
      ctx.moveTo(MARGIN.left, py);
      ctx.lineTo(MARGIN.left + iw, py);
      ctx.stroke();
      ctx.fillText(tickFormat(t), MARGIN.left - 4, py);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of this.x.ticks(Math.max(2, Math.floor(iw / 80))))
      ctx.fillText(opts.xFormat(t), this.x(t), MARGIN.top + ih + 4);
    ctx.setTransform(1, 0, 0, 1, 0, Math.round(24 * dpr));
    ctx.drawImage(this.canvas, 0, 0);
    return out;
  }
}

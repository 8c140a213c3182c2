// Small line charts (imbalance, specialization, saturation over steps) in SVG
// with d3 scales and axes: few points, so no canvas needed.
import { axisBottom, axisLeft, format, line, scaleLinear, select } from 'd3';

export interface MiniLine {
  label: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

const W = 420;
const H = 120;
const M = { top: 6, right: 70, bottom: 20, left: 36 };

export function miniChart(title: string, lines: MiniLine[], yDomain?: [number, number]): SVGSVGElement {
  const svg = select(document.createElementNS('http://www.w3.org/2000/svg', 'svg'))
    .attr('class', 'mini-chart')
    .attr('viewBox', `0 0 ${W} ${H}`)
    .attr('role', 'img')
    .attr('aria-label', title);
  const all = lines.flatMap((l) => l.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  const x = scaleLinear()
    .domain([Math.min(...xs, 0), Math.max(...xs, 1)])
    .range([M.left, W - M.right]);
  const y = scaleLinear()
    .domain(yDomain ?? [Math.min(0, ...ys), Math.max(...ys, 1e-9) * 1.1])
    .nice()
    .range([H - M.bottom, M.top]);
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(0,${H - M.bottom})`)
    .call(
      axisBottom(x)
        .ticks(5)
        .tickFormat((v) => format('~s')(Number(v))),
    );
  svg
    .append('g')
    .attr('class', 'axis')
    .attr('transform', `translate(${M.left},0)`)
    .call(
      axisLeft(y)
        .ticks(4)
        .tickFormat((v) => format('.2~g')(Number(v))),
    );
  const path = line<[number, number]>()
    .defined((p) => Number.isFinite(p[1]))
    .x((p) => x(p[0]))
    .y((p) => y(p[1]));
  for (const l of lines) {
    const g = svg
      .append('path')
      .attr('class', 'line')
      .attr('d', path(l.points) ?? '');
    g.style('stroke', l.color);
    if (l.dashed) g.attr('stroke-dasharray', '4 3');
    const last = l.points[l.points.length - 1];
    if (last && Number.isFinite(last[1])) {
      const t = svg
        .append('text')
        .attr('class', 'axis-label')
        .attr('x', W - M.right + 4)
        .attr('y', y(last[1]) + 3)
        .text(l.label);
      t.style('fill', l.color);
    }
  }
  return svg.node() as SVGSVGElement;
}

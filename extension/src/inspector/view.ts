// What the editor shows for an InspectionResult, computed without vscode: token groups (tokens
// that share a text range, like the UTF-8 bytes of one character), which expert colours which
// range, hover markdown, and the labels of the router picker.
import { expertColor } from './palette';
import {
  routedCount,
  routerKey,
  topExpert,
  topExperts,
  type InspectionResult,
  type RouterResult,
} from './result';

export interface TokenGroup {
  start: number;
  end: number;
  /** Token indices, in order; the last one has seen the whole range and speaks for it. */
  tokens: number[];
}

export function tokenGroups(result: InspectionResult): TokenGroup[] {
  const out: TokenGroup[] = [];
  result.tokens.forEach((t, i) => {
    if (t.end <= t.start) return; // no text to colour (BOS and friends)
    const last = out[out.length - 1];
    if (last && last.start === t.start && last.end === t.end) last.tokens.push(i);
    else out.push({ start: t.start, end: t.end, tokens: [i] });
  });
  return out;
}

/** Ranges to colour, by expert: each group coloured by its top expert in router `r`. */
export function colourPlan(groups: TokenGroup[], r: RouterResult): Map<number, [number, number][]> {
  const plan = new Map<number, [number, number][]>();
  for (const g of groups) {
    const e = topExpert(r, g.tokens[g.tokens.length - 1]);
    let ranges = plan.get(e);
    if (!ranges) plan.set(e, (ranges = []));
    ranges.push([g.start, g.end]);
  }
  return plan;
}

/** The group containing text offset `offset` (binary search; groups are sorted and disjoint). */
export function groupAt(groups: TokenGroup[], offset: number): TokenGroup | undefined {
  let lo = 0;
  let hi = groups.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const g = groups[mid];
    if (offset < g.start) hi = mid - 1;
    else if (offset >= g.end) lo = mid + 1;
    else return g;
  }
  return undefined;
}

export function routerLabel(r: { layer: number; kind: string }): string {
  return `Layer ${r.layer} · ${r.kind === 'attn' ? 'attention' : 'FFN'}`;
}

export function routingRule(r: { topK: number; numExperts: number }): string {
  return r.topK > 0 ? `top-${r.topK} of ${r.numExperts}` : `soft over ${r.numExperts}`;
}

/** Share of the tokens whose top expert is each expert, e.g. "E0 41% · E1 9% · …". */
export function loadSummary(result: InspectionResult, r: RouterResult): string {
  const n = result.tokens.length;
  const counts = new Array<number>(r.numExperts).fill(0);
  for (let t = 0; t < n; t++) counts[topExpert(r, t)]++;
  return counts.map((c, e) => `E${e} ${n ? Math.round((100 * c) / n) : 0}%`).join(' · ');
}

const SOFT_SHOWN = 4; // a soft router weighs every expert; the hover lists the strongest few

/** Markdown (with coloured spans; needs supportHtml) for the tokens of one group. */
export function hoverMarkdown(result: InspectionResult, group: TokenGroup, selected: number): string {
  const lines: string[] = [];
  for (const t of group.tokens) {
    const tok = result.tokens[t];
    lines.push(
      `**\`${escapeCode(tok.display)}\`** token ${t + 1} of ${result.tokens.length} · id ${tok.id}`,
      '',
    );
    lines.push('| router | rule | experts (router probability) |', '|---|---|---|');
    result.routers.forEach((r, i) => {
      const k = r.topK > 0 ? routedCount(r) : Math.min(SOFT_SHOWN, r.numExperts);
      const experts = topExperts(r, t, k)
        .map(
          ({ expert, prob }) =>
            `<span style="color:${expertColor(expert)};">■</span> E${expert} ${prob.toFixed(2)}`,
        )
        .join(' · ');
      const name = i === selected ? `**${routerLabel(r)}**` : routerLabel(r);
      lines.push(`| ${name} | ${routingRule(r)} | ${experts} |`);
    });
    lines.push('');
  }
  return lines.join('\n');
}

export function defaultRouter(result: InspectionResult, preferredKey?: string): number {
  const byKey = preferredKey ? result.routers.findIndex((r) => routerKey(r) === preferredKey) : -1;
  if (byKey >= 0) return byKey;
  const ffn = result.routers.findIndex((r) => r.kind === 'ffn');
  return ffn >= 0 ? ffn : 0;
}

function escapeCode(s: string): string {
  return s.replace(/`/g, 'ˋ').replace(/\|/g, '¦');
}

// The one place run colours are assigned (every panel shows a run in the colour the host sends
// in RunSummary.color). A run's hue family comes from its method (its stage for dense runs), so
// the runs of one method read as one family; within a family the runs take turns through
// lightness and small hue steps, in the order they started, so a new run never repaints the
// runs before it. The colour depends on the whole store, not on a panel's selection: the same
// run has the same colour in the dashboard, the router panel and the Results panel.
import type { RunInfo } from './model';

/** Base hue per family, at least 35° apart so the steps within a family never meet another family. */
const FAMILY_HUE: Record<string, number> = {
  btx: 355,
  sparse: 25,
  eval: 60,
  branch: 115,
  upit: 165,
  dense: 210,
  'bam-ekv': 265,
  'bam-skv': 310,
  other: 85,
};
/** Longest first: "bam-ekv-attn-top2" is in the bam-ekv family. */
const METHODS = ['bam-ekv', 'bam-skv', 'sparse', 'upit', 'btx'];
const LIGHTNESS = [52, 68, 38];
/** Per round of three: hue step, saturation and a lightness shift, so neighbours differ in more than hue. */
const ROUNDS: [number, number, number][] = [
  [0, 65, 0],
  [14, 95, 6],
  [-14, 40, -4],
];

/** The family of a method, stage or results label ("seed", "branch-code", "btx-compute", …). */
export function colorFamily(key: string | undefined): string {
  const k = (key ?? '').toLowerCase();
  const method = METHODS.find((m) => k === m || k.startsWith(`${m}-`));
  if (method) return method;
  if (k === 'dense' || k === 'seed' || k === 'tune' || k === 'baseline' || k === 'dense-continued')
    return 'dense';
  if (k === 'branch' || k.startsWith('branch-')) return 'branch';
  if (k === 'eval') return 'eval';
  return 'other';
}

/** The k-th colour of a family: three lightnesses per round; rounds step hue (within ±16°) and saturation. */
export function familyColor(family: string, k: number): string {
  const hue = FAMILY_HUE[family] ?? FAMILY_HUE.other;
  const m = Math.floor(k / LIGHTNESS.length);
  // Three rounds, then a golden-ratio walk of the hue that fills the band without repeating.
  const [step, sat, shift] = ROUNDS[m] ?? [Math.round(160 * (((m * 0.618034) % 1) * 2 - 1)) / 10, 75, 0];
  const h = Math.round(((hue + step + 360) % 360) * 10) / 10;
  return `hsl(${h}, ${family === 'dense' ? Math.round(sat * 0.7) : sat}%, ${LIGHTNESS[k % LIGHTNESS.length] + shift}%)`;
}

/** Colours for keys in order, each in its family (keys: results labels, or anything colorFamily reads). */
export function colorsFor(items: { id: string; family: string }[]): Map<string, string> {
  const taken = new Map<string, number>();
  const out = new Map<string, string>();
  for (const { id, family } of items) {
    if (out.has(id)) continue;
    const k = taken.get(family) ?? 0;
    taken.set(family, k + 1);
    out.set(id, familyColor(family, k));
  }
  return out;
}

/** Every run of the store: run id → colour. */
export function runColors(runs: readonly RunInfo[]): Map<string, string> {
  const ordered = [...runs].sort(
    (a, b) => (a.started ?? '').localeCompare(b.started ?? '') || a.id.localeCompare(b.id),
  );
  return colorsFor(ordered.map((r) => ({ id: r.id, family: colorFamily(r.method ?? r.stage) })));
}

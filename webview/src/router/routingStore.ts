// routing.jsonl per run, indexed by (layer, router) and step, with each record's
// statistics computed once when it arrives (live appends never recompute history).
import type { RouterWarning, RoutingRow, SaturationPoint } from '../protocol';
import { collapsedOnto, deadExperts, DEAD_WINDOW, imbalance, specialization } from './routingStats';

export interface Entry {
  row: RoutingRow;
  cv: number;
  maxOverMean: number;
  specialization: number;
}

export interface LayerSeries {
  key: string;
  layer: number;
  router: 'ffn' | 'attn';
  entries: Entry[];
}

export function layerKey(layer: number, router: string): string {
  return `${router === 'attn' ? 1 : 0}:${String(layer).padStart(5, '0')}`;
}

export class RunRouting {
  readonly layers = new Map<string, LayerSeries>();
  private stepSet = new Set<number>();
  private sortedSteps: number[] | undefined;
  /** Whether any record carries saturation (written when the run is done). */
  perToken = { saturation: false };

  constructor(readonly runId: string) {}

  append(rows: readonly RoutingRow[]): void {
    for (const row of rows) {
      const key = layerKey(row.layer, row.router);
      let s = this.layers.get(key);
      if (!s) {
        s = { key, layer: row.layer, router: row.router, entries: [] };
        this.layers.set(key, s);
      }
      const last = s.entries[s.entries.length - 1];
      if (last && row.step <= last.row.step) {
        // Resumed from an earlier checkpoint: later records replace the old ones.
        s.entries = s.entries.filter((e) => e.row.step < row.step);
      }
      const im = imbalance(row.load);
      s.entries.push({
        row,
        cv: im.cv,
        maxOverMean: im.maxOverMean,
        specialization: specialization(row.by_domain),
      });
      this.stepSet.add(row.step);
      this.sortedSteps = undefined;
      if (row.saturation !== undefined) this.perToken.saturation = true;
    }
  }

  /**
   * Saturation arrives in records of its own, written when the run is done, for steps whose
   * rows came earlier: it is copied onto those rows (a step with no row, thinned out by the
   * host's decimation, is skipped).
   */
  mergeSaturation(points: readonly SaturationPoint[]): void {
    for (const p of points) {
      const s = this.layers.get(layerKey(p.layer, p.router));
      const i = s ? indexAtOrBefore(s.entries, p.step) : -1;
      const entry = s?.entries[i];
      if (entry?.row.step !== p.step) continue;
      entry.row = { ...entry.row, saturation: p.saturation };
      this.perToken.saturation = true;
    }
  }

  steps(): number[] {
    this.sortedSteps ??= [...this.stepSet].sort((a, b) => a - b);
    return this.sortedSteps;
  }

  keys(): string[] {
    return [...this.layers.keys()].sort();
  }

  maxExperts(): number {
    let e = 0;
    for (const s of this.layers.values()) e = Math.max(e, s.entries[0]?.row.load.length ?? 0);
    return e;
  }

  warnings(): RouterWarning[] {
    const out: RouterWarning[] = [];
    for (const s of this.layers.values()) {
      const recent = s.entries.slice(-DEAD_WINDOW).map((e) => e.row.load);
      const where = `layer ${s.layer} ${s.router === 'attn' ? 'attention' : 'FFN'} router`;
      const dead = deadExperts(recent);
      if (dead.length && recent.length >= Math.min(DEAD_WINDOW, s.entries.length)) {
        out.push({
          runId: this.runId,
          kind: 'dead',
          layer: s.layer,
          router: s.router,
          experts: dead,
          message: `${dead.length} dead expert${dead.length > 1 ? 's' : ''} (${dead.join(', ')}) in ${where}`,
        });
      }
      const latest = s.entries[s.entries.length - 1]?.row.load;
      const top = latest ? collapsedOnto(latest) : undefined;
      if (top) {
        out.push({
          runId: this.runId,
          kind: 'collapse',
          layer: s.layer,
          router: s.router,
          experts: top,
          message: `Routing collapsed onto expert${top.length > 1 ? 's' : ''} ${top.join(', ')} in ${where}`,
        });
      }
    }
    return out;
  }
}

/** Index of the last entry whose step is ≤ `step` (entries are sorted by step), or -1. */
function indexAtOrBefore(entries: readonly Entry[], step: number): number {
  let lo = 0;
  let hi = entries.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid].row.step <= step) lo = mid + 1;
    else hi = mid - 1;
  }
  return hi;
}

/** The entry at the given step, or the last one before it. */
export function entryAt(series: LayerSeries, step: number): Entry | undefined {
  return series.entries[Math.max(0, indexAtOrBefore(series.entries, step))];
}

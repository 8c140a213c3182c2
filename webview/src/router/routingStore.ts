// routing.jsonl per run, indexed by (layer, router) and step, with each record's
// statistics computed once when it arrives (live appends never recompute history).
import type { RouterWarning, RoutingRow } from '../protocol';
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
  perToken = { saturation: false, coactivation: false };

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
      s.entries.push({ row, cv: im.cv, maxOverMean: im.maxOverMean, specialization: specialization(row.by_domain) });
      this.stepSet.add(row.step);
      this.sortedSteps = undefined;
      if (row.saturation !== undefined) this.perToken.saturation = true;
      if (row.coactivation !== undefined) this.perToken.coactivation = true;
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
        out.push({ runId: this.runId, kind: 'dead', layer: s.layer, router: s.router, experts: dead, message: `${dead.length} dead expert${dead.length > 1 ? 's' : ''} (${dead.join(', ')}) in ${where}` });
      }
      const latest = s.entries[s.entries.length - 1]?.row.load;
      const top = latest ? collapsedOnto(latest) : undefined;
      if (top) {
        out.push({ runId: this.runId, kind: 'collapse', layer: s.layer, router: s.router, experts: top, message: `Routing collapsed onto expert${top.length > 1 ? 's' : ''} ${top.join(', ')} in ${where}` });
      }
    }
    return out;
  }
}

/** The entry at the given step, or the last one before it. */
export function entryAt(series: LayerSeries, step: number): Entry | undefined {
  let found: Entry | undefined;
  for (const e of series.entries) {
    if (e.row.step > step) break;
    found = e;
  }
  return found ?? series.entries[0];
}

// Analysis reports shaped like `moelab analyze` output (engine/moelab/analysis/report.py),
// with known alarms: a collapsed pair, a near-zero router row, identical router rows.
// data/analysis.json and data/compare.json are real engine output on a tiny run.
import fs from 'node:fs';
import path from 'node:path';
import type {
  Cell,
  CompareReport,
  WeightLayer,
  WeightReport,
  WeightWarning,
} from '../../webview/src/protocol';
import { rng } from './fixtures';

export function realReports(): { analysis: WeightReport; compare: CompareReport } {
  const dir = path.join(process.cwd(), 'test/webview/data');
  return {
    analysis: JSON.parse(fs.readFileSync(path.join(dir, 'analysis.json'), 'utf8')) as WeightReport,
    compare: JSON.parse(fs.readFileSync(path.join(dir, 'compare.json'), 'utf8')) as CompareReport,
  };
}

interface Options {
  layers: number;
  experts: number;
  steps: number[];
  seed?: number;
}

const FFN = ['w1', 'w2', 'w3'];
const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

function symmetric(n: number, r: () => number, base: number, spread: number): Cell[][] {
  const m: Cell[][] = Array.from({ length: n }, () => new Array<Cell>(n).fill(1));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = Math.max(-1, Math.min(1, base + (r() - 0.5) * spread));
      m[i][j] = v;
      m[j][i] = v;
    }
  }
  return m;
}

export function weightReport(o: Options): WeightReport {
  const r = rng(o.seed ?? 5);
  const E = o.experts;
  const T = o.steps.length;
  const layers: WeightLayer[] = [];
  const warnings: WeightWarning[] = [];
  for (let layer = 0; layer < o.layers; layer++) {
    for (const router of ['attn', 'ffn'] as const) {
      const mats = router === 'ffn' ? FFN : ATTN;
      const expert_cosine: Record<string, Cell[][]> = {};
      const expert_norms: Record<string, Cell[]> = {};
      for (const m of mats) {
        expert_cosine[m] = symmetric(E, r, 0.35, 0.5);
        expert_norms[m] = Array.from({ length: E }, () => 20 + r() * 6);
      }
      const router_cosine = symmetric(E, r, 0, 0.8);
      const router_norms: Cell[] = Array.from({ length: E }, () => 0.8 + r() * 0.6);
      const drift = {
        steps: o.steps,
        experts: Array.from({ length: E }, (_, e) =>
          o.steps.map((_s, t): Cell => (t === 0 ? 0 : (t / (T - 1)) * (0.05 + 0.02 * e + r() * 0.02))),
        ),
        router: o.steps.map((_s, t) => (t / Math.max(1, T - 1)) * 0.35),
        router_norms: o.steps.map(() => router_norms.slice()),
      };
      const where = `layer ${layer} ${router}`;
      if (layer === 3 && router === 'ffn') {
        for (const m of mats) {
          const c = expert_cosine[m];
          c[2][5] = c[5][2] = 0.985 + r() * 0.01;
          expert_norms[m][5] = expert_norms[m][2];
        }
        router_norms[6] = 0;
        for (let i = 0; i < E; i++) router_cosine[6][i] = router_cosine[i][6] = null;
        warnings.push(
          {
            layer,
            router,
            kind: 'collapsed_experts',
            experts: [2, 5],
            message: `${where}: experts 2, 5 collapsed onto each other (weight cosine > 0.95 in w1, w2, w3; lowest 0.9853)`,
          },
          {
            layer,
            router,
            kind: 'router_near_zero',
            experts: [6],
            message: `${where}: router vectors of experts 6 are near zero (norm < 1e-06)`,
          },
        );
        drift.experts[5] = drift.experts[5].map((v) => (v === null ? null : v * 4));
      }
      if (layer === 4 && router === 'attn') {
        router_cosine[1][4] = router_cosine[4][1] = 0.9997;
        warnings.push({
          layer,
          router,
          kind: 'router_identical',
          experts: [1, 4],
          message: `${where}: router vectors of experts 1, 4 are identical (cosine > 0.999): the router cannot tell them apart`,
        });
      }
      const parent_distance: Cell[] = Array.from({ length: E }, (_, e) => 0.02 + 0.01 * e + r() * 0.01);
      layers.push({
        layer,
        router,
        num_experts: E,
        router_norms,
        router_cosine,
        expert_norms,
        expert_cosine,
        drift,
        parent_distance,
        parent_distance_by_matrix: Object.fromEntries(mats.map((m) => [m, parent_distance])),
      });
    }
  }
  return {
    version: 1,
    mode: 'analyze',
    method: 'btx',
    threshold: 0.95,
    router_eps: 1e-6,
    checkpoints: o.steps.map((s) => ({ path: `/runs/btx-s1/checkpoints/step-${s}`, step: s })),
    parents: Array.from({ length: E }, (_, e) => ({
      expert: e,
      path: `/runs/expert-${e}/checkpoints/step-500`,
      source: 'config' as const,
      used: true,
    })),
    layers,
    warnings,
    genealogy: [],
  };
}

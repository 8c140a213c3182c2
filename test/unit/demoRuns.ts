// The runs `moelab demo --quick` writes (ids, stages, methods and start order as run.json has them).
import type { RunInfo, RunStage } from '../../extension/src/runs/model';

const DEMO: [string, RunStage, string | undefined][] = [
  ['demo-seed', 'dense', undefined],
  ['demo-branch-code', 'branch', undefined],
  ['demo-branch-math', 'branch', undefined],
  ['demo-branch-prose', 'branch', undefined],
  ['demo-tune', 'branch', undefined],
  ['demo-dense-continued', 'branch', undefined],
  ['demo-upcycle-sparse', 'upcycle', 'sparse'],
  ['demo-upcycle-btx', 'upcycle', 'btx'],
  ['demo-upcycle-bam-ekv', 'upcycle', 'bam-ekv'],
  ['demo-upcycle-bam-skv', 'upcycle', 'bam-skv'],
  ['demo-upcycle-upit', 'upcycle', 'upit'],
  ['demo-moe-sparse', 'moe', 'sparse'],
  ['demo-upcycle-bam-ekv-attn-top1', 'upcycle', 'bam-ekv'],
  ['demo-upcycle-bam-ekv-attn-top2', 'upcycle', 'bam-ekv'],
  ['demo-moe-btx', 'moe', 'btx'],
  ['demo-moe-bam-ekv', 'moe', 'bam-ekv'],
  ['demo-moe-bam-skv', 'moe', 'bam-skv'],
  ['demo-moe-upit', 'moe', 'upit'],
  ['demo-moe-bam-ekv-attn-top2', 'moe', 'bam-ekv'],
  ['demo-moe-bam-ekv-attn-top1', 'moe', 'bam-ekv'],
  ['demo-moe-btx-compute', 'moe', 'btx'],
  ['demo-eval', 'eval', undefined],
];

export function demoRuns(root = '/w/runs'): RunInfo[] {
  return DEMO.map(([id, stage, method], i) => ({
    id,
    dir: `${root}/${id}`,
    stage,
    method,
    status: 'done',
    started: `2026-12-03T10:0${Math.floor(i / 10)}:${String(10 + (i % 10)).padStart(2, '0')}Z`,
  }));
}

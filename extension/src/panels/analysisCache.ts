// Where `moelab analyze` results live and when they can be reused (vscode-free, tested).
// Results sit next to what they describe — <run>/analysis.json, <checkpoint>/analysis.json,
// <B>/analysis-vs-<hash of A>.json for a pair — so whoever opens the checkpoint later (another
// window, a colleague on a shared disk) reuses them; a read-only checkpoint falls back to the
// extension's storage. A result is reused only while it is newer than every weight file it
// read and names exactly the checkpoints asked for (a run that saved another checkpoint since
// is analyzed again).
import { createHash } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { CompareReport, WeightReport, WeightsTarget } from '../../../webview/src/protocol';
import { isCompareReport, isWeightReport } from '../../../webview/src/protocolGuards';
import { listRunCheckpoints } from '../checkpoints/checkpointLoader';
import { log, why } from '../util/log';

/** What to analyze: the webview sees only kind and label; dirs never leave the host. */
export interface AnalysisSpec extends WeightsTarget {
  /** Checkpoint folders in step order (pair: [A, B]). Empty: a run without checkpoints yet. */
  dirs: string[];
  /** The folder the result is cached in: the run folder, the checkpoint, or B. */
  home: string;
  /** The run whose routing the Routing tab shows alongside. */
  runIds: string[];
}

export interface CacheFiles {
  analysis: string;
  compare?: string;
}

export interface CachedAnalysis {
  report: WeightReport;
  compare?: CompareReport;
  writtenAt: number;
}

/** JSON of an analysis is small next to the weights, but a hostile file must not exhaust memory. */
const MAX_REPORT_BYTES = 512 * 1024 * 1024;

const hash = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 16);

export async function runSpec(run: { id: string; dir: string }): Promise<AnalysisSpec> {
  const refs = await listRunCheckpoints(run.dir, run.id);
  return {
    kind: 'run',
    label: `run ${run.id}`,
    dirs: refs.map((r) => r.dir),
    home: run.dir,
    runIds: [run.id],
  };
}

export function checkpointSpec(dir: string, label: string, runId?: string): AnalysisSpec {
  return {
    kind: 'checkpoint',
    label,
    dirs: [path.resolve(dir)],
    home: path.resolve(dir),
    runIds: runId ? [runId] : [],
  };
}

export function pairSpec(
  a: { dir: string; label: string; runId?: string },
  b: { dir: string; label: string; runId?: string },
): AnalysisSpec {
  const runIds = [...new Set([a.runId, b.runId].filter((x): x is string => !!x))];
  return {
    kind: 'pair',
    label: `${a.label} → ${b.label}`,
    dirs: [path.resolve(a.dir), path.resolve(b.dir)],
    home: path.resolve(b.dir),
    runIds,
  };
}

/** The cache files of a spec, in `dir` (the spec's home, or the fallback storage folder). */
export function cacheFiles(spec: AnalysisSpec, dir = spec.home): CacheFiles {
  const inHome = dir === spec.home;
  if (spec.kind === 'pair') {
    const tag = inHome ? `vs-${hash(spec.dirs[0])}` : hash(spec.dirs.join('\n'));
    return {
      analysis: path.join(dir, `analysis-${tag}.json`),
      compare: path.join(dir, `compare-${tag}.json`),
    };
  }
  return {
    analysis: path.join(
      dir,
      inHome ? 'analysis.json' : `analysis-${hash(`${spec.kind}\n${spec.home}`)}.json`,
    ),
  };
}

export async function isWritableDir(dir: string): Promise<boolean> {
  try {
    await fsp.access(dir, constants.W_OK);
    return (await fsp.stat(dir)).isDirectory();
  } catch (e) {
    log.debug(`analysis cache: ${dir} is not writable: ${why(e)}`);
    return false;
  }
}

/** The newest modification time of the files a checkpoint's analysis reads (config and weights). */
export async function newestInput(dirs: readonly string[]): Promise<number> {
  let newest = 0;
  for (const dir of dirs) {
    const names = await fsp.readdir(dir);
    for (const n of names) {
      if (n !== 'config.json' && !n.endsWith('.safetensors') && !n.endsWith('.safetensors.index.json'))
        continue;
      newest = Math.max(newest, (await fsp.stat(path.join(dir, n))).mtimeMs);
    }
  }
  return newest;
}

const same = (a: string, b: string): boolean => path.resolve(a) === path.resolve(b);

async function readJson(
  file: string,
  notBefore: number,
): Promise<{ value: unknown; mtime: number } | undefined> {
  try {
    const st = await fsp.stat(file);
    if (!st.isFile() || st.size > MAX_REPORT_BYTES || st.mtimeMs < notBefore) return undefined;
    return { value: JSON.parse(await fsp.readFile(file, 'utf8')), mtime: st.mtimeMs };
  } catch (e) {
    log.debug(`analysis cache: no usable ${file} (analyzed again): ${why(e)}`);
    return undefined;
  }
}

/**
 * The cached result, if it is valid JSON of the right shape, describes exactly `spec.dirs` and
 * is newer than their weights; else undefined (analyze again).
 */
export async function readCachedAnalysis(
  spec: AnalysisSpec,
  files: CacheFiles,
): Promise<CachedAnalysis | undefined> {
  if (!spec.dirs.length) return undefined;
  let inputs: number;
  try {
    inputs = await newestInput(spec.dirs);
  } catch (e) {
    log.debug(`analysis cache: the checkpoints cannot be dated (analyzed again): ${why(e)}`);
    return undefined;
  }
  const a = await readJson(files.analysis, inputs);
  if (!a || !isWeightReport(a.value)) return undefined;
  const report = a.value;
  if (
    report.checkpoints.length !== spec.dirs.length ||
    !report.checkpoints.every((c, i) => same(c.path, spec.dirs[i]))
  )
    return undefined;
  if (!files.compare) return { report, writtenAt: a.mtime };
  const c = await readJson(files.compare, inputs);
  if (!c || !isCompareReport(c.value) || !same(c.value.a, spec.dirs[0]) || !same(c.value.b, spec.dirs[1]))
    return undefined;
  return { report, compare: c.value, writtenAt: Math.max(a.mtime, c.mtime) };
}

// The host side of the router panel's Weights tab: answers a request with the cached
// analysis, or runs `moelab analyze` (and for a pair `moelab analyze --compare` first) as
// tasks — progress in the task terminal, a running state in the tab — then sends the JSON.
// No vscode import: the job runner and the trust check come in, so the flow is unit-tested.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { AnalysisResultMessage, AnalysisStatusMessage } from '../../../webview/src/protocol';
import { analyzeCheckpointsArgs, compareArgs } from '../jobs/taskArgs';
import {
  type AnalysisSpec,
  cacheFiles,
  type CacheFiles,
  isWritableDir,
  readCachedAnalysis,
} from './analysisCache';

type Post = (message: AnalysisStatusMessage | AnalysisResultMessage) => void;

/** What JobRunner.runEngine offers: start `moelab <args>` as a task, resolve once started. */
export interface EngineJobs {
  runEngine(name: string, args: string[]): Promise<{ exit: Promise<number | undefined> } | undefined>;
}

const NO_TARGET =
  'Open the router panel on a run (Runs view: Analyze Expert Weights) or on a checkpoint (Checkpoints view: Open Checkpoint in Router Panel) to analyze its expert and router weights.';

export class WeightsAnalyzer {
  /** One job per target at a time; a second request while it runs waits for the same result. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly runner: EngineJobs | undefined,
    /** Where results go when the checkpoint's folder is read-only. */
    private readonly fallbackDir: string | undefined,
    private readonly log: (line: string) => void,
    /** Workspace trust: in Restricted Mode cached results are shown, no job is started. */
    private readonly isTrusted: () => boolean,
  ) {}

  async request(spec: AnalysisSpec | undefined, force: boolean, post: Post): Promise<void> {
    if (!spec) {
      post({ type: 'analysisStatus', target: null, state: 'unavailable', detail: NO_TARGET });
      return;
    }
    const target = { kind: spec.kind, label: spec.label };
    if (!spec.dirs.length) {
      post({
        type: 'analysisStatus',
        target,
        state: 'unavailable',
        detail: `${spec.label} has no checkpoint yet: runs save them under checkpoints/step-N/.`,
      });
      return;
    }
    const key = `${spec.kind}\n${spec.dirs.join('\n')}`;
    const running = this.inFlight.get(key);
    if (running) {
      post({
        type: 'analysisStatus',
        target,
        state: 'running',
        detail: `Analyzing ${spec.label}: progress in the task terminal.`,
      });
      await running;
      if (!(await this.sendCached(spec, post, false))) {
        post({
          type: 'analysisStatus',
          target,
          state: 'failed',
          detail: `The analysis of ${spec.label} did not finish; its task terminal shows why.`,
        });
      }
      return;
    }
    if (!force && (await this.sendCached(spec, post, true))) return;
    const job = this.analyze(spec, post);
    this.inFlight.set(key, job);
    try {
      await job;
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Candidate cache files: next to the checkpoint first, then the fallback folder. */
  private candidates(spec: AnalysisSpec): CacheFiles[] {
    const out = [cacheFiles(spec)];
    if (this.fallbackDir) out.push(cacheFiles(spec, this.fallbackDir));
    return out;
  }

  private async sendCached(spec: AnalysisSpec, post: Post, cached: boolean): Promise<boolean> {
    for (const files of this.candidates(spec)) {
      const hit = await readCachedAnalysis(spec, files);
      if (hit) {
        post({
          type: 'analysisResult',
          target: { kind: spec.kind, label: spec.label },
          cached,
          writtenAt: hit.writtenAt,
          report: hit.report,
          compare: hit.compare,
        });
        return true;
      }
    }
    return false;
  }

  private async analyze(spec: AnalysisSpec, post: Post): Promise<void> {
    const target = { kind: spec.kind, label: spec.label };
    if (!this.isTrusted() || !this.runner) {
      post({
        type: 'analysisStatus',
        target,
        state: 'unavailable',
        detail: `No analysis of ${spec.label} yet, and this workspace is in Restricted Mode: MoE Lab runs no engine job here. Trust the workspace to analyze the weights.`,
      });
      return;
    }
    const dir = (await isWritableDir(spec.home)) || !this.fallbackDir ? spec.home : this.fallbackDir;
    if (dir !== spec.home) await fsp.mkdir(dir, { recursive: true });
    const files = cacheFiles(spec, dir);
    const base = path.dirname(spec.home);
    const jobs: { name: string; args: string[] }[] = [];
    if (spec.kind === 'pair' && files.compare) {
      jobs.push({
        name: `MoE Lab: compare ${spec.label}`,
        args: compareArgs(spec.dirs[0], spec.dirs[1], files.compare, base),
      });
    }
    jobs.push({
      name: `MoE Lab: analyze ${spec.label}`,
      args: analyzeCheckpointsArgs(spec.dirs, files.analysis, base),
    });
    for (const [i, job] of jobs.entries()) {
      const what =
        job.args[1] === '--compare'
          ? 'Comparing the tensors of'
          : 'Analyzing the expert and router weights of';
      post({
        type: 'analysisStatus',
        target,
        state: 'running',
        detail: `${what} ${spec.label}: progress in the terminal “${job.name}”.`,
        job: { index: i + 1, count: jobs.length },
      });
      const started = await this.runner.runEngine(job.name, job.args);
      if (!started) {
        post({
          type: 'analysisStatus',
          target,
          state: 'none',
          detail: `The analysis of ${spec.label} was not started (the engine is not installed or not available). Analyze again once it is.`,
        });
        return;
      }
      const code = await started.exit;
      if (code !== 0) {
        const why = code === undefined ? 'was stopped before it finished' : `exited with code ${code}`;
        this.log(`[weights] ${job.name} ${why}`);
        post({
          type: 'analysisStatus',
          target,
          state: 'failed',
          detail: `${job.name.replace(/^MoE Lab: /, 'moelab ')} ${why}; the terminal “${job.name}” shows why.`,
        });
        return;
      }
    }
    const hit = await readCachedAnalysis(spec, files);
    if (!hit) {
      post({
        type: 'analysisStatus',
        target,
        state: 'failed',
        detail: `The analysis finished but ${files.analysis} is missing or not a valid analysis of ${spec.label}.`,
      });
      return;
    }
    post({
      type: 'analysisResult',
      target,
      cached: false,
      writtenAt: hit.writtenAt,
      report: hit.report,
      compare: hit.compare,
    });
  }
}

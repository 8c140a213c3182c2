// One onnxruntime-node session for one export. Only the router outputs are fetched: onnxruntime
// then skips the LM head, which for a large vocabulary is most of the last layer's work.
import * as ort from 'onnxruntime-node';
import * as os from 'node:os';
import { InspectorError } from './errors';
import type { RouterRunner } from './inspect';
import type { RoutingManifest } from './manifest';

export interface SessionOptions {
  /** CPU threads for one run; default: half the cores, so the editor keeps the rest. */
  threads?: number;
}

export class OnnxRouterRunner implements RouterRunner {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly inputName: string,
    private readonly outputs: string[],
  ) {}

  static async create(
    file: string,
    manifest: RoutingManifest,
    opts: SessionOptions = {},
  ): Promise<OnnxRouterRunner> {
    const threads = opts.threads ?? Math.max(1, Math.floor(os.availableParallelism() / 2));
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(file, {
        executionProviders: ['cpu'],
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
        // Worker threads sleep instead of spinning between ops: the inspector runs in bursts, and
        // spinning cores would be taken from the editor (and, on a busy machine, slow us down).
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
    } catch (e) {
      const first = String((e as Error).message ?? e).split('\n')[0];
      const reason = /no such file|ENOENT|doesn't exist|does not exist/i.test(first)
        ? 'missing'
        : `not a model onnxruntime can load (${first})`;
      throw new InspectorError(`${file}: ${reason}`);
    }
    const outputs = manifest.routers.map((r) => r.output);
    const missing = outputs.filter((o) => !session.outputNames.includes(o));
    if (!session.inputNames.includes(manifest.inputName) || missing.length) {
      await session.release();
      throw new InspectorError(
        `${file}: does not match routing.json beside it (${missing.length ? `missing outputs ${missing.slice(0, 3).join(', ')}` : `no input ${manifest.inputName}`}); re-export the checkpoint`,
      );
    }
    return new OnnxRouterRunner(session, manifest.inputName, outputs);
  }

  async run(ids: number[]): Promise<Map<string, Float32Array>> {
    const input = new ort.Tensor(
      'int64',
      BigInt64Array.from(ids, (i) => BigInt(i)),
      [1, ids.length],
    );
    const result = await this.session.run({ [this.inputName]: input }, this.outputs);
    const out = new Map<string, Float32Array>();
    for (const name of this.outputs) {
      const t = result[name];
      if (t.type !== 'float32') throw new InspectorError(`output ${name}: type ${t.type} (expected float32)`);
      out.set(name, t.data as Float32Array);
    }
    return out;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

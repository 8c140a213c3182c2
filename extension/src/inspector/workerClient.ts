// Host side of the inspector worker: request/reply by id, the worker started on first use and
// restarted after a crash. No vscode import, so tests drive it with the TypeScript worker entry.
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { InspectorError } from './errors';
import type { InspectOptions } from './inspect';
import type { LoadInfo, WorkerReply, WorkerRequest } from './protocol';
import type { InspectionResult } from './result';

type Pending = { resolve: (r: WorkerReply) => void; reject: (e: Error) => void };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export class InspectorClient {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly script: string | URL,
    private readonly options: WorkerOptions = {},
    private readonly threads?: number,
  ) {}

  async load(dir: string): Promise<LoadInfo> {
    const r = await this.request({ type: 'load', dir, threads: this.threads });
    return r.ok && r.type === 'load' && r.info ? r.info : { loadMs: 0, cached: true, routers: 0 };
  }

  async inspect(
    dir: string,
    text: string,
    options?: InspectOptions,
  ): Promise<{ result: InspectionResult; info: LoadInfo }> {
    const r = await this.request({ type: 'inspect', dir, text, options, threads: this.threads });
    if (!r.ok || r.type !== 'inspect') throw new Error('inspector worker: unexpected reply');
    return { result: r.result, info: r.info };
  }

  async release(dir?: string): Promise<void> {
    if (this.worker) await this.request({ type: 'release', dir });
  }

  async dispose(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.failAll(new Error('inspector worker stopped'));
    if (w) await w.terminate();
  }

  private request(req: DistributiveOmit<WorkerRequest, 'id'>): Promise<WorkerReply> {
    const worker = this.ensureWorker();
    const id = this.nextId++;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...req, id } as WorkerRequest);
    }).then((reply) => {
      if (reply.ok) return reply;
      throw reply.user ? new InspectorError(reply.message) : new Error(`inspector worker: ${reply.message}`);
    });
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(this.script, this.options);
    w.on('message', (reply: WorkerReply) => {
      const p = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      p?.resolve(reply);
    });
    w.on('error', (e) => this.failAll(new Error(`inspector worker crashed: ${e.message}`)));
    w.on('exit', (code) => {
      if (this.worker === w) this.worker = undefined;
      this.failAll(new Error(`inspector worker exited (code ${code})`));
    });
    this.worker = w;
    return w;
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

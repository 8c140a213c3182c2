// The worker's state: one loaded export (tokenizer + ONNX session) per directory, reloaded when
// model.onnx or routing.json changes on disk (a re-export), released on request.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InspectorError } from './errors';
import { inspectText } from './inspect';
import { loadExport, type LoadedExport } from './loader';
import { MANIFEST_FILE } from './manifest';
import type { LoadInfo, WorkerReply, WorkerRequest } from './protocol';
import { log, why } from '../util/log';

interface Entry {
  stamp: string;
  loaded: Promise<LoadedExport>;
}

export class SessionCache {
  private readonly entries = new Map<string, Entry>();

  async get(dir: string, threads?: number): Promise<{ loaded: LoadedExport; info: LoadInfo }> {
    const key = path.resolve(dir);
    const stamp = await stampOf(key);
    const hit = this.entries.get(key);
    if (hit && hit.stamp === stamp) {
      const loaded = await hit.loaded;
      return { loaded, info: { loadMs: 0, cached: true, routers: loaded.manifest.routers.length } };
    }
    if (hit) this.drop(key, hit);
    const entry: Entry = { stamp, loaded: loadExport(key, { threads }) };
    this.entries.set(key, entry);
    try {
      const loaded = await entry.loaded;
      return {
        loaded,
        info: { loadMs: loaded.loadMs, cached: false, routers: loaded.manifest.routers.length },
      };
    } catch (e) {
      // A failed load is not cached: the user may fix the directory and try again.
      if (this.entries.get(key) === entry) this.entries.delete(key);
      throw e;
    }
  }

  release(dir?: string): void {
    for (const [key, entry] of [...this.entries])
      if (dir === undefined || key === path.resolve(dir)) this.drop(key, entry);
  }

  private drop(key: string, entry: Entry): void {
    this.entries.delete(key);
    entry.loaded
      .then(
        (l) => l.runner.release(),
        () => undefined, // a session that failed to load has nothing to release
      )
      .catch((e: unknown) => log.debug(`inspector: releasing an ONNX session failed: ${why(e)}`));
  }

  /** Answers one request; never throws (failures become `ok: false` replies). */
  async handle(req: WorkerRequest): Promise<WorkerReply> {
    try {
      switch (req.type) {
        case 'load': {
          const { info } = await this.get(req.dir, req.threads);
          return { id: req.id, ok: true, type: 'load', info };
        }
        case 'inspect': {
          const { loaded, info } = await this.get(req.dir, req.threads);
          const result = await inspectText(
            req.text,
            loaded.dir,
            loaded.manifest,
            loaded.tokenizer,
            loaded.runner,
            req.options,
          );
          return { id: req.id, ok: true, type: 'inspect', info, result };
        }
        case 'release':
          this.release(req.dir);
          return { id: req.id, ok: true, type: 'release' };
      }
    } catch (e) {
      const user = e instanceof InspectorError;
      return { id: req.id, ok: false, user, message: user ? e.message : String((e as Error)?.stack ?? e) };
    }
  }
}

async function stampOf(dir: string): Promise<string> {
  const parts = await Promise.all(
    [MANIFEST_FILE, 'model.onnx'].map((f) =>
      fs.stat(path.join(dir, f)).then(
        (s) => `${s.mtimeMs}:${s.size}`,
        () => '-',
      ),
    ),
  );
  return parts.join('|');
}

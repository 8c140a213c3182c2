// Messages between the extension host and the inspector worker (worker_threads).
import type { InspectOptions } from './inspect';
import type { InspectionResult } from './result';

export type WorkerRequest =
  | { id: number; type: 'load'; dir: string; threads?: number }
  | { id: number; type: 'inspect'; dir: string; text: string; threads?: number; options?: InspectOptions }
  | { id: number; type: 'release'; dir?: string };

export interface LoadInfo {
  /** Time to open routing.json, the tokenizer and the ONNX session; 0 when it was cached. */
  loadMs: number;
  cached: boolean;
  routers: number;
}

export type WorkerReply =
  | { id: number; ok: true; type: 'load' | 'release'; info?: LoadInfo }
  | { id: number; ok: true; type: 'inspect'; info: LoadInfo; result: InspectionResult }
  /** `user`: an InspectorError (show the message as is); otherwise an unexpected failure. */
  | { id: number; ok: false; message: string; user: boolean };

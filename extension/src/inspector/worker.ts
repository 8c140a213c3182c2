// Entry of the inspector worker (bundled to dist/inspectorWorker.js): tokenizing and running ONNX
// sessions happen here, never on the extension host's thread, so the editor does not stutter.
import { parentPort } from 'node:worker_threads';
import type { WorkerReply, WorkerRequest } from './protocol';
import { SessionCache } from './sessionCache';

const cache = new SessionCache();
const port = parentPort;
if (!port) throw new Error('inspectorWorker must run as a worker thread');

port.on('message', (req: WorkerRequest) => {
  void cache.handle(req).then((reply: WorkerReply) => {
    // The probability arrays move to the host instead of being copied.
    const transfer =
      reply.ok && reply.type === 'inspect'
        ? reply.result.routers.map((r) => r.probs.buffer as ArrayBuffer)
        : [];
    port.postMessage(reply, transfer);
  });
});

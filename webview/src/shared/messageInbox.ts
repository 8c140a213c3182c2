// Receives host messages, validates them, and drops (and counts) anything malformed.
// A bad message must never take the page down, so handler errors are caught too.
import { timed } from './perf';
import { postToHost } from './vscodeApi';

export interface Inbox {
  readonly dropped: number;
}

export function listenToHost<T>(parse: (raw: unknown) => T | undefined, handle: (message: T) => void): Inbox {
  let dropped = 0;
  const drop = (detail: string): void => {
    dropped++;
    // Exposed for tests and for anyone inspecting the webview with devtools.
    document.body.dataset.droppedMessages = String(dropped);
    postToHost({ type: 'protocolError', dropped, detail: detail.slice(0, 500) });
  };
  window.addEventListener('message', (event: MessageEvent) => {
    const message = timed('message: validate', () => parse(event.data));
    if (message === undefined) {
      const type =
        typeof event.data === 'object' && event.data !== null
          ? String((event.data as { type?: unknown }).type)
          : typeof event.data;
      drop(`malformed message (type ${type})`);
      return;
    }
    try {
      timed('message: handle', () => handle(message));
    } catch (err) {
      drop(`handler failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  });
  return {
    get dropped() {
      return dropped;
    },
  };
}

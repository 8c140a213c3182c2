// A vscode.Event-compatible emitter that needs no vscode runtime, so the stores that fire
// events stay testable in plain node. In the extension host it behaves like vscode.EventEmitter.
import type * as vscode from 'vscode';
import { log } from './log';

export class Emitter<T> {
  private listeners = new Set<(e: T) => unknown>();

  readonly event: vscode.Event<T> = (listener, thisArgs?, disposables?) => {
    const bound = (e: T) => listener.call(thisArgs, e);
    this.listeners.add(bound);
    const d = { dispose: () => void this.listeners.delete(bound) };
    disposables?.push(d);
    return d;
  };

  fire(e: T): void {
    for (const l of [...this.listeners]) {
      try {
        l(e);
      } catch (err) {
        // One failing listener (a panel, say) must not starve the others.
        log.error('an event listener failed', err);
      }
    }
  }

  dispose(): void {
    this.listeners.clear();
  }
}

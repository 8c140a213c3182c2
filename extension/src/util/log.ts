// The host's log: the one "MoE Lab" LogOutputChannel, which activate() creates and hands here,
// reached through this module so that the vscode-free services (stores, tailers, loaders, which
// the unit tests run in plain Node) log to it too. Failures go to error/warn; catches that are
// deliberate (a file not written yet, a folder that is not a run) go to debug/trace with the why.
// Until activate() sets the channel (unit tests), nothing is written. No vscode at run time.
import type * as vscode from 'vscode';

export type Log = Pick<vscode.LogOutputChannel, 'trace' | 'debug' | 'info' | 'warn' | 'error'>;

const silent: Log = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };
let sink: Log = silent;

/** Sends the host's log to `channel` until the returned disposable is disposed. */
export function useLog(channel: Log): { dispose(): void } {
  sink = channel;
  return { dispose: () => void (sink === channel && (sink = silent)) };
}

export const log: Log = {
  trace: (message, ...args) => sink.trace(message, ...args),
  debug: (message, ...args) => sink.debug(message, ...args),
  info: (message, ...args) => sink.info(message, ...args),
  warn: (message, ...args) => sink.warn(message, ...args),
  error: (error, ...args) => sink.error(error, ...args),
};

/** An error's message for a log line (errors from fs carry their code and path in it). */
export function why(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

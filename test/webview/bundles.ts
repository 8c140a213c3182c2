// Builds the webview bundles for the tests (same options as esbuild.mjs's
// webview build), so the tests run on the current sources even when the host
// bundle of a concurrently edited tree does not build.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

// Tests and the bench run from the repository root (npm scripts, Makefile).
export const ROOT = process.cwd();
export const OUT_DIR = path.join(ROOT, 'test-results/webview/bundle');

let built: Promise<void> | undefined;

export function buildBundles(): Promise<void> {
  built ??= esbuild
    .build({
      entryPoints: ['dashboard', 'router', 'results']
        .map((name) => ({ in: path.join(ROOT, `webview/src/${name}/main.ts`), out: name }))
        .filter((e) => fs.existsSync(e.in)),
      bundle: true,
      platform: 'browser',
      format: 'esm',
      target: 'es2022',
      outdir: OUT_DIR,
      loader: { '.css': 'css' },
      logLevel: 'warning',
    })
    .then(() => undefined);
  return built;
}

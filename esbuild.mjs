// Two bundles: the extension host (Node, CommonJS) and the webviews (browser, ESM).
import * as esbuild from 'esbuild';
import fs from 'node:fs';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

const host = {
  entryPoints: ['extension/src/extension.ts'],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outfile: 'dist/extension.js',
  external: ['vscode', 'onnxruntime-node'],
  sourcemap: !production,
  minify: production,
  logLevel: 'warning',
};

// The routing inspector's worker thread (tokenizer + onnxruntime sessions, off the host's thread).
const inspectorWorker = {
  ...host,
  entryPoints: ['extension/src/inspector/worker.ts'],
  outfile: 'dist/inspectorWorker.js',
};

const webviewEntries = fs.existsSync('webview/src')
  ? fs
      .readdirSync('webview/src', { withFileTypes: true })
      .filter((d) => d.isDirectory() && fs.existsSync(`webview/src/${d.name}/main.ts`))
      .map((d) => ({ in: `webview/src/${d.name}/main.ts`, out: d.name }))
  : [];

const webviews = {
  entryPoints: webviewEntries,
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  outdir: 'dist/webview',
  sourcemap: !production,
  minify: production,
  logLevel: 'warning',
  loader: { '.css': 'css' },
};

const configs = [host, inspectorWorker, ...(webviewEntries.length ? [webviews] : [])];
if (watch) {
  for (const c of configs) await (await esbuild.context(c)).watch();
} else {
  await Promise.all(configs.map((c) => esbuild.build(c)));
}

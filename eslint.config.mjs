import tseslint from 'typescript-eslint';

// Extension-host modules that must not load `vscode` at run time (docs/ARCHITECTURE.md §6): the
// inspector's worker thread has no `vscode` module, and the unit tests run these in plain Node.
// Type-only imports (vscode.Event in an interface) are erased and allowed.
const VSCODE_FREE = [
  'checkpoints/checkpointDiff.ts',
  'checkpoints/checkpointLoader.ts',
  'checkpoints/checkpointModel.ts',
  'checkpoints/safetensorsHeader.ts',
  'checkpoints/tensorLayout.ts',
  'commands/commandArgs.ts',
  'engine/interpreter.ts',
  'inspector/byteTokenizer.ts',
  'inspector/discovery.ts',
  'inspector/errors.ts',
  'inspector/hfTokenizer.ts',
  'inspector/inspect.ts',
  'inspector/loader.ts',
  'inspector/manifest.ts',
  'inspector/onnxRunner.ts',
  'inspector/palette.ts',
  'inspector/protocol.ts',
  'inspector/result.ts',
  'inspector/sessionCache.ts',
  'inspector/tokens.ts',
  'inspector/view.ts',
  'inspector/windows.ts',
  'inspector/worker.ts',
  'inspector/workerClient.ts',
  'jobs/gracefulStop.ts',
  'jobs/slurmArgs.ts',
  'jobs/slurmPoller.ts',
  'jobs/taskArgs.ts',
  'panels/analysisCache.ts',
  'panels/nonce.ts',
  'panels/panelData.ts',
  'panels/warningLedger.ts',
  'panels/webviewHtml.ts',
  'panels/weightsAnalysis.ts',
  'results/resultsFile.ts',
  'results/resultsTarget.ts',
  'runs/model.ts',
  'runs/runColors.ts',
  'runs/records.ts',
  'runs/runStore.ts',
  'runs/runsTreeModel.ts',
  'runs/tailer.ts',
  'util/emitter.ts',
  'util/log.ts',
].map((f) => `extension/src/${f}`);

const noVscode = {
  name: 'vscode',
  allowTypeImports: true,
  message:
    'This module is vscode-free (eslint.config.mjs VSCODE_FREE): keep vscode in the adapters that call it.',
};
// The host and the webviews meet only in the message protocol (webview/src/protocol.ts, protocolGuards.ts).
const hostSeesOnlyTheProtocol = {
  group: ['**/webview/src/**', '!**/webview/src/protocol', '!**/webview/src/protocolGuards'],
  message: 'The host reaches a webview only by messages: import webview/src/protocol or protocolGuards only.',
};
const restrict = (paths, patterns) => ['error', { paths, patterns }];

export default tseslint.config(
  { ignores: ['dist/**', 'out/**', 'node_modules/**', '.venv/**', 'test/e2e/**/*.mjs'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        { selector: 'ExportDefaultDeclaration', message: 'No default exports.' },
      ],
    },
  },
  {
    files: ['extension/src/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': restrict([], [hostSeesOnlyTheProtocol]) },
  },
  {
    files: VSCODE_FREE,
    rules: { '@typescript-eslint/no-restricted-imports': restrict([noVscode], [hostSeesOnlyTheProtocol]) },
  },
  {
    // Webviews run in a browser sandbox: no vscode API module, no Node built-ins, no host code.
    files: ['webview/src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict(
        [{ name: 'vscode', message: 'Webviews reach the host only by messages (webview/src/protocol.ts).' }],
        [
          { group: ['node:*'], message: 'Webviews run in a browser: no Node built-ins.' },
          {
            group: ['**/extension/src/**'],
            message: 'Webviews reach the host only by messages (webview/src/protocol.ts).',
          },
        ],
      ),
    },
  },
);

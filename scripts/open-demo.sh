#!/usr/bin/env bash
# After `make demo`: say where to look, and where a `code` command exists, install the .vsix and open the workspace.
set -u
cd "$(dirname "$0")/.."
vsix=$(ls -t dist/*.vsix 2>/dev/null | head -n 1)
echo
echo "MoE Lab demo finished."
echo "  runs:       $PWD/runs   (run.json, metrics.jsonl, routing.jsonl, checkpoints/ per run)"
echo "  results:    $PWD/runs/eval.json"
[ -n "$vsix" ] && echo "  extension:  $PWD/$vsix"
if command -v code >/dev/null 2>&1 && [ -n "$vsix" ] && [ -z "${CI:-}" ]; then
  code --install-extension "$vsix" --force >/dev/null && code "$PWD" && echo "Opened this folder in VS Code: the MoE Lab sidebar lists the runs."
else
  echo "Open it in VS Code:  code --install-extension $vsix && code $PWD   (then the MoE Lab icon in the activity bar)"
fi

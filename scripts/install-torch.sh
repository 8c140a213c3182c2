#!/usr/bin/env bash
# Installs torch into the engine's virtual environment (`make setup` calls it).
#
#   TORCH_VERSION=2.13.0 scripts/install-torch.sh PYTHON [SPEC]   (the Makefile sets TORCH_VERSION)
#
# SPEC given (`make setup TORCH=torch`, the CUDA build on a GPU machine): exactly that is installed.
# No SPEC: a torch already in the environment is kept; otherwise the CPU build (small, no CUDA
# libraries) is taken where an index serves it, and plain `torch` where none does:
#   1. torch==$TORCH_VERSION+cpu from the configured indexes (a mirror or a pip.conf that lists
#      PyTorch's CPU index);
#   2. on Linux, torch==$TORCH_VERSION from PyTorch's CPU index (PyPI's Linux wheel is the CUDA build;
#      on macOS and Windows PyPI's is the CPU build already);
#   3. plain `torch` from the configured indexes.
# It prints which one it took and why the ones before it failed. An unreachable index fails fast
# (PIP_RETRIES=0, PIP_TIMEOUT=5 unless set). PIP_ARGS adds pip options to every attempt (--dry-run to try
# it without installing).
set -u -o pipefail

PY="${1:?usage: $0 PYTHON [SPEC]}"
SPEC="${2:-}"
VERSION="${TORCH_VERSION:?set TORCH_VERSION (the Makefile does)}"
CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
export PIP_RETRIES="${PIP_RETRIES:-0}" PIP_TIMEOUT="${PIP_TIMEOUT:-5}" PIP_DISABLE_PIP_VERSION_CHECK=1
read -r -a EXTRA <<<"${PIP_ARGS:-}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

say() { echo "install-torch: $*"; }

# Why an attempt failed, in one line: pip's last error that names a cause, and whether an index was unreachable.
why() {
  local unreachable=""
  grep -qE 'NewConnectionError|Name or service not known|timed out|Max retries' "$LOG" && unreachable="an index was unreachable; "
  echo "$unreachable$(grep -E '^ERROR' "$LOG" | grep -v ResolutionImpossible | tail -n 1 | sed 's/^ERROR: //' | cut -c1-160)"
}

attempt() {
  "$PY" -m pip install -q "${EXTRA[@]}" "$@" >"$LOG" 2>&1
}

if [ -n "$SPEC" ]; then
  say "installing $SPEC (TORCH was set)"
  "$PY" -m pip install -q "${EXTRA[@]}" "$SPEC"
  exit $?
fi

if have="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
  say "keeping torch $have (already installed; set TORCH=SPEC and use a fresh .venv to replace it)"
  exit 0
fi

if attempt "torch==$VERSION+cpu"; then
  say "took torch==$VERSION+cpu, the CPU build, from the configured index"
  exit 0
fi
say "torch==$VERSION+cpu is not on the configured index ($(why))"

case "$(uname -s)" in
  Linux)
    if attempt "torch==$VERSION" --index-url "$CPU_INDEX"; then
      say "took torch==$VERSION, the CPU build, from $CPU_INDEX"
      exit 0
    fi
    say "$CPU_INDEX did not serve torch==$VERSION ($(why))"
    ;;
  *) say "$(uname -s): PyPI's torch is the CPU build there" ;;
esac

if attempt torch; then
  got="$("$PY" -m pip show torch 2>/dev/null | awk '/^Version:/ { print $2 }')"
  say "took plain torch${got:+ $got} from the configured index"
  exit 0
fi
say "could not install torch: $(why)"
exit 1

#!/usr/bin/env bash
# The GPU figures in one table (bench/gpu_table.py): `bench/gpu.sh` on one CUDA GPU,
# `bench/gpu.sh --tiny` on CPU with tiny shapes (the script end to end, not a measurement).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$root/bench/gpu_table.py" "$@"

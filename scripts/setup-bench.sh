#!/usr/bin/env bash
# The benchmark's PyTorch side in its own venv (several GB: torch from PyPI carries CUDA wheels),
# and Linux `perf` for profiles.
# Not part of scripts/setup.sh or CI. Venv: $SOFT_BENCH_VENV (default ~/.cache/soft-bench-venv).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/apt.sh"
venv="${SOFT_BENCH_VENV:-$HOME/.cache/soft-bench-venv}"
# `perf`, for the per-function profiles in BENCHMARKS.md.
dpkg -s linux-perf >/dev/null 2>&1 || apt_install linux-perf
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet -r "$repo_root/bench/requirements-pytorch.txt"
"$venv/bin/python" -c 'import torch, transformers, peft; print("bench venv:", torch.__version__, transformers.__version__, peft.__version__)'

#!/usr/bin/env bash
# The main job: set up, build, then `soft-train run` — the whole SOFT chain on the embedded
# Amazon Books data with the tiny model (pre-training, popularity, SASRec, SFT, distillation,
# SOFT and SOFT without SA, every method evaluated on the held-out test split) — into
# ${RUNS:-runs}/default. Extra arguments go to `soft-train run` (say `--seeds 3`).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup.sh
cargo build --release -p soft-train
bin="$CARGO_TARGET_DIR/release/soft-train"
out="${RUNS:-runs}/default"
if [[ -f "$out/run-config.json" ]]; then
    "$bin" run --resume "$out"
else
    "$bin" run --out "$out" "$@"
fi

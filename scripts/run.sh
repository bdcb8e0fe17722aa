#!/usr/bin/env bash
# The main job: set up (only what soft-train needs), build, then `soft-train run` — the whole SOFT chain on the embedded
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
# Nothing of the browser's tool chain was needed so far; the page is one command away.
echo
echo "Your run in your browser (installs the page's tool chain on first use, builds the page,"
echo "exports this run's models into it and serves it at http://127.0.0.1:8000):"
echo "    scripts/serve-run.sh $out"

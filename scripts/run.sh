#!/usr/bin/env bash
# The main job: set up, build, then the classic baselines trained on the embedded Amazon Books
# data and evaluated on its held-out test split. Outputs go to ${RUNS:-runs}/.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup.sh
cargo build --release -p soft-train
bin="$CARGO_TARGET_DIR/release/soft-train"
runs="${RUNS:-runs}"

"$bin" prepare --out "$runs/data"
for method in popularity sasrec; do
    "$bin" baseline --method "$method" --out "$runs/$method"
    "$bin" eval --run "$runs/$method" --sequences "$runs/data/test.csv" --items "$runs/data/id2name.json" --out "$runs/$method/test"
done

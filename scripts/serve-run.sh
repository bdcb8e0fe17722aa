#!/usr/bin/env bash
# Your own run in your browser: the page with the models of a `soft-train run` directory.
#   scripts/serve-run.sh runs/default [PORT]
# Installs the page's tool chain if missing (scripts/setup-web.sh), builds the page
# (scripts/build-web.sh), copies it to RUN/page, exports the run's models into RUN/page/assets
# (`soft-train export`), and serves RUN/page with Python's static server. The run itself is only
# read: a failure here loses nothing of it.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="${1:?usage: scripts/serve-run.sh RUN_DIR [PORT]}"
port="${2:-8000}"
[[ -f "$run/run-config.json" ]] || { echo "serve-run: $run is not a soft-train run directory (no run-config.json)" >&2; exit 1; }
run="$(cd "$run" && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup-web.sh
scripts/build-web.sh
cargo build --release -p soft-train
page="$run/page"
rm -rf "$page"
mkdir -p "$page"
cp -r web/dist/. "$page/"
# The page's own assets are replaced by this run's export (the shipped dataset copy stays unused).
rm -rf "$page/assets/model" "$page/assets/reports" "$page/assets/manifest.json"
# A run made from uncommitted changes still exports: the page then says so.
"$CARGO_TARGET_DIR/release/soft-train" export --run "$run" --out "$page/assets" --allow-dirty
echo "serving $page at http://127.0.0.1:$port (Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory "$page"

#!/usr/bin/env bash
# Set-up, then every test of the workspace (optimised build: burn is too slow unoptimised).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup.sh
cargo test --release --workspace "$@"

#!/usr/bin/env bash
# Set-up, then every test of the workspace (optimised build: burn is too slow unoptimised).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup.sh
# The set-up fetched SmolLM2 and MovieLens and installed a software Vulkan driver: from here on a
# test that finds one missing fails instead of skipping (crates/soft-core/src/test_assets.rs).
export SOFT_REQUIRE_MODELS=1
cargo test --release --workspace "$@"

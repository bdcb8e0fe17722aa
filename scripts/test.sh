#!/usr/bin/env bash
# Set-up (the main job's, the page's tool chain, the page), then every test of the workspace (optimised build: burn is
# too slow unoptimised), then the page's end-to-end test in headless Chromium on both backends.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup.sh
scripts/setup-web.sh
scripts/build-web.sh
# The set-up fetched SmolLM2 and MovieLens and installed a software Vulkan driver: from here on a
# test that finds one missing fails instead of skipping (crates/soft-core/src/test_assets.rs).
export SOFT_REQUIRE_MODELS=1
cargo test --release --workspace "$@"
scripts/test-web.sh --built

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
# The CPU kernels and decoding as the page runs them: soft-core's tests built for wasm32 with SIMD128
# (.cargo/config.toml) and run in V8, Chromium's engine, through Node's WASI; the tests that read
# files stay native (no file system is handed to the wasm).
CARGO_TARGET_WASM32_WASIP1_RUNNER="node $repo_root/bench/run-wasi.mjs" cargo test --release -p soft-core --no-default-features \
    --lib --target wasm32-wasip1 -- kernels:: model::decoding:: model::llama:: model::lora
scripts/test-web.sh --built

#!/usr/bin/env bash
# The browser half's test: builds the page (trunk, release) and drives it in Debian's headless
# Chromium on both backends, WebGPU (SwiftShader) and CPU (wasm) - tests/browser/e2e.mjs.
# Exits non-zero when the build or any check fails. Extra arguments go to e2e.mjs
# (`--screenshots docs/web` refreshes the README's screenshots, `--only cpu` runs one backend).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
scripts/setup-web.sh

scripts/build-web.sh

node tests/browser/e2e.mjs web/dist "$@"

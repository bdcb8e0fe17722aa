#!/usr/bin/env bash
# The browser half's test: builds the page (trunk, release) and drives it in Debian's headless
# Chromium on both backends, WebGPU (SwiftShader) and CPU (wasm) - tests/browser/e2e.mjs.
# Exits non-zero when the build or any check fails. `--built` skips the set-up and the build
# (scripts/test.sh: its set-up built the page); other arguments go to e2e.mjs (`--screenshots
# docs/web` refreshes the README's screenshots, `--only cpu` runs one backend).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh
if [[ "${1:-}" == --built ]]; then
    shift
else
    scripts/setup-web.sh
    scripts/build-web.sh
fi

node tests/browser/e2e.mjs web/dist "$@"

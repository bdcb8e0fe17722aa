#!/usr/bin/env bash
# Builds the page into web/dist: trunk with Cargo.toml's [profile.web] (opt-level z, fat LTO),
# then wasm-opt -Oz from binaryen's npm package (Debian's wasm-opt is too old for current rustc
# output), which also strips the function names the profile keeps. SOFT_WASM_OPT=0 skips
# wasm-opt. Extra arguments go to trunk (`--cargo-profile release`: a faster, larger build while
# developing).
# Prints the build times and the sizes of the wasm and the assets.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh

start=$(date +%s)
trunk build --release --config trunk.toml "$@"
echo "web: trunk build: $(($(date +%s) - start)) s"

shopt -s nullglob
wasm=(web/dist/*_bg.wasm)
if ((${#wasm[@]} != 1)); then
    echo "build-web: expected one wasm file in web/dist, found ${#wasm[@]}" >&2
    exit 1
fi
wasm="${wasm[0]}"
if [[ "${SOFT_WASM_OPT:-1}" != 0 ]]; then
    opt=tests/browser/node_modules/.bin/wasm-opt
    [[ -x "$opt" ]] || { echo "build-web: $opt missing: run scripts/setup-web.sh" >&2; exit 1; }
    before=$(stat -c %s "$wasm")
    t=$(date +%s)
    # The features rustc enables for wasm32 by default, so binaryen accepts and keeps them.
    "$opt" -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        "$wasm" -o "$wasm.opt"
    mv "$wasm.opt" "$wasm"
    echo "web: wasm-opt -Oz: $(($(date +%s) - t)) s, $before -> $(stat -c %s "$wasm") bytes"
fi
echo "web: $(basename "$wasm"): $(stat -c %s "$wasm") bytes ($(gzip -9 -c "$wasm" | wc -c) gzipped)"
echo "web: assets: $(du -sb web/dist/assets | cut -f1) bytes; whole page: $(du -sb web/dist | cut -f1) bytes"

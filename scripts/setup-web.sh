#!/usr/bin/env bash
# Installs what the browser app needs on a fresh Debian machine; safe to run again (each step is
# skipped when already done). Needs only the package registries: crates.io, npm and Debian.
#   - the wasm32 targets (the page's; wasm32-wasip1 for the kernels' tests in Node), trunk 0.21.14 (0.22 needs a newer rustc), wasm-bindgen-cli at exactly
#     the wasm-bindgen version of Cargo.lock (trunk, offline, accepts no other);
#   - Debian's chromium (the end-to-end test drives it; never a downloaded browser), node and npm;
#   - tests/browser's npm packages (playwright-core only, from package-lock.json).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/apt.sh"
cd "$repo_root"

TRUNK_VERSION=0.21.14

for target in wasm32-unknown-unknown wasm32-wasip1; do
    if ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
done

if [[ "$(trunk --version 2>/dev/null || true)" != "trunk $TRUNK_VERSION" ]]; then
    # --force: cargo skips a package it has on record even when the binary itself is gone.
    cargo install trunk --locked --force --version "=$TRUNK_VERSION"
fi

# The version trunk will look for: the one wasm-bindgen package in Cargo.lock.
bindgen_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [[ -z "$bindgen_version" ]]; then
    echo "setup-web: no wasm-bindgen in Cargo.lock (is web/ a workspace member?)" >&2
    exit 1
fi
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $bindgen_version" ]]; then
    # Not --locked: the lock wasm-bindgen-cli 0.2.130 publishes names webpki-roots 1.0.11, which
    # the registry no longer serves (yanked), so a locked install always fails. The version of
    # the tool itself is pinned exactly; its dependencies resolve fresh.
    cargo install wasm-bindgen-cli --force --version "=$bindgen_version"
fi

need_apt=()
dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
apt_install ${need_apt[@]+"${need_apt[@]}"}

# npm ci wipes node_modules, so run it only when the lock file changed since the last install.
cd tests/browser
if ! cmp -s package-lock.json node_modules/.soft-installed-lock 2>/dev/null; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
    cp package-lock.json node_modules/.soft-installed-lock
fi

#!/usr/bin/env bash
# Installs the llama.cpp side of `soft-train bench --against llama.cpp`; safe to run again (each
# step is skipped when already done). Needs only the package registries (npm and Debian):
#   - node and npm from Debian when missing;
#   - bench/llamacpp's npm packages from its package-lock.json: node-llama-cpp 3.21.1 and its
#     prebuilt llama.cpp CPU binaries for Linux x64 (@node-llama-cpp/linux-x64). The CUDA,
#     Vulkan and other platforms' binaries are optional packages, left out (--omit=optional);
#     the install script is told not to download or build llama.cpp (NODE_LLAMA_CPP_SKIP_DOWNLOAD):
#     the bench only loads the prebuilt binary, never a source build;
#   - the SmolLM2 GGUF both sides load (scripts/fetch-smollm2.sh).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/apt.sh"
cd "$repo_root"

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
apt_install ${need_apt[@]+"${need_apt[@]}"}

# npm ci wipes node_modules, so run it only when the lock file changed since the last install.
(
    cd bench/llamacpp
    if ! cmp -s package-lock.json node_modules/.soft-installed-lock 2>/dev/null; then
        NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm ci --omit=optional --no-audit --no-fund
        cp package-lock.json node_modules/.soft-installed-lock
    fi
    # The prebuilt binary must load here (no build fallback): fail now rather than in the bench.
    node bench.mjs --check
)

[[ -f models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]] || bash scripts/fetch-smollm2.sh

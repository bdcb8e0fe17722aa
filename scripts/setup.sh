#!/usr/bin/env bash
# Installs what `soft-train` needs on a fresh machine (the main job); safe to run again. The
# page's tool chain is scripts/setup-web.sh.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/apt.sh"

# Software Vulkan device (lavapipe) so the wgpu backend runs without a GPU.
need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s unzip >/dev/null 2>&1 || need_apt+=(unzip)
# TrueType font for the text of PNG plots (native/src/plot.rs reads it at run time).
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need_apt+=(fonts-dejavu-core)
APT_RECOMMENDS=1 apt_install ${need_apt[@]+"${need_apt[@]}"}

# Weights and data that registries carry but the repo must not.
"$repo_root/scripts/fetch-smollm2.sh"
"$repo_root/scripts/fetch-ml100k.sh"

# The browser page's tool chain is not part of the main job: scripts/setup-web.sh installs it
# (scripts/test.sh and scripts/serve-run.sh call it).

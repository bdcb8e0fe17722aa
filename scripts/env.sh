# Sourced by the project's scripts: one shared cargo target directory outside the clone, so a
# fresh clone (CI) reuses the ~20 minute burn build, and a private runtime dir for Vulkan.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/soft-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/soft-xdg.XXXXXX)}"

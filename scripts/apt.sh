# Sourced by the set-up scripts: `apt_install PKG...` installs Debian packages (through sudo when
# not root), without recommended packages unless APT_RECOMMENDS=1; nothing when given none.
# Callers decide what is missing.
apt_install() {
    (($#)) || return 0
    local sudo="" options=(-y -qq)
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    [[ "${APT_RECOMMENDS:-0}" == 1 ]] || options+=(--no-install-recommends)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install "${options[@]}" "$@"
}

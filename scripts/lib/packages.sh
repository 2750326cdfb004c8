# Shared by the scripts: installs missing Debian packages, or explains how when not root.

# Prints the packages among "$@" that dpkg does not list as installed.
sinkkit_missing_packages() {
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            printf '%s\n' "$package"
        fi
    done
}

# Installs the missing packages among "$@" with apt-get. Without root it prints the exact
# command to run and returns 1.
sinkkit_require_packages() {
    local missing
    mapfile -t missing < <(sinkkit_missing_packages "$@")
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi

    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing packages: ${missing[*]}" >&2
        echo "install them as root with:" >&2
        echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
        return 1
    fi

    echo "installing: ${missing[*]}"
    if [ -z "${SINKKIT_APT_UPDATED:-}" ]; then
        apt-get update -qq
        export SINKKIT_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# Packages that every build of the project needs on Debian 12.
SINKKIT_BUILD_PACKAGES=(cmake make gcc g++ pkg-config libcmocka-dev libbenchmark-dev libsleef-dev)

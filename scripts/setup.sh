#!/usr/bin/env bash
# Installs what iDaaS tests need on Debian 12 (bookworm) when it is missing:
# MariaDB and PostgreSQL servers and clients (idaas-testkit starts private instances of them).
#
#   scripts/setup.sh           # test dependencies
#   scripts/setup.sh --bench   # also sysbench and pgloader, for the benchmarks under bench/
#
# Idempotent: when everything is installed it only checks and exits (no apt-get update).
# Runs as root, or through sudo when it is available.
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

packages=(mariadb-server mariadb-client postgresql postgresql-client)
for arg in "$@"; do
    case "$arg" in
        --bench) packages+=(sysbench pgloader) ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "setup.sh: unknown argument '$arg'" >&2
            usage >&2
            exit 2
            ;;
    esac
done

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: this script needs Debian/Ubuntu (apt-get); install by hand: ${packages[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup.sh: all present (${packages[*]})"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "setup.sh: missing ${missing[*]}, and not root and no sudo to install them" >&2
    exit 1
fi

echo "setup.sh: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
    if ! installed "$pkg"; then
        echo "setup.sh: $pkg is still not installed" >&2
        exit 1
    fi
done
echo "setup.sh: done"

#!/usr/bin/env bash
# Runs every iDaaS test on this machine: installs what is missing (Debian packages for the private
# MariaDB/PostgreSQL test servers), checks formatting and lints, then runs all unit and integration tests
# against real servers started by idaas-testkit.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p idaas-engine # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
jobs="${CARGO_BUILD_JOBS:-2}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy -j"$jobs" --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test -j"$jobs" --workspace "$@"

#!/usr/bin/env bash
# Builds the Debian package of Sluice (binary, systemd unit, config, maintainer
# scripts from packaging/debian/) with cargo-deb, installed first if missing.
#
#   bash scripts/package.sh                 release build -> target/debian/sluice_*.deb
#   bash scripts/package.sh --dev OUT_DIR   the debug binary, fast compression:
#                                           for tests, which must not wait for a
#                                           release build
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the metadata in broker/Cargo.toml and --profile dev are checked
# against this version.
CARGO_DEB_VERSION=3.8.0

if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

if [ "${1:-}" = "--dev" ]; then
  out="${2:?usage: package.sh --dev OUT_DIR}"
  cargo build -p broker --bin sluice --quiet
  # cargo-deb warns that the dev profile is meant for tests only: it is.
  cargo deb -p broker --profile dev --no-build --fast --quiet -o "$out"
else
  cargo deb -p broker --locked
fi

#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, property,
# crash and end-to-end tests, then the client compatibility script.
set -euo pipefail
# Incremental caches double a clean build's footprint on disk and buy nothing
# in a one-shot run.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# glommio registers its io buffers as locked memory.
ulimit -l unlimited 2>/dev/null || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=2
.venv/bin/python tests/python/compat.py
.venv/bin/python tests/python/tls.py
.venv/bin/python tests/python/sasl.py
.venv/bin/python tests/python/oauth.py
.venv/bin/python tests/python/acl.py
.venv/bin/python tests/python/idempotence.py
.venv/bin/python tests/python/groups.py
.venv/bin/python tests/python/metrics.py
.venv/bin/python tests/python/admin.py
.venv/bin/python tests/python/debian_package.py
.venv/bin/python tests/python/influx.py
.venv/bin/python tests/python/prometheus.py
.venv/bin/python tests/python/ingest_security.py
.venv/bin/python tests/python/shippers.py
.venv/bin/python tests/python/cluster.py
.venv/bin/python tests/python/cluster_partition.py
.venv/bin/python tests/python/cluster_ops.py
echo "all tests passed"

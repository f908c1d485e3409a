#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, idempotently:
# kcat, systemd-analyze and strace (the package test), collectd-core and
# rsyslog with rsyslog-kafka (the shippers test), Prometheus (the
# remote-write test), and a Python venv with the
# Kafka clients the compatibility script drives. (librdkafka, bundled by the
# rdkafka crate, builds with the gcc and make a fresh machine has, and
# OpenSSL's headers.)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
for tool in kcat; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# systemd-analyze verifies the Debian package's unit, strace checks its
# syscall filter against a real run (tests/python/debian_package.py).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v strace >/dev/null 2>&1 || need+=(strace)
# Real shippers writing into the broker (tests/python/shippers.py): collectd's
# write_kafka and rsyslog's omkafka. collectd-core rather than collectd, which
# would bring a system collectd service along; write_kafka.so links librdkafka
# but collectd-core only suggests it.
[ -e /usr/lib/collectd/write_kafka.so ] || need+=(collectd-core)
dpkg -s librdkafka1 >/dev/null 2>&1 || need+=(librdkafka1)
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
dpkg -s rsyslog-kafka >/dev/null 2>&1 || need+=(rsyslog-kafka)
# Prometheus scrapes the broker and remote-writes into it
# (tests/python/prometheus.py); the test runs its own instance.
[ -x /usr/bin/prometheus ] || need+=(prometheus)
# librdkafka's TLS (the rdkafka crate's `ssl` feature) builds against
# OpenSSL found by pkg-config; the TLS tests make certificates with openssl.
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Network namespaces cut one cluster node off (tests/python/cluster_partition.py).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt

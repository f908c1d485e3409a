#!/usr/bin/env bash
# A local Sluice cluster on one machine, for trying cluster mode and for
# benchmarks: `start [N]` starts N nodes (default 3, all controller voters)
# in ./sluice-cluster/, `stop` stops them (SIGTERM: each hands its
# partitions over before it exits), `status` shows the brokers and leaders.
#
# Node i (1-based) serves Kafka on 127.0.0.1:(9091+i), its controller on
# 127.0.0.1:(9191+i) and its replication links from 127.0.0.1:(9300+10*i)
# (one port per shard). SLUICE_CLUSTER_DIR, SLUICE_BIN and SLUICE_CORES
# (shards per node, default 1; one-shard nodes are pinned to CPUs round
# robin) override the defaults; extra arguments after N go to every
# `sluice serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${SLUICE_CLUSTER_DIR:-./sluice-cluster}"
bin="${SLUICE_BIN:-target/release/sluice}"
cores="${SLUICE_CORES:-1}"

start() {
    local n="${1:-3}"
    shift || true
    if [ ! -x "$bin" ]; then
        cargo build --release -p broker --bin sluice
    fi
    # glommio registers its io buffers as locked memory.
    ulimit -l unlimited 2>/dev/null || true
    mkdir -p "$dir"
    local voters=""
    for i in $(seq 1 "$n"); do
        voters="${voters:+$voters,}$i@127.0.0.1:$((9191 + i))"
    done
    local ncpu
    ncpu="$(nproc)"
    for i in $(seq 1 "$n"); do
        # One-shard nodes each get their own CPU, round robin, rather than
        # all pinning to the first.
        local pin=()
        if [ "$cores" = 1 ]; then
            pin=(--cpus "$(((i - 1) % ncpu))")
        fi
        "$bin" serve --node-id "$i" --data-dir "$dir/node$i" \
            --listen "127.0.0.1:$((9091 + i))" \
            --controller-listen "127.0.0.1:$((9191 + i))" \
            --controller-voters "$voters" \
            --link-listen "127.0.0.1:$((9300 + 10 * i))" \
            --metrics-listen "127.0.0.1:$((9643 + i))" \
            --cores "$cores" "${pin[@]}" "$@" >>"$dir/node$i.log" 2>&1 &
        echo $! >"$dir/node$i.pid"
    done
    # Each node listens once a controller majority is up and it joined.
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$((9091 + i))") 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
    done
    echo "started $n nodes; bootstrap: 127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094; logs in $dir"
}

stop() {
    local pids=()
    for f in "$dir"/node*.pid; do
        [ -e "$f" ] || continue
        local pid
        pid="$(cat "$f")"
        if kill -TERM "$pid" 2>/dev/null; then
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    echo "stopped ${#pids[@]} nodes"
}

status() {
    "$bin" cluster info --bootstrap 127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094
}

case "${1:-}" in
start) shift; start "$@" ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start [N] [serve flags...] | stop | status" >&2
    exit 2
    ;;
esac

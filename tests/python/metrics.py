"""Metrics endpoint check for Sluice.

Starts a real `sluice` process with its metrics endpoint on a free port,
scrapes /metrics with Prometheus' own text-format parser before and after a
workload (confluent-kafka produces to a topic, a consumer group reads part
of it and commits), and checks that the counters moved by the right
amounts, that partition offsets and group lag match what was produced and
committed, that histograms are well formed, and that /health, unknown
paths, bad and oversized requests get the right status.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import math
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker, free_port  # noqa: E402

TOPIC = "metrics-t"
PARTITIONS = 2
RECORDS = 300
CONSUMED = 200
GROUP = "metrics-g"


def log(msg):
    print(f"[metrics] {msg}", flush=True)


class MetricsBroker(Broker):
    """compat's Broker, started with extra flags."""

    def __init__(self, data_dir, extra):
        super().__init__(data_dir, extra_args=extra)


def http(port, path, raw=None):
    """(status, body) of one request; `raw` sends those bytes instead."""
    if raw is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[-1].decode()


def scrape(port):
    status, text = http(port, "/metrics")
    assert status == 200, (status, text)
    samples = {}
    families = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def check_histograms(families):
    checked = 0
    for fam in families.values():
        if fam.type != "histogram":
            continue
        series = {}
        for s in fam.samples:
            base = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(base, {"buckets": [], "count": None, "sum": None})
            if s.name.endswith("_bucket"):
                series[base]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[base]["count"] = s.value
            elif s.name.endswith("_sum"):
                series[base]["sum"] = s.value
        for labels, h in series.items():
            buckets = sorted(h["buckets"])
            assert buckets and math.isinf(buckets[-1][0]), (fam.name, labels)
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{fam.name}{labels}: buckets not monotonic"
            assert buckets[-1][1] == h["count"], f"{fam.name}{labels}: +Inf != count"
            assert h["sum"] is not None and h["sum"] >= 0
            checked += 1
    return checked


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-metrics-") as tmp:
        mport = free_port()
        broker = MetricsBroker(Path(tmp) / "data",
                               ["--metrics-listen", f"127.0.0.1:{mport}", "--cores", "2"])
        broker.start()
        try:
            run(broker, mport)
        finally:
            broker.stop()
    log("ok")


def run(broker, mport):
    status, body = http(mport, "/health")
    assert (status, body) == (200, "ok\n"), (status, body)
    assert http(mport, "/nope")[0] == 404
    assert http(mport, None, raw=b"GARBAGE\r\n\r\n")[0] == 400
    assert http(mport, None, raw=b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")[0] == 400
    assert http(mport, None, raw=b"POST /metrics HTTP/1.1\r\n\r\n")[0] == 405

    admin = AdminClient({"bootstrap.servers": broker.addr})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        f.result(timeout=15)

    fam0, before = scrape(mport)
    produce_before = value(before, "sluice_requests_total", api="Produce")
    bytes_in_before = value(before, "sluice_bytes_in_total")

    sent_bytes = 0
    producer = Producer({"bootstrap.servers": broker.addr, "linger.ms": 0,
                         "batch.num.messages": 1, "acks": "all"})
    delivered = []
    for i in range(RECORDS):
        payload = f"record-{i:05d}".encode() * 4
        sent_bytes += len(payload)
        producer.produce(TOPIC, payload, partition=i % PARTITIONS,
                         on_delivery=lambda err, m: delivered.append(err))
        producer.poll(0)
        # One record per request: the count of Produce requests is then known.
        producer.flush(10)
    assert len(delivered) == RECORDS and not any(delivered), delivered[:3]

    consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": GROUP,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    got = 0
    deadline = time.time() + 20
    while got < RECORDS and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            got += 1
    assert got == RECORDS, got
    per_partition = CONSUMED // PARTITIONS
    consumer.commit(offsets=[TopicPartition(TOPIC, p, per_partition) for p in range(PARTITIONS)],
                    asynchronous=False)
    consumer.close()

    families, after = scrape(mport)
    produced = value(after, "sluice_requests_total", api="Produce") - produce_before
    assert produced == RECORDS, f"Produce requests counted {produced}, sent {RECORDS}"
    bytes_in = value(after, "sluice_bytes_in_total") - bytes_in_before
    assert bytes_in >= sent_bytes, (bytes_in, sent_bytes)
    assert value(after, "sluice_bytes_out_total") > 0
    assert value(after, "sluice_requests_total", api="Fetch") > 0
    assert value(after, "sluice_requests_total", api="OffsetCommit") >= 1
    assert value(after, "sluice_request_duration_seconds_count", api="Produce") == \
        value(after, "sluice_requests_total", api="Produce")
    assert value(after, "sluice_connections_accepted_total") >= 3
    for p in range(PARTITIONS):
        end = value(after, "sluice_partition_log_end_offset", topic=TOPIC, partition=p)
        hw = value(after, "sluice_partition_high_watermark", topic=TOPIC, partition=p)
        assert end == hw == RECORDS // PARTITIONS, (p, end, hw)
        assert value(after, "sluice_partition_log_start_offset", topic=TOPIC, partition=p) == 0
        assert value(after, "sluice_partition_size_bytes", topic=TOPIC, partition=p) > 0
        assert value(after, "sluice_group_committed_offset", group=GROUP, topic=TOPIC,
                     partition=p) == per_partition
        lag = value(after, "sluice_group_lag", group=GROUP, topic=TOPIC, partition=p)
        assert lag == RECORDS // PARTITIONS - per_partition, (p, lag)
    assert value(after, "sluice_under_replicated_partitions") == 0
    for shard in range(2):
        assert value(after, "sluice_shard_serving", shard=shard) == 1
        assert ("sluice_shard_busy_seconds_total", (("shard", str(shard)),)) in after
    assert "sluice_fsync_duration_seconds" in families
    n = check_histograms(families)
    assert n >= 4, n
    status, body = http(mport, "/health")
    assert (status, body) == (200, "ok\n"), (status, body)
    log(f"{RECORDS} produce requests, {int(bytes_in)} bytes in, lag "
        f"{RECORDS - CONSUMED} over {PARTITIONS} partitions, {n} histograms checked")


if __name__ == "__main__":
    main()

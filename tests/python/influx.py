"""Influx line-protocol ingest check for Sluice.

Starts a real `sluice` process with its Influx HTTP and TCP listeners on free
ports, writes points with InfluxData's own Python client (/api/v2/write, gzip
on), with plain HTTP (/write, InfluxDB 1 style, precision=ms) and over plain
TCP, then consumes the topic with confluent-kafka and checks that every
point arrived exactly once as JSON, keyed by its canonical series, one
series in one partition and in write order. A malformed body gets 400 naming
the line and stores nothing (end offsets unchanged); an oversized one 413.
/metrics counts the points stored and the lines refused.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import json
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker, free_port  # noqa: E402

TOPIC = "influx-t"
PARTITIONS = 3
SERIES = 8
V2_POINTS = 4000
V1_POINTS = 400
TCP_POINTS = 400
BODY_MAX = 1 << 20
BASE_NS = 1_700_000_000_000_000_000


def log(msg):
    print(f"[influx] {msg}", flush=True)


def post(port, path, body, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def end_offsets(consumer):
    out = []
    for p in range(PARTITIONS):
        _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
        out.append(high)
    return out


def write_v2(port):
    """InfluxData's client: SYNCHRONOUS writes of Point objects, gzip on."""
    with InfluxDBClient(url=f"http://127.0.0.1:{port}", token="ignored", org="o",
                        enable_gzip=True) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        batch = []
        start = time.perf_counter()
        for i in range(V2_POINTS):
            s = i % SERIES
            batch.append(Point("cpu").tag("host", f"h{s}").tag("dc", "west x,y")
                         .field("seq", i).field("load", i / 7).field("note", f'say "{i}"')
                         .field("up", i % 2 == 0).time(BASE_NS + i, WritePrecision.NS))
            if len(batch) == 1000:
                api.write(bucket="b", record=batch)
                batch = []
        if batch:
            api.write(bucket="b", record=batch)
        took = time.perf_counter() - start
    log(f"influxdb-client: {V2_POINTS} points in {took:.2f} s "
        f"({V2_POINTS / took:.0f} points/s, batches of 1000, gzip)")


def write_v1(port):
    lines = [f"mem,host=h{i % SERIES} seq={i}i,free={i * 3}u {1_700_000_000_000 + i}"
             for i in range(V1_POINTS)]
    for start in range(0, V1_POINTS, 100):
        body = ("\n".join(lines[start:start + 100]) + "\n").encode()
        status, text = post(port, "/write?db=x&precision=ms", body)
        assert status == 204, (status, text)


def write_tcp(port):
    lines = [f"disk,host=h{i % SERIES},dev=sda seq={i}i {BASE_NS + i}" for i in range(TCP_POINTS)]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"this is not line protocol\n")  # counted and logged, not fatal
        # Uneven pieces, so lines straddle reads.
        data = ("\n".join(lines) + "\n").encode()
        for i in range(0, len(data), 997):
            s.sendall(data[i:i + 997])


def expected():
    """(measurement, series key, seq) of every point written, in order."""
    out = []
    for i in range(V2_POINTS):
        out.append(("cpu", f"cpu,dc=west\\ x\\,y,host=h{i % SERIES}", i))
    for i in range(V1_POINTS):
        out.append(("mem", f"mem,host=h{i % SERIES}", i))
    for i in range(TCP_POINTS):
        out.append(("disk", f"disk,dev=sda,host=h{i % SERIES}", i))
    return out


def consume_all(broker, total):
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": "influx-check",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    got = []
    deadline = time.time() + 20
    while len(got) < total and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append(m)
    # Anything beyond the expected count would be a duplicate.
    extra = c.consume(num_messages=100, timeout=1.0)
    c.close()
    return got + [m for m in extra if not m.error()]


def check_records(records):
    want = expected()
    assert len(records) == len(want), (len(records), len(want))
    seen = set()
    partition_of = {}
    last_seq = {}
    for m in records:
        key = m.key().decode()
        v = json.loads(m.value())
        seq = v["fields"]["seq"]
        ident = (v["measurement"], key, seq)
        assert ident not in seen, f"duplicate {ident}"
        seen.add(ident)
        # A series lives in one partition and keeps its order there.
        assert partition_of.setdefault(key, m.partition()) == m.partition(), key
        assert last_seq.get(key, -1) < seq, (key, last_seq.get(key), seq)
        last_seq[key] = seq
        ts_type, ts_ms = m.timestamp()
        assert ts_ms == v["timestamp_ns"] // 1_000_000, (ts_ms, v)
        if v["measurement"] == "cpu":
            assert v["tags"] == {"host": f"h{seq % SERIES}", "dc": "west x,y"}, v
            assert v["fields"]["note"] == f'say "{seq}"' and v["fields"]["up"] == (seq % 2 == 0)
            assert v["timestamp_ns"] == BASE_NS + seq
        elif v["measurement"] == "mem":
            assert v["fields"]["free"] == seq * 3
            assert v["timestamp_ns"] == (1_700_000_000_000 + seq) * 1_000_000
    assert seen == set(want), "points missing"
    used = sorted(set(partition_of.values()))
    log(f"{len(records)} records, {len(partition_of)} series over partitions {used}")


def run(broker, http_port, tcp_port, mport):
    write_v2(http_port)
    write_v1(http_port)
    write_tcp(tcp_port)
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": "influx-w"})
    total = V2_POINTS + V1_POINTS + TCP_POINTS
    deadline = time.time() + 15
    while sum(end_offsets(c)) < total and time.time() < deadline:
        time.sleep(0.1)  # the TCP listener answers nothing: wait for its points
    before = end_offsets(c)
    assert sum(before) == total, (before, total)

    bad = b"cpu,host=a v=1\n\n# comment\ncpu,host=a v=2 3\ncpu,host=a v=\n"
    status, text = post(http_port, "/api/v2/write?bucket=b&org=o", bad)
    assert status == 400, (status, text)
    err = json.loads(text)
    assert err["code"] == "invalid" and "line 5" in err["message"], err
    status, text = post(http_port, "/api/v2/write?bucket=b", b"x" * (BODY_MAX + 1))
    assert status == 413, (status, text)
    status, _ = post(http_port, "/api/v2/write?bucket=b&precision=h", b"m v=1\n")
    assert status == 400
    assert end_offsets(c) == before, (end_offsets(c), before)
    c.close()
    check_records(consume_all(broker, total))
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        scraped = {line.split()[0]: float(line.split()[1]) for line in r.read().decode().splitlines()
                   if line.startswith("sluice_influx_")}
    # One bad TCP line, one 400 body; the bad precision is refused before parsing.
    assert scraped == {"sluice_influx_points_total": total,
                       "sluice_influx_lines_malformed_total": 2}, scraped


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-influx-") as tmp:
        http_port, tcp_port, mport = free_port(), free_port(), free_port()
        broker = Broker(Path(tmp) / "data", extra_args=[
            "--cores", "2", "--default-partitions", str(PARTITIONS),
            "--metrics-listen", f"127.0.0.1:{mport}",
            "--ingest-http-listen", f"127.0.0.1:{http_port}",
            "--influx-tcp-listen", f"127.0.0.1:{tcp_port}",
            "--influx-topic", TOPIC, "--ingest-body-bytes-max", str(BODY_MAX)])
        broker.start()
        idle = None
        try:
            run(broker, http_port, tcp_port, mport)
            # An idle keep-alive connection must not hold up shutdown.
            idle = socket.create_connection(("127.0.0.1", http_port))
            idle.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(4096).startswith(b"HTTP/1.1 204"), "ping"
            start = time.time()
        finally:
            broker.stop()
            if idle:
                idle.close()
                log(f"stopped in {time.time() - start:.2f} s with an idle connection open")
    log("ok")


if __name__ == "__main__":
    main()

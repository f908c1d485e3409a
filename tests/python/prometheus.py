"""Prometheus remote-write ingest check for Sluice.

1. The loop on one host: a real Prometheus (Debian's package) scrapes
   Sluice's own /metrics every second and remote-writes what it scraped into
   Sluice's ingest listener. The records in the topic are checked: JSON with
   name, labels and samples, keyed by the series in Prometheus notation, one
   series in one partition with its samples in time order, and as many
   samples stored as Prometheus reported sent and Sluice counted.
2. The protocol driven with Google's protobuf library (messages built from
   the remote-write .proto definitions at run time, snappy by cramjam):
   1.0 and 2.0 requests come back exactly, non-finite values and escaped
   label values included; a 2.0 answer says how many samples were written.
3. Malformed requests (not snappy, not a WriteRequest, a dangling 2.0
   symbol reference, no Content-Encoding, oversized) get 400/413/415 and the
   topic's end offsets do not move.
4. A full partition queue: with `--ingest-queue-bytes-max 1024` and
   fsync-always topics, concurrent remote-writers get 503 (what Prometheus
   retries) and Influx writers 429, both with Retry-After, for some writes;
   exactly the series and points of the writes answered 204 are in the
   topics (raw format: protobuf TimeSeries, line protocol), none of the
   refused ones.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cramjam
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker, free_port  # noqa: E402

TOPIC = "prom"
PARTITIONS = 3
BODY_MAX = 1 << 20
DEADLINE_S = 60


def log(msg):
    print(f"[prometheus] {msg}", flush=True)


# --- remote-write messages, from the .proto definitions -------------------

def _messages():
    """WriteRequest (1.0) and Request (2.0) classes, built from descriptors
    equivalent to prometheus/prompb/remote.proto+types.proto and
    prometheus/prompb/io/prometheus/write/v2/types.proto (fields Sluice
    reads; the others are what a real sender may add and are skipped)."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="rw_test.proto", package="rwtest", syntax="proto3")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".rwtest.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("Label", [("name", 1, F.TYPE_STRING, opt, None), ("value", 2, F.TYPE_STRING, opt, None)])
    msg("Sample", [("value", 1, F.TYPE_DOUBLE, opt, None), ("timestamp", 2, F.TYPE_INT64, opt, None)])
    msg("Exemplar", [("labels", 1, F.TYPE_MESSAGE, rep, "Label"),
                     ("value", 2, F.TYPE_DOUBLE, opt, None), ("timestamp", 3, F.TYPE_INT64, opt, None)])
    msg("TimeSeries", [("labels", 1, F.TYPE_MESSAGE, rep, "Label"),
                       ("samples", 2, F.TYPE_MESSAGE, rep, "Sample"),
                       ("exemplars", 3, F.TYPE_MESSAGE, rep, "Exemplar")])
    msg("MetricMetadata", [("type", 1, F.TYPE_INT32, opt, None),
                           ("metric_family_name", 2, F.TYPE_STRING, opt, None),
                           ("help", 4, F.TYPE_STRING, opt, None)])
    msg("WriteRequest", [("timeseries", 1, F.TYPE_MESSAGE, rep, "TimeSeries"),
                         ("metadata", 3, F.TYPE_MESSAGE, rep, "MetricMetadata")])
    msg("SeriesV2", [("labels_refs", 1, F.TYPE_UINT32, rep, None),
                     ("samples", 2, F.TYPE_MESSAGE, rep, "Sample"),
                     ("created_timestamp", 6, F.TYPE_INT64, opt, None)])
    msg("RequestV2", [("symbols", 4, F.TYPE_STRING, rep, None),
                      ("timeseries", 5, F.TYPE_MESSAGE, rep, "SeriesV2")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"rwtest.{n}"))  # noqa: E731
    return get("WriteRequest"), get("RequestV2"), get("TimeSeries")


WriteRequest, RequestV2, TimeSeries = _messages()

V1_TYPE = "application/x-protobuf"
V2_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"


def series_key(labels):
    """The key Sluice gives a series: name{l="v",...}, labels sorted."""
    name = labels.get("__name__", "")
    esc = lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # noqa: E731
    inner = ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def post(port, body, content_type=V1_TYPE, encoding="snappy", path="/api/v1/write"):
    headers = {"Content-Type": content_type, "X-Prometheus-Remote-Write-Version": "0.1.0"}
    if encoding:
        headers["Content-Encoding"] = encoding
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def snappy(data):
    return bytes(cramjam.snappy.compress_raw(data))


def end_offsets(broker, topic, partitions):
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": "prom-w"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)]
    finally:
        c.close()


def consume(broker, topic, partitions, total=None, quiet_s=2.0):
    """Every record of `topic` from the start (until `total`, or until
    nothing new arrives for `quiet_s`)."""
    c = Consumer({"bootstrap.servers": broker.addr, "group.id": f"prom-read-{time.time()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.time() + DEADLINE_S
    last_new = time.time()
    while time.time() < deadline:
        if total is not None and len(out) >= total:
            break
        if total is None and time.time() - last_new > quiet_s:
            break
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        out.append(m)
        last_new = time.time()
    c.close()
    return out


def scrape(port, prefix):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# --- 1. Prometheus scrapes Sluice and writes back into it -----------------

def prometheus_loop(broker, http_port, mport, tmp):
    prom_port = free_port()
    conf = Path(tmp) / "prometheus.yml"
    conf.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sluice
    static_configs:
      - targets: ['127.0.0.1:{mport}']
remote_write:
  - url: http://127.0.0.1:{http_port}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      max_samples_per_send: 2000
""")
    log_file = open(Path(tmp) / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={tmp}/tsdb",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log_file, stderr=subprocess.STDOUT)
    up_key = f'up{{instance="127.0.0.1:{mport}",job="sluice"}}'
    try:
        # Enough scrapes to see one series' samples follow each other.
        deadline = time.time() + DEADLINE_S
        while time.time() < deadline:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}"
            stored = scrape(mport, "sluice_prometheus_samples_total").get(
                "sluice_prometheus_samples_total", 0)
            if stored > 0:
                ups = [m for m in consume(broker, TOPIC, PARTITIONS, quiet_s=0.5)
                       if m.key().decode() == up_key]
                if len(ups) >= 4:
                    break
            time.sleep(1)
        else:
            raise AssertionError("Prometheus did not write four scrapes into Sluice in time; "
                                 f"see {tmp}/prometheus.log")
        sent = scrape(prom_port, "prometheus_remote_storage_")
        failed = sum(v for k, v in sent.items() if "failed" in k and k.startswith(
            "prometheus_remote_storage_samples_failed_total"))
        sent_total = sum(v for k, v in sent.items()
                         if k.startswith("prometheus_remote_storage_samples_total"))
        assert failed == 0, f"Prometheus reports {failed} failed samples"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
    records = consume(broker, TOPIC, PARTITIONS)
    stored = scrape(mport, "sluice_prometheus_samples_total")["sluice_prometheus_samples_total"]
    samples = 0
    partition_of, last_ts, names = {}, {}, set()
    for m in records:
        key = m.key().decode()
        v = json.loads(m.value())
        labels = dict(v["labels"], __name__=v["name"])
        assert key == series_key(labels), (key, v)
        assert partition_of.setdefault(key, m.partition()) == m.partition(), key
        ts = [s["timestamp_ms"] for s in v["samples"]]
        assert ts == sorted(ts) and m.timestamp()[1] == ts[0], (key, ts, m.timestamp())
        assert last_ts.get(key, -1) < ts[0], (key, last_ts.get(key), ts)
        last_ts[key] = ts[-1]
        for s in v["samples"]:
            assert isinstance(s["value"], (int, float)) or s["value"] in ("NaN", "+Inf", "-Inf"), s
        samples += len(v["samples"])
        names.add(v["name"])
        if v["name"] == "up":
            assert all(s["value"] == 1 for s in v["samples"]), v
    assert samples == stored, (samples, stored)
    assert samples >= sent_total > 0, (samples, sent_total)
    for want in ("up", "scrape_duration_seconds", "sluice_connections_accepted_total",
                 "sluice_requests_total", "sluice_prometheus_samples_total"):
        assert want in names, f"no {want} series in the topic ({sorted(names)[:20]} ...)"
    log(f"Prometheus loop: {len(records)} records, {samples} samples of {len(last_ts)} series "
        f"over partitions {sorted(set(partition_of.values()))}; Prometheus had sent "
        f"{sent_total:.0f} when read, 0 failed")
    return samples


# --- 2. The protocol, from the .proto definitions -------------------------

def exact_round_trip(broker, http_port, stored_before):
    before = end_offsets(broker, TOPIC, PARTITIONS)
    req = WriteRequest()
    want = {}
    for i, (value, shown) in enumerate([(1.5, 1.5), (math.nan, "NaN"), (math.inf, "+Inf"),
                                        (-math.inf, "-Inf")]):
        ts = req.timeseries.add()
        labels = {"__name__": "rt_test", "i": str(i), "room": 'say "hi"\\n\nok'}
        for k, v in labels.items():
            ts.labels.add(name=k, value=v)
        for t in range(3):
            ts.samples.add(value=value, timestamp=1_700_000_000_000 + t)
        want[series_key(labels)] = (labels, shown)
    md = req.metadata.add()  # a field Sluice does not store
    md.metric_family_name, md.help = "rt_test", "skipped"
    status, _, text = post(http_port, snappy(req.SerializeToString()))
    assert status == 204, (status, text)

    v2 = RequestV2()
    v2.symbols.extend(["", "__name__", "rt_v2", "job", "a", "b"])
    ts = v2.timeseries.add()
    ts.labels_refs.extend([1, 2, 3, 4])
    ts.samples.add(value=7.0, timestamp=5)
    ts.samples.add(value=8.0, timestamp=6)
    ts.created_timestamp = 1
    ts = v2.timeseries.add()
    ts.labels_refs.extend([1, 2, 3, 5])
    ts.samples.add(value=9.0, timestamp=7)
    status, headers, text = post(http_port, snappy(v2.SerializeToString()), V2_TYPE)
    assert status == 204, (status, text)
    assert headers.get("X-Prometheus-Remote-Write-Samples-Written") == "3", headers
    want['rt_v2{job="a"}'] = ({"__name__": "rt_v2", "job": "a"}, None)
    want['rt_v2{job="b"}'] = ({"__name__": "rt_v2", "job": "b"}, None)

    after = end_offsets(broker, TOPIC, PARTITIONS)
    assert sum(after) - sum(before) == len(want), (before, after)
    got = {}
    for m in consume(broker, TOPIC, PARTITIONS, total=sum(after)):
        if m.offset() >= before[m.partition()]:
            got[m.key().decode()] = json.loads(m.value())
    assert set(got) == set(want), (sorted(got), sorted(want))
    for key, (labels, shown) in want.items():
        v = got[key]
        assert dict(v["labels"], __name__=v["name"]) == labels, v
        if labels["__name__"] == "rt_test":
            assert [s["value"] for s in v["samples"]] == [shown] * 3, v
            assert [s["timestamp_ms"] for s in v["samples"]] == [1_700_000_000_000 + t
                                                                  for t in range(3)]
    assert [s["value"] for s in got['rt_v2{job="a"}']["samples"]] == [7.0, 8.0]
    log("1.0 and 2.0 requests round-trip exactly (NaN/±Inf, escaped labels, 2.0 written count)")
    return stored_before + 4 * 3 + 3


# --- 3. Malformed requests store nothing ----------------------------------

def malformed(broker, http_port, mport):
    before = end_offsets(broker, TOPIC, PARTITIONS)
    refused_before = scrape(mport, "sluice_prometheus_writes_malformed_total").get(
        "sluice_prometheus_writes_malformed_total", 0)
    good = WriteRequest()
    ts = good.timeseries.add()
    ts.labels.add(name="__name__", value="m")
    ts.samples.add(value=1, timestamp=1)
    bad_ref = RequestV2()
    bad_ref.symbols.extend(["", "__name__"])
    ts = bad_ref.timeseries.add()
    ts.labels_refs.extend([1, 9])
    ts.samples.add(value=1, timestamp=1)
    dup = WriteRequest()
    ts = dup.timeseries.add()
    ts.labels.add(name="__name__", value="a")
    ts.labels.add(name="__name__", value="b")
    ts.samples.add(value=1, timestamp=1)
    huge = WriteRequest()
    ts = huge.timeseries.add()
    ts.labels.add(name="__name__", value="x" * (BODY_MAX + 10))
    ts.samples.add(value=1, timestamp=1)
    cases = [
        ("not snappy", b"\xff" * 64, V1_TYPE, "snappy", 400),
        ("not a WriteRequest", snappy(b"\x0a\xff\xff\xff\xff\x0f"), V1_TYPE, "snappy", 400),
        ("dangling 2.0 symbol", snappy(bad_ref.SerializeToString()), V2_TYPE, "snappy", 400),
        ("repeated label", snappy(dup.SerializeToString()), V1_TYPE, "snappy", 400),
        ("no Content-Encoding", good.SerializeToString(), V1_TYPE, None, 415),
        ("JSON body", b"{}", "application/json", "snappy", 415),
        ("over the body limit", snappy(huge.SerializeToString()), V1_TYPE, "snappy", 413),
    ]
    for name, body, ctype, enc, want in cases:
        status, _, text = post(http_port, body, ctype, enc)
        assert status == want, f"{name}: {status} {text!r}"
        assert json.loads(text)["message"], name
    status, _, _ = post(http_port, b"", path="/api/v1/write", encoding="snappy",
                        content_type="application/x-protobuf;proto=x.Y")
    assert status == 415
    assert end_offsets(broker, TOPIC, PARTITIONS) == before
    refused = scrape(mport, "sluice_prometheus_writes_malformed_total")[
        "sluice_prometheus_writes_malformed_total"]
    assert refused - refused_before == 5, (refused, refused_before)  # the four 400s and the 413
    log(f"{len(cases) + 1} malformed requests refused (400/413/415), topic untouched")


# --- 4. A full partition queue answers 429 and loses nothing --------------

def full_queue(tmp):
    http_port, mport = free_port(), free_port()
    broker = Broker(Path(tmp) / "data-q", extra_args=[
        "--cores", "2", "--metrics-listen", f"127.0.0.1:{mport}",
        "--ingest-http-listen", f"127.0.0.1:{http_port}", "--prometheus-topic", "q",
        "--influx-topic", "qi", "--ingest-queue-bytes-max", "1024", "--ingest-format", "raw"])
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.addr})
        for name in ("q", "qi"):
            admin.create_topics([NewTopic(name, 1, 1, config={"sluice.fsync": "always"})])[
                name].result(30)
        writers, per_writer, series = 12, 25, 20
        acked, refused, errors = set(), [], []
        influx_acked, influx_refused = set(), []
        lock = threading.Lock()

        def influx_writer(w):
            for r in range(per_writer):
                body = "".join(f"q,w={w},r={r},s={s} v={s}i {1_700_000_000 + r}\n"
                               for s in range(series)).encode()
                req = urllib.request.Request(
                    f"http://127.0.0.1:{http_port}/api/v2/write?bucket=b&precision=s",
                    data=body, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, headers = resp.status, dict(resp.headers)
                except urllib.error.HTTPError as e:
                    status, headers = e.code, dict(e.headers)
                with lock:
                    if status == 204:
                        influx_acked.add((w, r))
                    elif status == 429:
                        influx_refused.append((w, r, headers.get("Retry-After")))
                    else:
                        errors.append(("influx", w, r, status))

        def writer(w):
            for r in range(per_writer):
                req = WriteRequest()
                for s in range(series):
                    ts = req.timeseries.add()
                    for k, v in (("__name__", "q_test"), ("w", str(w)), ("r", str(r)),
                                 ("s", str(s))):
                        ts.labels.add(name=k, value=v)
                    ts.samples.add(value=float(r), timestamp=1_700_000_000_000 + r)
                status, headers, text = post(http_port, snappy(req.SerializeToString()))
                with lock:
                    if status == 204:
                        acked.add((w, r))
                    elif status == 503:
                        refused.append((w, r, headers.get("Retry-After")))
                    else:
                        errors.append((w, r, status, text))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        threads += [threading.Thread(target=influx_writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DEADLINE_S * 2)
        assert not errors, errors[:3]
        assert len(acked) + len(refused) == writers * per_writer
        assert len(influx_acked) + len(influx_refused) == writers * per_writer
        assert refused, "no remote-write was refused with 503 under a 1 KiB queue bound"
        assert influx_refused, "no Influx write was refused with 429 under a 1 KiB queue bound"
        assert all(ra == "1" for _, _, ra in refused + influx_refused), (refused + influx_refused)[:3]
        stored = {}
        total = end_offsets(broker, "q", 1)[0]
        for m in consume(broker, "q", 1, total=total):
            ts = TimeSeries.FromString(m.value())
            labels = {lab.name: lab.value for lab in ts.labels}
            assert [lab.name for lab in ts.labels] == sorted(labels), "raw labels not sorted"
            assert m.key().decode() == series_key(labels)
            stored.setdefault((int(labels["w"]), int(labels["r"])), set()).add(int(labels["s"]))
        assert set(stored) == acked, (
            f"{len(acked - set(stored))} acknowledged writes missing, "
            f"{len(set(stored) - acked)} refused writes stored")
        assert all(v == set(range(series)) for v in stored.values()), "a write stored in part"
        points = {}
        total = end_offsets(broker, "qi", 1)[0]
        for m in consume(broker, "qi", 1, total=total):
            line = m.value().decode()  # raw: the line as sent
            tags = dict(kv.split("=") for kv in line.split(" ")[0].split(",")[1:])
            points.setdefault((int(tags["w"]), int(tags["r"])), set()).add(int(tags["s"]))
        assert set(points) == influx_acked, (
            f"{len(influx_acked - set(points))} acknowledged Influx writes missing, "
            f"{len(set(points) - influx_acked)} refused ones stored")
        assert all(v == set(range(series)) for v in points.values()), "an Influx write stored in part"
        busy = scrape(mport, "sluice_ingest_writes_busy_total")["sluice_ingest_writes_busy_total"]
        assert busy == len(refused) + len(influx_refused), (busy, len(refused), len(influx_refused))
        log(f"full queue: remote-write {len(acked)} stored whole, {len(refused)} refused with 503; "
            f"Influx {len(influx_acked)} stored whole, {len(influx_refused)} refused with 429 "
            f"(Retry-After: 1 on both); none refused stored, none acknowledged lost")
        broker.stop()
    finally:
        broker.kill()


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-prom-") as tmp:
        http_port, mport = free_port(), free_port()
        broker = Broker(Path(tmp) / "data", extra_args=[
            "--cores", "2", "--default-partitions", str(PARTITIONS),
            "--metrics-listen", f"127.0.0.1:{mport}",
            "--ingest-http-listen", f"127.0.0.1:{http_port}",
            "--prometheus-topic", TOPIC, "--ingest-body-bytes-max", str(BODY_MAX)])
        broker.start()
        try:
            stored = prometheus_loop(broker, http_port, mport, tmp)
            exact_round_trip(broker, http_port, stored)
            malformed(broker, http_port, mport)
            broker.stop()
        finally:
            broker.kill()
        full_queue(tmp)
    log("ok")


if __name__ == "__main__":
    main()

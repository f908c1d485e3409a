"""Client compatibility check for Sluice.

Starts a real `sluice` process and drives it with four independent Kafka
clients: kcat (librdkafka's CLI), confluent-kafka, kafka-python and aiokafka.
Each creates topics, produces keyed records with headers and timestamps
across partitions with every compression codec, and reads them back from
the beginning, from an offset and from a timestamp; the records must come
back exactly. Then topics are deleted, the broker restarted, and everything
that was kept is read again.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
RECORDS = 120
BASE_TS = 1_700_000_000_000
DEADLINE_S = 30


def log(msg):
    print(f"[compat] {msg}", flush=True)


_handed_out = set()


def free_port():
    """A free loopback port not handed out before in this process: the
    kernel may give a just-closed ephemeral port again, and a script asking
    for a listener's and a metrics port in a row must not get one twice."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port not handed out already")


class Broker:
    def __init__(self, data_dir, advertise_port=None, extra_args=()):
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        if "--metrics-listen" not in self.extra_args:
            # Brokers of different tests must not fight over the default
            # metrics port: an ephemeral one each.
            self.extra_args += ["--metrics-listen", "127.0.0.1:0"]
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        # Clients are told to come back here (a proxy may sit in between).
        self.advertised = f"127.0.0.1:{advertise_port or self.port}"
        self.proc = None

    def binary(self):
        env = os.environ.get("SLUICE_BIN")
        if env:
            return env
        for profile in ("debug", "release"):
            p = ROOT / "target" / profile / "sluice"
            if p.exists():
                return str(p)
        subprocess.run(["cargo", "build", "-p", "broker", "--bin", "sluice"], cwd=ROOT, check=True)
        return str(ROOT / "target" / "debug" / "sluice")

    def start(self):
        args = [self.binary(), "serve", "--listen", self.addr, "--advertise", self.advertised,
                "--data-dir", str(self.data_dir)] + self.extra_args
        self.log_file = open(Path(self.data_dir).parent / "sluice.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT)
        start = time.time()
        while time.time() - start < DEADLINE_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sluice did not start listening")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=DEADLINE_S)
        self.log_file.close()
        assert code == 0, f"sluice exited with {code} on SIGTERM"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def expected_records(client, codec):
    """The records a client produces: partition i % 3, keyed, two headers."""
    out = []
    for i in range(RECORDS):
        out.append({
            "partition": i % PARTITIONS,
            "key": f"key-{i % 17}".encode(),
            "value": f"{client}/{codec}/record-{i}/".encode() * (1 + i % 5),
            "headers": [("seq", str(i).encode()), ("client", client.encode())],
            "timestamp": BASE_TS + i * 1000,
        })
    return out


def by_partition(records):
    parts = {p: [] for p in range(PARTITIONS)}
    for r in records:
        parts[r["partition"]].append(r)
    return parts


def compare(client, topic, want, got, check_ts=True):
    """Records per partition, in order, offsets dense from the start."""
    want_p = by_partition(want)
    for p in range(PARTITIONS):
        g = sorted([r for r in got if r["partition"] == p], key=lambda r: r["offset"])
        w = want_p[p]
        assert len(g) == len(w), f"{client} {topic} p{p}: got {len(g)} records, want {len(w)}"
        for n, (a, b) in enumerate(zip(w, g)):
            assert b["offset"] == n, f"{client} {topic} p{p}: offset {b['offset']} at position {n}"
            assert a["key"] == b["key"], f"{client} {topic} p{p}#{n}: key {b['key']!r}"
            assert a["value"] == b["value"], f"{client} {topic} p{p}#{n}: value differs"
            assert list(a["headers"]) == list(b["headers"]), f"{client} {topic} p{p}#{n}: headers {b['headers']}"
            if check_ts:
                assert a["timestamp"] == b["timestamp"], f"{client} {topic} p{p}#{n}: ts {b['timestamp']}"


# ---------------------------------------------------------------- confluent-kafka

def ck_admin(addr):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": addr})


def ck_create(addr, topics):
    from confluent_kafka.admin import NewTopic
    admin = ck_admin(addr)  # must outlive the futures
    fs = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics], operation_timeout=10)
    for t, f in fs.items():
        f.result(timeout=DEADLINE_S)


def ck_delete(addr, topics):
    admin = ck_admin(addr)  # must outlive the futures
    fs = admin.delete_topics(topics, operation_timeout=10)
    for t, f in fs.items():
        f.result(timeout=DEADLINE_S)


def ck_topics(addr):
    return set(ck_admin(addr).list_topics(timeout=10).topics.keys())


def ck_produce(addr, topic, codec, records):
    from confluent_kafka import Producer
    errors = []
    p = Producer({"bootstrap.servers": addr, "compression.type": codec, "linger.ms": 20, "acks": "all",
                  "enable.idempotence": codec in ("none", "zstd")})
    for r in records:
        p.produce(topic, key=r["key"], value=r["value"], partition=r["partition"],
                  headers=r["headers"], timestamp=r["timestamp"],
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(DEADLINE_S) == 0, "confluent-kafka: undelivered records"
    assert not errors, f"confluent-kafka delivery errors: {errors[:3]}"


def ck_consume(addr, topic, starts, count):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": addr, "group.id": f"compat-{topic}", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    out = []
    deadline = time.time() + DEADLINE_S
    while len(out) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), f"confluent-kafka consume error: {m.error()}"
        out.append({"partition": m.partition(), "offset": m.offset(), "key": m.key(), "value": m.value(),
                    "headers": m.headers() or [], "timestamp": m.timestamp()[1]})
    c.close()
    return out


def ck_offset_for_time(addr, topic, partition, ts):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": addr, "group.id": f"compat-t-{topic}"})
    [tp] = c.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=10)
    c.close()
    return tp.offset


# ---------------------------------------------------------------- kafka-python

def kp_produce(addr, topic, codec, records):
    from kafka import KafkaProducer
    # kafka-python 3 is idempotent by default (InitProducerId, sequences).
    p = KafkaProducer(bootstrap_servers=addr, compression_type=None if codec == "none" else codec,
                      linger_ms=20, acks="all")
    futures = [p.send(topic, key=r["key"], value=r["value"], partition=r["partition"],
                      headers=r["headers"], timestamp_ms=r["timestamp"]) for r in records]
    p.flush(DEADLINE_S)
    for f in futures:
        f.get(timeout=DEADLINE_S)
    p.close()


def kp_consume(addr, topic, starts, count):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=addr, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest")
    tps = {p: TopicPartition(topic, p) for p in starts}
    c.assign(list(tps.values()))
    for p, o in starts.items():
        c.seek(tps[p], o)
    out = []
    deadline = time.time() + DEADLINE_S
    while len(out) < count and time.time() < deadline:
        for tp, msgs in c.poll(timeout_ms=500).items():
            for m in msgs:
                out.append({"partition": m.partition, "offset": m.offset, "key": m.key, "value": m.value,
                            "headers": list(m.headers), "timestamp": m.timestamp})
    c.close()
    return out


def kp_offset_for_time(addr, topic, partition, ts):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=addr, group_id=None)
    tp = TopicPartition(topic, partition)
    res = c.offsets_for_times({tp: ts})
    c.close()
    return res[tp].offset if res[tp] else -1


def kp_create(addr, topics):
    from kafka.admin import KafkaAdminClient, NewTopic
    a = KafkaAdminClient(bootstrap_servers=addr)
    a.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    a.close()


def kp_delete(addr, topics):
    from kafka.admin import KafkaAdminClient
    a = KafkaAdminClient(bootstrap_servers=addr)
    a.delete_topics(topics)
    a.close()


# ---------------------------------------------------------------- aiokafka

def aio(coro):
    return asyncio.run(coro)


def ak_produce(addr, topic, codec, records):
    from aiokafka import AIOKafkaProducer

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=addr, compression_type=None if codec == "none" else codec,
                             linger_ms=20, acks="all")
        await p.start()
        try:
            futs = [await p.send(topic, key=r["key"], value=r["value"], partition=r["partition"],
                                 headers=r["headers"], timestamp_ms=r["timestamp"]) for r in records]
            for f in futs:
                await asyncio.wait_for(f, DEADLINE_S)
        finally:
            await p.stop()
    aio(go())


def ak_consume(addr, topic, starts, count):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go():
        c = AIOKafkaConsumer(bootstrap_servers=addr, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        out = []
        try:
            tps = {p: TopicPartition(topic, p) for p in starts}
            c.assign(list(tps.values()))
            for p, o in starts.items():
                c.seek(tps[p], o)
            deadline = time.time() + DEADLINE_S
            while len(out) < count and time.time() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    for m in msgs:
                        out.append({"partition": m.partition, "offset": m.offset, "key": m.key,
                                    "value": m.value, "headers": list(m.headers), "timestamp": m.timestamp})
        finally:
            await c.stop()
        return out
    return aio(go())


def ak_offset_for_time(addr, topic, partition, ts):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go():
        c = AIOKafkaConsumer(bootstrap_servers=addr, group_id=None)
        await c.start()
        try:
            tp = TopicPartition(topic, partition)
            res = await c.offsets_for_times({tp: ts})
            return res[tp].offset if res[tp] else -1
        finally:
            await c.stop()
    return aio(go())


def ak_create(addr, topics):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=addr)
        await a.start()
        try:
            await a.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
        finally:
            await a.close()
    aio(go())


def ak_delete(addr, topics):
    from aiokafka.admin import AIOKafkaAdminClient

    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=addr)
        await a.start()
        try:
            await a.delete_topics(topics)
        finally:
            await a.close()
    aio(go())


# ---------------------------------------------------------------- kcat

def kcat_produce(addr, topic, codec, records):
    # kcat sets headers per invocation and cannot set timestamps: one
    # invocation per record group sharing headers would be slow, so kcat
    # records carry a fixed header set and broker-assigned CreateTime.
    for p in range(PARTITIONS):
        lines = b"".join(r["key"] + b"\t" + r["value"] + b"\n" for r in records if r["partition"] == p)
        args = ["kcat", "-b", addr, "-t", topic, "-P", "-p", str(p), "-K", "\t", "-z", codec,
                "-H", "seq=kcat", "-H", "client=kcat", "-X", "acks=all"]
        subprocess.run(args, input=lines, check=True, timeout=DEADLINE_S)


def kcat_consume(addr, topic, starts, count):
    out = []
    for p, o in starts.items():
        args = ["kcat", "-b", addr, "-t", topic, "-C", "-p", str(p), "-o", str(o), "-e", "-J", "-q"]
        res = subprocess.run(args, capture_output=True, check=True, timeout=DEADLINE_S)
        for line in res.stdout.splitlines():
            m = json.loads(line)
            hs = m.get("headers") or []
            out.append({"partition": m["partition"], "offset": m["offset"],
                        "key": (m["key"] or "").encode(), "value": (m["payload"] or "").encode(),
                        "headers": [(hs[i], hs[i + 1].encode()) for i in range(0, len(hs), 2)],
                        "timestamp": m["ts"]})
    return out


def kcat_expected(records):
    return [dict(r, headers=[("seq", b"kcat"), ("client", b"kcat")]) for r in records]


# ---------------------------------------------------------------- the run

CLIENTS = {
    "kcat": (kcat_produce, kcat_consume, ck_offset_for_time, ck_create, ck_delete),
    "confluent": (ck_produce, ck_consume, ck_offset_for_time, ck_create, ck_delete),
    "kafkapython": (kp_produce, kp_consume, kp_offset_for_time, kp_create, kp_delete),
    "aiokafka": (ak_produce, ak_consume, ak_offset_for_time, ak_create, ak_delete),
}


def run_client(addr, client, kept):
    produce, consume, offset_for_time, create, delete = CLIENTS[client]
    topics = {codec: f"compat-{client}-{codec}" for codec in CODECS}
    create(addr, list(topics.values()))
    assert set(topics.values()) <= ck_topics(addr), f"{client}: created topics are listed"
    for codec, topic in topics.items():
        want = expected_records(client, codec)
        produce(addr, topic, codec, want)
        if client == "kcat":
            want = kcat_expected(want)
        got = consume(addr, topic, {p: 0 for p in range(PARTITIONS)}, len(want))
        compare(client, topic, want, got, check_ts=client != "kcat")
        # From an offset: partition 0 from offset 10.
        tail = consume(addr, topic, {0: 10}, len(by_partition(want)[0]) - 10)
        assert [r["offset"] for r in tail][:1] == [10], f"{client} {topic}: from offset 10 got {tail[:1]}"
        assert len(tail) == len(by_partition(want)[0]) - 10
        if client != "kcat":
            # From a timestamp: the record produced with timestamp ts in partition 1.
            target = by_partition(want)[1][7]
            off = offset_for_time(addr, topic, 1, target["timestamp"])
            assert off == 7, f"{client} {topic}: offsets_for_times gave {off}, want 7"
            off = offset_for_time(addr, topic, 1, target["timestamp"] - 1)
            assert off == 7, f"{client} {topic}: timestamp just before gave {off}, want 7"
        log(f"{client:12} {codec:7} {len(want)} records round-tripped")
    # Keep two topics for the restart check, delete the rest.
    keep = [topics["none"], topics["zstd"]]
    gone = [t for t in topics.values() if t not in keep]
    delete(addr, gone)
    deadline = time.time() + DEADLINE_S
    while set(gone) & ck_topics(addr) and time.time() < deadline:
        time.sleep(0.2)
    assert not set(gone) & ck_topics(addr), f"{client}: deleted topics still listed"
    for t in keep:
        kept[t] = client


def main():
    work = Path(tempfile.mkdtemp(prefix="sluice-compat-"))
    broker = Broker(work / "data")
    ok = False
    try:
        broker.start()
        log(f"sluice listening on {broker.addr}")
        kept = {}
        for client in CLIENTS:
            run_client(broker.addr, client, kept)
        broker.stop()
        log("broker stopped with SIGTERM (exit 0); restarting on the same data")
        broker.start()
        for topic, client in kept.items():
            codec = topic.rsplit("-", 1)[1]
            want = expected_records(client, codec)
            if client == "kcat":
                want = kcat_expected(want)
            got = ck_consume(broker.addr, topic, {p: 0 for p in range(PARTITIONS)}, len(want))
            compare("after restart", topic, want, got, check_ts=client != "kcat")
        log(f"after restart: {len(kept)} kept topics read back identically")
        broker.stop()
        ok = True
    finally:
        broker.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"broker log and data kept in {work}")
    log("all clients compatible")


if __name__ == "__main__":
    sys.exit(main())

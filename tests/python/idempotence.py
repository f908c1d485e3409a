"""Idempotent producers through a faulty network, and across a broker crash.

A TCP proxy on loopback sits between the clients and a real `sluice`
process (which advertises the proxy's address). Driven by a seed it prints,
the proxy cuts connections and delays the broker's answers at random while
an idempotent confluent-kafka producer (5 requests in flight) sends 100,000
numbered records over three partitions; halfway through, the broker is
killed with SIGKILL and started again on the same data. Producers retry
whatever was unanswered; the consumer must then see every number exactly
once, in order within each partition.

`SLUICE_IDEMPOTENCE_SEED` replays a run.
"""

import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compat import Broker, free_port  # noqa: E402


def log(msg):
    print(f"[idempotence] {msg}", flush=True)

RECORDS = 100_000
PARTITIONS = 3
TOPIC = "idempotence"


class FaultyProxy:
    """Forwards client connections to the broker, cutting some and delaying
    some answers. Runs its own asyncio loop in a thread."""

    def __init__(self, listen_port, seed):
        self.listen_port = listen_port
        self.upstream_port = None
        self.rng = random.Random(seed)
        self.cuts = 0
        self.delays = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        # Off while the topic is created; on for the producer's run.
        self.faults = False

    def start(self):
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.listen_port))
        self.ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, c_reader, c_writer):
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            c_writer.close()
            return
        # Each connection lives for a random number of bytes of answers
        # (a produce answer is about a hundred bytes).
        budget = self.rng.randint(100, 1_200) if self.faults else 1 << 62

        async def up():
            try:
                while data := await c_reader.read(65536):
                    b_writer.write(data)
                    await b_writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                b_writer.close()

        async def down():
            nonlocal budget
            try:
                while data := await b_reader.read(65536):
                    if self.faults and self.rng.random() < 0.02:
                        self.delays += 1
                        await asyncio.sleep(self.rng.uniform(0.05, 0.4))
                    budget -= len(data)
                    if budget < 0:
                        # Cut mid-answer: the request was (maybe) applied,
                        # the client never learns and must retry.
                        self.cuts += 1
                        c_writer.write(data[: len(data) // 2])
                        break
                    c_writer.write(data)
                    await c_writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                c_writer.close()
                b_writer.close()

        await asyncio.gather(up(), down())


def uvarint(b, at):
    shift = value = 0
    while True:
        byte = b[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def describe_producers(addr, topic, partitions):
    """DescribeProducers v0 by hand (no Python client has it): returns
    {partition: (error_code, [(producer_id, epoch, last_sequence)])}."""
    import socket
    import struct
    name = topic.encode()
    body = bytes([2]) + bytes([len(name) + 1]) + name + bytes([len(partitions) + 1])
    body += b"".join(struct.pack(">i", p) for p in partitions) + b"\0" + b"\0"
    client = b"sluice-test"
    header = struct.pack(">hhih", 61, 0, 7, len(client)) + client + b"\0"
    frame = header + body
    host, port = addr.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        b = s.recv(size, socket.MSG_WAITALL)
    assert struct.unpack(">i", b[:4])[0] == 7, "correlation id"
    _, at = uvarint(b, 4)            # response header tagged fields
    at += 4                          # throttle_time_ms
    topics, at = uvarint(b, at)
    out = {}
    for _ in range(topics - 1):
        n, at = uvarint(b, at)
        at += n - 1                  # topic name
        parts, at = uvarint(b, at)
        for _ in range(parts - 1):
            p, err = struct.unpack(">ih", b[at:at + 6])
            at += 6
            n, at = uvarint(b, at)   # error message (compact nullable)
            at += max(n - 1, 0)
            count, at = uvarint(b, at)
            producers = []
            for _ in range(count - 1):
                pid, epoch, seq, _ts, _ce, _txn = struct.unpack(">qiiqiq", b[at:at + 36])
                at += 36
                _, at = uvarint(b, at)
                producers.append((pid, epoch, seq))
            _, at = uvarint(b, at)
            out[p] = (err, producers)
        _, at = uvarint(b, at)
    return out


def main():
    seed = int(os.environ.get("SLUICE_IDEMPOTENCE_SEED", random.randrange(1 << 30)))
    log(f"idempotence seed {seed} (SLUICE_IDEMPOTENCE_SEED={seed} replays it)")
    proxy_port = free_port()
    proxy = FaultyProxy(proxy_port, seed)
    work = Path(tempfile.mkdtemp(prefix="sluice-idem-"))
    broker = Broker(work / "data", advertise_port=proxy_port)
    proxy.upstream_port = broker.port
    ok = False
    try:
        broker.start()
        proxy.start()
        proxy_addr = f"127.0.0.1:{proxy_port}"
        from confluent_kafka import Consumer, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": broker.addr})
        for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
            f.result(30)

        errors = []
        delivered = [0]

        def on_delivery(err, msg):
            if err:
                errors.append(err)
            else:
                delivered[0] += 1

        producer = Producer({
            "bootstrap.servers": proxy_addr,
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "batch.num.messages": 200,
            # Generous: a loaded machine must not turn slowness into failure.
            "message.timeout.ms": 300_000,
            "socket.timeout.ms": 3_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
        })
        proxy.faults = True
        started = time.time()
        for i in range(RECORDS):
            while True:
                try:
                    producer.produce(TOPIC, value=str(i).encode(), partition=i % PARTITIONS,
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 1000 == 0:
                producer.poll(0)
            if i == RECORDS // 2:
                producer.poll(0.5)
                log("killing the broker with SIGKILL mid-run")
                broker.proc.send_signal(signal.SIGKILL)
                broker.proc.wait()
                broker.log_file.close()
                broker.start()
                log("broker back on the same data")
        left = producer.flush(360)
        log(f"produced in {time.time() - started:.1f}s; {proxy.cuts} connections cut, "
            f"{proxy.delays} answers delayed; {delivered[0]} acknowledged")
        assert left == 0, f"{left} records never acknowledged"
        fatal = [e for e in errors if e.fatal()]
        assert not errors, f"delivery errors: {errors[:5]} (fatal: {len(fatal)})"

        proxy.faults = False
        consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": "idem-check",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        seen = {p: [] for p in range(PARTITIONS)}
        total = 0
        deadline = time.time() + 120
        while total < RECORDS and time.time() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            assert not m.error(), m.error()
            seen[m.partition()].append(int(m.value()))
            total += 1
        # Anything beyond the expected count would be a duplicate.
        extra = consumer.consume(num_messages=100, timeout=2)
        consumer.close()
        assert not [m for m in extra if not m.error()], "records beyond the expected count: duplicates"
        for p in range(PARTITIONS):
            want = list(range(p, RECORDS, PARTITIONS))
            got = seen[p]
            if got != want:
                dups = len(got) - len(set(got))
                missing = len(set(want) - set(got))
                raise AssertionError(f"partition {p}: {len(got)} records, {dups} duplicates, "
                                     f"{missing} missing, in order: {got == sorted(got)}")
        log(f"every one of {RECORDS} records exactly once, in order per partition")
        described = describe_producers(broker.addr, TOPIC, list(range(PARTITIONS)) + [99])
        assert described[99][0] == 3, f"unknown partition: {described[99]}"
        for p in range(PARTITIONS):
            err, producers = described[p]
            assert err == 0 and producers, f"DescribeProducers partition {p}: {described[p]}"
            assert all(epoch >= 0 and seq >= 0 for _, epoch, seq in producers), producers
        log(f"DescribeProducers: {sum(len(v[1]) for v in described.values())} producer states over {PARTITIONS} partitions")
        broker.stop()
        ok = True
    finally:
        broker.kill()
        proxy.loop.call_soon_threadsafe(proxy.loop.stop)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"broker log and data kept in {work}")


if __name__ == "__main__":
    sys.exit(main())

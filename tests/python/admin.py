"""Topic and broker administration through confluent-kafka's AdminClient.

Starts a real `sluice` process and checks that configs altered live take
effect: retention (segments deleted, the log start moves), the topic's
fsync policy, min.insync.replicas (acks=all refused with
NOT_ENOUGH_REPLICAS); that DescribeConfigs reports topic and broker
configs with their sources; that ElectLeaders answers as a single node
must; and that DeleteRecords moves the log start.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, NewTopic, ResourceType)
from confluent_kafka import ElectionType

from compat import Broker

DEADLINE_S = 20


def log(msg):
    print(f"[admin] {msg}", flush=True)


def until(what, check, deadline_s=DEADLINE_S):
    """Polls `check` until it returns a true value, within a deadline."""
    start = time.time()
    while time.time() - start < deadline_s:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def low_watermark(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "admin-probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def alter(admin, topic, **changes):
    entries = []
    for name, value in changes.items():
        name = name.replace("_", ".")
        if value is None:
            entries.append(ConfigEntry(name, "", incremental_operation=AlterConfigOpType.DELETE))
        else:
            entries.append(ConfigEntry(name, str(value), incremental_operation=AlterConfigOpType.SET))
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for f in admin.incremental_alter_configs([resource]).values():
        f.result()


def topic_configs(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result()


def produce(bootstrap, topic, n, acks="all", size=200, **extra):
    # Small batches, so that the data spans many segments.
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5,
                  "batch.size": 4096, **extra})
    errors = []
    for i in range(n):
        p.produce(topic, key=str(i), value=b"x" * size, partition=0,
                  on_delivery=lambda err, msg: err and errors.append(err))
    p.flush(30)
    return errors


def main():
    tmp = Path(tempfile.mkdtemp(prefix="sluice-admin-"))
    broker = Broker(tmp / "data", extra_args=["--retention-check-interval-ms", "200"])
    broker.start()
    try:
        b = broker.addr
        admin = AdminClient({"bootstrap.servers": b})
        fs = admin.create_topics([NewTopic("ret", 1, 1, config={"segment.bytes": "16384"})])
        for f in fs.values():
            f.result()

        # Retention altered live: whole sealed segments go, the start moves.
        assert produce(b, "ret", 2000) == []
        low, high = low_watermark(b, "ret")
        assert (low, high) == (0, 2000), (low, high)
        alter(admin, "ret", retention_bytes=50_000)
        low = until("retention to delete segments", lambda: low_watermark(b, "ret")[0] or None)
        log(f"retention.bytes=50000 applied live: log start 0 -> {low} of 2000")
        cfg = topic_configs(admin, "ret")
        assert cfg["retention.bytes"].value == "50000"
        assert not cfg["retention.bytes"].is_default
        assert cfg["retention.ms"].is_default

        # The fsync policy is a topic config too, applied live.
        alter(admin, "ret", sluice_fsync="always")
        assert topic_configs(admin, "ret")["sluice.fsync"].value == "always"
        assert produce(b, "ret", 50) == []
        alter(admin, "ret", sluice_fsync=None)
        assert topic_configs(admin, "ret")["sluice.fsync"].is_default

        # min.insync.replicas above the single replica refuses acks=all only.
        alter(admin, "ret", min_insync_replicas=2)
        # NOT_ENOUGH_REPLICAS is retriable: without retries it surfaces now.
        errors = produce(b, "ret", 3, acks="all", retries=0)
        assert errors and all(e.name() == "NOT_ENOUGH_REPLICAS" for e in errors), errors
        assert produce(b, "ret", 3, acks="1") == []
        alter(admin, "ret", min_insync_replicas=None)
        assert produce(b, "ret", 3, acks="all") == []
        log("sluice.fsync and min.insync.replicas altered live")

        # Nonsense is refused with Kafka's error.
        try:
            alter(admin, "ret", cleanup_policy="shred")
            raise AssertionError("cleanup.policy=shred accepted")
        except KafkaException as e:
            assert e.args[0].name() == "INVALID_CONFIG", e

        # Broker configs, with where they come from.
        broker_res = ConfigResource(ResourceType.BROKER, "0")
        bcfg = admin.describe_configs([broker_res])[broker_res].result()
        for key in ("log.retention.ms", "sluice.fsync", "num.partitions"):
            assert key in bcfg, key

        # ElectLeaders: a single node never needs an election.
        f = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("ret", 0),
                                                         TopicPartition("nope", 0)])
        results = f.result()
        by_topic = {tp.topic: err for tp, err in results.items()}
        assert by_topic["ret"] is not None and by_topic["ret"].name() == "ELECTION_NOT_NEEDED", by_topic
        assert by_topic["nope"] is not None and by_topic["nope"].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, by_topic
        log("ElectLeaders: ELECTION_NOT_NEEDED / UNKNOWN_TOPIC_OR_PARTITION")

        # DeleteRecords moves the log start to exactly the offset asked.
        high = low_watermark(b, "ret")[1]
        target = high - 10
        res = admin.delete_records([TopicPartition("ret", 0, target)])
        for f in res.values():
            f.result()
        assert low_watermark(b, "ret")[0] == target
        log(f"DeleteRecords: log start now {target}")
        broker.stop()
    finally:
        broker.kill()
    log("admin APIs behave as Kafka's")
    return 0


if __name__ == "__main__":
    sys.exit(main())

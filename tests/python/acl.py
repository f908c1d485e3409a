"""ACL authorization with independent Kafka clients.

Starts a real `sluice` with `--authorizer on --super-users User:admin`, a
SASL_PLAINTEXT listener with SCRAM users from the bootstrap file and a
PLAINTEXT one (User:ANONYMOUS). The administrator (a super user) creates
topics and ACLs with confluent-kafka's AdminClient, describes and deletes
them with filters. Then: a writer with Write on the PREFIXED `metrics.`
produces to `metrics.cpu` and is refused on `billing`
(TOPIC_AUTHORIZATION_FAILED) with confluent-kafka and kcat; a reader cannot
produce (kafka-python) but consumes in its group; a consumer without Read
on its group gets GROUP_AUTHORIZATION_FAILED (aiokafka); Metadata shows each
principal only the topics it may describe; a DENY beats an ALLOW; refusals
are counted in the metrics; the ACLs survive a restart.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker as PlainBroker, free_port  # noqa: E402

DEADLINE_S = 30
MECHANISM = "SCRAM-SHA-512"
USERS = {"admin": "admin-secret", "writer": "writer-secret", "reader": "reader-secret",
         "stranger": "stranger-secret"}


def log(msg):
    print(f"[acl] {msg}", flush=True)


class Broker(PlainBroker):
    def __init__(self, data_dir, seeds):
        self.sasl = free_port()
        self.metrics = free_port()
        self.ingest = free_port()
        super().__init__(data_dir, extra_args=[
            "--metrics-listen", f"127.0.0.1:{self.metrics}",
            # Influx writes into metrics.cpu, which only the writer may write.
            "--ingest-http-listen", f"127.0.0.1:{self.ingest}", "--influx-topic", "metrics.cpu",
            "--ingest-http-auth", "basic", "--ingest-http-auth-insecure", "true",
            "--authorizer", "on", "--super-users", "User:admin",
            "--sasl-mechanisms", "SCRAM-SHA-512",
            "--scram-bootstrap-file", str(seeds)])

    def start(self):
        args = [self.binary(), "serve", "--listeners",
                f"PLAINTEXT://{self.addr},SASL_PLAINTEXT://127.0.0.1:{self.sasl}",
                "--data-dir", str(self.data_dir)] + self.extra_args
        self.log_file = open(Path(self.data_dir).parent / "sluice.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT)
        start = time.time()
        while time.time() - start < DEADLINE_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.sasl), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sluice did not start listening")


def ck_config(bootstrap, user):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": MECHANISM, "sasl.username": user,
            "sasl.password": USERS[user]}


def kp_config(bootstrap, user):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=MECHANISM, sasl_plain_username=user,
                sasl_plain_password=USERS[user])


def binding(rt, name, pattern, principal, op, perm):
    from confluent_kafka.admin import AclBinding
    return AclBinding(rt, name, pattern, principal, "*", op, perm)


def set_up(bootstrap):
    """The administrator creates topics and ACLs, and checks the admin APIs."""
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType,
                                       AdminClient, NewTopic, ResourcePatternType,
                                       ResourceType)
    admin = AdminClient(ck_config(bootstrap, "admin"))
    for f in admin.create_topics([NewTopic(t, 1) for t in
                                  ("metrics.cpu", "billing", "orders", "shared")]).values():
        f.result(timeout=DEADLINE_S)
    T, G = ResourceType.TOPIC, ResourceType.GROUP
    LIT, PRE = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    A, D = AclPermissionType.ALLOW, AclPermissionType.DENY
    acls = [
        binding(T, "metrics.", PRE, "User:writer", AclOperation.WRITE, A),
        binding(T, "orders", LIT, "User:reader", AclOperation.READ, A),
        binding(G, "readers", LIT, "User:reader", AclOperation.READ, A),
        binding(T, "orders", LIT, "User:stranger", AclOperation.READ, A),
        # Everyone may write to shared, but the writer is denied.
        binding(T, "shared", LIT, "User:*", AclOperation.ALL, A),
        binding(T, "shared", PRE, "User:writer", AclOperation.WRITE, D),
        # To be deleted by a filter.
        binding(T, "old.", PRE, "User:reader", AclOperation.WRITE, A),
        binding(T, "old.", PRE, "User:writer", AclOperation.WRITE, A),
    ]
    for b, f in admin.create_acls(acls).items():
        assert f.result(timeout=DEADLINE_S) is None, b
    # INVALID_REQUEST for a cluster binding not named kafka-cluster.
    bad = binding(ResourceType.BROKER, "other", LIT, "User:x", AclOperation.ALTER, A)
    try:
        admin.create_acls([bad])[bad].result(timeout=DEADLINE_S)
        raise AssertionError("a MATCH binding was created")
    except Exception as e:  # noqa: BLE001: the message is checked
        assert "kafka-cluster" in str(e), e
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    listed = admin.describe_acls(everything).result(timeout=DEADLINE_S)
    assert sorted(map(str, listed)) == sorted(map(str, acls)), listed
    match = AclBindingFilter(T, "metrics.cpu", ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    got = admin.describe_acls(match).result(timeout=DEADLINE_S)
    assert [b.name for b in got] == ["metrics."], got
    old = AclBindingFilter(T, "old.", PRE, "User:reader", None, AclOperation.ANY,
                           AclPermissionType.ANY)
    deleted = admin.delete_acls([old])[old].result(timeout=DEADLINE_S)
    assert [(b.name, b.principal) for b in deleted] == [("old.", "User:reader")], deleted
    left = admin.describe_acls(everything).result(timeout=DEADLINE_S)
    assert len(left) == len(acls) - 1, left
    log("admin: topics and ACLs created; INVALID_REQUEST for a cluster binding not on kafka-cluster; "
        "describe (ANY, MATCH) and delete with filters")

    # Without Describe on the cluster, a user may not list ACLs (kafka-python
    # raises the error code; librdkafka answers an empty list).
    from kafka import KafkaAdminClient
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ResourcePatternFilter
    from kafka.admin import ACLResourcePatternType, ResourceType as KpResourceType
    from kafka.errors import ClusterAuthorizationFailedError
    writer_admin = KafkaAdminClient(**kp_config(bootstrap, "writer"))
    anything = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                         permission_type=ACLPermissionType.ANY,
                         resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                                ACLResourcePatternType.ANY))
    try:
        writer_admin.describe_acls(anything)
        raise AssertionError("the writer listed the ACLs")
    except ClusterAuthorizationFailedError:
        pass
    finally:
        writer_admin.close()
    log("writer: DescribeAcls refused (CLUSTER_AUTHORIZATION_FAILED)")


def produce_confluent(bootstrap, user, topic):
    """The error code of one produce, None when it was delivered."""
    from confluent_kafka import Producer
    p = Producer({**ck_config(bootstrap, user), "message.timeout.ms": 8000})
    outcome = []
    p.produce(topic, b"v", on_delivery=lambda err, msg: outcome.append(err))
    p.flush(DEADLINE_S)
    assert outcome, f"{user} -> {topic}: no delivery report"
    return outcome[0]


def run_confluent(bootstrap):
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient
    assert produce_confluent(bootstrap, "writer", "metrics.cpu") is None
    err = produce_confluent(bootstrap, "writer", "billing")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    err = produce_confluent(bootstrap, "writer", "shared")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert produce_confluent(bootstrap, "reader", "shared") is None
    assert produce_confluent(bootstrap, "admin", "billing") is None
    # shared: everyone's ALL implies Describe; denying Write denies no more.
    seen = set(AdminClient(ck_config(bootstrap, "writer")).list_topics(timeout=10).topics)
    assert seen == {"metrics.cpu", "shared"}, seen
    seen = set(AdminClient(ck_config(bootstrap, "reader")).list_topics(timeout=10).topics)
    assert seen == {"orders", "shared"}, seen
    seen = set(AdminClient(ck_config(bootstrap, "admin")).list_topics(timeout=10).topics)
    assert {"metrics.cpu", "billing", "orders", "shared"} <= seen, seen
    log("confluent-kafka: writer produces to metrics.cpu, refused on billing and (DENY) on "
        "shared; reader writes shared; admin writes billing; Metadata lists only what each "
        "may describe")


def run_kafka_python(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError
    p = KafkaProducer(**kp_config(bootstrap, "admin"))
    for i in range(5):
        p.send("orders", f"order-{i}".encode()).get(timeout=DEADLINE_S)
    p.close()
    p = KafkaProducer(**kp_config(bootstrap, "reader"), max_block_ms=8000)
    try:
        p.send("orders", b"nope").get(timeout=DEADLINE_S)
        raise AssertionError("the reader produced")
    except KafkaError as e:
        assert "TopicAuthorizationFailed" in type(e).__name__, repr(e)
    finally:
        p.close()
    c = KafkaConsumer("orders", group_id="readers", auto_offset_reset="earliest",
                      consumer_timeout_ms=15000, **kp_config(bootstrap, "reader"))
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == 5:
            break
    c.commit()
    c.close()
    assert got == [f"order-{i}".encode() for i in range(5)], got
    log("kafka-python: reader refused on produce (TopicAuthorizationFailedError), "
        "consumes orders in group readers")


async def aiokafka_refused(bootstrap):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError
    c = AIOKafkaConsumer("orders", group_id="others", auto_offset_reset="earliest",
                         bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism=MECHANISM, sasl_plain_username="stranger",
                         sasl_plain_password=USERS["stranger"])
    try:
        await c.start()
        await asyncio.wait_for(c.getone(), DEADLINE_S)
        raise AssertionError("a consumer without Read on its group consumed")
    except KafkaError as e:
        assert "GroupAuthorizationFailed" in type(e).__name__, repr(e)
    finally:
        await c.stop()


async def aiokafka_allowed(bootstrap):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism=MECHANISM, sasl_plain_username="stranger",
                         sasl_plain_password=USERS["stranger"], auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    try:
        c.assign([TopicPartition("orders", 0)])
        m = await asyncio.wait_for(c.getone(), DEADLINE_S)
        assert m.value == b"order-0", m
    finally:
        await c.stop()


def run_kcat(bootstrap):
    common = ["kcat", "-b", bootstrap, "-X", "security.protocol=SASL_PLAINTEXT",
              # Debian's kcat (1.7.1, librdkafka 2.0.2) repeats its client
              # nonce in the final SCRAM message, which Sluice accepts as
              # Kafka 3.8.1+ does.
              "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=writer",
              "-X", f"sasl.password={USERS['writer']}"]
    ok = subprocess.run(common + ["-P", "-t", "metrics.cpu"], input=b"from-kcat\n",
                        capture_output=True, timeout=DEADLINE_S)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(common + ["-P", "-t", "billing"], input=b"nope\n",
                             capture_output=True, timeout=DEADLINE_S)
    text = refused.stderr.decode()
    assert refused.returncode != 0 and "authorization failed" in text.lower(), text
    log("kcat: writer produces to metrics.cpu, refused on billing")


def denied_count(broker, resource_type, operation):
    """sluice_authorizations_denied_total for one label pair, 0 if absent."""
    import re
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics}/metrics",
                                  timeout=10).read().decode()
    pattern = (r'^sluice_authorizations_denied_total\{resource_type="%s",operation="%s"\} (\S+)$'
               % (resource_type, operation))
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def anonymous_sees_nothing(plain):
    from confluent_kafka.admin import AdminClient
    seen = set(AdminClient({"bootstrap.servers": plain}).list_topics(timeout=10).topics)
    # Only shared, which User:* may use.
    assert seen == {"shared"}, seen


def ingest_needs_write(broker, bootstrap):
    """An Influx write needs Write on its topic, as a Produce does: the
    writer's is stored, the reader's gets 403 and stores nothing."""
    import base64
    import urllib.error
    import urllib.request
    from confluent_kafka import Consumer, TopicPartition

    def end():
        c = Consumer({**ck_config(bootstrap, "admin"), "group.id": "acl-ends"})
        try:
            return c.get_watermark_offsets(TopicPartition("metrics.cpu", 0), timeout=10)[1]
        finally:
            c.close()

    def write(user):
        auth = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{broker.ingest}/api/v2/write?bucket=b",
            data=b"cpu,host=a v=1i 1700000000000000000\n", method="POST",
            headers={"Authorization": f"Basic {auth}"})
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
                return r.status, b""
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    before = end()
    status, _ = write("writer")
    assert status == 204, status
    status, body = write("reader")
    assert status == 403 and b"metrics.cpu" in body, (status, body)
    assert end() == before + 1, (before, end())
    log("ingest: the writer's Influx write stored, the reader's refused with 403, nothing stored")


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-acl-") as tmp:
        tmp = Path(tmp)
        seeds = tmp / "scram-bootstrap"
        seeds.write_text("".join(f"{u}:{MECHANISM}:{p}\n" for u, p in USERS.items()))
        broker = Broker(tmp / "data", seeds)
        broker.start()
        try:
            bootstrap = f"127.0.0.1:{broker.sasl}"
            set_up(bootstrap)
            run_confluent(bootstrap)
            run_kafka_python(bootstrap)
            asyncio.run(aiokafka_refused(bootstrap))
            asyncio.run(aiokafka_allowed(bootstrap))
            log("aiokafka: GROUP_AUTHORIZATION_FAILED without Read on the group; "
                "reads orders assigned")
            run_kcat(bootstrap)
            ingest_needs_write(broker, bootstrap)
            # Produce refused: the writer on shared, the reader on orders (on
            # billing, Metadata refused Describe and no Produce was sent).
            assert denied_count(broker, "Topic", "Write") >= 2
            assert denied_count(broker, "Topic", "Describe") >= 1
            assert denied_count(broker, "Group", "Describe") >= 1
            assert denied_count(broker, "Cluster", "Describe") >= 1
            log("metrics: refusals counted by resource type and operation")
            anonymous_sees_nothing(broker.addr)
            log("PLAINTEXT (User:ANONYMOUS): Metadata lists only what User:* may describe")
            broker.stop()
            broker.start()
            from confluent_kafka import KafkaError
            assert produce_confluent(bootstrap, "writer", "metrics.cpu") is None
            err = produce_confluent(bootstrap, "writer", "billing")
            assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
            log("after a restart: the same ACLs hold")
            broker.stop()
        finally:
            broker.kill()
    log("PASS")


if __name__ == "__main__":
    main()

"""SASL listeners with independent Kafka clients.

Starts a real `sluice` with PLAINTEXT, SASL_SSL and SASL_PLAINTEXT listeners
and a first administrator from the SCRAM bootstrap file. The administrator
creates users over SASL_SSL with AlterUserScramCredentials (kafka-python)
and describes them (confluent-kafka); then each client authenticates as one
of them and produces, consumes in a group and makes an admin call:
confluent-kafka with SCRAM-SHA-512 over SASL_SSL, kafka-python with PLAIN and
with SCRAM-SHA-256 over SASL_SSL, aiokafka with SCRAM-SHA-512 over SASL_SSL.
Wrong passwords, unknown users and a deleted credential are refused with
SASL_AUTHENTICATION_FAILED; a mechanism not offered gets
UNSUPPORTED_SASL_MECHANISM.

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
from tls import make_certs  # noqa: E402

RECORDS = 40
DEADLINE_S = 30
ADMIN_SECRET = "first-admin-secret"


def log(msg):
    print(f"[sasl] {msg}", flush=True)


class Broker(PlainBroker):
    def __init__(self, data_dir, certs, seeds):
        self.sasl_ssl = free_port()
        self.sasl_plain = free_port()
        super().__init__(data_dir, extra_args=[
            "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
            "--sasl-mechanisms", "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "--scram-bootstrap-file", str(seeds)])

    def start(self):
        args = [self.binary(), "serve", "--listeners",
                f"PLAINTEXT://{self.addr},SASL_SSL://127.0.0.1:{self.sasl_ssl},"
                f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_plain}",
                "--data-dir", str(self.data_dir)] + self.extra_args
        self.log_file = open(Path(self.data_dir).parent / "sluice.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT)
        start = time.time()
        while time.time() - start < DEADLINE_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.sasl_ssl), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sluice did not start listening")


def records(client):
    return [(f"key-{i}".encode(), f"{client}/record-{i}".encode() * (1 + i % 5))
            for i in range(RECORDS)]


def check(client, want, got):
    got = sorted(got, key=lambda kv: int(kv[0].split(b"-")[1]))
    assert got == want, f"{client}: {len(got)} records back, want {len(want)} (or they differ)"


def kp_config(bootstrap, certs, mechanism, user, password):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                sasl_mechanism=mechanism, sasl_plain_username=user,
                sasl_plain_password=password, ssl_cafile=str(certs / "ca.pem"))


def create_users(bootstrap, certs):
    """The administrator creates the users (kafka-python), and confluent-kafka
    sees them."""
    from kafka import KafkaAdminClient
    from kafka.admin import UserScramCredentialDeletion, UserScramCredentialUpsertion
    admin = KafkaAdminClient(**kp_config(bootstrap, certs, "SCRAM-SHA-512", "admin",
                                         ADMIN_SECRET))
    errors = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("writer", "SCRAM-SHA-512", "writer-secret"),
        UserScramCredentialUpsertion("writer", "SCRAM-SHA-256", "writer-secret", iterations=8192),
        UserScramCredentialUpsertion("reader", "SCRAM-SHA-256", "reader-secret"),
        UserScramCredentialUpsertion("leaver", "SCRAM-SHA-512", "leaver-secret"),
    ])
    assert errors == {"writer": None, "reader": None, "leaver": None}, errors
    # Kafka's refusals.
    errors = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("weak", "SCRAM-SHA-256", "x", iterations=1000),
        UserScramCredentialDeletion("ghost", "SCRAM-SHA-512"),
    ])
    assert errors["weak"] and "iterations" in errors["weak"], errors
    assert errors["ghost"] and "does not exist" in errors["ghost"], errors
    # A user's changes apply all or none.
    errors = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("half", "SCRAM-SHA-512", "x"),
        UserScramCredentialDeletion("half", "SCRAM-SHA-256"),
    ])
    assert errors["half"] and "does not exist" in errors["half"], errors
    assert admin.describe_user_scram_credentials(["half"])["half"]["error"], \
        "a refused change of a user applied in part"
    described = admin.describe_user_scram_credentials(["writer", "ghost"])
    infos = sorted((int(i["mechanism"]), i["iterations"])
                   for i in described["writer"]["credential_infos"])
    assert infos == [(1, 8192), (2, 4096)], described
    assert described["ghost"]["error"], described
    admin.close()

    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin",
                         "sasl.password": ADMIN_SECRET, "ssl.ca.location": str(certs / "ca.pem")})
    seen = admin.describe_user_scram_credentials().result(timeout=DEADLINE_S)
    assert {"admin", "writer", "reader", "leaver"} <= set(seen), seen


def run_confluent(bootstrap, certs):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    conf = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "writer",
            "sasl.password": "writer-secret", "ssl.ca.location": str(certs / "ca.pem")}
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic("sasl-confluent", 2, 1)]).values():
        f.result(timeout=DEADLINE_S)
    p = Producer(conf)
    want = records("confluent")
    for k, v in want:
        p.produce("sasl-confluent", key=k, value=v)
    assert p.flush(DEADLINE_S) == 0
    c = Consumer({**conf, "group.id": "sasl-confluent", "auto.offset.reset": "earliest"})
    c.subscribe(["sasl-confluent"])
    got, end = [], time.time() + DEADLINE_S
    while len(got) < RECORDS and time.time() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value()))
    c.close()
    check("confluent-kafka SCRAM-SHA-512", want, got)


def run_kafka_python(bootstrap, certs, mechanism, user, password, topic):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    conf = kp_config(bootstrap, certs, mechanism, user, password)
    admin = KafkaAdminClient(**conf)
    admin.create_topics([NewTopic(topic, 2, 1)])
    assert topic in admin.list_topics()
    admin.close()
    p = KafkaProducer(**conf)
    want = records(topic)
    for k, v in want:
        p.send(topic, key=k, value=v)
    p.flush(DEADLINE_S)
    p.close()
    c = KafkaConsumer(topic, group_id=topic, auto_offset_reset="earliest",
                      consumer_timeout_ms=10_000, **conf)
    got = []
    for m in c:
        got.append((m.key, m.value))
        if len(got) == RECORDS:
            break
    c.close()
    check(f"kafka-python {mechanism}", want, got)


def run_aiokafka(bootstrap, certs):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.helpers import create_ssl_context

    async def go():
        conf = dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                    sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="writer",
                    sasl_plain_password="writer-secret")
        ctx = lambda: create_ssl_context(cafile=str(certs / "ca.pem"))  # noqa: E731
        admin = AIOKafkaAdminClient(ssl_context=ctx(), **conf)
        await admin.start()
        await admin.create_topics([NewTopic("sasl-aiokafka", 2, 1)])
        assert "sasl-aiokafka" in await admin.list_topics()
        await admin.close()
        p = AIOKafkaProducer(ssl_context=ctx(), **conf)
        await p.start()
        want = records("aiokafka")
        for k, v in want:
            await p.send("sasl-aiokafka", key=k, value=v)
        await p.flush()
        await p.stop()
        c = AIOKafkaConsumer("sasl-aiokafka", group_id="sasl-aiokafka",
                             auto_offset_reset="earliest", ssl_context=ctx(), **conf)
        await c.start()
        got, end = [], time.time() + DEADLINE_S
        try:
            while len(got) < RECORDS and time.time() < end:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    got.extend((m.key, m.value) for m in msgs)
        finally:
            await c.stop()
        check("aiokafka SCRAM-SHA-512", want, got)

    asyncio.run(go())


def refused(bootstrap, certs, mechanism, user, password, protocol="SASL_SSL"):
    """What librdkafka reports when it cannot authenticate, or None if it
    was served."""
    from confluent_kafka.admin import AdminClient
    errors = []
    conf = {"bootstrap.servers": bootstrap, "security.protocol": protocol,
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "error_cb": lambda e: errors.append(e.str())}
    if protocol == "SASL_SSL":
        conf["ssl.ca.location"] = str(certs / "ca.pem")
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=4)
        return None
    except Exception:  # noqa: BLE001: what was reported is checked below
        admin.poll(0)
        return " | ".join(errors) or "no error reported"


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-sasl-") as tmp:
        tmp = Path(tmp)
        certs = tmp / "certs"
        certs.mkdir()
        make_certs(certs)
        seeds = tmp / "scram-bootstrap"
        seeds.write_text(f"admin:SCRAM-SHA-512:{ADMIN_SECRET}\n")
        broker = Broker(tmp / "data", certs, seeds)
        broker.start()
        try:
            bootstrap = f"localhost:{broker.sasl_ssl}"
            create_users(bootstrap, certs)
            log("users created with AlterUserScramCredentials, described by two clients")
            for name, run in [
                ("confluent-kafka SCRAM-SHA-512", lambda: run_confluent(bootstrap, certs)),
                ("kafka-python PLAIN", lambda: run_kafka_python(
                    bootstrap, certs, "PLAIN", "writer", "writer-secret", "sasl-kp-plain")),
                ("kafka-python SCRAM-SHA-256", lambda: run_kafka_python(
                    bootstrap, certs, "SCRAM-SHA-256", "reader", "reader-secret",
                    "sasl-kp-scram")),
                ("aiokafka SCRAM-SHA-512", lambda: run_aiokafka(bootstrap, certs)),
            ]:
                started = time.time()
                run()
                log(f"{name}: created a topic, produced {RECORDS}, consumed them in a group "
                    f"({time.time() - started:.1f}s)")
            from kafka.admin import KafkaAdminClient, UserScramCredentialDeletion
            admin = KafkaAdminClient(**kp_config(bootstrap, certs, "SCRAM-SHA-512", "admin",
                                                 ADMIN_SECRET))
            assert admin.alter_user_scram_credentials(
                [UserScramCredentialDeletion("leaver", "SCRAM-SHA-512")]) == {"leaver": None}
            admin.close()
            for why, args, said in [
                ("a wrong password", ("SCRAM-SHA-512", "writer", "nope"),
                 "Invalid user credentials"),
                ("an unknown user", ("SCRAM-SHA-256", "nobody", "x"), "Invalid user credentials"),
                ("a deleted credential", ("SCRAM-SHA-512", "leaver", "leaver-secret"),
                 "Invalid user credentials"),
                ("PLAIN with a wrong password", ("PLAIN", "writer", "nope"),
                 "Invalid username or password"),
            ]:
                e = refused(bootstrap, certs, *args)
                assert e and said in e, f"{why}: got {e!r}"
            e = refused(f"localhost:{broker.sasl_plain}", certs, "PLAIN", "writer",
                        "writer-secret", protocol="SASL_PLAINTEXT")
            assert e and "Unsupported SASL mechanism" in e, f"PLAIN in clear text: got {e!r}"
            log("refused: wrong password, unknown user, deleted credential, "
                "PLAIN without TLS (UNSUPPORTED_SASL_MECHANISM)")
            broker.stop()
        finally:
            broker.kill()
    log("PASS")


if __name__ == "__main__":
    main()

"""TLS listeners with four independent Kafka clients.

Makes a CA, a server certificate and client certificates with `openssl`,
starts a real `sluice` with a PLAINTEXT and an SSL listener requiring client
certificates, then drives the SSL listener with kcat (mTLS), confluent-kafka,
kafka-python and aiokafka: each creates a topic, produces keyed records,
reads them back in a consumer group and lists topics. A client without a
certificate and a PLAINTEXT client on the SSL port are refused, and the
broker keeps serving.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker as PlainBroker, free_port  # noqa: E402

RECORDS = 50
DEADLINE_S = 30


def log(msg):
    print(f"[tls] {msg}", flush=True)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, ca):
    """A CA's certificate and key, `ca`.pem and `ca`.key in `d`."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", f"/CN=sluice test {ca}", "-keyout", f"{ca}.key",
            "-out", f"{ca}.pem", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def issue(d, name, subject, ca, usage):
    """A certificate `name`.pem (key `name`.key) signed by `ca`, for
    localhost and 127.0.0.1, with extended key usage `usage`."""
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=d)


def issue_expired(d, name, ca):
    """A client certificate `name` signed by `ca` that expired yesterday
    (openssl's x509 cannot date one in the past)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate((d / f"{ca}.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((d / f"{ca}.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def make_certs(d):
    for ca in ("ca", "other-ca"):
        make_ca(d, ca)
    issue(d, "server", "/CN=localhost", "ca", "serverAuth")
    issue(d, "client", "/O=Example/OU=fleet/CN=writer", "ca", "clientAuth")
    issue(d, "stranger", "/CN=stranger", "other-ca", "clientAuth")


class Broker(PlainBroker):
    """A broker with a PLAINTEXT listener (the base class's port) and an
    SSL one."""

    def __init__(self, data_dir, certs):
        self.ssl_port = free_port()
        super().__init__(data_dir, extra_args=[
            "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
            "--tls-client-ca", str(certs / "ca.pem"), "--tls-client-auth", "required"])

    def start(self):
        # The base class passes --listen/--advertise; --listeners replaces
        # them, so they must go.
        args = [self.binary(), "serve", "--listeners",
                f"PLAINTEXT://{self.addr},SSL://127.0.0.1:{self.ssl_port}",
                "--data-dir", str(self.data_dir)] + self.extra_args
        self.log_file = open(Path(self.data_dir).parent / "sluice.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT)
        import socket
        start = time.time()
        while time.time() - start < DEADLINE_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.ssl_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sluice did not start listening")


def records(client):
    return [(f"key-{i}".encode(), f"{client}/record-{i}".encode() * (1 + i % 7))
            for i in range(RECORDS)]


def check(client, want, got):
    got = sorted(got, key=lambda kv: int(kv[0].split(b"-")[1]))
    assert got == want, f"{client}: {len(got)} records back, want {len(want)} (or they differ)"


def run_confluent(bootstrap, certs):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    ssl = {"bootstrap.servers": bootstrap, "security.protocol": "SSL",
           "ssl.ca.location": str(certs / "ca.pem"),
           "ssl.certificate.location": str(certs / "client.pem"),
           "ssl.key.location": str(certs / "client.key")}
    admin = AdminClient(ssl)
    for f in admin.create_topics([NewTopic("tls-confluent", 2, 1)]).values():
        f.result(timeout=DEADLINE_S)
    assert "tls-confluent" in admin.list_topics(timeout=DEADLINE_S).topics
    p = Producer(ssl)
    want = records("confluent")
    for k, v in want:
        p.produce("tls-confluent", key=k, value=v)
    assert p.flush(DEADLINE_S) == 0, "confluent-kafka: records left unsent"
    c = Consumer({**ssl, "group.id": "tls-confluent", "auto.offset.reset": "earliest"})
    c.subscribe(["tls-confluent"])
    got, end = [], time.time() + DEADLINE_S
    while len(got) < RECORDS and time.time() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value()))
    c.commit(asynchronous=False)
    c.close()
    check("confluent-kafka", want, got)


def run_kafka_python(bootstrap, certs):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    ssl = dict(bootstrap_servers=bootstrap, security_protocol="SSL",
               ssl_cafile=str(certs / "ca.pem"), ssl_certfile=str(certs / "client.pem"),
               ssl_keyfile=str(certs / "client.key"), ssl_check_hostname=True)
    admin = KafkaAdminClient(**ssl)
    admin.create_topics([NewTopic("tls-kafka-python", 2, 1)])
    assert "tls-kafka-python" in admin.list_topics()
    admin.close()
    p = KafkaProducer(**ssl)
    want = records("kafka-python")
    for k, v in want:
        p.send("tls-kafka-python", key=k, value=v)
    p.flush(DEADLINE_S)
    p.close()
    c = KafkaConsumer("tls-kafka-python", group_id="tls-kafka-python",
                      auto_offset_reset="earliest", consumer_timeout_ms=10_000, **ssl)
    got = []
    for m in c:
        got.append((m.key, m.value))
        if len(got) == RECORDS:
            break
    c.commit()
    c.close()
    check("kafka-python", want, got)


def run_aiokafka(bootstrap, certs):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.helpers import create_ssl_context

    def ctx():
        return create_ssl_context(cafile=str(certs / "ca.pem"), certfile=str(certs / "client.pem"),
                                  keyfile=str(certs / "client.key"))

    async def go():
        ssl = dict(bootstrap_servers=bootstrap, security_protocol="SSL")
        admin = AIOKafkaAdminClient(ssl_context=ctx(), **ssl)
        await admin.start()
        await admin.create_topics([NewTopic("tls-aiokafka", 2, 1)])
        assert "tls-aiokafka" in await admin.list_topics()
        await admin.close()
        p = AIOKafkaProducer(ssl_context=ctx(), **ssl)
        await p.start()
        want = records("aiokafka")
        for k, v in want:
            await p.send("tls-aiokafka", key=k, value=v)
        await p.flush()
        await p.stop()
        c = AIOKafkaConsumer("tls-aiokafka", group_id="tls-aiokafka", auto_offset_reset="earliest",
                             ssl_context=ctx(), **ssl)
        await c.start()
        got, end = [], time.time() + DEADLINE_S
        try:
            while len(got) < RECORDS and time.time() < end:
                batch = await c.getmany(timeout_ms=500)
                for msgs in batch.values():
                    got.extend((m.key, m.value) for m in msgs)
            await c.commit()
        finally:
            await c.stop()
        check("aiokafka", want, got)

    asyncio.run(go())


def kcat(bootstrap, certs, *args, cert="client", stdin=None, timeout=DEADLINE_S):
    tls = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs / 'ca.pem'}"]
    if cert:
        tls += ["-X", f"ssl.certificate.location={certs / (cert + '.pem')}",
                "-X", f"ssl.key.location={certs / (cert + '.key')}"]
    return subprocess.run(["kcat", "-b", bootstrap, *tls, *args], input=stdin,
                          capture_output=True, timeout=timeout)


def run_kcat(bootstrap, certs):
    want = records("kcat")
    lines = b"".join(k + b"\t" + v + b"\n" for k, v in want)
    # Auto-created on first produce: kcat has no admin call of its own but
    # metadata, which lists it afterwards.
    out = kcat(bootstrap, certs, "-P", "-t", "tls-kcat", "-K", "\t", stdin=lines)
    assert out.returncode == 0, f"kcat produce over mTLS failed: {out.stderr.decode()}"
    out = kcat(bootstrap, certs, "-L", "-t", "tls-kcat")
    assert out.returncode == 0 and b"tls-kcat" in out.stdout, out.stderr.decode()
    out = kcat(bootstrap, certs, "-G", "tls-kcat", "-X", "auto.offset.reset=earliest",
               "-c", str(RECORDS), "-f", "%k\t%s\n", "tls-kcat")
    assert out.returncode == 0, f"kcat group consume over mTLS failed: {out.stderr.decode()}"
    got = [tuple(line.split(b"\t", 1)) for line in out.stdout.splitlines()]
    check("kcat", want, got)


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-tls-") as tmp:
        tmp = Path(tmp)
        certs = tmp / "certs"
        certs.mkdir()
        make_certs(certs)
        broker = Broker(tmp / "data", certs)
        broker.start()
        try:
            bootstrap = f"localhost:{broker.ssl_port}"
            for name, run in [("kcat", run_kcat), ("confluent-kafka", run_confluent),
                              ("kafka-python", run_kafka_python), ("aiokafka", run_aiokafka)]:
                started = time.time()
                run(bootstrap, certs)
                log(f"{name}: created, produced {RECORDS}, consumed them in a group over "
                    f"TLS ({time.time() - started:.1f}s)")
            # Refusals: each fails, none stops the broker.
            out = kcat(bootstrap, certs, "-L", "-m", "3", cert=None)
            assert out.returncode != 0, "kcat without a client certificate was served"
            out = kcat(bootstrap, certs, "-L", "-m", "3", cert="stranger")
            assert out.returncode != 0, "kcat with a foreign CA's certificate was served"
            issue_expired(certs, "expired", "ca")
            out = kcat(bootstrap, certs, "-L", "-m", "3", cert="expired")
            assert out.returncode != 0, "kcat with an expired certificate was served"
            assert b"expired" in out.stderr.lower(), out.stderr[-400:]
            out = subprocess.run(["kcat", "-b", bootstrap, "-L", "-m", "3"], capture_output=True,
                                 timeout=DEADLINE_S)
            assert out.returncode != 0, "a PLAINTEXT kcat was served on the SSL port"
            out = kcat(bootstrap, certs, "-L")
            assert out.returncode == 0, "the SSL listener stopped serving after refusals"
            out = subprocess.run(["kcat", "-b", broker.addr, "-L"], capture_output=True,
                                 timeout=DEADLINE_S)
            assert out.returncode == 0, "the PLAINTEXT listener stopped serving"
            assert f":{broker.port}".encode() in out.stdout, "PLAINTEXT clients get PLAINTEXT addresses"
            log("refused: no certificate, a foreign CA's certificate, an expired certificate, "
                "PLAINTEXT on the SSL port")
            broker.stop()
        finally:
            broker.kill()
    log("PASS")


if __name__ == "__main__":
    main()

"""HTTPS and authentication on Sluice's HTTP endpoints, with real clients.

Starts a real `sluice` whose metrics endpoint and ingest listener serve
HTTPS (`--metrics-tls`, `--ingest-http-tls`) with the SSL listeners'
certificate, and whose ingest listener requires a password
(`--ingest-http-auth basic`) checked against the SCRAM credentials of the
cluster (seeded by the bootstrap file, changed over SASL_SSL).

1. The real Prometheus (Debian's package) scrapes /metrics over HTTPS and
   remote-writes over HTTPS with `basic_auth` and `tls_config.ca_file`;
   its samples arrive in the topic and it reports none failed.
2. influxdb-client over HTTPS with `token="user:password"`; curl with `-u`
   to /write; urllib to /write?u=&p= with a password that needs
   form-encoding. Every point arrives. JWTs signed with a key of the
   broker's JWKS (`--ingest-http-auth basic,bearer`) as `Bearer` and as
   Influx's `Token JWT` are stored; expired, foreign-key and alg=none
   tokens get 401 and store nothing.
3. A wrong password, an unknown user, no credentials, a bad bearer token and a
   malformed header, on the Influx and the remote-write paths: 401 with
   `WWW-Authenticate: Basic realm="sluice"` and Influx's JSON error, counted
   in sluice_http_authentications_failed; the topics' end offsets do not
   move. /ping stays open.
4. A changed password: the old one is refused (the per-shard cache of
   checked passwords follows the credential), the new one accepted.
5. `curl --cacert` against /metrics over HTTPS; plain HTTP to either HTTPS
   port fails, is counted in sluice_tls_handshakes_failed, and the
   endpoints keep serving. After the certificate files are replaced and
   SIGHUP sent, new connections get the new certificate.
6. `--ingest-http-auth basic` over plain HTTP without
   `--ingest-http-auth-insecure` stops start-up with a message.

Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import base64
import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import free_port  # noqa: E402
from prometheus import WriteRequest, consume, end_offsets, snappy  # noqa: E402
from oauth import AUDIENCE, ISSUER, Keys, token, unsigned  # noqa: E402
from sasl import Broker as SaslBroker, kp_config  # noqa: E402
from tls import make_certs, openssl  # noqa: E402

INFLUX_TOPIC = "sec-influx"
PROM_TOPIC = "sec-prom"
PARTITIONS = 2
ADMIN_SECRET = "first-admin-secret"
WRITER, WRITER_SECRET = "writer", "writer-secret"
DEADLINE_S = 60
INFLUX_POINTS = 300


def log(msg):
    print(f"[ingest_security] {msg}", flush=True)


class Broker(SaslBroker):
    """The SASL test's broker (PLAINTEXT, SASL_SSL, SASL_PLAINTEXT, the
    bootstrap administrator) with HTTPS endpoints and ingest auth."""

    def __init__(self, data_dir, certs, seeds):
        super().__init__(data_dir, certs, seeds)
        self.mport, self.http_port = free_port(), free_port()
        i = self.extra_args.index("--metrics-listen")
        self.extra_args[i + 1] = f"127.0.0.1:{self.mport}"
        self.extra_args += [
            "--cores", "2", "--default-partitions", str(PARTITIONS),
            "--metrics-tls", "true",
            "--ingest-http-listen", f"127.0.0.1:{self.http_port}", "--ingest-http-tls", "true",
            "--ingest-http-auth", "basic,bearer",
            "--oauth-jwks", str(Path(data_dir).parent / "jwks.json"),
            "--oauth-expected-issuer", ISSUER, "--oauth-expected-audience", AUDIENCE,
            "--influx-topic", INFLUX_TOPIC, "--prometheus-topic", PROM_TOPIC]


def https_context(ca):
    return ssl.create_default_context(cafile=str(ca))


def request(url, ca, body=None, headers=None, method=None):
    """(status, headers, body) of one HTTPS request."""
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body else "GET"),
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=https_context(ca)) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def scrape(broker, ca, prefix):
    _, _, text = request(f"https://localhost:{broker.mport}/metrics", ca)
    out = {}
    for line in text.decode().splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def offsets(broker):
    return (end_offsets(broker, INFLUX_TOPIC, PARTITIONS),
            end_offsets(broker, PROM_TOPIC, PARTITIONS))


def create_topics(broker):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.addr})
    for t, f in admin.create_topics([NewTopic(INFLUX_TOPIC, PARTITIONS, 1),
                                     NewTopic(PROM_TOPIC, PARTITIONS, 1)]).items():
        f.result(timeout=DEADLINE_S)


# --- 1. Prometheus over HTTPS with basic_auth ------------------------------

def prometheus_over_https(broker, certs, tmp):
    prom_port = free_port()
    conf = tmp / "prometheus.yml"
    conf.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sluice
    scheme: https
    tls_config:
      ca_file: {certs / 'ca.pem'}
    static_configs:
      - targets: ['localhost:{broker.mport}']
remote_write:
  - url: https://localhost:{broker.http_port}/api/v1/write
    basic_auth:
      username: {WRITER}
      password: {WRITER_SECRET}
    tls_config:
      ca_file: {certs / 'ca.pem'}
    queue_config:
      batch_send_deadline: 1s
      max_samples_per_send: 2000
""")
    log_file = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={tmp}/tsdb",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log_file, stderr=subprocess.STDOUT)
    up_key = f'up{{instance="localhost:{broker.mport}",job="sluice"}}'
    try:
        deadline = time.time() + DEADLINE_S
        ups = []
        while time.time() < deadline:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}"
            ups = [m for m in consume(broker, PROM_TOPIC, PARTITIONS, quiet_s=0.5)
                   if m.key().decode() == up_key]
            if len(ups) >= 3:
                break
            time.sleep(1)
        else:
            raise AssertionError("Prometheus did not scrape and write three times over HTTPS; "
                                 f"see {tmp}/prometheus.log")
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/metrics", timeout=10) as r:
            sent = r.read().decode().splitlines()
        failed = sum(float(line.rsplit(" ", 1)[1]) for line in sent
                     if line.startswith("prometheus_remote_storage_samples_failed_total"))
        assert failed == 0, f"Prometheus reports {failed} failed samples"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
    for m in ups:
        v = json.loads(m.value())
        assert all(s["value"] == 1 for s in v["samples"]), v
    log(f"Prometheus scraped /metrics over HTTPS and remote-wrote with basic_auth: "
        f"{len(ups)} records of up=1, none failed")


# --- 2. Influx clients over HTTPS -----------------------------------------

def influx_over_https(broker, certs, form_user, form_secret):
    before = sum(end_offsets(broker, INFLUX_TOPIC, PARTITIONS))
    url = f"https://localhost:{broker.http_port}"
    with InfluxDBClient(url=url, token=f"{WRITER}:{WRITER_SECRET}", org="o",
                        ssl_ca_cert=str(certs / "ca.pem")) as client:
        api = client.write_api(write_options=SYNCHRONOUS)
        for start in range(0, INFLUX_POINTS, 100):
            api.write(bucket="b", record=[
                Point("cpu").tag("host", f"h{i % 4}").field("seq", i)
                .time(1_700_000_000_000_000_000 + i, WritePrecision.NS)
                for i in range(start, start + 100)])
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
         str(certs / "ca.pem"), "-u", f"{WRITER}:{WRITER_SECRET}", "-XPOST",
         f"{url}/write?db=x&precision=s", "--data-binary", "mem,host=a free=1i 1700000000"],
        capture_output=True, timeout=DEADLINE_S)
    assert out.stdout == b"204", (out.stdout, out.stderr)
    query = urllib.parse.urlencode({"db": "x", "u": form_user, "p": form_secret})
    status, _, text = request(f"{url}/write?{query}", certs / "ca.pem",
                              b"mem,host=b free=2i 1700000000000000000\n")
    assert status == 204, (status, text)
    after = sum(end_offsets(broker, INFLUX_TOPIC, PARTITIONS))
    assert after - before == INFLUX_POINTS + 2, (before, after)
    log(f"influxdb-client (token user:password, {INFLUX_POINTS} points), curl -u, and "
        "/write?u=&p= (form-encoded password) over HTTPS: all stored")


def bearer_tokens(broker, certs, keys):
    """JWTs, checked as OAUTHBEARER tokens are, in both header forms;
    an expired token and one signed by a key outside the JWKS are refused
    and store nothing."""
    ca = certs / "ca.pem"
    url = f"https://localhost:{broker.http_port}"
    before = sum(end_offsets(broker, INFLUX_TOPIC, PARTITIONS))
    good = token(keys.rsa, sub="fleet-writer")
    for header in (f"Bearer {good}", f"Token {good}"):
        status, _, text = request(f"{url}/api/v2/write?bucket=b&precision=s", ca,
                                  b"disk,host=t used=1i 1700000000\n", {"Authorization": header})
        assert status == 204, (header.split()[0], status, text)
    assert sum(end_offsets(broker, INFLUX_TOPIC, PARTITIONS)) - before == 2
    for why, tok in (("expired", token(keys.rsa, lifetime_s=-120)),
                     ("foreign key", token(keys.foreign)),
                     ("alg none", unsigned())):
        status, _, text = request(f"{url}/api/v2/write?bucket=b", ca,
                                  b"disk,host=t used=2i 1700000000000000000\n",
                                  {"Authorization": f"Bearer {tok}"})
        assert status == 401, (why, status, text)
    assert sum(end_offsets(broker, INFLUX_TOPIC, PARTITIONS)) - before == 2
    log("bearer tokens (Authorization: Bearer and Influx's Token JWT) accepted; expired, "
        "foreign-key and alg=none tokens refused with 401, nothing stored")


# --- 3. Refusals store nothing --------------------------------------------

def refusals(broker, certs):
    ca = certs / "ca.pem"
    url = f"https://localhost:{broker.http_port}"
    before = offsets(broker)
    failed_before = scrape(broker, ca, "sluice_http_authentications_failed_total").get(
        'sluice_http_authentications_failed_total{listener="ingest"}', 0)
    rw = WriteRequest()
    ts = rw.timeseries.add()
    ts.labels.add(name="__name__", value="refused")
    ts.samples.add(value=1, timestamp=1)
    rw_body = snappy(rw.SerializeToString())
    rw_headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                  "X-Prometheus-Remote-Write-Version": "0.1.0"}
    line = b"cpu,host=z seq=999i 1700000000000000000\n"
    cases = [
        ("wrong password", "/write?db=x", line, {"Authorization": basic(WRITER, "nope")}),
        ("unknown user", "/write?db=x", line, {"Authorization": basic("nobody", "x")}),
        ("no credentials", "/api/v2/write?bucket=b", line, {}),
        ("wrong Token", "/api/v2/write?bucket=b", line,
         {"Authorization": f"Token {WRITER}:nope"}),
        ("wrong u and p", f"/write?db=x&u={WRITER}&p=nope", line, {}),
        ("a bearer token", "/api/v2/write?bucket=b", line, {"Authorization": "Bearer abc"}),
        ("malformed Basic", "/write?db=x", line, {"Authorization": "Basic !!!"}),
        ("remote-write, wrong password", "/api/v1/write", rw_body,
         {**rw_headers, "Authorization": basic(WRITER, "nope")}),
        ("remote-write, no credentials", "/api/v1/write", rw_body, rw_headers),
    ]
    for why, path, body, headers in cases:
        status, got, text = request(url + path, ca, body, headers)
        assert status == 401, f"{why}: {status} {text!r}"
        assert got.get("WWW-Authenticate") == 'Basic realm="sluice"', f"{why}: {got}"
        err = json.loads(text)
        assert err["code"] == "unauthorized" and err["message"], f"{why}: {err}"
        assert b"nope" not in text, f"{why}: the answer repeats the password"
    status, _, _ = request(url + "/ping", ca)
    assert status == 204, "/ping needs no credentials"
    status, _, _ = request(url + "/health", ca)
    assert status == 204, "/health needs no credentials"
    assert offsets(broker) == before, (offsets(broker), before)
    failed = scrape(broker, ca, "sluice_http_authentications_failed_total")[
        'sluice_http_authentications_failed_total{listener="ingest"}']
    assert failed - failed_before == len(cases), (failed, failed_before)
    logged = (Path(broker.data_dir).parent / "sluice.log").read_text()
    assert "nope" not in logged, "a tried password reached the log"
    assert 'user="nobody"' in logged, "the user name tried is logged"
    log(f"{len(cases)} writes refused with 401 (wrong password, unknown user, none, Token, "
        "u/p, bearer, malformed; Influx and remote-write), counted, nothing stored; "
        "/ping and /health open")


# --- 4. A changed password ------------------------------------------------

def alter_password(broker, certs, user, password):
    from kafka import KafkaAdminClient
    from kafka.admin import UserScramCredentialUpsertion
    admin = KafkaAdminClient(**kp_config(f"localhost:{broker.sasl_ssl}", certs, "SCRAM-SHA-512",
                                         "admin", ADMIN_SECRET))
    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, "SCRAM-SHA-512", password)])
    admin.close()
    assert errors == {user: None}, errors


def write_status(broker, certs, user, password):
    status, _, _ = request(f"https://localhost:{broker.http_port}/write?db=x",
                           certs / "ca.pem", b"pw,host=a v=1i 1700000000000000000\n",
                           {"Authorization": basic(user, password)})
    return status


def changed_password(broker, certs):
    # Cached on every shard by now: connections spread over both.
    for _ in range(6):
        assert write_status(broker, certs, WRITER, WRITER_SECRET) == 204
    alter_password(broker, certs, WRITER, "rotated-secret")
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        statuses = {write_status(broker, certs, WRITER, WRITER_SECRET) for _ in range(6)}
        if statuses == {401}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the old password still passes: {statuses}")
    assert {write_status(broker, certs, WRITER, "rotated-secret") for _ in range(6)} == {204}
    log("a changed password: the old one refused on every shard, the new one accepted")


# --- 5. HTTPS: plain HTTP refused, SIGHUP rotation -------------------------

def plain_http_refused(broker, certs):
    ca = certs / "ca.pem"
    before = scrape(broker, ca, "sluice_tls_handshakes_failed_total")[
        "sluice_tls_handshakes_failed_total"]
    out = subprocess.run(["curl", "-sS", "--cacert", str(ca),
                          f"https://localhost:{broker.mport}/metrics"],
                         capture_output=True, timeout=DEADLINE_S)
    assert out.returncode == 0 and b"sluice_requests_total" in out.stdout, out.stderr
    for port, path in [(broker.mport, "/health"), (broker.http_port, "/ping")]:
        out = subprocess.run(["curl", "-sS", "-m", "10", f"http://localhost:{port}{path}"],
                             capture_output=True, timeout=DEADLINE_S)
        assert out.returncode != 0, f"plain HTTP was served on HTTPS port {port}: {out.stdout!r}"
        out = subprocess.run(["curl", "-sS", "-m", "10", "--cacert", str(ca),
                              f"https://localhost:{port}{path}"],
                             capture_output=True, timeout=DEADLINE_S)
        assert out.returncode == 0, f"HTTPS on {port} stopped serving: {out.stderr!r}"
    after = scrape(broker, ca, "sluice_tls_handshakes_failed_total")[
        "sluice_tls_handshakes_failed_total"]
    assert after - before == 2, (before, after)
    log("curl --cacert /metrics over HTTPS; plain HTTP on both HTTPS ports fails, is counted, "
        "and they keep serving")


def rotation(broker, certs):
    # A new certificate from another CA replaces the files in place.
    (certs / "rotated.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=localhost", "-keyout", "rotated.key", "-out", "rotated.csr", cwd=certs)
    openssl("x509", "-req", "-in", "rotated.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "rotated.ext", "-out", "rotated.pem",
            cwd=certs)
    shutil.copy(certs / "rotated.pem", certs / "server.pem")
    shutil.copy(certs / "rotated.key", certs / "server.key")
    broker.proc.send_signal(signal.SIGHUP)
    other = certs / "other-ca.pem"
    for port, path in [(broker.mport, "/health"), (broker.http_port, "/ping")]:
        deadline = time.time() + DEADLINE_S
        while True:
            out = subprocess.run(["curl", "-sS", "-m", "10", "--cacert", str(other),
                                  f"https://localhost:{port}{path}"],
                                 capture_output=True, timeout=DEADLINE_S)
            if out.returncode == 0:
                break
            assert time.time() < deadline, f"port {port} kept the old certificate: {out.stderr!r}"
            time.sleep(0.2)
        out = subprocess.run(["curl", "-sS", "-m", "10", "--cacert", str(certs / "ca.pem"),
                              f"https://localhost:{port}{path}"],
                             capture_output=True, timeout=DEADLINE_S)
        assert out.returncode != 0, f"port {port} still presents the old certificate"
    log("SIGHUP: both HTTPS endpoints present the new certificate to new connections")


# --- 6. Basic over plain HTTP needs the explicit setting -------------------

def basic_over_http_refused(binary, tmp):
    out = subprocess.run(
        [binary, "serve", "--data-dir", str(tmp / "refused"), "--listen",
         f"127.0.0.1:{free_port()}", "--metrics-listen", "", "--ingest-http-listen",
         f"127.0.0.1:{free_port()}", "--ingest-http-auth", "basic"],
        capture_output=True, timeout=DEADLINE_S)
    err = out.stderr.decode()
    assert out.returncode != 0, "basic auth over plain HTTP started"
    assert "ingest_http_auth" in err and "ingest_http_tls" in err, err
    log("basic over plain HTTP without --ingest-http-auth-insecure: refused at start-up")


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-ingest-sec-") as tmp:
        tmp = Path(tmp)
        certs = tmp / "certs"
        certs.mkdir()
        make_certs(certs)
        seeds = tmp / "scram-bootstrap"
        seeds.write_text(f"admin:SCRAM-SHA-512:{ADMIN_SECRET}\n"
                         f"{WRITER}:SCRAM-SHA-512:{WRITER_SECRET}\n")
        keys = Keys()
        (tmp / "jwks.json").write_bytes(keys.jwks((keys.rsa, "k1")))
        broker = Broker(tmp / "data", certs, seeds)
        broker.start()
        try:
            create_topics(broker)
            prometheus_over_https(broker, certs, tmp)
            form_user, form_secret = "telegraf", "p&ss word+1:%é"
            alter_password(broker, certs, form_user, form_secret)
            influx_over_https(broker, certs, form_user, form_secret)
            bearer_tokens(broker, certs, keys)
            refusals(broker, certs)
            changed_password(broker, certs)
            plain_http_refused(broker, certs)
            rotation(broker, certs)
            basic_over_http_refused(broker.binary(), tmp)
            broker.stop()
        finally:
            broker.kill()
    log("PASS")


if __name__ == "__main__":
    main()

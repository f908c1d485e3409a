"""SASL/OAUTHBEARER and KIP-368 re-authentication with independent clients.

Keys and tokens are made here (cryptography, PyJWT); three real `sluice`
processes check them:

- A, its JWKS in a file, issuer and audiences expected: confluent-kafka
  (an oauth_cb signing RS256) and kafka-python (a token provider) create a
  topic, produce and consume in a group over SASL_SSL. Expired, wrong
  issuer, wrong audience, another key under a known kid, an unknown kid,
  alg=none and malformed tokens are refused with SASL_AUTHENTICATION_FAILED,
  each counted and logged with its reason.
- B, its JWKS served over http:// by a server in this script,
  --connections-max-reauth-ms 3000: a key added at the provider (new kid)
  works at its first token; a confluent-kafka producer producing for ~10 s
  re-authenticates (counted in sluice_sasl_reauthentications) and every
  record is acknowledged and stored once, no session expiring. A client
  written here over a socket checks the protocol itself: session_lifetime_ms
  (the reauth bound, or the token's lifetime when shorter), the
  invalid_token challenge, a connection closed at its first request after
  its session expired, and re-authentications that change the principal or
  the mechanism refused with Kafka's messages.
- C, --oauth-unsecured-jwt: librdkafka's own unsecured JWT.

A JWKS that cannot be read stops start-up with its path. Run by
scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import json
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker as PlainBroker, free_port  # noqa: E402
from tls import make_certs  # noqa: E402

RECORDS = 40
DEADLINE_S = 30
ISSUER = "https://idp.sluice.test"
AUDIENCE = "sluice"
SASL_AUTHENTICATION_FAILED = 58


def log(msg):
    print(f"[oauth] {msg}", flush=True)


class Broker(PlainBroker):
    """A broker with SASL listeners (`protocols`) and its metrics port."""

    def __init__(self, data_dir, protocols, extra_args):
        self.ports = {p: free_port() for p in protocols}
        self.mport = free_port()
        super().__init__(data_dir, extra_args=list(extra_args) + [
            "--metrics-listen", f"127.0.0.1:{self.mport}"])

    def start(self):
        listeners = ",".join([f"PLAINTEXT://{self.addr}"] + [
            f"{p}://127.0.0.1:{port}" for p, port in self.ports.items()])
        args = [self.binary(), "serve", "--listeners", listeners,
                "--data-dir", str(self.data_dir)] + self.extra_args
        self.log_path = Path(self.data_dir).parent / "sluice.log"
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT)
        port = next(iter(self.ports.values()))
        start = time.time()
        while time.time() - start < DEADLINE_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sluice did not start listening")

    def bootstrap(self, protocol):
        return f"localhost:{self.ports[protocol]}"

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def metric(self, name, **labels):
        """A counter summed over the series whose labels include `labels`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}(?:_total)?(?:\{{(.*)\}})? (\S+)$", line)
            if not m:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total


# --- keys and tokens ----------------------------------------------------------

class Keys:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @staticmethod
    def jwk(key, kid):
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) \
            else jwt.algorithms.ECAlgorithm
        out = algorithm.to_jwk(key.public_key(), as_dict=True)
        out.update(kid=kid, use="sig")
        return out

    def jwks(self, *pairs):
        return json.dumps({"keys": [self.jwk(k, kid) for k, kid in pairs]}).encode()


def token(key, kid="k1", alg="RS256", sub="alice", lifetime_s=60, **override):
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + lifetime_s, "iss": ISSUER,
              "aud": [AUDIENCE, "other"], "scope": "produce"}
    claims.update(override)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def unsigned(sub="alice", lifetime_s=60):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + lifetime_s, "iss": ISSUER,
                       "aud": AUDIENCE}, None, algorithm="none")


def expiry(tok):
    try:
        return jwt.decode(tok, options={"verify_signature": False})["exp"]
    except jwt.exceptions.DecodeError:
        return 0


# --- clients ------------------------------------------------------------------

def confluent_conf(bootstrap, make_token, certs=None, principal="alice"):
    def oauth_cb(_config):
        # librdkafka keeps a token until shortly before the expiry given
        # here, and refuses one already past it: an expired JWT must still
        # reach the broker.
        t = make_token()
        return t, max(expiry(t), time.time() + 60), principal, {}
    conf = {"bootstrap.servers": bootstrap, "sasl.mechanisms": "OAUTHBEARER",
            "oauth_cb": oauth_cb}
    if certs:
        conf.update({"security.protocol": "SASL_SSL", "ssl.ca.location": str(certs / "ca.pem")})
    else:
        conf["security.protocol"] = "SASL_PLAINTEXT"
    return conf


def records(client):
    return [(f"key-{i}".encode(), f"{client}/record-{i}".encode() * (1 + i % 5))
            for i in range(RECORDS)]


def consume_confluent(conf, topic, group, count):
    from confluent_kafka import Consumer
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, end = [], time.time() + DEADLINE_S
    while len(got) < count and time.time() < end:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value()))
    c.close()
    return got


def run_confluent(conf, topic):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(timeout=DEADLINE_S)
    assert topic in admin.list_topics(timeout=DEADLINE_S).topics
    p = Producer(conf)
    want = records(topic)
    for k, v in want:
        p.produce(topic, key=k, value=v)
    assert p.flush(DEADLINE_S) == 0
    got = consume_confluent(conf, topic, topic, RECORDS)
    assert sorted(got) == sorted(want), f"confluent-kafka: {len(got)} records back of {RECORDS}"


def run_kafka_python(bootstrap, certs, make_token):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        def token(self):
            return make_token()

    conf = dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Provider(),
                ssl_cafile=str(certs / "ca.pem"))
    topic = "oauth-kafka-python"
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
    assert sorted(got) == sorted(want), f"kafka-python: {len(got)} records back of {RECORDS}"


def refused(conf):
    """What librdkafka reports when it cannot authenticate, or None if it
    was served."""
    from confluent_kafka.admin import AdminClient
    errors = []
    admin = None
    try:
        admin = AdminClient({**conf, "log_level": 0,
                             "error_cb": lambda e: errors.append(e.str())})
        admin.list_topics(timeout=4)
        return None
    except Exception as e:  # noqa: BLE001: what was reported is checked below
        if admin is not None:
            admin.poll(0)
        return " | ".join(errors) or str(e)


# --- a client over a socket, for the protocol's details -------------------------

class Raw:
    """Kafka requests written by hand: SaslHandshake v1, SaslAuthenticate
    v1, ApiVersions v0."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.correlation = 0

    def request(self, api_key, version, body):
        self.correlation += 1
        client = b"raw"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client)) + client
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = self.read(4)
        if size is None:
            return None
        data = self.read(struct.unpack(">i", size)[0])
        assert data is not None and struct.unpack(">i", data[:4])[0] == self.correlation
        return data[4:]

    def read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                return None
            out += chunk
        return out

    def handshake(self, mechanism="OAUTHBEARER"):
        m = mechanism.encode()
        body = self.request(17, 1, struct.pack(">h", len(m)) + m)
        return struct.unpack(">h", body[:2])[0]

    def authenticate(self, auth_bytes):
        """(error code, error message, auth bytes, session lifetime ms)."""
        body = self.request(36, 1, struct.pack(">i", len(auth_bytes)) + auth_bytes)
        error, n = struct.unpack(">hh", body[:4])
        pos = 4
        message = None
        if n >= 0:
            message = body[pos:pos + n].decode()
            pos += n
        (size,) = struct.unpack(">i", body[pos:pos + 4])
        pos += 4
        data = body[pos:pos + size]
        pos += size
        (lifetime,) = struct.unpack(">q", body[pos:pos + 8])
        return error, message, data, lifetime

    def login(self, tok):
        assert self.handshake() == 0
        return self.authenticate(b"n,,\x01auth=Bearer " + tok.encode() + b"\x01\x01")

    def api_versions(self):
        """True if answered, False if the broker closed the connection."""
        try:
            return self.request(18, 0, b"") is not None
        except (ConnectionResetError, BrokenPipeError):
            return False

    def close(self):
        self.sock.close()


# --- the JWKS provider ------------------------------------------------------------

class Provider:
    """Serves a JWKS over http:// and counts its fetches."""

    def __init__(self, jwks):
        self.jwks = jwks
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                provider.fetches += 1
                body = provider.jwks
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# --- the scenarios -------------------------------------------------------------------

def broker_a(tmp, certs, keys):
    jwks = tmp / "jwks.json"
    jwks.write_bytes(keys.jwks((keys.rsa, "k1")))
    a = Broker(tmp / "a" / "data", ["SASL_SSL"], [
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
        "--sasl-mechanisms", "OAUTHBEARER", "--oauth-jwks", str(jwks),
        "--oauth-expected-issuer", ISSUER, "--oauth-expected-audience", f"elsewhere,{AUDIENCE}"])
    (tmp / "a").mkdir()
    a.start()
    try:
        bootstrap = a.bootstrap("SASL_SSL")
        started = time.time()
        run_confluent(confluent_conf(bootstrap, lambda: token(keys.rsa), certs), "oauth-confluent")
        log(f"confluent-kafka (oauth_cb, RS256): created a topic, produced {RECORDS}, consumed "
            f"them in a group ({time.time() - started:.1f}s)")
        started = time.time()
        run_kafka_python(bootstrap, certs, lambda: token(keys.rsa, sub="bob"))
        log(f"kafka-python (token provider): the same ({time.time() - started:.1f}s)")

        before = a.metric("sluice_sasl_authentications_failed", mechanism="OAUTHBEARER")
        cases = [
            ("an expired token", lambda: token(keys.rsa, lifetime_s=-120), "the token expired"),
            ("a wrong issuer", lambda: token(keys.rsa, iss="https://evil.test"), "issuer"),
            ("a wrong audience", lambda: token(keys.rsa, aud="other"), "audience"),
            ("another key under a known kid", lambda: token(keys.foreign), "signature does not verify"),
            ("an unknown kid", lambda: token(keys.foreign, kid="kx"), "no key with kid \"kx\""),
            ("alg=none", unsigned, "accepted only with oauth_unsecured_jwt"),
            ("a malformed token", lambda: "not-a-jwt", "a JWT has 3 dot-separated parts"),
        ]
        for why, make, reason in cases:
            e = refused(confluent_conf(bootstrap, make, certs))
            assert e and "invalid_token" in e, f"{why}: got {e!r}"
            assert reason in a.log_text(), f"{why}: the log does not say {reason!r}"
        after = a.metric("sluice_sasl_authentications_failed", mechanism="OAUTHBEARER")
        assert after - before >= len(cases), f"failures counted: {after - before}"
        log(f"refused with invalid_token, each logged with its reason and counted: "
            f"{', '.join(c[0] for c in cases)}")
        a.stop()
    finally:
        a.kill()


def broker_b(tmp, keys):
    provider = Provider(keys.jwks((keys.rsa, "k1")))
    b = Broker(tmp / "b" / "data", ["SASL_PLAINTEXT"], [
        "--sasl-mechanisms", "OAUTHBEARER,SCRAM-SHA-512", "--oauth-jwks", provider.url,
        "--oauth-jwks-refresh-min-ms", "500", "--connections-max-reauth-ms", "3000"])
    (tmp / "b").mkdir()
    b.start()
    try:
        port = b.ports["SASL_PLAINTEXT"]
        bootstrap = b.bootstrap("SASL_PLAINTEXT")
        assert provider.fetches == 1, f"{provider.fetches} fetches at start"

        # Rotation: a key added at the provider works at its first token.
        provider.jwks = keys.jwks((keys.rsa, "k1"), (keys.ec, "k2"))
        conf = confluent_conf(bootstrap, lambda: token(keys.ec, kid="k2", alg="ES256"))
        assert refused(conf) is None, "a token of the new key was refused"
        assert provider.fetches == 2, f"{provider.fetches} fetches"
        log("JWKS over http://: a key added at the provider (kid k2, ES256) was fetched at its "
            "first token and accepted")

        raw_protocol(b, port, keys)
        reauth_producer(b, bootstrap, keys)
        b.stop()
    finally:
        b.kill()
        provider.server.shutdown()


def raw_protocol(b, port, keys):
    # The session lifetime: the reauth bound, or the token's when shorter.
    r = Raw(port)
    error, message, data, lifetime = r.login(token(keys.rsa))
    assert (error, data) == (0, b""), (error, message)
    assert 2500 <= lifetime <= 3000, f"session_lifetime_ms {lifetime}, want the 3000 bound"
    r.close()
    r = Raw(port)
    error, message, _, lifetime = r.login(token(keys.rsa, lifetime_s=2))
    assert error == 0, message
    assert 0 < lifetime <= 2000, f"session_lifetime_ms {lifetime}, want the token's ~2000"
    assert r.api_versions(), "served within the session"
    expired_before = b.metric("sluice_sasl_sessions_expired")
    time.sleep(lifetime / 1000 + 0.5)
    assert not r.api_versions(), "served after the session expired"
    r.close()
    assert b.metric("sluice_sasl_sessions_expired") == expired_before + 1
    log(f"session_lifetime_ms is min(3000, the token's life) ({lifetime} ms for a 2 s token); "
        "the first request after the session's end closes the connection, counted")

    # An invalid token gets Kafka's challenge, and the client's ^A the failure.
    r = Raw(port)
    error, message, data, _ = r.login(token(keys.rsa, lifetime_s=-120))
    assert (error, data) == (0, b'{"status":"invalid_token"}'), (error, message, data)
    error, message, _, _ = r.authenticate(b"\x01")
    assert (error, message) == (SASL_AUTHENTICATION_FAILED, '{"status":"invalid_token"}')
    r.close()
    r = Raw(port)
    assert r.handshake() == 0
    error, message, _, _ = r.authenticate(b"n,,\x01auth=Basic abc\x01\x01")
    assert error == SASL_AUTHENTICATION_FAILED and "Invalid scheme" in message, message
    r.close()
    log("an invalid token is answered {\"status\":\"invalid_token\"} and fails at the "
        "client's ^A; a malformed client message fails at once")

    # Re-authentication on the same connection: same principal, then
    # another principal, then another mechanism.
    reauths = b.metric("sluice_sasl_reauthentications", mechanism="OAUTHBEARER")
    r = Raw(port)
    assert r.login(token(keys.rsa))[0] == 0
    assert r.api_versions()
    error, message, _, lifetime = r.login(token(keys.rsa))
    assert error == 0 and lifetime > 0, message
    assert r.api_versions(), "served after re-authenticating"
    assert b.metric("sluice_sasl_reauthentications", mechanism="OAUTHBEARER") == reauths + 1
    error, message, _, _ = r.login(token(keys.rsa, sub="mallory"))
    assert error == SASL_AUTHENTICATION_FAILED, message
    assert message == "Cannot change principals during re-authentication from User.alice: " \
                      "User.mallory", message
    assert not r.api_versions(), "the connection stays open after a refused re-authentication"
    r.close()
    r = Raw(port)
    assert r.login(token(keys.rsa))[0] == 0
    assert r.handshake("SCRAM-SHA-512") == 0, "Kafka answers the handshake"
    error, message, _, _ = r.authenticate(b"n,,n=alice,r=abcdef")
    assert error == SASL_AUTHENTICATION_FAILED, message
    assert "not supported for re-authentication of mechanism 'OAUTHBEARER'" in message, message
    r.close()
    log("re-authentication on an open connection: the same principal is served on; another "
        "principal or mechanism is refused with Kafka's message and the connection closed")


def reauth_producer(b, bootstrap, keys):
    """A producer that runs past several 3 s sessions keeps working."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    conf = confluent_conf(bootstrap, lambda: token(keys.rsa))
    topic = "oauth-reauth"
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(timeout=DEADLINE_S)
    reauths = b.metric("sluice_sasl_reauthentications", mechanism="OAUTHBEARER")
    expired = b.metric("sluice_sasl_sessions_expired")
    acked, failed = [], []

    def report(err, msg):
        (failed if err else acked).append(err or msg.value())

    p = Producer({**conf, "linger.ms": 5})
    sent = []
    start = time.time()
    # One record every 25 ms for 10 s: several sessions of 3 s.
    while len(sent) < 400:
        value = f"r-{len(sent)}".encode()
        p.produce(topic, value=value, on_delivery=report)
        sent.append(value)
        p.poll(0)
        time.sleep(max(0.0, start + len(sent) * 0.025 - time.time()))
    assert p.flush(DEADLINE_S) == 0
    assert not failed, f"deliveries failed: {failed[:3]}"
    assert sorted(acked) == sorted(sent), f"{len(acked)} acknowledged of {len(sent)}"
    done = b.metric("sluice_sasl_reauthentications", mechanism="OAUTHBEARER") - reauths
    assert done >= 2, f"{done} re-authentications in 10 s of 3 s sessions"
    assert b.metric("sluice_sasl_sessions_expired") == expired, "a session expired"
    got = [v for _, v in consume_confluent(conf, topic, "oauth-reauth", len(sent))]
    assert sorted(got) == sorted(sent), f"{len(got)} stored of {len(sent)} (or duplicates)"
    log(f"confluent-kafka produced {len(sent)} records over 10 s with 3 s sessions: "
        f"{int(done)} re-authentications, every record acknowledged and stored once, "
        "no session expired")


def broker_c(tmp):
    c = Broker(tmp / "c" / "data", ["SASL_PLAINTEXT"], [
        "--sasl-mechanisms", "OAUTHBEARER", "--oauth-unsecured-jwt"])
    (tmp / "c").mkdir()
    c.start()
    try:
        assert "oauth_unsecured_jwt is on" in c.log_text(), "no warning at start"
        from confluent_kafka import Producer
        conf = {"bootstrap.servers": c.bootstrap("SASL_PLAINTEXT"),
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER",
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=unsecured-user scope=test"}
        p = Producer(conf)
        want = records("unsecured")
        for k, v in want:
            p.produce("oauth-unsecured", key=k, value=v)
        assert p.flush(DEADLINE_S) == 0
        got = consume_confluent(conf, "oauth-unsecured", "oauth-unsecured", RECORDS)
        assert sorted(got) == sorted(want), f"{len(got)} records back of {RECORDS}"
        log("librdkafka's unsecured JWT (enable.sasl.oauthbearer.unsecure.jwt) accepted "
            "under --oauth-unsecured-jwt, with its warning at start")
        c.stop()
    finally:
        c.kill()


def bad_jwks(tmp):
    missing = tmp / "no-such-jwks.json"
    d = Broker(tmp / "d" / "data", ["SASL_PLAINTEXT"], [
        "--sasl-mechanisms", "OAUTHBEARER", "--oauth-jwks", str(missing)])
    (tmp / "d").mkdir()
    out = subprocess.run([d.binary(), "serve", "--listeners",
                          f"SASL_PLAINTEXT://127.0.0.1:{d.ports['SASL_PLAINTEXT']}",
                          "--data-dir", str(d.data_dir)] + d.extra_args,
                         capture_output=True, text=True, timeout=DEADLINE_S)
    assert out.returncode != 0 and str(missing) in out.stderr, out.stderr[-500:]
    log("a JWKS that cannot be read stops start-up, naming it")


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-oauth-") as tmp:
        tmp = Path(tmp)
        certs = tmp / "certs"
        certs.mkdir()
        make_certs(certs)
        keys = Keys()
        broker_a(tmp, certs, keys)
        broker_b(tmp, keys)
        broker_c(tmp)
        bad_jwks(tmp)
    log("PASS")


if __name__ == "__main__":
    main()

"""Log and metric shippers from Debian deliver into Sluice unchanged.

Starts a real `sluice` process with topic auto-creation on (shippers never
create their topics), then:

- collectd (collectd-core) runs in the foreground with its write_kafka plugin
  writing every value list to three topics, one per format (JSON, Command,
  Graphite), with real read plugins (cpu, memory, load, uptime, processes)
  at a 1 s interval. Numbered probe values are also pushed through collectd's
  unixsock plugin; each must arrive exactly once in every format, every JSON
  record must be a well-formed value list, and every read plugin must show.
- rsyslogd (rsyslog with rsyslog-kafka) runs privately in the foreground,
  taking syslog over TCP on a loopback port and writing it with omkafka as
  JSON. Every numbered message sent must arrive exactly once with its text,
  and omkafka must report no failed message.

Neither touches the system's collectd or rsyslog, nor /dev/log. Run by
scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import datetime
import grp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import Broker, free_port  # noqa: E402

PARTITIONS = 3
DEADLINE_S = 60
HOST = "sluice-shippers"
READ_PLUGINS = ["cpu", "memory", "load", "uptime", "processes"]
# Read intervals every read plugin must have delivered: a sustained stream,
# not just the first burst.
INTERVALS = 3
CD_TOPICS = {"json": "collectd", "command": "collectd-command", "graphite": "collectd-graphite"}
PROBES = 200
SYSLOG_TOPIC = "syslog"
MESSAGES = 500
WRITE_KAFKA = Path("/usr/lib/collectd/write_kafka.so")
OMKAFKA = Path("/usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so")


def log(msg):
    print(f"[shippers] {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"[shippers] FAILED: {msg}")


class Child:
    """A shipper run in the foreground; stopped by its own PID only."""

    def __init__(self, name, args, out_path):
        self.name = name
        self.out_path = out_path
        self.out = open(out_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def check_alive(self):
        if self.proc.poll() is not None:
            fail(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")

    def output(self):
        self.out.flush()
        return Path(self.out_path).read_text(errors="replace")

    def stop(self):
        start = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail(f"{self.name} still running 30 s after SIGTERM")
        self.out.close()
        if code != 0:
            fail(f"{self.name} exited with {code} on SIGTERM:\n{self.output()}")
        log(f"{self.name} stopped with SIGTERM in {time.time() - start:.2f} s")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.out.closed:
            self.out.close()


def wait_topics(addr, topics, child):
    """The shipper's first produce creates its topics; wait for them to exist."""
    admin = AdminClient({"bootstrap.servers": addr})
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        child.check_alive()
        md = admin.list_topics(timeout=10)
        parts = {t: len(md.topics[t].partitions) for t in topics if t in md.topics}
        if len(parts) == len(topics) and all(parts.values()):
            return parts
        time.sleep(0.2)
    fail(f"topics {sorted(topics)} not created within {DEADLINE_S} s")


class Reader:
    """Reads topics from the beginning of every partition."""

    def __init__(self, addr, parts):
        self.c = Consumer({"bootstrap.servers": addr, "group.id": "shippers-check",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.c.assign([TopicPartition(t, p, 0) for t, n in parts.items() for p in range(n)])
        self.records = {t: [] for t in parts}

    def poll(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            for m in self.c.consume(num_messages=500, timeout=0.2):
                if m.error():
                    fail(f"consume error: {m.error()}")
                self.records[m.topic()].append(m)

    def close(self):
        self.c.close()
        # Offsets dense from 0 in every partition: the broker neither lost nor
        # repeated a batch the shipper sent.
        for t, recs in self.records.items():
            by_part = {}
            for m in recs:
                by_part.setdefault(m.partition(), []).append(m.offset())
            for p, offs in by_part.items():
                if offs != list(range(len(offs))):
                    fail(f"{t}/{p}: offsets not dense from 0: {offs[:20]}...")


# ---------------------------------------------------------------- collectd

def collectd_conf(tmp, addr, sock):
    plugins = "\n".join(f"LoadPlugin {p}" for p in READ_PLUGINS)
    topics = "\n".join(f'  <Topic "{t}">\n    Format {fmt.capitalize()}\n  </Topic>'
                       for fmt, t in CD_TOPICS.items())
    # Hostname set explicitly: no DNS lookup, and the records are checkable.
    return f"""
Hostname "{HOST}"
FQDNLookup false
BaseDir "{tmp}"
PIDFile "{tmp}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval 1
# One write thread dispatches the probes in the order sent: with several, a
# probe can reach collectd's value cache after a later one ("Value too old").
WriteThreads 1
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{tmp}/collectd.log"
  Timestamp true
</Plugin>
{plugins}
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "{sock}"
  SocketGroup "{grp.getgrgid(os.getgid()).gr_name}"
</Plugin>
LoadPlugin write_kafka
<Plugin write_kafka>
  Property "metadata.broker.list" "{addr}"
  Property "queue.buffering.max.ms" "50"
{topics}
</Plugin>
"""


def send_probes(sock_path, child):
    """PUTVAL numbered gauges through unixsock: values known in advance."""
    deadline = time.time() + DEADLINE_S
    while not os.path.exists(sock_path):
        child.check_alive()
        if time.time() > deadline:
            fail("collectd's unixsock socket never appeared")
        time.sleep(0.1)
    # Strictly increasing times, in the past: collectd drops a value older
    # than the last one it cached for the same identifier.
    t0 = int(time.time()) - PROBES - 10
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock_path)
        f = s.makefile("rwb")
        for i in range(PROBES):
            f.write(f"PUTVAL {HOST}/probe/gauge-seq interval=1 {t0 + i}:{i}\n".encode())
            f.flush()
            reply = f.readline().decode()
            if not reply.startswith("0 "):
                fail(f"collectd refused probe {i}: {reply.strip()}")
    return t0


def check_value_list(o, now):
    for k in ("values", "dstypes", "dsnames", "time", "interval", "host", "plugin",
              "plugin_instance", "type", "type_instance"):
        if k not in o:
            fail(f"collectd JSON lacks {k!r}: {o}")
    if not (len(o["values"]) == len(o["dstypes"]) == len(o["dsnames"]) >= 1):
        fail(f"collectd JSON values/dstypes/dsnames differ in length: {o}")
    if not set(o["dstypes"]) <= {"gauge", "derive", "counter", "absolute"}:
        fail(f"collectd JSON dstypes: {o['dstypes']}")
    if o["host"] != HOST:
        fail(f"collectd JSON host {o['host']!r}")
    if o["plugin"] != "probe" and abs(o["time"] - now) > 300:
        fail(f"collectd JSON time {o['time']} far from now {now}")


def collectd_done(reader, t0):
    """(probes seen per format, read plugins seen in INTERVALS reads) so far."""
    probes = {fmt: [] for fmt in CD_TOPICS}
    times = {}
    cmd_re = re.compile(rf"^PUTVAL {HOST}/probe/gauge-seq interval=1\.000 (\d+)(?:\.0+)?:(\S+)$")
    gr_re = re.compile(rf"^{HOST}\.probe\.gauge-seq (\S+) (\d+)$")
    now = time.time()
    for m in reader.records[CD_TOPICS["json"]]:
        try:
            v = json.loads(m.value())
        except ValueError:
            fail(f"collectd JSON record does not parse: {m.value()[:200]!r}")
        if not isinstance(v, list) or not v:
            fail(f"collectd JSON record is not a list of value lists: {v!r:.200}")
        for o in v:
            check_value_list(o, now)
            times.setdefault(o["plugin"], set()).add(o["time"])
            if o["plugin"] == "probe":
                probes["json"].append((round(o["time"]) - t0, o["values"][0]))
    for m in reader.records[CD_TOPICS["command"]]:
        text = m.value().decode()
        if not text.startswith(f"PUTVAL {HOST}/"):
            fail(f"collectd Command record: {text[:200]!r}")
        hit = cmd_re.match(text.strip())
        if hit:
            probes["command"].append((int(hit[1]) - t0, float(hit[2])))
    for m in reader.records[CD_TOPICS["graphite"]]:
        text = m.value().decode()
        # One line per data source, each ended by CRLF, all in one record.
        lines = text.split("\r\n")
        if lines[-1] != "" or len(lines) < 2:
            fail(f"collectd Graphite record: {text[:200]!r}")
        for line in lines[:-1]:
            if len(line.split(" ")) != 3:
                fail(f"collectd Graphite line: {line!r}")
            hit = gr_re.match(line)
            if hit:
                probes["graphite"].append((int(hit[2]) - t0, float(hit[1])))
    plugins = {p for p, ts in times.items() if len(ts) >= INTERVALS}
    return probes, plugins


def run_collectd(broker, tmp):
    cd_dir = tmp / "collectd"
    cd_dir.mkdir()
    sock = str(cd_dir / "collectd.sock")
    conf = cd_dir / "collectd.conf"
    conf.write_text(collectd_conf(cd_dir, broker.addr, sock))
    start = time.time()
    child = Child("collectd", ["collectd", "-f", "-C", str(conf)], cd_dir / "stdout.log")
    try:
        t0 = send_probes(sock, child)
        parts = wait_topics(broker.addr, set(CD_TOPICS.values()), child)
        reader = Reader(broker.addr, parts)
        want_probes = [(i, i) for i in range(PROBES)]
        deadline = time.time() + DEADLINE_S
        while True:
            reader.poll(1.0)
            probes, plugins = collectd_done(reader, t0)
            if all(len(p) >= PROBES for p in probes.values()) and set(READ_PLUGINS) <= plugins:
                break
            child.check_alive()
            if time.time() > deadline:
                fail(f"collectd after {DEADLINE_S} s: probes per format "
                     f"{ {f: len(p) for f, p in probes.items()} } of {PROBES}, "
                     f"plugins with {INTERVALS} reads {sorted(plugins)} (want {READ_PLUGINS})")
        took = time.time() - start
        child.stop()
        # Whatever was still in flight at SIGTERM lands too; read it so the
        # duplicate check below covers everything.
        reader.poll(2.0)
        probes, plugins = collectd_done(reader, t0)
        reader.close()
    finally:
        child.kill()
    for fmt, got in probes.items():
        if sorted(got) != want_probes:
            fail(f"collectd {fmt}: probes {len(got)} (distinct {len(set(got))}), want 0..{PROBES - 1} once")
    counts = {t: len(r) for t, r in reader.records.items()}
    used = {t: sorted({m.partition() for m in r}) for t, r in reader.records.items()}
    log(f"collectd: {PROBES} probes exactly once in each of JSON, Command and Graphite; "
        f"plugins {sorted(plugins - {'probe'})} each over {INTERVALS}+ reads; "
        f"records {counts}; partitions {used}; {took:.1f} s from start")
    problems = [line for line in (cd_dir / "collectd.log").read_text(errors="replace").splitlines()
                if re.search(r"error|fail|warn|too old|no such", line, re.I)]
    if problems:
        fail("collectd logged problems:\n" + "\n".join(problems[:20]))


# ---------------------------------------------------------------- rsyslog

def rsyslog_conf(tmp, addr, port):
    # A ruleset bound to the input: only what arrives on the port is shipped,
    # not rsyslogd's own messages.
    return f"""
global(workDirectory="{tmp}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="tokafka")
module(load="omkafka")
template(name="json" type="list" option.jsonf="on") {{
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}}
ruleset(name="tokafka") {{
  # partitions.auto: librdkafka's partitioner, over every partition; without
  # it omkafka writes all to partition 0.
  action(type="omkafka" broker=["{addr}"] topic="{SYSLOG_TOPIC}" template="json"
         partitions.auto="on" errorFile="{tmp}/omkafka-errors.json"
         confParam=["queue.buffering.max.ms=50"])
}}
"""


def message_text(i):
    # Quotes and a backslash: the JSON template must escape them.
    return f'shippers message {i:05d} "quoted" back\\slash'


def send_syslog(port, child):
    deadline = time.time() + DEADLINE_S
    while True:
        child.check_alive()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if time.time() > deadline:
                fail("rsyslogd never listened on its TCP port")
            time.sleep(0.1)
    with s:
        data = bytearray()
        for i in range(MESSAGES):
            ts = datetime.datetime.now(datetime.timezone.utc).isoformat()
            # RFC 5424, LF-framed, local4.warning.
            data += f"<164>1 {ts} {HOST} shipper {1000 + i} - - {message_text(i)}\n".encode()
        # Uneven pieces, so messages straddle reads.
        for i in range(0, len(data), 4093):
            s.sendall(data[i:i + 4093])


def run_rsyslog(broker, tmp):
    rs_dir = tmp / "rsyslog"
    rs_dir.mkdir()
    port = free_port()
    conf = rs_dir / "rsyslog.conf"
    conf.write_text(rsyslog_conf(rs_dir, broker.addr, port))
    start = time.time()
    child = Child("rsyslogd", ["rsyslogd", "-n", "-f", str(conf), "-i", str(rs_dir / "rsyslogd.pid")],
                  rs_dir / "stdout.log")
    try:
        send_syslog(port, child)
        parts = wait_topics(broker.addr, {SYSLOG_TOPIC}, child)
        reader = Reader(broker.addr, parts)
        deadline = time.time() + DEADLINE_S
        while len(reader.records[SYSLOG_TOPIC]) < MESSAGES:
            child.check_alive()
            if time.time() > deadline:
                fail(f"rsyslog: {len(reader.records[SYSLOG_TOPIC])} of {MESSAGES} messages "
                     f"after {DEADLINE_S} s")
            reader.poll(0.5)
        took = time.time() - start
        child.stop()
        reader.poll(2.0)  # anything beyond MESSAGES would be a duplicate
        reader.close()
    finally:
        child.kill()
    records = reader.records[SYSLOG_TOPIC]
    seen = {}
    for m in records:
        try:
            v = json.loads(m.value())
        except ValueError:
            fail(f"rsyslog record does not parse as JSON: {m.value()[:200]!r}")
        hit = re.match(r"shippers message (\d{5}) ", v.get("message", ""))
        if not hit:
            fail(f"rsyslog record without a numbered message: {v}")
        i = int(hit[1])
        if i in seen:
            fail(f"rsyslog message {i} arrived twice")
        seen[i] = v
        want = {"host": HOST, "app": "shipper", "procid": str(1000 + i), "severity": "warning",
                "facility": "local4", "message": message_text(i)}
        if {k: v.get(k) for k in want} != want:
            fail(f"rsyslog message {i}: got {v}, want {want}")
    if sorted(seen) != list(range(MESSAGES)):
        fail(f"rsyslog: got {len(seen)} distinct messages, want 0..{MESSAGES - 1}")
    errors = rs_dir / "omkafka-errors.json"
    if errors.exists() and errors.stat().st_size:
        fail("omkafka reported failed messages:\n" + errors.read_text()[:2000])
    used = sorted({m.partition() for m in records})
    log(f"rsyslog: {MESSAGES} messages exactly once over partitions {used}, "
        f"{took:.1f} s from start")


# ---------------------------------------------------------------- main

def main():
    for path, pkg in ((WRITE_KAFKA, "collectd-core"), (OMKAFKA, "rsyslog-kafka")):
        if not path.exists():
            fail(f"{path} missing: install {pkg} (scripts/setup.sh does)")
    work = Path(tempfile.mkdtemp(prefix="sluice-shippers-"))
    broker = Broker(work / "data", extra_args=[
        "--cores", "2", "--default-partitions", str(PARTITIONS), "--auto-create-topics", "true"])
    ok = False
    start = time.time()
    try:
        broker.start()
        log(f"sluice listening on {broker.addr}")
        run_collectd(broker, work)
        run_rsyslog(broker, work)
        broker.stop()
        ok = True
    finally:
        broker.kill()
        broker_log = work / "sluice.log"
        noted = [line for line in broker_log.read_text(errors="replace").splitlines()
                 if " WARN " in line or " ERROR " in line] if broker_log.exists() else []
        for line in noted[:20]:
            log(f"broker log: {line}")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs and data kept in {work}")
    log(f"ok in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()

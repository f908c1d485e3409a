"""A three-node cluster split by a network partition, with real processes,
real clients and a real (virtual) network.

Nodes 1 and 2 run in the root network namespace on 10.231.0.1 and
10.231.0.2; node 3 runs in its own namespace `slp3` on 10.231.0.3, joined to
the root one by the veth pair slp3a (root side, holding .1 and .2) and slp3b
(in slp3). Setting slp3a down cuts node 3 off from nodes 1 and 2 and from
the clients, which all run in the root namespace; setting it up heals the
partition. A fallback `unreachable 10.231.0.0/24` route in the root namespace
keeps traffic for node 3 from leaving by the default route while it is cut.

The topic has three partitions, replication factor 3 and
min.insync.replicas=2. An idempotent confluent-kafka producer (acks=all)
sends numbered records at a steady rate for the whole run while:

  1 the cluster forms: three brokers, an ISR of three everywhere, and the
    partitions node 3 leads are noted (placement should give it one);
  2 node 3 is cut off: the partitions it led must get a leader among nodes
    1 and 2, node 3 must leave every ISR (as nodes 1 and 2 see it), and
    acks=all must go on for every partition with an ISR of two; meanwhile a
    probe producer inside the namespace (acks=all, not idempotent: that needs
    the quorum) writes to node 3 alone, which must acknowledge nothing while
    it cannot reach any other replica;
  3 the partition heals: node 3 must be back in every ISR, and its own view
    (asked of its listener directly) must agree with nodes 1 and 2.

Then every acknowledged record, the probe's included, must be read back
exactly once (the steady producer's) at the offset its acknowledgement
named, in order within its partition; every node's log of every partition
must be the same size (DescribeLogDirs); every node must exit 0 on SIGTERM.

Node 3 is cut off whatever the Raft election gave: when it is also the
controller, nodes 1 and 2 must elect another before anything moves. The
`outcome` line names the controller before, during and after the cut, so
runs can be compared.

Node 3's own Metadata while cut off (leaders, ISR, controller) is sampled
by the probe and printed, for the record: only its acknowledgements count.
The probe is this file too, run inside the namespace by the test as
`cluster_partition.py --probe HOST:PORT`.

Run as root as `.venv/bin/python tests/python/cluster_partition.py` from the
repository root, after `ulimit -l unlimited` as scripts/test.sh does (glommio
locks its io buffers; the nodes also raise their own limit as far as they
may). Where network namespaces or veth pairs cannot be made (no
CAP_NET_ADMIN) it says why it is skipped and exits 0. The namespace, veth
pair and route (all named slp3*) left by an interrupted run are removed at
start. `SLUICE_BIN` overrides the binary (default target/debug/sluice).
"""

import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOPIC = "partition"
PARTITIONS = 3
NODES = (1, 2, 3)
RATE = 800                 # records per second, the steady producer's pace
PROBE_RATE = 50            # records per second, the probe's pace inside the namespace
START_S = 30
STOP_S = 30
CUT_DETECT_S = 10          # new leaders and node 3 out of every ISR by then
ACK_WINDOW_S = 3           # acks=all measured with an ISR of two for this long
CUT_MIN_S = 5              # node 3 stays cut off at least this long
HEAL_S = 20                # node 3 back in every ISR, views agreeing, by then
PRODUCE_MAX_S = 120        # the producer stops by itself after this, whatever happens
PROBE_MAX_S = 40           # the probe stops producing by itself after this
OVERALL_S = 150            # the whole run, set-up and clean-up aside
# librdkafka logs every connection refused or unreachable: expected here.
CLIENT_LOG_LEVEL = 2

NS = "slp3"
VETH_ROOT = "slp3a"
VETH_NS = "slp3b"
IPS = {1: "10.231.0.1", 2: "10.231.0.2", 3: "10.231.0.3"}
FALLBACK_ROUTE = ["unreachable", "10.231.0.0/24", "metric", "4000"]
# Node 3's: fixed, yet never taken, since nothing else listens in the
# namespace this test has just made.
NS_PORTS = (9092, 9093, 9094)


def log(msg):
    print(f"[partition] {msg}", flush=True)


def utc():
    """Wall-clock time as the nodes' logs print it, to find a moment there."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def binary():
    env = os.environ.get("SLUICE_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "sluice"
        if p.exists():
            return str(p)
    subprocess.run(["cargo", "build", "-p", "broker", "--bin", "sluice"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "sluice")


def ip_tool():
    return shutil.which("ip") or "/usr/sbin/ip"


def raise_memlock():
    """glommio registers its io buffers as locked memory: what `ulimit -l
    unlimited` does in scripts/test.sh, as far as this process may."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
    except (ValueError, OSError):
        pass


class Net:
    """The namespace, the veth pair and the fallback route, all of this
    test's own (prefix slp3)."""

    def __init__(self):
        self.ip = ip_tool()

    def run(self, *args):
        """(ok, output or error) of one `ip` command."""
        try:
            r = subprocess.run([self.ip, *args], capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, str(e)
        return r.returncode == 0, (r.stdout if r.returncode == 0 else r.stderr or r.stdout).strip()

    def teardown(self):
        """Removes what this test makes, if present: deleting the namespace
        deletes slp3b and with it its peer slp3a."""
        ok, out = self.run("netns", "list")
        if ok and any(line.split()[:1] == [NS] for line in out.splitlines()):
            self.run("netns", "del", NS)
        if Path(f"/sys/class/net/{VETH_ROOT}").exists():
            self.run("link", "del", VETH_ROOT)
        ok, out = self.run("route", "show", "10.231.0.0/24")
        if ok and any(line.split() == FALLBACK_ROUTE for line in out.splitlines()):
            self.run("route", "del", *FALLBACK_ROUTE)

    def setup(self):
        """None when the network is up, else why it could not be made."""
        steps = [
            ("netns", "add", NS),
            ("link", "add", VETH_ROOT, "type", "veth", "peer", "name", VETH_NS, "netns", NS),
            ("addr", "add", f"{IPS[1]}/24", "dev", VETH_ROOT),
            ("addr", "add", f"{IPS[2]}/24", "dev", VETH_ROOT),
            ("link", "set", VETH_ROOT, "up"),
            ("-n", NS, "addr", "add", f"{IPS[3]}/24", "dev", VETH_NS),
            ("-n", NS, "link", "set", VETH_NS, "up"),
            ("-n", NS, "link", "set", "lo", "up"),
            ("route", "add", *FALLBACK_ROUTE),
        ]
        for step in steps:
            ok, err = self.run(*step)
            if not ok:
                return f"`ip {' '.join(step)}` failed: {err}"
        return None

    def cut(self):
        ok, err = self.run("link", "set", VETH_ROOT, "down")
        check(ok, f"could not set {VETH_ROOT} down: {err}")

    def heal(self):
        ok, err = self.run("link", "set", VETH_ROOT, "up")
        check(ok, f"could not set {VETH_ROOT} up: {err}")

    def ns_inode(self):
        return os.stat(f"/run/netns/{NS}").st_ino


class Node:
    def __init__(self, node_id, work, ports):
        self.id = node_id
        self.work = work
        self.host = IPS[node_id]
        self.kport, self.cport, self.lport = ports[node_id]
        self.addr = f"{self.host}:{self.kport}"
        voters = ",".join(f"{n}@{IPS[n]}:{ports[n][1]}" for n in NODES)
        serve = [
            binary(), "serve", "--node-id", str(node_id),
            "--data-dir", str(work / f"n{node_id}"),
            "--listen", self.addr,
            "--controller-listen", f"{self.host}:{self.cport}",
            "--controller-voters", voters,
            "--link-listen", f"{self.host}:{self.lport}",
            "--metrics-listen", "", "--cores", "1",
            "--broker-session-timeout-ms", "2000",
            "--broker-heartbeat-interval-ms", "200",
            "--replica-lag-time-max-ms", "3000",
        ]
        # `ip netns exec` enters the namespace and execs the command: the
        # process Popen starts becomes the broker itself (checked at start).
        self.in_ns = node_id == 3
        self.args = [ip_tool(), "netns", "exec", NS, *serve] if self.in_ns else serve
        self.log_path = work / f"n{node_id}.log"
        self.proc = None
        self.log_file = None

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     preexec_fn=raise_memlock)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_exec(self, ns_inode):
        """That the PID Popen gave is the broker, in the namespace."""
        pid = self.proc.pid
        deadline = time.monotonic() + 5
        exe = None
        while time.monotonic() < deadline:
            check(self.alive(), f"node {self.id} exited with {self.proc.returncode} at start")
            try:
                exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
                net = os.readlink(f"/proc/{pid}/ns/net")
            except OSError:
                exe = net = None
            if exe and os.path.basename(exe) == os.path.basename(binary()):
                check(net == f"net:[{ns_inode}]",
                      f"node {self.id} (pid {pid}) is in {net}, not in namespace {NS} (net:[{ns_inode}])")
                return pid, exe
            time.sleep(0.05)
        raise Failure(f"pid {pid} of node {self.id} is still {exe}, not the broker, after 5s")

    def wait_listening(self, deadline):
        while time.monotonic() < deadline:
            check(self.alive(), f"node {self.id} exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection((self.host, self.kport), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise Failure(f"node {self.id} did not listen on {self.addr} within {START_S}s")

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.log_file:
            self.log_file.close()
            self.log_file = None

    def wait_exit(self, started):
        """After SIGTERM: (exit code or None if still running, seconds)."""
        try:
            code = self.proc.wait(max(0.1, STOP_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            code = None
        if self.log_file:
            self.log_file.close()
            self.log_file = None
        return code, time.monotonic() - started

    def tail(self, lines=40):
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as e:
            return [f"(no log: {e})"]


def metadata(addr, topic, timeout=2.0):
    """Metadata v5 by hand, asked of one node (a client library would go to
    whichever node it likes): ({broker_id: port}, controller_id,
    {partition: (error, leader, replicas, isr, offline)}, topic_error)."""
    name = topic.encode()
    body = struct.pack(">ih", 1, len(name)) + name + b"\0"   # allow_auto_topic_creation false
    client = b"sluice-partition-test"
    frame = struct.pack(">hhih", 3, 5, 11, len(client)) + client + body
    host, port = addr.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        b = s.recv(size, socket.MSG_WAITALL)
    check(len(b) == size, f"metadata from {addr}: short answer")
    at = 0

    def take(fmt):
        nonlocal at
        v = struct.unpack_from(fmt, b, at)
        at += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string():
        nonlocal at
        n = take(">h")
        if n < 0:
            return None
        at += n
        return b[at - n:at].decode()

    def ints():
        return [take(">i") for _ in range(take(">i"))]

    check(take(">i") == 11, "metadata correlation id")
    take(">i")                                   # throttle_time_ms
    brokers = {}
    for _ in range(take(">i")):
        node_id = take(">i")
        string()
        brokers[node_id] = take(">i")
        string()                                 # rack
    string()                                     # cluster_id
    controller = take(">i")
    parts, topic_error = {}, None
    for _ in range(take(">i")):
        topic_error = take(">h")
        string()
        take(">b")                               # is_internal
        for _ in range(take(">i")):
            err, p, leader = take(">hii")
            parts[p] = (err, leader, ints(), ints(), ints())
    return brokers, controller, parts, topic_error


def summary(view):
    """A Metadata answer as {partition: (error, leader, isr)}."""
    return {p: (err, leader, tuple(sorted(isr))) for p, (err, leader, _, isr, _) in sorted(view[2].items())}


def log_sizes(addr, topic, timeout=2.0):
    """DescribeLogDirs v1 by hand, asked of one node: {partition: bytes of
    that node's log}."""
    body = struct.pack(">i", -1)                 # every topic
    client = b"sluice-partition-test"
    frame = struct.pack(">hhih", 35, 1, 13, len(client)) + client + body
    host, port = addr.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        b = s.recv(size, socket.MSG_WAITALL)
    check(len(b) == size, f"log dirs from {addr}: short answer")
    at = 0

    def take(fmt):
        nonlocal at
        v = struct.unpack_from(fmt, b, at)
        at += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string():
        nonlocal at
        n = take(">h")
        at += max(n, 0)
        return b[at - max(n, 0):at].decode()

    check(take(">i") == 13, "log dirs correlation id")
    take(">i")                                   # throttle_time_ms
    out = {}
    for _ in range(take(">i")):
        err = take(">h")
        check(err == 0, f"log dirs from {addr}: error {err}")
        string()
        for _ in range(take(">i")):
            name = string()
            for _ in range(take(">i")):
                p, psize, _lag, _future = take(">iqqb")
                if name == topic:
                    out[p] = psize
    return out


class Cluster:
    def __init__(self, work):
        ports = {}
        for n in (1, 2):
            held = []
            try:
                # Held open together, so the three differ.
                for _ in range(3):
                    s = socket.socket()
                    s.bind((IPS[n], 0))
                    held.append(s)
                ports[n] = tuple(s.getsockname()[1] for s in held)
            finally:
                for s in held:
                    s.close()
        ports[3] = NS_PORTS
        self.nodes = {n: Node(n, work, ports) for n in NODES}
        self.bootstrap = ",".join(node.addr for node in self.nodes.values())
        self.bootstrap_12 = ",".join(self.nodes[n].addr for n in (1, 2))

    def view(self, node_id, timeout=1.0):
        node = self.nodes[node_id]
        if not node.alive():
            return None
        try:
            return metadata(node.addr, TOPIC, timeout)
        except (OSError, struct.error, Failure):
            return None

    def wait(self, what, cond, timeout, interval=0.1):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            ok, last = cond()
            if ok:
                return last
            time.sleep(interval)
        raise Failure(f"{what}: not within {timeout}s; last seen: {last}")

    def controller(self, ids=NODES, timeout=5):
        """The controller nodes `ids` all name, or {node: what it names} if
        they do not agree within `timeout`. The Raft election decides it:
        when it is node 3, the cut also costs nodes 1 and 2 their controller
        and they must elect another before anything moves."""
        end = time.monotonic() + timeout
        while True:
            named = {}
            for n in ids:
                v = self.view(n)
                named[n] = None if v is None else v[1]
            agreed = set(named.values())
            if len(agreed) == 1 and agreed <= set(NODES):
                return agreed.pop()
            if time.monotonic() >= end:
                return named
            time.sleep(0.1)

    def full_isr_agreed(self):
        """Every node answers, says every partition has a leader and an ISR
        of all three nodes, and all three say the same."""
        views = {}
        for n in NODES:
            if not self.nodes[n].alive():
                return False, f"node {n} is down"
            v = self.view(n)
            if v is None:
                return False, {**views, n: "no answer"}
            views[n] = summary(v)
            if len(v[2]) != PARTITIONS or len(v[0]) != len(NODES):
                return False, {**views, n: (f"brokers {sorted(v[0])}", views[n])}
        ok = all(err == 0 and leader in NODES and isr == NODES
                 for s in views.values() for err, leader, isr in s.values())
        same = len({json.dumps(s, sort_keys=True) for s in views.values()}) == 1
        return ok and same, views


class SteadyProducer:
    """An idempotent acks=all producer sending record n (key k<n>, value n)
    to partition n % 3 at RATE records a second, in its own thread."""

    def __init__(self, bootstrap):
        from confluent_kafka import Producer
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60_000,
            # A request to a node cut off gets no answer and no reset, as
            # over a real partition: it must time out well before the
            # default 30s for the partition to move on to its new leader.
            "request.timeout.ms": 5_000,
            "socket.timeout.ms": 3_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.interval.ms": 1_000,
            "log_level": CLIENT_LOG_LEVEL,
        })
        self.sent = 0
        self.acked = {}            # n -> (partition, offset)
        self.ack_times = {p: [] for p in range(PARTITIONS)}
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        n = int(msg.value())
        now = time.monotonic()
        with self.lock:
            if err is not None:
                self.errors.append((n, err))
            else:
                self.acked[n] = (msg.partition(), msg.offset())
                self.ack_times[msg.partition()].append(now)

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def per_partition(self):
        with self.lock:
            return {p: len(t) for p, t in self.ack_times.items()}

    def longest_gap(self, since, until):
        """{partition: longest time with no ack between since and until}."""
        out = {}
        with self.lock:
            for p, times in self.ack_times.items():
                marks = [since] + [t for t in times if since < t < until] + [until]
                out[p] = max(b - a for a, b in zip(marks, marks[1:]))
        return out

    def _run(self):
        started = time.monotonic()
        tick = 0.01
        per_tick = max(1, int(RATE * tick))
        next_at = started
        while not self.stop.is_set() and time.monotonic() - started < PRODUCE_MAX_S:
            # Bounded backlog: a stalled cluster must not grow it without end.
            if len(self.producer) < 50_000:
                for _ in range(per_tick):
                    n = self.sent
                    try:
                        self.producer.produce(TOPIC, key=f"k{n}".encode(), value=str(n).encode(),
                                              partition=n % PARTITIONS, on_delivery=self._on_delivery)
                    except BufferError:
                        break
                    self.sent += 1
            self.producer.poll(0)
            next_at += tick
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()

    def start(self):
        self.thread.start()

    def finish(self, timeout):
        self.stop.set()
        self.thread.join(10)
        check(not self.thread.is_alive(), "the producer thread did not stop")
        return self.producer.flush(timeout)


def probe_main(addr):
    """Inside the namespace, on node 3's side of the partition: produce
    records p<n> with acks=all to whatever node 3 says, at PROBE_RATE, until a
    line on stdin (or PROBE_MAX_S); sample node 3's own Metadata meanwhile.
    Prints one JSON object: acknowledgements with their CLOCK_MONOTONIC
    times, errors and node 3's views as they changed."""
    from confluent_kafka import Producer
    acks, errors, views = [], {}, []
    lock = threading.Lock()
    producer = Producer({
        "bootstrap.servers": addr,
        # Idempotence would need a producer id from the quorum, which a
        # node cut off cannot give: the probe would then write nothing.
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 8_000,
        "request.timeout.ms": 4_000,
        "socket.timeout.ms": 3_000,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        "topic.metadata.refresh.interval.ms": 1_000,
        "log_level": CLIENT_LOG_LEVEL,
    })

    def on_delivery(err, msg):
        now = time.monotonic()
        n = int(msg.value()[1:])
        with lock:
            if err is None:
                acks.append([n, msg.partition(), msg.offset(), now])
            else:
                errors[err.name()] = errors.get(err.name(), 0) + 1

    stop = threading.Event()

    def wait_stdin():
        sys.stdin.readline()
        stop.set()
    threading.Thread(target=wait_stdin, daemon=True).start()

    started = time.monotonic()
    sent = 0
    next_view = started
    last = None
    while not stop.is_set() and time.monotonic() - started < PROBE_MAX_S:
        producer.produce(TOPIC, key=f"p{sent}".encode(), value=f"p{sent}".encode(),
                         partition=sent % PARTITIONS, on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
        if time.monotonic() >= next_view:
            try:
                v = metadata(addr, TOPIC, 0.5)
                seen = [sorted(v[0]), v[1], {p: list(s) for p, s in summary(v).items()}]
            except (OSError, struct.error, Failure) as e:
                seen = f"no answer: {e}"
            if seen != last:
                views.append([time.monotonic(), seen])
                last = seen
            next_view = time.monotonic() + 0.25
        time.sleep(1 / PROBE_RATE)
    stopped = time.monotonic()
    left = producer.flush(20)
    with lock:
        print(json.dumps({"started": started, "stopped": stopped, "sent": sent, "left": left,
                          "acks": acks, "errors": errors, "views": views}), flush=True)
    return 0


def consume_all(bootstrap, label):
    """Every record from the beginning up to each partition's high watermark:
    {partition: [(offset, value)]} and the watermarks."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"partition-check-{label}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "log_level": CLIENT_LOG_LEVEL})
    try:
        ends = {}
        for p in range(PARTITIONS):
            _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got = {p: [] for p in range(PARTITIONS)}
        done = {p for p in range(PARTITIONS) if ends[p] == 0}
        deadline = time.monotonic() + 40
        while len(done) < PARTITIONS and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    check(m.error().code() == -191, f"{label} consumer: {m.error()}")  # _PARTITION_EOF
                    continue
                p = m.partition()
                if m.offset() < ends[p]:
                    got[p].append((m.offset(), m.value().decode()))
                if m.offset() >= ends[p] - 1:
                    done.add(p)
        check(len(done) == PARTITIONS,
              f"{label} consumer: did not reach the high watermarks {ends} within 40s; "
              f"reached {{p: last offset}} = {{{', '.join(f'{p}: {got[p][-1][0] if got[p] else None}' for p in got)}}}")
        return got, ends
    finally:
        consumer.close()


def verify(got, ends, acked, sent, probe_acks, label):
    """Offsets dense; every steady record acknowledged exactly once at the
    offset its acknowledgement named, none twice, numbers increasing within
    each partition; every probe record acknowledged at its offset."""
    for p in range(PARTITIONS):
        offsets = [o for o, _ in got[p]]
        check(offsets == list(range(ends[p])),
              f"{label}: partition {p} offsets are not 0..{ends[p]} dense "
              f"({len(offsets)} records, first gaps "
              f"{sorted(set(range(ends[p])) - set(offsets))[:10]})")
        steady = [(o, int(v)) for o, v in got[p] if not v.startswith("p")]
        numbers = [n for _, n in steady]
        check(all(n % PARTITIONS == p and 0 <= n < sent for n in numbers),
              f"{label}: partition {p} holds records not produced to it: "
              f"{[n for n in numbers if n % PARTITIONS != p or not 0 <= n < sent][:10]}")
        probes = [int(v[1:]) for _, v in got[p] if v.startswith("p")]
        check(all(n % PARTITIONS == p for n in probes),
              f"{label}: partition {p} holds probe records not produced to it")
        dups = len(numbers) - len(set(numbers))
        if dups:
            seen, twice = set(), []
            for o, n in steady:
                if n in seen:
                    twice.append((o, n))
                seen.add(n)
            raise Failure(f"{label}: partition {p} has {dups} duplicated records "
                          f"(offset, number) {twice[:10]}")
        out_of_order = [(steady[i][0], numbers[i - 1], numbers[i])
                        for i in range(1, len(numbers)) if numbers[i] <= numbers[i - 1]]
        check(not out_of_order, f"{label}: partition {p} out of order at "
                                f"(offset, previous, number) {out_of_order[:10]}")
    at = {p: dict(got[p]) for p in range(PARTITIONS)}
    missing = [(n, p, o) for n, (p, o) in acked.items() if o not in at[p]]
    check(not missing, f"{label}: {len(missing)} acknowledged records missing, "
                       f"(number, partition, acked offset) {sorted(missing)[:10]}")
    moved = [(n, p, o, at[p][o]) for n, (p, o) in acked.items() if at[p][o] != str(n)]
    check(not moved, f"{label}: {len(moved)} acknowledged records not at their acknowledged offset, "
                     f"(number, partition, acked offset, value found there) {sorted(moved)[:10]}")
    lost = [(f"p{n}", p, o, at[p].get(o)) for n, p, o, _ in probe_acks if at[p].get(o) != f"p{n}"]
    check(not lost, f"{label}: {len(lost)} probe records acknowledged by node 3's side but not at "
                    f"their acknowledged offset, (record, partition, acked offset, value found there) "
                    f"{lost[:10]}")


def views_of(cluster, ids):
    out = {}
    for n in ids:
        v = cluster.view(n)
        out[n] = None if v is None else (sorted(v[0]), v[1], summary(v))
    return out


def main():
    def on_alarm(_sig, _frame):
        raise Failure(f"the run took longer than {OVERALL_S}s")

    def on_term(_sig, _frame):
        raise Failure("SIGTERM: stopping, cleaning up")

    if os.geteuid() != 0:
        log("SKIP: the partition test is skipped: it needs root (CAP_NET_ADMIN) for network "
            "namespaces and veth pairs")
        return 0
    net = Net()
    if not Path(net.ip).exists():
        log(f"SKIP: the partition test is skipped: no `ip` tool ({net.ip})")
        return 0
    net.teardown()                       # leftovers of an earlier run
    reason = net.setup()
    if reason:
        net.teardown()
        log(f"SKIP: the partition test is skipped: cannot make the network namespace and veth "
            f"pair ({reason})")
        return 0

    run_started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sluice-partition-"))
    cluster = None
    producer = None
    probe = None
    probe_log = None
    ok = False
    signal.signal(signal.SIGALRM, on_alarm)
    # Stopped from outside (a CI timeout), the clean-up still runs.
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(OVERALL_S)
    try:
        from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
        cluster = Cluster(work)
        log(f"network: namespace {NS}, veth {VETH_ROOT} ({IPS[1]}, {IPS[2]}) <-> {VETH_NS} "
            f"({IPS[3]}); nodes at {[n.addr for n in cluster.nodes.values()]}")

        # 1. The cluster forms: the nodes wait for a quorum before listening,
        # so they are all started before waiting for any.
        t0 = time.monotonic()
        for node in cluster.nodes.values():
            node.start()
        pid3, exe3 = cluster.nodes[3].check_exec(net.ns_inode())
        deadline = time.monotonic() + START_S
        for node in cluster.nodes.values():
            node.wait_listening(deadline)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": CLIENT_LOG_LEVEL})

        def three_brokers():
            md = admin.list_topics(timeout=5)
            return sorted(md.brokers) == list(NODES), sorted(md.brokers)
        cluster.wait("Metadata listing the 3 brokers", three_brokers, START_S, 0.3)
        futures = admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                                                config={"min.insync.replicas": "2"})])
        for f in futures.values():
            f.result(30)
        views = cluster.wait("every partition with a leader and an ISR of 3, on every node alike",
                             cluster.full_isr_agreed, 20, 0.2)
        configs = admin.describe_configs([ConfigResource("topic", TOPIC)])
        mir = list(configs.values())[0].result()["min.insync.replicas"].value
        check(mir == "2", f"topic min.insync.replicas is {mir}, want 2")
        before = views[1]
        leaders = {p: leader for p, (_, leader, _) in before.items()}
        led3 = [p for p, leader in leaders.items() if leader == 3]
        controller = cluster.controller()
        log(f"1 formed in {time.monotonic() - t0:.1f}s: node 3 is pid {pid3} ({exe3}) in {NS}; "
            f"leaders of p0..p2 {[leaders[p] for p in range(PARTITIONS)]}, ISR 3 each, "
            f"min.insync.replicas={mir}, controller {controller}, pids "
            f"{[node.proc.pid for node in cluster.nodes.values()]}; node 3 leads "
            f"{led3 if led3 else 'no partition (placement gave it none)'}")

        # 2. The steady producer.
        producer = SteadyProducer(cluster.bootstrap)
        producer.start()
        producing = time.monotonic()
        cluster.wait("every partition acknowledging a record",
                     lambda: (lambda per: (all(per.values()), (per, producer.sent, producer.errors[:3])))(
                         producer.per_partition()), 10, 0.05)
        first_acks_s = time.monotonic() - producing
        # The cut lands on a producer that has been running a while.
        time.sleep(max(0.0, 1.5 - first_acks_s))
        per = producer.per_partition()
        log(f"2 producing at {RATE}/s (idempotent, acks=all): every partition acknowledged a record "
            f"after {first_acks_s:.2f}s; {producer.acked_count()} acked in "
            f"{time.monotonic() - producing:.1f}s, per partition {[per[p] for p in range(PARTITIONS)]}")

        # 3. Node 3 cut off.
        acked_before = producer.acked_count()
        cut_at = time.monotonic()
        cut_utc = utc()
        net.cut()
        probe_log = open(work / "probe.log", "ab")
        probe = subprocess.Popen(
            [net.ip, "netns", "exec", NS, sys.executable, str(Path(__file__).resolve()),
             "--probe", cluster.nodes[3].addr],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=probe_log, text=True)
        moved_at = shrunk_at = None
        last = None
        while time.monotonic() < cut_at + CUT_DETECT_S and (moved_at is None or shrunk_at is None):
            seen = views_of(cluster, (1, 2))
            last = seen
            if all(v is not None and len(v[2]) == PARTITIONS for v in seen.values()):
                if moved_at is None and all(v[2][p][1] in (1, 2) and v[2][p][0] == 0
                                            for v in seen.values() for p in led3):
                    moved_at = time.monotonic()
                if shrunk_at is None and all(3 not in isr and leader in (1, 2) and err == 0
                                             for v in seen.values()
                                             for err, leader, isr in v[2].values()):
                    shrunk_at = time.monotonic()
            time.sleep(0.1)
        check(moved_at is not None, f"cut: the partitions node 3 led ({led3}) have no leader among "
                                    f"nodes 1 and 2 within {CUT_DETECT_S}s; nodes 1, 2 see "
                                    f"(brokers, controller, {{p: (error, leader, isr)}}) {last}")
        check(shrunk_at is not None, f"cut: node 3 not out of every ISR (with a leader among 1, 2 "
                                     f"for every partition) within {CUT_DETECT_S}s; nodes 1, 2 see "
                                     f"(brokers, controller, {{p: (error, leader, isr)}}) {last}")
        during = last
        controller_cut = cluster.controller((1, 2), timeout=2)
        base = producer.per_partition()
        window_at = time.monotonic()
        want = RATE // PARTITIONS * ACK_WINDOW_S // 3

        def acked_in_window():
            now = producer.per_partition()
            window = {p: now[p] - base[p] for p in range(PARTITIONS)}
            return all(c >= want for c in window.values()), window
        try:
            window = cluster.wait(f"cut: acks=all on every partition with an ISR of 2, >= {want} each",
                                  acked_in_window, ACK_WINDOW_S, 0.05)
        except Failure as e:
            raise Failure(f"{e}; nodes 1, 2 see {during}")
        window_s = time.monotonic() - window_at
        time.sleep(max(0.0, cut_at + CUT_MIN_S - time.monotonic()))
        gaps = producer.longest_gap(cut_at, time.monotonic())
        acked_cut = producer.acked_count() - acked_before
        v1 = during[1]
        log(f"3 cut off node 3 at {cut_utc}: new leaders for {led3} after {moved_at - cut_at:.1f}s "
            f"(p0..p2 {[v1[2][p][1] for p in range(PARTITIONS)]}), node 3 out of every ISR after "
            f"{shrunk_at - cut_at:.1f}s (ISRs {[list(v1[2][p][2]) for p in range(PARTITIONS)]}, "
            f"brokers listed {v1[0]}, controller {v1[1]}); acks in {window_s:.1f}s with ISR 2 per "
            f"partition {[window[p] for p in range(PARTITIONS)]}; longest ack gap per partition "
            f"{[round(gaps[p], 1) for p in range(PARTITIONS)]}s; {acked_cut} acked in "
            f"{time.monotonic() - cut_at:.1f}s cut off")

        # 4. Heal.
        check(probe.poll() is None, f"the probe inside {NS} exited early with {probe.returncode}")
        probe.stdin.write("stop\n")
        probe.stdin.flush()
        heal_at = time.monotonic()
        heal_utc = utc()
        cut_s = heal_at - cut_at
        net.heal()
        rejoined_at = None
        ok_all = False
        last = None
        deadline = heal_at + HEAL_S
        while time.monotonic() < deadline:
            seen = views_of(cluster, (1, 2))
            if rejoined_at is None and all(
                    v is not None and len(v[2]) == PARTITIONS
                    and all(isr == NODES for _, _, isr in v[2].values()) for v in seen.values()):
                rejoined_at = time.monotonic()
            ok_all, last = cluster.full_isr_agreed()
            if ok_all:
                # Asked again just now: all three say so, nodes 1 and 2 too.
                rejoined_at = rejoined_at or time.monotonic()
                break
            time.sleep(0.2)
        check(rejoined_at is not None, f"heal: node 3 not back in every ISR (as nodes 1, 2 see it) "
                                       f"within {HEAL_S}s; last seen: {last}")
        check(ok_all, f"heal: the three nodes' views of leaders and ISR did not converge within "
                      f"{HEAL_S}s; last seen {{node: {{p: (error, leader, isr)}}}}: {last}")
        agreed_at = time.monotonic()
        controller_healed = cluster.controller()
        try:
            out, _ = probe.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.communicate()
            raise Failure("the probe inside the namespace did not finish within 30s of the heal")
        check(probe.returncode == 0 and out.strip(), f"the probe exited {probe.returncode}, "
                                                     f"see {work / 'probe.log'}")
        result = json.loads(out.strip().splitlines()[-1])
        probe_acks = result["acks"]
        early = [a for a in probe_acks if a[3] < heal_at]
        claims = []
        for t, seen in result["views"]:
            if cut_at <= t < heal_at and isinstance(seen, list):
                claims.append((round(t - cut_at, 1), seen[0], seen[1],
                               {int(p): (s[1], s[2]) for p, s in seen[2].items()}))
        log(f"4 healed at {heal_utc} after {cut_s:.1f}s cut off: node 3 back in every ISR after "
            f"{rejoined_at - heal_at:.1f}s, all three views agreeing after {agreed_at - heal_at:.1f}s "
            f"(p0..p2 leaders {[last[3][p][1] for p in range(PARTITIONS)]}, controller "
            f"{controller_healed}); probe inside {NS}: "
            f"{result['sent']} sent to node 3's side, {len(early)} acked while cut off, "
            f"{len(probe_acks) - len(early)} acked after the heal"
            f"{f' (within {max(a[3] for a in probe_acks) - heal_at:.1f}s)' if probe_acks else ''}, "
            f"errors {result['errors']}, "
            f"{result['left']} unresolved")
        log(f"  outcome: controller {controller} when formed"
            f"{' (node 3 itself, cut off with it)' if controller == 3 else ''}; {controller_cut} as nodes "
            f"1 and 2 saw it while node 3 was cut off; {controller_healed} after the heal")
        log(f"  node 3's own view while cut off (s after cut, brokers, controller, "
            f"{{p: (leader, isr)}}): "
            f"{claims[:6]}{' ...' if len(claims) > 6 else ''}")

        # 5. Everything back.
        time.sleep(1.5)
        left = producer.finish(40)
        sent = producer.sent
        acked = dict(producer.acked)
        errors = list(producer.errors)
        log(f"5 produced {sent} records; {len(acked)} acknowledged, {len(errors)} failed, "
            f"{left} unresolved after flush")
        check(left == 0, f"{left} records neither acknowledged nor failed after flush")
        check(not errors, f"{len(errors)} records failed delivery, e.g. (number, error) {errors[:5]}")
        got, ends = consume_all(cluster.bootstrap, "readback")
        verify(got, ends, acked, sent, probe_acks, "read-back")
        check(not early, f"node 3, cut off from every other replica, acknowledged {len(early)} "
                         f"acks=all records of the probe before the heal (min.insync.replicas=2), "
                         f"e.g. (record, partition, offset, s after cut) "
                         f"{[(f'p{n}', p, o, round(t - cut_at, 2)) for n, p, o, t in early[:10]]}")
        probes_kept = sum(1 for p in range(PARTITIONS) for _, v in got[p] if v.startswith("p"))
        log(f"  read back {sum(len(v) for v in got.values())} records (high watermarks "
            f"{[ends[p] for p in range(PARTITIONS)]}): all {len(acked)} steady acks exactly once at "
            f"their offsets, in order; {len(probe_acks)} probe acks at their offsets "
            f"({probes_kept} probe records in the logs)")

        def same_logs():
            sizes = {}
            for node in cluster.nodes.values():
                if not node.alive():
                    return False, f"node {node.id} exited with {node.proc.returncode}"
                try:
                    sizes[node.id] = log_sizes(node.addr, TOPIC)
                except (OSError, struct.error) as e:
                    return False, f"node {node.id}: {e}"
            per_partition = {p: {n: sizes[n].get(p) for n in NODES} for p in range(PARTITIONS)}
            return all(len(set(v.values())) == 1 and None not in v.values()
                       for v in per_partition.values()), per_partition
        sizes = cluster.wait("every node's log of every partition the same size (DescribeLogDirs)",
                             same_logs, 10, 0.3)
        log(f"  log bytes per partition identical on the 3 nodes: "
            f"{[sizes[p][1] for p in range(PARTITIONS)]}")

        # 6. Clean shutdown.
        codes = {}
        stopped_at = time.monotonic()
        for node in cluster.nodes.values():
            node.proc.send_signal(signal.SIGTERM)
        for node in cluster.nodes.values():
            codes[node.id] = node.wait_exit(stopped_at)
        bad = {n: c for n, c in codes.items() if c[0] != 0}
        check(not bad, f"nodes not exiting 0 within {STOP_S}s of SIGTERM: "
                       f"{ {n: ('still running' if c is None else c, f'{s:.1f}s') for n, (c, s) in bad.items()} }")
        log(f"6 SIGTERM: every node exited 0 (node 3, pid {pid3} in {NS}, after "
            f"{codes[3][1]:.1f}s; slowest {max(s for _, s in codes.values()):.1f}s)")
        ok = True
    except Failure as e:
        log(f"FAIL: {e}")
    except Exception as e:  # noqa: BLE001 - anything else is a failure too, reported the same way
        import traceback
        traceback.print_exc()
        log(f"FAIL: {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if producer is not None:
            producer.stop.set()
        if probe is not None and probe.poll() is None:
            probe.kill()
            try:
                probe.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if probe_log is not None:
            probe_log.close()
        before_cleanup = {}
        if cluster is not None:
            for node in cluster.nodes.values():
                if node.proc is not None:
                    before_cleanup[node.id] = (node.proc.pid, node.proc.poll())
                node.kill()
        net.teardown()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
            log(f"PASS in {time.monotonic() - run_started:.1f}s")
        else:
            if cluster is not None:
                for n, (pid, code) in before_cleanup.items():
                    log(f"node {n} (pid {pid}): " + ("was running until the clean-up" if code is None
                                                     else f"had exited with {code} before the clean-up"))
                for node in cluster.nodes.values():
                    log(f"--- last 40 lines of node {node.id}'s log ({node.log_path}) ---")
                    for line in node.tail():
                        print(f"    {line}", flush=True)
            log(f"logs and data kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        sys.exit(probe_main(sys.argv[2]))
    sys.exit(main())

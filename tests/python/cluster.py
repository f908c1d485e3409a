"""A three-node cluster on loopback, with real processes and real clients.

Three `sluice` processes form a controller quorum (every node a voter) and
replicate a topic of three partitions, replication factor 3 and
min.insync.replicas=2. An idempotent confluent-kafka producer (acks=all)
sends numbered records at a steady rate for the whole run while:

  1 the cluster forms: three brokers, every partition with three replicas,
    an ISR of three and leaders spread over the nodes;
  2 four times, the leader of partition 0 is killed with SIGKILL at a random
    moment: another member of its ISR must take over, and the node, started
    again on the same data, must rejoin the ISR of every partition;
  3 a follower of partition 0 is killed while producing goes on (acks=all
    still succeeds with an ISR of two), started again, and must catch up
    and rejoin every ISR.

Every link between the nodes (replication and controller quorum) runs
mutual TLS with certificates of a cluster CA made for the run; a fourth
node whose certificate another CA signed is started while producing goes
on, and must be refused by the voters and never listed as a broker.

Then every acknowledged record must be read back exactly once, at the
offset its acknowledgement named, in order within its partition, with no
record duplicated; a second, fresh consumer must read the same; every
node's log of every partition must hold the same bytes (DescribeLogDirs);
and every node must exit 0 on SIGTERM.

Run as `.venv/bin/python tests/python/cluster.py` from the repository root,
after `ulimit -l unlimited` as scripts/test.sh does (glommio locks its io
buffers; the nodes also raise their own limit as far as they may).
`SLUICE_BIN` overrides the binary (default target/debug/sluice);
`SLUICE_CLUSTER_SEED` replays the moments of the kills.

Which node leads partition 0, and so which nodes are killed, and whether a
victim is also the controller (its failover then waits for a new Raft
leader too) depend on the election: the `outcome` line names them, so runs
can be compared.
"""

import os
import random
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

sys.path.insert(0, str(Path(__file__).parent))
from compat import ROOT, free_port  # noqa: E402
from tls import issue, make_ca  # noqa: E402

TOPIC = "cluster"
PARTITIONS = 3
NODES = (1, 2, 3)
RATE = 800                 # records per second, the producer's steady pace
FAILOVERS = 4
NEW_LEADER_S = 6           # a dead leader's partition must have a new one by then
REJOIN_S = 20              # a restarted node must be back in every ISR by then
START_S = 30
STOP_S = 30
PRODUCE_MAX_S = 150        # the producer stops by itself after this, whatever happens
# librdkafka logs every connection refused by a killed node: expected here.
CLIENT_LOG_LEVEL = 2


def log(msg):
    print(f"[cluster] {msg}", flush=True)


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def binary():
    env = os.environ.get("SLUICE_BIN")
    if env:
        return env
    # As the other scripts: the test build first, which scripts/test.sh
    # has just made.
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "sluice"
        if p.exists():
            return str(p)
    subprocess.run(["cargo", "build", "-p", "broker", "--bin", "sluice"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "sluice")


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


def make_node_certs(d):
    """A cluster CA with a certificate for each node, and a stranger: a
    node certificate from another CA."""
    make_ca(d, "cluster-ca")
    make_ca(d, "foreign-ca")
    for n in NODES:
        issue(d, f"node{n}", f"/CN=node{n}", "cluster-ca", "serverAuth,clientAuth")
    issue(d, "foreign", "/CN=node4", "foreign-ca", "serverAuth,clientAuth")


class Node:
    def __init__(self, node_id, work, ports, cert=None, ca="cluster-ca"):
        self.id = node_id
        self.work = work
        self.kport, self.cport, self.lport = ports[node_id]
        self.addr = f"127.0.0.1:{self.kport}"
        voters = ",".join(f"{n}@127.0.0.1:{ports[n][1]}" for n in NODES)
        cert = work / "certs" / (cert or f"node{node_id}")
        self.args = [
            binary(), "serve", "--node-id", str(node_id),
            "--data-dir", str(work / f"n{node_id}"),
            "--listen", self.addr,
            "--controller-listen", f"127.0.0.1:{self.cport}",
            "--controller-voters", voters,
            "--link-listen", f"127.0.0.1:{self.lport}",
            "--metrics-listen", "", "--cores", "1",
            "--broker-session-timeout-ms", "2000",
            "--broker-heartbeat-interval-ms", "200",
            "--replica-lag-time-max-ms", "3000",
            "--cluster-tls-cert", f"{cert}.pem", "--cluster-tls-key", f"{cert}.key",
            "--cluster-tls-ca", str(work / "certs" / f"{ca}.pem"),
        ]
        self.log_path = work / f"n{node_id}.log"
        self.proc = None
        self.log_file = None

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     preexec_fn=raise_memlock)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_listening(self, deadline):
        while time.monotonic() < deadline:
            check(self.alive(), f"node {self.id} exited with {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.kport), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise Failure(f"node {self.id} did not listen on {self.addr} within {START_S}s")

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
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
    client = b"sluice-cluster-test"
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


def log_sizes(addr, topic, timeout=2.0):
    """DescribeLogDirs v1 by hand, asked of one node: {partition: bytes of
    that node's log}."""
    body = struct.pack(">i", -1)                 # every topic
    client = b"sluice-cluster-test"
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
        (work / "certs").mkdir()
        make_node_certs(work / "certs")
        ports = {}
        used = set()
        for n in NODES + (4,):
            triple = []
            for _ in range(100):
                p = free_port()
                if p not in used:
                    used.add(p)
                    triple.append(p)
                if len(triple) == 3:
                    break
            check(len(triple) == 3, "no three distinct free ports")
            ports[n] = tuple(triple)
        self.nodes = {n: Node(n, work, ports) for n in NODES}
        self.stranger = Node(4, work, ports, cert="foreign", ca="foreign-ca")
        self.bootstrap = ",".join(node.addr for node in self.nodes.values())

    def live(self):
        return [n for n in self.nodes.values() if n.alive()]

    def view(self, node):
        try:
            return metadata(node.addr, TOPIC)
        except (OSError, struct.error, Failure):
            return None

    def partitions(self, exclude=()):
        """The partitions as the first live node (not excluded) that answers
        sees them, and that node's id."""
        for node in self.live():
            if node.id in exclude:
                continue
            v = self.view(node)
            if v and v[2] and len(v[2]) == PARTITIONS:
                return v[2], node.id
        return None, None

    def controller(self, timeout=5):
        """The controller every live node names, or {node: what it names}
        if they do not agree within `timeout`: for the record only (the Raft
        election decides it, and whether a victim is the controller changes
        which path its failover takes)."""
        named = {}
        end = time.monotonic() + timeout
        while True:
            named = {}
            for node in self.live():
                v = self.view(node)
                named[node.id] = None if v is None else v[1]
            agreed = set(named.values())
            if len(agreed) == 1 and agreed <= set(NODES):
                return agreed.pop()
            if time.monotonic() >= end:
                return named
            time.sleep(0.1)

    def wait(self, what, cond, timeout, interval=0.1):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            ok, last = cond()
            if ok:
                return last
            time.sleep(interval)
        raise Failure(f"{what}: not within {timeout}s; last seen: {last}")

    def full_isr_everywhere(self):
        """Every live node says every partition has a leader and an ISR of
        all three nodes."""
        views = {}
        for node in self.nodes.values():
            if not node.alive():
                return False, f"node {node.id} is down"
            v = self.view(node)
            if v is None:
                return False, f"node {node.id} did not answer Metadata"
            views[node.id] = {p: (leader, sorted(isr)) for p, (_, leader, _, isr, _) in v[2].items()}
            if len(v[2]) != PARTITIONS:
                return False, views
            for p, (err, leader, replicas, isr, _) in v[2].items():
                if err != 0 or leader not in NODES or sorted(isr) != list(NODES):
                    return False, views
        return True, views


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
            "socket.timeout.ms": 3_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.interval.ms": 1_000,
            "log_level": CLIENT_LOG_LEVEL,
        })
        self.sent = 0
        self.acked = {}            # n -> (partition, offset)
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        n = int(msg.value())
        with self.lock:
            if err is not None:
                self.errors.append((n, err))
            else:
                self.acked[n] = (msg.partition(), msg.offset())

    def acked_count(self):
        with self.lock:
            return len(self.acked)

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
        left = self.producer.flush(timeout)
        return left


def consume_all(bootstrap, label):
    """Every record from the beginning up to each partition's high watermark:
    {partition: [(offset, n)]} and the watermarks."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cluster-check-{label}",
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
        deadline = time.monotonic() + 60
        while len(done) < PARTITIONS and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    check(m.error().code() == -191, f"{label} consumer: {m.error()}")  # _PARTITION_EOF
                    continue
                p = m.partition()
                if m.offset() < ends[p]:
                    got[p].append((m.offset(), int(m.value())))
                if m.offset() >= ends[p] - 1:
                    done.add(p)
        check(len(done) == PARTITIONS,
              f"{label} consumer: did not reach the high watermarks {ends} within 60s; "
              f"reached {{p: last offset}} = {{{', '.join(f'{p}: {got[p][-1][0] if got[p] else None}' for p in got)}}}")
        return got, ends
    finally:
        consumer.close()


def verify(got, ends, acked, sent, label):
    """Every acknowledged record exactly once at the offset its
    acknowledgement named; no number twice; numbers increasing within each
    partition; offsets dense."""
    for p in range(PARTITIONS):
        offsets = [o for o, _ in got[p]]
        check(offsets == list(range(ends[p])),
              f"{label}: partition {p} offsets are not 0..{ends[p]} dense "
              f"({len(offsets)} records, first gaps "
              f"{sorted(set(range(ends[p])) - set(offsets))[:10]})")
        numbers = [n for _, n in got[p]]
        check(all(n % PARTITIONS == p and 0 <= n < sent for n in numbers),
              f"{label}: partition {p} holds records not produced to it: "
              f"{[n for n in numbers if n % PARTITIONS != p or not 0 <= n < sent][:10]}")
        dups = len(numbers) - len(set(numbers))
        if dups:
            seen, twice = set(), []
            for o, n in got[p]:
                if n in seen:
                    twice.append((o, n))
                seen.add(n)
            raise Failure(f"{label}: partition {p} has {dups} duplicated records "
                          f"(offset, number) {twice[:10]}")
        out_of_order = [(got[p][i][0], numbers[i - 1], numbers[i])
                        for i in range(1, len(numbers)) if numbers[i] <= numbers[i - 1]]
        check(not out_of_order, f"{label}: partition {p} out of order at "
                                f"(offset, previous, number) {out_of_order[:10]}")
    at = {p: dict(got[p]) for p in range(PARTITIONS)}
    missing = [(n, p, o) for n, (p, o) in acked.items() if o not in at[p]]
    check(not missing, f"{label}: {len(missing)} acknowledged records missing, "
                       f"(number, partition, acked offset) {sorted(missing)[:10]}")
    moved = [(n, p, o, at[p][o]) for n, (p, o) in acked.items() if at[p][o] != n]
    check(not moved, f"{label}: {len(moved)} acknowledged records not at their acknowledged offset, "
                     f"(number, partition, acked offset, number found there) {sorted(moved)[:10]}")


def main():
    seed = int(os.environ.get("SLUICE_CLUSTER_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    log(f"seed {seed} (SLUICE_CLUSTER_SEED={seed} replays the kill moments)")
    work = Path(tempfile.mkdtemp(prefix="sluice-cluster-"))
    cluster = Cluster(work)
    producer = None
    ok = False
    run_started = time.monotonic()
    try:
        from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

        # 1. The cluster forms: the nodes wait for a quorum before listening,
        # so they are all started before waiting for any.
        t0 = time.monotonic()
        for node in cluster.nodes.values():
            node.start()
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

        def formed():
            md = admin.list_topics(TOPIC, timeout=5)
            t = md.topics.get(TOPIC)
            if t is None or t.error is not None or len(t.partitions) != PARTITIONS:
                return False, t and (t.error, len(t.partitions))
            seen = {p: (m.leader, sorted(m.replicas), sorted(m.isrs)) for p, m in t.partitions.items()}
            return all(len(r) == 3 and len(i) == 3 and lead in NODES
                       for lead, r, i in seen.values()), seen
        seen = cluster.wait("every partition with a leader, 3 replicas and an ISR of 3", formed, 20, 0.3)
        leaders = sorted(lead for lead, _, _ in seen.values())
        check(len(set(leaders)) == PARTITIONS,
              f"leaders not spread over the nodes: partition -> (leader, replicas, isr) {seen}")
        cluster.wait("every node agreeing on the ISRs", cluster.full_isr_everywhere, 10)
        configs = admin.describe_configs([ConfigResource("topic", TOPIC)])
        mir = list(configs.values())[0].result()["min.insync.replicas"].value
        check(mir == "2", f"topic min.insync.replicas is {mir}, want 2")
        formed_controller = cluster.controller()
        log(f"formed in {time.monotonic() - t0:.1f}s: brokers {list(NODES)}, "
            f"leaders of p0..p2 {[seen[p][0] for p in range(PARTITIONS)]}, replicas and ISR 3 each, "
            f"min.insync.replicas={mir}; controller elected: node {formed_controller}")

        producer = SteadyProducer(cluster.bootstrap)
        producer.start()
        producing = time.monotonic()
        cluster.wait("a first record acknowledged",
                     lambda: (producer.acked_count() > 0, (producer.sent, producer.errors[:3])), 10, 0.05)
        log(f"first record acknowledged {time.monotonic() - producing:.2f}s into producing")
        outcomes = []

        # A node of another CA: refused by every voter it dials, never a
        # broker, and the cluster serves on.
        stranger = cluster.stranger
        stranger.start()
        acked_before = producer.acked_count()

        def refused():
            seen = [n.id for n in cluster.nodes.values()
                    if any("refused: TLS handshake failed" in line for line in n.tail(400))]
            return len(seen) >= 1, seen
        refusers = cluster.wait("a voter refusing the foreign-CA node's TLS handshake", refused, 15, 0.3)
        time.sleep(2)
        brokers = sorted(admin.list_topics(timeout=5).brokers)
        check(brokers == list(NODES), f"brokers with the foreign-CA node running: {brokers}")
        cluster.wait("records still acknowledged",
                     lambda: (producer.acked_count() > acked_before + RATE, producer.acked_count()), 10, 0.1)
        stranger.kill()
        log(f"the foreign-CA node was refused (by nodes {refusers}), is not a broker, "
            f"and producing went on")

        # 2. Leader failovers.
        for round_ in range(1, FAILOVERS + 1):
            parts, _ = cluster.partitions()
            check(parts is not None, f"failover {round_}: no node answered Metadata")
            _, leader, _, isr, _ = parts[0]
            check(leader in NODES, f"failover {round_}: partition 0 has no leader: {parts[0]}")
            controller = cluster.controller()
            time.sleep(rng.uniform(0.2, 2.0))
            victim = cluster.nodes[leader]
            acked_before = producer.acked_count()
            killed_at = time.monotonic()
            victim.kill()

            def new_leader():
                ps, by = cluster.partitions(exclude=(victim.id,))
                if ps is None:
                    return False, "no live node answered"
                _, lead, _, isr_now, off = ps[0]
                return lead in NODES and lead != victim.id, \
                    (lead, sorted(isr_now), sorted(off), f"node {by}'s view")
            new, new_isr, offline, _ = cluster.wait(
                f"failover {round_}: a new leader for partition 0 after node {victim.id} was killed",
                new_leader, NEW_LEADER_S)
            took = time.monotonic() - killed_at
            check(new in isr, f"failover {round_}: new leader {new} was not in the ISR {isr} "
                              f"before node {victim.id} was killed")
            # Stay down ~3.5s in all, producing meanwhile.
            time.sleep(max(0.0, 3.5 - (time.monotonic() - killed_at)))
            acked_down = producer.acked_count() - acked_before
            victim.start()
            restarted = time.monotonic()
            victim.wait_listening(restarted + START_S)
            cluster.wait(f"failover {round_}: node {victim.id} back in the ISR of every partition",
                         cluster.full_isr_everywhere, REJOIN_S, 0.2)
            back_s = time.monotonic() - restarted
            controller_after = cluster.controller()
            outcomes.append(f"failover {round_} victim {victim.id} (controller {controller})")
            log(f"failover {round_}: killed leader {victim.id} (ISR {sorted(isr)}; controller {controller}"
                f"{', the victim itself' if controller == victim.id else ''}); new leader {new} "
                f"after {took:.1f}s, ISR then {new_isr}; {acked_down} acked while it was down; "
                f"back in every ISR {back_s:.1f}s after restart; controller now {controller_after}")

        # 3. A follower down while producing goes on.
        parts, _ = cluster.partitions()
        check(parts is not None, "follower: no node answered Metadata")
        _, leader, replicas, isr, _ = parts[0]
        follower = cluster.nodes[rng.choice([n for n in isr if n != leader])]
        controller = cluster.controller()
        time.sleep(rng.uniform(0.2, 1.0))
        follower.kill()
        killed_at = time.monotonic()

        def isr_shrunk():
            ps, _ = cluster.partitions(exclude=(follower.id,))
            if ps is None:
                return False, "no live node answered"
            return all(follower.id not in i for _, _, _, i, _ in ps.values()), \
                {p: (lead, sorted(i)) for p, (_, lead, _, i, _) in ps.items()}
        shrunk = cluster.wait(f"follower: node {follower.id} out of every ISR after SIGKILL",
                              isr_shrunk, NEW_LEADER_S + 4)
        shrunk_after = time.monotonic() - killed_at
        # With an ISR of 2 >= min.insync.replicas, acks=all must go on: more
        # than a second's worth within 3s.
        base = producer.acked_count()
        window_at = time.monotonic()
        try:
            acked_two = cluster.wait(f"follower: more than {RATE} records acknowledged with node "
                                     f"{follower.id} down",
                                     lambda: (lambda n: (n > RATE, n))(producer.acked_count() - base), 3, 0.05)
        except Failure as e:
            raise Failure(f"{e} (ISR {shrunk})")
        window_s = time.monotonic() - window_at
        follower.start()
        restarted = time.monotonic()
        follower.wait_listening(restarted + START_S)
        cluster.wait(f"follower: node {follower.id} back in the ISR of every partition",
                     cluster.full_isr_everywhere, REJOIN_S, 0.2)
        log(f"follower: killed {follower.id} (p0 leader {leader}, controller {controller}"
            f"{', the victim itself' if controller == follower.id else ''}); out of every ISR after "
            f"{shrunk_after:.1f}s {shrunk}; {acked_two} acked in {window_s:.1f}s with an ISR of 2; "
            f"back in every ISR {time.monotonic() - restarted:.1f}s after restart")
        outcomes.append(f"follower victim {follower.id} (controller {controller})")
        log(f"outcome: controller {formed_controller} when formed; {'; '.join(outcomes)}")

        time.sleep(1)
        left = producer.finish(70)
        sent = producer.sent
        acked = dict(producer.acked)
        errors = list(producer.errors)
        log(f"produced {sent} records; {len(acked)} acknowledged, {len(errors)} failed, "
            f"{left} unresolved after flush")
        check(left == 0, f"{left} records neither acknowledged nor failed after flush")
        check(not errors, f"{len(errors)} records failed delivery, e.g. (number, error) {errors[:5]}")

        # 4. Read everything back, twice.
        got, ends = consume_all(cluster.bootstrap, "first")
        verify(got, ends, acked, sent, "first consumer")
        log(f"consumed {sum(len(v) for v in got.values())} records "
            f"(per partition {[len(got[p]) for p in range(PARTITIONS)]}, high watermarks "
            f"{[ends[p] for p in range(PARTITIONS)]}): all {len(acked)} acknowledged exactly once, "
            f"at their offsets, in order")
        ok_isr, views = cluster.full_isr_everywhere()
        check(ok_isr, f"ISR not all 3 nodes at the end: {views}")
        got2, ends2 = consume_all(cluster.bootstrap, "second")
        check(ends2 == ends, f"high watermarks moved after the producer finished: {ends} then {ends2}")
        check(got2 == got, "a fresh consumer read different records: "
                           f"per partition {[len(got[p]) for p in range(PARTITIONS)]} then "
                           f"{[len(got2[p]) for p in range(PARTITIONS)]}")
        log(f"ISR of every partition is {list(NODES)} on every node; a fresh consumer read the same")

        def same_logs():
            sizes = {}
            for node in cluster.nodes.values():
                try:
                    sizes[node.id] = log_sizes(node.addr, TOPIC)
                except (OSError, struct.error) as e:
                    return False, f"node {node.id}: {e}"
            per_partition = {p: {n: sizes[n].get(p) for n in NODES} for p in range(PARTITIONS)}
            return all(len(set(v.values())) == 1 and None not in v.values()
                       for v in per_partition.values()), per_partition
        sizes = cluster.wait("every node's log of every partition the same size (DescribeLogDirs)",
                             same_logs, 10, 0.3)
        log(f"log bytes per partition identical on the 3 nodes: "
            f"{[sizes[p][1] for p in range(PARTITIONS)]}")

        # 5. Clean shutdown.
        codes = {}
        stopped_at = time.monotonic()
        for node in cluster.nodes.values():
            node.proc.send_signal(signal.SIGTERM)
        for node in cluster.nodes.values():
            codes[node.id] = node.wait_exit(stopped_at)
        bad = {n: c for n, c in codes.items() if c[0] != 0}
        check(not bad, f"nodes not exiting 0 within {STOP_S}s of SIGTERM: "
                       f"{ {n: ('still running' if c is None else c, f'{s:.1f}s') for n, (c, s) in bad.items()} }")
        log(f"SIGTERM: every node exited 0 (slowest {max(s for _, s in codes.values()):.1f}s)")
        ok = True
    except Failure as e:
        log(f"FAIL: {e}")
    except Exception as e:  # noqa: BLE001 - anything else is a failure too, reported the same way
        import traceback
        traceback.print_exc()
        log(f"FAIL: {type(e).__name__}: {e}")
    finally:
        if producer is not None:
            producer.stop.set()
        for node in list(cluster.nodes.values()) + [cluster.stranger]:
            node.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
            log(f"PASS in {time.monotonic() - run_started:.1f}s")
        else:
            for node in cluster.nodes.values():
                log(f"--- last 40 lines of node {node.id}'s log ({node.log_path}) ---")
                for line in node.tail():
                    print(f"    {line}", flush=True)
            log(f"logs and data kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

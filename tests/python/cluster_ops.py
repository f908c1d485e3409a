"""Cluster operations on loopback, with real processes and real clients.

Cluster A: three controller voters (nodes 1-3) and a broker-only node 4 (not
in --controller-voters: it follows the metadata log as a learner), all with
--auto-leader-rebalance false.

  1 broker-only node: Metadata lists 4 brokers; a topic of 4 partitions and
    replication factor 3 is placed over all four (each node first replica of
    one partition, each holding 3 replicas), node 4 leads one; acks=all
    records (from a non-idempotent producer: producer ids are step 8's
    concern) produced through node 4 alone are read back through node 4
    alone, and every replica's copy matches (DescribeLogDirs);
  2 controlled shutdown: a voter leading some partition (not the active
    controller) gets SIGTERM while an idempotent acks=all producer runs: its
    partitions must have new leaders (Metadata from another node) within
    MOVE_S of the signal, well before the 2 s session timeout would fence
    it; it must exit 0 within 30 s; acknowledgements go on;
  3 preferred leader election: the node restarted and back in every ISR
    gets no leadership back by itself (auto rebalance off);
    ElectLeaders(PREFERRED, all) gives each partition its first replica as
    leader, and asking again for the named partitions answers
    ELECTION_NOT_NEEDED. Every acknowledged record of 1-3 is then read back
    exactly once at its acknowledged offset;
  5 min.insync.replicas=3 on an RF 3 topic: acks=all succeeds with all up;
    with a follower SIGKILLed and out of the ISR, acks=all fails with
    NOT_ENOUGH_REPLICAS (19) and acks=1 succeeds; the follower restarted
    rejoins and acks=all succeeds again;
  6 sluice_under_replicated_partitions summed over the nodes' /metrics: 0
    with every ISR full, > 0 while that follower is down, 0 after it rejoins;
  7 CreatePartitions grows an RF 3 topic from 2 to 4 partitions, each new
    one with 3 replicas taking acks=all writes; DeleteTopics removes it from
    every node's Metadata and every `<topic>-<n>` directory from every data
    dir within DELETE_DIRS_S.

Every node of cluster A must then exit 0 on SIGTERM.

Cluster B (fresh ports and data): three voters with auto leader rebalance on
(the default) and --leader-imbalance-check-interval-ms 1000.

  4 auto leader rebalance: the leader of a partition (its preferred
    replica) is SIGKILLed, another replica takes over, the node is started
    again and must lead its preferred partitions again within REBALANCE_S of
    the restart.

  8 producer ids: idempotent producers bootstrapped on different nodes
    write in turn to one partition, and every acknowledged record must be
    read back at its offset; InitProducerId asked of each node by hand must
    give distinct ids. A failure here is reported after cluster B's SIGTERM
    check (every node of cluster B must exit 0 too).

Which voter the Raft election makes controller differs from run to run, and
the victims are chosen by it: each cluster logs an `outcome` line naming the
controller and the victims, so runs can be compared.

Run as `.venv/bin/python tests/python/cluster_ops.py` from the repository
root, after `ulimit -l unlimited` as scripts/test.sh does. `SLUICE_BIN`
overrides the binary (default target/debug/sluice, else target/release).
On failure, the last 40 lines of every node's log are printed and the
temporary directory is kept.
"""

import os
import re
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

START_S = 30
STOP_S = 30
MOVE_S = 1.0               # controlled shutdown: new leaders by then (session timeout is 2 s)
REJOIN_S = 20              # a restarted node back in every ISR by then
REBALANCE_S = 15           # auto rebalance: preferred leaders back by then, counted from the restart
DELETE_DIRS_S = 15         # DeleteTopics: no partition directory left by then
RATE = 200                 # records per second of the steady producer
PRODUCE_MAX_S = 90         # the steady producer stops by itself after this
CLIENT_LOG_LEVEL = 2       # librdkafka logs every connection refused by a stopped node

SESSION_ARGS = [
    "--cores", "1",
    "--broker-session-timeout-ms", "2000",
    "--broker-heartbeat-interval-ms", "200",
    "--replica-lag-time-max-ms", "3000",
]

NOT_ENOUGH_REPLICAS = 19
ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3


def log(msg):
    print(f"[cluster-ops] {msg}", flush=True)


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


def free_ports(count, used):
    """`count` distinct free loopback ports, none of them in `used`."""
    out = []
    for _ in range(count * 50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in used:
            used.add(p)
            out.append(p)
        if len(out) == count:
            return out
    raise Failure(f"no {count} distinct free ports")


class Node:
    def __init__(self, node_id, work, ports, voters, extra):
        self.id = node_id
        self.kport, self.cport, self.lport, self.mport = ports
        self.addr = f"127.0.0.1:{self.kport}"
        self.data_dir = work / f"n{node_id}"
        self.args = [
            binary(), "serve", "--node-id", str(node_id),
            "--data-dir", str(self.data_dir),
            "--listen", self.addr,
            "--controller-listen", f"127.0.0.1:{self.cport}",
            "--controller-voters", voters,
            "--link-listen", f"127.0.0.1:{self.lport}",
            "--metrics-listen", f"127.0.0.1:{self.mport}",
        ] + SESSION_ARGS + list(extra)
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

    def close_log(self):
        if self.log_file:
            self.log_file.close()
            self.log_file = None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.close_log()

    def wait_exit(self, started):
        """After SIGTERM: (exit code or None if still running, seconds)."""
        try:
            code = self.proc.wait(max(0.1, STOP_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        self.close_log()
        return code, took

    def under_replicated(self):
        """The node's sluice_under_replicated_partitions, or None if its
        /metrics does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("sluice_under_replicated_partitions"):
                name, _, value = line.rpartition(" ")
                if name.split("{")[0] == "sluice_under_replicated_partitions":
                    return float(value)
        raise Failure(f"node {self.id}'s /metrics has no sluice_under_replicated_partitions")

    def partition_dirs(self, topic):
        """Directories named <topic>-<n> anywhere under the data dir, and any
        other name starting with <topic>- (reported, not judged)."""
        exact, other = [], []
        pattern = re.compile(re.escape(topic) + r"-\d+")
        for dirpath, dirnames, _ in os.walk(self.data_dir):
            for d in dirnames:
                if pattern.fullmatch(d):
                    exact.append(os.path.join(dirpath, d))
                elif d.startswith(topic + "-"):
                    other.append(os.path.join(dirpath, d))
        return exact, other

    def tail(self, lines=40):
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as e:
            return [f"(no log: {e})"]


def _request(addr, api_key, version, correlation, body, timeout):
    client = b"sluice-cluster-ops-test"
    frame = struct.pack(">hhih", api_key, version, correlation, len(client)) + client + body
    host, port = addr.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        b = s.recv(size, socket.MSG_WAITALL)
    check(len(b) == size, f"api {api_key} from {addr}: short answer")
    return b


class Reader:
    def __init__(self, b):
        self.b = b
        self.at = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.at)
        self.at += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        self.at += n
        return self.b[self.at - n:self.at].decode()

    def ints(self):
        return [self.take(">i") for _ in range(self.take(">i"))]


def metadata(addr, topic, timeout=2.0):
    """Metadata v5 by hand, asked of one node, never creating the topic:
    ({broker_id: port}, controller_id, {partition: (error, leader, replicas,
    isr, offline)}, topic_error)."""
    name = topic.encode()
    body = struct.pack(">ih", 1, len(name)) + name + b"\0"
    r = Reader(_request(addr, 3, 5, 11, body, timeout))
    check(r.take(">i") == 11, "metadata correlation id")
    r.take(">i")                                 # throttle_time_ms
    brokers = {}
    for _ in range(r.take(">i")):
        node_id = r.take(">i")
        r.string()
        brokers[node_id] = r.take(">i")
        r.string()                               # rack
    r.string()                                   # cluster_id
    controller = r.take(">i")
    parts, topic_error = {}, None
    for _ in range(r.take(">i")):
        topic_error = r.take(">h")
        r.string()
        r.take(">b")                             # is_internal
        for _ in range(r.take(">i")):
            err, p, leader = r.take(">hii")
            parts[p] = (err, leader, r.ints(), r.ints(), r.ints())
    return brokers, controller, parts, topic_error


def log_sizes(addr, topic, timeout=2.0):
    """DescribeLogDirs v1 by hand, asked of one node: {partition: bytes of
    that node's log}."""
    r = Reader(_request(addr, 35, 1, 13, struct.pack(">i", -1), timeout))
    check(r.take(">i") == 13, "log dirs correlation id")
    r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        err = r.take(">h")
        check(err == 0, f"log dirs from {addr}: error {err}")
        r.string()
        for _ in range(r.take(">i")):
            name = r.string()
            for _ in range(r.take(">i")):
                p, psize, _lag, _future = r.take(">iqqb")
                if name == topic:
                    out[p] = psize
    return out


def init_producer_id(addr, timeout=5.0):
    """InitProducerId v0 by hand, no transactional id, asked of one node:
    (error, producer_id, producer_epoch)."""
    body = struct.pack(">hi", -1, 60_000)
    r = Reader(_request(addr, 22, 0, 17, body, timeout))
    check(r.take(">i") == 17, "init producer id correlation id")
    r.take(">i")                                 # throttle_time_ms
    return r.take(">hqh")


def wait(what, cond, timeout, interval=0.1):
    """Poll cond() -> (ok, last) until ok; Failure with the last seen value
    after `timeout` seconds. Returns (last, seconds taken)."""
    start = time.monotonic()
    end = start + timeout
    last = None
    while True:
        ok, last = cond()
        if ok:
            return last, time.monotonic() - start
        if time.monotonic() >= end:
            raise Failure(f"{what}: not within {timeout}s; last seen: {last}")
        time.sleep(interval)


class Cluster:
    def __init__(self, label, work, voter_ids, learner_ids, extra, used_ports):
        self.label = label
        ids = list(voter_ids) + list(learner_ids)
        ports = {n: free_ports(4, used_ports) for n in ids}
        voters = ",".join(f"{n}@127.0.0.1:{ports[n][1]}" for n in voter_ids)
        work.mkdir(parents=True, exist_ok=True)
        self.nodes = {n: Node(n, work, ports[n], voters, extra) for n in ids}
        self.ids = ids
        self.bootstrap = ",".join(node.addr for node in self.nodes.values())

    def start(self):
        for node in self.nodes.values():
            node.start()
        deadline = time.monotonic() + START_S
        for node in self.nodes.values():
            node.wait_listening(deadline)

    def live(self, exclude=()):
        return [n for n in self.nodes.values() if n.alive() and n.id not in exclude]

    def view(self, node, topic):
        try:
            return metadata(node.addr, topic)
        except (OSError, struct.error, Failure):
            return None

    def partitions(self, topic, count, exclude=()):
        """The partitions of `topic` as the first live node (not excluded)
        that answers with all `count` sees them, that node's id and the
        controller it names."""
        for node in self.live(exclude):
            v = self.view(node, topic)
            if v and len(v[2]) == count:
                return v[2], node.id, v[1]
        return None, None, None

    def controller(self, voters, timeout=10):
        """The controller every live node names, once they all name the same
        voter: which node that is depends on the Raft election, and a victim
        chosen by it must not be picked from one node's stale view."""
        def cond():
            named = {}
            for node in self.live():
                v = self.view(node, "__none__")
                named[node.id] = None if v is None else v[1]
            agreed = set(named.values())
            return len(agreed) == 1 and agreed <= set(voters), named
        named, _ = wait(f"cluster {self.label}: every live node naming the same controller among "
                        f"{list(voters)}", cond, timeout, 0.1)
        return next(iter(named.values()))

    def full_isr(self, topic, count, nodes=None):
        """cond(): every node of `nodes` (default all) is up and says every
        partition of `topic` has a leader and an ISR equal to its replicas."""
        def cond():
            views = {}
            for node in (nodes or self.nodes.values()):
                if not node.alive():
                    return False, f"node {node.id} is down"
                v = self.view(node, topic)
                if v is None:
                    return False, f"node {node.id} did not answer Metadata"
                parts = v[2]
                views[node.id] = {p: (leader, replicas, sorted(isr))
                                  for p, (_, leader, replicas, isr, _) in parts.items()}
                if len(parts) != count:
                    return False, views
                for err, leader, replicas, isr, _ in parts.values():
                    if err != 0 or leader not in replicas or sorted(isr) != sorted(replicas):
                        return False, views
            return True, views
        return cond

    def stop_all(self):
        """SIGTERM every live node: {id: (code, seconds)}."""
        codes = {}
        at = time.monotonic()
        nodes = self.live()
        for node in nodes:
            node.proc.send_signal(signal.SIGTERM)
        for node in nodes:
            codes[node.id] = node.wait_exit(at)
        bad = {n: c for n, c in codes.items() if c[0] != 0}
        check(not bad, f"cluster {self.label}: nodes not exiting 0 within {STOP_S}s of SIGTERM: "
                       f"{ {n: ('still running' if c is None else c, f'{s:.1f}s') for n, (c, s) in bad.items()} }")
        return codes

    def kill_all(self):
        for node in self.nodes.values():
            node.kill()


def producer_conf(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "socket.timeout.ms": 3_000,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.interval.ms": 1_000, "log_level": CLIENT_LOG_LEVEL}
    conf.update(extra)
    return conf


def produce_batch(conf, topic, items, timeout=20):
    """Produce [(partition, n)] (key k<n>, value n) and wait: [(n, error
    or None, partition, offset)] in delivery order."""
    from confluent_kafka import Producer
    producer = Producer(conf)
    out = []

    def on_delivery(err, msg):
        out.append((int(msg.value()), err, msg.partition(), msg.offset()))
    for p, n in items:
        producer.produce(topic, key=f"k{n}".encode(), value=str(n).encode(), partition=p,
                         on_delivery=on_delivery)
    left = producer.flush(timeout)
    check(left == 0, f"{left} records to {topic} neither delivered nor failed within {timeout}s")
    del producer
    return out


class SteadyProducer:
    """An idempotent acks=all producer sending record n (key k<n>, value n)
    to partition n % partitions at RATE records a second, in its own
    thread; it notes when each acknowledgement arrived."""

    def __init__(self, bootstrap, topic, partitions, first_n):
        from confluent_kafka import Producer
        self.producer = Producer(producer_conf(bootstrap, **{
            "enable.idempotence": True, "acks": "all", "message.timeout.ms": 60_000}))
        self.topic = topic
        self.partitions = partitions
        self.next_n = first_n
        self.acked = {}            # n -> (partition, offset, monotonic time)
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
                self.acked[n] = (msg.partition(), msg.offset(), time.monotonic())

    def acked_since(self, t, partitions):
        with self.lock:
            return sum(1 for p, _, at in self.acked.values() if at > t and p in partitions)

    def _run(self):
        started = time.monotonic()
        tick = 0.02
        per_tick = max(1, int(RATE * tick))
        next_at = started
        while not self.stop.is_set() and time.monotonic() - started < PRODUCE_MAX_S:
            if len(self.producer) < 20_000:
                for _ in range(per_tick):
                    n = self.next_n
                    try:
                        self.producer.produce(self.topic, key=f"k{n}".encode(), value=str(n).encode(),
                                              partition=n % self.partitions,
                                              on_delivery=self._on_delivery)
                    except BufferError:
                        break
                    self.next_n += 1
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


def consume_all(bootstrap, topic, partitions, label):
    """Every record of `topic` from the beginning up to each partition's
    high watermark: {partition: [(offset, n)]} and the watermarks."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cluster-ops-{label}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "log_level": CLIENT_LOG_LEVEL})
    try:
        ends = {}
        for p in range(partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        done = {p for p in range(partitions) if ends[p] == 0}
        deadline = time.monotonic() + 30
        while len(done) < partitions and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    check(m.error().code() == -191, f"{label} consumer: {m.error()}")
                    continue
                p = m.partition()
                if m.offset() < ends[p]:
                    got[p].append((m.offset(), int(m.value())))
                if m.offset() >= ends[p] - 1:
                    done.add(p)
        check(len(done) == partitions,
              f"{label} consumer: did not reach the high watermarks {ends} within 30s; "
              f"read per partition {[len(got[p]) for p in range(partitions)]}")
        return got, ends
    finally:
        consumer.close()


def verify(got, ends, acked, partitions, label):
    """Every acknowledged record ({n: (partition, offset)}) exactly once at
    its acknowledged offset; offsets dense; no number twice; numbers in the
    right partition and increasing within it."""
    for p in range(partitions):
        offsets = [o for o, _ in got[p]]
        check(offsets == list(range(ends[p])),
              f"{label}: partition {p} offsets are not 0..{ends[p]} dense ({len(offsets)} records, "
              f"first gaps {sorted(set(range(ends[p])) - set(offsets))[:10]})")
        numbers = [n for _, n in got[p]]
        check(all(n % partitions == p for n in numbers),
              f"{label}: partition {p} holds records not produced to it: "
              f"{[n for n in numbers if n % partitions != p][:10]}")
        check(len(numbers) == len(set(numbers)),
              f"{label}: partition {p} has {len(numbers) - len(set(numbers))} duplicated records")
        bad = [(numbers[i - 1], numbers[i]) for i in range(1, len(numbers)) if numbers[i] <= numbers[i - 1]]
        check(not bad, f"{label}: partition {p} out of order at (previous, number) {bad[:10]}")
    at = {p: dict(got[p]) for p in range(partitions)}
    missing = sorted((n, p, o) for n, (p, o) in acked.items() if o not in at[p])
    check(not missing, f"{label}: {len(missing)} acknowledged records missing, "
                       f"(number, partition, acked offset) {missing[:10]}")
    moved = sorted((n, p, o, at[p][o]) for n, (p, o) in acked.items() if at[p][o] != n)
    check(not moved, f"{label}: {len(moved)} acknowledged records not at their offset, "
                     f"(number, partition, offset, found) {moved[:10]}")


def elect_preferred(bootstrap, topic_partitions):
    """ElectLeaders PREFERRED for [(topic, partition)] or None (all):
    ({(topic, partition): error code, 0 for none}, which client), or
    (None, reason) when no installed client can ask."""
    from confluent_kafka.admin import AdminClient
    if hasattr(AdminClient, "elect_leaders"):
        from confluent_kafka import ElectionType, KafkaException, TopicPartition
        # socket.timeout.ms bounds the request: confluent_kafka 2.16.1 refuses
        # elect_leaders' own request_timeout/operation_timeout keywords
        # (SystemError: more argument specifiers than keyword list entries).
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 15_000,
                             "log_level": CLIENT_LOG_LEVEL})
        tps = None if topic_partitions is None else [TopicPartition(t, p) for t, p in topic_partitions]
        try:
            result = admin.elect_leaders(ElectionType.PREFERRED, tps).result(20)
        except KafkaException as e:
            raise Failure(f"ElectLeaders failed as a whole: {e}")
        out = {}
        for tp, err in result.items():
            if err is None:
                out[(tp.topic, tp.partition)] = 0
            else:
                ke = err.args[0] if isinstance(err, KafkaException) and err.args else err
                out[(tp.topic, tp.partition)] = ke.code() if hasattr(ke, "code") else repr(ke)
        return out, "confluent_kafka AdminClient.elect_leaders"
    try:
        from kafka.admin import KafkaAdminClient
    except ImportError:
        KafkaAdminClient = None
    if KafkaAdminClient is None or not hasattr(KafkaAdminClient, "elect_leaders"):
        return None, "neither confluent_kafka nor kafka-python has elect_leaders"
    return elect_preferred_kafka_python(bootstrap, topic_partitions), \
        "kafka-python KafkaAdminClient.elect_leaders"


def elect_preferred_kafka_python(bootstrap, topic_partitions):
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        arg = None
        if topic_partitions is not None:
            arg = {}
            for t, p in topic_partitions:
                arg.setdefault(t, []).append(p)
        response = admin.elect_leaders(0, arg, timeout_ms=15_000, raise_errors=False)
        out = {}
        for result in response.replica_election_results:
            topic, parts = result[0], result[1]
            for part in parts:
                out[(topic, part[0])] = part[1]
        return out
    finally:
        admin.close()


def under_replicated_sum(cluster):
    """(sum of sluice_under_replicated_partitions over the nodes that
    answer, {node: value or None})."""
    values = {n.id: (n.under_replicated() if n.alive() else None) for n in cluster.nodes.values()}
    return sum(v for v in values.values() if v is not None), values


# ---------------------------------------------------------------------------
# Cluster A: 3 voters + broker-only node 4, auto rebalance off.

def cluster_a(a):
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic
    t0 = time.monotonic()
    a.start()
    admin = AdminClient({"bootstrap.servers": a.bootstrap, "log_level": CLIENT_LOG_LEVEL})

    # 1. Broker-only node 4.
    def four_brokers():
        seen = {}
        for node in a.live():
            v = a.view(node, "__none__")
            seen[node.id] = sorted(v[0]) if v else None
        md = admin.list_topics(timeout=5)
        seen["admin"] = sorted(md.brokers)
        return all(s == [1, 2, 3, 4] for s in seen.values()), seen
    brokers, _ = wait("Metadata from every node listing brokers 1-4", four_brokers, START_S, 0.3)
    formed_s = time.monotonic() - t0
    formed_controller = a.controller((1, 2, 3))
    log(f"  cluster A: controller elected: node {formed_controller}")
    topic, parts_n = "spread", 4
    for f in admin.create_topics([NewTopic(topic, num_partitions=parts_n, replication_factor=3)]).values():
        f.result(30)
    views, _ = wait(f"{topic}: every partition with a leader and ISR of 3 on every node",
                    a.full_isr(topic, parts_n), 20, 0.2)
    placed = views[1]
    replicas = {p: r for p, (_, r, _) in placed.items()}
    leaders = {p: lead for p, (lead, _, _) in placed.items()}
    check(all(len(set(r)) == 3 and set(r) <= {1, 2, 3, 4} for r in replicas.values()),
          f"{topic}: not 3 distinct replicas per partition: {replicas}")
    held = {n: sum(1 for r in replicas.values() if n in r) for n in (1, 2, 3, 4)}
    firsts = sorted(r[0] for r in replicas.values())
    check(firsts == [1, 2, 3, 4] and all(h == 3 for h in held.values()),
          f"{topic}: placement does not rotate over the 4 nodes: replicas {replicas} "
          f"(first replicas {firsts}, replicas held per node {held})")
    led_by_4 = [p for p, lead in leaders.items() if lead == 4]
    check(led_by_4, f"{topic}: node 4 leads no partition: leaders {leaders}")
    # acks=all through node 4 alone, read back through node 4 alone.
    n4 = a.nodes[4].addr
    # Not idempotent: a second idempotent producer (step 2) could be given the
    # same producer id by another node; step 8 checks that on its own.
    first = produce_batch(producer_conf(n4, acks="all"), topic, [(n % parts_n, n) for n in range(200)])
    errs = [(n, e) for n, e, _, _ in first if e is not None]
    check(not errs, f"acks=all through node 4: {len(errs)} failed, e.g. {errs[:3]}")
    acked = {n: (p, o) for n, _, p, o in first}
    got, ends = consume_all(n4, topic, parts_n, "node4")
    verify(got, ends, acked, parts_n, "read through node 4")

    def copies_equal():
        sizes = {n.id: log_sizes(n.addr, topic) for n in a.nodes.values()}
        per = {p: {nid: sizes[nid].get(p) for nid in replicas[p]} for p in range(parts_n)}
        return all(None not in v.values() and len(set(v.values())) == 1 for v in per.values()), per
    sizes, _ = wait(f"{topic}: every replica's log the same size (DescribeLogDirs)", copies_equal, 10, 0.3)
    log(f"1 broker-only: formed in {formed_s:.1f}s with brokers {brokers['admin']}; {topic} replicas "
        f"{[replicas[p] for p in range(parts_n)]}, leaders {[leaders[p] for p in range(parts_n)]} "
        f"(node 4 leads {led_by_4}); 200 acks=all records through node 4 read back through node 4 "
        f"(high watermarks {[ends[p] for p in range(parts_n)]}); replica log bytes "
        f"{[sorted(set(sizes[p].values())) for p in range(parts_n)]}")

    # 2. Controlled shutdown under a steady acks=all producer.
    producer = SteadyProducer(a.bootstrap, topic, parts_n, first_n=200)
    producer.start()
    try:
        _, first_ack_s = wait("steady producer: a first acknowledgement",
                              lambda: (producer.acked_since(0, range(parts_n)) > 0, producer.errors[:3]),
                              10, 0.05)
        time.sleep(max(0.0, 1.0 - first_ack_s))
        controller = a.controller((1, 2, 3))
        parts, _, _ = a.partitions(topic, parts_n)
        check(parts is not None, "no node answered Metadata for " + topic)
        leading = {}
        for p, (_, lead, _, _, _) in parts.items():
            leading.setdefault(lead, []).append(p)
        candidates = [n for n in (1, 2, 3) if n in leading and n != controller] \
            or [n for n in leading if n != controller] or list(leading)
        victim = a.nodes[candidates[0]]
        step2_controller = controller
        moved_parts = leading[victim.id]
        signalled = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)

        def moved():
            ps, who, _ = a.partitions(topic, parts_n, exclude=(victim.id,))
            if ps is None:
                return False, "no other node answered"
            now = {p: ps[p][1] for p in moved_parts}
            return all(lead not in (victim.id, -1) for lead in now.values()), (now, f"node {who}'s view")
        (new_leaders, _), move_s = wait(f"controlled shutdown: new leaders for node {victim.id}'s "
                                        f"partitions {moved_parts}", moved, 10, 0.05)
        code, exit_s = victim.wait_exit(signalled)
        check(move_s <= MOVE_S, f"controlled shutdown: node {victim.id}'s partitions {moved_parts} had new "
                                f"leaders {new_leaders} only {move_s:.2f}s after SIGTERM, want <= {MOVE_S}s")
        check(code == 0, f"controlled shutdown: node {victim.id} "
                         f"{'still running' if code is None else f'exited {code}'} {exit_s:.1f}s after SIGTERM")
        moved_at = signalled + move_s
        try:
            after, _ = wait(f"controlled shutdown: an acks=all record acknowledged on partitions {moved_parts} "
                            f"after their move", lambda: (lambda n: (n > 0, n))(
                                producer.acked_since(moved_at, moved_parts)),
                            max(0.1, 3.0 - (time.monotonic() - signalled)), 0.05)
        except Failure as e:
            raise Failure(f"{e} (errors {producer.errors[:3]})")
        check(not producer.errors, f"controlled shutdown: delivery errors {producer.errors[:5]}")
        new_leaders_s = ", ".join(f"p{p} -> node {new_leaders[p]}" for p in moved_parts)
        log(f"2 controlled shutdown: first ack of the steady producer after {first_ack_s:.2f}s; "
            f"SIGTERM to node {victim.id} (leader of {moved_parts}, controller is "
            f"{controller}): new leaders {new_leaders_s} {move_s:.2f}s after the signal; exit 0 after "
            f"{exit_s:.1f}s; {after} records acknowledged on those partitions since the move")

        # 3. Restart; no automatic move back; preferred election.
        victim.start()
        restarted = time.monotonic()
        victim.wait_listening(restarted + START_S)
        _, rejoin_s = wait(f"node {victim.id} back in every ISR of {topic}", a.full_isr(topic, parts_n),
                           REJOIN_S, 0.2)
        # Nothing to poll for: this is the time a (wrong) automatic move back
        # is given to show itself.
        time.sleep(1.0)
        parts, _, _ = a.partitions(topic, parts_n)
        check(parts is not None, "no node answered Metadata for " + topic)
        before = {p: parts[p][1] for p in range(parts_n)}
        check(all(before[p] != victim.id for p in moved_parts),
              f"auto rebalance is off, yet node {victim.id} leads again some of {moved_parts}: {before}")
        result, how = elect_preferred(a.bootstrap, None)
        if result is None:
            log(f"3 preferred election: SKIPPED: {how}")
        else:
            # With no partitions named, Kafka answers only the partitions it
            # elected (kafka-python names every partition itself, so there
            # ELECTION_NOT_NEEDED answers the others).
            elected = sorted(tp for tp, c in result.items() if c == 0)
            check(all(c in (0, ELECTION_NOT_NEEDED) for c in result.values()),
                  f"ElectLeaders(PREFERRED, all) answered errors: {result}")
            mine = [p for t, p in elected if t == topic]
            check(mine == sorted(p for p in range(parts_n) if before[p] != replicas[p][0]),
                  f"ElectLeaders(PREFERRED, all) elected {topic} partitions {mine}, want those "
                  f"not led by their first replica: leaders {before}, replicas {replicas}")

            def preferred_everywhere():
                seen = {}
                for node in a.nodes.values():
                    v = a.view(node, topic)
                    if v is None or len(v[2]) != parts_n:
                        return False, f"node {node.id}: {v and v[2]}"
                    seen[node.id] = {p: v[2][p][1] for p in range(parts_n)}
                return all(seen[n][p] == replicas[p][0] for n in seen for p in range(parts_n)), seen
            after_elect, elect_s = wait("every node seeing each partition led by its first replica",
                                        preferred_everywhere, 5, 0.1)
            again, _ = elect_preferred(a.bootstrap, [(topic, p) for p in range(parts_n)])
            check(sorted(again) == [(topic, p) for p in range(parts_n)] and
                  all(c == ELECTION_NOT_NEEDED for c in again.values()),
                  f"ElectLeaders(PREFERRED) again for {topic} 0-{parts_n - 1}: {again}, "
                  f"want {ELECTION_NOT_NEEDED} (ELECTION_NOT_NEEDED) for each")
            log(f"3 preferred election ({how}): node {victim.id} back in every ISR {rejoin_s:.1f}s after "
                f"restart; leaders before {[before[p] for p in range(parts_n)]}; elected {topic} {mine} and "
                f"{len(elected) - len(mine)} partitions of other topics; leaders then "
                f"{[after_elect[1][p] for p in range(parts_n)]} = first replicas on every node within "
                f"{elect_s:.2f}s; asked again: "
                f"{sorted(set(again.values()))} (ELECTION_NOT_NEEDED) for all {parts_n}")
        time.sleep(0.5)
        left = producer.finish(30)
    finally:
        producer.stop.set()
    check(left == 0, f"steady producer: {left} records unresolved after flush")
    check(not producer.errors, f"steady producer: {len(producer.errors)} failed, e.g. {producer.errors[:5]}")
    acked.update({n: (p, o) for n, (p, o, _) in producer.acked.items()})
    got, ends = consume_all(a.bootstrap, topic, parts_n, "all")
    verify(got, ends, acked, parts_n, "steady producer read-back")
    log(f"  read back {sum(ends.values())} records of {topic}: all {len(acked)} acknowledged exactly once "
        f"at their offsets")

    # 5 + 6. min.insync.replicas=3 and the under-replicated gauge.
    strict = "strict"
    for f in admin.create_topics([NewTopic(strict, num_partitions=1, replication_factor=3,
                                           config={"min.insync.replicas": "3"})]).values():
        f.result(30)
    wait(f"{strict}: ISR of 3 on every node", a.full_isr(strict, 1), 20, 0.2)
    mir = list(admin.describe_configs([ConfigResource("topic", strict)]).values())[0] \
        .result()["min.insync.replicas"].value
    check(mir == "3", f"{strict}: min.insync.replicas is {mir}")
    wait(f"{topic}: ISR full on every node", a.full_isr(topic, parts_n), 10, 0.2)
    (gauge0, _), _ = wait("sluice_under_replicated_partitions summing to 0 with every ISR full",
                          lambda: (lambda s: (s[0] == 0, s))(under_replicated_sum(a)), 10, 0.3)
    strict_conf = dict(acks="all", retries=0, **{"message.timeout.ms": 5_000, "request.timeout.ms": 5_000})
    seq = iter(range(10_000))
    r = produce_batch(producer_conf(a.bootstrap, **strict_conf), strict, [(0, next(seq))])
    check(r[0][1] is None, f"{strict}: acks=all with all 3 in sync failed: {r[0][1]}")
    controller = a.controller((1, 2, 3))
    parts, _, _ = a.partitions(strict, 1)
    check(parts is not None, "no node answered Metadata for " + strict)
    _, s_leader, s_replicas, _, _ = parts[0]
    followers = [n for n in s_replicas if n != s_leader]
    follower = a.nodes[([n for n in followers if n != controller] or followers)[0]]
    follower.kill()

    def isr_shrunk():
        v = a.view(a.nodes[s_leader], strict)
        if v is None or 0 not in v[2]:
            return False, "leader did not answer"
        return follower.id not in v[2][0][3], v[2][0]
    shrunk, shrink_s = wait(f"{strict}: node {follower.id} out of the ISR (leader {s_leader}'s view)",
                            isr_shrunk, 15, 0.1)
    (gauge_down, per_node), _ = wait("sluice_under_replicated_partitions > 0 with a follower down",
                                     lambda: (lambda s: (s[0] > 0, s))(under_replicated_sum(a)), 5, 0.2)
    r = produce_batch(producer_conf(a.bootstrap, **strict_conf), strict, [(0, next(seq))])
    err = r[0][1]
    check(err is not None and err.code() == NOT_ENOUGH_REPLICAS,
          f"{strict}: acks=all with ISR {shrunk[3]} < min.insync.replicas 3 answered "
          f"{'success at offset ' + str(r[0][3]) if err is None else err}, want NOT_ENOUGH_REPLICAS (19)")
    r1 = produce_batch(producer_conf(a.bootstrap, **dict(strict_conf, acks="1")), strict, [(0, next(seq))])
    check(r1[0][1] is None, f"{strict}: acks=1 with a follower down failed: {r1[0][1]}")
    follower.start()
    restarted = time.monotonic()
    follower.wait_listening(restarted + START_S)
    _, rejoin_s = wait(f"{strict}: node {follower.id} back in the ISR on every node", a.full_isr(strict, 1),
                       REJOIN_S, 0.2)
    r2 = produce_batch(producer_conf(a.bootstrap, **strict_conf), strict, [(0, next(seq))])
    check(r2[0][1] is None, f"{strict}: acks=all after node {follower.id} rejoined failed: {r2[0][1]}")
    log(f"5 min.insync.replicas=3: acks=all ok with all in sync; SIGKILL follower {follower.id} (leader "
        f"{s_leader}, controller {controller}): out of the ISR after {shrink_s:.1f}s (ISR "
        f"{sorted(shrunk[3])}); acks=all -> {err.name()} ({err.code()}); acks=1 ok at offset {r1[0][3]}; "
        f"back in the ISR {rejoin_s:.1f}s after restart; acks=all ok at offset {r2[0][3]}")
    (gauge_back, per_back), back_s = wait(
        "sluice_under_replicated_partitions back to 0 after the follower rejoined",
        lambda: (lambda s: (s[0] == 0, s))(under_replicated_sum(a)), REJOIN_S, 0.3)
    log(f"6 under-replicated gauge (sum over nodes): {gauge0:g} all in sync; {gauge_down:g} with node "
        f"{follower.id} down (per node {per_node}); {gauge_back:g} {back_s:.1f}s after the rejoin was seen "
        f"(per node {per_back})")

    # 7. CreatePartitions and DeleteTopics on a replicated topic.
    grow = "grow"
    for f in admin.create_topics([NewTopic(grow, num_partitions=2, replication_factor=3)]).values():
        f.result(30)
    wait(f"{grow}: 2 partitions with an ISR of 3 on every node", a.full_isr(grow, 2), 20, 0.2)
    for f in admin.create_partitions([NewPartitions(grow, 4)]).values():
        f.result(30)
    views, _ = wait(f"{grow}: 4 partitions with an ISR of 3 on every node", a.full_isr(grow, 4), 20, 0.2)
    g_replicas = {p: r for p, (_, r, _) in views[1].items()}
    check(all(len(set(g_replicas[p])) == 3 for p in range(4)),
          f"{grow}: partitions without 3 distinct replicas: {g_replicas}")
    writes = produce_batch(producer_conf(a.bootstrap, acks="all", **{"enable.idempotence": True}), grow,
                           [(n % 4, n) for n in range(40)])
    errs = [(n, e) for n, e, _, _ in writes if e is not None]
    check(not errs, f"{grow}: acks=all writes failed: {errs[:5]}")
    per_part = {p: sorted(o for _, _, pp, o in writes if pp == p) for p in range(4)}
    check(all(per_part[p] == list(range(10)) for p in range(4)),
          f"{grow}: acknowledged offsets per partition {per_part}")
    dirs_before = {n.id: n.partition_dirs(grow)[0] for n in a.nodes.values()}
    count_before = sum(len(d) for d in dirs_before.values())
    check(count_before == 12, f"{grow}: {count_before} partition directories over the data dirs, want 12: "
                              f"{dirs_before}")
    for f in admin.delete_topics([grow], operation_timeout=15).values():
        f.result(30)

    def gone_from_metadata():
        seen = {}
        for node in a.nodes.values():
            v = a.view(node, grow)
            seen[node.id] = None if v is None else (v[3], len(v[2]))
        seen["admin"] = grow in admin.list_topics(timeout=5).topics
        ok = all(s == (UNKNOWN_TOPIC_OR_PARTITION, 0) for k, s in seen.items() if k != "admin") \
            and not seen["admin"]
        return ok, seen
    _, md_s = wait(f"{grow}: gone from every node's Metadata", gone_from_metadata, 10, 0.1)

    def no_dirs():
        left = {n.id: n.partition_dirs(grow) for n in a.nodes.values()}
        return all(not e for e, _ in left.values()), left
    left, dirs_s = wait(f"{grow}: no <topic>-<n> directory in any data dir", no_dirs, DELETE_DIRS_S, 0.2)
    others = {n: o for n, (_, o) in left.items() if o}
    log(f"7 create/delete: {grow} grown 2 -> 4 partitions, replicas {[g_replicas[p] for p in range(4)]}, "
        f"10 acks=all records into each; deleted: gone from Metadata on every node after {md_s:.2f}s, "
        f"its {count_before} partition directories gone after {md_s + dirs_s:.1f}s"
        + (f" (other leftovers named {grow}-*: {others})" if others else ""))

    log(f"  cluster A outcome: controller {formed_controller} when formed; step 2 victim {victim.id} "
        f"(controller {step2_controller}); step 5 follower {follower.id} (leader {s_leader}, controller "
        f"{controller})")
    codes = a.stop_all()
    log(f"  cluster A: SIGTERM, every node exited 0 (slowest {max(s for _, s in codes.values()):.1f}s); "
        f"cluster A took {time.monotonic() - t0:.1f}s")


# ---------------------------------------------------------------------------
# Cluster B: 3 voters, auto rebalance on, checked every second.

def cluster_b(b):
    from confluent_kafka.admin import AdminClient, NewTopic
    t0 = time.monotonic()
    b.start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap, "log_level": CLIENT_LOG_LEVEL})

    def three():
        md = admin.list_topics(timeout=5)
        return sorted(md.brokers) == [1, 2, 3], sorted(md.brokers)
    wait("cluster B: Metadata listing brokers 1-3", three, START_S, 0.3)
    log(f"  cluster B: controller elected: node {b.controller((1, 2, 3))}")
    topic, parts_n = "rebalance", 3
    for f in admin.create_topics([NewTopic(topic, num_partitions=parts_n, replication_factor=3)]).values():
        f.result(30)
    views, _ = wait(f"{topic}: ISR of 3 on every node", b.full_isr(topic, parts_n), 20, 0.2)
    replicas = {p: r for p, (_, r, _) in views[1].items()}
    leaders = {p: lead for p, (lead, _, _) in views[1].items()}
    check(all(leaders[p] == replicas[p][0] for p in range(parts_n)),
          f"{topic}: fresh partitions not led by their first replica: leaders {leaders}, replicas {replicas}")
    controller = b.controller((1, 2, 3))
    candidates = [p for p in range(parts_n) if leaders[p] != controller] or list(range(parts_n))
    victim = b.nodes[leaders[candidates[0]]]
    preferred = [p for p in range(parts_n) if replicas[p][0] == victim.id]
    killed = time.monotonic()
    victim.kill()

    def failed_over():
        ps, who, _ = b.partitions(topic, parts_n, exclude=(victim.id,))
        if ps is None:
            return False, "no other node answered"
        now = {p: ps[p][1] for p in preferred}
        return all(lead not in (victim.id, -1) for lead in now.values()), now
    failover, failover_s = wait(f"{topic}: new leaders for {preferred} after SIGKILL of node {victim.id}",
                                failed_over, 10, 0.1)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - killed - failover_s)))
    victim.start()
    restarted = time.monotonic()
    victim.wait_listening(restarted + START_S)
    _, rejoin_s = wait(f"node {victim.id} back in every ISR of {topic}", b.full_isr(topic, parts_n),
                       REJOIN_S, 0.2)

    def preferred_back():
        seen = {}
        for node in b.nodes.values():
            v = b.view(node, topic)
            if v is None or len(v[2]) != parts_n:
                return False, f"node {node.id}: {v and v[2]}"
            seen[node.id] = {p: v[2][p][1] for p in range(parts_n)}
        return all(seen[n][p] == replicas[p][0] for n in seen for p in range(parts_n)), seen
    remaining = REBALANCE_S - (time.monotonic() - restarted)
    try:
        back, _ = wait(f"auto rebalance: every partition led by its first replica on every node within "
                       f"{REBALANCE_S}s of node {victim.id}'s restart", preferred_back, max(0.1, remaining), 0.1)
    except Failure as e:
        raise Failure(f"{e} (leaders were {leaders}, replicas {replicas}; node {victim.id} back in every ISR "
                      f"{rejoin_s:.1f}s after restart)")
    back_s = time.monotonic() - restarted
    log(f"4 auto rebalance: SIGKILL node {victim.id} (preferred leader of {preferred}, controller "
        f"{controller}); failover to {failover} after {failover_s:.1f}s; restarted: back in every ISR after "
        f"{rejoin_s:.1f}s, leading {preferred} again after {back_s:.1f}s "
        f"(leaders {[back[1][p] for p in range(parts_n)]})")
    log(f"  cluster B outcome: controller {controller}; step 4 victim {victim.id}")
    # 8. Producer ids are the cluster's: two idempotent producers starting
    # on different nodes must not be taken for one.
    deferred = None
    try:
        producer_ids_distinct(b)
    except Failure as e:
        deferred = e
        log(f"8 producer ids: FAILED (reported at the end): {e}")
    codes = b.stop_all()
    log(f"  cluster B: SIGTERM, every node exited 0 (slowest {max(s for _, s in codes.values()):.1f}s); "
        f"cluster B took {time.monotonic() - t0:.1f}s")
    if deferred is not None:
        raise deferred


def producer_ids_distinct(b):
    """Idempotent producers bootstrapped on different nodes write in turn to
    one partition: every acknowledged record must be read back at its
    offset. Then InitProducerId asked of every node must give distinct ids."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": b.bootstrap, "log_level": CLIENT_LOG_LEVEL})
    topic = "pids"
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)]).values():
        f.result(30)
    wait(f"{topic}: ISR of 3 on every node", b.full_isr(topic, 1), 20, 0.2)
    acked, by_node = {}, {}
    for i, node in enumerate(b.nodes.values()):
        sent = produce_batch(producer_conf(node.addr, acks="all", **{"enable.idempotence": True}), topic,
                             [(0, n) for n in range(5 * i, 5 * i + 5)])
        errs = [(n, e) for n, e, _, _ in sent if e is not None]
        check(not errs, f"{topic}: idempotent producer through node {node.id} failed: {errs[:3]}")
        by_node[node.id] = sorted(o for _, _, _, o in sent)
        acked.update({n: (p, o) for n, _, p, o in sent})
    got, ends = consume_all(b.bootstrap, topic, 1, "pids")
    try:
        verify(got, ends, acked, 1, f"{topic}")
    except Failure as e:
        raise Failure(f"{e}; acknowledged offsets per producer (by bootstrap node) {by_node}, "
                      f"high watermark {ends[0]}, log holds numbers {[n for _, n in got[0]]}")
    ids = {node.id: init_producer_id(node.addr) for node in b.nodes.values()}
    check(all(e == 0 for e, _, _ in ids.values()), f"InitProducerId errors: {ids}")
    pids = [pid for _, pid, _ in ids.values()]
    check(len(set(pids)) == len(pids),
          f"InitProducerId asked of each node gave the same producer id twice: "
          f"{ {n: (pid, epoch) for n, (_, pid, epoch) in ids.items()} }")
    log(f"8 producer ids: 3 idempotent producers, one bootstrapped on each node, acknowledged offsets "
        f"{by_node}, all {len(acked)} read back at their offsets; InitProducerId per node "
        f"{ {n: pid for n, (_, pid, _) in ids.items()} }")


def main():
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sluice-cluster-ops-"))
    used = set()
    a = Cluster("A", work / "a", (1, 2, 3), (4,), ["--auto-leader-rebalance", "false"], used)
    b = Cluster("B", work / "b", (1, 2, 3), (), ["--leader-imbalance-check-interval-ms", "1000"], used)
    ok = False
    try:
        import confluent_kafka
        log(f"binary {binary()}; confluent_kafka {confluent_kafka.version()}, "
            f"librdkafka {confluent_kafka.libversion()[0]}; work dir {work}")
        cluster_a(a)
        cluster_b(b)
        ok = True
    except Failure as e:
        log(f"FAIL: {e}")
    except Exception as e:  # noqa: BLE001 - anything else is a failure too, reported the same way
        import traceback
        traceback.print_exc()
        log(f"FAIL: {type(e).__name__}: {e}")
    finally:
        a.kill_all()
        b.kill_all()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
            log(f"PASS in {time.monotonic() - started:.1f}s")
        else:
            for c in (a, b):
                for node in c.nodes.values():
                    if node.proc is None:
                        continue
                    log(f"--- last 40 lines of cluster {c.label} node {node.id}'s log ({node.log_path}) ---")
                    for line in node.tail():
                        print(f"    {line}", flush=True)
            log(f"logs and data kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

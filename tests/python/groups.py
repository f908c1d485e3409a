"""Consumer groups with real Kafka clients.

Each section starts its own `sluice` process (free port, temp data dir) and
drives the group coordinator the way applications do:

  1 confluent   three consumer processes in one group commit after every
                batch while records are produced; a fourth joins and leaves;
                one is killed with SIGKILL and its partitions must move to
                the others within the session timeout. Every record is
                processed, nothing below a committed offset is delivered
                again, the final group is Stable with every partition
                owned by exactly one live member.
  2 kafkapython / aiokafka  the same semantics, one member leaves midway.
  3 kcat        two `kcat -G` balanced consumers share a topic.
  4 restart     committed offsets and the group survive SIGTERM and SIGKILL
                of the broker; a consumer resumes exactly there.
  5 admin       describe/list groups and offsets, alter offsets, delete
                offsets (GROUP_SUBSCRIBED_TO_TOPIC while subscribed), delete
                groups (NON_EMPTY_GROUP, then success, then GROUP_ID_NOT_FOUND).
  6 static      a static member (group.instance.id) restarting within its
                session timeout gets its partitions back, the other member
                is not rebalanced.
  7 cooperative cooperative-sticky: a member joining takes partitions
                incrementally; the existing member keeps consuming the rest.

Every section prints PASS or FAIL with the reason and its time; the script
exits non-zero if any failed. `python groups.py 1 4` runs some sections only.
Run by scripts/test.sh; `SLUICE_BIN` overrides the binary to test.
"""

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compat import Broker  # noqa: E402

DEADLINE_S = 30
# Lower than Kafka's default minimum (6 s) so that failure detection is fast.
MIN_SESSION_MS = 1000
SESSION_MS = 4000


def log(msg):
    print(f"[groups] {msg}", flush=True)


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# Differences from Kafka that do not stop a section: it goes on checking
# the rest, then fails with all of them.
DEVIATIONS = []


def expect(cond, msg):
    if not cond:
        log(f"DEVIATION: {msg}")
        DEVIATIONS.append(msg)


def wait_for(what, cond, timeout=DEADLINE_S, interval=0.1):
    """Polls cond() until it returns something truthy; fails after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class GroupBroker(Broker):
    """compat.Broker with the group flags this test needs."""

    def __init__(self, work):
        super().__init__(work / "data", extra_args=[
            "--group-initial-rebalance-delay-ms", "0",
            "--group-min-session-timeout-ms", str(MIN_SESSION_MS)])

    def sigkill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log_file.close()


# ---------------------------------------------------------------- helpers

def admin(addr):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": addr})


def create_topic(a, topic, partitions):
    from confluent_kafka.admin import NewTopic
    for f in a.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10).values():
        f.result(timeout=DEADLINE_S)


def produce(addr, topic, start, count, partitions=None):
    """Keyed records whose value is their sequence number."""
    from confluent_kafka import Producer
    errors = []
    p = Producer({"bootstrap.servers": addr, "linger.ms": 5, "acks": "all"})
    for i in range(start, start + count):
        kw = {"partition": i % partitions} if partitions else {}
        p.produce(topic, key=f"key-{i % 997}".encode(), value=str(i).encode(),
                  on_delivery=lambda err, msg: err and errors.append(err), **kw)
        if i % 5000 == 0:
            p.poll(0)
    check(p.flush(DEADLINE_S) == 0, "producer: undelivered records")
    check(not errors, f"producer errors: {errors[:3]}")


def end_offsets(addr, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": addr, "group.id": "groups-watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()


def describe(a, group):
    return a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=DEADLINE_S)


def listed_groups(a):
    res = a.list_consumer_groups(request_timeout=10).result(timeout=DEADLINE_S)
    return {g.group_id: g for g in res.valid}


def committed_offsets(a, group):
    from confluent_kafka import ConsumerGroupTopicPartitions
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                        request_timeout=10)[group].result(timeout=DEADLINE_S)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def assignment_of(desc):
    """member id -> sorted partitions, from a ConsumerGroupDescription."""
    return {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
            for m in desc.members}


def stable_with(a, group, members, partitions):
    """The description, once the group is Stable with `members` members that
    own every partition exactly once; None otherwise."""
    from confluent_kafka import ConsumerGroupState
    try:
        d = describe(a, group)
    except Exception:
        return None
    if d.state != ConsumerGroupState.STABLE or len(d.members) != members:
        return None
    owned = sorted(p for ps in assignment_of(d).values() for p in ps)
    return d if owned == list(range(partitions)) else None


def group_summary(a, group):
    try:
        d = describe(a, group)
        return f"{d.state.name} members {[(m.client_id, sorted(tp.partition for tp in m.assignment.topic_partitions)) for m in d.members]}"
    except Exception as e:  # noqa: BLE001
        return f"DescribeGroups failed: {e}"


def wait_stable(a, group, members, partitions, timeout=DEADLINE_S):
    try:
        return wait_for(f"{group}: Stable with {members} members owning each partition once",
                        lambda: stable_with(a, group, members, partitions), timeout=timeout)
    except Failure as e:
        raise Failure(f"{e}; group is {group_summary(a, group)}") from None


def kerr(exc):
    """The KafkaError name inside a confluent-kafka exception."""
    e = exc.args[0] if exc.args else exc
    return e.name() if hasattr(e, "name") else repr(exc)


class History:
    """Deliveries and successful commits, with times on one clock
    (CLOCK_MONOTONIC is system-wide, so processes share it)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # (t, member, kind, partition, offset, seq)

    def add(self, *ev):
        with self.lock:
            self.events.append(ev)

    def verify(self, label, ends, total=None):
        """Every offset below the end delivered at least once; no delivery
        of an offset below a commit that completed before it; the last
        commit of every partition at its end. Returns a summary."""
        with self.lock:
            events = sorted(self.events, key=lambda e: e[0])
        committed = {}
        # A member resumes a partition from what was committed when it was
        # assigned it: its own later commit of records it fetched before the
        # reset (Kafka accepts those too) does not forbid their redelivery.
        # Where assignments are recorded ("A" events), a delivery is checked
        # against the commits completed before the member's latest
        # assignment of the partition; elsewhere against every earlier one.
        resume_bound = {}
        delivered = {p: set() for p in ends}
        seqs = set()
        violations = []
        deliveries = 0
        for t, member, kind, p, o, seq in events:
            if kind == "C":
                if o > committed.get(p, (-1, None))[0]:
                    committed[p] = (o, member, t)
            elif kind == "A":
                resume_bound[(member, p)] = committed.get(p)
            elif kind == "D":
                deliveries += 1
                c = resume_bound[(member, p)] if (member, p) in resume_bound else committed.get(p)
                if c and o < c[0]:
                    violations.append(f"p{p} offset {o} delivered to {member} at {t:.3f} after "
                                      f"{c[1]} committed {c[0]} at {c[2]:.3f}")
                delivered.setdefault(p, set()).add(o)
                if seq is not None:
                    seqs.add(seq)
        missing = {p: len(set(range(e)) - delivered[p]) for p, e in ends.items()}
        missing = {p: n for p, n in missing.items() if n}
        check(not violations, f"{label}: {len(violations)} deliveries below a committed offset, "
                              f"first: {violations[:5]}")
        check(not missing, f"{label}: offsets never delivered per partition: {missing}")
        if total is not None:
            lost = set(range(total)) - seqs
            check(not lost, f"{label}: {len(lost)} sequence numbers never delivered, e.g. {sorted(lost)[:5]}")
        last = {p: committed.get(p, (-1,))[0] for p in ends}
        check(last == ends, f"{label}: last commits {last} != end offsets {ends}")
        return f"{deliveries} deliveries ({deliveries - sum(ends.values())} redelivered), " \
               f"{sum(1 for e in events if e[2] == 'C')} partition commits"


def record_assignments(hist, name, assigned):
    t = time.monotonic()
    for tp in assigned:
        hist.add(t, name, "A", tp.partition, None, None)


def AssignmentsTo(hist, name):
    """A kafka-python rebalance listener recording assignments in a History."""
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            record_assignments(hist, name, assigned)

    return Listener()


def AioAssignmentsTo(hist, name):
    """The same for aiokafka, whose listener has its own base class."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            record_assignments(hist, name, assigned)

    return Listener()


def all_committed(hist, ends):
    with hist.lock:
        last = {}
        for t, m, kind, p, o, seq in hist.events:
            if kind == "C":
                last[p] = max(last.get(p, -1), o)
    return all(last.get(p, -1) >= e for p, e in ends.items())


# ---------------------------------------------------------------- 1 confluent-kafka, processes

def ck_worker(cfg):
    """One group member in its own process: logs assignments, deliveries and
    successful commits to a file, commits synchronously after each batch.
    SIGTERM closes the consumer (LeaveGroup)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    out = open(cfg["log"], "a", buffering=1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def ev(*a):
        out.write(" ".join(str(x) for x in (time.monotonic(),) + a) + "\n")

    c = Consumer({"bootstrap.servers": cfg["addr"], "group.id": cfg["group"], "client.id": cfg["name"],
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": cfg["session_ms"], "heartbeat.interval.ms": 500})
    c.subscribe([cfg["topic"]],
                on_assign=lambda c, ps: ev("A", ",".join(str(p.partition) for p in ps) or "-"),
                on_revoke=lambda c, ps: ev("R", ",".join(str(p.partition) for p in ps) or "-"))
    end = time.monotonic() + cfg["max_s"]
    while not stop and time.monotonic() < end:
        msgs = c.consume(num_messages=200, timeout=0.2)
        if not msgs:
            continue
        t = time.monotonic()
        nxt = {}
        lines = []
        for m in msgs:
            if m.error():
                ev("E", m.error().name())
                continue
            lines.append(f"{t} D {m.partition()} {m.offset()} {int(m.value())}\n")
            nxt[m.partition()] = m.offset() + 1
        out.write("".join(lines))
        time.sleep(cfg["work_s"])  # "processing"
        try:
            res = c.commit(offsets=[TopicPartition(cfg["topic"], p, o) for p, o in nxt.items()],
                           asynchronous=False)
            for tp in res:
                if tp.error:
                    ev("CE", tp.partition, tp.offset, tp.error.name())
                else:
                    ev("C", tp.partition, tp.offset)
        except KafkaException as e:
            ev("CE", -1, -1, kerr(e))
    ev("CLOSING")
    c.close()
    ev("CLOSED")


class WorkerProc:
    def __init__(self, work, name, cfg):
        self.name = name
        self.log = work / f"{name}.log"
        cfg = dict(cfg, name=name, log=str(self.log))
        self.proc = subprocess.Popen([sys.executable, __file__, "--ck-worker", json.dumps(cfg)])

    def events(self):
        """Parsed log lines (a killed worker's last line may be partial)."""
        out = []
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            f = line.split(" ")
            try:
                out.append((float(f[0]), f[1], f[2:]))
            except (IndexError, ValueError):
                pass
        return out

    def assignment(self, since=0.0):
        """Current partitions, and the time they were assigned."""
        cur, at = set(), None
        for t, kind, rest in self.events():
            if kind in ("A", "R") and t >= since:
                ps = set() if rest[0] == "-" else {int(x) for x in rest[0].split(",")}
                cur = ps if kind == "A" else set()
                at = t
        return cur, at

    def delivered(self):
        return sum(1 for _, kind, _ in self.events() if kind == "D")

    def stop(self, timeout=DEADLINE_S):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"{self.name} did not close within {timeout}s")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def covered(workers, since=0.0, partitions=6):
    """The time at which the workers' current assignments together hold
    every partition exactly once, or None."""
    owned, last = [], since
    for w in workers:
        ps, at = w.assignment(since)
        owned += sorted(ps)
        if at:
            last = max(last, at)
    return last if sorted(owned) == list(range(partitions)) else None


def section_confluent(work, broker):
    from confluent_kafka import ConsumerGroupState
    topic, group, parts, total = "g1-orders", "g1", 6, 30_000
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, 10_000)
    # The rest is produced while the group works.
    prod_err = []

    def producer():
        try:
            for start in range(10_000, total, 1_000):
                produce(broker.addr, topic, start, 1_000)
                time.sleep(0.4)
        except Exception as e:  # noqa: BLE001
            prod_err.append(e)
    pt = threading.Thread(target=producer, daemon=True)
    pt.start()

    cfg = {"addr": broker.addr, "topic": topic, "group": group, "session_ms": SESSION_MS,
           "work_s": 0.05, "max_s": 120}
    ws = [WorkerProc(work, f"c{i}", cfg) for i in range(1, 4)]
    w4 = None
    try:
        t0 = time.monotonic()
        wait_for("three members to share the 6 partitions",
                 lambda: covered(ws) and all(w.assignment()[0] for w in ws)
                 and sum(w.delivered() for w in ws) > 2_000)
        log(f"1: 3 members own {[sorted(w.assignment()[0]) for w in ws]} after {time.monotonic() - t0:.1f}s")

        t4 = time.monotonic()
        w4 = WorkerProc(work, "c4", cfg)
        wait_for("the 4th member to be assigned partitions",
                 lambda: w4.assignment()[0] and covered(ws + [w4], since=t4))
        log(f"1: 4th member joined, owns {sorted(w4.assignment()[0])} "
            f"after {time.monotonic() - t4:.1f}s")
        t4 = time.monotonic()
        check(w4.stop() == 0, "4th member exited non-zero")
        wait_for("the 3 members to own every partition again after the 4th left",
                 lambda: covered(ws, since=t4))
        log(f"1: 4th member closed; 3 members own {[sorted(w.assignment()[0]) for w in ws]} "
            f"after {time.monotonic() - t4:.1f}s")

        victim, survivors = ws[2], ws[:2]
        before = victim.delivered()
        wait_for("the victim to make progress", lambda: victim.delivered() > before + 200)
        lost = sorted(victim.assignment()[0])
        tk = time.monotonic()
        victim.kill()
        at = wait_for("the killed member's partitions to move to the survivors",
                      lambda: covered(survivors, since=tk), timeout=SESSION_MS / 1000 + 15)
        moved = at - tk
        log(f"1: SIGKILLed {victim.name} (owned {lost}); survivors own "
            f"{[sorted(w.assignment()[0]) for w in survivors]} {moved:.2f}s later "
            f"(session timeout {SESSION_MS / 1000:.1f}s)")
        check(moved <= SESSION_MS / 1000 + 5,
              f"partitions moved {moved:.1f}s after the kill, session timeout is {SESSION_MS}ms")

        pt.join(DEADLINE_S * 2)
        check(not pt.is_alive() and not prod_err, f"producer failed: {prod_err}")
        ends = end_offsets(broker.addr, topic, parts)
        check(sum(ends.values()) == total, f"end offsets {ends} do not sum to {total}")

        def history():
            h = History()
            for w in ws + [w4]:
                for t, kind, rest in w.events():
                    if kind == "D":
                        h.add(t, w.name, "D", int(rest[0]), int(rest[1]), int(rest[2]))
                    elif kind == "C":
                        h.add(t, w.name, "C", int(rest[0]), int(rest[1]), None)
            return h
        wait_for("the survivors to process and commit every record",
                 lambda: all_committed(history(), ends), timeout=60, interval=0.5)
        d = wait_stable(a, group, 2, parts)
        owners = assignment_of(d)
        log(f"1: DescribeGroups {d.state.name} assignor={d.partition_assignor} {owners}")
        listing = listed_groups(a).get(group)
        check(listing is not None and listing.state == ConsumerGroupState.STABLE,
              f"ListGroups: {group} is {listing and listing.state}")
        errs = [(w.name, rest) for w in ws + [w4] for t, kind, rest in w.events() if kind in ("CE", "E")]
        if errs:
            log(f"1: commit/consume errors seen (expected around rebalances): {errs[:6]}")
        summary = history().verify("confluent", ends, total)
        for w in survivors:
            check(w.stop() == 0, f"{w.name} exited non-zero")
        return f"{summary}; killed member's partitions moved in {moved:.2f}s"
    finally:
        for w in ws + ([w4] if w4 else []):
            w.kill()


# ---------------------------------------------------------------- 2 kafka-python and aiokafka

def section_kafkapython(work, broker):
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata
    topic, group, parts, total = "g2-kp", "g2-kp", 6, 6_000
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, total)
    ends = end_offsets(broker.addr, topic, parts)
    hist = History()
    stop = {}
    errors = []
    status = {}

    def member(name):
        try:
            c = KafkaConsumer(bootstrap_servers=broker.addr, group_id=group, client_id=name,
                              enable_auto_commit=False, auto_offset_reset="earliest",
                              session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_records=100)
            c.subscribe([topic], listener=AssignmentsTo(hist, name))
            end = time.monotonic() + 90
            while not stop.get(name) and time.monotonic() < end:
                # A long poll timeout: kafka-python 3.0.12 loses a JoinGroup
                # that completes after poll() gave up waiting for it (it never
                # re-enables heartbeats nor applies the assignment, and the
                # coordinator expires it after the session timeout).
                batch = c.poll(timeout_ms=3000)
                gen = getattr(c._coordinator, "_generation", None)
                status[name] = (round(time.monotonic(), 1), sorted(tp.partition for tp in c.assignment()),
                                gen and (gen.generation_id, gen.member_id))
                t = time.monotonic()
                nxt = {}
                for tp, msgs in batch.items():
                    for m in msgs:
                        hist.add(t, name, "D", m.partition, m.offset, int(m.value))
                        nxt[tp] = m.offset + 1
                if not nxt:
                    continue
                time.sleep(0.05)
                try:
                    c.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in nxt.items()})
                    t = time.monotonic()
                    for tp, o in nxt.items():
                        hist.add(t, name, "C", tp.partition, o, None)
                except KafkaError as e:
                    log(f"2: kafka-python {name} commit failed: {e!r}")
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {e!r}")

    names = ["kp1", "kp2", "kp3"]
    ts = [threading.Thread(target=member, args=(n,), daemon=True) for n in names]
    for t in ts:
        t.start()
    try:
        wait_stable(a, group, 3, parts)
        wait_for("kafka-python: progress", lambda: len(hist.events) > 1_500)
        stop["kp3"] = True
        ts[2].join(DEADLINE_S)
        log("2: kafka-python kp3 closed")
        try:
            wait_for("kafka-python: every record committed", lambda: all_committed(hist, ends), timeout=60)
            wait_stable(a, group, 2, parts)
        except Failure as e:
            state = {n: (t.is_alive(), status.get(n)) for n, t in zip(names, ts)}
            raise Failure(f"{e}; members (thread alive, last poll/assignment/generation): {state}; "
                          f"errors {errors}") from None
    finally:
        for n in names:
            stop[n] = True
        for t in ts:
            t.join(DEADLINE_S)
    check(not errors, f"kafka-python members failed: {errors}")
    return "kafka-python: " + hist.verify("kafka-python", ends, total)


def section_aiokafka(work, broker):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError
    topic, group, parts, total = "g2-ak", "g2-ak", 6, 6_000
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, total)
    ends = end_offsets(broker.addr, topic, parts)
    hist = History()
    stop = {}

    async def member(name):
        c = AIOKafkaConsumer(bootstrap_servers=broker.addr, group_id=group, client_id=name,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_records=100)
        c.subscribe([topic], listener=AioAssignmentsTo(hist, name))
        await c.start()
        try:
            end = time.monotonic() + 90
            while not stop.get(name) and time.monotonic() < end:
                batch = await c.getmany(timeout_ms=200)
                t = time.monotonic()
                nxt = {}
                for tp, msgs in batch.items():
                    for m in msgs:
                        hist.add(t, name, "D", m.partition, m.offset, int(m.value))
                        nxt[tp] = m.offset + 1
                if not nxt:
                    continue
                await asyncio.sleep(0.05)
                try:
                    await c.commit(nxt)
                    t = time.monotonic()
                    for tp, o in nxt.items():
                        hist.add(t, name, "C", tp.partition, o, None)
                except KafkaError as e:
                    log(f"2: aiokafka {name} commit failed: {e!r}")
        finally:
            await c.stop()

    async def run():
        names = ["ak1", "ak2", "ak3"]
        tasks = [asyncio.create_task(member(n)) for n in names]

        async def until(what, cond, timeout=DEADLINE_S):
            end = time.monotonic() + timeout
            while not cond():
                for t in tasks:
                    if t.done() and t.exception():
                        raise Failure(f"aiokafka member failed: {t.exception()!r}")
                if time.monotonic() > end:
                    raise Failure(f"timed out after {timeout}s waiting for {what}")
                await asyncio.sleep(0.1)
        try:
            await until("aiokafka: 3 members own the partitions",
                        lambda: stable_with(a, group, 3, parts))
            await until("aiokafka: progress", lambda: len(hist.events) > 1_500)
            stop["ak3"] = True
            await asyncio.wait_for(tasks[2], DEADLINE_S)
            log("2: aiokafka ak3 stopped")
            await until("aiokafka: every record committed", lambda: all_committed(hist, ends), timeout=60)
            await until("aiokafka: 2 members own the partitions", lambda: stable_with(a, group, 2, parts))
        finally:
            for n in names:
                stop[n] = True
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE_S)
    asyncio.run(run())
    return "aiokafka: " + hist.verify("aiokafka", ends, total)


# ---------------------------------------------------------------- 3 kcat -G

def section_kcat(work, broker):
    topic, group, parts, total = "g3-kcat", "g3-kcat", 6, 6_000
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, total // 2)
    procs, outs = [], []
    try:
        for i in range(2):
            out = open(work / f"kcat{i}.out", "wb")
            err = open(work / f"kcat{i}.err", "wb")
            outs.append(work / f"kcat{i}.out")
            procs.append(subprocess.Popen(
                ["kcat", "-b", broker.addr, "-G", group, "-f", "%p %o %s\\n", "-u",
                 "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
                 "-X", "auto.commit.interval.ms=500", topic],
                stdout=out, stderr=err))

        def seen():
            got = {}
            for n, path in enumerate(outs):
                for line in path.read_text().splitlines():
                    f = line.split(" ")
                    if len(f) == 3:
                        got.setdefault((int(f[0]), int(f[1])), []).append(n)
            return got
        d = wait_stable(a, group, 2, parts)
        shares = sorted(len(ps) for ps in assignment_of(d).values())
        check(shares == [3, 3], f"kcat members own {shares} partitions")
        # The second half arrives while both members share the topic.
        produce(broker.addr, topic, total // 2, total // 2)
        ends = end_offsets(broker.addr, topic, parts)
        want = {(p, o) for p, e in ends.items() for o in range(e)}
        wait_for("kcat: every record consumed", lambda: set(seen()) == want, timeout=DEADLINE_S)
        got = seen()
        per = [sum(1 for v in got.values() if n in v) for n in range(2)]
        check(all(per), f"records consumed per kcat member: {per}")
        redelivered = sum(len(v) - 1 for v in got.values())
        wait_for("kcat's auto-commit to reach the end offsets",
                 lambda: committed_offsets(a, group) == {(topic, p): e for p, e in ends.items()}, timeout=10)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=DEADLINE_S)
        errs = [line for i in range(2) for line in (work / f"kcat{i}.err").read_text().splitlines()
                if "COMMITFAIL" in line]
        for line in errs:
            log(f"3: kcat: {line}")
        return f"2 kcat members consumed {per} records ({redelivered} redelivered), committed the end offsets"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


# ---------------------------------------------------------------- 4 restart

def ck_consumer(addr, group, **extra):
    from confluent_kafka import Consumer
    conf = {"bootstrap.servers": addr, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    conf.update(extra)
    return Consumer(conf)


def consume_from_group(addr, group, topic, ends, expect, commit_at=None):
    """Subscribes and reads until every partition whose expected start is
    below its end reaches the end, then 1 s more (to see anything
    unexpected); returns the first offset delivered per partition and the
    number of records. With commit_at, commits those offsets before closing."""
    from confluent_kafka import TopicPartition
    c = ck_consumer(addr, group)
    c.subscribe([topic])
    first, pos, n = {}, {}, 0
    end = time.monotonic() + DEADLINE_S
    done_at = None
    try:
        while time.monotonic() < end and (done_at is None or time.monotonic() < done_at + 1):
            for m in c.consume(num_messages=500, timeout=0.2):
                check(not m.error(), f"consume error {m.error()}")
                first.setdefault(m.partition(), m.offset())
                pos[m.partition()] = m.offset()
                n += 1
            if done_at is None and c.assignment() and all(
                    pos.get(p, -1) >= e - 1 for p, e in ends.items() if expect[p] < e):
                done_at = time.monotonic()
        check(done_at is not None, f"did not reach the end offsets {ends} within {DEADLINE_S}s: at {pos}")
        if commit_at:
            c.commit(offsets=[TopicPartition(topic, p, o) for p, o in commit_at.items()], asynchronous=False)
    finally:
        c.close()
    return first, n


def section_restart(work, broker):
    topic, group, parts = "g4-restart", "g4", 3
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, 300, partitions=parts)
    ends = end_offsets(broker.addr, topic, parts)
    check(ends == {0: 100, 1: 100, 2: 100}, f"end offsets {ends}")
    first_commit = {0: 40, 1: 70, 2: 100}
    first, n = consume_from_group(broker.addr, group, topic, ends, {0: 0, 1: 0, 2: 0}, commit_at=first_commit)
    check(first == {0: 0, 1: 0, 2: 0} and n == 300, f"first read: from {first}, {n} records")
    want = {(topic, p): o for p, o in first_commit.items()}
    check(committed_offsets(a, group) == want, f"committed {committed_offsets(a, group)}")
    del a

    def after_restart(how, want_offsets, then_commit):
        a = admin(broker.addr)
        got = committed_offsets(a, group)
        check(got == {(topic, p): o for p, o in want_offsets.items()},
              f"after {how}: committed {got}, want {want_offsets}")
        listing = listed_groups(a).get(group)
        check(listing is not None, f"after {how}: group {group} not listed")
        c = ck_consumer(broker.addr, group)
        from confluent_kafka import TopicPartition
        cm = {tp.partition: tp.offset for tp in
              c.committed([TopicPartition(topic, p) for p in range(parts)], timeout=10)}
        c.close()
        check(cm == want_offsets, f"after {how}: Consumer.committed {cm}")
        first, n = consume_from_group(broker.addr, group, topic, ends, want_offsets, commit_at=then_commit)
        resumed = {p: o for p, o in want_offsets.items() if o < ends[p]}
        check(first == resumed, f"after {how}: resumed at {first}, committed {resumed}")
        want_n = sum(ends[p] - o for p, o in want_offsets.items())
        check(n == want_n, f"after {how}: {n} records delivered, {want_n} above the commits")
        log(f"4: after {how}: offsets {want_offsets} kept, group listed ({listing.state.name}), "
            f"resumed at {first}")

    broker.stop()  # SIGTERM, asserts exit 0
    broker.start()
    second_commit = {0: 90, 1: 100, 2: 100}
    after_restart("SIGTERM", first_commit, second_commit)
    broker.sigkill()
    broker.start()
    after_restart("SIGKILL", second_commit, None)
    return "offsets and group kept across SIGTERM and SIGKILL; consumers resumed exactly at the commits"


# ---------------------------------------------------------------- 5 admin

class Poller:
    """A confluent-kafka group member polled by a thread, committing each
    batch synchronously."""

    def __init__(self, addr, group, topic, name, hist=None, **extra):
        self.c = ck_consumer(addr, group, **{"client.id": name, **extra})
        self.name, self.topic, self.hist = name, topic, hist
        self.cooperative = extra.get("partition.assignment.strategy") == "cooperative-sticky"
        self.assigns, self.revokes = [], []
        self.owned = set()
        self.stopped = False
        self.errors = []
        self.c.subscribe([topic], on_assign=self._assign, on_revoke=self._revoke)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _assign(self, c, ps):
        self.assigns.append((time.monotonic(), sorted(p.partition for p in ps)))
        if self.cooperative:
            self.owned |= {p.partition for p in ps}
        else:
            self.owned = {p.partition for p in ps}

    def _revoke(self, c, ps):
        self.revokes.append((time.monotonic(), sorted(p.partition for p in ps)))
        self.owned -= {p.partition for p in ps}

    def _run(self):
        from confluent_kafka import KafkaException, TopicPartition
        end = time.monotonic() + 120
        try:
            while not self.stopped and time.monotonic() < end:
                msgs = self.c.consume(num_messages=100, timeout=0.2)
                t = time.monotonic()
                nxt = {}
                for m in msgs:
                    if m.error():
                        continue
                    if self.hist:
                        self.hist.add(t, self.name, "D", m.partition(), m.offset(), int(m.value()))
                    nxt[m.partition()] = m.offset() + 1
                if not nxt:
                    continue
                time.sleep(0.02)
                try:
                    res = self.c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in nxt.items()],
                                        asynchronous=False)
                    t = time.monotonic()
                    for tp in res:
                        if not tp.error and self.hist:
                            self.hist.add(t, self.name, "C", tp.partition, tp.offset, None)
                except KafkaException as e:
                    self.errors.append(kerr(e))
        finally:
            self.c.close()

    def stop(self):
        self.stopped = True
        self.thread.join(DEADLINE_S)
        check(not self.thread.is_alive(), f"{self.name} did not close")


def section_admin(work, broker):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    topic, group, parts = "g5-admin", "g5", 6
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, 600, partitions=parts)
    ends = end_offsets(broker.addr, topic, parts)
    ka = KafkaAdminClient(bootstrap_servers=broker.addr)
    members = [Poller(broker.addr, group, topic, n) for n in ("g5-a", "g5-b")]
    notes = []
    try:
        d = wait_stable(a, group, 2, parts)
        check(sorted(m.client_id for m in d.members) == ["g5-a", "g5-b"],
              f"member client ids {[m.client_id for m in d.members]}")
        check(d.partition_assignor == "range", f"assignor {d.partition_assignor!r}")
        check(not d.is_simple_consumer_group, "described as a simple group")
        check(all(m.host for m in d.members), f"member hosts {[m.host for m in d.members]}")
        # The description matches what the members were given.
        by_client = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
                     for m in d.members}
        wait_for("members' assignments to match DescribeGroups",
                 lambda: {p.name: sorted(p.owned) for p in members} == by_client, timeout=10)
        wait_for("members to commit every record",
                 lambda: committed_offsets(a, group) == {(topic, p): e for p, e in ends.items()})

        # Not allowed while the group has members.
        try:
            a.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=DEADLINE_S)
            raise Failure("DeleteGroups on an active group succeeded")
        except KafkaException as e:
            check(kerr(e) == "NON_EMPTY_GROUP", f"DeleteGroups on an active group: {kerr(e)}")
        res = ka.delete_group_offsets(group, [KTP(topic, 0)])
        errs = {tp.partition: err.__name__ for tp, err in res.items()}
        check(errs == {0: "GroupSubscribedToTopicError"}, f"OffsetDelete while subscribed: {errs}")
        # OffsetCommit with generation -1 and no member id: Kafka answers
        # UNKNOWN_MEMBER_ID while the group has members.
        try:
            res = a.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1)])],
                request_timeout=10)[group].result(timeout=DEADLINE_S)
            code = [tp.error.name() if tp.error else "NO_ERROR" for tp in res.topic_partitions]
        except KafkaException as e:
            code = [kerr(e)]
        expect(code == ["UNKNOWN_MEMBER_ID"],
              f"AlterConsumerGroupOffsets (OffsetCommit generation -1) on an active group: {code}, "
              f"Kafka answers UNKNOWN_MEMBER_ID")

        for m in members:
            m.stop()
        d = wait_for("the group to be Empty after both members left",
                     lambda: (lambda d: d if d.state == ConsumerGroupState.EMPTY else None)(describe(a, group)),
                     timeout=10)
        check(not d.members, f"empty group has members {d.members}")
        listing = listed_groups(a).get(group)
        check(listing and listing.state == ConsumerGroupState.EMPTY, f"ListGroups state {listing and listing.state}")

        # Offsets of an empty group: alter (OffsetCommit generation -1) and delete.
        res = a.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, 5) for p in range(parts)])],
            request_timeout=10)[group].result(timeout=DEADLINE_S)
        check(all(not tp.error for tp in res.topic_partitions), f"alter offsets: {res.topic_partitions}")
        check(committed_offsets(a, group) == {(topic, p): 5 for p in range(parts)},
              f"after alter: {committed_offsets(a, group)}")
        res = ka.delete_group_offsets(group, [KTP(topic, 0)])
        errs = {tp.partition: err.__name__ for tp, err in res.items()}
        check(errs == {0: "NoError"}, f"OffsetDelete on an empty group: {errs}")
        got = committed_offsets(a, group)
        check(got.get((topic, 0), -1001) < 0 and all(got[(topic, p)] == 5 for p in range(1, parts)),
              f"after OffsetDelete of p0: {got}")

        a.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=DEADLINE_S)
        check(group not in listed_groups(a), "deleted group still listed")
        got = committed_offsets(a, group)
        check(all(o < 0 for o in got.values()), f"deleted group still has offsets {got}")
        try:
            a.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=DEADLINE_S)
            raise Failure("deleting a deleted group succeeded")
        except KafkaException as e:
            check(kerr(e) == "GROUP_ID_NOT_FOUND", f"DeleteGroups of a deleted group: {kerr(e)}")
        try:
            d = describe(a, group)
            notes.append(f"DescribeGroups of the deleted group: {d.state.name}")
        except KafkaException as e:
            notes.append(f"DescribeGroups of the deleted group: {kerr(e)}")
        return "describe/list/alter/OffsetDelete/DeleteGroups as Kafka; " + "; ".join(notes)
    finally:
        for m in members:
            m.stopped = True
        ka.close()


# ---------------------------------------------------------------- 6 static membership

def section_static(work, broker):
    topic, group, parts = "g6-static", "g6", 6
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, 600, partitions=parts)
    session = 10_000
    conf = {"session.timeout.ms": session}
    b = Poller(broker.addr, group, topic, "static-b", **{**conf, "group.instance.id": "b"})
    s = None
    try:
        wait_for("b to own every partition", lambda: len(b.owned) == parts)
        s = Poller(broker.addr, group, topic, "static-a", **{**conf, "group.instance.id": "a"})
        d = wait_stable(a, group, 2, parts)
        wait_for("a's assignment", lambda: s.owned and len(s.owned) + len(b.owned) == parts, timeout=10)
        before = sorted(s.owned)
        inst = sorted(m.group_instance_id for m in d.members)
        check(inst == ["a", "b"], f"DescribeGroups group_instance_id {inst}")
        b_events = (len(b.assigns), len(b.revokes))
        time.sleep(1)
        s.stop()  # a static member's close() sends no LeaveGroup
        t = time.monotonic()
        s = Poller(broker.addr, group, topic, "static-a2", **{**conf, "group.instance.id": "a"})
        wait_for("the restarted static member to be assigned", lambda: s.assigns, timeout=session / 1000 + 5)
        took = time.monotonic() - t
        after = sorted(s.owned)
        check(after == before, f"restarted static member got {after}, had {before}")
        # Give a (wrong) rebalance time to reach b.
        time.sleep(2)
        check((len(b.assigns), len(b.revokes)) == b_events,
              f"the other member was rebalanced: assigns {b.assigns[b_events[0]:]} "
              f"revokes {b.revokes[b_events[1]:]}")
        d = stable_with(a, group, 2, parts)
        check(d is not None, f"group not Stable with 2 members after the restart: {describe(a, group).state}")
        return f"static member rejoined with {after} in {took:.2f}s, other member untouched"
    finally:
        b.stop()
        if s:
            s.stop()


# ---------------------------------------------------------------- 7 cooperative-sticky

def section_cooperative(work, broker):
    topic, group, parts, total = "g7-coop", "g7", 6, 12_000
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, 6_000)
    hist = History()
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    m1 = Poller(broker.addr, group, topic, "coop-1", hist, **conf)
    m2 = None
    try:
        wait_for("the first member to own every partition", lambda: len(m1.owned) == parts)
        wait_for("progress", lambda: len(hist.events) > 1_000)
        tj = time.monotonic()
        m2 = Poller(broker.addr, group, topic, "coop-2", hist, **conf)
        produce(broker.addr, topic, 6_000, total - 6_000)
        wait_for("the second member to own partitions", lambda: m2.owned and len(m1.owned) + len(m2.owned) == parts)
        d = wait_stable(a, group, 2, parts)
        kept = sorted(m1.owned)
        revoked = [ps for t, ps in m1.revokes]
        check(len(m1.revokes) >= 1 and all(len(ps) < parts for ps in revoked),
              f"first member's revocations {revoked}: not incremental")
        check(all(set(ps).isdisjoint(kept) for ps in revoked), f"kept partitions {kept} were revoked: {revoked}")
        check(sorted(m2.owned) == sorted(set(range(parts)) - set(kept)), f"m2 {m2.owned} m1 {kept}")
        ends = end_offsets(broker.addr, topic, parts)
        wait_for("every record committed", lambda: all_committed(hist, ends), timeout=DEADLINE_S)
        # The first member kept consuming its partitions across the
        # rebalance: no gap, no rewind.
        with hist.lock:
            for p in kept:
                offs = [o for t, m, k, pp, o, s in hist.events if k == "D" and m == "coop-1" and pp == p]
                check(offs == list(range(len(offs))) and offs and offs[-1] == ends[p] - 1,
                      f"coop-1 on kept p{p}: offsets not one continuous run to the end")
            late = [o for t, m, k, pp, o, s in hist.events if k == "D" and m == "coop-1" and pp in kept and t > tj]
        check(late, "coop-1 delivered nothing on its kept partitions after the join")
        summary = hist.verify("cooperative", ends, total)
        return f"join revoked only {revoked} from the first member, which kept {kept}; {summary}; " \
               f"assignor {d.partition_assignor}"
    finally:
        m1.stop()
        if m2:
            m2.stop()


# ---------------------------------------------------------------- 8 commit while revoking

def section_revoke_commit(work, broker):
    """The eager protocol's usual pattern: a member commits what it has
    processed in its revocation callback, before it rejoins. The group is
    then PreparingRebalance and the member still holds the current
    generation, so Kafka accepts the commit (it answers
    REBALANCE_IN_PROGRESS only in CompletingRebalance); the member taking
    over the partitions starts from there."""
    from confluent_kafka import KafkaException, TopicPartition
    topic, group, parts, total = "g8-revoke", "g8", 6, 600
    a = admin(broker.addr)
    create_topic(a, topic, parts)
    produce(broker.addr, topic, 0, total, partitions=parts)
    pos, results = {}, []

    def on_revoke(c, ps):
        if not pos:
            return
        try:
            res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in pos.items()], asynchronous=False)
            results.append(sorted({tp.error.name() if tp.error else "NO_ERROR" for tp in res}))
        except KafkaException as e:
            results.append([kerr(e)])

    c1 = ck_consumer(broker.addr, group, **{"client.id": "g8-a"})
    c2 = None
    try:
        c1.subscribe([topic], on_revoke=on_revoke)
        end = time.monotonic() + DEADLINE_S
        while sum(pos.values()) < total and time.monotonic() < end:
            for m in c1.consume(num_messages=500, timeout=0.2):
                if not m.error():
                    pos[m.partition()] = m.offset() + 1
        check(sum(pos.values()) == total, f"first member read {pos}")
        c2 = ck_consumer(broker.addr, group, **{"client.id": "g8-b"})
        c2.subscribe([topic])
        got2 = []
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end and not (results and c1.assignment() and c2.assignment()):
            c1.poll(0.1)
            got2 += [(m.partition(), m.offset()) for m in c2.consume(num_messages=500, timeout=0.1)
                     if not m.error()]
        check(results, "the first member was never asked to revoke")
        check(c1.assignment() and c2.assignment(), "the partitions were not shared")
        # Whatever the second member receives now is a redelivery.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            c1.poll(0.1)
            got2 += [(m.partition(), m.offset()) for m in c2.consume(num_messages=500, timeout=0.1)
                     if not m.error()]
        expect(results[0] == ["NO_ERROR"],
               f"OffsetCommit from a member of the current generation while the group is "
               f"PreparingRebalance (commit in on_revoke): {results[0]}, Kafka accepts it")
        expect(not got2, f"the new member was redelivered {len(got2)} records the first member had "
                         f"processed and committed in on_revoke")
        return f"commit in on_revoke: {results}; {len(got2)} records redelivered to the new member"
    finally:
        c1.close()
        if c2:
            c2.close()


# ---------------------------------------------------------------- the run

SECTIONS = [
    ("1", "confluent", section_confluent),
    ("2a", "kafka-python", section_kafkapython),
    ("2b", "aiokafka", section_aiokafka),
    ("3", "kcat -G", section_kcat),
    ("4", "restart", section_restart),
    ("5", "admin", section_admin),
    ("6", "static membership", section_static),
    ("7", "cooperative-sticky", section_cooperative),
    ("8", "commit in on_revoke", section_revoke_commit),
]


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--ck-worker":
        ck_worker(json.loads(sys.argv[2]))
        return 0
    wanted = sys.argv[1:]
    results = []
    start_all = time.monotonic()
    for key, name, fn in SECTIONS:
        if wanted and key not in wanted and key.rstrip("ab") not in wanted:
            continue
        work = Path(tempfile.mkdtemp(prefix=f"sluice-groups-{key}-"))
        broker = GroupBroker(work)
        t = time.monotonic()
        ok, detail = False, ""
        try:
            broker.start()
            log(f"{key} {name}: sluice on {broker.addr}")
            DEVIATIONS.clear()
            detail = fn(work, broker)
            if DEVIATIONS:
                log(f"{key} {name}: otherwise: {detail}")
                raise Failure("; ".join(DEVIATIONS))
            ok = True
        except Exception as e:  # noqa: BLE001
            detail = f"{type(e).__name__}: {e}"
            if not isinstance(e, Failure):
                detail += "\n" + traceback.format_exc()
        finally:
            broker.kill()
        took = time.monotonic() - t
        log(f"{key} {name}: {'PASS' if ok else 'FAIL'} in {took:.1f}s: {detail}")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"{key} {name}: broker log and client logs kept in {work}")
        results.append((key, name, ok, took, detail))
    log(f"summary ({time.monotonic() - start_all:.0f}s):")
    for key, name, ok, took, detail in results:
        log(f"  {key:3} {name:20} {'PASS' if ok else 'FAIL'} {took:5.1f}s" +
            ("" if ok else f"  {detail.splitlines()[0]}"))
    return 0 if all(r[2] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

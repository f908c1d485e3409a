"""Debian package and systemd readiness check for Sluice.

Builds the .deb from the debug binary (scripts/package.sh --dev, so no
release build), inspects it with dpkg-deb (files, conffiles, maintainer
scripts), runs `systemd-analyze verify` on its unit and checks that the
unit's syscall filter lets io_uring through. Then, without touching the
host's system state, extracts the package into a temporary directory and
starts the extracted binary with the packaged config file (data dir and
ports overridden) under a NOTIFY_SOCKET of its own: READY=1 must arrive
exactly once, when the Kafka and metrics ports already accept
connections, and STOPPING=1 on SIGTERM. Last, it runs the broker under
strace through a durable produce and consume and checks that every syscall
it makes passes the unit's SystemCallFilter.

Run by scripts/test.sh.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30
UNIT = "usr/lib/systemd/system/sluice.service"
CONFIG = "etc/sluice/sluice.toml"
IO_URING_SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register")


def log(msg):
    print(f"[packaging] {msg}", flush=True)


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def build_deb(out):
    started = time.time()
    last = run("bash", "scripts/package.sh", "--dev", str(out), cwd=ROOT).strip().splitlines()[-1]
    deb = Path(last)
    assert deb.is_file() and deb.suffix == ".deb", last
    log(f"built {deb.name} ({deb.stat().st_size >> 20} MiB) in {time.time() - started:.1f} s")
    return deb


def inspect_deb(deb, work):
    assert run("dpkg-deb", "-f", str(deb), "Package").strip() == "sluice"
    depends = run("dpkg-deb", "-f", str(deb), "Depends")
    assert "adduser" in depends, depends
    files = {}
    for line in run("dpkg-deb", "-c", str(deb)).splitlines():
        fields = line.split()
        files[fields[5].removeprefix("./")] = fields[0]
    for path in ("usr/bin/sluice", CONFIG, UNIT):
        assert path in files, f"{path} missing from the package: {sorted(files)}"
    assert files["usr/bin/sluice"] == "-rwxr-xr-x", files["usr/bin/sluice"]
    assert run("dpkg-deb", "-I", str(deb), "conffiles").split() == ["/" + CONFIG]
    control = work / "DEBIAN"
    run("dpkg-deb", "-e", str(deb), str(control))
    for script in ("postinst", "postrm", "prerm"):
        text = (control / script).read_text()
        run("sh", "-n", str(control / script))
        assert "#DEBHELPER#" not in text, f"{script}: cargo-deb left #DEBHELPER# in"
    postinst = (control / "postinst").read_text()
    assert "adduser --system" in postinst and "getent passwd sluice" in postinst
    assert "deb-systemd-helper" in postinst, "systemd-units snippets missing"
    postrm = (control / "postrm").read_text()
    assert re.search(r'"\$1" = purge \]; then\s+rm -rf /var/lib/sluice', postrm), postrm
    root = work / "root"
    run("dpkg-deb", "-x", str(deb), str(root))
    return root


def unit_settings(text):
    """Every `Key=value` of the unit, values of repeated keys in order."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def expand_syscalls(tokens, seen=None):
    """The syscalls a SystemCallFilter list names, groups expanded."""
    seen = set() if seen is None else seen
    out = set()
    for token in tokens:
        if not token.startswith("@"):
            out.add(token)
            continue
        if token in seen:
            continue
        seen.add(token)
        lines = run("systemd-analyze", "syscall-filter", token).splitlines()[1:]
        names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        out |= expand_syscalls(names, seen)
    return out


def check_unit(root, work):
    text = (root / UNIT).read_text()
    s = unit_settings(text)
    want = {
        "Type": ["notify"],
        "ExecStart": ["/usr/bin/sluice serve --config /etc/sluice/sluice.toml"],
        "User": ["sluice"],
        "Restart": ["on-failure"],
        "LimitMEMLOCK": ["infinity"],
        "LimitNOFILE": ["1048576"],
        "StateDirectory": ["sluice"],
        "ConfigurationDirectory": ["sluice"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
    }
    for key, value in want.items():
        assert s.get(key) == value, f"{key}: {s.get(key)} != {value}"
    # The first filter line is an allow list, later `~` lines deny; the io_uring
    # calls must survive both.
    filters = s.get("SystemCallFilter", [])
    allowed, denied = None, set()
    for f in filters:
        if f.startswith("~"):
            denied |= expand_syscalls(f[1:].split())
        elif allowed is None:
            allowed = expand_syscalls(f.split())
        else:
            allowed |= expand_syscalls(f.split())
    for call in IO_URING_SYSCALLS:
        assert allowed is None or call in allowed, f"SystemCallFilter blocks {call}"
        assert call not in denied, f"SystemCallFilter denies {call}"
    # glommio pins each shard to its core.
    assert allowed is None or "sched_setaffinity" in allowed
    assert "sched_setaffinity" not in denied
    # verify needs ExecStart's binary to exist: point a copy at the extracted one.
    copy = work / "verify" / "sluice.service"
    copy.parent.mkdir()
    copy.write_text(text.replace("ExecStart=/usr/bin/sluice ", f"ExecStart={root}/usr/bin/sluice ", 1))
    # verify exits 0 on unknown keys and bad values, printing them: any output fails.
    p = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    log(f"unit verified, {len(s)} settings; io_uring calls allowed through "
        f"{len(filters)} SystemCallFilter lines")
    return allowed, denied


def can_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run_extracted(root, work):
    """Starts the extracted binary with the packaged config under a notify socket."""
    notify_path = work / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(DEADLINE_S)
    port, mport = free_port(), free_port()
    data = work / "data"
    binary = str(root / "usr/bin/sluice")
    args = [binary, "serve", "--config", str(root / CONFIG), "--data-dir", str(data),
            "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}",
            "--cores", "2"]
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    log_file = open(work / "sluice.log", "wb")
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        started = time.time()
        msg = notify.recv(4096).decode()
        # Both ports are tried once, right away: READY=1 promises they listen.
        kafka_up, metrics_up = can_connect(port), can_connect(mport)
        ready_s = time.time() - started
        assert msg.split() == ["READY=1"], msg
        assert kafka_up, "READY=1 came before the Kafka port accepted connections"
        assert metrics_up, "READY=1 came before the metrics port accepted connections"
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/health", timeout=10) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
        health = subprocess.run([binary, "cluster", "health", "--bootstrap", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=DEADLINE_S)
        assert health.returncode == 0, health.stdout + health.stderr
        assert (data / "controller").is_dir(), "the --data-dir override was not used"
        proc.send_signal(signal.SIGTERM)
        msg = notify.recv(4096).decode()
        assert msg.split() == ["STOPPING=1"], f"after SIGTERM: {msg!r} (READY=1 twice?)"
        code = proc.wait(timeout=DEADLINE_S)
        assert code == 0, f"sluice exited with {code} on SIGTERM"
        notify.setblocking(False)
        try:
            extra = notify.recv(4096)
            raise AssertionError(f"notification after STOPPING=1: {extra!r}")
        except BlockingIOError:
            pass
        log(f"packaged config parsed; READY=1 after {ready_s:.2f} s with 2 shards "
            f"listening, /health 200, cluster health ok, STOPPING=1 on SIGTERM")
    except BaseException:
        proc.kill()
        proc.wait()
        log_file.close()
        sys.stderr.write((work / "sluice.log").read_text(errors="replace"))
        raise
    finally:
        notify.close()
        log_file.close()


def check_syscalls(root, work, allowed, denied):
    """Every syscall the broker makes while it starts, takes produces (durable
    profile: fdatasync), serves fetches and /metrics and shuts down must pass
    the unit's filter: one outside it would fail with EPERM only in production."""
    if shutil.which("strace") is None:
        log("strace missing: syscall filter not checked against a real run")
        return
    from confluent_kafka import Consumer, Producer
    port, mport = free_port(), free_port()
    trace = work / "strace.out"
    args = ["strace", "-f", "-qq", "-o", str(trace), str(root / "usr/bin/sluice"), "serve",
            "--config", str(root / CONFIG), "--data-dir", str(work / "data-strace"),
            "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}",
            "--cores", "2", "--profile", "durable"]
    with open(work / "sluice-strace.log", "wb") as log_file:
        # Its own session, so that a failure can stop strace and the broker together.
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + DEADLINE_S
            while not can_connect(port):
                assert proc.poll() is None and time.time() < deadline, "no listener under strace"
                time.sleep(0.1)
            bootstrap = f"127.0.0.1:{port}"
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
            for i in range(200):
                p.produce("pkg-t", value=b"%d" % i)
            assert p.flush(DEADLINE_S) == 0, "undelivered records under strace"
            del p
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "pkg-g",
                          "auto.offset.reset": "earliest"})
            c.subscribe(["pkg-t"])
            got = 0
            while got < 200 and time.time() < deadline + DEADLINE_S:
                m = c.poll(1)
                if m is not None and not m.error():
                    got += 1
            c.close()
            assert got == 200, got
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read()
            # SIGTERM to strace would detach it: the broker, its child, gets it.
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert len(children) == 1, children
            os.kill(int(children[0]), signal.SIGTERM)
            assert proc.wait(timeout=DEADLINE_S) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    used = set(re.findall(r"^\d+ +(\w+)\(", trace.read_text(), re.M))
    assert "io_uring_enter" in used and "fdatasync" in used, sorted(used)
    blocked = sorted(c for c in used if (allowed is not None and c not in allowed) or c in denied)
    assert not blocked, f"the unit's SystemCallFilter blocks {blocked}"
    log(f"{len(used)} distinct syscalls under strace (start, 200 records produced "
        f"durably and consumed, /metrics, SIGTERM), all allowed by the unit")


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-pkg-") as tmp:
        work = Path(tmp)
        deb = build_deb(work / "out")
        root = inspect_deb(deb, work)
        log("package holds the binary, unit, conffile and maintainer scripts")
        allowed, denied = check_unit(root, work)
        run_extracted(root, work)
        check_syscalls(root, work, allowed, denied)


if __name__ == "__main__":
    main()

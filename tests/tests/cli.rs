//! The operator command line (`sluice topic|produce|consume|group|cluster|
//! completions`; `user` and secured listeners are in cli_security.rs)
//! against a real `sluice` process: every subcommand run as a process,
//! its `--format json` output parsed and checked, exit codes of failures
//! and bad arguments.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{sluice_binary, Broker};

/// Runs `sluice ARGS` against `bootstrap`, with `stdin` piped in.
fn run(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(sluice_binary())
        .args(args)
        .env("SLUICE_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for sluice")
}

/// Runs a command that must succeed; its stdout.
fn ok(bootstrap: &str, args: &[&str]) -> String {
    ok_in(bootstrap, args, "")
}

fn ok_in(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let out = run(bootstrap, args, stdin);
    assert!(
        out.status.success(),
        "sluice {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn json(bootstrap: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let out = ok(bootstrap, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A run that must fail: (exit code, stderr).
fn fails(bootstrap: &str, args: &[&str]) -> (i32, String) {
    let out = run(bootstrap, args, "");
    assert!(!out.status.success(), "sluice {args:?} succeeded");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (committed offset, log end offset, lag) of `group` for topic-partition.
fn group_offsets(b: &str, group: &str, topic: &str, partition: i64) -> (Value, i64, Value) {
    let d = json(b, &["group", "describe", group]);
    let row = d["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .find(|r| r["topic"] == topic && r["partition"] == partition)
        .unwrap_or_else(|| panic!("no row for {topic}-{partition}: {d}"))
        .clone();
    (
        row["committed_offset"].clone(),
        row["log_end_offset"].as_i64().expect("log end"),
        row["lag"].clone(),
    )
}

#[test]
fn every_subcommand_against_a_real_broker() {
    // A new group's first join waits group.initial.rebalance.delay.ms; the
    // broker's group timers do not wake for that delay, so the tests run
    // without it (see the report on the broker).
    let broker = Broker::start(&["--cores", "1", "--group-initial-rebalance-delay-ms", "0"]);
    let b = broker.bootstrap();
    let b = b.as_str();

    // Topic lifecycle.
    ok(
        b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    );
    let list = json(b, &["topic", "list"]);
    assert!(
        list["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .any(|t| t["name"] == "orders" && t["partitions"] == 3),
        "{list}"
    );
    let d = json(b, &["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().expect("partitions").len(), 3);
    for p in d["partitions"].as_array().expect("partitions") {
        assert_eq!(p["leader"], 0, "{d}");
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["isr"], serde_json::json!([0]));
    }
    let config = |d: &Value, name: &str| -> Value {
        d["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(config(&d, "retention.ms")["value"], "3600000");
    assert_eq!(config(&d, "retention.ms")["is_default"], false);
    ok(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "segment.bytes=1048576",
            "--delete",
            "retention.ms",
        ],
    );
    let d = json(b, &["topic", "describe", "orders"]);
    assert_eq!(config(&d, "segment.bytes")["value"], "1048576", "{d}");
    assert_eq!(config(&d, "segment.bytes")["source"], "topic");
    assert_eq!(config(&d, "retention.ms")["is_default"], true, "{d}");
    ok(
        b,
        &["topic", "add-partitions", "orders", "--partitions", "4"],
    );
    let d = json(b, &["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().expect("partitions").len(), 4);
    let table = ok(b, &["topic", "describe", "orders"]);
    assert!(
        table.contains("segment.bytes") && table.contains("LEADER"),
        "{table}"
    );
    ok(b, &["topic", "create", "doomed"]);
    ok(b, &["topic", "delete", "doomed"]);
    let list = json(b, &["topic", "list"]);
    assert!(
        !list["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .any(|t| t["name"] == "doomed"),
        "{list}"
    );

    // Produce from stdin and from a file, with keys and headers.
    ok(b, &["topic", "create", "lines", "--partitions", "1"]);
    let out = ok_in(
        b,
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "h=1",
            "--format",
            "json",
        ],
        "k1:v1\nk2:v2\n",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["records"],
        2
    );
    // Producing to a topic that does not exist creates it (auto-create is
    // on), as kcat and Kafka's console producer do.
    ok_in(b, &["produce", "born"], "first\n");
    let list = ok(b, &["topic", "list", "--format", "json"]);
    assert!(list.contains("\"born\""), "{list}");
    std::thread::sleep(Duration::from_millis(20));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("records.txt");
    std::fs::write(&file, "k3:v3\nk4:v4\nk5:v5\n").expect("write file");
    let file = file.to_str().expect("path");
    ok(
        b,
        &[
            "produce",
            "lines",
            "--file",
            file,
            "--key-separator",
            ":",
            "--header",
            "h=2",
            "--header",
            "src=file",
            "--acks",
            "1",
            "--compression",
            "gzip",
        ],
    );

    // Consume them back: JSON and plain.
    let recs = json_lines(&ok(
        b,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--output",
            "json",
        ],
    ));
    assert_eq!(recs.len(), 5, "{recs:?}");
    for (i, r) in recs.iter().enumerate() {
        let n = i + 1;
        assert_eq!(r["key"], format!("k{n}"));
        assert_eq!(r["value"], format!("v{n}"));
        assert_eq!(r["offset"], i as i64);
        assert_eq!(r["partition"], 0);
        assert_eq!(r["topic"], "lines");
        let headers = if n <= 2 {
            serde_json::json!([{"key": "h", "value": "1"}])
        } else {
            serde_json::json!([{"key": "h", "value": "2"}, {"key": "src", "value": "file"}])
        };
        assert_eq!(r["headers"], headers, "{r}");
    }
    let plain = ok(
        b,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
            "--print-offsets",
            "--print-headers",
        ],
    );
    assert_eq!(plain.lines().next(), Some("0:0\th=1\tk1\tv1"), "{plain}");
    assert_eq!(plain.lines().count(), 5);
    let values = ok(b, &["consume", "lines", "--from-beginning", "--count", "5"]);
    assert_eq!(values, "v1\nv2\nv3\nv4\nv5\n");

    // By offset and by timestamp.
    let tail = ok(
        b,
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--offset",
            "3",
            "--count",
            "2",
        ],
    );
    assert_eq!(tail, "v4\nv5\n");
    let ts = recs[2]["timestamp"].as_i64().expect("timestamp");
    let first = recs
        .iter()
        .position(|r| r["timestamp"].as_i64().expect("ts") >= ts)
        .expect("a record");
    let by_time = json_lines(&ok(
        b,
        &[
            "consume",
            "lines",
            "--timestamp",
            &ts.to_string(),
            "--exit-at-end",
            "--output",
            "json",
        ],
    ));
    let offsets: Vec<i64> = by_time
        .iter()
        .map(|r| r["offset"].as_i64().expect("offset"))
        .collect();
    assert_eq!(offsets, (first as i64..5).collect::<Vec<_>>());

    // A group commits what it printed; a second run resumes after it.
    assert_eq!(
        ok(
            b,
            &[
                "consume",
                "lines",
                "--group",
                "readers",
                "--from-beginning",
                "--count",
                "2"
            ]
        ),
        "v1\nv2\n"
    );
    assert_eq!(
        ok(
            b,
            &["consume", "lines", "--group", "readers", "--count", "3"]
        ),
        "v3\nv4\nv5\n"
    );
    assert_eq!(
        group_offsets(b, "readers", "lines", 0),
        (Value::from(5), 5, Value::from(0))
    );
    ok_in(b, &["produce", "lines"], "v6\nv7\n");
    assert_eq!(
        group_offsets(b, "readers", "lines", 0),
        (Value::from(5), 7, Value::from(2))
    );
    let d = json(b, &["group", "describe", "readers"]);
    assert_eq!(d["state"], "Empty");
    assert_eq!(d["total_lag"], 2);
    let groups = json(b, &["group", "list"]);
    assert!(
        groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["group"] == "readers"),
        "{groups}"
    );

    // Seek: a dry run changes nothing; a real one does.
    let plan = json(
        b,
        &[
            "group",
            "seek",
            "readers",
            "--topic",
            "lines",
            "--to-earliest",
            "--dry-run",
        ],
    );
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["plan"][0]["current_offset"], 5);
    assert_eq!(plan["plan"][0]["new_offset"], 0);
    assert_eq!(group_offsets(b, "readers", "lines", 0).0, 5);
    json(
        b,
        &[
            "group",
            "seek",
            "readers",
            "--topic",
            "lines",
            "--to-earliest",
        ],
    );
    assert_eq!(
        group_offsets(b, "readers", "lines", 0),
        (Value::from(0), 7, Value::from(7))
    );
    json(
        b,
        &[
            "group",
            "seek",
            "readers",
            "--all-topics",
            "--to-offset",
            "4",
        ],
    );
    assert_eq!(group_offsets(b, "readers", "lines", 0).0, 4);
    assert_eq!(
        ok(
            b,
            &["consume", "lines", "--group", "readers", "--count", "1"]
        ),
        "v5\n"
    );

    // A group that does not exist yet can be given offsets.
    json(
        b,
        &[
            "group",
            "seek",
            "fresh",
            "--topic",
            "lines",
            "--to-offset",
            "2",
        ],
    );
    assert_eq!(group_offsets(b, "fresh", "lines", 0).0, 2);

    // Seeking an active group is refused.
    let mut member = Command::new(sluice_binary())
        .args(["consume", "lines", "--group", "readers"])
        .env("SLUICE_BOOTSTRAP", b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a group member");
    let deadline = Instant::now() + Duration::from_secs(15);
    while json(b, &["group", "describe", "readers"])["members"]
        .as_array()
        .expect("members")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the member never joined");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, err) = fails(
        b,
        &[
            "group",
            "seek",
            "readers",
            "--topic",
            "lines",
            "--to-earliest",
        ],
    );
    assert!(err.contains("inactive"), "{err}");
    // Not rewound (the member itself may have committed v6 and v7 by now).
    let committed = group_offsets(b, "readers", "lines", 0).0;
    assert!(committed == 5 || committed == 7, "{committed}");
    // SAFETY: kill with the PID of a child we spawned and have not reaped.
    unsafe {
        libc::kill(member.id() as i32, libc::SIGTERM);
    }
    assert!(member.wait().expect("member exits").success());
    ok(b, &["group", "delete", "readers"]);
    let groups = json(b, &["group", "list"]);
    assert!(
        !groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["group"] == "readers"),
        "{groups}"
    );

    // Cluster.
    let info = json(b, &["cluster", "info"]);
    assert_eq!(info["brokers"].as_array().expect("brokers").len(), 1);
    assert_eq!(info["brokers"][0]["port"], broker.addr.port());
    assert_eq!(info["controller_id"], 0);
    assert!(info["cluster_id"].is_string(), "{info}");
    assert!(info["topics"].as_i64().expect("topics") >= 2);
    let health = json(b, &["cluster", "health"]);
    assert_eq!(health["healthy"], true, "{health}");

    // An unreachable broker: a clear error, quickly.
    let started = Instant::now();
    let (code, err) = fails("127.0.0.1:1", &["cluster", "health"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the broker at 127.0.0.1:1"),
        "{err}"
    );
    let (_, err) = fails("127.0.0.1:1", &["topic", "list"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    // Bad arguments are clap errors (exit code 2).
    for args in [
        &["topic", "create"][..],
        &["produce", "lines", "--acks", "2"],
        &["group", "seek", "g", "--topic", "t"],
        &["consume", "lines", "--group", "g", "--offset", "1"],
        &["topic", "create", "x", "--config", "novalue"],
    ] {
        let (code, err) = fails(b, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
    let (code, err) = fails(b, &["topic", "describe", "missing"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");

    // Help and completions.
    for cmd in [
        "topic",
        "produce",
        "consume",
        "group",
        "cluster",
        "user",
        "completions",
    ] {
        assert!(ok(b, &[cmd, "--help"]).contains("Usage:"), "{cmd} --help");
    }
    assert!(ok(b, &["completions", "bash"]).contains("_sluice"));
    assert!(ok(b, &["completions", "zsh"]).contains("#compdef sluice"));
    assert!(ok(b, &["completions", "fish"]).contains("complete -c sluice"));
}

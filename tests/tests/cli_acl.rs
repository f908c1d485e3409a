//! `sluice acl add|list|remove` against a real `sluice` with the
//! authorizer on: bindings added, listed (table and JSON, all, by
//! principal, by resource as Kafka's MATCH) and removed; a bad
//! principal and a missing binding fail with a non-zero exit.

use std::process::{Command, Output};

use serde_json::Value;
use sluice_tests::{sluice_binary, Broker};

fn run(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(sluice_binary())
        .args(args)
        .env("SLUICE_BOOTSTRAP", bootstrap)
        .output()
        .expect("run sluice")
}

fn ok(bootstrap: &str, args: &[&str]) -> String {
    let out = run(bootstrap, args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn listed(bootstrap: &str, extra: &[&str]) -> Vec<(String, String, String, String)> {
    let mut args = vec!["acl", "list", "--format", "json"];
    args.extend(extra);
    let v: Value = serde_json::from_str(&ok(bootstrap, &args)).expect("json");
    let field = |a: &Value, k: &str| a[k].as_str().expect(k).to_string();
    v["acls"]
        .as_array()
        .expect("acls")
        .iter()
        .map(|a| {
            (
                field(a, "principal"),
                field(a, "permission"),
                field(a, "operation"),
                field(a, "name"),
            )
        })
        .collect()
}

#[test]
fn acls_are_added_listed_and_removed() {
    // PLAINTEXT clients are User:ANONYMOUS: here the super user.
    let broker = Broker::start(&[
        "--cores",
        "1",
        "--authorizer",
        "on",
        "--super-users",
        "User:ANONYMOUS",
    ]);
    let b = broker.bootstrap();
    let b = b.as_str();
    ok(
        b,
        &[
            "acl",
            "add",
            "--allow",
            "--principal",
            "User:alice",
            "--operation",
            "Write",
            "--topic",
            "metrics.",
            "--prefixed",
        ],
    );
    ok(
        b,
        &[
            "acl",
            "add",
            "--deny",
            "--principal",
            "User:*",
            "--operation",
            "all",
            "--group",
            "g",
        ],
    );
    ok(
        b,
        &[
            "acl",
            "add",
            "--allow",
            "--principal",
            "User:bob",
            "--operation",
            "Alter",
            "--cluster",
        ],
    );
    let all = listed(b, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    let row = |p: &str, perm: &str, op: &str, n: &str| (p.into(), perm.into(), op.into(), n.into());
    assert_eq!(
        listed(b, &["--topic", "metrics.cpu"]),
        vec![row("User:alice", "ALLOW", "WRITE", "metrics.")]
    );
    assert_eq!(
        listed(b, &["--principal", "User:bob"]),
        vec![row("User:bob", "ALLOW", "ALTER", "kafka-cluster")]
    );
    assert!(ok(b, &["acl", "list"]).contains("PREFIXED"));
    ok(
        b,
        &[
            "acl",
            "remove",
            "--deny",
            "--principal",
            "User:*",
            "--operation",
            "All",
            "--group",
            "g",
        ],
    );
    assert_eq!(listed(b, &[]).len(), 2);
    let gone = run(
        b,
        &[
            "acl",
            "remove",
            "--deny",
            "--principal",
            "User:*",
            "--operation",
            "All",
            "--group",
            "g",
        ],
    );
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no such binding"));
    let bad = run(
        b,
        &[
            "acl",
            "add",
            "--allow",
            "--principal",
            "alice",
            "--operation",
            "Read",
            "--topic",
            "t",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("INVALID_REQUEST"));
    let no_resource = run(
        b,
        &[
            "acl",
            "add",
            "--allow",
            "--principal",
            "User:a",
            "--operation",
            "Read",
        ],
    );
    assert!(!no_resource.status.success());
}

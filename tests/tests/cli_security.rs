//! The operator command line against secured listeners: `sluice user`
//! creates, lists and deletes SCRAM users through a real broker, and the
//! other commands reach SASL_PLAINTEXT and SASL_SSL listeners with client
//! properties given as `-X` flags, a `--command-config` file or
//! SLUICE_COMMAND_CONFIG. A refused authentication or TLS handshake ends a
//! command at once with its cause, not after the request timeout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::certs::Certs;
use sluice_tests::{free_port, sluice_binary, Broker};

const ADMIN_SECRET: &str = "admin secret";
const ALICE_SECRET: &str = "alice = wonderland # not a comment";

/// Long enough that a command which waited for it instead of failing on
/// the authentication error would stand out.
const PATIENT_MS: &str = "30000";
/// What "at once" means on a shared machine: the broker answers a failed
/// authentication after 100 ms.
const QUICK: Duration = Duration::from_secs(10);
/// How long a credential change may take to reach every shard.
const PROPAGATION: Duration = Duration::from_secs(20);

struct Setup {
    broker: Broker,
    certs: Certs,
    dir: tempfile::TempDir,
    sasl_plain: u16,
    sasl_ssl: u16,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::new(dir.path());
    let seeds = dir.path().join("scram-bootstrap");
    std::fs::write(&seeds, format!("admin:SCRAM-SHA-512:{ADMIN_SECRET}\n")).expect("seed file");
    let (sasl_plain, sasl_ssl) = (free_port(), free_port());
    let (cert, key) = (certs.pem("server"), certs.key("server"));
    let broker = Broker::start_with(move |plain| {
        vec![
            "--listeners".into(),
            format!(
                "PLAINTEXT://{plain},SASL_PLAINTEXT://127.0.0.1:{sasl_plain},\
                 SASL_SSL://127.0.0.1:{sasl_ssl}"
            ),
            "--tls-cert".into(),
            cert,
            "--tls-key".into(),
            key,
            "--scram-bootstrap-file".into(),
            seeds.display().to_string(),
        ]
    });
    Setup {
        broker,
        certs,
        dir,
        sasl_plain,
        sasl_ssl,
    }
}

impl Setup {
    fn plaintext(&self) -> String {
        self.broker.bootstrap()
    }

    fn sasl_plain(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_plain)
    }

    fn sasl_ssl(&self) -> String {
        format!("localhost:{}", self.sasl_ssl)
    }

    /// A properties file for `user` over SASL_PLAINTEXT with SCRAM-SHA-512.
    fn properties(&self, name: &str, user: &str, password: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "# {user} over SASL_PLAINTEXT\n\
                 security.protocol = SASL_PLAINTEXT\n\
                 ! Kafka tools' second comment sign\n\n\
                 sasl.mechanism=SCRAM-SHA-512\n\
                 sasl.username={user}\n\
                 sasl.password={password}\n"
            ),
        )
        .expect("properties file");
        path
    }
}

/// Runs `sluice ARGS` with `stdin` piped in and `env` set.
fn run_env(args: &[&str], stdin: &str, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(sluice_binary());
    command
        .args(args)
        .env_remove("SLUICE_BOOTSTRAP")
        .env_remove("SLUICE_COMMAND_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start sluice");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for sluice")
}

fn run(args: &[&str], stdin: &str) -> Output {
    run_env(args, stdin, &[])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(args: &[&str], stdin: &str) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "sluice {args:?} failed with {}:\n{}",
        out.status,
        stderr(&out)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A run that must fail: its stderr, after checking that it failed
/// within QUICK although its timeout was PATIENT_MS.
fn fails_quickly(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.extend(["--timeout-ms", PATIENT_MS]);
    let started = Instant::now();
    let out = run(&args, "");
    let took = started.elapsed();
    assert!(!out.status.success(), "sluice {args:?} succeeded");
    assert!(
        took < QUICK,
        "sluice {args:?} took {took:?} to fail:\n{}",
        stderr(&out)
    );
    stderr(&out)
}

/// Whether `args` succeeds within PROPAGATION, retried: a credential
/// change is applied on every shard shortly after it is acknowledged.
fn eventually(args: &[&str], env: &[(&str, &Path)], succeeds: bool) -> Output {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let out = run_env(args, "", env);
        if out.status.success() == succeeds || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn users_set_over_plaintext_authenticate_on_sasl_until_deleted() {
    let s = start();
    let plain = s.plaintext();
    let sasl = s.sasl_plain();

    // The password comes from stdin, its line end dropped; `=` and `#`
    // in it are just characters.
    let set = ok(
        &[
            "user",
            "set",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--bootstrap",
            &plain,
        ],
        &format!("{ALICE_SECRET}\n"),
    );
    assert!(set.contains("alice") && set.contains("4096"), "{set}");

    let table = ok(&["user", "list", "--bootstrap", &plain], "");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split(|c: char| c.is_whitespace() || c == '│')
                .filter(|w| !w.is_empty())
                .collect()
        })
        .collect();
    for user in ["admin", "alice"] {
        assert!(
            rows.iter()
                .any(|r| r.as_slice() == [user, "SCRAM-SHA-512", "4096"]),
            "{user} missing:\n{table}"
        );
    }
    let listed = json(&ok(
        &["user", "list", "--bootstrap", &plain, "--format", "json"],
        "",
    ));
    let alice = listed["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["user"] == "alice")
        .unwrap_or_else(|| panic!("no alice: {listed}"));
    assert_eq!(
        alice["credentials"],
        serde_json::json!([{ "mechanism": "SCRAM-SHA-512", "iterations": 4096 }]),
        "{listed}"
    );
    assert!(alice["error"].is_null(), "{listed}");

    // A name asked for that has no credential fails, as Kafka answers it;
    // the users found are still shown.
    let out = run(&["user", "list", "alice", "bob", "--bootstrap", &plain], "");
    assert!(!out.status.success(), "listing an unknown user succeeded");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("alice"),
        "{out:?}"
    );
    let err = stderr(&out);
    assert!(err.contains("user bob: RESOURCE_NOT_FOUND"), "{err}");
    // The broker's refusals come through with Kafka's error name.
    let out = run(
        &[
            "user",
            "set",
            "alice",
            "--mechanism",
            "SCRAM-SHA-256",
            "--iterations",
            "100",
            "--bootstrap",
            &plain,
        ],
        "another\n",
    );
    assert!(!out.status.success(), "100 iterations were accepted");
    assert!(
        stderr(&out).contains("UNACCEPTABLE_CREDENTIAL"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &[
            "user",
            "set",
            "carol",
            "--mechanism",
            "SCRAM-SHA-512",
            "--bootstrap",
            &plain,
        ],
        "\n",
    );
    assert!(!out.status.success(), "an empty password was accepted");
    assert!(stderr(&out).contains("empty password"), "{}", stderr(&out));

    // Alice reaches the SASL listener with -X properties ...
    ok(
        &[
            "topic",
            "create",
            "ledger",
            "--partitions",
            "2",
            "--bootstrap",
            &plain,
        ],
        "",
    );
    let as_alice = [
        "--bootstrap",
        &sasl,
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanism=SCRAM-SHA-512",
        "-X",
        "sasl.username=alice",
    ];
    let right = format!("sasl.password={ALICE_SECRET}");
    let mut with_flags = vec!["topic", "list", "--format", "json"];
    with_flags.extend(as_alice);
    with_flags.extend(["-X", &right]);
    let out = eventually(&with_flags, &[], true);
    assert!(
        out.status.success(),
        "alice over SASL with -X: {}",
        stderr(&out)
    );
    let topics = json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        topics["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .any(|t| t["name"] == "ledger" && t["partitions"] == 2),
        "{topics}"
    );

    // ... with a properties file, by flag and by environment ...
    let file = s.properties("alice.properties", "alice", ALICE_SECRET);
    let file_arg = file.display().to_string();
    ok(
        &[
            "topic",
            "list",
            "--bootstrap",
            &sasl,
            "--command-config",
            &file_arg,
        ],
        "",
    );
    let out = run_env(
        &["topic", "list", "--bootstrap", &sasl],
        "",
        &[("SLUICE_COMMAND_CONFIG", &file)],
    );
    assert!(
        out.status.success(),
        "SLUICE_COMMAND_CONFIG: {}",
        stderr(&out)
    );
    // ... and produces and consumes through it.
    let sasl_file = ["--bootstrap", sasl.as_str(), "--command-config", &file_arg];
    let mut produce = vec!["produce", "ledger", "--partition", "1"];
    produce.extend(sasl_file);
    ok(&produce, "debit\ncredit\n");
    let mut consume = vec!["consume", "ledger", "--from-beginning", "--exit-at-end"];
    consume.extend(sasl_file);
    assert_eq!(ok(&consume, ""), "debit\ncredit\n");

    // A wrong password ends the command at once with the cause; -X wins
    // over the file.
    let mut wrong = vec!["topic", "list"];
    wrong.extend(sasl_file);
    wrong.extend(["-X", "sasl.password=wrong"]);
    let err = fails_quickly(&wrong);
    assert!(err.contains("authentication failed"), "{err}");

    // Once deleted, the right password fails the same way.
    ok(
        &[
            "user",
            "delete",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--bootstrap",
            &plain,
        ],
        "",
    );
    let mut right_file = vec!["topic", "list"];
    right_file.extend(sasl_file);
    let out = eventually(&right_file, &[], false);
    assert!(!out.status.success(), "deleted alice still authenticates");
    let err = fails_quickly(&right_file);
    assert!(err.contains("authentication failed"), "{err}");
    let out = run(&["user", "list", "alice", "--bootstrap", &plain], "");
    assert!(
        !out.status.success() && stderr(&out).contains("RESOURCE_NOT_FOUND"),
        "{out:?}"
    );
    let out = run(
        &[
            "user",
            "delete",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--bootstrap",
            &plain,
        ],
        "",
    );
    assert!(
        !out.status.success() && stderr(&out).contains("RESOURCE_NOT_FOUND"),
        "deleting twice: {out:?}"
    );
}

#[test]
fn sasl_ssl_with_the_cluster_ca_and_a_clear_failure_without() {
    let s = start();
    let ssl = s.sasl_ssl();
    let common = [
        "--bootstrap",
        ssl.as_str(),
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanism=SCRAM-SHA-512",
        "-X",
        "sasl.username=admin",
    ];
    let password = format!("sasl.password={ADMIN_SECRET}");
    let ca = format!("ssl.ca.location={}", s.certs.pem("ca"));
    let mut info = vec!["cluster", "info", "--format", "json"];
    info.extend(common);
    info.extend(["-X", &password, "-X", &ca]);
    let out = ok(&info, "");
    let cluster = json(&out);
    assert_eq!(
        cluster["brokers"][0]["port"].as_u64(),
        Some(u64::from(s.sasl_ssl)),
        "the SASL_SSL listener's address: {cluster}"
    );

    // A CA that did not sign the broker's certificate: the handshake
    // fails, and says so at once.
    let foreign = format!("ssl.ca.location={}", s.certs.pem("other-ca"));
    let mut untrusted = vec!["cluster", "info"];
    untrusted.extend(common);
    untrusted.extend(["-X", &password, "-X", &foreign]);
    let err = fails_quickly(&untrusted);
    assert!(
        err.contains("TLS failed") && err.contains("certificate"),
        "{err}"
    );

    // A plain client on the SASL listener: the connection is closed, and
    // the message says where to look.
    let out = run(
        &[
            "topic",
            "list",
            "--bootstrap",
            &s.sasl_plain(),
            "--timeout-ms",
            "2000",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("security.protocol"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_client_properties_are_refused_with_their_origin() {
    let s = start();
    let plain = s.plaintext();
    let dir = s.dir.path();
    let malformed = dir.join("malformed.properties");
    std::fs::write(
        &malformed,
        "security.protocol=PLAINTEXT\nthis line has no separator\n",
    )
    .expect("write");
    let unknown = dir.join("unknown.properties");
    std::fs::write(&unknown, "# typo\nsasl.mechanizm=PLAIN\n").expect("write");
    let missing = dir.join("missing.properties");
    for (args, wanted) in [
        (
            vec!["--command-config", malformed.to_str().expect("path")],
            format!("{}, line 2: expected key=value", malformed.display()),
        ),
        (
            vec!["--command-config", unknown.to_str().expect("path")],
            format!("{}, line 2: ", unknown.display()),
        ),
        (
            vec!["--command-config", missing.to_str().expect("path")],
            missing.display().to_string(),
        ),
        (vec!["-X", "security.protocol=TLS"], "-X: ".to_string()),
        (
            vec!["-X", "bootstrap.servers=elsewhere:9092"],
            "--bootstrap".to_string(),
        ),
    ] {
        let mut full = vec!["topic", "list", "--bootstrap", &plain];
        full.extend(&args);
        let out = run(&full, "");
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(&wanted), "{args:?}: {}", stderr(&out));
    }
    // Properties that name nothing wrong change nothing for a plain
    // listener.
    let fine = dir.join("fine.properties");
    std::fs::write(&fine, "client.id = ops-laptop\n").expect("write");
    ok(
        &[
            "topic",
            "list",
            "--bootstrap",
            &plain,
            "--command-config",
            fine.to_str().expect("path"),
            "-X",
            "socket.keepalive.enable=true",
        ],
        "",
    );
}

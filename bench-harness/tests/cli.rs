//! The `sluice-bench` binary's contract with people and scripts, without a
//! broker: bad input and unreachable brokers give one clear line and exit
//! code 2, never a panic.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(args)
        .output()
        .expect("run sluice-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_the_main_flags() {
    let o = bench(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--bootstrap",
        "--scenario",
        "--json",
        "--hdr-log",
        "--plot",
        "--rate",
        "--cluster",
        "--logs-dir",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn bad_values_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["--acks", "3"][..], "acks"),
        (&["--compression", "brotli"][..], "compression"),
        (&["--plot", "out.png"][..], "SVG"),
        (&["--scenario", "no-such-scenario"][..], "built-in"),
        (
            &["--sluice-bin", "/nonexistent/sluice", "--no-limits"][..],
            "--sluice-bin",
        ),
        (&["--no-such-flag"][..], "unexpected argument"),
        (&["--cluster", "0"][..], "cluster"),
        (&["--unpin-nodes"][..], "--unpin-nodes"),
        (
            &["--cluster", "3", "--replication-factor", "4"][..],
            "replication-factor",
        ),
        (
            &["--cluster", "3", "--bootstrap", "127.0.0.1:1"][..],
            "--bootstrap",
        ),
    ] {
        let o = bench(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_broker_exits_2() {
    // Port 1 on loopback refuses at once: nothing listens there.
    let o = bench(&["--bootstrap", "127.0.0.1:1", "--no-limits", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the broker at 127.0.0.1:1"),
        "{err}"
    );
}

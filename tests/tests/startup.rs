//! Start-up failures exit non-zero with a message naming the cause and the
//! fix, never a panic: bad configuration, a data directory in use or not
//! creatable, a port already taken.

use std::process::Command;

use sluice_tests::{sluice_binary, Broker};

fn serve(args: &[&str]) -> (i32, String) {
    let out = Command::new(sluice_binary())
        .arg("serve")
        .args(args)
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_starts_name_the_cause() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    let dir = dir.to_str().expect("utf-8 path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cores", "0", "--data-dir", dir], "cores"),
        (vec!["--profile", "fast", "--data-dir", dir], "profile"),
        (vec!["--fsync", "sometimes", "--data-dir", dir], "fsync"),
        (
            vec!["--segment-bytes", "3", "--data-dir", dir],
            "segment-bytes",
        ),
        (vec!["--listen", "nowhere", "--data-dir", dir], "listen"),
        (
            vec!["--data-dir", "/proc/sluice-cannot-be-here"],
            "data directory",
        ),
    ];
    for (args, named) in cases {
        let (code, stderr) = serve(&args);
        assert_ne!(code, 0, "{args:?} must fail");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }

    let broker = Broker::start(&["--cores", "1"]);
    let data_dir = broker.data_dir().to_str().expect("utf-8").to_string();
    let (code, stderr) = serve(&["--listen", "127.0.0.1:1", "--data-dir", &data_dir]);
    assert_ne!(code, 0);
    assert!(stderr.contains("another sluice process"), "{stderr}");
    let addr = broker.bootstrap();
    let (code, stderr) = serve(&["--listen", &addr, "--data-dir", dir]);
    assert_ne!(code, 0);
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

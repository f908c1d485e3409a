//! Start-up failures exit non-zero with a message naming the cause and the
//! fix, never a panic: bad configuration, a data directory in use or not
//! creatable, a port already taken.

mod common;

use std::process::Command;

use sluice_tests::{sluice_binary, Broker};

/// A loopback address free a moment ago. The failures below must come from
/// what each test breaks, not from the port: port 1 binds only as root,
/// and a default port may be taken by whatever else runs on the machine.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

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
    let listen = free_addr();
    let (code, stderr) = serve(&["--listen", &listen, "--data-dir", &data_dir]);
    assert_ne!(code, 0);
    assert!(stderr.contains("another sluice process"), "{stderr}");
    let addr = broker.bootstrap();
    let (code, stderr) = serve(&["--listen", &addr, "--data-dir", dir]);
    assert_ne!(code, 0);
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

#[test]
fn a_low_memlock_limit_names_the_fix() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(sluice_binary());
    cmd.args(["serve", "--listen", &free_addr(), "--data-dir"])
        .arg(tmp.path().join("d"));
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's
    // own limit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256 << 10,
                rlim_max: 256 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("RLIMIT_MEMLOCK"), "{stderr}");
    assert!(stderr.contains("ulimit -l"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_file_keys_apply_and_flags_win() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("sluice.toml");
    std::fs::write(
        &path,
        "profile = \"durable\"\ndefault_partitions = 3\nretention_ms = 3600000\ncores = 1\n",
    )
    .expect("write config");
    let path = path.to_str().expect("utf-8").to_string();
    // The flag overrides the file's retention.
    let broker = Broker::start(&["--config", &path, "--retention-ms", "7200000"]);
    let bootstrap = broker.bootstrap();
    let admin = common::admin(&bootstrap);
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(common::TIMEOUT));
    let described = futures_lite::future::block_on(
        admin.describe_configs(&[rdkafka::admin::ResourceSpecifier::Broker(0)], &opts),
    )
    .expect("describe broker");
    let broker_configs = described[0].as_ref().expect("broker configs");
    let value = |k: &str| broker_configs.get(k).and_then(|e| e.value.clone());
    assert_eq!(value("sluice.profile").as_deref(), Some("durable"));
    assert_eq!(value("sluice.fsync").as_deref(), Some("always"));
    assert_eq!(value("num.partitions").as_deref(), Some("3"));
    assert_eq!(value("log.retention.ms").as_deref(), Some("7200000"));
    // Auto-creation (a producer's metadata request allows it) uses
    // num.partitions from the file.
    use rdkafka::producer::Producer;
    let p = common::producer(&bootstrap, "none");
    let meta = p
        .client()
        .fetch_metadata(Some("auto-created"), common::TIMEOUT)
        .expect("metadata");
    assert_eq!(meta.topics()[0].partitions().len(), 3);
}

#[test]
fn a_taken_metrics_port_fails_start_up_with_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics = taken.local_addr().expect("addr").to_string();
    let listen = free_addr();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    let (code, stderr) = serve(&[
        "--listen",
        &listen,
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "--metrics-listen",
        &metrics,
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("binding the metrics endpoint"), "{stderr}");
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}

#[test]
fn a_low_open_file_limit_is_raised_to_the_hard_one() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(sluice_binary());
    cmd.args([
        "serve",
        "--listen",
        &free_addr(),
        "--metrics-listen",
        "",
        "--data-dir",
    ])
    .arg(tmp.path().join("d"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's
    // own limit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start sluice");
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let soft = loop {
        let text = std::fs::read_to_string(&limits).unwrap_or_default();
        let soft = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok());
        if soft == Some(4096) || std::time::Instant::now() > deadline {
            break soft;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        soft,
        Some(4096),
        "the soft limit was raised to the hard one"
    );
}

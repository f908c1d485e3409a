//! Crash tests with real processes: a child appends under `fsync=always`
//! from many concurrent appenders and reports each acknowledged batch; the
//! test kills it with SIGKILL at random moments, reopens the log and checks
//! that every acknowledged batch is there, byte for byte, at its offsets.
//! The seed is printed; set SLUICE_CRASH_SEED to replay a run.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{read_all, run, tagged_batch, unstamped};
use rand::{Rng, SeedableRng};
use storage::{FsyncPolicy, LogConfig, PartitionLog};

const CHILD_ENV: &str = "SLUICE_CRASH_CHILD_DIR";
const TAG_ENV: &str = "SLUICE_CRASH_CHILD_TAG_BASE";

fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        index_interval_bytes: 4096,
        fsync: FsyncPolicy::Always,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The batch a given tag stands for; the child and the checker agree on it.
fn batch_for(tag: u64) -> bytes::Bytes {
    tagged_batch(
        tag,
        1 + (tag % 4) as usize,
        20 + (tag % 900) as usize,
        tag as i64,
    )
}

/// Child side: append forever from 16 appenders, print "tag base last" for
/// every acknowledged append.
fn child(dir: &str, tag_base: u64) {
    let dir = dir.to_string();
    run(move || async move {
        let log = PartitionLog::open(&dir, crash_config())
            .await
            .expect("child open");
        let mut tasks = Vec::new();
        for lane in 0..16u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for n in 0.. {
                    let tag = tag_base + n * 16 + lane;
                    let info = log.append(&batch_for(tag)).await.expect("append");
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{tag} {} {}", info.base_offset, info.last_offset)
                        .expect("stdout");
                    out.flush().expect("flush");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let base = std::env::var(TAG_ENV)
            .expect("tag base")
            .parse()
            .expect("number");
        child(&dir, base);
        return;
    }
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("crash test seed {seed} (SLUICE_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    let rounds = 12;
    for round in 0..rounds {
        let tag_base = (round as u64 + 1) * 100_000_000;
        let life = Duration::from_millis(rng.gen_range(30..400));
        let got = run_child_and_kill(dir.path(), tag_base, life);
        println!(
            "round {round}: child lived {life:?}, {} acknowledged appends",
            got.len()
        );
        acked.extend(got);
        check(dir.path(), &acked);
    }
    assert!(
        acked.len() > 50,
        "the child acknowledged too little to test anything"
    );
}

fn run_child_and_kill(dir: &Path, tag_base: u64, life: Duration) -> Vec<(u64, (i64, i64))> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "acknowledged_appends_survive_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(TAG_ENV, tag_base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 3 {
                if let (Ok(t), Ok(b), Ok(l)) =
                    (parts[0].parse(), parts[1].parse(), parts[2].parse())
                {
                    let _ = tx.send((t, (b, l)));
                }
            }
        }
    });
    // Wait for the first acknowledgement so the kill lands mid-stream.
    let started = Instant::now();
    let mut got = Vec::new();
    while got.is_empty() && started.elapsed() < Duration::from_secs(20) {
        if let Ok(x) = rx.recv_timeout(Duration::from_millis(50)) {
            got.push(x);
        }
    }
    std::thread::sleep(life);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    reader.join().expect("reader");
    got.extend(rx.try_iter());
    got
}

fn check(dir: &Path, acked: &BTreeMap<u64, (i64, i64)>) {
    let dir = dir.to_path_buf();
    let acked = acked.clone();
    run(move || async move {
        let log = PartitionLog::open(&dir, crash_config())
            .await
            .expect("reopen after kill");
        let batches = read_all(&log).await;
        let mut by_offset = BTreeMap::new();
        let mut next = log.log_start_offset();
        for (base, bytes) in &batches {
            assert_eq!(*base, next, "offsets stay dense after recovery");
            let h = storage::batch::validate(bytes).expect("served batches are intact");
            next = h.next_offset();
            by_offset.insert(*base, bytes.clone());
        }
        assert_eq!(next, log.log_end_offset());
        for (tag, (base, last)) in &acked {
            let stored = by_offset
                .get(base)
                .unwrap_or_else(|| panic!("acknowledged batch {tag} at offset {base} is gone"));
            let h = storage::batch::validate(stored).expect("valid");
            assert_eq!(h.last_offset(), *last, "batch {tag} kept its offsets");
            assert_eq!(
                unstamped(stored),
                unstamped(&batch_for(*tag)),
                "batch {tag} is byte-identical"
            );
        }
        log.close().await.expect("close");
    });
}

//! Compaction crash test with real processes: a child appends keyed batches
//! under `fsync=always` while a cleaner compacts the log back to back, and
//! reports each acknowledged batch; the test kills it with SIGKILL at random
//! moments (so kills land mid-pass, mid-swap), reopens the log and checks
//! that every key's latest acknowledged record (or a later one) is there,
//! that every record served is what was appended at its offset, and that
//! no cleaner file is left. The seed is printed; set
//! SLUICE_COMPACTION_CRASH_SEED to replay a run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::run;
use kafka_protocol::records::RecordBatchDecoder;
use rand::{Rng, SeedableRng};
use storage::batch::Compression;
use storage::testing::{keyed_batch, KeyedRecord};
use storage::{CleanupPolicy, FsyncPolicy, LogConfig, PartitionLog};

const CHILD_ENV: &str = "SLUICE_COMPACTION_CHILD_DIR";
const TAG_ENV: &str = "SLUICE_COMPACTION_CHILD_TAG_BASE";
const KEYS: u64 = 300;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_interval_bytes: 1024,
        fsync: FsyncPolicy::Always,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

/// Key and value of record `i` of the batch for `tag`; values name their
/// tag and index so that any record read back can be checked on its own.
fn record(tag: u64, i: u64) -> (Vec<u8>, Vec<u8>) {
    let key = format!("k{}", (tag * 7 + i * 13) % KEYS).into_bytes();
    let value = format!("t{tag}r{i}{}", ".".repeat(((tag + i) % 50) as usize)).into_bytes();
    (key, value)
}

fn records_of(tag: u64) -> u64 {
    1 + tag % 3
}

fn batch_for(tag: u64) -> Bytes {
    let recs: Vec<KeyedRecord> = (0..records_of(tag))
        .map(|i| {
            let (k, v) = record(tag, i);
            KeyedRecord {
                key: Some(k),
                value: Some(v),
            }
        })
        .collect();
    let codec = [Compression::None, Compression::Lz4, Compression::Zstd][(tag % 3) as usize];
    keyed_batch(&recs, 1_000 + tag as i64, codec, None)
}

/// Child side: 8 appenders and a cleaner that never rests; prints
/// "tag base" for every acknowledged append and "pass" after each pass.
fn child(dir: &str, tag_base: u64) {
    let dir = dir.to_string();
    run(move || async move {
        let log = PartitionLog::open(&dir, config())
            .await
            .expect("child open");
        let cleaner = {
            let log = log.clone();
            glommio::spawn_local(async move {
                loop {
                    let out = log.compact().await.expect("compact");
                    if out.segments_rewritten > 0 {
                        println!("pass");
                    }
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let mut tasks = Vec::new();
        for lane in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for n in 0.. {
                    let tag = tag_base + n * 8 + lane;
                    let info = log.append(&batch_for(tag)).await.expect("append");
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{tag} {}", info.base_offset).expect("stdout");
                    out.flush().expect("flush");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        cleaner.await;
    });
}

#[test]
fn compaction_survives_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let base = std::env::var(TAG_ENV)
            .expect("tag base")
            .parse()
            .expect("number");
        child(&dir, base);
        return;
    }
    let seed: u64 = std::env::var("SLUICE_COMPACTION_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("SLUICE_COMPACTION_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeMap<u64, i64> = BTreeMap::new();
    let mut passes = 0;
    for round in 0..8 {
        let tag_base = (round as u64 + 1) * 100_000_000;
        let life = Duration::from_millis(rng.gen_range(200..900));
        let (got, round_passes) = run_child_and_kill(dir.path(), tag_base, life);
        println!(
            "round {round}: {life:?}, {} appends, {round_passes} passes",
            got.len()
        );
        acked.extend(got);
        passes += round_passes;
        check(dir.path(), &acked);
    }
    assert!(acked.len() > 200, "the child acknowledged too little");
    assert!(passes > 0, "no cleaning pass ran before a kill");
}

fn run_child_and_kill(dir: &Path, tag_base: u64, life: Duration) -> (Vec<(u64, i64)>, usize) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "compaction_survives_sigkill",
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
        let mut passes = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "pass" {
                passes += 1;
                continue;
            }
            if let Some((t, b)) = line.split_once(' ') {
                if let (Ok(t), Ok(b)) = (t.parse(), b.parse()) {
                    let _ = tx.send((t, b));
                }
            }
        }
        passes
    });
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
    let passes = reader.join().expect("reader");
    got.extend(rx.try_iter());
    (got, passes)
}

fn check(dir: &Path, acked: &BTreeMap<u64, i64>) {
    let dir = dir.to_path_buf();
    let acked = acked.clone();
    run(move || async move {
        let log = PartitionLog::open(&dir, config())
            .await
            .expect("reopen after kill");
        for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            assert!(
                !name.ends_with(".cleaned") && !name.ends_with(".swap"),
                "recovery left {name}"
            );
        }
        let mut latest_seen: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut offset = log.log_start_offset();
        let mut last = -1;
        while offset < log.log_end_offset() {
            let got = log.read(offset, 256 << 10).await.expect("read");
            assert!(!got.chunks.is_empty(), "nothing at {offset}");
            for chunk in got.chunks {
                let mut buf = chunk.clone();
                while !buf.is_empty() {
                    let size = storage::batch::peek_batch_size(&buf).expect("size");
                    let one = buf.split_to(size);
                    let h =
                        storage::batch::validate_stored(&one).expect("served batches are intact");
                    offset = offset.max(h.next_offset());
                    let set = RecordBatchDecoder::decode(&mut one.clone()).expect("decodes");
                    for r in set.records {
                        assert!(r.offset > last, "offsets increase");
                        last = r.offset;
                        // The value names the append it came from: key and
                        // value must be that append's, at its offset.
                        let value = r.value.expect("no tombstones here");
                        let text = std::str::from_utf8(&value).expect("utf8");
                        let (tag, i) = text[1..]
                            .trim_end_matches('.')
                            .split_once('r')
                            .map(|(t, i)| {
                                (t.parse::<u64>().expect("tag"), i.parse::<u64>().expect("i"))
                            })
                            .expect("value format");
                        let (k, v) = record(tag, i);
                        assert_eq!(&value[..], &v[..]);
                        assert_eq!(r.key.as_deref(), Some(&k[..]));
                        if let Some(base) = acked.get(&tag) {
                            assert_eq!(r.offset, base + i as i64, "record {tag}/{i} moved");
                        }
                        latest_seen.insert(k, r.offset);
                    }
                }
            }
        }
        for (tag, base) in &acked {
            for i in 0..records_of(*tag) {
                let (k, _) = record(*tag, i);
                let have = latest_seen.get(&k).copied();
                assert!(
                    have.is_some_and(|o| o >= base + i as i64),
                    "key {:?}: acknowledged record at {} lost (latest {have:?})",
                    String::from_utf8_lossy(&k),
                    base + i as i64
                );
            }
        }
        log.close().await.expect("close");
    });
}

//! Log compaction against a model: random keyed batches (every codec,
//! tombstones, idempotent producers) are appended, the log is compacted,
//! and what a reader sees is checked against a map of each key's latest
//! record, at every offset, before and after reopening; a pass stopped at
//! each step of its swap protocol (as a crash would) recovers to a correct
//! log. The seed is printed; set SLUICE_COMPACTION_SEED to replay a run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::Bytes;
use common::run;
use kafka_protocol::records::RecordBatchDecoder;
use rand::{Rng, SeedableRng};
use storage::batch::{BatchErrorKind, Compression};
use storage::testing::{keyed_batch, KeyedRecord};
use storage::{CleanupPolicy, Faults, LogConfig, PartitionLog, StorageError};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 512,
        tail_cache_bytes: 4 << 10,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

/// One record as a reader decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

/// A record's key and value as appended (`None` is Kafka's null).
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What was appended, by offset.
#[derive(Default)]
struct Model {
    by_offset: BTreeMap<i64, KeyValue>,
    latest: HashMap<Vec<u8>, i64>,
}

impl Model {
    fn record(&mut self, base: i64, recs: &[KeyedRecord]) {
        for (i, r) in recs.iter().enumerate() {
            let offset = base + i as i64;
            self.by_offset
                .insert(offset, (r.key.clone(), r.value.clone()));
            if let Some(k) = &r.key {
                self.latest.insert(k.clone(), offset);
            }
        }
    }
}

/// Decodes every record of the batches in `chunks` with kafka-protocol's
/// decoder (an independent check of what the cleaner wrote).
fn decode(chunks: &[Bytes]) -> Vec<Seen> {
    let mut out = Vec::new();
    for chunk in chunks {
        let mut buf = chunk.clone();
        while !buf.is_empty() {
            let size = storage::batch::peek_batch_size(&buf).expect("batch size");
            let one = buf.split_to(size);
            storage::batch::validate_stored(&one).expect("stored batch valid");
            let set = RecordBatchDecoder::decode(&mut one.clone()).expect("decodes");
            for r in set.records {
                out.push(Seen {
                    offset: r.offset,
                    key: r.key,
                    value: r.value,
                });
            }
        }
    }
    out
}

async fn read_all(log: &PartitionLog) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let got = log.read(offset, 64 << 10).await.expect("read");
        assert!(
            !got.chunks.is_empty(),
            "nothing read at {offset} below {end}"
        );
        let mut progressed = false;
        for chunk in &got.chunks {
            let mut buf = chunk.clone();
            while !buf.is_empty() {
                let size = storage::batch::peek_batch_size(&buf).expect("size");
                let one = buf.split_to(size);
                let h = storage::batch::validate_stored(&one).expect("valid");
                if h.next_offset() > offset {
                    offset = h.next_offset();
                    progressed = true;
                }
            }
        }
        assert!(progressed, "a read at {offset} did not move forward");
        for s in decode(&got.chunks) {
            if out.last().is_none_or(|l| s.offset > l.offset) {
                out.push(s);
            }
        }
    }
    out
}

/// The checks every compacted log passes: offsets increase; each record
/// is what was appended there; every key's latest record is present; below
/// `clean_below` only latest records remain (tombstones too unless
/// `tombstones_gone`, then none).
fn check(seen: &[Seen], model: &Model, clean_below: i64, tombstones_gone: bool) {
    // The cleaner maps keys up to the active segment only (as Kafka's does):
    // below it, a record must be the latest among the records below it.
    let mut latest_clean: HashMap<&[u8], i64> = HashMap::new();
    for (&offset, (k, _)) in model.by_offset.range(..clean_below) {
        if let Some(k) = k {
            latest_clean.insert(k, offset);
        }
    }
    for w in seen.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "offsets go back at {}",
            w[1].offset
        );
    }
    let at: HashMap<i64, &Seen> = seen.iter().map(|s| (s.offset, s)).collect();
    for s in seen {
        let (k, v) = model.by_offset.get(&s.offset).expect("appended offset");
        assert_eq!(s.key.as_deref(), k.as_deref(), "key at {}", s.offset);
        assert_eq!(s.value.as_deref(), v.as_deref(), "value at {}", s.offset);
        if s.offset < clean_below {
            if let Some(k) = k {
                assert_eq!(
                    latest_clean[&k[..]],
                    s.offset,
                    "superseded record at {}",
                    s.offset
                );
                if tombstones_gone {
                    assert!(v.is_some(), "expired tombstone kept at {}", s.offset);
                }
            }
        }
    }
    for (k, &offset) in &model.latest {
        let tombstone = model.by_offset[&offset].1.is_none();
        if tombstone && tombstones_gone && offset < clean_below {
            assert!(!at.contains_key(&offset));
            continue;
        }
        assert!(
            at.contains_key(&offset),
            "latest record of {k:?} at {offset} missing"
        );
    }
}

/// Every offset of the log reads from the first surviving record at or
/// after it.
async fn check_reads_everywhere(log: &PartitionLog, seen: &[Seen]) {
    let end = log.log_end_offset();
    for offset in log.log_start_offset()..end {
        let got = log.read(offset, 1).await.expect("read");
        let first = decode(&got.chunks).into_iter().find(|s| s.offset >= offset);
        let want = seen.iter().find(|s| s.offset >= offset);
        // Even a read of one byte brings a record when one follows: a
        // response without any looks like a size limit to clients.
        assert_eq!(first.as_ref(), want, "read at {offset}");
    }
}

fn seed() -> u64 {
    let seed = std::env::var("SLUICE_COMPACTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("SLUICE_COMPACTION_SEED={seed}");
    seed
}

/// Appends `batches` random keyed batches over `keys` keys; some records
/// are tombstones, codecs vary. Timestamps are the current time.
async fn fill(
    log: &PartitionLog,
    model: &mut Model,
    rng: &mut impl Rng,
    batches: usize,
    keys: u32,
) {
    for _ in 0..batches {
        let n = rng.gen_range(1..8);
        let recs: Vec<KeyedRecord> = (0..n)
            .map(|_| {
                let key = format!("key-{}", rng.gen_range(0..keys)).into_bytes();
                let value = (!rng.gen_bool(0.1)).then(|| {
                    let len = rng.gen_range(0..60);
                    (0..len).map(|_| rng.gen::<u8>()).collect()
                });
                KeyedRecord {
                    key: Some(key),
                    value,
                }
            })
            .collect();
        let codec = CODECS[rng.gen_range(0..CODECS.len())];
        let b = keyed_batch(&recs, now_ms(), codec, None);
        let info = log.append(&b).await.expect("append");
        model.record(info.base_offset, &recs);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn active_base(log: &PartitionLog) -> i64 {
    *log.segment_bases().last().expect("a segment")
}

#[test]
fn compaction_keeps_the_latest_record_of_each_key() {
    let seed = seed();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let log = PartitionLog::open(&path, compact_config())
            .await
            .expect("open");
        let mut model = Model::default();
        fill(&log, &mut model, &mut rng, 600, 150).await;
        assert!(log.segment_count() > 10, "data spans many segments");
        assert!(log.compaction_due());
        let size_before = log.size_bytes();
        let out = log.compact().await.expect("compact");
        assert!(out.segments_rewritten > 0, "{out:?}");
        assert!(out.records_removed > 0, "{out:?}");
        assert!(log.size_bytes() < size_before);
        assert!(!log.compaction_due(), "a clean log is not due again");
        let clean_below = active_base(&log);
        let seen = read_all(&log).await;
        check(&seen, &model, clean_below, false);
        check_reads_everywhere(&log, &seen).await;

        // Appends go on after a pass, and a second pass over more data
        // still keeps only the latest records.
        fill(&log, &mut model, &mut rng, 300, 150).await;
        log.compact().await.expect("compact again");
        let clean_below = active_base(&log);
        let seen = read_all(&log).await;
        check(&seen, &model, clean_below, false);
        log.close().await.expect("close");

        let log = PartitionLog::open(&path, compact_config())
            .await
            .expect("reopen");
        let again = read_all(&log).await;
        assert_eq!(again, seen, "the same log after reopening");
        check_reads_everywhere(&log, &again).await;
        log.close().await.expect("close");
    });
}

#[test]
fn tombstones_go_once_delete_retention_has_passed() {
    let seed = seed();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let log = PartitionLog::open(&path, compact_config())
            .await
            .expect("open");
        let mut model = Model::default();
        fill(&log, &mut model, &mut rng, 400, 80).await;
        log.compact().await.expect("compact");
        let clean_below = active_base(&log);
        let seen = read_all(&log).await;
        check(&seen, &model, clean_below, false);
        assert!(
            seen.iter()
                .any(|s| s.offset < clean_below && s.value.is_none()),
            "tombstones survive while delete.retention.ms has not passed"
        );
        assert!(!log.compaction_due());

        // With a 1 ms retention the tombstones are due a moment later.
        std::thread::sleep(std::time::Duration::from_millis(5));
        log.set_config(LogConfig {
            delete_retention_ms: 1,
            ..compact_config()
        })
        .expect("config");
        assert!(log.compaction_due(), "expired tombstones make a pass due");
        let out = log.compact().await.expect("compact");
        assert!(out.tombstones_removed > 0, "{out:?}");
        let seen = read_all(&log).await;
        check(&seen, &model, clean_below, true);
        log.close().await.expect("close");
    });
}

#[test]
fn min_compaction_lag_and_the_policy_are_respected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            retention_ms: Some(1),
            ..compact_config()
        };
        let log = PartitionLog::open(&path, config.clone())
            .await
            .expect("open");
        let mut model = Model::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        fill(&log, &mut model, &mut rng, 200, 10).await;
        assert!(!log.compaction_due(), "delete policy never compacts");
        assert_eq!(log.compact().await.expect("pass").segments_rewritten, 0);

        // compact alone: retention deletes nothing, whatever retention.ms.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..config.clone()
        })
        .expect("config");
        let segments = log.segment_count();
        assert_eq!(
            log.enforce_retention()
                .await
                .expect("retention")
                .segments_deleted,
            0
        );
        assert_eq!(log.segment_count(), segments);

        // A lag longer than the records' age keeps every segment dirty.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            min_compaction_lag_ms: u64::MAX / 4,
            ..config.clone()
        })
        .expect("config");
        assert!(!log.compaction_due());
        assert_eq!(log.compact().await.expect("pass").segments_considered, 0);

        // compact,delete: both.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::CompactDelete,
            ..config.clone()
        })
        .expect("config");
        assert!(log.compact().await.expect("pass").segments_rewritten > 0);
        assert!(
            log.enforce_retention()
                .await
                .expect("retention")
                .segments_deleted
                > 0
        );
        log.close().await.expect("close");
    });
}

#[test]
fn a_compacted_topic_refuses_records_without_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, compact_config())
            .await
            .expect("open");
        for codec in CODECS {
            let b = keyed_batch(
                &[
                    KeyedRecord {
                        key: Some(b"k".to_vec()),
                        value: Some(b"v".to_vec()),
                    },
                    KeyedRecord {
                        key: None,
                        value: Some(b"v".to_vec()),
                    },
                ],
                1,
                codec,
                None,
            );
            match log.append(&b).await {
                Err(StorageError::InvalidBatch(e)) => assert_eq!(e.kind(), BatchErrorKind::Invalid),
                other => panic!("null key accepted with {codec:?}: {other:?}"),
            }
        }
        assert_eq!(log.log_end_offset(), 0);
        log.close().await.expect("close");
    });
}

#[test]
fn idempotent_producer_state_survives_compaction_and_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = compact_config();
        let log = PartitionLog::open(&path, config.clone())
            .await
            .expect("open");
        let pid = 42;
        // Recent timestamps: recovery forgets producers idle for a day.
        let now = now_ms();
        let rec = |k: &str, v: &str| KeyedRecord {
            key: Some(k.as_bytes().to_vec()),
            value: Some(v.as_bytes().to_vec()),
        };
        let mut seq = 0;
        for i in 0..20 {
            let recs = vec![rec("p", &format!("v{i}")), rec("p", "again")];
            let b = keyed_batch(&recs, now, Compression::Lz4, Some((pid, 0, seq)));
            log.append(&b).await.expect("idempotent append");
            seq += 2;
        }
        // Another writer supersedes every key of the producer's batches and
        // fills enough segments that the producer's last batch is sealed.
        for i in 0..400 {
            let b = keyed_batch(
                &[rec("p", &format!("w{i}")), rec(&format!("f{i}"), "x")],
                now,
                Compression::None,
                None,
            );
            log.append(&b).await.expect("append");
        }
        let out = log.compact().await.expect("compact");
        assert!(out.records_removed >= 40, "{out:?}");
        let last_seq = log
            .producers()
            .iter()
            .find(|p| p.producer_id == pid)
            .map(|p| p.last_seq());
        assert_eq!(last_seq, Some(seq - 1));
        log.close().await.expect("close");

        // Without snapshots the state is replayed from the compacted log:
        // the producer's emptied last batch keeps its sequence.
        for name in std::fs::read_dir(&path).expect("dir").flatten() {
            if name.path().extension().is_some_and(|e| e == "snapshot") {
                std::fs::remove_file(name.path()).expect("remove snapshot");
            }
        }
        let log = PartitionLog::open(&path, config).await.expect("reopen");
        let last_seq = log
            .producers()
            .iter()
            .find(|p| p.producer_id == pid)
            .map(|p| p.last_seq());
        assert_eq!(last_seq, Some(seq - 1), "producer sequence after replay");
        let next = keyed_batch(
            &[rec("p", "next")],
            now,
            Compression::None,
            Some((pid, 0, seq)),
        );
        let info = log.append(&next).await.expect("next in sequence");
        assert!(!info.duplicate);
        log.close().await.expect("close");
    });
}

/// Builds the same log in `path` each time; returns its model.
async fn deterministic_log(
    path: &Path,
    faults: Option<std::rc::Rc<Faults>>,
) -> (PartitionLog, Model) {
    let log = PartitionLog::open_with_faults(path, compact_config(), faults)
        .await
        .expect("open");
    let mut model = Model::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    fill(&log, &mut model, &mut rng, 150, 40).await;
    (log, model)
}

#[test]
fn a_pass_stopped_at_any_step_of_its_swap_recovers() {
    let mut step = 0;
    loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let finished = run(move || async move {
            let faults = Faults::new();
            let (log, model) = deterministic_log(&path, Some(faults.clone())).await;
            faults.set_cleaner_stop_at(Some(step));
            let clean_below = active_base(&log);
            let stopped = log.compact().await.is_err();
            // The process "dies": the log is dropped without closing.
            drop(log);
            let log = PartitionLog::open(&path, compact_config())
                .await
                .expect("reopen");
            for entry in std::fs::read_dir(&path).expect("dir").flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                assert!(
                    !name.ends_with(".cleaned") && !name.ends_with(".swap"),
                    "recovery left {name}"
                );
            }
            let seen = read_all(&log).await;
            // Segments the pass did not reach are not clean: check only
            // what holds for any mix of old and new segments.
            check(&seen, &model, 0, false);
            check_reads_everywhere(&log, &seen).await;
            log.compact().await.expect("a full pass after recovery");
            let seen = read_all(&log).await;
            check(&seen, &model, clean_below, false);
            log.close().await.expect("close");
            !stopped
        });
        if finished {
            assert!(step > 6, "the stop points were reached");
            break;
        }
        step += 1;
    }
}

#[test]
fn close_during_a_pass_waits_for_one_segment_and_the_log_reopens_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (log, model) = deterministic_log(&path, None).await;
        let pass = {
            let log = log.clone();
            glommio::spawn_local(async move { log.compact().await })
        };
        // Let the pass start, then close under it.
        glommio::yield_if_needed().await;
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        log.close().await.expect("close");
        let out = pass.await;
        assert!(
            out.is_ok() || matches!(out, Err(StorageError::Closed)),
            "{out:?}"
        );
        let log = PartitionLog::open(&path, compact_config())
            .await
            .expect("reopen");
        let seen = read_all(&log).await;
        check(&seen, &model, 0, false);
        log.close().await.expect("close");
    });
}

//! Retention, DeleteRecords, truncation, group commit and many logs on one
//! shard, plus a model-based property test of the whole log API.

mod common;

use common::{read_all, run, small_segments, tagged_batch, unstamped};
use proptest::prelude::*;
use storage::{FsyncPolicy, LogConfig, PartitionLog, StorageError};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn retention_by_time_deletes_old_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let day = 24 * 3600 * 1000;
        let config = LogConfig {
            retention_ms: Some(day as u64),
            ..small_segments()
        };
        let log = PartitionLog::open(&path, config.clone())
            .await
            .expect("open");
        let old = now_ms() - 2 * day;
        for i in 0..60u64 {
            log.append(&tagged_batch(i, 1, 1_000, old))
                .await
                .expect("append");
        }
        let fresh_from = log.log_end_offset();
        for i in 60..90u64 {
            log.append(&tagged_batch(i, 1, 1_000, now_ms()))
                .await
                .expect("append");
        }
        let segments = log.segment_count();
        let out = log.enforce_retention().await.expect("retention");
        assert!(out.segments_deleted > 0);
        assert_eq!(log.segment_count(), segments - out.segments_deleted);
        assert!(out.log_start_offset <= fresh_from, "no fresh data deleted");
        assert!(out.log_start_offset > 0);
        assert!(matches!(
            log.read(0, 100).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let first = read_all(&log).await[0].0;
        assert_eq!(first, out.log_start_offset);
        log.close().await.expect("close");
        let log = PartitionLog::open(&path, config).await.expect("reopen");
        assert_eq!(
            log.log_start_offset(),
            out.log_start_offset,
            "log start survives restarts"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn retention_by_bytes_keeps_the_newest_data_within_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            retention_bytes: Some(40 << 10),
            ..small_segments()
        };
        let log = PartitionLog::open(&path, config).await.expect("open");
        for i in 0..200u64 {
            log.append(&tagged_batch(i, 1, 1_000, now_ms()))
                .await
                .expect("append");
        }
        let end = log.log_end_offset();
        log.enforce_retention().await.expect("retention");
        assert!(log.size_bytes() >= 40 << 10, "never below the limit");
        assert!(
            log.size_bytes() < (40 << 10) + (16 << 10) + 2_000,
            "within one segment of it"
        );
        assert_eq!(log.log_end_offset(), end);
        log.close().await.expect("close");
    });
}

#[test]
fn delete_records_before_moves_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        for i in 0..100u64 {
            log.append(&tagged_batch(i, 1, 800, 1))
                .await
                .expect("append");
        }
        let segments = log.segment_count();
        assert_eq!(log.delete_records_before(60).await.expect("delete"), 60);
        assert!(
            log.segment_count() < segments,
            "whole segments below the start are removed"
        );
        assert!(matches!(
            log.read(59, 10).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log).await[0].0, 60);
        assert!(
            log.delete_records_before(101).await.is_err(),
            "not past the end"
        );
        log.close().await.expect("close");
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("reopen");
        assert_eq!(log.log_start_offset(), 60);
        log.close().await.expect("close");
    });
}

#[test]
fn truncate_to_drops_the_tail_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        for i in 0..100u64 {
            log.append(&tagged_batch(i, 2, 600, i as i64))
                .await
                .expect("append");
        }
        let segments = log.segment_count();
        // Offset 101 is inside the batch 100..=101, which goes whole.
        assert_eq!(log.truncate_to(101).await.expect("truncate"), 100);
        assert_eq!(log.log_end_offset(), 100);
        // Back into an earlier segment: later segments disappear.
        assert_eq!(log.truncate_to(40).await.expect("truncate"), 40);
        assert!(log.segment_count() < segments);
        let max = log.max_timestamp().await.expect("max").expect("some");
        assert_eq!(max.timestamp, 20, "max timestamp follows the truncation");
        let info = log
            .append(&tagged_batch(500, 1, 10, 7))
            .await
            .expect("append");
        assert_eq!(info.base_offset, 40);
        let all = read_all(&log).await;
        assert_eq!(all.len(), 21);
        log.close().await.expect("close");
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("reopen");
        let again = read_all(&log).await;
        assert_eq!(all, again);
        log.close().await.expect("close");
    });
}

#[test]
fn group_commit_shares_fdatasyncs_between_concurrent_appenders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&path, config).await.expect("open");
        let mut tasks = Vec::new();
        for lane in 0..64u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for n in 0..10u64 {
                    log.append(&tagged_batch(lane * 100 + n, 1, 100, 1))
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let stats = log.stats();
        assert_eq!(stats.appends, 640);
        assert_eq!(log.synced_end_offset(), 640);
        assert!(
            stats.syncs * 4 < stats.appends,
            "64 appenders shared fdatasyncs: {stats:?}"
        );
        log.close().await.expect("close");
    });
}

#[test]
fn many_logs_on_one_shard_hold_no_idle_descriptors() {
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").expect("fds").count()
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            tail_cache_bytes: 4 << 10,
            ..small_segments()
        };
        let mut logs = Vec::new();
        for p in 0..300 {
            let log = PartitionLog::open(path.join(format!("t-{p}")), config.clone())
                .await
                .expect("open");
            for i in 0..30u64 {
                log.append(&tagged_batch(i, 1, 700, 1))
                    .await
                    .expect("append");
            }
            logs.push(log);
        }
        for log in &logs {
            log.close().await.expect("close");
        }
        let before = open_fds();
        let mut reopened = Vec::new();
        for p in 0..300 {
            reopened.push(
                PartitionLog::open(path.join(format!("t-{p}")), config.clone())
                    .await
                    .expect("reopen"),
            );
        }
        let after = open_fds();
        assert!(
            after < before + 10,
            "opened logs hold no descriptors until used: {before} -> {after}"
        );
        for log in &reopened {
            assert_eq!(log.log_end_offset(), 30);
            assert!(log.segment_count() > 1);
            log.read(0, 100).await.expect("read sealed");
        }
        let reading = open_fds();
        assert!(
            reading <= after + 300 + 10,
            "at most one sealed handle per log: {after} -> {reading}"
        );
        for log in &reopened {
            log.close().await.expect("close");
        }
    });
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Read { at: f64, max_bytes: usize },
    Truncate { at: f64 },
    DeleteBefore { at: f64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..3_000).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        3 => (0.0f64..1.0, 1usize..20_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (0.0f64..1.0).prop_map(|at| Op::Truncate { at }),
        1 => (0.0f64..1.0).prop_map(|at| Op::DeleteBefore { at }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The log behaves like a list of batches with a moving start: what is
    /// read is exactly what the model holds.
    #[test]
    fn the_log_matches_a_list_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let config = LogConfig { segment_bytes: 8 << 10, index_interval_bytes: 512, tail_cache_bytes: 4 << 10, retention_ms: None, ..LogConfig::default() };
            let mut log = PartitionLog::open(&path, config.clone()).await.expect("open");
            // Model: (base offset, next offset, bytes) and the start offset.
            let mut model: Vec<(i64, i64, bytes::Bytes)> = Vec::new();
            let mut start = 0i64;
            let mut tag = 0u64;
            for op in ops {
                let end = model.last().map(|b| b.1).unwrap_or(start);
                match op {
                    Op::Append { records, value_len } => {
                        tag += 1;
                        let b = tagged_batch(tag, records, value_len, tag as i64);
                        let info = log.append(&b).await.expect("append");
                        assert_eq!(info.base_offset, end);
                        model.push((info.base_offset, info.last_offset + 1, b));
                    }
                    Op::Read { at, max_bytes } => {
                        let offset = start + ((end - start) as f64 * at) as i64;
                        let got = log.read(offset, max_bytes).await.expect("read");
                        let bytes: Vec<u8> = got.chunks.concat();
                        let first = model.iter().position(|b| b.1 > offset);
                        match first {
                            None => assert!(bytes.is_empty()),
                            Some(i) => {
                                let mut at = 0;
                                let mut k = i;
                                while at < bytes.len() {
                                    let size = storage::batch::peek_batch_size(&bytes[at..]).expect("size");
                                    assert_eq!(unstamped(&bytes::Bytes::copy_from_slice(&bytes[at..at + size])), unstamped(&model[k].2));
                                    at += size;
                                    k += 1;
                                }
                                assert!(k > i, "at least one batch");
                                assert!(k == i + 1 || bytes.len() <= max_bytes, "bounded");
                            }
                        }
                    }
                    Op::Truncate { at } => {
                        let offset = start + ((end - start) as f64 * at) as i64;
                        let new_end = log.truncate_to(offset).await.expect("truncate");
                        model.retain(|b| b.1 <= offset);
                        let want = model.last().map(|b| b.1).unwrap_or(start).max(start);
                        assert_eq!(new_end, want);
                        if model.is_empty() { start = new_end; }
                    }
                    Op::DeleteBefore { at } => {
                        let offset = start + ((end - start) as f64 * at) as i64;
                        start = log.delete_records_before(offset).await.expect("delete");
                        assert_eq!(start, offset.max(start));
                        model.retain(|b| b.1 > start);
                    }
                    Op::Reopen => {
                        log.close().await.expect("close");
                        log = PartitionLog::open(&path, config.clone()).await.expect("reopen");
                    }
                }
                let end = model.last().map(|b| b.1).unwrap_or(start);
                assert_eq!(log.log_end_offset(), end);
                assert_eq!(log.log_start_offset(), start);
            }
            log.close().await.expect("close");
        });
    }
}

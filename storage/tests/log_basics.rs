//! Append, read, reopen, segment rolls and offset lookups on a real
//! directory through glommio's direct I/O.

mod common;

use common::{read_all, run, small_segments, tagged_batch, unstamped};
use storage::{FsyncPolicy, LogConfig, PartitionLog, StorageError};

#[test]
fn appends_are_dense_and_read_back_identically_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        let mut sent = Vec::new();
        let mut next = 0;
        for i in 0..200u64 {
            let b = tagged_batch(
                i,
                1 + (i as usize % 5),
                10 + (i as usize * 37) % 700,
                1_000 + i as i64,
            );
            let info = log.append(&b).await.expect("append");
            assert_eq!(info.base_offset, next, "offsets are dense");
            next = info.last_offset + 1;
            sent.push((info.base_offset, b));
        }
        assert_eq!(log.log_end_offset(), next);
        assert!(log.segment_count() > 3, "small segments roll");
        let got = read_all(&log).await;
        assert_eq!(got.len(), sent.len());
        for ((o1, b1), (o2, b2)) in sent.iter().zip(&got) {
            assert_eq!(o1, o2);
            assert_eq!(unstamped(b1), unstamped(b2));
        }
        log.close().await.expect("close");

        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("reopen");
        assert_eq!(log.log_end_offset(), next);
        let again = read_all(&log).await;
        assert_eq!(again.len(), sent.len());
        for ((_, b1), (_, b2)) in got.iter().zip(&again) {
            assert_eq!(b1, b2);
        }
        // Appends continue densely after a reopen.
        let info = log
            .append(&tagged_batch(999, 2, 5, 5_000))
            .await
            .expect("append");
        assert_eq!(info.base_offset, next);
        log.close().await.expect("close");
    });
}

#[test]
fn reads_respect_bounds_and_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        for i in 0..50u64 {
            log.append(&tagged_batch(i, 2, 200, 10))
                .await
                .expect("append");
        }
        // From the middle of a batch: the whole batch comes back.
        let got = log.read(41, 1).await.expect("read");
        let first = got.chunks.first().expect("one batch");
        let h = storage::batch::validate(
            &first[..storage::batch::peek_batch_size(first).expect("size")],
        )
        .expect("valid");
        assert_eq!(h.base_offset, 40);
        assert_eq!(got.bytes_len(), h.size, "max_bytes=1 still gives one batch");
        // Past the end and before the start.
        assert!(log.read(100, 1024).await.expect("at end").chunks.is_empty());
        assert!(matches!(
            log.read(101, 1024).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.read(-1, 1024).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // A bounded read returns whole batches within the bound.
        let got = log.read(0, 2_000).await.expect("read");
        assert!(got.bytes_len() <= 2_000 && got.bytes_len() > 0);
        log.close().await.expect("close");
    });
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            max_batch_bytes: 2_000,
            ..small_segments()
        };
        let log = PartitionLog::open(&path, config).await.expect("open");
        log.append(&tagged_batch(1, 1, 10, 1))
            .await
            .expect("append");
        let mut bad = tagged_batch(2, 1, 10, 1).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let err = log.append(&bad).await.expect_err("corrupt");
        assert!(matches!(err, StorageError::InvalidBatch(_)), "{err}");
        let big = tagged_batch(3, 1, 3_000, 1);
        let err = log.append(&big).await.expect_err("too large");
        match err {
            StorageError::InvalidBatch(e) => {
                assert_eq!(e.kind(), storage::batch::BatchErrorKind::TooLarge)
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(log.log_end_offset(), 1);
        assert_eq!(read_all(&log).await.len(), 1);
        log.close().await.expect("close");
    });
}

#[test]
fn timestamp_and_offset_lookups_follow_list_offsets_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        // Batch i holds 3 records stamped 1000+10i, +1, +2; batch 30 goes back in time.
        for i in 0..60i64 {
            let ts = if i == 30 { 50 } else { 1_000 + 10 * i };
            log.append(&tagged_batch(i as u64, 3, 300, ts))
                .await
                .expect("append");
        }
        assert!(log.segment_count() > 2);
        let hit = log
            .offset_for_timestamp(1_000 + 10 * 45 + 1)
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(hit.offset, 45 * 3 + 1);
        assert_eq!(hit.timestamp, 1_000 + 10 * 45 + 1);
        let first = log
            .offset_for_timestamp(0)
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(first.offset, 0);
        assert!(log
            .offset_for_timestamp(100_000)
            .await
            .expect("lookup")
            .is_none());
        let max = log.max_timestamp().await.expect("max").expect("some");
        assert_eq!(max.timestamp, 1_000 + 10 * 59 + 2);
        assert_eq!(max.offset, 59 * 3 + 2);
        log.close().await.expect("close");
    });
}

#[test]
fn every_fsync_policy_appends_and_survives_reopen() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval {
            interval_ms: 5,
            interval_bytes: 8 << 10,
        },
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let config = LogConfig {
                fsync: policy,
                ..small_segments()
            };
            let log = PartitionLog::open(&path, config.clone())
                .await
                .expect("open");
            for i in 0..40u64 {
                log.append(&tagged_batch(i, 2, 500, 1))
                    .await
                    .expect("append");
            }
            if policy == FsyncPolicy::Always {
                assert_eq!(log.synced_end_offset(), 80, "always acks only synced data");
            }
            log.close().await.expect("close");
            let log = PartitionLog::open(&path, config).await.expect("reopen");
            assert_eq!(read_all(&log).await.len(), 40);
            log.close().await.expect("close");
        });
    }
}

#[test]
fn segments_roll_by_age_and_interval_syncs_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            segment_ms: 30,
            fsync: FsyncPolicy::Interval {
                interval_ms: 20,
                interval_bytes: 1 << 30,
            },
            ..small_segments()
        };
        let log = PartitionLog::open(&path, config).await.expect("open");
        log.append(&tagged_batch(1, 1, 10, 1))
            .await
            .expect("append");
        assert_eq!(log.segment_count(), 1);
        assert_eq!(
            log.synced_end_offset(),
            0,
            "interval policy acks before syncing"
        );
        // No further append comes: only the interval timer can sync.
        let waited = std::time::Instant::now();
        while log.synced_end_offset() < 1 && waited.elapsed() < std::time::Duration::from_secs(10) {
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            log.synced_end_offset(),
            1,
            "the interval timer synced the write"
        );
        glommio::timer::sleep(std::time::Duration::from_millis(40)).await;
        log.append(&tagged_batch(2, 1, 10, 1))
            .await
            .expect("append");
        assert_eq!(
            log.segment_count(),
            2,
            "an old segment rolls on the next append"
        );
        log.close().await.expect("close");
    });
}

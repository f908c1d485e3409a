//! Idempotent producers through the log: retries answered with their
//! original offsets, gaps and stale epochs refused, and the state rebuilt
//! after a restart from the snapshot taken at a segment roll plus a replay.

mod common;

use bytes::{Bytes, BytesMut};
use common::{read_all, run, small_segments};
use storage::{PartitionLog, SequenceError, StorageError};

/// A batch from producer `pid`/`epoch` whose first record has sequence `seq`.
fn idempotent(pid: i64, epoch: i16, seq: i32, records: usize) -> Bytes {
    // Current timestamps: producers expire by their batches' timestamps.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let plain = storage::testing::batch_with_values(now, (0..records).map(|i| vec![i as u8; 300]));
    let mut b = BytesMut::from(&plain[..]);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[test]
fn retries_are_deduplicated_and_gaps_refused_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        let mut seq = 0;
        let mut first = None;
        // Enough batches to roll several segments (and snapshot at each).
        for _ in 0..120 {
            let info = log
                .append(&idempotent(42, 0, seq, 2))
                .await
                .expect("append");
            assert!(!info.duplicate);
            first.get_or_insert(info);
            seq += 2;
        }
        assert!(log.segment_count() > 3);
        let end = log.log_end_offset();
        // The last batch again: same offsets, nothing appended.
        let again = log
            .append(&idempotent(42, 0, seq - 2, 2))
            .await
            .expect("retry");
        assert!(again.duplicate);
        assert_eq!((again.base_offset, again.last_offset), (end - 2, end - 1));
        assert_eq!(log.log_end_offset(), end);
        // A gap and a stale epoch.
        let gap = log
            .append(&idempotent(42, 0, seq + 5, 1))
            .await
            .expect_err("gap");
        assert!(
            matches!(
                gap,
                StorageError::Sequence(SequenceError::OutOfOrderSequence { .. })
            ),
            "{gap}"
        );
        log.close().await.expect("close");

        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("reopen");
        let again = log
            .append(&idempotent(42, 0, seq - 2, 2))
            .await
            .expect("retry after restart");
        assert!(again.duplicate, "producer state survived the restart");
        assert_eq!(again.base_offset, end - 2);
        let next = log
            .append(&idempotent(42, 0, seq, 1))
            .await
            .expect("next in sequence");
        assert_eq!(next.base_offset, end);
        let bumped = log
            .append(&idempotent(42, 1, 0, 1))
            .await
            .expect("new epoch starts at 0");
        assert_eq!(bumped.base_offset, end + 1);
        let fenced = log
            .append(&idempotent(42, 0, seq + 1, 1))
            .await
            .expect_err("old epoch");
        assert!(
            matches!(
                fenced,
                StorageError::Sequence(SequenceError::InvalidProducerEpoch { .. })
            ),
            "{fenced}"
        );
        assert_eq!(log.producers().len(), 1);
        assert_eq!(log.producers()[0].epoch, 1);
        log.close().await.expect("close");
    });
}

#[test]
fn state_is_rebuilt_without_snapshots_and_follows_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("open");
        for i in 0..60 {
            log.append(&idempotent(7, 3, i, 1)).await.expect("append");
        }
        log.close().await.expect("close");
        for e in std::fs::read_dir(&path).expect("list") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "snapshot") {
                std::fs::remove_file(p).expect("rm snapshot");
            }
        }
        let log = PartitionLog::open(&path, small_segments())
            .await
            .expect("reopen");
        assert!(
            log.append(&idempotent(7, 3, 59, 1))
                .await
                .expect("retry")
                .duplicate,
            "replayed from the log"
        );
        // Truncation forgets the truncated batches: sequence 40 may come again.
        log.truncate_to(40).await.expect("truncate");
        let info = log
            .append(&idempotent(7, 3, 40, 1))
            .await
            .expect("re-append after truncation");
        assert!(!info.duplicate);
        assert_eq!(info.base_offset, 40);
        assert_eq!(read_all(&log).await.len(), 41);
        log.close().await.expect("close");
    });
}

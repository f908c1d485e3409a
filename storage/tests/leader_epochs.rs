//! Leader epochs in the log: batches appended as leader carry their epoch
//! on disk, the log knows where each epoch starts, and that survives a
//! reopen (with segments rolled, so that some epochs start in segments
//! recovery trusts without rescanning), a truncation, a lost checkpoint
//! file (the active segment's epochs are found again by its scan) and a
//! truncation that recovery makes at a torn tail.

mod common;

use common::{run, small_segments, tagged_batch};
use storage::batch;
use storage::PartitionLog;

/// Appends `n` batches of 10 records as leader in `epoch`; returns their
/// base offsets.
async fn append_epoch(log: &PartitionLog, epoch: i32, n: u64) -> Vec<i64> {
    let mut bases = Vec::new();
    for i in 0..n {
        let info = log
            .append_as_leader(&tagged_batch(i, 10, 200, 1_000), epoch)
            .await
            .expect("append");
        bases.push(info.base_offset);
    }
    bases
}

/// The epoch stamped on every batch read from `from`.
async fn stamped_epochs(log: &PartitionLog, from: i64) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = log.read(offset, 1 << 20).await.expect("read");
        if read.chunks.is_empty() {
            return out;
        }
        for chunk in &read.chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                let size = batch::peek_batch_size(&chunk[pos..]).expect("a batch length");
                let h = batch::validate(&chunk[pos..pos + size]).expect("a valid batch");
                out.push((h.base_offset, h.partition_leader_epoch));
                offset = h.next_offset();
                pos += h.size;
            }
        }
    }
}

#[test]
fn epochs_are_stamped_tracked_and_survive_reopening() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("open");
        // Client batches appended without an epoch (single-node mode) are
        // not epochs of the log.
        log.append(&tagged_batch(0, 10, 200, 1_000))
            .await
            .expect("append");
        assert!(log.leader_epochs().is_empty());
        let e0 = append_epoch(&log, 0, 20).await;
        let e3 = append_epoch(&log, 3, 20).await;
        let e4 = append_epoch(&log, 4, 5).await;
        let want = vec![(0, e0[0]), (3, e3[0]), (4, e4[0])];
        assert_eq!(log.leader_epochs(), want);
        assert!(log.segment_count() > 3, "epochs span rolled segments");
        let stamped = stamped_epochs(&log, 0).await;
        assert_eq!(stamped[0].1, -1);
        assert!(stamped
            .iter()
            .filter(|(o, _)| *o >= e3[0] && *o < e4[0])
            .all(|(_, e)| *e == 3));
        log.close().await.expect("close");

        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("reopen");
        assert_eq!(log.leader_epochs(), want);
        assert_eq!(stamped_epochs(&log, 0).await, stamped);

        // Truncating into epoch 3 forgets epoch 4, on disk too.
        let end = log.truncate_to(e3[5]).await.expect("truncate");
        assert_eq!(end, e3[5]);
        assert_eq!(log.leader_epochs(), vec![(0, e0[0]), (3, e3[0])]);
        let e5 = append_epoch(&log, 5, 2).await;
        log.close().await.expect("close");
        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("reopen");
        assert_eq!(
            log.leader_epochs(),
            vec![(0, e0[0]), (3, e3[0]), (5, e5[0])]
        );
        log.close().await.expect("close");
    });
}

#[test]
fn the_active_segment_gives_its_epochs_back_without_the_checkpoint() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = small_segments();
        config.segment_bytes = 1 << 20; // one segment: every batch is rescanned
        let log = PartitionLog::open(dir.path(), config.clone())
            .await
            .expect("open");
        let e1 = append_epoch(&log, 1, 3).await;
        let e2 = append_epoch(&log, 2, 3).await;
        log.close().await.expect("close");
        std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).expect("remove");
        let log = PartitionLog::open(dir.path(), config.clone())
            .await
            .expect("reopen");
        assert_eq!(log.leader_epochs(), vec![(1, e1[0]), (2, e2[0])]);
        log.close().await.expect("close");
        // A damaged checkpoint is the same as none.
        std::fs::write(
            dir.path().join("leader-epoch-checkpoint"),
            b"version=1\ncount=9\n",
        )
        .expect("write");
        let log = PartitionLog::open(dir.path(), config)
            .await
            .expect("reopen");
        assert_eq!(log.leader_epochs(), vec![(1, e1[0]), (2, e2[0])]);
        log.close().await.expect("close");
    });
}

#[test]
fn a_torn_tail_takes_its_epochs_with_it() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = small_segments();
        config.segment_bytes = 1 << 20;
        let log = PartitionLog::open(dir.path(), config.clone())
            .await
            .expect("open");
        let e1 = append_epoch(&log, 1, 3).await;
        let e2 = append_epoch(&log, 2, 1).await;
        log.close().await.expect("close");
        // The checkpoint names epoch 2; then the batch that started it is
        // torn (as a crash mid-write would leave it).
        let seg = dir.path().join(format!("{:020}.log", 0));
        let len = std::fs::metadata(&seg).expect("segment").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open segment");
        let keep = {
            let log = PartitionLog::open(dir.path(), config.clone())
                .await
                .expect("reopen");
            let read = log.read(e2[0], 1 << 20).await.expect("read");
            log.close().await.expect("close");
            len - read.chunks.iter().map(|c| c.len() as u64).sum::<u64>() + 20
        };
        f.set_len(keep).expect("tear");
        drop(f);
        let log = PartitionLog::open(dir.path(), config)
            .await
            .expect("recover");
        assert_eq!(log.log_end_offset(), e2[0]);
        assert_eq!(log.leader_epochs(), vec![(1, e1[0])]);
        log.close().await.expect("close");
    });
}

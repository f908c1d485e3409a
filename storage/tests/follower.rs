//! Follower appends: batches replicated from a leader keep the offsets and
//! leader epochs the leader gave them, byte for byte; a batch past the log
//! end (the leader's log was compacted there) starts a new segment and the
//! offsets between read as a gap, before and after reopening; a batch below
//! the log end is refused and changes nothing.

mod common;

use bytes::{Bytes, BytesMut};
use common::{run, small_segments, tagged_batch};
use storage::{batch, PartitionLog};

/// Every batch of `log` from `from`, as stored.
async fn batches(log: &PartitionLog, from: i64) -> Vec<Bytes> {
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
                let b = chunk.slice(pos..pos + size);
                offset = batch::validate(&b).expect("valid").next_offset();
                out.push(b);
                pos += size;
            }
        }
    }
}

fn at(b: &Bytes, base: i64) -> Bytes {
    let mut m = BytesMut::from(&b[..]);
    batch::stamp_base_offset(&mut m, base);
    m.freeze()
}

#[test]
fn replicated_batches_keep_their_offsets_and_epochs() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let leader = PartitionLog::open(dir.path().join("l"), small_segments())
            .await
            .expect("open");
        for (i, epoch) in [(0u64, 1), (1, 1), (2, 4), (3, 4), (4, 6)] {
            leader
                .append_as_leader(&tagged_batch(i, 10, 300, 1_000 + i as i64), epoch)
                .await
                .expect("append");
        }
        let sent = batches(&leader, 0).await;
        let follower = PartitionLog::open(dir.path().join("f"), small_segments())
            .await
            .expect("open");
        for b in &sent {
            follower.append_as_follower(b).await.expect("replicate");
        }
        assert_eq!(batches(&follower, 0).await, sent);
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        // A batch below the end (a stale or repeated fetch) is refused.
        let err = follower
            .append_as_follower(&sent[2])
            .await
            .expect_err("below the end");
        assert!(err.to_string().contains("below the log end"), "{err}");
        assert_eq!(follower.log_end_offset(), 50);
        follower.close().await.expect("close");
        let follower = PartitionLog::open(dir.path().join("f"), small_segments())
            .await
            .expect("reopen");
        assert_eq!(batches(&follower, 0).await, sent);
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
    });
}

#[test]
fn a_gap_from_a_compacted_leader_reads_as_a_gap() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = |i: u64| tagged_batch(i, 10, 300, 1_000);
        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("open");
        let first = at(&b(0), 0);
        let after_gap = at(&b(1), 110);
        let next = at(&b(2), 120);
        for x in [&first, &after_gap, &next] {
            log.append_as_follower(x).await.expect("replicate");
        }
        assert_eq!(log.log_end_offset(), 130);
        let want = vec![first.clone(), after_gap.clone(), next.clone()];
        assert_eq!(batches(&log, 0).await, want);
        // A read inside the gap goes on to the next batch.
        assert_eq!(batches(&log, 50).await, want[1..].to_vec());
        // The leader's next batch continues at 130 in the new segment.
        log.append_as_follower(&at(&b(3), 130))
            .await
            .expect("replicate");
        log.close().await.expect("close");
        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("reopen");
        assert_eq!(log.log_end_offset(), 140);
        assert_eq!(batches(&log, 0).await.len(), 4);
        assert_eq!(batches(&log, 50).await[0], after_gap);
        log.close().await.expect("close");
    });
}

#[test]
fn an_empty_follower_starts_where_the_leaders_log_does() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("open");
        let b = at(&tagged_batch(7, 10, 300, 1_000), 500);
        log.append_as_follower(&b).await.expect("replicate");
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 510));
        assert_eq!(batches(&log, 500).await, vec![b.clone()]);
        log.close().await.expect("close");
        let log = PartitionLog::open(dir.path(), small_segments())
            .await
            .expect("reopen");
        assert_eq!(log.log_end_offset(), 510);
        assert_eq!(batches(&log, 500).await, vec![b]);
        log.close().await.expect("close");
    });
}

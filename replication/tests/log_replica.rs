//! Replicas over real storage logs, a leader and a follower on one
//! executor exchanging the link frames' per-partition parts directly:
//! the follower catches up byte for byte with the leader's batches, offsets
//! and epochs, the high watermark follows, and after a leader change the
//! old leader's unreplicated batches are truncated at the new leader's
//! epoch boundary and replaced by the new leader's.

use glommio::LocalExecutorBuilder;
use replication::log_replica::LogReplica;
use replication::partition_state::PartitionState;
use replication::replica::ReplicaConfig;
use storage::testing::batch_bytes;
use storage::{LogConfig, PartitionLog};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test ran");
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn state(leader: u32, epoch: i32, isr: &[u32], pe: i32) -> PartitionState {
    PartitionState {
        replicas: vec![1, 2],
        leader: Some(leader),
        leader_epoch: epoch,
        isr: isr.to_vec(),
        partition_epoch: pe,
    }
}

async fn open(dir: &std::path::Path, id: u32) -> LogReplica {
    let log = PartitionLog::open(dir.join(format!("n{id}")), config())
        .await
        .expect("open log");
    LogReplica::new("t".into(), 0, id, ReplicaConfig::default(), log)
}

/// Every batch of a log, as stored.
async fn stored(r: &LogReplica) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = r.log().log_start_offset();
    loop {
        let read = r.log().read(offset, 1 << 20).await.expect("read");
        if read.chunks.is_empty() {
            return out;
        }
        for chunk in &read.chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                let size = storage::batch::peek_batch_size(&chunk[pos..]).expect("length");
                let b = &chunk[pos..pos + size];
                offset = storage::batch::validate(b).expect("valid").next_offset();
                out.push(b.to_vec());
                pos += size;
            }
        }
    }
}

/// Fetch rounds until the follower has what the leader has (bounded).
async fn catch_up(leader: &mut LogReplica, follower: &mut LogReplica, now: u64) {
    for round in 0..50 {
        let (to, req) = follower.next_fetch(4 << 10).expect("a follower fetches");
        assert_eq!(to, leader.replica().id);
        let follower_id = follower.replica().id;
        let (reply, _alter) = leader
            .serve_fetch(follower_id, &req, now + round)
            .await
            .expect("served");
        follower
            .apply_fetched(req.leader_epoch, &reply)
            .await
            .expect("applied");
        let done = follower.log_end() == leader.log_end()
            && follower.replica().high_watermark() == leader.replica().high_watermark()
            && leader.replica().high_watermark() == leader.log_end();
        if done {
            return;
        }
    }
    panic!(
        "no catch-up: follower at {} (hw {}), leader at {} (hw {})",
        follower.log_end(),
        follower.replica().high_watermark(),
        leader.log_end(),
        leader.replica().high_watermark()
    );
}

#[test]
fn a_follower_catches_up_byte_for_byte_and_truncates_on_divergence() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n1 = open(dir.path(), 1).await;
        let mut n2 = open(dir.path(), 2).await;
        let s0 = state(1, 0, &[1, 2], 0);
        n1.apply(&s0, 0);
        n2.apply(&s0, 0);
        for i in 0..5 {
            n1.append_as_leader(&batch_bytes(10, 1_000 + i, 300))
                .await
                .expect("append");
        }
        assert_eq!(
            n1.replica().high_watermark(),
            0,
            "the follower has nothing yet"
        );
        catch_up(&mut n1, &mut n2, 10).await;
        assert_eq!(n1.replica().high_watermark(), 50);
        assert_eq!(stored(&n2).await, stored(&n1).await);
        assert_eq!(n2.log().leader_epochs(), vec![(0, 0)]);
        // A follower cannot append as leader.
        assert!(n2.append_as_leader(&batch_bytes(1, 0, 10)).await.is_err());

        // Node 1 appends two batches node 2 never gets, then loses its
        // leadership: node 2 leads epoch 1 and appends its own batch.
        for i in 0..2 {
            n1.append_as_leader(&batch_bytes(10, 2_000 + i, 300))
                .await
                .expect("append");
        }
        assert_eq!(n1.log_end(), 70);
        let s1 = state(2, 1, &[2], 1);
        n2.apply(&s1, 100);
        n1.apply(&s1, 100);
        n2.append_as_leader(&batch_bytes(10, 3_000, 300))
            .await
            .expect("append as the new leader");
        assert_eq!(n2.log().leader_epochs(), vec![(0, 0), (1, 50)]);
        // Node 1 fetches from 70 with epoch 0: told epoch 0 ends at 50, it
        // truncates there and takes node 2's batch.
        catch_up(&mut n2, &mut n1, 200).await;
        assert_eq!(n1.log_end(), 60);
        assert_eq!(stored(&n1).await, stored(&n2).await);
        assert_eq!(n1.log().leader_epochs(), vec![(0, 0), (1, 50)]);
        assert_eq!(n1.replica().high_watermark(), 60);
    });
}

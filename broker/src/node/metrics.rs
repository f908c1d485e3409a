//! A shard's metrics as a scrape sees them: its counters and logs with the
//! offsets its groups committed, gathered from every shard over the mesh.

use std::rc::Rc;
use std::time::Duration;

use super::{Node, ShardRequest, ShardResponse};
use crate::metrics::{CommittedOffset, ShardSnapshot};

/// Reads this shard's counters, logs and groups; runs on the shard itself.
pub fn snapshot(node: &Node) -> ShardSnapshot {
    let committed = node
        .coordinator
        .committed_offsets()
        .into_iter()
        .map(|(group, topic, partition, offset)| CommittedOffset {
            group,
            topic,
            partition,
            offset,
        })
        .collect();
    node.metrics.snapshot(&node.shard, committed)
}

/// Gathers every shard's snapshot, from shard `shard`; `Err(i)` names a
/// shard that did not answer within `timeout`.
pub async fn gather(node: &Rc<Node>, timeout: Duration) -> Result<Vec<ShardSnapshot>, usize> {
    // Asked concurrently, so a scrape costs one mesh round trip.
    let tasks: Vec<_> = (0..node.nr_shards)
        .map(|to| {
            let node = node.clone();
            crate::rt::spawn_local(async move {
                futures_lite::future::or(
                    async {
                        match node.call(to, ShardRequest::Metrics).await {
                            Some(ShardResponse::Metrics(s)) => Some(*s),
                            _ => None,
                        }
                    },
                    async {
                        crate::rt::sleep(timeout).await;
                        None
                    },
                )
                .await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        out.push(task.await.ok_or(i)?);
    }
    Ok(out)
}

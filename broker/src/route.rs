//! Scatter and gather: a request's partitions grouped by owning shard,
//! placed on each in turn (so that a pipelined produce request is in line
//! everywhere before the next one starts), answered concurrently, and the
//! answers put back in the request's order.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use futures_util::future::join_all;
use kafka_protocol::ResponseError as Kafka;

use crate::cluster::admin::{AdminOp, AdminOutcome};
use crate::node::{Node, ShardRequest, ShardResponse};
use crate::partition::{
    FetchItem, OffsetAnswer, PartitionRead, PartitionRequest, PartitionResponse, PartitionWrite,
    ProduceItem, ProducersAnswer,
};
use crate::peers::LocalFuture;
use crate::shard::{Shard, TopicPartition};
use crate::signal::AppendSignal;

/// Splits `items` by owner shard, remembering each item's position.
fn group<T>(
    shard: &Shard,
    items: Vec<T>,
    tp: impl Fn(&T) -> &TopicPartition,
) -> Vec<(usize, Vec<usize>, Vec<T>)> {
    let mut groups: Vec<(usize, Vec<usize>, Vec<T>)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let (topic, partition) = tp(&item);
        let owner = shard.owner(topic, *partition);
        match groups.iter_mut().find(|g| g.0 == owner) {
            Some(g) => {
                g.1.push(i);
                g.2.push(item);
            }
            None => groups.push((owner, vec![i], vec![item])),
        }
    }
    groups
}

/// Sends each group to its shard concurrently and reassembles the answers;
/// a shard that cannot answer fills its places with `failed`.
async fn scatter<T, O>(
    shard: &Rc<Node>,
    items: Vec<T>,
    tp: impl Fn(&T) -> &TopicPartition,
    request: impl Fn(Vec<T>) -> PartitionRequest,
    answer: fn(PartitionResponse) -> Option<Vec<O>>,
    failed: fn() -> O,
) -> Vec<O>
where
    O: 'static,
{
    place(shard, items, tp, request, answer, failed).await.await
}

/// Places each group in line on its shard, one after the other (see
/// `Node::place_partitions`), and returns the wait for the answers, put
/// back in the request's order.
async fn place<T, O>(
    shard: &Rc<Node>,
    items: Vec<T>,
    tp: impl Fn(&T) -> &TopicPartition,
    request: impl Fn(Vec<T>) -> PartitionRequest,
    answer: fn(PartitionResponse) -> Option<Vec<O>>,
    failed: fn() -> O,
) -> LocalFuture<'static, Vec<O>>
where
    O: 'static,
{
    let total = items.len();
    let mut placed = Vec::new();
    for (owner, positions, items) in group(shard, items, tp) {
        let answers = shard.place_partitions(owner, request(items)).await;
        placed.push((positions, answers));
    }
    Box::pin(async move {
        // The common case, every partition on one shard: the answers are
        // already in request order.
        if placed.len() == 1 {
            let (_, answers) = placed.remove(0);
            return match answers.await.and_then(answer) {
                Some(answers) if answers.len() == total => answers,
                _ => (0..total).map(|_| failed()).collect(),
            };
        }
        let (positions, waits): (Vec<_>, Vec<_>) = placed.into_iter().unzip();
        let mut out: Vec<Option<O>> = (0..total).map(|_| None).collect();
        for (positions, answers) in positions.into_iter().zip(join_all(waits).await) {
            match answers.and_then(answer) {
                Some(answers) if answers.len() == positions.len() => {
                    for (pos, a) in positions.into_iter().zip(answers) {
                        out[pos] = Some(a);
                    }
                }
                _ => {
                    for pos in positions {
                        out[pos] = Some(failed());
                    }
                }
            }
        }
        out.into_iter().map(|o| o.unwrap_or_else(failed)).collect()
    })
}

/// Produce in two steps: returns once every partition's batches have their
/// place in their logs (offsets taken, in order behind earlier produce
/// requests from this shard), with the wait for the answers.
pub async fn place_produce(
    shard: &Rc<Node>,
    items: Vec<ProduceItem>,
) -> LocalFuture<'static, Vec<PartitionWrite>> {
    place(
        shard,
        items,
        |i| &i.tp,
        PartitionRequest::Produce,
        |r| match r {
            PartitionResponse::Produced(v) => Some(v),
            _ => None,
        },
        produce_refused,
    )
    .await
}

fn produce_refused() -> PartitionWrite {
    PartitionWrite {
        error_code: Kafka::NotLeaderOrFollower.code(),
        error_message: None,
        base_offset: -1,
        log_start_offset: -1,
    }
}

pub async fn produce(shard: &Rc<Node>, items: Vec<ProduceItem>) -> Vec<PartitionWrite> {
    place_produce(shard, items).await.await
}

pub async fn fetch(
    shard: &Rc<Node>,
    items: Vec<FetchItem>,
    budget_bytes: usize,
) -> Vec<PartitionRead> {
    scatter(
        shard,
        items,
        |i| &i.tp,
        |items| PartitionRequest::Fetch {
            items,
            budget_bytes,
        },
        |r| match r {
            PartitionResponse::Fetched(v) => Some(v),
            _ => None,
        },
        || PartitionRead {
            error_code: Kafka::NotLeaderOrFollower.code(),
            high_watermark: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
        },
    )
    .await
}

pub async fn list_offsets(
    shard: &Rc<Node>,
    items: Vec<(TopicPartition, i64)>,
) -> Vec<OffsetAnswer> {
    scatter(
        shard,
        items,
        |i| &i.0,
        PartitionRequest::ListOffsets,
        |r| match r {
            PartitionResponse::Offsets(v) => Some(v),
            _ => None,
        },
        || OffsetAnswer {
            error_code: Kafka::NotLeaderOrFollower.code(),
            timestamp: -1,
            offset: -1,
        },
    )
    .await
}

/// OffsetForLeaderEpoch per partition: (error code, epoch, end offset).
pub async fn epoch_ends(
    shard: &Rc<Node>,
    items: Vec<(TopicPartition, i32, i32)>,
) -> Vec<(i16, i32, i64)> {
    scatter(
        shard,
        items,
        |i| &i.0,
        PartitionRequest::EpochEnds,
        |r| match r {
            PartitionResponse::EpochEnds(v) => Some(v),
            _ => None,
        },
        || (Kafka::NotLeaderOrFollower.code(), -1, -1),
    )
    .await
}

pub async fn describe_producers(
    shard: &Rc<Node>,
    items: Vec<TopicPartition>,
) -> Vec<ProducersAnswer> {
    scatter(
        shard,
        items,
        |i| i,
        PartitionRequest::DescribeProducers,
        |r| match r {
            PartitionResponse::Producers(v) => Some(v),
            _ => None,
        },
        || ProducersAnswer {
            error_code: Kafka::NotLeaderOrFollower.code(),
            producers: Vec::new(),
        },
    )
    .await
}

pub async fn log_sizes(shard: &Rc<Node>, items: Vec<TopicPartition>) -> Vec<i64> {
    scatter(
        shard,
        items,
        |tp| tp,
        PartitionRequest::LogSizes,
        |r| match r {
            PartitionResponse::LogSizes(v) => Some(v),
            _ => None,
        },
        || -1,
    )
    .await
}

pub async fn delete_records(
    shard: &Rc<Node>,
    items: Vec<(TopicPartition, i64)>,
) -> Vec<(i16, i64)> {
    scatter(
        shard,
        items,
        |i| &i.0,
        PartitionRequest::DeleteRecords,
        |r| match r {
            PartitionResponse::RecordsDeleted(v) => Some(v),
            _ => None,
        },
        || (Kafka::NotLeaderOrFollower.code(), -1),
    )
    .await
}

/// Resolves when any of the partitions has data past its offset (on any
/// shard), or after `timeout`.
pub async fn wait_for_data(shard: &Rc<Node>, items: Vec<(TopicPartition, i64)>, timeout: Duration) {
    let done = Rc::new(AppendSignal::default());
    let first = done.next();
    for (owner, _, items) in group(shard, items, |i| &i.0) {
        let shard = shard.clone();
        let done = done.clone();
        // The first shard to report data ends the wait; the others end on
        // their own by the timeout (bounded), and nobody listens any more.
        crate::rt::spawn_local(async move {
            shard
                .call_partitions(owner, PartitionRequest::WaitForData { items, timeout })
                .await;
            done.notify();
        })
        .detach();
    }
    future::or(first, crate::rt::sleep(timeout)).await;
}

/// Runs a topic administration on shard 0, the metadata owner.
pub async fn admin(shard: &Rc<Node>, op: AdminOp) -> Option<Vec<AdminOutcome>> {
    match shard.call(0, ShardRequest::Admin(op)).await {
        Some(ShardResponse::Admin(v)) => Some(v),
        _ => None,
    }
}

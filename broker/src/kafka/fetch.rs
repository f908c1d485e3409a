//! Fetch (v4-v18): reads each partition on its owning shard and answers
//! with the stored batches as they are (zero copy, see `net::fetch`).
//! Long polling: with less than `min_bytes` ready, waits up to
//! `max_wait_ms`, woken by appends to any partition asked for. Read on
//! each topic is needed (ClusterAction for a follower's fetch), else
//! TOPIC_AUTHORIZATION_FAILED per partition.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError as Kafka;
use net::fetch::{encode_fetch_response, FetchPartitionParts, FetchResponseParts, FetchTopicParts};
use net::RequestFrame;

use super::{authz, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::node::Node;
use crate::partition::{FetchItem, PartitionRead};
use crate::route;

/// First version naming topics by id instead of name.
const TOPIC_IDS_FROM: i16 = 13;
/// Bound on how long one fetch may wait, whatever the client asks.
const MAX_WAIT_MS_MAX: i32 = 30_000;
const READ_COMMITTED: i8 = 1;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: FetchRequest,
) -> Result<Reply, HandlerError> {
    let version = frame.api_version();
    let mut response = FetchResponseParts::default();
    if request.session_id != 0 {
        // Sessions are never handed out (session id 0 in every answer), so
        // a client naming one is out of step: Kafka's answer for that.
        response.error_code = Kafka::FetchSessionIdNotFound.code();
        return encode(frame, &response);
    }
    let meta = shard.metadata();
    let by_id = version >= TOPIC_IDS_FROM;
    // A follower's fetch (replica id >= 0) needs ClusterAction; a
    // consumer's, Read on each topic.
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let follower_allowed =
        replica_id < 0 || authz::cluster(shard, &meta, frame, Operation::ClusterAction);
    // Per partition in request order: an index into `items`, or an error.
    let mut slots: Vec<Result<usize, i16>> = Vec::new();
    let mut items: Vec<FetchItem> = Vec::new();
    for t in &request.topics {
        let found = if by_id {
            meta.topic_by_id(t.topic_id)
        } else {
            meta.topic(t.topic.0.as_str())
        };
        let mut topic = FetchTopicParts {
            topic: t.topic.0.clone(),
            topic_id: t.topic_id,
            partitions: Vec::with_capacity(t.partitions.len()),
        };
        let name = match found {
            Some(f) => Some(f.name.as_str()),
            None if by_id => None,
            None => Some(t.topic.0.as_str()),
        };
        let readable = follower_allowed
            && name.is_some_and(|n| {
                replica_id >= 0
                    || authz::allowed(shard, &meta, frame, Operation::Read, ResourceType::Topic, n)
            });
        for p in &t.partitions {
            let slot = match found {
                _ if by_id && found.is_none() => Err(Kafka::UnknownTopicId.code()),
                _ if !readable => Err(Kafka::TopicAuthorizationFailed.code()),
                Some(f) if p.partition >= 0 && p.partition < f.partitions => {
                    items.push(FetchItem {
                        tp: (f.name.clone(), p.partition),
                        offset: p.fetch_offset,
                        partition_max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    });
                    Ok(items.len() - 1)
                }
                None if by_id => Err(Kafka::UnknownTopicId.code()),
                _ => Err(Kafka::UnknownTopicOrPartition.code()),
            };
            slots.push(slot);
            topic.partitions.push(FetchPartitionParts {
                partition_index: p.partition,
                ..FetchPartitionParts::default()
            });
        }
        response.topics.push(topic);
    }
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + max_wait;
    let errors_known = slots.iter().any(Result::is_err);
    let reads = loop {
        let requests = items
            .iter()
            .map(|i| FetchItem {
                tp: i.tp.clone(),
                offset: i.offset,
                partition_max_bytes: i.partition_max_bytes,
            })
            .collect();
        let mut reads = route::fetch(shard, requests, max_bytes).await;
        let total = trim_to(&mut reads, max_bytes);
        let failed = errors_known || reads.iter().any(|r| r.error_code != 0);
        let left = deadline.saturating_duration_since(Instant::now());
        if total >= min_bytes || failed || left.is_zero() || shard.is_shutting_down() {
            break reads;
        }
        // Wait for data beyond what this read saw, not beyond the fetch
        // offset: otherwise a fetch whose min_bytes the available data
        // cannot meet (or a partition_max_bytes of 0) would spin.
        let waits = items
            .iter()
            .zip(&reads)
            .map(|(i, r)| (i.tp.clone(), i.offset.max(r.high_watermark)))
            .collect();
        route::wait_for_data(shard, waits, left).await;
    };
    let read_committed = request.isolation_level == READ_COMMITTED;
    let mut reads = reads.into_iter();
    let mut slots = slots.into_iter();
    for topic in &mut response.topics {
        for part in &mut topic.partitions {
            match slots.next() {
                Some(Ok(_)) => {
                    let r = reads.next().unwrap_or_default();
                    part.error_code = r.error_code;
                    part.high_watermark = r.high_watermark;
                    // No transactions yet: everything below the high
                    // watermark is stable.
                    part.last_stable_offset = r.high_watermark;
                    part.log_start_offset = r.log_start_offset;
                    part.records = r.chunks;
                    if read_committed && r.error_code == 0 {
                        part.aborted_transactions = Some(Vec::new());
                    }
                }
                Some(Err(code)) => part.error_code = code,
                None => {}
            }
        }
    }
    encode(frame, &response)
}

/// Drops chunks past `max_bytes` (request order), keeping the first batch
/// even when it alone is larger, as Kafka does so consumers make progress.
/// Returns the bytes kept.
fn trim_to(reads: &mut [PartitionRead], max_bytes: usize) -> usize {
    let mut used = 0usize;
    for r in reads.iter_mut() {
        let mut keep = 0;
        for c in &r.chunks {
            if used == 0 || used + c.len() <= max_bytes {
                used += c.len();
                keep += 1;
            } else {
                break;
            }
        }
        r.chunks.truncate(keep);
    }
    used
}

fn encode(frame: &RequestFrame, response: &FetchResponseParts) -> Result<Reply, HandlerError> {
    let chunks = encode_fetch_response(frame.correlation_id(), frame.api_version(), response)?;
    Ok(Reply::Frame(chunks))
}

//! Produce (v3-v13): appends each partition's record batches, as sent
//! (compressed or not), on the shard owning the partition, if this node
//! leads it (else NOT_LEADER_OR_FOLLOWER, and the client refreshes its
//! metadata); acks 0 and 1 answer once the leader's log has the records
//! as its fsync policy requires, acks -1 once the in-sync replicas have
//! them too (the high watermark covers them), within the request timeout.
//! Unknown topics are auto-created when allowed. As Kafka authorizes it:
//! Write on each topic (TOPIC_AUTHORIZATION_FAILED per partition), Write
//! on the transactional id if one is given.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{authz, str_bytes, topics, HandlerError, HandlerFuture, Reply};
use crate::acl::{Operation, ResourceType};
use crate::group::coordinator::OFFSETS_TOPIC;
use crate::metadata::validate_topic_name;
use crate::node::Node;
use crate::partition::{PartitionWrite, ProduceItem};
use crate::route;

/// First version naming topics by id instead of name.
const TOPIC_IDS_FROM: i16 = 13;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: ProduceRequest,
) -> Result<Reply, HandlerError> {
    place(shard, frame, request).await.await
}

/// Produce in two steps: returns once every partition's batches have their
/// place in their logs, behind those of produce requests placed before
/// (see `connection`), with the rest of the work: the wait for the writes
/// and the response.
pub async fn place(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: ProduceRequest,
) -> HandlerFuture {
    let version = frame.api_version();
    let by_id = version >= TOPIC_IDS_FROM;
    let acks = request.acks;
    let internal_allowed = frame.header.client_id.as_deref() == Some("__admin_client");
    let meta = shard.metadata();
    // As Kafka: a transactional producer needs Write on its id, or the
    // whole request is refused.
    let transaction_refused = request.transactional_id.as_ref().is_some_and(|id| {
        !authz::allowed(
            shard,
            &meta,
            frame,
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        )
    });
    // Write on each topic, by name once resolved.
    let writable: Vec<bool> = request
        .topic_data
        .iter()
        .map(|t| {
            let name = if by_id {
                meta.topic_by_id(t.topic_id).map(|f| f.name.as_str())
            } else {
                Some(t.name.0.as_str())
            };
            name.is_some_and(|n| {
                authz::allowed(
                    shard,
                    &meta,
                    frame,
                    Operation::Write,
                    ResourceType::Topic,
                    n,
                )
            })
        })
        .collect();
    if !by_id && !transaction_refused {
        let names: Vec<String> = request
            .topic_data
            .iter()
            .zip(&writable)
            .filter(|(t, &w)| w && authz::may_create_topic(shard, &meta, frame, t.name.0.as_str()))
            .map(|(t, _)| t.name.0.to_string())
            .collect();
        topics::auto_create(shard, &names).await;
    }
    let meta = shard.metadata();
    // One slot per partition in request order: either an item to append or
    // an answer already known.
    let mut slots: Vec<Result<usize, PartitionWrite>> = Vec::new();
    let mut items: Vec<ProduceItem> = Vec::new();
    let mut names: Vec<(TopicName, uuid::Uuid)> = Vec::new();
    for (t, &writable) in request.topic_data.iter().zip(&writable) {
        let found = if by_id {
            meta.topic_by_id(t.topic_id)
        } else {
            meta.topic(t.name.0.as_str())
        };
        names.push(match found {
            Some(f) => (TopicName(str_bytes(f.name.clone())), f.topic_id),
            None => (t.name.clone(), t.topic_id),
        });
        for p in &t.partition_data {
            let refusal = if !(-1..=1).contains(&acks) {
                Some(Kafka::InvalidRequiredAcks)
            } else if transaction_refused {
                Some(Kafka::TransactionalIdAuthorizationFailed)
            } else if by_id && found.is_none() {
                Some(Kafka::UnknownTopicId)
            } else if !writable {
                Some(Kafka::TopicAuthorizationFailed)
            } else if let Some(topic) = found {
                if topic.name == OFFSETS_TOPIC && !internal_allowed {
                    // Only the coordinator writes group state, as in Kafka
                    // (which lets its own admin client id through).
                    Some(Kafka::InvalidTopicException)
                } else if p.index < 0 || p.index >= topic.partitions {
                    Some(Kafka::UnknownTopicOrPartition)
                } else {
                    None
                }
            } else if by_id {
                Some(Kafka::UnknownTopicId)
            } else if validate_topic_name(t.name.0.as_str()).is_err() {
                Some(Kafka::InvalidTopicException)
            } else {
                Some(Kafka::UnknownTopicOrPartition)
            };
            match (refusal, found, &p.records) {
                (None, Some(topic), Some(records)) => {
                    slots.push(Ok(items.len()));
                    items.push(ProduceItem {
                        tp: (topic.name.clone(), p.index),
                        records: records.clone(),
                        acks,
                        timeout_ms: request.timeout_ms,
                    });
                }
                (refusal, _, _) => {
                    let error = refusal.unwrap_or(Kafka::InvalidRecord);
                    slots.push(Err(PartitionWrite {
                        error_code: error.code(),
                        error_message: None,
                        base_offset: -1,
                        log_start_offset: -1,
                    }));
                }
            }
        }
    }
    let written = route::place_produce(shard, items).await;
    let (api_key, version, correlation_id) =
        (frame.api_key, frame.api_version(), frame.correlation_id());
    Box::pin(async move {
        let written = written.await;
        match answer(&request, slots, names, &written, acks) {
            Ok(response) => Ok(Reply::Frame(vec![net::encode_response(
                api_key,
                version,
                correlation_id,
                &response,
            )?])),
            Err(reply) => Ok(reply),
        }
    })
}

/// The response to `request` from its answers, or (acks=0) the reply that
/// takes its place.
fn answer(
    request: &ProduceRequest,
    slots: Vec<Result<usize, PartitionWrite>>,
    names: Vec<(TopicName, uuid::Uuid)>,
    written: &[PartitionWrite],
    acks: i16,
) -> Result<ProduceResponse, Reply> {
    let mut answers = slots.into_iter().map(|slot| match slot {
        Ok(i) => written[i].clone(),
        Err(known) => known,
    });
    if acks == 0 {
        let failed: Vec<PartitionWrite> = answers.filter(|a| a.error_code != 0).collect();
        return Err(match failed.first() {
            None => Reply::Nothing,
            Some(f) => Reply::Close(format!(
                "acks=0 produce failed with error code {}: {}",
                f.error_code,
                f.error_message.clone().unwrap_or_default()
            )),
        });
    }
    let mut response = ProduceResponse::default();
    for (t, (name, topic_id)) in request.topic_data.iter().zip(names) {
        let mut tr = TopicProduceResponse::default();
        tr.name = name;
        tr.topic_id = topic_id;
        for p in &t.partition_data {
            let a = answers.next().unwrap_or_default();
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            pr.error_code = a.error_code;
            pr.base_offset = a.base_offset;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = a.log_start_offset;
            pr.error_message = a.error_message.map(str_bytes);
            tr.partition_responses.push(pr);
        }
        response.responses.push(tr);
    }
    Ok(response)
}

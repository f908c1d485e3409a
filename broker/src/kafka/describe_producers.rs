//! DescribeProducers (v0): the idempotent producers each partition knows,
//! with their epoch, last sequence and last timestamp, for operators
//! (`kafka-transactions.sh describe-producers`, AdminClient).

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::node::Node;
use crate::partition::ProducersAnswer;
use crate::route;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeProducersRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    // One slot per partition in request order: an item to ask its shard
    // about, or an answer already known.
    let mut slots: Vec<Result<usize, i16>> = Vec::new();
    let mut items = Vec::new();
    for t in &request.topics {
        let found = meta.topic(t.name.0.as_str());
        // As Kafka: Read on the topic.
        let readable = super::authz::allowed(
            shard,
            &meta,
            frame,
            Operation::Read,
            ResourceType::Topic,
            t.name.0.as_str(),
        );
        for &p in &t.partition_indexes {
            slots.push(match found {
                _ if !readable => Err(Kafka::TopicAuthorizationFailed.code()),
                Some(f) if p >= 0 && p < f.partitions => {
                    items.push((f.name.clone(), p));
                    Ok(items.len() - 1)
                }
                _ => Err(Kafka::UnknownTopicOrPartition.code()),
            });
        }
    }
    let answers = route::describe_producers(shard, items).await;
    let mut slots = slots.into_iter();
    let mut response = DescribeProducersResponse::default();
    for t in &request.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for &p in &t.partition_indexes {
            let answer = match slots.next() {
                Some(Ok(i)) => answers[i].clone(),
                Some(Err(error_code)) => ProducersAnswer {
                    error_code,
                    producers: Vec::new(),
                },
                None => ProducersAnswer::default(),
            };
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            pr.error_code = answer.error_code;
            pr.active_producers = answer
                .producers
                .iter()
                .map(|e| {
                    let mut s = ProducerState::default();
                    s.producer_id = ProducerId(e.producer_id);
                    s.producer_epoch = i32::from(e.epoch);
                    s.last_sequence = e.last_seq();
                    s.last_timestamp = e.last_timestamp;
                    // No transactions yet: no coordinator, no open transaction.
                    s.coordinator_epoch = -1;
                    s.current_txn_start_offset = -1;
                    s
                })
                .collect();
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    respond(frame, &response)
}

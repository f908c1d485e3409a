//! DeleteRecords (v0-v2): moves partitions' log start offsets forward
//! (offset -1: up to the high watermark); whole segments below the new
//! start are deleted, and consumers can no longer read below it.

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::node::Node;
use crate::route;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DeleteRecordsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut slots: Vec<Result<usize, (i16, i64)>> = Vec::new();
    let mut items = Vec::new();
    for t in &request.topics {
        let found = meta.topic(t.name.0.as_str());
        // As Kafka: Delete on the topic.
        let deletable = super::authz::allowed(
            shard,
            &meta,
            frame,
            Operation::Delete,
            ResourceType::Topic,
            t.name.0.as_str(),
        );
        for p in &t.partitions {
            slots.push(match found {
                _ if !deletable => Err((Kafka::TopicAuthorizationFailed.code(), -1)),
                Some(f) if p.partition_index >= 0 && p.partition_index < f.partitions => {
                    if p.offset < -1 {
                        Err((Kafka::OffsetOutOfRange.code(), -1))
                    } else {
                        items.push(((f.name.clone(), p.partition_index), p.offset));
                        Ok(items.len() - 1)
                    }
                }
                _ => Err((Kafka::UnknownTopicOrPartition.code(), -1)),
            });
        }
    }
    let answers = route::delete_records(shard, items).await;
    let mut slots = slots.into_iter();
    let mut response = DeleteRecordsResponse::default();
    for t in &request.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let (error_code, low_watermark) = match slots.next() {
                Some(Ok(i)) => answers[i],
                Some(Err(a)) => a,
                None => (Kafka::UnknownServerError.code(), -1),
            };
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.error_code = error_code;
            pr.low_watermark = low_watermark;
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    respond(frame, &response)
}

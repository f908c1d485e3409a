//! ListOffsets (v1-v10): earliest (-2), latest (-1, the high watermark),
//! max timestamp (-3), earliest local (-4), latest tiered (-5, nothing
//! tiered here) or the first offset at or after a timestamp; `offset -1,
//! timestamp -1` when nothing matches.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{authz, respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::node::Node;
use crate::partition::OffsetAnswer;
use crate::partition::EARLIEST_TIMESTAMP;
use crate::route;

const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: ListOffsetsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut slots: Vec<Result<usize, OffsetAnswer>> = Vec::new();
    let mut items = Vec::new();
    for t in &request.topics {
        let found = meta.topic(t.name.0.as_str());
        // As Kafka: Describe on the topic.
        let describable = authz::allowed(
            shard,
            &meta,
            frame,
            Operation::Describe,
            ResourceType::Topic,
            t.name.0.as_str(),
        );
        for p in &t.partitions {
            let nothing = OffsetAnswer {
                error_code: 0,
                timestamp: -1,
                offset: -1,
            };
            slots.push(match found {
                _ if !describable => Err(OffsetAnswer {
                    error_code: Kafka::TopicAuthorizationFailed.code(),
                    ..nothing
                }),
                Some(f) if p.partition_index >= 0 && p.partition_index < f.partitions => {
                    match p.timestamp {
                        LATEST_TIERED_TIMESTAMP => Err(nothing),
                        ts => {
                            let ts = if ts == EARLIEST_LOCAL_TIMESTAMP {
                                EARLIEST_TIMESTAMP
                            } else {
                                ts
                            };
                            items.push(((f.name.clone(), p.partition_index), ts));
                            Ok(items.len() - 1)
                        }
                    }
                }
                _ => Err(OffsetAnswer {
                    error_code: Kafka::UnknownTopicOrPartition.code(),
                    ..nothing
                }),
            });
        }
    }
    let answers = route::list_offsets(shard, items).await;
    let mut slots = slots.into_iter();
    let mut response = ListOffsetsResponse::default();
    for t in &request.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let a = match slots.next() {
                Some(Ok(i)) => answers[i],
                Some(Err(a)) => a,
                None => OffsetAnswer::default(),
            };
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_code = a.error_code;
            pr.timestamp = a.timestamp;
            pr.offset = a.offset;
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    respond(frame, &response)
}

//! CreatePartitions: grows topics (never shrinks them); the new partitions'
//! logs are opened by their owning shards before the answer.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::cluster::admin::AdminOp;
use crate::node::Node;
use crate::route;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: CreatePartitionsRequest,
) -> Result<Reply, HandlerError> {
    let node = shard.config.node_id;
    let meta = shard.metadata();
    let refusals: Vec<Option<(i16, String)>> = request
        .topics
        .iter()
        .map(|t| {
            // As Kafka: Alter on the topic.
            if !super::authz::allowed(
                shard,
                &meta,
                frame,
                Operation::Alter,
                ResourceType::Topic,
                t.name.0.as_str(),
            ) {
                return Some((
                    Kafka::TopicAuthorizationFailed.code(),
                    Kafka::TopicAuthorizationFailed.to_string(),
                ));
            }
            let local = t.assignments.as_ref().is_none_or(|a| {
                a.iter()
                    .all(|x| x.broker_ids.len() == 1 && x.broker_ids[0].0 == node)
            });
            (!local).then(|| {
                (
                    Kafka::InvalidReplicaAssignment.code(),
                    format!("Every new partition must be on broker {node} only."),
                )
            })
        })
        .collect();
    let asked: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&refusals)
        .filter(|(_, r)| r.is_none())
        .map(|(t, _)| (t.name.0.to_string(), t.count))
        .collect();
    let mut outcomes = if asked.is_empty() {
        Vec::new()
    } else {
        route::admin(
            shard,
            AdminOp::CreatePartitions {
                topics: asked,
                validate_only: request.validate_only,
            },
        )
        .await
        .unwrap_or_default()
    }
    .into_iter();
    let mut response = CreatePartitionsResponse::default();
    for (t, refusal) in request.topics.iter().zip(refusals) {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let outcome = match refusal {
            Some(e) => Err(e),
            None => outcomes
                .next()
                .unwrap_or_else(|| Err((Kafka::UnknownServerError.code(), "no answer".into()))),
        };
        if let Err((code, message)) = outcome {
            r.error_code = code;
            r.error_message = Some(str_bytes(message));
        }
        response.results.push(r);
    }
    respond(frame, &response)
}

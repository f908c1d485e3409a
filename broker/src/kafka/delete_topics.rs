//! DeleteTopics, by name (v1+) or by topic id (v6): shard 0 forgets the
//! topics and every owning shard deletes their logs before the answer.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;
use uuid::Uuid;

use super::{authz, respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::cluster::admin::AdminOp;
use crate::node::Node;
use crate::route;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DeleteTopicsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    // (name as asked or resolved, topic id as asked, refusal)
    let wanted: Vec<(Option<String>, Uuid, Option<Kafka>)> = if frame.api_version() >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => (Some(name.0.to_string()), Uuid::nil(), None),
                None => match meta.topic_by_id(t.topic_id) {
                    Some(found) => (Some(found.name.clone()), t.topic_id, None),
                    None => (None, t.topic_id, Some(Kafka::UnknownTopicId)),
                },
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil(), None))
            .collect()
    };
    // As Kafka: Delete on each topic (Describe first when named by id,
    // so that an id hides a topic one may not see).
    let wanted: Vec<(Option<String>, Uuid, Option<Kafka>)> = wanted
        .into_iter()
        .map(|(name, id, refusal)| {
            let refusal = refusal.or_else(|| {
                let n = name.as_deref()?;
                if !id.is_nil()
                    && !authz::allowed(
                        shard,
                        &meta,
                        frame,
                        Operation::Describe,
                        ResourceType::Topic,
                        n,
                    )
                {
                    Some(Kafka::UnknownTopicId)
                } else if !authz::allowed(
                    shard,
                    &meta,
                    frame,
                    Operation::Delete,
                    ResourceType::Topic,
                    n,
                ) {
                    Some(Kafka::TopicAuthorizationFailed)
                } else {
                    None
                }
            });
            let name = if refusal == Some(Kafka::UnknownTopicId) {
                None
            } else {
                name
            };
            (name, id, refusal)
        })
        .collect();
    let to_delete: Vec<String> = wanted
        .iter()
        .filter(|(_, _, refusal)| refusal.is_none())
        .filter_map(|(name, _, _)| name.clone())
        .collect();
    let mut outcomes = if to_delete.is_empty() {
        Vec::new()
    } else {
        route::admin(shard, AdminOp::DeleteTopics(to_delete))
            .await
            .unwrap_or_default()
    }
    .into_iter();
    let mut response = DeleteTopicsResponse::default();
    for (name, topic_id, refusal) in wanted {
        let mut r = DeletableTopicResult::default();
        r.name = name.map(|n| TopicName(str_bytes(n)));
        r.topic_id = topic_id;
        let outcome = match refusal {
            Some(e) => Err((e.code(), e.to_string())),
            None => outcomes
                .next()
                .unwrap_or_else(|| Err((Kafka::UnknownServerError.code(), "no answer".into()))),
        };
        match outcome {
            Ok(deleted) => r.topic_id = deleted.topic_id,
            Err((code, message)) => {
                r.error_code = code;
                r.error_message = Some(str_bytes(message));
            }
        }
        response.responses.push(r);
    }
    respond(frame, &response)
}

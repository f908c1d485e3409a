//! FindCoordinator (v0–v6): a group's coordinator is the leader of its
//! `__consumer_offsets` partition; the first request for a group creates
//! the topic.
//! Transaction coordinators do not exist yet, which is said with
//! COORDINATOR_NOT_AVAILABLE and a message.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::groups::ensure_offsets_topic;
use super::{authz, respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::group::coordinator::OFFSETS_TOPIC;
use crate::group::records::partition_for;
use crate::node::Node;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: FindCoordinatorRequest,
) -> Result<Reply, HandlerError> {
    let keys: Vec<String> = if frame.api_version() >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let answer = if request.key_type != KEY_TYPE_GROUP {
        Err((
            Kafka::CoordinatorNotAvailable.code(),
            "Sluice has no transaction or share coordinator yet".to_string(),
        ))
    } else {
        ensure_offsets_topic(shard).await
    };
    let meta = shard.metadata();
    let coordinator = |key: &str| {
        let mut c = Coordinator::default();
        c.key = str_bytes(key);
        // As Kafka: Describe on the group or transactional id named.
        let (resource, refused) = if request.key_type == KEY_TYPE_GROUP {
            (ResourceType::Group, Kafka::GroupAuthorizationFailed)
        } else {
            (
                ResourceType::TransactionalId,
                Kafka::TransactionalIdAuthorizationFailed,
            )
        };
        let authorized = request.key_type > KEY_TYPE_TRANSACTION
            || authz::allowed(shard, &meta, frame, Operation::Describe, resource, key);
        let leader = if authorized {
            answer.clone()
        } else {
            Err((refused.code(), refused.to_string()))
        };
        let leader = leader.and_then(|()| {
            let topic = meta.topic(OFFSETS_TOPIC).ok_or((
                Kafka::CoordinatorNotAvailable.code(),
                "the offsets topic is not there yet".to_string(),
            ))?;
            let partition = partition_for(key, topic.partitions);
            let leader = match topic.state(partition) {
                Some(state) => state.leader.map(|l| l as i32),
                None => Some(shard.config.node_id),
            };
            let name = shard.listener_name(frame.listener);
            let node = leader
                .filter(|&l| l != shard.config.node_id)
                .and_then(|l| meta.nodes.get(&l).map(|n| (l, n)))
                .and_then(|(l, n)| n.endpoint(name).map(|(h, p)| (l, h.to_string(), p)));
            match node {
                Some(found) => Ok(found),
                None if leader == Some(shard.config.node_id) => {
                    let (host, port) = shard.own_endpoint(frame.listener);
                    Ok((shard.config.node_id, host, port))
                }
                None => Err((
                    Kafka::CoordinatorNotAvailable.code(),
                    format!("partition {partition} of {OFFSETS_TOPIC} has no leader"),
                )),
            }
        });
        match &leader {
            Ok((id, host, port)) => {
                c.node_id = BrokerId(*id);
                c.host = str_bytes(host.clone());
                c.port = *port;
            }
            Err((code, message)) => {
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = *code;
                c.error_message = Some(str_bytes(message.clone()));
            }
        }
        c
    };
    let mut response = FindCoordinatorResponse::default();
    if frame.api_version() >= 4 {
        response.coordinators = keys.iter().map(|k| coordinator(k)).collect();
    } else {
        let c = coordinator(keys.first().map_or("", String::as_str));
        response.error_code = c.error_code;
        response.error_message = c.error_message;
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    respond(frame, &response)
}

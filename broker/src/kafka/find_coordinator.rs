//! FindCoordinator (v0–v6): this node coordinates every group (single-node
//! cluster); the first request for a group creates `__consumer_offsets`.
//! Transaction coordinators do not exist yet, which is said with
//! COORDINATOR_NOT_AVAILABLE and a message.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::groups::ensure_offsets_topic;
use super::{respond, str_bytes, HandlerError, Reply};
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    shard: &Rc<Shard>,
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
    let (host, port) = shard.advertised.clone();
    let node = BrokerId(shard.config.node_id);
    let coordinator = |key: &str| {
        let mut c = Coordinator::default();
        c.key = str_bytes(key);
        match &answer {
            Ok(()) => {
                c.node_id = node;
                c.host = str_bytes(host.clone());
                c.port = port;
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

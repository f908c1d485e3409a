//! InitProducerId (v0-v5) for idempotent producers: a fresh producer id
//! from this shard's block (`producer_ids`). Transactions are not
//! supported yet: a request with a transactional id is refused. As Kafka
//! authorizes it: IdempotentWrite on the cluster or Write on some topic,
//! Write on the transactional id when one is given.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{authz, respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::node::Node;

pub async fn handle(
    node: &Rc<Node>,
    frame: &RequestFrame,
    request: InitProducerIdRequest,
) -> Result<Reply, HandlerError> {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    let meta = node.metadata();
    // As Kafka: Write on the transactional id; without one, IdempotentWrite
    // on the cluster or Write on some topic.
    let authorized = match &request.transactional_id {
        Some(id) => authz::allowed(
            node,
            &meta,
            frame,
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        ),
        None => {
            authz::allowed_quietly(
                node,
                &meta,
                frame,
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                CLUSTER_NAME,
            ) || meta.acl_index.may_on_some(
                &node.acl,
                &frame.principal,
                frame.peer.map(|p| p.ip()),
                Operation::Write,
                ResourceType::Topic,
            )
        }
    };
    if !authorized {
        response.error_code = if request.transactional_id.is_some() {
            Kafka::TransactionalIdAuthorizationFailed.code()
        } else {
            authz::note_denied(
                node,
                frame,
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                CLUSTER_NAME,
            );
            Kafka::ClusterAuthorizationFailed.code()
        };
        return respond(frame, &response);
    }
    if request.transactional_id.is_some() {
        // Transactions come later; say so rather than pretend.
        response.error_code = Kafka::UnsupportedVersion.code();
        return respond(frame, &response);
    }
    // Without a transactional id Kafka always starts a fresh producer id at
    // epoch 0, whatever id and epoch the client had before (KIP-360).
    let peers: Rc<dyn crate::cluster::Peers> = node.clone();
    match node.producer_ids.next(&node.shard, &*peers).await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            // Retriable: clients ask again once the controller answers.
            tracing::warn!(error = %e, "cannot reserve producer ids");
            response.error_code = Kafka::CoordinatorNotAvailable.code();
        }
    }
    respond(frame, &response)
}

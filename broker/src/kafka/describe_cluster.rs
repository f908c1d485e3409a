//! DescribeCluster (v0-v2): this broker, the cluster id, and itself as the
//! controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::node::Node;

/// DescribeCluster endpoint types (KIP-919).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeClusterRequest,
) -> Result<Reply, HandlerError> {
    let mut response = DescribeClusterResponse::default();
    response.cluster_authorized_operations = i32::MIN;
    if frame.api_version() >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        response.error_code = Kafka::UnsupportedEndpointType.code();
        response.error_message = Some(str_bytes("The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"));
        return respond(frame, &response);
    }
    if request.include_cluster_authorized_operations {
        // As Kafka: the operations with Describe on the cluster, else none.
        let meta = shard.metadata();
        response.cluster_authorized_operations =
            if super::authz::cluster(shard, &meta, frame, Operation::Describe) {
                super::authz::authorized_operations(
                    shard,
                    &meta,
                    frame,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                )
            } else {
                0
            };
    }
    response.cluster_id = str_bytes(shard.metadata().cluster_id.clone());
    response.controller_id = BrokerId(super::metadata::controller_id(shard));
    response.brokers = super::metadata::brokers(shard, frame.listener)
        .into_iter()
        .map(|m| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = m.node_id;
            b.host = m.host;
            b.port = m.port;
            b
        })
        .collect();
    respond(frame, &response)
}

//! The authorizer as the handlers ask it: who the request's connection is
//! and where it comes from, checked against the ACL index of the metadata
//! the handler already holds. A refusal is counted and logged (rate
//! limited) with the principal, host, operation and resource, except
//! where Kafka filters quietly (topics left out of a Metadata answer).

use std::cell::Cell;
use std::time::{Duration, Instant};

use net::RequestFrame;

use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::metadata::ClusterMetadata;
use crate::node::Node;

/// At most this many refusals are logged per shard per `LOG_PERIOD`.
const LOGGED_PER_PERIOD_MAX: u32 = 10;
const LOG_PERIOD: Duration = Duration::from_secs(10);

thread_local! {
    /// (period start, refusals logged in it): one shard per thread.
    static LOGGED: Cell<(Option<Instant>, u32)> = const { Cell::new((None, 0)) };
}

/// Whether the request may perform `op` on the resource; a refusal is
/// counted and logged.
pub(crate) fn allowed(
    node: &Node,
    meta: &ClusterMetadata,
    frame: &RequestFrame,
    op: Operation,
    resource: ResourceType,
    name: &str,
) -> bool {
    let ok = allowed_quietly(node, meta, frame, op, resource, name);
    if !ok {
        note_denied(node, frame, op, resource, name);
    }
    ok
}

/// As `allowed`, without counting or logging a refusal: for listings that
/// leave out what the principal may not see.
pub(crate) fn allowed_quietly(
    node: &Node,
    meta: &ClusterMetadata,
    frame: &RequestFrame,
    op: Operation,
    resource: ResourceType,
    name: &str,
) -> bool {
    meta.acl_index.authorize(
        &node.acl,
        &frame.principal,
        frame.peer.map(|p| p.ip()),
        op,
        resource,
        name,
    )
}

/// `op` on the cluster resource.
pub(crate) fn cluster(
    node: &Node,
    meta: &ClusterMetadata,
    frame: &RequestFrame,
    op: Operation,
) -> bool {
    allowed(node, meta, frame, op, ResourceType::Cluster, CLUSTER_NAME)
}

/// KIP-430's bitfield of what the request's principal may do on the
/// resource.
pub(crate) fn authorized_operations(
    node: &Node,
    meta: &ClusterMetadata,
    frame: &RequestFrame,
    resource: ResourceType,
    name: &str,
) -> i32 {
    meta.acl_index.authorized_operations(
        &node.acl,
        &frame.principal,
        frame.peer.map(|p| p.ip()),
        resource,
        name,
    )
}

pub(crate) fn note_denied(
    node: &Node,
    frame: &RequestFrame,
    op: Operation,
    resource: ResourceType,
    name: &str,
) {
    let via = frame.api_key;
    let host = frame.peer.map(|p| p.ip());
    note_denied_for(node, &frame.principal, host, op, resource, name, &via);
}

/// A refusal of `principal` from `host`, by whatever `via` names (a Kafka
/// API, the ingest listener): counted, and logged at a bounded rate.
pub(crate) fn note_denied_for(
    node: &Node,
    principal: &str,
    host: Option<std::net::IpAddr>,
    op: Operation,
    resource: ResourceType,
    name: &str,
    via: &dyn std::fmt::Debug,
) {
    node.metrics
        .authorization_denied(resource.name(), op.name());
    let now = Instant::now();
    let log = LOGGED.with(|logged| {
        let (start, count) = logged.get();
        let (start, count) = match start {
            Some(s) if now.duration_since(s) < LOG_PERIOD => (s, count),
            _ => (now, 0),
        };
        logged.set((Some(start), count.saturating_add(1)));
        count < LOGGED_PER_PERIOD_MAX
    });
    if log {
        tracing::info!(
            principal,
            ?host,
            operation = op.name(),
            resource_type = resource.name(),
            resource = name,
            api = ?via,
            "authorization denied"
        );
    }
}

/// Whether the request may create topic `name`: Create on the cluster
/// (not logged when refused, as Kafka) or on the topic.
pub(crate) fn may_create_topic(
    node: &Node,
    meta: &ClusterMetadata,
    frame: &RequestFrame,
    name: &str,
) -> bool {
    allowed_quietly(
        node,
        meta,
        frame,
        Operation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) || allowed(
        node,
        meta,
        frame,
        Operation::Create,
        ResourceType::Topic,
        name,
    )
}

/// `allowed`, against the current metadata: for handlers that hold none.
pub(crate) fn check(
    node: &Node,
    frame: &RequestFrame,
    op: Operation,
    resource: ResourceType,
    name: &str,
) -> bool {
    allowed(node, &node.metadata(), frame, op, resource, name)
}

/// GROUP_AUTHORIZATION_FAILED unless the request may Read the group, as
/// Kafka checks every classic group API.
pub(crate) fn group_read(node: &Node, frame: &RequestFrame, group_id: &str) -> Result<(), i16> {
    if check(node, frame, Operation::Read, ResourceType::Group, group_id) {
        Ok(())
    } else {
        Err(kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
    }
}

/// Describe/AlterConfigs on a config resource (Kafka's ConfigResource
/// types: 2 topic, 4 broker, 8 broker logger): the error Kafka answers
/// when refused. Broker resources are checked on the cluster.
pub(crate) fn config_refusal(
    node: &Node,
    meta: &ClusterMetadata,
    frame: &RequestFrame,
    op: Operation,
    resource_type: i8,
    name: &str,
) -> Option<(i16, String)> {
    use kafka_protocol::ResponseError as Kafka;
    match resource_type {
        2 if !allowed(node, meta, frame, op, ResourceType::Topic, name) => Some((
            Kafka::TopicAuthorizationFailed.code(),
            Kafka::TopicAuthorizationFailed.to_string(),
        )),
        4 | 8 if !cluster(node, meta, frame, op) => Some((
            Kafka::ClusterAuthorizationFailed.code(),
            Kafka::ClusterAuthorizationFailed.to_string(),
        )),
        _ => None,
    }
}

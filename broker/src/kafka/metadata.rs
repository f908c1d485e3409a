//! Metadata: the live brokers, the controller leader, and the topics asked
//! for (all when the list is null, or empty in v0) with each partition's
//! leader, leader epoch, replicas, ISR and offline replicas, auto-creating
//! unknown topics when the config, the request and the ACLs allow it.
//! Only topics the principal may Describe are listed; one asked for by
//! name that it may not describe answers TOPIC_AUTHORIZATION_FAILED, as
//! Kafka does, and KIP-430's authorized operations are computed when
//! asked for.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;
use uuid::Uuid;

use super::{authz, respond, str_bytes, topics, HandlerError, Reply};
use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::metadata::{validate_topic_name, TopicMeta};
use crate::node::Node;
use crate::shard::Shard;

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: MetadataRequest,
) -> Result<Reply, HandlerError> {
    let version = frame.api_version();
    let requested = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let mut response = MetadataResponse::default();
    response.brokers = brokers(shard, frame.listener);
    response.cluster_id = Some(str_bytes(shard.metadata().cluster_id.clone()));
    response.controller_id = BrokerId(controller_id(shard));
    let meta = shard.metadata();
    response.cluster_authorized_operations =
        if request.include_cluster_authorized_operations && (8..=10).contains(&version) {
            authz::authorized_operations(shard, &meta, frame, ResourceType::Cluster, CLUSTER_NAME)
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        };
    let with_ops = request.include_topic_authorized_operations && version >= 8;
    let described = |t: &TopicMeta| {
        let mut out = topic(shard, t);
        if with_ops {
            out.topic_authorized_operations =
                authz::authorized_operations(shard, &meta, frame, ResourceType::Topic, &t.name);
        }
        out
    };
    let describable = |name: &str, logged: bool| {
        let check = if logged {
            authz::allowed
        } else {
            authz::allowed_quietly
        };
        check(
            shard,
            &meta,
            frame,
            Operation::Describe,
            ResourceType::Topic,
            name,
        )
    };
    match requested {
        None => {
            // Every topic the principal may describe; the others are left
            // out without a word, as Kafka does.
            response.topics = meta
                .topics
                .values()
                .filter(|t| describable(&t.name, false))
                .map(described)
                .collect();
        }
        Some(asked) => {
            let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
            let auto_create = allow_auto_create && shard.config.auto_create_topics;
            if auto_create {
                let names: Vec<String> = asked
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
                    .filter(|n| {
                        meta.topic(n).is_none()
                            && describable(n, true)
                            && authz::may_create_topic(shard, &meta, frame, n)
                    })
                    .map(str::to_string)
                    .collect();
                topics::auto_create(shard, &names).await;
            }
            let meta = shard.metadata();
            response.topics = asked
                .iter()
                .map(|t| match &t.name {
                    // Kafka names a topic the principal may not describe,
                    // or may not create when it would be created, with
                    // TOPIC_AUTHORIZATION_FAILED and no more.
                    Some(name) if !describable(name.0.as_str(), true) => missing(
                        Kafka::TopicAuthorizationFailed,
                        Some(name.0.as_str()),
                        Uuid::nil(),
                    ),
                    Some(name) => {
                        let name = name.0.as_str();
                        match meta.topic(name) {
                            Some(found) => described(found),
                            None => {
                                let error = if validate_topic_name(name).is_err() {
                                    Kafka::InvalidTopicException
                                } else if auto_create
                                    && !authz::may_create_topic(shard, &meta, frame, name)
                                {
                                    Kafka::TopicAuthorizationFailed
                                } else {
                                    Kafka::UnknownTopicOrPartition
                                };
                                missing(error, Some(name), Uuid::nil())
                            }
                        }
                    }
                    // By id: a topic the principal may not describe is as
                    // unknown as one that is not there.
                    None => match meta
                        .topic_by_id(t.topic_id)
                        .filter(|found| describable(&found.name, true))
                    {
                        Some(found) => described(found),
                        None => missing(Kafka::UnknownTopicId, None, t.topic_id),
                    },
                })
                .collect();
        }
    }
    respond(frame, &response)
}

/// The live brokers, at their addresses on the listener the client came
/// in on (`listener`); this one always, even before its registration is
/// applied, so that a client always has somewhere to go.
pub(crate) fn brokers(shard: &Shard, listener: u8) -> Vec<MetadataResponseBroker> {
    let meta = shard.metadata();
    let name = shard.listener_name(listener);
    let me = shard.config.node_id;
    let broker = |id: i32, host: &str, port: i32| {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = str_bytes(host);
        b.port = port;
        b
    };
    let mut out: Vec<MetadataResponseBroker> = meta
        .nodes
        .iter()
        .filter(|(&id, n)| !n.fenced && id != me)
        .filter_map(|(&id, n)| n.endpoint(name).map(|(host, port)| broker(id, host, port)))
        .collect();
    // This node as its own configuration says, which its registration may
    // not show yet.
    let (host, port) = shard.own_endpoint(listener);
    out.push(broker(me, &host, port));
    out.sort_by_key(|b| b.node_id.0);
    out
}

/// The controller leader as last known, else this node.
pub(crate) fn controller_id(shard: &Shard) -> i32 {
    match shard.metadata().controller_id {
        -1 => shard.config.node_id,
        id => id,
    }
}

fn topic(shard: &Shard, t: &TopicMeta) -> MetadataResponseTopic {
    let meta = shard.metadata();
    let me = shard.config.node_id;
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(str_bytes(t.name.clone())));
    out.topic_id = t.topic_id;
    out.is_internal = t.name == crate::group::coordinator::OFFSETS_TOPIC;
    out.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    out.partitions = (0..t.partitions)
        .map(|p| {
            let mut part = MetadataResponsePartition::default();
            part.partition_index = p;
            let ids = |nodes: &[u32]| nodes.iter().map(|&n| BrokerId(n as i32)).collect();
            match t.state(p) {
                Some(state) => {
                    part.leader_id = BrokerId(state.leader.map_or(-1, |l| l as i32));
                    part.leader_epoch = state.leader_epoch;
                    part.replica_nodes = ids(&state.replicas);
                    part.isr_nodes = ids(&state.isr);
                    part.offline_replicas = state
                        .replicas
                        .iter()
                        .filter(|&&r| !meta.is_live(r as i32))
                        .map(|&r| BrokerId(r as i32))
                        .collect();
                    if state.leader.is_none() {
                        part.error_code = Kafka::LeaderNotAvailable.code();
                    }
                }
                None => {
                    part.leader_id = BrokerId(me);
                    part.leader_epoch = -1;
                    part.replica_nodes = vec![BrokerId(me)];
                    part.isr_nodes = vec![BrokerId(me)];
                }
            }
            part
        })
        .collect();
    out
}

fn missing(error: Kafka, name: Option<&str>, topic_id: Uuid) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.error_code = error.code();
    out.name = name.map(|n| TopicName(str_bytes(n)));
    out.is_internal = name == Some(crate::group::coordinator::OFFSETS_TOPIC);
    out.topic_id = topic_id;
    out.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    out
}

//! CreateTopics: checks names, partition counts, replication factors and
//! configs as Kafka does, then creates the valid topics on shard 0 (or only
//! validates them, for validate_only).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{authz, respond, str_bytes, HandlerError, Reply};
use crate::cluster::admin::{AdminOp, NewTopic};
use crate::metadata::validate_topic_name;
use crate::node::Node;
use crate::route;
use crate::shard::Shard;
use crate::topic_config::describe_topic;

type Refusal = (i16, String);

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: CreateTopicsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results: Vec<Result<NewTopic, Refusal>> = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            if seen.get(&name).copied().unwrap_or(0) > 1 {
                return Err((
                    Kafka::InvalidRequest.code(),
                    format!("Create topics request from client contains multiple entries for the following topics: {name}"),
                ));
            }
            // As Kafka: Create on the cluster or on the topic.
            if !authz::may_create_topic(shard, &meta, frame, &name) {
                return Err((
                    Kafka::TopicAuthorizationFailed.code(),
                    "Authorization failed.".to_string(),
                ));
            }
            check_topic(shard, t).map(|(partitions, replication_factor, configs)| NewTopic {
                name,
                partitions,
                replication_factor,
                configs,
            })
        })
        .collect();
    let valid: Vec<NewTopic> = results
        .iter_mut()
        .filter_map(|r| match r {
            Ok(t) => Some(NewTopic {
                name: t.name.clone(),
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs.clone(),
            }),
            Err(_) => None,
        })
        .collect();
    let mut outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        route::admin(
            shard,
            AdminOp::CreateTopics {
                topics: valid,
                validate_only: request.validate_only,
            },
        )
        .await
        .unwrap_or_default()
    }
    .into_iter();
    let mut response = CreateTopicsResponse::default();
    for (t, checked) in request.topics.iter().zip(results) {
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        r.num_partitions = -1;
        r.replication_factor = -1;
        let outcome = match checked {
            Err(refusal) => Err(refusal),
            Ok(_) => outcomes.next().unwrap_or_else(|| {
                Err((
                    Kafka::UnknownServerError.code(),
                    "no answer from shard 0".into(),
                ))
            }),
        };
        match outcome {
            Ok(meta) => {
                r.topic_id = meta.topic_id;
                r.num_partitions = meta.partitions;
                r.replication_factor = meta.states.first().map_or(1, |s| s.replicas.len() as i16);
                r.configs = Some(
                    describe_topic(&shard.config, &meta.configs)
                        .into_iter()
                        .map(|d| {
                            let mut c = CreatableTopicConfigs::default();
                            c.name = str_bytes(d.name);
                            c.value = Some(str_bytes(d.value));
                            c.config_source = d.source;
                            c
                        })
                        .collect(),
                );
            }
            Err((code, message)) => {
                r.error_code = code;
                r.error_message = Some(str_bytes(message));
            }
        }
        response.topics.push(r);
    }
    respond(frame, &response)
}

fn check_topic(
    shard: &Shard,
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<(i32, i16, BTreeMap<String, String>), Refusal> {
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|e| (Kafka::InvalidTopicException.code(), e))?;
    let (partitions, replication_factor) = if t.assignments.is_empty() {
        let partitions = match t.num_partitions {
            -1 => shard.config.default_partitions,
            n if n < 1 => {
                return Err((
                    Kafka::InvalidPartitions.code(),
                    "Number of partitions was set to an invalid non-positive value.".into(),
                ))
            }
            n => n,
        };
        let replication_factor = match t.replication_factor {
            -1 => shard.config.default_replication_factor,
            n => n,
        };
        if replication_factor < 1 {
            return Err((
                Kafka::InvalidReplicationFactor.code(),
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        (partitions, replication_factor)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                Kafka::InvalidRequest.code(),
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
        }
        let node = shard.config.node_id;
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        let dense = indexes.iter().enumerate().all(|(i, p)| *p == i as i32);
        let local = t
            .assignments
            .iter()
            .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
        if !dense || !local {
            return Err((
                Kafka::InvalidReplicaAssignment.code(),
                format!("Replica assignments must name partitions 0..n once each, each on broker {node} only."),
            ));
        }
        (t.assignments.len() as i32, 1)
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let Some(value) = &c.value else {
            return Err((
                Kafka::InvalidConfig.code(),
                format!(
                    "Null value not supported for topic configs: {}",
                    c.name.as_str()
                ),
            ));
        };
        configs.insert(c.name.to_string(), value.to_string());
    }
    Ok((partitions, replication_factor, configs))
}

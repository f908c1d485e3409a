//! The few admin calls a benchmark needs: create its topic, find each
//! partition's leader, and look up offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::versions::error_name;
use super::Connection;
use crate::error::{BenchError, Result};

const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader_id: i32,
    pub leader_addr: String,
    /// Nodes holding a replica, and those of them in sync.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionInfo>,
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Creates the topic; an existing topic of that name is fine.
pub async fn create_topic(
    conn: &mut Connection,
    name: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)]);
    let response = conn.call(&request).await?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            let message = t.error_message.as_ref().map(|m| m.to_string());
            return Err(BenchError::Kafka {
                api: "CreateTopics",
                code: t.error_code,
                what: message.unwrap_or_else(|| error_name(t.error_code).to_string()),
            });
        }
    }
    Ok(())
}

/// Metadata for one topic, retried until every partition has a leader
/// (a new topic's leaders appear a moment after CreateTopics returns).
pub async fn describe_topic(
    conn: &mut Connection,
    name: &str,
    wait_max: Duration,
) -> Result<TopicInfo> {
    let started = Instant::now();
    loop {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(name)))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = conn.call(&request).await?;
        let brokers: HashMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let why_not = match response.topics.first() {
            None => "no topic in the answer".to_string(),
            Some(t) if t.error_code != 0 => error_name(t.error_code).to_string(),
            Some(t) => {
                let mut partitions = Vec::with_capacity(t.partitions.len());
                for p in &t.partitions {
                    if p.error_code != 0 || p.leader_id.0 < 0 {
                        break;
                    }
                    let Some(addr) = brokers.get(&p.leader_id.0) else {
                        break;
                    };
                    partitions.push(PartitionInfo {
                        partition: p.partition_index,
                        leader_id: p.leader_id.0,
                        leader_addr: addr.clone(),
                        replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                        isr: p.isr_nodes.iter().map(|n| n.0).collect(),
                    });
                }
                if !t.partitions.is_empty() && partitions.len() == t.partitions.len() {
                    partitions.sort_by_key(|p| p.partition);
                    return Ok(TopicInfo {
                        name: name.to_string(),
                        topic_id: t.topic_id,
                        partitions,
                    });
                }
                "some partitions have no leader yet".to_string()
            }
        };
        if started.elapsed() > wait_max {
            return Err(BenchError::Protocol(format!(
                "topic {name} is not ready after {} s: {why_not}",
                wait_max.as_secs()
            )));
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the cluster's Metadata lists at least `nodes` brokers (a
/// node accepts connections before every other one has registered, and a
/// topic with a replication factor above the registered brokers is
/// refused). Returns the brokers' addresses by node id.
pub async fn wait_for_brokers(
    conn: &mut Connection,
    nodes: usize,
    wait_max: Duration,
) -> Result<HashMap<i32, String>> {
    let started = Instant::now();
    loop {
        let request = MetadataRequest::default()
            .with_topics(Some(Vec::new()))
            .with_allow_auto_topic_creation(false);
        let response = conn.call(&request).await?;
        let brokers: HashMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        if brokers.len() >= nodes {
            return Ok(brokers);
        }
        if started.elapsed() > wait_max {
            return Err(BenchError::Protocol(format!(
                "{} of {nodes} brokers registered after {} s",
                brokers.len(),
                wait_max.as_secs()
            )));
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

/// Offsets of `partitions` (all led by the broker behind `conn`) at
/// `timestamp` ([`LATEST`], [`EARLIEST`] or a time in ms).
pub async fn list_offsets(
    conn: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<(i32, i64)>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let response = conn.call(&request).await?;
    let mut out = Vec::with_capacity(partitions.len());
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(BenchError::Kafka {
                    api: "ListOffsets",
                    code: p.error_code,
                    what: error_name(p.error_code).to_string(),
                });
            }
            out.push((p.partition_index, p.offset));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Kafka's codes of the ACL bindings the harness defines.
mod acl_code {
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
    pub const ALL: i8 = 2;
    pub const WRITE: i8 = 4;
    pub const ALLOW: i8 = 3;
}

/// `count` ACL bindings for an authorizer under load: an ALLOW of every
/// operation on `topic` and on every group for `User:*`, the rest noise on
/// other topics (literal and prefixed, prefixes of several lengths, so the
/// index's prefix search has work). Sent in one CreateAcls.
pub async fn create_acls(conn: &mut Connection, topic: &str, count: u32) -> Result<()> {
    use acl_code::*;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::CreateAclsRequest;
    let binding = |resource_type, name: String, pattern, principal: String, operation| {
        AclCreation::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name))
            .with_resource_pattern_type(pattern)
            .with_principal(StrBytes::from_string(principal))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(operation)
            .with_permission_type(ALLOW)
    };
    let mut creations = vec![
        binding(TOPIC, topic.to_string(), LITERAL, "User:*".into(), ALL),
        binding(GROUP, "*".into(), LITERAL, "User:*".into(), ALL),
    ];
    for i in 0..count.saturating_sub(2) {
        let (name, pattern) = if i % 2 == 0 {
            (format!("noise-{i}"), LITERAL)
        } else {
            // Prefixes of 3 to 10 bytes.
            let len = 3 + (i as usize % 8);
            (format!("{i:0>len$}"), PREFIXED)
        };
        creations.push(binding(
            TOPIC,
            name,
            pattern,
            format!("User:noise-{i}"),
            WRITE,
        ));
    }
    let response = conn
        .call(&CreateAclsRequest::default().with_creations(creations))
        .await?;
    match response.results.iter().find(|r| r.error_code != 0) {
        None => Ok(()),
        Some(r) => Err(BenchError::Kafka {
            api: "CreateAcls",
            code: r.error_code,
            what: r
                .error_message
                .as_ref()
                .map_or_else(|| error_name(r.error_code).to_string(), |m| m.to_string()),
        }),
    }
}

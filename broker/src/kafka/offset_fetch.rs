//! OffsetFetch (v1–v9): a group's committed offsets (-1 where it has none);
//! v8+ asks for several groups at once.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use net::RequestFrame;

use super::groups;
use super::{authz, respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::group::coordinator::{FetchedOffset, GroupAnswer, GroupCall};
use crate::group::errors::UNKNOWN_SERVER_ERROR;
use crate::node::Node;
use kafka_protocol::ResponseError;

type Topics = Option<Vec<(String, Vec<i32>)>>;

/// One group's answer: a group-level error code and its offsets, grouped by
/// topic in the order asked (or in topic order when all were asked for).
/// As Kafka: Describe on the group, or GROUP_AUTHORIZATION_FAILED;
/// Describe on each topic asked for, or TOPIC_AUTHORIZATION_FAILED for its
/// partitions; when all were asked for, those not describable are left out.
async fn fetch(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    group_id: &str,
    topics: Topics,
) -> (i16, Vec<(String, Vec<FetchedOffset>)>) {
    if !authz::check(
        shard,
        frame,
        Operation::Describe,
        ResourceType::Group,
        group_id,
    ) {
        return (ResponseError::GroupAuthorizationFailed.code(), Vec::new());
    }
    let all = topics.is_none();
    let call = GroupCall::FetchOffsets {
        group_id: group_id.to_string(),
        topics,
    };
    let (error, offsets) = match groups::call(shard, group_id, call).await {
        Ok(GroupAnswer::Offsets(error, offsets)) => (error, offsets),
        Ok(_) => (UNKNOWN_SERVER_ERROR, Vec::new()),
        Err(code) => (code, Vec::new()),
    };
    let meta = shard.metadata();
    let mut by_topic: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    let mut last: Option<(String, bool)> = None;
    for mut o in offsets {
        let describable = match &last {
            Some((t, ok)) if *t == o.topic => *ok,
            _ => {
                let check = if all {
                    authz::allowed_quietly
                } else {
                    authz::allowed
                };
                let ok = check(
                    shard,
                    &meta,
                    frame,
                    Operation::Describe,
                    ResourceType::Topic,
                    &o.topic,
                );
                last = Some((o.topic.clone(), ok));
                ok
            }
        };
        if !describable {
            if all {
                continue;
            }
            o.offset = -1;
            o.leader_epoch = -1;
            o.metadata.clear();
            o.error_code = ResponseError::TopicAuthorizationFailed.code();
        }
        match by_topic.last_mut() {
            Some((t, list)) if *t == o.topic => list.push(o),
            _ => by_topic.push((o.topic.clone(), vec![o])),
        }
    }
    (error, by_topic)
}

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: OffsetFetchRequest,
) -> Result<Reply, HandlerError> {
    let version = frame.api_version();
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &request.groups {
            let topics: Topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (error, by_topic) = fetch(shard, frame, &g.group_id, topics).await;
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            rg.error_code = error;
            rg.topics = by_topic
                .into_iter()
                .map(|(name, offsets)| {
                    let mut rt = OffsetFetchResponseTopics::default();
                    rt.name = TopicName(str_bytes(name));
                    rt.partitions = offsets
                        .into_iter()
                        .map(|o| {
                            let mut p = OffsetFetchResponsePartitions::default();
                            p.partition_index = o.partition;
                            p.committed_offset = o.offset;
                            p.committed_leader_epoch = o.leader_epoch;
                            p.metadata = Some(str_bytes(o.metadata));
                            p.error_code = o.error_code;
                            p
                        })
                        .collect();
                    rt
                })
                .collect();
            response.groups.push(rg);
        }
        return respond(frame, &response);
    }
    let asked: Topics = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (error, by_topic) = fetch(shard, frame, &request.group_id, asked.clone()).await;
    if version >= 2 {
        response.error_code = error;
    }
    let by_topic = if error != 0 && version < 2 {
        // v1 has no group-level error: each partition carries it.
        asked
            .unwrap_or_default()
            .into_iter()
            .map(|(t, ps)| {
                let offsets = ps
                    .into_iter()
                    .map(|p| FetchedOffset {
                        topic: t.clone(),
                        partition: p,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: String::new(),
                        error_code: error,
                    })
                    .collect();
                (t, offsets)
            })
            .collect()
    } else {
        by_topic
    };
    response.topics = by_topic
        .into_iter()
        .map(|(name, offsets)| {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = TopicName(str_bytes(name));
            rt.partitions = offsets
                .into_iter()
                .map(|o| {
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = o.partition;
                    p.committed_offset = o.offset;
                    p.committed_leader_epoch = o.leader_epoch;
                    p.metadata = Some(str_bytes(o.metadata));
                    p.error_code = o.error_code;
                    p
                })
                .collect();
            rt
        })
        .collect();
    respond(frame, &response)
}

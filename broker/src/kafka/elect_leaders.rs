//! ElectLeaders (v0–v2): preferred elections move a partition's leadership
//! back to its first replica when that replica is live and in sync
//! (ELECTION_NOT_NEEDED when it leads already, PREFERRED_LEADER_NOT_AVAILABLE
//! when it cannot); unclean elections give a leaderless partition any live
//! replica (ELIGIBLE_LEADERS_NOT_AVAILABLE when none is). Both go through
//! the controller quorum. With no partitions named, every partition that
//! could use one is elected and only those are answered, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;
use replication::controller::{Command, MetadataError};
use replication::partition_state::ElectError;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::Operation;
use crate::node::Node;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: ElectLeadersRequest,
) -> Result<Reply, HandlerError> {
    let mut response = ElectLeadersResponse::default();
    if !matches!(request.election_type, PREFERRED | UNCLEAN) {
        response.error_code = Kafka::InvalidRequest.code();
        return respond(frame, &response);
    }
    let unclean = request.election_type == UNCLEAN;
    let meta = shard.metadata();
    // As Kafka: Alter on the cluster, else every partition named is refused.
    if !super::authz::cluster(shard, &meta, frame, Operation::Alter) {
        let refused = Kafka::ClusterAuthorizationFailed.code();
        if frame.api_version() >= 1 {
            response.error_code = refused;
        }
        for t in request.topic_partitions.iter().flatten() {
            let mut result = ReplicaElectionResult::default();
            result.topic = t.topic.clone();
            for &p in &t.partitions {
                let mut r = PartitionResult::default();
                r.partition_id = p;
                r.error_code = refused;
                result.partition_result.push(r);
            }
            response.replica_election_results.push(result);
        }
        return respond(frame, &response);
    }
    // (topic, partitions) to elect, in request order.
    let wanted: Vec<(TopicName, Vec<i32>)> = match &request.topic_partitions {
        Some(named) => named
            .iter()
            .map(|t| (t.topic.clone(), t.partitions.clone()))
            .collect(),
        None => meta
            .topics
            .values()
            .map(|t| {
                let partitions = (0..t.partitions)
                    .filter(|&p| {
                        t.state(p).is_some_and(|s| match unclean {
                            true => s.leader.is_none(),
                            false => s.leader != s.replicas.first().copied(),
                        })
                    })
                    .collect::<Vec<i32>>();
                (TopicName(str_bytes(t.name.clone())), partitions)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect(),
    };
    for (topic, partitions) in wanted {
        let mut result = ReplicaElectionResult::default();
        result.topic = topic.clone();
        for p in partitions {
            let mut r = PartitionResult::default();
            r.partition_id = p;
            let known = meta
                .topic(topic.0.as_str())
                .is_some_and(|t| p >= 0 && p < t.partitions);
            let outcome = if known {
                let command = Command::ElectLeader {
                    topic: topic.0.to_string(),
                    partition: p as u32,
                    unclean,
                };
                match crate::cluster::Peers::submit(&**shard, command).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(MetadataError::Elect(ElectError::NotNeeded))) => Err((
                        Kafka::ElectionNotNeeded,
                        "Leader election not needed for topic partition".to_string(),
                    )),
                    Ok(Err(MetadataError::Elect(ElectError::NotAvailable))) => Err((
                        if unclean {
                            Kafka::EligibleLeadersNotAvailable
                        } else {
                            Kafka::PreferredLeaderNotAvailable
                        },
                        "No replica that may lead is live and in sync".to_string(),
                    )),
                    Ok(Err(e)) => Err((Kafka::UnknownTopicOrPartition, e.to_string())),
                    Err(e) => Err((Kafka::RequestTimedOut, e.to_string())),
                }
            } else {
                Err((
                    Kafka::UnknownTopicOrPartition,
                    "The partition does not exist.".to_string(),
                ))
            };
            if let Err((code, message)) = outcome {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(message));
            }
            result.partition_result.push(r);
        }
        response.replica_election_results.push(result);
    }
    respond(frame, &response)
}

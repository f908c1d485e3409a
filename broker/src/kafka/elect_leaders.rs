//! ElectLeaders (v0–v2): on a single node every partition's leader is its
//! preferred (and only) replica, so no election is ever needed: named
//! partitions answer ELECTION_NOT_NEEDED, unknown ones
//! UNKNOWN_TOPIC_OR_PARTITION, and "every partition" answers with none, as
//! Kafka leaves out the partitions it did not elect.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::shard::Shard;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    frame: &RequestFrame,
    request: ElectLeadersRequest,
) -> Result<Reply, HandlerError> {
    let mut response = ElectLeadersResponse::default();
    if !matches!(request.election_type, PREFERRED | UNCLEAN) {
        response.error_code = Kafka::InvalidRequest.code();
        return respond(frame, &response);
    }
    let meta = shard.metadata();
    for t in request.topic_partitions.iter().flatten() {
        let topic = meta.topic(t.topic.0.as_str());
        let mut result = ReplicaElectionResult::default();
        result.topic = t.topic.clone();
        result.partition_result = t
            .partitions
            .iter()
            .map(|&p| {
                let mut r = PartitionResult::default();
                r.partition_id = p;
                let (code, message) = match topic {
                    Some(topic) if p >= 0 && p < topic.partitions => (
                        Kafka::ElectionNotNeeded,
                        "Leader election not needed for topic partition",
                    ),
                    _ => (
                        Kafka::UnknownTopicOrPartition,
                        "The partition does not exist.",
                    ),
                };
                r.error_code = code.code();
                r.error_message = Some(str_bytes(message));
                r
            })
            .collect();
        response.replica_election_results.push(result);
    }
    respond(frame, &response)
}

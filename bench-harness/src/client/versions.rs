//! API version negotiation: the highest version of each API that both the
//! broker (from its ApiVersions answer) and `kafka_protocol` speak.

use std::collections::HashMap;

use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::{Message, Request, VersionRange};

use crate::error::{BenchError, Result};

pub const UNSUPPORTED_VERSION: i16 = 35;

/// What the broker advertised, by API key.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    broker: HashMap<i16, VersionRange>,
}

impl Versions {
    pub fn from_response(response: &ApiVersionsResponse) -> Versions {
        let broker = response
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        Versions { broker }
    }

    pub fn from_ranges(ranges: &[(i16, i16, i16)]) -> Versions {
        Versions {
            broker: ranges
                .iter()
                .map(|&(key, min, max)| (key, VersionRange { min, max }))
                .collect(),
        }
    }

    /// The version to use for request type `R`.
    pub fn pick<R: Request>(&self) -> Result<i16> {
        self.pick_range(R::KEY, api_name(R::KEY), R::VERSIONS)
    }

    pub fn pick_range(&self, key: i16, api: &'static str, ours: VersionRange) -> Result<i16> {
        let Some(theirs) = self.broker.get(&key) else {
            return Err(BenchError::NoCommonVersion {
                api,
                broker_min: -1,
                broker_max: -1,
                client_min: ours.min,
                client_max: ours.max,
            });
        };
        let both = ours.intersect(theirs);
        if both.is_empty() {
            return Err(BenchError::NoCommonVersion {
                api,
                broker_min: theirs.min,
                broker_max: theirs.max,
                client_min: ours.min,
                client_max: ours.max,
            });
        }
        Ok(both.max)
    }

    pub fn supports<R: Request + Message>(&self) -> bool {
        self.pick::<R>().is_ok()
    }
}

pub fn api_name(key: i16) -> &'static str {
    match key {
        0 => "Produce",
        1 => "Fetch",
        2 => "ListOffsets",
        3 => "Metadata",
        18 => "ApiVersions",
        19 => "CreateTopics",
        _ => "an API",
    }
}

/// Names for the error codes a benchmark run is likely to meet.
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        87 => "INVALID_RECORD",
        100 => "UNKNOWN_TOPIC_ID",
        _ => "see the Kafka protocol error codes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchRequest, ProduceRequest};

    #[test]
    fn picks_the_highest_common_version() {
        let v = Versions::from_ranges(&[(0, 3, 9), (1, 4, 40)]);
        assert_eq!(v.pick::<ProduceRequest>().expect("produce"), 9);
        assert_eq!(
            v.pick::<FetchRequest>().expect("fetch"),
            FetchRequest::VERSIONS.max
        );
    }

    #[test]
    fn refuses_disjoint_or_missing_ranges() {
        let v = Versions::from_ranges(&[(0, 0, 2)]);
        assert!(matches!(
            v.pick::<ProduceRequest>(),
            Err(BenchError::NoCommonVersion { .. })
        ));
        assert!(v.pick::<FetchRequest>().is_err());
    }
}

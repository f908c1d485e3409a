//! The durability profiles (`profile`): named bundles of fsync choices
//! that the benchmark harness compares.

use serde::Deserialize;

/// Named bundles of durability choices, compared by the benchmark harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Acknowledge only what an fdatasync covers (group commit).
    Durable,
    /// fdatasync at least every `fsync_interval_ms` or `fsync_interval_bytes`.
    Balanced,
    /// Never fdatasync on the produce path; the kernel flushes.
    Throughput,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "durable" => Some(Profile::Durable),
            "balanced" => Some(Profile::Balanced),
            "throughput" => Some(Profile::Throughput),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Durable => "durable",
            Profile::Balanced => "balanced",
            Profile::Throughput => "throughput",
        }
    }
}

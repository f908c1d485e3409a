//! The operator commands of the `sluice` binary (`topic`, `produce`,
//! `consume`, `group`, `cluster`, `user`, `acl`): Kafka clients over the wire protocol,
//! so they work against any Kafka-compatible broker. Only these commands
//! create librdkafka clients; `serve` never reaches this module.

pub mod acl;
pub mod client;
pub mod cluster;
pub mod consume;
pub mod group;
pub mod output;
pub mod produce;
pub mod properties;
pub mod topic;
pub mod user;

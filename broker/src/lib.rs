//! The Sluice broker: configuration, the shard runtime, the partitions each
//! shard owns, topic metadata, and one handler per Kafka API. The `sluice`
//! binary (main.rs) is a thin CLI over `server::run`.

pub mod acl;
pub mod alloc;
pub mod batch;
pub mod cleaner;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod errors;
pub mod footprint;
pub mod group;
pub mod in_line;
pub mod ingest;
pub mod kafka;
pub mod listener;
pub mod mesh;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod partition;
pub mod peers;
pub mod preflight;
pub mod producer_ids;
pub mod replicas;
pub mod route;
pub mod rt;
pub mod security;
pub mod server;
pub mod shard;
pub mod signal;
pub mod topic_config;

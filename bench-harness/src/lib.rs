//! `sluice-bench`: a Kafka-protocol load generator and latency recorder for
//! Sluice or any Kafka-compatible broker, on the same thread-per-core
//! runtime as the broker so that the load itself costs little CPU.

pub mod broker_proc;
pub mod client;
pub mod clock;
pub mod compare;
pub mod connections;
pub mod error;
pub mod goals;
pub mod http_load;
pub mod limits;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod workload;

pub use error::BenchError;

//! `sluice-bench` (not built yet): a Kafka-protocol load generator and
//! latency recorder for Sluice or any Kafka-compatible broker.

//! Security of the Kafka listeners: the TLS configuration of the SSL
//! listeners and its reload (`tls`), who a connection is (`principal`),
//! SASL authentication (`sasl`) with SCRAM (`scram`) and PLAIN against the
//! SCRAM credentials of the cluster metadata, and the credentials seeded
//! at start (`bootstrap`).

pub mod bootstrap;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

//! Security of the Kafka listeners: the TLS configuration of the SSL
//! listeners and its reload (`tls`), who a connection is (`principal`),
//! SASL authentication (`sasl`) with SCRAM (`scram`) and PLAIN against the
//! SCRAM credentials of the cluster metadata, OAuth bearer tokens
//! (`oauth`: JWTs checked against a JWKS), and the credentials seeded at
//! start (`bootstrap`).

pub mod bootstrap;
pub mod oauth;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

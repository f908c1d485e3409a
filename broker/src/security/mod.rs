//! Security of the Kafka listeners: the TLS configuration of the SSL
//! listeners and its reload (`tls`), and who a connection is
//! (`principal`).

pub mod principal;
pub mod tls;

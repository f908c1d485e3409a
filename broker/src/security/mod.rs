//! Security of the Kafka listeners and the HTTP endpoints: the TLS
//! configuration of the SSL listeners and HTTPS, and its reload (`tls`),
//! who a connection is (`principal`), SASL authentication (`sasl`) with
//! SCRAM (`scram`) and PLAIN against the SCRAM credentials of the cluster
//! metadata, OAuth bearer tokens (`oauth`: JWTs checked against a JWKS),
//! the password check PLAIN and HTTP Basic share (`password`), the ingest
//! listener's HTTP authentication (`http_auth`) and its cache of checked
//! passwords (`credential_cache`), and the credentials seeded at start
//! (`bootstrap`). Authorization is `crate::acl`.

pub mod bootstrap;
pub mod credential_cache;
pub mod http_auth;
pub mod oauth;
pub mod password;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

//! How the harness's connections reach a secured listener: TLS (rustls,
//! trusting the CA given, or the one the harness made for its embedded
//! broker) and SASL after ApiVersions (PLAIN, SCRAM-SHA-256/512, as
//! librdkafka does it: SaslHandshake v1, then SaslAuthenticate tokens).
//! Every connection of a run is secured the same way, so the setting is
//! the process's, replaced before each run (each embedded broker has its
//! own certificate).

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::scram::ScramClient;
use super::Connection;
use crate::error::{BenchError, Result};

/// The mechanisms the harness can log in with.
pub const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

/// A SASL login.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

/// Without the password: options are printed in errors and reports.
impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How connections are secured.
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<Arc<ClientConfig>>,
    pub sasl: Option<SaslLogin>,
}

impl Security {
    /// Kafka's name of the listener protocol this security speaks to.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }
}

static CURRENT: RwLock<Option<Security>> = RwLock::new(None);

/// Secures every connection made from now on.
pub fn install(security: Security) {
    match CURRENT.write() {
        Ok(mut c) => *c = Some(security),
        Err(p) => *p.into_inner() = Some(security),
    }
}

/// The security connections use now.
pub fn current() -> Security {
    let read = |c: &Option<Security>| c.clone().unwrap_or_default();
    match CURRENT.read() {
        Ok(c) => read(&c),
        Err(p) => read(&p.into_inner()),
    }
}

/// How a run's connections are secured: over TLS (`tls`) trusting the
/// embedded broker's CA, or with `--bootstrap` the one given (`tls_ca`);
/// logged in as `sasl`.
pub fn for_run(
    tls: bool,
    embedded_ca: Option<&Path>,
    tls_ca: Option<&Path>,
    sasl: Option<SaslLogin>,
) -> Result<Security> {
    let tls = match (tls, embedded_ca.or(tls_ca)) {
        (false, _) => None,
        (true, Some(ca)) => Some(tls_client(ca)?),
        (true, None) => {
            return Err(BenchError::Config {
                key: "tls-ca",
                value: String::new(),
                allowed: "the CA file of the broker's certificate, with --tls and --bootstrap"
                    .into(),
            })
        }
    };
    Ok(Security { tls, sasl })
}

/// A client configuration trusting the CA certificates in `ca` (PEM).
pub fn tls_client(ca: &Path) -> Result<Arc<ClientConfig>> {
    let bad = |reason: String| BenchError::Config {
        key: "tls-ca",
        value: ca.display().to_string(),
        allowed: reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("a PEM file with CA certificates".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    // ring, as the broker: no C library build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a broker's certificate must carry: the host of `addr`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|e| BenchError::Unreachable {
        addr: addr.to_string(),
        message: format!("not a TLS server name: {e}"),
    })
}

fn refused(addr: &str, message: String) -> BenchError {
    BenchError::Unreachable {
        addr: addr.to_string(),
        message: format!("SASL authentication failed: {message}"),
    }
}

/// Logs `conn` in; its ApiVersions is done.
pub async fn authenticate(conn: &mut Connection, login: &SaslLogin) -> Result<()> {
    let addr = conn.writer.addr.clone();
    let handshake = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_string(login.mechanism.clone()));
    let answer = conn.call(&handshake).await?;
    if answer.error_code != 0 {
        let offered: Vec<String> = answer.mechanisms.iter().map(|m| m.to_string()).collect();
        return Err(refused(
            &addr,
            format!(
                "{} not offered (the broker offers {})",
                login.mechanism,
                offered.join(", ")
            ),
        ));
    }
    let step =
        |token: Vec<u8>| SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
    let check = |code: i16, message: Option<StrBytes>| -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        Err(refused(
            &addr,
            message.map_or_else(|| format!("error code {code}"), |m| m.to_string()),
        ))
    };
    match login.mechanism.as_str() {
        "PLAIN" => {
            let token = format!("\0{}\0{}", login.username, login.password).into_bytes();
            let answer = conn.call(&step(token)).await?;
            check(answer.error_code, answer.error_message)
        }
        mechanism => {
            let mut scram = ScramClient::new(mechanism, &login.username, &login.password)
                .ok_or_else(|| refused(&addr, format!("{mechanism} is not supported here")))?;
            let answer = conn.call(&step(scram.client_first())).await?;
            check(answer.error_code, answer.error_message)?;
            let last = scram
                .client_final(&answer.auth_bytes)
                .map_err(|e| refused(&addr, e))?;
            let answer = conn.call(&step(last)).await?;
            check(answer.error_code, answer.error_message)?;
            scram
                .verify_server(&answer.auth_bytes)
                .map_err(|e| refused(&addr, e))
        }
    }
}

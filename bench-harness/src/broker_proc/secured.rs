//! The embedded broker's secured listener: which protocol it speaks, and
//! the CA and certificate made for a TLS run.

use std::path::Path;

use crate::client::security::SaslLogin;
use crate::error::{BenchError, Result};

/// What the embedded broker's one Kafka listener speaks.
#[derive(Debug, Clone, Default)]
pub struct ListenerSecurity {
    pub tls: bool,
    /// The login to create (from a bootstrap file) and to offer.
    pub sasl: Option<SaslLogin>,
}

impl ListenerSecurity {
    pub(super) fn protocol(&self) -> &'static str {
        match (self.tls, self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as
/// `ca.pem`, `server.pem` and `server.key` in `dir`.
pub(super) fn make_certificates(dir: &Path) -> Result<()> {
    let failed = |e: rcgen::Error| BenchError::Runtime(format!("making certificates: {e}"));
    let ca_key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice-bench CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(failed)?;
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(failed)?;
    let cert = params.signed_by(&key, &ca).map_err(failed)?;
    for (name, text) in [
        ("ca.pem", ca.pem()),
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), text)
            .map_err(|e| BenchError::io(format!("writing {name}"), e))?;
    }
    Ok(())
}

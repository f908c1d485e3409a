//! The TLS configuration of the SSL listeners: certificate chain, key and
//! client CA read from PEM files, checked (a key that does not match its
//! certificate is refused), and read again on SIGHUP. A reload builds a
//! whole new configuration off the shards and swaps it in; connections
//! accepted afterwards get it, open ones keep the one they started with.
//! A reload that fails keeps the configuration in use and says why.

use std::path::Path;
use std::sync::{Arc, RwLock};

use net::tls_stream::PeerTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{ClientAuth, ClusterTlsFiles, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// The TLS listeners' configurations, shared by every shard: SSL
/// listeners ask for client certificates as `tls_client_auth` says;
/// SASL_SSL listeners never do, since SASL says who the client is (Kafka
/// ignores the broker-wide `ssl.client.auth` there too).
pub struct ServerTls {
    files: TlsFiles,
    /// (SSL, SASL_SSL).
    current: RwLock<(Arc<ServerConfig>, Arc<ServerConfig>)>,
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let configs = build_both(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(configs),
        })
    }

    /// The configuration a connection accepted now uses, on a SASL_SSL
    /// listener (`sasl`) or an SSL one.
    pub fn config(&self, sasl: bool) -> Arc<ServerConfig> {
        let pick = |c: &(Arc<ServerConfig>, Arc<ServerConfig>)| {
            if sasl {
                c.1.clone()
            } else {
                c.0.clone()
            }
        };
        match self.current.read() {
            Ok(c) => pick(&c),
            Err(poisoned) => pick(&poisoned.into_inner()),
        }
    }

    /// Reads the files again; on success new connections use them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = build_both(&self.files)?;
        match self.current.write() {
            Ok(mut c) => *c = configs,
            Err(poisoned) => *poisoned.into_inner() = configs,
        }
        Ok(())
    }
}

fn build_both(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsError> {
    let sasl = TlsFiles {
        client_auth: ClientAuth::None,
        ..files.clone()
    };
    Ok((build(files)?, build(&sasl)?))
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    // TLS 1.2 and 1.3 only, with the provider's suites: AEAD ciphers with
    // forward secrecy, nothing older.
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid {
            what: "TLS versions",
            reason: e.to_string(),
        })?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Invalid {
                what: "tls_client_ca",
                reason: e.to_string(),
            })?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid {
            what: "tls_cert and tls_key",
            reason: e.to_string(),
        })?;
    // Kafka clients reconnect rarely; resumption tickets would be state to
    // rotate with the keys for little gain.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The links between nodes: mutual TLS with the cluster CA as the one
/// trust boundary. Every certificate the CA signed is a node; names are
/// not checked, since a node is dialled at whatever address the metadata
/// or `controller_voters` gives, which certificates rarely list. A cluster
/// CA must therefore sign nodes' certificates and nothing else.
pub struct ClusterTls {
    files: ClusterTlsFiles,
    peer: Arc<PeerTls>,
}

impl ClusterTls {
    pub fn load(files: ClusterTlsFiles) -> Result<ClusterTls, TlsError> {
        let (server, client) = build_cluster(&files)?;
        Ok(ClusterTls {
            files,
            peer: Arc::new(PeerTls::new(server, client)),
        })
    }

    /// What the links hold.
    pub fn peer(&self) -> Arc<PeerTls> {
        self.peer.clone()
    }

    /// Reads the files again; on success new links use them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (server, client) = build_cluster(&self.files)?;
        self.peer.replace(server, client);
        Ok(())
    }
}

#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    // ring rather than aws-lc-rs: no C library build on a 2-core CI, at
    // the cost of the post-quantum hybrid key exchange, which rustls marks
    // by deprecating ring's provider (see ARCHITECTURE.md, Security).
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_cluster(
    files: &ClusterTlsFiles,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    let provider = provider();
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let mut roots = RootCertStore::empty();
    for cert in certificates(&files.ca)? {
        roots.add(cert).map_err(|e| file_error(&files.ca, e))?;
    }
    let roots = Arc::new(roots);
    let invalid = |what: &'static str| {
        move |e: rustls::Error| TlsError::Invalid {
            what,
            reason: e.to_string(),
        }
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Invalid {
            what: "cluster_tls_ca",
            reason: e.to_string(),
        })?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(invalid("TLS versions"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(invalid("cluster_tls_cert and cluster_tls_key"))?;
    server.send_tls13_tickets = 0;
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(invalid("TLS versions"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterCa { roots, provider }))
        .with_client_auth_cert(chain, key)
        .map_err(invalid("cluster_tls_cert and cluster_tls_key"))?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// Accepts a server whose chain the cluster CA signed, at any name.
#[derive(Debug)]
struct ClusterCa {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

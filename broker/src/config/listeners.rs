//! The Kafka listeners: `listeners` and `advertised_listeners` in Kafka's
//! `PROTOCOL://HOST:PORT` form, or the one-PLAINTEXT-listener shorthand
//! (`listen`, `advertise`), and the TLS settings the SSL listeners use.
//! A listener is named by its security protocol, as Kafka names them when
//! no `listener.security.protocol.map` is given, so each protocol appears
//! at most once.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The SASL mechanisms Sluice implements, in Kafka's names.
pub const SASL_MECHANISMS: [&str; 4] = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "OAUTHBEARER"];

/// One Kafka listener: what it speaks, where it binds, and the address
/// clients that connect through it are told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised: (String, i32),
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// The certificate and key SSL listeners present, and whether they ask
/// clients for certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

const FORM: &str = "comma-separated PROTOCOL://HOST:PORT, PROTOCOL one of PLAINTEXT, SSL, \
                    SASL_PLAINTEXT, SASL_SSL, e.g. PLAINTEXT://127.0.0.1:9092,SSL://0.0.0.0:9093";

/// Splits `PROTOCOL://HOST:PORT` entries; an empty host binds every
/// interface, as in Kafka.
fn entries(
    key: &'static str,
    text: &str,
) -> Result<Vec<(SecurityProtocol, String, u16)>, ConfigError> {
    let bad = |value: &str, why: &str| ConfigError {
        key,
        value: value.to_string(),
        allowed: format!("{FORM} ({why})"),
    };
    let mut out: Vec<(SecurityProtocol, String, u16)> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (protocol, address) = entry
            .split_once("://")
            .ok_or_else(|| bad(entry, "no ://"))?;
        let protocol = SecurityProtocol::parse(protocol)
            .ok_or_else(|| bad(entry, "unknown security protocol"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| bad(entry, "no port"))?;
        let port: u16 = port.parse().map_err(|_| bad(entry, "bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if out.iter().any(|(p, _, _)| *p == protocol) {
            return Err(bad(entry, "each protocol at most once"));
        }
        out.push((protocol, host.to_string(), port));
    }
    if out.is_empty() {
        return Err(bad(text, "no listener"));
    }
    Ok(out)
}

impl Config {
    /// The Kafka listeners, in the order given; the first is the one the
    /// cluster's own records name (`advertised`).
    pub fn kafka_listeners(&self) -> Result<Vec<Listener>, ConfigError> {
        if self.listeners.trim().is_empty() {
            if !self.advertised_listeners.trim().is_empty() {
                return Err(ConfigError {
                    key: "advertised_listeners",
                    value: self.advertised_listeners.clone(),
                    allowed: "only together with listeners".into(),
                });
            }
            return Ok(vec![Listener {
                protocol: SecurityProtocol::Plaintext,
                bind: self.listen_addr()?,
                advertised: self.shorthand_advertised()?,
            }]);
        }
        if self.advertise.is_some() {
            return Err(ConfigError {
                key: "advertise",
                value: self.advertise.clone().unwrap_or_default(),
                allowed: "unset when listeners is given (use advertised_listeners)".into(),
            });
        }
        let advertised = if self.advertised_listeners.trim().is_empty() {
            Vec::new()
        } else {
            entries("advertised_listeners", &self.advertised_listeners)?
        };
        let mut out: Vec<Listener> = Vec::new();
        for (protocol, host, port) in entries("listeners", &self.listeners)? {
            let ip = if host.is_empty() { "0.0.0.0" } else { &host };
            let bind: SocketAddr = format!("{ip}:{port}")
                .parse()
                .or_else(|_| format!("[{ip}]:{port}").parse())
                .map_err(|_| ConfigError {
                    key: "listeners",
                    value: format!("{}://{host}:{port}", protocol.name()),
                    allowed: "an IP address to bind (a host name is for advertised_listeners)"
                        .into(),
                })?;
            if out.iter().any(|l| l.bind.port() == port && port != 0) {
                return Err(ConfigError {
                    key: "listeners",
                    value: self.listeners.clone(),
                    allowed: format!("a port for each listener ({port} is given twice)"),
                });
            }
            let told = match advertised.iter().find(|(p, _, _)| *p == protocol) {
                Some((_, h, p)) if !h.is_empty() && *p != 0 => (h.clone(), i32::from(*p)),
                Some((_, h, p)) => {
                    return Err(ConfigError {
                        key: "advertised_listeners",
                        value: format!("{}://{h}:{p}", protocol.name()),
                        allowed: "a host clients can reach and a port between 1 and 65535".into(),
                    })
                }
                None if bind.ip().is_unspecified() || port == 0 => {
                    return Err(ConfigError {
                        key: "advertised_listeners",
                        value: self.advertised_listeners.clone(),
                        allowed: format!(
                            "an entry for {}, required when it listens on {bind}",
                            protocol.name()
                        ),
                    })
                }
                None => (bind.ip().to_string(), i32::from(port)),
            };
            out.push(Listener {
                protocol,
                bind,
                advertised: told,
            });
        }
        if let Some((p, _, _)) = advertised
            .iter()
            .find(|(p, _, _)| !out.iter().any(|l| l.protocol == *p))
        {
            return Err(ConfigError {
                key: "advertised_listeners",
                value: self.advertised_listeners.clone(),
                allowed: format!("only protocols of listeners ({} is not one)", p.name()),
            });
        }
        Ok(out)
    }

    /// The SASL mechanisms enabled, in order.
    pub fn sasl_mechanisms(&self) -> Result<Vec<String>, ConfigError> {
        let bad = |why: &str| ConfigError {
            key: "sasl_mechanisms",
            value: self.sasl_mechanisms.clone(),
            allowed: format!(
                "comma-separated, each once, of {} ({why})",
                SASL_MECHANISMS.join(", ")
            ),
        };
        let mut out: Vec<String> = Vec::new();
        for m in self.sasl_mechanisms.split(',').map(str::trim) {
            if !SASL_MECHANISMS.contains(&m) {
                return Err(bad(&format!("{m:?} is not one")));
            }
            if out.iter().any(|o| o == m) {
                return Err(bad(&format!("{m} is given twice")));
            }
            out.push(m.to_string());
        }
        Ok(out)
    }

    /// The mechanisms a listener of `protocol` offers: PLAIN only under
    /// TLS, unless `sasl_plain_insecure`.
    pub fn offered(&self, protocol: SecurityProtocol) -> Result<Vec<String>, ConfigError> {
        let mut all = self.sasl_mechanisms()?;
        if !protocol.tls() && !self.sasl_plain_insecure {
            all.retain(|m| m != "PLAIN");
        }
        Ok(all)
    }

    /// The TLS files the SSL listeners and the HTTPS endpoints need; `None`
    /// when nothing uses TLS.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let listeners = self.kafka_listeners()?;
        let client_auth = match self.tls_client_auth.as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => {
                return Err(ConfigError {
                    key: "tls_client_auth",
                    value: other.into(),
                    allowed: "none, requested or required".into(),
                })
            }
        };
        if client_auth != ClientAuth::None && self.tls_client_ca.is_none() {
            return Err(ConfigError {
                key: "tls_client_auth",
                value: self.tls_client_auth.clone(),
                allowed:
                    "none unless tls_client_ca names the CA client certificates are checked against"
                        .into(),
            });
        }
        // Who needs the files, in the order a missing one is reported.
        let users = [
            (
                "tls_cert",
                listeners.iter().any(|l| l.protocol.tls()),
                "a PEM certificate chain, with tls_key, for the SSL and SASL_SSL listeners",
            ),
            (
                "metrics_tls",
                self.metrics_tls,
                "true only with tls_cert and tls_key set (the certificate HTTPS presents)",
            ),
            (
                "ingest_http_tls",
                self.ingest_http_tls,
                "true only with tls_cert and tls_key set (the certificate HTTPS presents)",
            ),
        ];
        let Some((key, _, allowed)) = users.into_iter().find(|(_, needed, _)| *needed) else {
            return Ok(None);
        };
        let (Some(cert), Some(key_file)) = (&self.tls_cert, &self.tls_key) else {
            return Err(ConfigError {
                key,
                value: if key == "tls_cert" {
                    String::new()
                } else {
                    "true".into()
                },
                allowed: allowed.into(),
            });
        };
        Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key_file.clone(),
            client_ca: self.tls_client_ca.clone(),
            client_auth,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(listeners: &str, advertised: &str) -> Config {
        Config {
            listeners: listeners.into(),
            advertised_listeners: advertised.into(),
            ..Config::default()
        }
    }

    #[test]
    fn the_shorthand_is_one_plaintext_listener() {
        let l = Config::default().kafka_listeners().expect("ok");
        assert_eq!(
            l,
            vec![Listener {
                protocol: SecurityProtocol::Plaintext,
                bind: "127.0.0.1:9092".parse().expect("addr"),
                advertised: ("127.0.0.1".into(), 9092),
            }]
        );
    }

    #[test]
    fn listeners_take_kafkas_form_and_advertise_each() {
        let l = with(
            "PLAINTEXT://127.0.0.1:9092, SASL_SSL://0.0.0.0:9093,ssl://[::1]:9094",
            "SASL_SSL://broker1.example:19093",
        )
        .kafka_listeners()
        .expect("ok");
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l[0].advertised, ("127.0.0.1".into(), 9092));
        assert_eq!(l[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            l[1].bind,
            "0.0.0.0:9093".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(l[1].advertised, ("broker1.example".into(), 19093));
        assert_eq!(l[2].protocol, SecurityProtocol::Ssl);
        assert_eq!(l[2].bind, "[::1]:9094".parse::<SocketAddr>().expect("addr"));
        assert_eq!(l[2].advertised, ("::1".into(), 9094));
    }

    #[test]
    fn bad_listeners_name_the_key_and_the_problem() {
        for (listeners, advertised, key) in [
            ("PLAINTEXT//127.0.0.1:9092", "", "listeners"),
            ("TLS://127.0.0.1:9092", "", "listeners"),
            ("PLAINTEXT://127.0.0.1", "", "listeners"),
            (
                "PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093",
                "",
                "listeners",
            ),
            (
                "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9092",
                "",
                "listeners",
            ),
            ("PLAINTEXT://broker.example:9092", "", "listeners"),
            ("PLAINTEXT://0.0.0.0:9092", "", "advertised_listeners"),
            (
                "PLAINTEXT://127.0.0.1:9092",
                "SSL://h:9093",
                "advertised_listeners",
            ),
            (
                "PLAINTEXT://127.0.0.1:9092",
                "PLAINTEXT://:9093",
                "advertised_listeners",
            ),
            (",", "", "listeners"),
        ] {
            let e = with(listeners, advertised)
                .kafka_listeners()
                .expect_err(listeners);
            assert_eq!(e.key, key, "{listeners} / {advertised}: {e}");
        }
        let e = Config {
            advertised_listeners: "PLAINTEXT://h:1".into(),
            ..Config::default()
        }
        .kafka_listeners()
        .expect_err("advertised without listeners");
        assert_eq!(e.key, "advertised_listeners");
        let e = Config {
            listeners: "PLAINTEXT://127.0.0.1:9092".into(),
            advertise: Some("h:1".into()),
            ..Config::default()
        }
        .kafka_listeners()
        .expect_err("advertise with listeners");
        assert_eq!(e.key, "advertise");
    }

    #[test]
    fn sasl_mechanisms_are_kafkas_names_and_plain_needs_tls() {
        let c = Config {
            sasl_mechanisms: "SCRAM-SHA-256, PLAIN".into(),
            ..Config::default()
        };
        assert_eq!(
            c.sasl_mechanisms().expect("ok"),
            vec!["SCRAM-SHA-256".to_string(), "PLAIN".to_string()]
        );
        assert_eq!(
            c.offered(SecurityProtocol::SaslSsl).expect("ok"),
            vec!["SCRAM-SHA-256".to_string(), "PLAIN".to_string()]
        );
        assert_eq!(
            c.offered(SecurityProtocol::SaslPlaintext).expect("ok"),
            vec!["SCRAM-SHA-256".to_string()],
            "no PLAIN in clear text unless asked for"
        );
        let insecure = Config {
            sasl_plain_insecure: true,
            ..c
        };
        assert_eq!(
            insecure
                .offered(SecurityProtocol::SaslPlaintext)
                .expect("ok")
                .len(),
            2
        );
        let nothing_offered = Config {
            listeners: "SASL_PLAINTEXT://127.0.0.1:9093".into(),
            sasl_mechanisms: "PLAIN".into(),
            ..Config::default()
        };
        assert_eq!(
            nothing_offered.validate().expect_err("no mechanism").key,
            "sasl_mechanisms"
        );
        for bad in ["", "GSSAPI", "scram-sha-256", "PLAIN,PLAIN", "oauthbearer"] {
            let c = Config {
                sasl_mechanisms: bad.into(),
                ..Config::default()
            };
            assert_eq!(c.sasl_mechanisms().expect_err(bad).key, "sasl_mechanisms");
        }
    }

    #[test]
    fn ssl_listeners_need_a_certificate_and_key() {
        let c = with("SSL://127.0.0.1:9093", "");
        assert_eq!(c.tls_files().expect_err("no cert").key, "tls_cert");
        let c = Config {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..c
        };
        let files = c.tls_files().expect("ok").expect("tls");
        assert_eq!(files.client_auth, ClientAuth::None);
        assert_eq!(
            Config::default().tls_files().expect("ok"),
            None,
            "no TLS listener, no TLS files"
        );
        let c = Config {
            tls_client_auth: "required".into(),
            ..c
        };
        assert_eq!(
            c.tls_files().expect_err("required without a CA").key,
            "tls_client_auth"
        );
        let c = Config {
            tls_client_ca: Some("ca.pem".into()),
            ..c
        };
        assert_eq!(
            c.tls_files().expect("ok").expect("tls").client_auth,
            ClientAuth::Required
        );
        let c = Config {
            tls_client_auth: "sometimes".into(),
            ..c
        };
        assert_eq!(c.tls_files().expect_err("bad").key, "tls_client_auth");
    }
}

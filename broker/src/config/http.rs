//! The security of the HTTP endpoints: HTTPS on the metrics endpoint and
//! the ingest listener (`metrics_tls`, `ingest_http_tls`, which take the
//! SSL listeners' files, see `listeners`), and what a write to the ingest
//! listener must present (`ingest_http_auth`).

use super::{Config, ConfigError};

/// What a write to the ingest HTTP listener must present
/// (`ingest_http_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAuthMode {
    /// Nothing: every write is taken (as `User:ANONYMOUS`).
    None,
    /// A user name and password (HTTP Basic, InfluxDB's `Token
    /// USER:PASSWORD`, or `u` and `p` on `/write`), checked against the
    /// SCRAM credentials of the cluster.
    Basic,
    /// A bearer token (`Authorization: Bearer JWT`, or InfluxDB's `Token
    /// JWT`), checked as OAUTHBEARER tokens are.
    Bearer,
    /// Either.
    BasicOrBearer,
}

impl HttpAuthMode {
    pub fn takes_passwords(self) -> bool {
        matches!(self, HttpAuthMode::Basic | HttpAuthMode::BasicOrBearer)
    }

    pub fn takes_tokens(self) -> bool {
        matches!(self, HttpAuthMode::Bearer | HttpAuthMode::BasicOrBearer)
    }
}

impl Config {
    /// `ingest_http_auth`, checked: a password travels in clear over plain
    /// HTTP, so `basic` needs `ingest_http_tls` unless
    /// `ingest_http_auth_insecure` says otherwise.
    pub fn ingest_http_auth(&self) -> Result<HttpAuthMode, ConfigError> {
        let mut parts: Vec<&str> = self
            .ingest_http_auth
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        parts.sort_unstable();
        parts.dedup();
        let mode = match parts.as_slice() {
            ["none"] => HttpAuthMode::None,
            ["basic"] => HttpAuthMode::Basic,
            ["bearer"] => HttpAuthMode::Bearer,
            ["basic", "bearer"] => HttpAuthMode::BasicOrBearer,
            _ => {
                return Err(ConfigError {
                    key: "ingest_http_auth",
                    value: self.ingest_http_auth.clone(),
                    allowed: "none, basic, bearer, or basic,bearer".into(),
                })
            }
        };
        if mode != HttpAuthMode::None && !self.ingest_http_tls && !self.ingest_http_auth_insecure {
            return Err(ConfigError {
                key: "ingest_http_auth",
                value: self.ingest_http_auth.clone(),
                allowed: "basic or bearer only with ingest_http_tls, or with \
                          ingest_http_auth_insecure to take secrets over plain HTTP"
                    .into(),
            });
        }
        let unused = [
            (
                "metrics_tls",
                self.metrics_tls,
                self.metrics_listen.is_empty(),
            ),
            (
                "ingest_http_tls",
                self.ingest_http_tls,
                self.ingest_http_listen.is_empty(),
            ),
            (
                "ingest_http_auth",
                mode != HttpAuthMode::None,
                self.ingest_http_listen.is_empty(),
            ),
        ];
        if let Some((key, _, _)) = unused.iter().find(|(_, set, off)| *set && *off) {
            return Err(ConfigError {
                key,
                value: if *key == "ingest_http_auth" {
                    self.ingest_http_auth.clone()
                } else {
                    "true".into()
                },
                allowed: "set only with the endpoint's address (metrics_listen, \
                          ingest_http_listen)"
                    .into(),
            });
        }
        Ok(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsFiles;

    fn ingest(auth: &str, tls: bool, insecure: bool) -> Config {
        Config {
            ingest_http_listen: "127.0.0.1:8086".into(),
            ingest_http_auth: auth.into(),
            ingest_http_tls: tls,
            ingest_http_auth_insecure: insecure,
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..Config::default()
        }
    }

    #[test]
    fn basic_needs_https_unless_insecure() {
        assert_eq!(
            ingest("none", false, false).ingest_http_auth(),
            Ok(HttpAuthMode::None)
        );
        assert_eq!(
            ingest("basic", true, false).ingest_http_auth(),
            Ok(HttpAuthMode::Basic)
        );
        assert_eq!(
            ingest("basic", false, false)
                .validate()
                .expect_err("basic over HTTP")
                .key,
            "ingest_http_auth"
        );
        assert_eq!(
            ingest("basic", false, true).ingest_http_auth(),
            Ok(HttpAuthMode::Basic)
        );
        for (text, mode) in [
            ("bearer", HttpAuthMode::Bearer),
            ("basic,bearer", HttpAuthMode::BasicOrBearer),
            (" bearer , basic ", HttpAuthMode::BasicOrBearer),
        ] {
            assert_eq!(ingest(text, true, false).ingest_http_auth(), Ok(mode));
        }
        assert_eq!(
            ingest("bearer", false, false)
                .ingest_http_auth()
                .expect_err("tokens over HTTP")
                .key,
            "ingest_http_auth"
        );
        // Bearer tokens are checked against a JWKS, which must be given.
        assert_eq!(
            ingest("bearer", true, false)
                .validate()
                .expect_err("no JWKS")
                .key,
            "oauth_jwks"
        );
        for bad in ["Basic", "basic,none", "token", ""] {
            assert_eq!(
                ingest(bad, true, false)
                    .ingest_http_auth()
                    .expect_err(bad)
                    .key,
                "ingest_http_auth"
            );
        }
        let off = Config {
            ingest_http_listen: String::new(),
            ..ingest("basic", true, false)
        };
        assert_eq!(
            off.validate().expect_err("no listener").key,
            "ingest_http_tls"
        );
    }

    #[test]
    fn https_endpoints_need_the_certificate() {
        let c = Config {
            metrics_tls: true,
            ..Config::default()
        };
        assert_eq!(c.validate().expect_err("no cert").key, "metrics_tls");
        let c = Config {
            ingest_http_listen: "127.0.0.1:8086".into(),
            ingest_http_tls: true,
            ..Config::default()
        };
        let e = c.validate().expect_err("no cert");
        assert_eq!(e.key, "ingest_http_tls");
        assert!(e.to_string().contains("tls_cert"), "{e}");
        let c = Config {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            metrics_tls: true,
            ..Config::default()
        };
        c.validate().expect("metrics over HTTPS");
        assert_eq!(
            c.tls_files().expect("ok").map(|f: TlsFiles| f.cert),
            Some("c.pem".into()),
            "HTTPS alone loads the files"
        );
        let c = Config {
            metrics_listen: String::new(),
            ..c
        };
        assert_eq!(c.validate().expect_err("metrics off").key, "metrics_tls");
    }
}

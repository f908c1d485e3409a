//! The OAUTHBEARER settings (`oauth_*`, Kafka's `sasl.oauthbearer.*`) and
//! `connections_max_reauth_ms`, checked: a listener that offers
//! OAUTHBEARER needs a JWKS to check tokens against, or the unsecured mode
//! said out loud.

use super::{Config, ConfigError};

/// The JWKS is read again at most this often on its schedule.
const JWKS_REFRESH_MS_MIN: u64 = 1000;

impl Config {
    /// Whether a SASL listener offers OAUTHBEARER.
    pub fn oauth_offered(&self) -> bool {
        let ingest = self.ingest_http_auth().is_ok_and(|m| m.takes_tokens())
            && !self.ingest_http_listen.is_empty();
        ingest
            || self.kafka_listeners().is_ok_and(|listeners| {
                listeners.iter().any(|l| {
                    l.protocol.sasl()
                        && self
                            .offered(l.protocol)
                            .is_ok_and(|m| m.iter().any(|m| m == "OAUTHBEARER"))
                })
            })
    }

    /// `oauth_jwks`, `None` when unset or empty.
    pub fn oauth_jwks(&self) -> Option<&str> {
        self.oauth_jwks
            .as_deref()
            .map(str::trim)
            .filter(|j| !j.is_empty())
    }

    /// The audiences `aud` may name; empty: not checked.
    pub fn oauth_expected_audiences(&self) -> Vec<String> {
        self.oauth_expected_audience
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub(super) fn validate_oauth(&self) -> Result<(), ConfigError> {
        if let Some(jwks) = self.oauth_jwks() {
            let lower = jwks.to_ascii_lowercase();
            let url = lower.starts_with("https://") || lower.starts_with("http://");
            if !url && jwks.contains("://") {
                return Err(ConfigError {
                    key: "oauth_jwks",
                    value: jwks.into(),
                    allowed: "a file, or an https:// URL (http:// when written so)".into(),
                });
            }
        }
        if self.oauth_offered() && self.oauth_jwks().is_none() && !self.oauth_unsecured_jwt {
            return Err(ConfigError {
                key: "oauth_jwks",
                value: String::new(),
                allowed: "a JWKS file or https:// URL, which OAUTHBEARER tokens are checked \
                          against, when a SASL listener offers OAUTHBEARER or the ingest \
                          listener takes bearer tokens (or oauth_unsecured_jwt, for tests)"
                    .into(),
            });
        }
        if self.oauth_sub_claim_name.trim().is_empty() {
            return Err(ConfigError {
                key: "oauth_sub_claim_name",
                value: self.oauth_sub_claim_name.clone(),
                allowed: "the name of the claim that names the principal, e.g. sub".into(),
            });
        }
        if self.oauth_jwks_refresh_ms < JWKS_REFRESH_MS_MIN {
            return Err(ConfigError {
                key: "oauth_jwks_refresh_ms",
                value: self.oauth_jwks_refresh_ms.to_string(),
                allowed: format!("at least {JWKS_REFRESH_MS_MIN}"),
            });
        }
        if self.oauth_clock_skew_s > 86_400 {
            return Err(ConfigError {
                key: "oauth_clock_skew_s",
                value: self.oauth_clock_skew_s.to_string(),
                allowed: "0 to 86400 seconds".into(),
            });
        }
        if i64::try_from(self.connections_max_reauth_ms).is_err() {
            return Err(ConfigError {
                key: "connections_max_reauth_ms",
                value: self.connections_max_reauth_ms.to_string(),
                allowed: "0 (sessions end only with their token) to 9223372036854775807".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanisms: &str) -> Config {
        Config {
            listeners: "SASL_PLAINTEXT://127.0.0.1:9093".into(),
            sasl_mechanisms: mechanisms.into(),
            ..Config::default()
        }
    }

    #[test]
    fn oauthbearer_needs_a_jwks_or_the_unsecured_mode() {
        let c = sasl("OAUTHBEARER");
        assert!(c.oauth_offered());
        assert_eq!(c.validate().expect_err("no jwks").key, "oauth_jwks");
        let c = Config {
            oauth_jwks: Some("/etc/sluice/jwks.json".into()),
            ..sasl("OAUTHBEARER")
        };
        c.validate().expect("a file");
        let c = Config {
            oauth_unsecured_jwt: true,
            ..sasl("SCRAM-SHA-512,OAUTHBEARER")
        };
        c.validate().expect("unsecured");
        assert!(!sasl("SCRAM-SHA-512").oauth_offered());
        sasl("SCRAM-SHA-512")
            .validate()
            .expect("no OAUTHBEARER, no JWKS needed");
        let c = Config {
            oauth_jwks: Some("ftp://idp/jwks".into()),
            ..sasl("OAUTHBEARER")
        };
        assert_eq!(c.validate().expect_err("ftp").key, "oauth_jwks");
        let c = Config {
            oauth_jwks: Some("  ".into()),
            ..sasl("OAUTHBEARER")
        };
        assert_eq!(c.validate().expect_err("empty").key, "oauth_jwks");
    }

    #[test]
    fn oauth_values_are_checked_and_audiences_split() {
        let ok = Config {
            oauth_jwks: Some("https://idp.example/jwks".into()),
            oauth_expected_audience: Some(" a, ,b ".into()),
            ..sasl("OAUTHBEARER")
        };
        ok.validate().expect("ok");
        assert_eq!(
            ok.oauth_expected_audiences(),
            vec!["a".to_string(), "b".to_string()]
        );
        for (c, key) in [
            (
                Config {
                    oauth_sub_claim_name: " ".into(),
                    ..ok.clone()
                },
                "oauth_sub_claim_name",
            ),
            (
                Config {
                    oauth_jwks_refresh_ms: 10,
                    ..ok.clone()
                },
                "oauth_jwks_refresh_ms",
            ),
            (
                Config {
                    oauth_clock_skew_s: 1 << 40,
                    ..ok.clone()
                },
                "oauth_clock_skew_s",
            ),
            (
                Config {
                    connections_max_reauth_ms: u64::MAX,
                    ..ok.clone()
                },
                "connections_max_reauth_ms",
            ),
        ] {
            assert_eq!(c.validate().expect_err(key).key, key);
        }
    }
}

//! SASL authentication of one connection on a SASL listener, as Kafka's
//! `SaslServerAuthenticator` runs it: SaslHandshake picks a mechanism,
//! SaslAuthenticate carries its tokens, and the connection is
//! authenticated (with a principal) or failed. SCRAM-SHA-256/512 and PLAIN
//! check the SCRAM credentials of the controller's metadata; PLAIN derives
//! the key from the password off the shard (`password`), since that costs
//! milliseconds of CPU that a password spray must not take from the shard's
//! clients. OAUTHBEARER checks a JWT with the process's `oauth::Validator`.
//! An authenticated connection may authenticate again (KIP-368), with the
//! same mechanism, as the same principal.

use std::sync::Arc;

use super::oauth::{self, Validator};
use super::password::{self, fake_credential_secret, stored, Verdict};
use super::scram::{Mechanism, ScramServer};

use crate::shard::Shard;

/// What a SaslAuthenticate step answers.
pub enum Outcome {
    /// Send `auth_bytes`; the exchange goes on.
    Continue(Vec<u8>),
    /// Send `auth_bytes`; the connection is `principal` from now on.
    Authenticated {
        principal: String,
        auth_bytes: Vec<u8>,
    },
    /// Answer SASL_AUTHENTICATION_FAILED with `message` (after the failure
    /// delay), then close. `user` is the name tried, for the log line.
    Failed {
        message: String,
        user: Option<String>,
    },
}

enum Chosen {
    Scram(Mechanism),
    Plain,
    OAuth,
}

enum State {
    /// Before a SaslHandshake.
    Start,
    Handshaken(Chosen),
    Scram(Box<ScramServer>),
    /// OAUTHBEARER answered `invalid_token`; the client's `^A` ends it.
    OAuthChallenged,
    /// A re-authentication asked for another mechanism: its
    /// SaslAuthenticate fails with this message, as Kafka's does.
    ReauthBadMechanism(String),
    Done,
    Failed,
}

/// What OAUTHBEARER answers a token it refuses (RFC 7628 3.2.2), as Kafka
/// answers it.
const INVALID_TOKEN: &str = "{\"status\":\"invalid_token\"}";

/// One connection's authentication.
pub struct Authenticator {
    /// Offered on this listener, in the order of `sasl_mechanisms`.
    enabled: Vec<String>,
    state: State,
    mechanism: Option<String>,
    /// The user name a SCRAM client-first gave, for failures' log lines.
    user: Option<String>,
    /// Whether the one ApiVersions allowed before the handshake came.
    versions_asked: bool,
    /// Checks OAUTHBEARER tokens, where OAUTHBEARER is offered.
    oauth: Option<Arc<Validator>>,
    /// Who the connection is, once authenticated.
    principal: Option<String>,
    /// During a re-authentication: the mechanism and principal before it.
    reauth_of: Option<(String, String)>,
    /// When the credential of the last authentication expires (an
    /// OAUTHBEARER token's `exp`), in ms since the epoch.
    credential_expires_at_ms: Option<i64>,
    /// Why the last exchange failed, for the log, when the client is told
    /// less (OAUTHBEARER's `invalid_token`).
    failure_detail: Option<String>,
}

impl Authenticator {
    pub fn new(enabled: Vec<String>) -> Authenticator {
        Authenticator {
            enabled,
            state: State::Start,
            mechanism: None,
            user: None,
            versions_asked: false,
            oauth: None,
            principal: None,
            reauth_of: None,
            credential_expires_at_ms: None,
            failure_detail: None,
        }
    }

    /// OAUTHBEARER tokens are checked by `validator`.
    pub fn with_oauth(mut self, validator: Option<Arc<Validator>>) -> Authenticator {
        self.oauth = validator;
        self
    }

    /// Whether the connection has authenticated and is not authenticating
    /// again.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done) && self.principal.is_some()
    }

    /// Starts a re-authentication (KIP-368) of an authenticated connection:
    /// a SaslHandshake comes next, for the same mechanism. False if the
    /// connection is not authenticated.
    pub fn begin_reauthentication(&mut self) -> bool {
        if !self.is_authenticated() {
            return false;
        }
        let (Some(mechanism), Some(principal)) = (self.mechanism.take(), self.principal.take())
        else {
            return false;
        };
        self.reauth_of = Some((mechanism, principal));
        self.state = State::Start;
        self.user = None;
        self.credential_expires_at_ms = None;
        self.failure_detail = None;
        // Kafka takes no ApiVersions during a re-authentication.
        self.versions_asked = true;
        true
    }

    /// When the credential just authenticated expires, if it does.
    pub fn credential_expires_at_ms(&self) -> Option<i64> {
        self.credential_expires_at_ms
    }

    /// Why the exchange failed, beyond what the client was told.
    pub fn failure_detail(&self) -> Option<&str> {
        self.failure_detail.as_deref()
    }

    /// SaslAuthenticate: one token of the exchange, and on a
    /// re-authentication the check that the principal stays the same.
    pub async fn step(&mut self, shard: &Shard, token: &[u8]) -> Outcome {
        let outcome = self.authenticate(shard, token).await;
        let Outcome::Authenticated {
            principal,
            auth_bytes,
        } = outcome
        else {
            return outcome;
        };
        if let Some((_, before)) = self.reauth_of.take() {
            if before != principal {
                self.state = State::Failed;
                return Outcome::Failed {
                    message: format!(
                        "Cannot change principals during re-authentication from {}: {}",
                        kafka_principal(&before),
                        kafka_principal(&principal)
                    ),
                    user: self.user.clone(),
                };
            }
        }
        self.principal = Some(principal.clone());
        Outcome::Authenticated {
            principal,
            auth_bytes,
        }
    }

    async fn oauth(&mut self, token: &[u8]) -> Outcome {
        let Some(validator) = self.oauth.clone() else {
            return Outcome::Failed {
                message: "Authentication failed: OAUTHBEARER is not configured".into(),
                user: None,
            };
        };
        let response = match oauth::message::parse(token) {
            Ok(response) => response,
            Err(message) => {
                return Outcome::Failed {
                    message,
                    user: None,
                }
            }
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        match validator.validate_refreshing(response.token, now_ms).await {
            Ok(valid) => {
                let name = valid
                    .principal
                    .strip_prefix("User:")
                    .unwrap_or(&valid.principal)
                    .to_string();
                self.user = Some(name.clone());
                if !response.authzid.is_empty() && response.authzid != name {
                    return Outcome::Failed {
                        message: format!(
                            "Authentication failed: Client requested an authorization id ({}) that is different from the token's principal name ({name})",
                            oauth::jws::clip(&response.authzid)
                        ),
                        user: self.user.clone(),
                    };
                }
                self.credential_expires_at_ms = Some(valid.expires_at_ms);
                self.state = State::Done;
                Outcome::Authenticated {
                    principal: valid.principal,
                    auth_bytes: Vec::new(),
                }
            }
            Err(e) => {
                // The client learns only `invalid_token` (a probe learns
                // nothing of the keys or claims); the log has why.
                self.failure_detail = Some(e.to_string());
                self.state = State::OAuthChallenged;
                Outcome::Continue(INVALID_TOKEN.as_bytes().to_vec())
            }
        }
    }

    /// The mechanisms SaslHandshake lists.
    pub fn enabled(&self) -> &[String] {
        &self.enabled
    }

    /// Whether the client asked for ApiVersions already.
    pub fn versions_asked(&self) -> bool {
        self.versions_asked
    }

    pub fn versions_answered(&mut self) {
        self.versions_asked = true;
    }

    /// Whether a SaslHandshake is what comes next.
    pub fn expects_handshake(&self) -> bool {
        matches!(self.state, State::Start)
    }

    /// Whether a SaslAuthenticate is what comes next.
    pub fn expects_token(&self) -> bool {
        matches!(
            self.state,
            State::Handshaken(_)
                | State::Scram(_)
                | State::OAuthChallenged
                | State::ReauthBadMechanism(_)
        )
    }

    /// The mechanism of the handshake, if any.
    pub fn mechanism(&self) -> Option<&str> {
        self.mechanism.as_deref()
    }

    /// SaslHandshake: whether `mechanism` is offered here; if it is, the
    /// tokens that follow are its own.
    pub fn handshake(&mut self, mechanism: &str) -> bool {
        if !matches!(self.state, State::Start) || !self.enabled.iter().any(|m| m == mechanism) {
            self.state = State::Failed;
            return false;
        }
        let chosen = match Mechanism::parse(mechanism) {
            Some(m) => Chosen::Scram(m),
            None if mechanism == "PLAIN" => Chosen::Plain,
            None if mechanism == "OAUTHBEARER" => Chosen::OAuth,
            None => {
                self.state = State::Failed;
                return false;
            }
        };
        self.mechanism = Some(mechanism.to_string());
        self.state = State::Handshaken(chosen);
        if let Some((before, _)) = &self.reauth_of {
            if before != mechanism {
                // Kafka accepts the handshake and fails the token that
                // follows, so that the failure counts as a
                // re-authentication's.
                self.state = State::ReauthBadMechanism(format!(
                    "SASL mechanism '{mechanism}' requested by client is not supported for re-authentication of mechanism '{before}'"
                ));
            }
        }
        true
    }

    /// SaslAuthenticate: one token of the exchange.
    pub async fn authenticate(&mut self, shard: &Shard, token: &[u8]) -> Outcome {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Handshaken(Chosen::Plain) => self.plain(shard, token).await,
            State::Handshaken(Chosen::OAuth) => self.oauth(token).await,
            State::OAuthChallenged => Outcome::Failed {
                message: INVALID_TOKEN.into(),
                user: self.user.clone(),
            },
            State::ReauthBadMechanism(message) => Outcome::Failed {
                message,
                user: None,
            },
            State::Handshaken(Chosen::Scram(mechanism)) => {
                let mut server = Box::new(ScramServer::new(mechanism, fake_credential_secret()));
                self.user = scram_user(token);
                let lookup = |user: &str| stored(shard, user, mechanism);
                match server.client_first(token, lookup) {
                    Ok(server_first) => {
                        self.state = State::Scram(server);
                        Outcome::Continue(server_first)
                    }
                    Err(e) => Outcome::Failed {
                        message: e.to_string(),
                        user: self.user.clone(),
                    },
                }
            }
            State::Scram(mut server) => match server.client_final(token) {
                Ok(server_final) => {
                    let user = server.authenticated().unwrap_or_default().to_string();
                    self.state = State::Done;
                    Outcome::Authenticated {
                        principal: format!("User:{user}"),
                        auth_bytes: server_final,
                    }
                }
                Err(e) => Outcome::Failed {
                    message: e.to_string(),
                    user: self.user.clone(),
                },
            },
            State::Start | State::Done | State::Failed => Outcome::Failed {
                message: "Unexpected SaslAuthenticate request".into(),
                user: None,
            },
        }
    }

    async fn plain(&mut self, shard: &Shard, token: &[u8]) -> Outcome {
        let failed = |message: String, user: Option<String>| Outcome::Failed { message, user };
        let (authzid, user, password) = match parse_plain(token) {
            Ok(parts) => parts,
            Err(message) => return failed(message, None),
        };
        if !authzid.is_empty() && authzid != user {
            return failed(
                "Authentication failed: Client requested an authorization id that is different from username".into(),
                Some(user),
            );
        }
        // The strongest stored credential of the user decides.
        let found = password::strongest(shard, &user);
        match password::verify(&user, found, password.into_bytes()).await {
            Verdict::Valid => {}
            Verdict::Invalid => {
                return failed(
                    "Authentication failed: Invalid username or password".into(),
                    Some(user),
                )
            }
            Verdict::Unavailable => {
                return failed("Authentication failed: shutting down".into(), Some(user))
            }
        }
        self.state = State::Done;
        Outcome::Authenticated {
            principal: format!("User:{user}"),
            auth_bytes: Vec::new(),
        }
    }
}

/// `User:alice` as Kafka's re-authentication messages write a principal:
/// `User.alice`.
fn kafka_principal(principal: &str) -> String {
    oauth::jws::clip(&principal.replacen(':', ".", 1))
}

/// KIP-368's `session_lifetime_ms` at `now_ms`, as Kafka computes it:
/// `None` when neither `connections_max_reauth_ms` nor a credential's
/// expiry applies (the session does not end); else the smaller of the two
/// that apply, 0 for a credential already past its expiry.
pub fn session_lifetime_ms(
    max_reauth_ms: u64,
    credential_expires_at_ms: Option<i64>,
    now_ms: i64,
) -> Option<u64> {
    let left =
        credential_expires_at_ms.map(|exp| u64::try_from(exp.saturating_sub(now_ms)).unwrap_or(0));
    match (left, max_reauth_ms) {
        (None, 0) => None,
        (None, max) => Some(max),
        (Some(left), 0) => Some(left),
        (Some(left), max) => Some(left.min(max)),
    }
}

/// The user name of a SCRAM client-first message, for the log line of a
/// failure (best effort; `n=` up to the next comma).
fn scram_user(token: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(token).ok()?;
    let start = text.find(",n=")? + 3;
    let end = text[start..].find(',').map_or(text.len(), |e| start + e);
    Some(text[start..end].chars().take(256).collect())
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616), with Kafka's messages.
fn parse_plain(token: &[u8]) -> Result<(String, String, String), String> {
    let text = std::str::from_utf8(token)
        .map_err(|_| "Invalid SASL/PLAIN response: not UTF-8".to_string())?;
    let parts: Vec<&str> = text.split('\u{0}').collect();
    if parts.len() != 3 {
        return Err(format!(
            "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
            parts.len()
        ));
    }
    if parts[1].is_empty() {
        return Err("Authentication failed: username not specified".into());
    }
    if parts[2].is_empty() {
        return Err("Authentication failed: password not specified".into());
    }
    Ok((parts[0].into(), parts[1].into(), parts[2].into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_are_split_as_rfc_4616_says() {
        assert_eq!(
            parse_plain(b"\0alice\0secret"),
            Ok(("".into(), "alice".into(), "secret".into()))
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0secret"),
            Ok(("alice".into(), "alice".into(), "secret".into()))
        );
        assert_eq!(
            parse_plain(b"alice\0secret"),
            Err("Invalid SASL/PLAIN response: expected 3 tokens, got 2".into())
        );
        assert!(parse_plain(b"\0\0secret")
            .expect_err("no user")
            .contains("username not specified"));
        assert!(parse_plain(b"\0alice\0")
            .expect_err("no password")
            .contains("password not specified"));
        assert!(parse_plain(&[0, 0xff, 0, b'x']).is_err());
    }

    #[test]
    fn a_handshake_accepts_only_what_is_offered() {
        let mut a = Authenticator::new(vec!["SCRAM-SHA-512".into()]);
        assert!(!a.handshake("PLAIN"), "not offered here");
        let mut a = Authenticator::new(vec!["SCRAM-SHA-512".into()]);
        assert!(a.handshake("SCRAM-SHA-512"));
        assert!(a.expects_token());
        assert!(!a.handshake("SCRAM-SHA-512"), "one handshake per exchange");
    }

    #[test]
    fn the_session_lifetime_is_the_shorter_of_the_reauth_bound_and_the_credential() {
        assert_eq!(session_lifetime_ms(0, None, 1000), None, "no expiry at all");
        assert_eq!(session_lifetime_ms(3000, None, 1000), Some(3000));
        assert_eq!(session_lifetime_ms(0, Some(61_000), 1000), Some(60_000));
        assert_eq!(session_lifetime_ms(3000, Some(61_000), 1000), Some(3000));
        assert_eq!(
            session_lifetime_ms(90_000, Some(61_000), 1000),
            Some(60_000)
        );
        assert_eq!(
            session_lifetime_ms(3000, Some(500), 1000),
            Some(0),
            "expired already"
        );
    }

    #[test]
    fn a_reauthentication_keeps_its_mechanism() {
        let mut a = Authenticator::new(vec!["OAUTHBEARER".into(), "PLAIN".into()]);
        assert!(!a.begin_reauthentication(), "not authenticated yet");
        assert!(a.handshake("OAUTHBEARER"));
        a.state = State::Done;
        a.principal = Some("User:alice".into());
        a.credential_expires_at_ms = Some(5);
        assert!(a.is_authenticated());
        assert!(a.begin_reauthentication());
        assert!(!a.is_authenticated());
        assert!(a.expects_handshake());
        assert_eq!(a.credential_expires_at_ms(), None);
        assert!(a.handshake("PLAIN"), "Kafka answers the handshake");
        assert!(a.expects_token());
        assert!(
            matches!(&a.state, State::ReauthBadMechanism(m) if m.contains("'PLAIN' requested by client is not supported for re-authentication of mechanism 'OAUTHBEARER'"))
        );
        assert_eq!(kafka_principal("User:alice"), "User.alice");
    }

    #[test]
    fn the_user_of_a_client_first_message_is_found_for_the_log() {
        assert_eq!(scram_user(b"n,,n=alice,r=abc"), Some("alice".into()));
        assert_eq!(scram_user(b"garbage"), None);
    }
}

//! SASL authentication of one connection on a SASL listener, as Kafka's
//! `SaslServerAuthenticator` runs it: SaslHandshake picks a mechanism,
//! SaslAuthenticate carries its tokens, and the connection is
//! authenticated (with a principal) or failed. SCRAM-SHA-256/512 and PLAIN
//! check the SCRAM credentials of the controller's metadata; PLAIN derives
//! the key from the password off the shard (`password`), since that costs
//! milliseconds of CPU that a password spray must not take from the shard's
//! clients.

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
}

enum State {
    /// Before a SaslHandshake.
    Start,
    Handshaken(Chosen),
    Scram(Box<ScramServer>),
    Done,
    Failed,
}

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
}

impl Authenticator {
    pub fn new(enabled: Vec<String>) -> Authenticator {
        Authenticator {
            enabled,
            state: State::Start,
            mechanism: None,
            user: None,
            versions_asked: false,
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
        matches!(self.state, State::Handshaken(_) | State::Scram(_))
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
            None => {
                self.state = State::Failed;
                return false;
            }
        };
        self.mechanism = Some(mechanism.to_string());
        self.state = State::Handshaken(chosen);
        true
    }

    /// SaslAuthenticate: one token of the exchange.
    pub async fn authenticate(&mut self, shard: &Shard, token: &[u8]) -> Outcome {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Handshaken(Chosen::Plain) => self.plain(shard, token).await,
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
    fn the_user_of_a_client_first_message_is_found_for_the_log() {
        assert_eq!(scram_user(b"n,,n=alice,r=abc"), Some("alice".into()));
        assert_eq!(scram_user(b"garbage"), None);
    }
}

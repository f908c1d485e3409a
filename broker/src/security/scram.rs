//! SASL SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's
//! broker speaks them: the server side of one exchange (`ScramServer`), and
//! the credentials stored per user and mechanism (`ScramCredential`), which
//! also let SASL/PLAIN check a password without the password being kept.
//!
//! Kafka applies no SASLprep, so neither does this: names and passwords are
//! raw UTF-8. Messages are parsed by hand, bounded in size, and every
//! malformed one is an error rather than a panic, since they come straight
//! from unauthenticated clients.

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};

/// Kafka's bounds on the iteration count of a stored credential.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// Real messages are under 300 bytes; the bound keeps a hostile client from
/// making the broker parse or hash megabytes before authenticating.
const MESSAGE_MAX: usize = 4096;
const SALT_LEN: usize = 32;
/// 192 bits, more than Kafka's 130; base64 of a multiple of 3 bytes has no
/// padding and never a `,`, so it is a valid printable nonce as is.
const SERVER_NONCE_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    /// Kafka matches mechanism names exactly, case included.
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The type of Kafka's `ScramMechanism` in the user SCRAM credential
    /// APIs (0 is its UNKNOWN).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        match t {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
}

/// What the broker keeps of a user's password for one mechanism: enough to
/// verify a proof and to prove itself, not enough to impersonate the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// From the SaltedPassword a client computed (AlterUserScramCredentials
    /// sends salt, iterations, salted_password).
    pub fn from_salted_password(
        mech: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = hmac_sign(mech.hmac(), salted_password, &[b"Client Key"]);
        ScramCredential {
            salt,
            iterations,
            stored_key: hash(mech, &client_key),
            server_key: hmac_sign(mech.hmac(), salted_password, &[b"Server Key"]),
        }
    }

    /// PBKDF2 (HMAC of the mechanism's hash) of `password` with `salt` and
    /// `iterations`, then as `from_salted_password`.
    pub fn from_password(
        mech: Mechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramCredential {
        let salted = salted_password(mech, password, &salt, iterations);
        ScramCredential::from_salted_password(mech, salt, iterations, &salted)
    }

    /// Whether `password` is this credential's (recomputes StoredKey via
    /// PBKDF2 and compares in constant time). CPU-heavy: callers run it off
    /// the shard. A credential below `ITERATIONS_MIN` never verifies, as
    /// SCRAM refuses it too: PLAIN must not be a way around that.
    pub fn verify_password(&self, mech: Mechanism, password: &[u8]) -> bool {
        if self.iterations < ITERATIONS_MIN {
            return false;
        }
        let salted = salted_password(mech, password, &self.salt, self.iterations);
        let client_key = hmac_sign(mech.hmac(), &salted, &[b"Client Key"]);
        constant_time_eq(&hash(mech, &client_key), &self.stored_key)
    }

    /// The stand-in for a user who does not exist, so that the exchange
    /// looks the same as for a real one (a stable salt for the name) and
    /// fails only at the proof, like a wrong password. The keys are random
    /// to anyone without `secret`, so no proof matches them.
    fn unknown_user(mech: Mechanism, secret: &[u8; 32], username: &str) -> ScramCredential {
        let name = username.as_bytes();
        ScramCredential {
            salt: hmac_sign(hmac::HMAC_SHA256, secret, &[b"salt", name]),
            iterations: ITERATIONS_MIN,
            stored_key: hmac_sign(mech.hmac(), secret, &[b"stored key", name]),
            server_key: hmac_sign(mech.hmac(), secret, &[b"server key", name]),
        }
    }
}

/// A random salt (32 bytes) for new credentials.
pub fn random_salt() -> Vec<u8> {
    let mut salt = vec![0; SALT_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .expect("the operating system provides random bytes");
    salt
}

/// The SaltedPassword (PBKDF2), for clients such as the `sluice user set`
/// CLI which send salted passwords.
pub fn salted_password(mech: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    // PBKDF2 has no zero-iteration form; one keeps this total, and such a
    // credential is refused wherever it is used.
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    let mut out = vec![0; mech.digest().output_len()];
    pbkdf2::derive(mech.pbkdf2(), iterations, salt, password, &mut out);
    out
}

fn hmac_sign(algorithm: hmac::Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut context = hmac::Context::with_key(&hmac::Key::new(algorithm, key));
    for part in parts {
        context.update(part);
    }
    context.sign().as_ref().to_vec()
}

fn hash(mech: Mechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(mech.digest(), data).as_ref().to_vec()
}

/// Time independent of where the bytes differ (ring's own is deprecated);
/// the lengths are public, being the hash's.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Display texts go to the client in SaslAuthenticate's error_message; the
/// ones Kafka has are Kafka's words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("SCRAM message of {0} bytes is longer than the maximum {max}", max = MESSAGE_MAX)]
    TooLong(usize),
    #[error("SCRAM message is not valid UTF-8")]
    NotUtf8,
    #[error("Invalid SCRAM client first message format: {0}")]
    InvalidClientFirst(&'static str),
    #[error("Invalid SCRAM client final message format: {0}")]
    InvalidClientFinal(&'static str),
    #[error("Authentication failed: channel binding is not supported")]
    ChannelBindingUnsupported,
    #[error("Authentication failed: Invalid channel binding in the final client message")]
    ChannelBindingMismatch,
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthorizationIdMismatch,
    #[error("Authentication failed: delegation tokens are not supported")]
    TokenAuthUnsupported,
    #[error("Iterations {iterations} is less than the minimum {min} for {mechanism}", min = ITERATIONS_MIN)]
    IterationsTooLow {
        iterations: u32,
        mechanism: &'static str,
    },
    #[error("Invalid client nonce in the final client message.")]
    InvalidNonce,
    #[error("Authentication failed: Invalid user credentials")]
    InvalidCredentials,
    #[error("Authentication failed: no random bytes for the server nonce")]
    NoRandom,
    #[error("SCRAM exchange in an invalid state: {0}")]
    InvalidState(&'static str),
}

/// One SCRAM exchange on one connection.
pub struct ScramServer {
    mech: Mechanism,
    secret: Arc<[u8; 32]>,
    state: State,
    /// Set by tests only, to check the RFC's vector whose nonce is fixed.
    fixed_nonce: Option<String>,
}

enum State {
    ClientFirst,
    ClientFinal(Box<Pending>),
    Authenticated(String),
    Failed,
}

/// What the final step needs from the first.
struct Pending {
    username: String,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl fmt::Debug for ScramServer {
    // Keys and the secret stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::ClientFirst => "client-first",
            State::ClientFinal(_) => "client-final",
            State::Authenticated(_) => "authenticated",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mech.name())
            .field("state", &state)
            .finish()
    }
}

impl ScramServer {
    /// `secret` is a per-process random key used to make a deterministic
    /// fake credential for unknown users.
    pub fn new(mech: Mechanism, secret: Arc<[u8; 32]>) -> ScramServer {
        ScramServer {
            mech,
            secret,
            state: State::ClientFirst,
            fixed_nonce: None,
        }
    }

    #[cfg(test)]
    fn with_server_nonce(mut self, nonce: &str) -> ScramServer {
        self.fixed_nonce = Some(nonce.to_owned());
        self
    }

    /// Handles client-first-message; `lookup(username)` returns the user's
    /// stored credential for this mechanism. Returns server-first-message.
    pub fn client_first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        // Failed unless this step succeeds: an error ends the exchange.
        if !matches!(
            std::mem::replace(&mut self.state, State::Failed),
            State::ClientFirst
        ) {
            return Err(ScramError::InvalidState(
                "client-first-message out of order",
            ));
        }
        let pending = self.start(message, lookup)?;
        let reply = pending.server_first.clone().into_bytes();
        self.state = State::ClientFinal(Box::new(pending));
        Ok(reply)
    }

    /// Handles client-final-message; on success returns
    /// server-final-message (`v=...`).
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::ClientFinal(pending) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(ScramError::InvalidState(
                "client-final-message out of order",
            ));
        };
        let reply = pending.finish(self.mech, message)?;
        self.state = State::Authenticated(pending.username);
        Ok(reply)
    }

    /// The authenticated user name once client_final succeeded (None before
    /// / after failure).
    pub fn authenticated(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated(user) => Some(user),
            _ => None,
        }
    }

    fn start(
        &self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Pending, ScramError> {
        let first = ClientFirst::parse(text(message)?)?;
        // Checked before the lookup, so the answer says nothing of the user.
        if first.authzid.as_ref().is_some_and(|a| *a != first.username) {
            return Err(ScramError::AuthorizationIdMismatch);
        }
        let credential = match lookup(&first.username) {
            Some(c) if c.iterations < ITERATIONS_MIN => {
                return Err(ScramError::IterationsTooLow {
                    iterations: c.iterations,
                    mechanism: self.mech.name(),
                })
            }
            Some(c) => c,
            None => ScramCredential::unknown_user(self.mech, &self.secret, &first.username),
        };
        let nonce = format!("{}{}", first.nonce, self.server_nonce()?);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        Ok(Pending {
            username: first.username,
            credential,
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
        })
    }

    fn server_nonce(&self) -> Result<String, ScramError> {
        if let Some(nonce) = &self.fixed_nonce {
            return Ok(nonce.clone());
        }
        let mut bytes = [0u8; SERVER_NONCE_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ScramError::NoRandom)?;
        Ok(BASE64.encode(bytes))
    }
}

impl Pending {
    fn finish(&self, mech: Mechanism, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let last = ClientFinal::parse(text(message)?)?;
        // Without channel binding the client must echo its gs2 header, so a
        // downgrade from `y`/`p=` to `n` in transit is caught.
        if last.channel_binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        // Kafka (3.8.1+) accepts a nonce that ends with the whole nonce:
        // librdkafka before 2.6.1 sends its client nonce once more before
        // it. The server's random part must still be there, so a replay
        // of another exchange fails, and the proof covers what was sent.
        if !last.nonce.ends_with(self.nonce.as_str()) {
            return Err(ScramError::InvalidNonce);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, last.without_proof
        );
        let auth = auth_message.as_bytes();
        let signature = hmac_sign(mech.hmac(), &self.credential.stored_key, &[auth]);
        if last.proof.len() != signature.len() {
            return Err(ScramError::InvalidClientFinal("proof of the wrong length"));
        }
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&hash(mech, &client_key), &self.credential.stored_key) {
            return Err(ScramError::InvalidCredentials);
        }
        let server_signature = hmac_sign(mech.hmac(), &self.credential.server_key, &[auth]);
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

fn text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MESSAGE_MAX {
        return Err(ScramError::TooLong(message.len()));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::NotUtf8)
}

/// client-first-message: `gs2-header client-first-bare`.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    authzid: Option<String>,
    username: String,
    nonce: &'a str,
    bare: &'a str,
}

impl<'a> ClientFirst<'a> {
    fn parse(text: &'a str) -> Result<ClientFirst<'a>, ScramError> {
        let bad = ScramError::InvalidClientFirst;
        let (flag, rest) = text.split_once(',').ok_or(bad("no gs2 header"))?;
        match flag {
            "n" => {}
            "y" => return Err(ScramError::ChannelBindingUnsupported),
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(bad("invalid gs2 flag")),
        }
        let (authz, bare) = rest.split_once(',').ok_or(bad("no gs2 header"))?;
        let authzid = match authz {
            "" => None,
            a => Some(
                attribute(a, "a")
                    .and_then(sasl_name)
                    .ok_or(bad("invalid authorization id"))?,
            ),
        };
        let gs2_header = &text[..text.len() - bare.len()];
        // No field can hold a raw `,`, so splitting on it is exact.
        let mut fields = bare.split(',');
        let first = fields.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(bad("mandatory extensions are not supported"));
        }
        let username = attribute(first, "n")
            .and_then(sasl_name)
            .ok_or(bad("missing or invalid user name"))?;
        let nonce = attribute(fields.next().unwrap_or_default(), "r")
            .filter(|n| is_nonce(n))
            .ok_or(bad("missing or invalid nonce"))?;
        let extensions =
            extensions(fields, &["a", "m", "n", "r"]).ok_or(bad("invalid extension"))?;
        // Kafka reads the flag with Boolean.parseBoolean: any case of "true".
        let token = extensions
            .iter()
            .any(|(k, v)| *k == "tokenauth" && v.eq_ignore_ascii_case("true"));
        if token {
            return Err(ScramError::TokenAuthUnsupported);
        }
        Ok(ClientFirst {
            gs2_header,
            authzid,
            username,
            nonce,
            bare,
        })
    }
}

/// client-final-message: `c=...,r=...[,ext=...],p=...`.
struct ClientFinal<'a> {
    channel_binding: Vec<u8>,
    nonce: &'a str,
    without_proof: &'a str,
    proof: Vec<u8>,
}

impl<'a> ClientFinal<'a> {
    fn parse(text: &'a str) -> Result<ClientFinal<'a>, ScramError> {
        let bad = ScramError::InvalidClientFinal;
        let (without_proof, proof) = text.rsplit_once(',').ok_or(bad("missing proof"))?;
        let proof = attribute(proof, "p")
            .and_then(base64)
            .ok_or(bad("missing or invalid proof"))?;
        let mut fields = without_proof.split(',');
        let channel_binding = attribute(fields.next().unwrap_or_default(), "c")
            .and_then(base64)
            .ok_or(bad("missing or invalid channel binding"))?;
        let nonce = attribute(fields.next().unwrap_or_default(), "r")
            .filter(|n| is_nonce(n))
            .ok_or(bad("missing or invalid nonce"))?;
        extensions(fields, &["c", "p", "r"]).ok_or(bad("invalid extension"))?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            without_proof,
            proof,
        })
    }
}

/// The value of `field` if it is `key=value`.
fn attribute<'a>(field: &'a str, key: &str) -> Option<&'a str> {
    field.strip_prefix(key)?.strip_prefix('=')
}

fn base64(value: &str) -> Option<Vec<u8>> {
    BASE64.decode(value).ok().filter(|v| !v.is_empty())
}

/// RFC 5802's `printable`: ASCII 0x21 to 0x7E but `,`.
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A saslname unescaped: `=2C` is `,`, `=3D` is `=`, no other `=`, no NUL.
fn sasl_name(escaped: &str) -> Option<String> {
    if escaped.is_empty() || escaped.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (c, tail) = if let Some(tail) = after.strip_prefix("2C") {
            (',', tail)
        } else {
            ('=', after.strip_prefix("3D")?)
        };
        out.push(c);
        rest = tail;
    }
    out.push_str(rest);
    Some(out)
}

/// Extensions as Kafka reads them (`name=value`, alphabetic names); unknown
/// ones are kept for the caller to ignore. A repeated or reserved name
/// is refused rather than guessed at.
fn extensions<'a>(
    fields: impl Iterator<Item = &'a str>,
    reserved: &[&str],
) -> Option<Vec<(&'a str, &'a str)>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for field in fields {
        let (key, value) = field.split_once('=')?;
        let valid_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic());
        let valid_value = !value.is_empty() && !value.contains('\0');
        if !valid_key || !valid_value || reserved.contains(&key) || !seen.insert(key) {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests;

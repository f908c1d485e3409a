//! OAuth 2 bearer tokens: JWTs validated as Kafka's broker validator
//! (`BrokerJwtValidator`) does, against the public keys of a JWKS
//! (signature, `exp`/`nbf`/`iat` with a clock skew, issuer, audience, the
//! principal's claim), or, for tests only, unsigned tokens as Kafka's
//! unsecured validator accepts them. `Validator` is shared by every shard
//! and knows no connection: SASL/OAUTHBEARER uses it (`security::sasl`), and
//! so can any listener that takes `Authorization: Bearer`.

pub mod jwks;
pub mod jws;
pub mod message;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use jwks::{Jwks, Source};

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// `User:` and the principal claim's value.
    pub principal: String,
    /// The token's `exp`, in ms since the epoch.
    pub expires_at_ms: i64,
}

/// Why a token is refused; the text is for the broker's log (a client
/// is told only `invalid_token`, as Kafka tells it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT: segments, base64url, JSON.
    Malformed(String),
    /// An algorithm refused, or one the chosen key cannot verify.
    Algorithm(String),
    /// No key of the set has the token's `kid`.
    UnknownKey(String),
    /// The signature does not verify.
    Signature,
    /// A claim missing, of the wrong type, or not what is expected.
    Claim(String),
    /// Past `exp` (plus the skew).
    Expired { exp_ms: i64, now_ms: i64 },
    /// Before `nbf` (minus the skew).
    NotYetValid { nbf_ms: i64, now_ms: i64 },
    /// Signed tokens need a JWKS, and none is configured.
    NoKeys,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::Algorithm(why) => write!(f, "refused algorithm: {why}"),
            TokenError::UnknownKey(kid) => write!(f, "no key with kid {kid:?} in the JWKS"),
            TokenError::Signature => f.write_str("the signature does not verify"),
            TokenError::Claim(why) => write!(f, "{why}"),
            TokenError::Expired { exp_ms, now_ms } => write!(
                f,
                "the token expired: exp is {} s ago (beyond the allowed clock skew)",
                (now_ms - exp_ms) / 1000
            ),
            TokenError::NotYetValid { nbf_ms, now_ms } => write!(
                f,
                "the token is not valid yet: nbf is {} s ahead (beyond the allowed clock skew)",
                (nbf_ms - now_ms) / 1000
            ),
            TokenError::NoKeys => {
                f.write_str("a signed token, but no JWKS is configured (oauth_jwks)")
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// The checks, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A file or URL; `None` with `unsecured` only.
    pub jwks: Option<String>,
    /// Accept `alg=none` tokens (tests only).
    pub unsecured: bool,
    pub clock_skew_s: u64,
    pub expected_issuer: Option<String>,
    /// Any of these in `aud` will do; empty: `aud` is not checked.
    pub expected_audiences: Vec<String>,
    pub sub_claim_name: String,
    pub jwks_refresh_ms: u64,
    pub jwks_refresh_min_ms: u64,
}

/// Validates bearer tokens; one for the whole process.
pub struct Validator {
    settings: Settings,
    jwks: Option<Arc<Jwks>>,
}

impl Validator {
    /// Loads the JWKS (a start-up error names the file or URL) and starts
    /// its periodic refresh.
    pub fn start(settings: Settings) -> Result<Validator, String> {
        let jwks = match &settings.jwks {
            Some(text) => {
                let jwks = Arc::new(Jwks::load(
                    Source::parse(text),
                    Duration::from_millis(settings.jwks_refresh_min_ms),
                )?);
                jwks::spawn_refresher(&jwks, Duration::from_millis(settings.jwks_refresh_ms))
                    .map_err(|e| format!("starting the JWKS refresh thread: {e}"))?;
                Some(jwks)
            }
            None => None,
        };
        if settings.unsecured {
            tracing::warn!(
                "oauth_unsecured_jwt is on: unsigned (alg=none) OAUTHBEARER tokens are accepted, \
                 so anyone can be any user. For tests only"
            );
        }
        Ok(Validator { settings, jwks })
    }

    /// A validator over a key set already in hand, without a refresh
    /// thread (tests).
    #[cfg(test)]
    fn with_keys(settings: Settings, keys: &[u8]) -> Validator {
        let path = std::env::temp_dir().join(format!(
            "sluice-jwks-{}-{}.json",
            std::process::id(),
            KEYS_FILE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, keys).expect("write keys");
        let jwks = Jwks::load(Source::File(path.clone()), Duration::from_secs(3600));
        let _ = std::fs::remove_file(&path);
        Validator {
            settings,
            jwks: Some(Arc::new(jwks.expect("keys"))),
        }
    }

    /// Checks `token` at `now_ms` (ms since the epoch) against the keys in
    /// force. Never blocks.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<Validated, TokenError> {
        let parts = jws::parse(token)?;
        if parts.alg == "none" && self.settings.unsecured {
            if !parts.signature.is_empty() {
                return Err(TokenError::Malformed(
                    "an alg=none token has an empty signature part".into(),
                ));
            }
            return self.claims(&parts.claims, now_ms, false);
        }
        let alg = jws::Alg::parse(&parts.alg)?;
        let jwks = self.jwks.as_ref().ok_or(TokenError::NoKeys)?;
        let keys = jwks.current();
        let key = keys.select(alg, parts.kid.as_deref())?;
        if !key.verify(alg, parts.signing_input.as_bytes(), &parts.signature) {
            return Err(TokenError::Signature);
        }
        self.claims(&parts.claims, now_ms, true)
    }

    /// As `validate`, but a `kid` the set does not hold has the set read
    /// again first (off the shard, at most once per
    /// `oauth_jwks_refresh_min_ms`): a provider's new key works at its
    /// first token.
    pub async fn validate_refreshing(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Validated, TokenError> {
        let first = self.validate(token, now_ms);
        let (Err(TokenError::UnknownKey(kid)), Some(jwks)) = (&first, &self.jwks) else {
            return first;
        };
        if !jwks.may_refresh_for_unknown_kid() {
            return first;
        }
        tracing::info!(source = %jwks.source(), kid = %kid, "unknown key id: reading the JWKS again");
        let refreshing = jwks.clone();
        let refreshed = crate::rt::executor()
            .spawn_blocking(move || refreshing.refresh())
            .await;
        if let Err(e) = refreshed {
            tracing::warn!(source = %jwks.source(), "JWKS refresh failed, keeping the keys in force: {e}");
            return first;
        }
        self.validate(token, now_ms)
    }

    /// The claims of Kafka's broker validator: `exp` and `iat` present
    /// (`iat` optional for unsecured tokens, as Kafka's unsecured
    /// validator has it), `exp` and `nbf` within the skew, the issuer and
    /// an audience when configured, and the principal's claim a
    /// non-empty string.
    fn claims(
        &self,
        claims: &Map<String, Value>,
        now_ms: i64,
        iat_required: bool,
    ) -> Result<Validated, TokenError> {
        let skew_ms =
            i64::try_from(self.settings.clock_skew_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let exp_ms = numeric_date(claims, "exp")?
            .ok_or_else(|| TokenError::Claim("no exp claim (the token must expire)".into()))?;
        if now_ms.saturating_sub(skew_ms) >= exp_ms {
            return Err(TokenError::Expired { exp_ms, now_ms });
        }
        if let Some(nbf_ms) = numeric_date(claims, "nbf")? {
            if nbf_ms > now_ms.saturating_add(skew_ms) {
                return Err(TokenError::NotYetValid { nbf_ms, now_ms });
            }
        }
        let iat = numeric_date(claims, "iat")?;
        if iat.is_none() && iat_required {
            return Err(TokenError::Claim("no iat claim".into()));
        }
        if let Some(iat_ms) = iat {
            if iat_ms > exp_ms {
                return Err(TokenError::Claim("iat is after exp".into()));
            }
        }
        if let Some(expected) = &self.settings.expected_issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == expected => {}
                Some(Value::String(iss)) => {
                    return Err(TokenError::Claim(format!(
                        "issuer {:?} is not the expected {expected:?}",
                        jws::clip(iss)
                    )))
                }
                _ => {
                    return Err(TokenError::Claim(
                        "no iss claim (an issuer is expected)".into(),
                    ))
                }
            }
        }
        if !self.settings.expected_audiences.is_empty() {
            let audiences: Vec<&str> = match claims.get("aud") {
                Some(Value::String(aud)) => vec![aud.as_str()],
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let expected = &self.settings.expected_audiences;
            if !audiences.iter().any(|a| expected.iter().any(|e| e == a)) {
                let seen: Vec<String> = audiences.iter().take(8).map(|a| jws::clip(a)).collect();
                return Err(TokenError::Claim(format!(
                    "audience {seen:?} names none of the expected {expected:?}"
                )));
            }
        }
        let name = &self.settings.sub_claim_name;
        let principal = match claims.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim(),
            Some(Value::String(_)) => {
                return Err(TokenError::Claim(format!("the {name} claim is empty")))
            }
            Some(_) => {
                return Err(TokenError::Claim(format!(
                    "the {name} claim is not a string"
                )))
            }
            None => {
                return Err(TokenError::Claim(format!(
                    "no {name} claim (it names the principal: oauth_sub_claim_name)"
                )))
            }
        };
        Ok(Validated {
            principal: format!("User:{principal}"),
            expires_at_ms: exp_ms,
        })
    }
}

/// A NumericDate claim (seconds since the epoch, an integer or not) in
/// ms; `None` when absent. Values beyond the year 200,000 are refused
/// rather than overflowing.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    const SECONDS_MAX: f64 = 6.3e12;
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let bad = || TokenError::Claim(format!("the {name} claim is not a NumericDate in range"));
    let seconds = value.as_f64().ok_or_else(bad)?;
    if !seconds.is_finite() || seconds.abs() > SECONDS_MAX {
        return Err(bad());
    }
    Ok(Some(match value.as_i64() {
        Some(s) => s.saturating_mul(1000),
        None => (seconds * 1000.0) as i64,
    }))
}

#[cfg(test)]
static KEYS_FILE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests;

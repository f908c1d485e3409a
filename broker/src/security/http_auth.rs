//! Authentication of requests to the ingest HTTP listener: what a request
//! presents (`Authorization: Basic`, InfluxDB's `Token USER:PASSWORD`,
//! `u` and `p` on `/write`, a bearer token) is read by pure functions, and
//! `HttpAuth` turns it into a principal or a refusal. Passwords are checked
//! against the SCRAM credentials as SASL/PLAIN checks them (`password`);
//! a success is remembered per shard (`credential_cache`). Bearer tokens
//! are read but refused until a verifier exists to check them.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::credential_cache::CredentialCache;
use super::password::{self, Verdict};
use std::sync::Arc;

use super::oauth::Validator;
use crate::config::HttpAuthMode;
use crate::shard::Shard;

/// Users whose last good password each shard remembers.
const CACHED_USERS_MAX: usize = 1024;

/// Characters of a user name kept for a log line.
const LOGGED_USER_CHARS_MAX: usize = 256;

/// Base64 as RFC 7617 writes it, padding or not (clients differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a request presents to say who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    /// A user name and password: HTTP Basic, `Token USER:PASSWORD`, or
    /// `u` and `p`.
    Password {
        user: String,
        password: String,
    },
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// Credentials that cannot be read, and why.
    Malformed(&'static str),
}

impl fmt::Debug for Presented {
    // Secrets stay out of logs and test output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presented::Nothing => write!(f, "Nothing"),
            Presented::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            Presented::Bearer(_) => write!(f, "Bearer(..)"),
            Presented::Malformed(why) => write!(f, "Malformed({why:?})"),
        }
    }
}

impl Presented {
    /// The user name tried, shortened, for a log line.
    pub fn user(&self) -> Option<String> {
        match self {
            Presented::Password { user, .. } => {
                Some(user.chars().take(LOGGED_USER_CHARS_MAX).collect())
            }
            _ => None,
        }
    }
}

fn user_password(user: &str, password: &str) -> Presented {
    if user.is_empty() {
        return Presented::Malformed("no user name");
    }
    if password.is_empty() {
        return Presented::Malformed("no password");
    }
    Presented::Password {
        user: user.into(),
        password: password.into(),
    }
}

/// Reads an `Authorization` header's value. Schemes are matched without
/// regard to case (RFC 9110); `Token` is InfluxDB's, whose 1.8 API and
/// client libraries send `Token USER:PASSWORD`.
pub fn from_header(value: &str) -> Presented {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = BASE64.decode(rest) else {
            return Presented::Malformed("Basic credentials are not base64");
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Presented::Malformed("Basic credentials are not UTF-8");
        };
        // The user name cannot hold a colon; the password can (RFC 7617).
        match text.split_once(':') {
            Some((user, pass)) => user_password(user, pass),
            None => Presented::Malformed("Basic credentials are not USER:PASSWORD"),
        }
    } else if scheme.eq_ignore_ascii_case("token") {
        // InfluxDB 2's clients send their API token this way: without a
        // colon it is a token (a JWT has none), with one a password.
        match rest.split_once(':') {
            Some((user, pass)) => user_password(user, pass),
            None if rest.is_empty() => Presented::Malformed("an empty token"),
            None => Presented::Bearer(rest.into()),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            Presented::Malformed("an empty bearer token")
        } else {
            Presented::Bearer(rest.into())
        }
    } else {
        Presented::Malformed("an authorization scheme other than Basic, Token or Bearer")
    }
}

/// InfluxDB 1's `u` and `p` query parameters (form-encoded: `%XX`, and
/// `+` for a space); `None` unless both are given, as InfluxDB reads them.
pub fn from_query(user: Option<&str>, pass: Option<&str>) -> Option<Presented> {
    let (user, pass) = (user?, pass?);
    if user.is_empty() || pass.is_empty() {
        return None;
    }
    match (form_decode(user), form_decode(pass)) {
        (Some(user), Some(pass)) => Some(user_password(&user, &pass)),
        _ => Some(Presented::Malformed("u or p is not form-encoded UTF-8")),
    }
}

/// Decodes `application/x-www-form-urlencoded` text.
fn form_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Missing or wrong credentials: 401. The message is the client's.
    Unauthorized(&'static str),
    /// The shard is stopping; nothing was checked.
    Unavailable,
}

/// One shard's authentication of ingest requests.
pub struct HttpAuth {
    mode: HttpAuthMode,
    cache: CredentialCache,
    /// Checks bearer tokens, when the mode takes them.
    oauth: Option<Arc<Validator>>,
}

impl HttpAuth {
    pub fn new(mode: HttpAuthMode, oauth: Option<Arc<Validator>>) -> HttpAuth {
        HttpAuth {
            mode,
            cache: CredentialCache::new(CACHED_USERS_MAX),
            oauth,
        }
    }

    pub fn mode(&self) -> HttpAuthMode {
        self.mode
    }

    /// The principal of a request that presented `presented`, or why not.
    pub async fn authenticate(
        &self,
        shard: &Shard,
        presented: &Presented,
    ) -> Result<String, Refused> {
        if self.mode == HttpAuthMode::None {
            return Ok(super::principal::ANONYMOUS.to_string());
        }
        let (user, pass) = match presented {
            Presented::Password { user, password } => (user, password.as_bytes()),
            Presented::Nothing => {
                return Err(Refused::Unauthorized(
                    "authorization required: HTTP Basic, Token USER:PASSWORD, or u and p",
                ))
            }
            Presented::Bearer(token) => return self.bearer(token),
            Presented::Malformed(why) => return Err(Refused::Unauthorized(why)),
        };
        if !self.mode.takes_passwords() {
            return Err(Refused::Unauthorized(
                "passwords are not accepted here: use a bearer token",
            ));
        }
        let current = password::strongest(shard, user);
        if self.cache.hit(user, pass, current.as_ref()) {
            return Ok(format!("User:{user}"));
        }
        match password::verify(user, current.clone(), pass.to_vec()).await {
            Verdict::Valid => {
                if let Some(checked) = current {
                    self.cache.insert(user, pass, checked);
                }
                Ok(format!("User:{user}"))
            }
            Verdict::Invalid => Err(Refused::Unauthorized(
                "authorization failed: invalid user name or password",
            )),
            Verdict::Unavailable => Err(Refused::Unavailable),
        }
    }

    /// A bearer token, checked as an OAUTHBEARER token is: signature
    /// against the JWKS, expiry, issuer, audience; the principal from its
    /// claim. The reason of a refusal goes to the log, not the client.
    fn bearer(&self, token: &str) -> Result<String, Refused> {
        let validator = match &self.oauth {
            Some(v) if self.mode.takes_tokens() => v,
            _ => {
                return Err(Refused::Unauthorized(
                    "bearer tokens are not accepted here: use HTTP Basic",
                ))
            }
        };
        let now_ms = i64::try_from(crate::partition::now_ms()).unwrap_or(i64::MAX);
        match validator.validate(token, now_ms) {
            Ok(valid) => Ok(valid.principal),
            Err(e) => {
                tracing::info!("ingest http: bearer token refused: {e}");
                Err(Refused::Unauthorized(
                    "authorization failed: invalid bearer token",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    fn pw(user: &str, password: &str) -> Presented {
        Presented::Password {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn basic_credentials_are_base64_of_user_colon_password() {
        assert_eq!(from_header(&basic("alice:secret")), pw("alice", "secret"));
        // The password may hold colons and anything UTF-8.
        assert_eq!(from_header(&basic("alice:a:b:c")), pw("alice", "a:b:c"));
        assert_eq!(
            from_header(&basic("ålice:pässwörd")),
            pw("ålice", "pässwörd")
        );
        // With and without padding ("a:b" is 3 bytes, "ab:c" needs it).
        assert_eq!(from_header("Basic YWI6Yw=="), pw("ab", "c"));
        assert_eq!(from_header("Basic YWI6Yw"), pw("ab", "c"));
        assert_eq!(from_header("  Basic   YWI6Yw==  "), pw("ab", "c"));
        for (value, why) in [
            ("Basic", "Basic credentials are not USER:PASSWORD"),
            ("Basic !!!!", "Basic credentials are not base64"),
            ("Basic YW=I6Yw==", "Basic credentials are not base64"),
            ("Basic YWI6Yw===", "Basic credentials are not base64"),
            ("Basic YWJj", "Basic credentials are not USER:PASSWORD"),
            ("Basic OnNlY3JldA==", "no user name"),
            ("Basic YWxpY2U6", "no password"),
            ("Basic /w==", "Basic credentials are not UTF-8"),
        ] {
            assert_eq!(from_header(value), Presented::Malformed(why), "{value}");
        }
    }

    #[test]
    fn schemes_match_in_any_case() {
        for scheme in ["basic", "BASIC", "bAsIc"] {
            let value = basic("u:p").replacen("Basic", scheme, 1);
            assert_eq!(from_header(&value), pw("u", "p"), "{value}");
        }
        for scheme in ["Token", "token", "TOKEN"] {
            assert_eq!(from_header(&format!("{scheme} u:p:q")), pw("u", "p:q"));
        }
        assert_eq!(
            from_header("bearer abc.def"),
            Presented::Bearer("abc.def".into())
        );
        assert_eq!(from_header("Bearer\tabc"), Presented::Bearer("abc".into()));
    }

    #[test]
    fn influx_tokens_and_others() {
        assert_eq!(
            from_header("Token just-a-token"),
            Presented::Bearer("just-a-token".into())
        );
        assert_eq!(
            from_header("Token "),
            Presented::Malformed("an empty token")
        );
        assert_eq!(
            from_header("Token :p"),
            Presented::Malformed("no user name")
        );
        assert_eq!(
            from_header("Bearer "),
            Presented::Malformed("an empty bearer token")
        );
        assert!(matches!(from_header("Digest x"), Presented::Malformed(_)));
        assert!(matches!(from_header(""), Presented::Malformed(_)));
        assert!(matches!(
            from_header("Basicx YWI6Yw=="),
            Presented::Malformed(_)
        ));
    }

    #[test]
    fn query_credentials_are_form_decoded() {
        assert_eq!(
            from_query(Some("alice"), Some("s3cret")),
            Some(pw("alice", "s3cret"))
        );
        assert_eq!(
            from_query(Some("al%69ce"), Some("a+b%3Ac%25")),
            Some(pw("alice", "a b:c%"))
        );
        assert_eq!(from_query(Some("alice"), None), None);
        assert_eq!(from_query(Some(""), Some("p")), None);
        assert!(matches!(
            from_query(Some("a"), Some("%zz")),
            Some(Presented::Malformed(_))
        ));
        assert!(matches!(
            from_query(Some("a"), Some("%ff")),
            Some(Presented::Malformed(_))
        ));
        assert!(matches!(
            from_query(Some("a"), Some("x%4")),
            Some(Presented::Malformed(_))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let shown = format!(
            "{:?} {:?}",
            pw("alice", "hunter2"),
            Presented::Bearer("tok".into())
        );
        assert!(shown.contains("alice") && !shown.contains("hunter2") && !shown.contains("tok"));
    }
}

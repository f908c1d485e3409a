//! JSON Web Signatures in compact form (RFC 7515) and the public keys of a
//! JSON Web Key Set (RFC 7517, 7518) that verify them, on ring: RS256/384/
//! 512, PS256/384/512, ES256/384. Symmetric algorithms (HS*) have no place
//! with a public key set, and `none` is not a signature: both are refused
//! here (the unsecured mode reads `none` tokens elsewhere, on purpose).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::TokenError;

/// Keys one set may hold, at most: a provider publishes a handful (the
/// current one and those rotating in and out).
pub const KEYS_MAX: usize = 256;

/// A token split into its parts, its header and payload decoded; nothing
/// verified yet.
pub struct Compact<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `BASE64URL(header) . BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

fn segment(text: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| TokenError::Malformed(format!("the {what} is not base64url: {e}")))
}

fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, TokenError> {
    // serde_json bounds nesting (128 levels); the bytes are bounded by the
    // SASL frame limit.
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
        Err(e) => Err(TokenError::Malformed(format!(
            "the {what} is not JSON: {e}"
        ))),
    }
}

/// Splits a compact JWS: three base64url segments, a JSON object header
/// with `alg`, a JSON object payload.
pub fn parse(token: &str) -> Result<Compact<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(format!(
            "a JWT has 3 dot-separated parts, this one {}",
            token.split('.').count()
        )));
    };
    let header = object(&segment(header, "header")?, "header")?;
    let claims = object(&segment(payload, "payload")?, "payload")?;
    let signature = segment(signature, "signature")?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(TokenError::Malformed("the header has no \"alg\"".into())),
    };
    // Extensions the validator would have to understand (RFC 7515 4.1.11):
    // none is, so a token that requires one is refused.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "the header lists critical extensions (\"crit\"), none of which is supported".into(),
        ));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(TokenError::Malformed(
                "the header's \"kid\" is not a string".into(),
            ))
        }
    };
    let signing_input = &token[..token.rfind('.').unwrap_or(0)];
    Ok(Compact {
        alg,
        kid,
        claims,
        signing_input,
        signature,
    })
}

/// The signature algorithms accepted, by JWS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
}

impl Alg {
    pub fn parse(name: &str) -> Result<Alg, TokenError> {
        Ok(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "none" => {
                return Err(TokenError::Algorithm(
                    "alg \"none\" (an unsigned token) is accepted only with oauth_unsecured_jwt"
                        .into(),
                ))
            }
            other if other.starts_with("HS") => {
                return Err(TokenError::Algorithm(format!(
                    "alg {other:?} is symmetric: a public key set cannot verify it"
                )))
            }
            other => {
                return Err(TokenError::Algorithm(format!(
                    "alg {:?} is not supported (RS256/384/512, PS256/384/512, ES256/384 are)",
                    clip(other)
                )))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
        }
    }
}

/// One usable public key of a set.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one: then only that one.
    alg: Option<String>,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point, `04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
}

impl Key {
    /// Whether this key can verify `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.as_deref().is_some_and(|a| a != alg.name()) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (
                Material::Rsa { .. },
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512
            ) | (Material::P256(_), Alg::Es256)
                | (Material::P384(_), Alg::Es384)
        )
    }

    /// Whether `signature` is `alg`'s over `message` by this key.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        let rsa = |params: &'static signature::RsaParameters, n: &[u8], e: &[u8]| {
            RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok()
        };
        match (&self.material, alg) {
            (Material::Rsa { n, e }, alg) => match alg {
                Alg::Rs256 => rsa(&signature::RSA_PKCS1_2048_8192_SHA256, n, e),
                Alg::Rs384 => rsa(&signature::RSA_PKCS1_2048_8192_SHA384, n, e),
                Alg::Rs512 => rsa(&signature::RSA_PKCS1_2048_8192_SHA512, n, e),
                Alg::Ps256 => rsa(&signature::RSA_PSS_2048_8192_SHA256, n, e),
                Alg::Ps384 => rsa(&signature::RSA_PSS_2048_8192_SHA384, n, e),
                Alg::Ps512 => rsa(&signature::RSA_PSS_2048_8192_SHA512, n, e),
                Alg::Es256 | Alg::Es384 => false,
            },
            (Material::P256(point), Alg::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::P384(point), Alg::Es384) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// The usable keys of a JWKS document, and why the others were left out.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub skipped: Vec<String>,
}

impl KeySet {
    /// Parses `{"keys": [...]}`. Keys of other types (`oct`, `OKP`), for
    /// encryption (`"use": "enc"`) or malformed are skipped with the
    /// reason; a document with no usable key is an error.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err("not a JWK set: no \"keys\" array".into());
        };
        if entries.len() > KEYS_MAX {
            return Err(format!(
                "{} keys, more than the {KEYS_MAX} a set may hold here",
                entries.len()
            ));
        }
        let mut set = KeySet::default();
        for (i, entry) in entries.iter().enumerate() {
            match key(entry) {
                Ok(k) => set.keys.push(k),
                Err(why) => set.skipped.push(format!("key {i}: {why}")),
            }
        }
        if set.keys.is_empty() {
            return Err(format!(
                "no usable signing key ({})",
                if set.skipped.is_empty() {
                    "the set is empty".to_string()
                } else {
                    set.skipped.join("; ")
                }
            ));
        }
        Ok(set)
    }

    /// The key that verifies a token of `alg` with `kid`: the one of that
    /// `kid`, or, for a token without one, the only key that fits `alg`.
    pub fn select(&self, alg: Alg, kid: Option<&str>) -> Result<&Key, TokenError> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| TokenError::UnknownKey(clip(kid)))?;
                if !key.fits(alg) {
                    return Err(TokenError::Algorithm(format!(
                        "key {:?} cannot verify alg {}",
                        clip(kid),
                        alg.name()
                    )));
                }
                Ok(key)
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key),
                    (None, _) => Err(TokenError::Algorithm(format!(
                        "no key of the set verifies alg {}",
                        alg.name()
                    ))),
                    (Some(_), Some(_)) => Err(TokenError::Malformed(format!(
                        "the token names no \"kid\" and several keys of the set verify alg {}",
                        alg.name()
                    ))),
                }
            }
        }
    }
}

fn string<'a>(entry: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match entry.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

fn bytes(entry: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = string(entry, name)?.ok_or_else(|| format!("no \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("\"{name}\" is not base64url: {e}"))
}

fn key(entry: &Value) -> Result<Key, String> {
    if !entry.is_object() {
        return Err("not a JSON object".into());
    }
    let kid = string(entry, "kid")?.map(clip);
    if let Some(usage) = string(entry, "use")? {
        if usage != "sig" {
            return Err(format!("\"use\" is {usage:?}, not \"sig\""));
        }
    }
    let alg = string(entry, "alg")?.map(str::to_string);
    if let Some(alg) = &alg {
        Alg::parse(alg).map_err(|e| format!("{e}"))?;
    }
    let material = match string(entry, "kty")? {
        Some("RSA") => {
            let mut n = bytes(entry, "n")?;
            let e = bytes(entry, "e")?;
            // Some encoders keep a leading zero octet; ring reads the
            // modulus as a minimal big-endian integer.
            let zeros = n.iter().take_while(|&&b| b == 0).count();
            n.drain(..zeros);
            if n.len() * 8 < 2048 {
                return Err(format!(
                    "an RSA modulus of {} bits (2048 at least)",
                    n.len() * 8
                ));
            }
            Material::Rsa { n, e }
        }
        Some("EC") => {
            let (size, p256) = match string(entry, "crv")? {
                Some("P-256") => (32, true),
                Some("P-384") => (48, false),
                other => {
                    return Err(format!(
                        "curve {other:?} is not supported (P-256, P-384 are)"
                    ))
                }
            };
            let (x, y) = (bytes(entry, "x")?, bytes(entry, "y")?);
            if x.len() != size || y.len() != size {
                return Err("x and y do not have the curve's size".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if p256 {
                Material::P256(point)
            } else {
                Material::P384(point)
            }
        }
        Some(other) => return Err(format!("key type {:?} is not supported", clip(other))),
        None => return Err("no \"kty\"".into()),
    };
    Ok(Key { kid, alg, material })
}

/// A name from outside, cut short for messages and logs.
pub fn clip(text: &str) -> String {
    text.chars().take(128).collect()
}

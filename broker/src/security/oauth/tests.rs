//! The validator against tokens signed here (ring signs with a test RSA
//! key and fresh P-256 keys), and malformed input of every kind.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::json;

use super::*;

/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`, made for
/// these tests only.
const RSA_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC/pE5fSqZn/o9A\n\
1ZWQP1CQkq18AvnemXDy/im/apUWQoIS5laM0I1H8apifNfdTKlPxjdA9O1nb7Vm\n\
dzovf55EIv/0pDIKAOHaR4QqCeoszuX1JHXXAmLqW5aFJlL6idNewFqOJGTCb2eo\n\
6HGhlIdWsvN1A9hOeQmFSil6GuG0qz4B9xNTIC+Is7nITfR1enKCCmlNlghAHNH0\n\
U8z0rYs7uOpaZiQ4mdw4OHZIcw7MOYDVCjXuxFN4T3U0iVWHJgVG9JXZzZlZWyd8\n\
l6hMAGnO4hh6VtKbFJgAg+8oJoT1pnNH4UON/LXb3uGxKUDjVchu3FA4ueLX48Nl\n\
nmhklbvTAgMBAAECggEAFi/sIO0wGd8nb66qq7Ig3jQVIMPpcOOb544UgERTMWoO\n\
zChdwdzNVpR8kP16MnVTLti4ge05ZR3SRyQrmN8yEBprPsQZxP24KEDaZNGUCo8D\n\
oZ+Qgw2ULSTgZtb6iWYWkiQ797Pv9HDYc/5BVZ8wEhISzKveyasKtqNQ7QGauwNb\n\
DAEXqKDFZ8C7L86jzMjzuSOReP0nhuqGQdl0PwvQ/B8ued/yDdP7ZezFmF5X31e8\n\
yvPFB4NsqojObhs4ADa6CDdbGyqfTojRYR4ftCk+sNXnOgG8DIiyliz7LnAGqwMV\n\
4f819roEjZoVCLNJjuQL9X8IS3nfD5xT6LQQh2glLQKBgQDm4AR7z+6rrgd8eDct\n\
oHtA4pn1VFecgZUImCLsNB0EdCSUoXqBMdCG32dQhM4xggytaphwjnp1KSo9+XeA\n\
/t4iPi4F4SDsaZaCzK4MubYTfCEpDYljZdUJYJP7KMGnQhOyl/nxdcXsSGJcO1w8\n\
Ngn4x8u/x+HtLZPSpp02ma4snwKBgQDUf0ioBUd6fZjkTmQWbTAqr6zTkrixahQF\n\
ERiZV5TTxpQYalfkn8cmSH+DfQdkoVrTSpM9zOpCyZIg8thEQ36nq9OXh0A0Cr0j\n\
njuZ6JkofDMgDAV9tP7Oez476qMYaEH3bVCsmnvPNOSApIlPkrSpjxwcOV6yqKmr\n\
pWn7cFuwTQKBgQCsXGwcfwTA+OCv5RPUpW2+6C1mgTwTJI695s6TpuhO7eJtcAyE\n\
LUtvlZONAkjpnxyVzvHVfhkgJMZblEXKcPwndmJnk0ZAGSf7qJD8AR1UeKRNAMUk\n\
Bt8/6/EuXaQNmYAZIerAgFtt5jBAiTR34yQYrhiHqdMafZ9RcYAHRj5JIwKBgBzR\n\
hlEDJkZ+chXEa95+wGGJoa6v30xwTnbBcsyZDB4MeFk3UuQ2pxOSEXkLo80J9P9i\n\
xcVD3SFhpOfDB4F6hdrHetK6DQMB0dTayMp+uQa8kVJvTu9VdJkcLbyCfcv5l7iu\n\
oppF+TSIv9SSe+zGwKmeNvm87hLcvOYCcPUgr86hAoGBAL730mTtuHh0690B1Dvk\n\
jP5EBzCFT3/YCtD2exPKb3dz+fNU1/abivh809pKBMrAJCQ1XKRMeJsl0ylDu0xq\n\
N8c3k1/54iVQzfaP5h4fQcBhzblDKj+YeMn8lC8wyE1AXPzSuA+g0mZlH3NP39Vc\n\
i3+q0ECMFhm9ma7KeXOI0EOM\n\
-----END PRIVATE KEY-----";

const NOW_MS: i64 = 1_800_000_000_000;
const NOW_S: i64 = NOW_MS / 1000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa() -> RsaKeyPair {
    let der = PrivatePkcs8KeyDer::from_pem_slice(RSA_PEM.as_bytes()).expect("pem");
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("rsa key")
}

fn rsa_jwk(kid: &str) -> serde_json::Value {
    let key = rsa();
    let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&public.n), "e": b64(&public.e)})
}

fn ec() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate");
    EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("ec key")
}

fn ec_jwk(key: &EcdsaKeyPair, kid: &str) -> serde_json::Value {
    let point = key.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
}

fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn sign_rsa(alg: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = unsigned(&header, claims);
    let padding: &dyn signature::RsaEncoding = match alg {
        "RS256" => &signature::RSA_PKCS1_SHA256,
        "RS512" => &signature::RSA_PKCS1_SHA512,
        "PS256" => &signature::RSA_PSS_SHA256,
        "PS384" => &signature::RSA_PSS_SHA384,
        _ => panic!("{alg}"),
    };
    let key = rsa();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(padding, &SystemRandom::new(), input.as_bytes(), &mut sig)
        .expect("sign");
    format!("{input}.{}", b64(&sig))
}

fn sign_ec(key: &EcdsaKeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let input = unsigned(&json!({"alg": "ES256", "kid": kid}), claims);
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", b64(sig.as_ref()))
}

fn claims() -> serde_json::Value {
    json!({"sub": "alice", "iat": NOW_S - 10, "exp": NOW_S + 600,
           "iss": "https://idp.example", "aud": ["sluice", "other"]})
}

fn settings() -> Settings {
    Settings {
        jwks: Some("unused".into()),
        unsecured: false,
        clock_skew_s: 30,
        expected_issuer: Some("https://idp.example".into()),
        expected_audiences: vec!["sluice".into()],
        sub_claim_name: "sub".into(),
        jwks_refresh_ms: 3_600_000,
        jwks_refresh_min_ms: 10_000,
    }
}

fn validator(settings: Settings, keys: &[serde_json::Value]) -> Validator {
    Validator::with_keys(settings, json!({"keys": keys}).to_string().as_bytes())
}

#[test]
fn tokens_signed_by_a_key_of_the_set_are_valid_for_each_algorithm() {
    let ec_key = ec();
    let v = validator(settings(), &[rsa_jwk("r1"), ec_jwk(&ec_key, "e1")]);
    let want = Validated {
        principal: "User:alice".into(),
        expires_at_ms: (NOW_S + 600) * 1000,
    };
    for alg in ["RS256", "RS512", "PS256", "PS384"] {
        let token = sign_rsa(alg, Some("r1"), &claims());
        assert_eq!(v.validate(&token, NOW_MS), Ok(want.clone()), "{alg}");
    }
    let token = sign_ec(&ec_key, "e1", &claims());
    assert_eq!(v.validate(&token, NOW_MS), Ok(want));
    // Without a kid, the one key that fits the algorithm.
    let token = sign_rsa("RS256", None, &claims());
    assert!(v.validate(&token, NOW_MS).is_ok());
}

#[test]
fn the_key_must_be_the_signers_and_in_the_set() {
    let v = validator(settings(), &[rsa_jwk("r1")]);
    let other = ec();
    let token = sign_ec(&other, "r1", &claims());
    assert!(matches!(
        v.validate(&token, NOW_MS),
        Err(TokenError::Algorithm(_))
    ));
    let token = sign_rsa("RS256", Some("r2"), &claims());
    assert_eq!(
        v.validate(&token, NOW_MS),
        Err(TokenError::UnknownKey("r2".into()))
    );
    // Same kid, another key: the signature tells.
    let ec_key = ec();
    let v = validator(settings(), &[ec_jwk(&ec(), "e1")]);
    let token = sign_ec(&ec_key, "e1", &claims());
    assert_eq!(v.validate(&token, NOW_MS), Err(TokenError::Signature));
    // A payload changed after signing.
    let v = validator(settings(), &[rsa_jwk("r1")]);
    let token = sign_rsa("RS256", Some("r1"), &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["sub"] = json!("mallory");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(v.validate(&forged, NOW_MS), Err(TokenError::Signature));
}

#[test]
fn unsigned_and_symmetric_tokens_are_refused_unless_unsecured_mode_is_on() {
    let v = validator(settings(), &[rsa_jwk("r1")]);
    let none = format!("{}.", unsigned(&json!({"alg": "none"}), &claims()));
    let e = v.validate(&none, NOW_MS).expect_err("alg none");
    assert!(e.to_string().contains("oauth_unsecured_jwt"), "{e}");
    let hs = format!(
        "{}.c2ln",
        unsigned(&json!({"alg": "HS256", "kid": "r1"}), &claims())
    );
    let e = v.validate(&hs, NOW_MS).expect_err("HS256");
    assert!(e.to_string().contains("symmetric"), "{e}");

    let unsecured = Validator {
        settings: Settings {
            jwks: None,
            unsecured: true,
            expected_issuer: None,
            expected_audiences: vec![],
            ..settings()
        },
        jwks: None,
    };
    // librdkafka's unsecured tokens: float dates, no iat needed.
    let librdkafka = json!({"sub": "bob", "exp": (NOW_S + 60) as f64 + 0.25, "scope": "x"});
    let token = format!("{}.", unsigned(&json!({"alg": "none"}), &librdkafka));
    assert_eq!(
        unsecured.validate(&token, NOW_MS),
        Ok(Validated {
            principal: "User:bob".into(),
            expires_at_ms: (NOW_S + 60) * 1000 + 250,
        })
    );
    let signed_part = format!("{token}c2ln");
    assert!(matches!(
        unsecured.validate(&signed_part, NOW_MS),
        Err(TokenError::Malformed(_))
    ));
    let expired = json!({"sub": "bob", "exp": NOW_S - 60});
    let token = format!("{}.", unsigned(&json!({"alg": "none"}), &expired));
    assert!(matches!(
        unsecured.validate(&token, NOW_MS),
        Err(TokenError::Expired { .. })
    ));
    assert_eq!(
        unsecured.validate(&sign_rsa("RS256", Some("r1"), &claims()), NOW_MS),
        Err(TokenError::NoKeys)
    );
}

#[test]
fn time_claims_are_checked_with_the_clock_skew() {
    let v = validator(settings(), &[rsa_jwk("r1")]);
    let with = |changes: serde_json::Value| {
        let mut c = claims();
        for (k, val) in changes.as_object().expect("object") {
            if val.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = val.clone();
            }
        }
        v.validate(&sign_rsa("RS256", Some("r1"), &c), NOW_MS)
    };
    assert!(
        with(json!({"exp": NOW_S - 20, "iat": NOW_S - 100})).is_ok(),
        "within the 30 s skew"
    );
    assert!(matches!(
        with(json!({"exp": NOW_S - 31, "iat": NOW_S - 100})),
        Err(TokenError::Expired { .. })
    ));
    assert!(with(json!({"nbf": NOW_S + 20})).is_ok());
    assert!(matches!(
        with(json!({"nbf": NOW_S + 31})),
        Err(TokenError::NotYetValid { .. })
    ));
    for (changes, said) in [
        (json!({"exp": null}), "no exp"),
        (json!({"iat": null}), "no iat"),
        (json!({"exp": "tomorrow"}), "NumericDate"),
        (json!({"exp": 1e300}), "NumericDate"),
        (json!({"exp": -1e300}), "NumericDate"),
        (json!({"exp": 18446744073709551615u64}), "NumericDate"),
        (json!({"iat": NOW_S + 700}), "iat is after exp"),
    ] {
        let e = with(changes.clone()).expect_err(&changes.to_string());
        assert!(e.to_string().contains(said), "{changes}: {e}");
    }
}

#[test]
fn issuer_audience_and_principal_claims_are_checked() {
    let v = validator(settings(), &[rsa_jwk("r1")]);
    let check = |c: serde_json::Value| v.validate(&sign_rsa("RS256", Some("r1"), &c), NOW_MS);
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert!(check(c).expect_err("issuer").to_string().contains("issuer"));
    let mut c = claims();
    c.as_object_mut().expect("object").remove("iss");
    assert!(check(c)
        .expect_err("no issuer")
        .to_string()
        .contains("no iss"));
    let mut c = claims();
    c["aud"] = json!("sluice");
    assert!(check(c).is_ok(), "a single audience string");
    let mut c = claims();
    c["aud"] = json!(["a", "b"]);
    assert!(check(c)
        .expect_err("audience")
        .to_string()
        .contains("audience"));
    let mut c = claims();
    c.as_object_mut().expect("object").remove("aud");
    assert!(check(c).is_err(), "no audience at all");
    let mut c = claims();
    c["sub"] = json!("  ");
    assert!(check(c).expect_err("empty").to_string().contains("empty"));
    let mut c = claims();
    c["sub"] = json!(7);
    assert!(check(c)
        .expect_err("number")
        .to_string()
        .contains("not a string"));

    let v = validator(
        Settings {
            sub_claim_name: "client_id".into(),
            expected_issuer: None,
            expected_audiences: vec![],
            ..settings()
        },
        &[rsa_jwk("r1")],
    );
    let mut c = json!({"client_id": "svc-7", "iat": NOW_S, "exp": NOW_S + 5});
    let token = sign_rsa("RS256", Some("r1"), &c);
    assert_eq!(
        v.validate(&token, NOW_MS).map(|v| v.principal),
        Ok("User:svc-7".into())
    );
    c.as_object_mut().expect("object").remove("client_id");
    let e = v
        .validate(&sign_rsa("RS256", Some("r1"), &c), NOW_MS)
        .expect_err("no principal");
    assert!(e.to_string().contains("no client_id claim"), "{e}");
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let v = validator(settings(), &[rsa_jwk("r1")]);
    let good = sign_rsa("RS256", Some("r1"), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        format!("{good}.extra"),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            &parts[0][..parts[0].len() - 1],
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"17"), parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"{\"exp\":1e999}"), parts[2]),
        format!("{}.{}.{}", parts[0], b64(&[b'['; 10_000]), parts[2]),
        format!("{}.{}.{}", b64(b"{}"), parts[1], parts[2]),
        format!("{}.{}.{}", b64(b"{\"alg\":7}"), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            b64(b"{\"alg\":\"RS256\",\"kid\":[]}"),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            b64(b"{\"alg\":\"RS256\",\"crit\":[\"x\"]}"),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", b64(b"{\"alg\":\"ES512\"}"), parts[1], parts[2]),
    ];
    for token in &cases {
        assert!(v.validate(token, NOW_MS).is_err(), "{token}");
    }
    for end in (0..good.len()).step_by(7) {
        assert!(v.validate(&good[..end], NOW_MS).is_err());
    }
    let bytes = good.as_bytes();
    for i in (0..bytes.len()).step_by(5) {
        let mut flipped = bytes.to_vec();
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(v.validate(&flipped, NOW_MS).is_err(), "byte {i} changed");
    }
}

#[test]
fn key_sets_keep_usable_signing_keys_and_say_why_others_are_left_out() {
    let set = jws::KeySet::parse(
        json!({"keys": [
            rsa_jwk("r1"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": b64(&[0xc5; 128]), "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
            "not an object",
        ]})
        .to_string()
        .as_bytes(),
    )
    .expect("one usable key");
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.skipped.len(), 6, "{:?}", set.skipped);
    for (doc, said) in [
        (&b"[]"[..], "no \"keys\""),
        (b"{\"keys\": []}", "empty"),
        (b"{\"keys\": [{\"kty\": \"oct\"}]}", "oct"),
        (b"{", "not JSON"),
    ] {
        let e = jws::KeySet::parse(doc).expect_err(said);
        assert!(e.contains(said), "{e}");
    }
}

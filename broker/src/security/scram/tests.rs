//! Tests of the SCRAM server: RFC 7677's vector, whole exchanges against a
//! client written here, each refusal, and random input.

use super::*;

const SALT: &[u8] = b"a salt of sixteen";
const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";

fn secret() -> Arc<[u8; 32]> {
    Arc::new([7; 32])
}

fn stored(mech: Mechanism, password: &str) -> ScramCredential {
    ScramCredential::from_password(mech, password.as_bytes(), SALT.to_vec(), ITERATIONS_MIN)
}

/// The client's side of the final step: its message and the
/// server-final-message it expects, from what the server sent.
fn client_final(
    mech: Mechanism,
    password: &str,
    bare: &str,
    server_first: &[u8],
    channel: &str,
) -> (String, String) {
    client_final_prefixed(mech, password, bare, server_first, channel, "")
}

/// `client_final` with `prefix` before the nonce, as librdkafka before
/// 2.6.1 sends it (its client nonce once more).
fn client_final_prefixed(
    mech: Mechanism,
    password: &str,
    bare: &str,
    server_first: &[u8],
    channel: &str,
    prefix: &str,
) -> (String, String) {
    let server_first = std::str::from_utf8(server_first).expect("server-first is UTF-8");
    let mut fields = server_first.split(',');
    let mut value = |key: &str| {
        let field = fields.next().expect("server-first has three fields");
        attribute(field, key).expect("fields in order").to_owned()
    };
    let nonce = value("r");
    let salt = BASE64.decode(value("s")).expect("salt is base64");
    let iterations = value("i").parse().expect("iterations are a number");
    let salted = salted_password(mech, password.as_bytes(), &salt, iterations);
    let client_key = hmac_sign(mech.hmac(), &salted, &[b"Client Key"]);
    let without_proof = format!("c={channel},r={prefix}{nonce}");
    let auth = format!("{bare},{server_first},{without_proof}");
    let signature = hmac_sign(mech.hmac(), &hash(mech, &client_key), &[auth.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = hmac_sign(mech.hmac(), &salted, &[b"Server Key"]);
    let verifier = hmac_sign(mech.hmac(), &server_key, &[auth.as_bytes()]);
    let message = format!("{without_proof},p={}", BASE64.encode(proof));
    (message, format!("v={}", BASE64.encode(verifier)))
}

/// A whole exchange of `user` with `password` against a server knowing
/// `user` with the password `real`: the result of the final step.
fn exchange(mech: Mechanism, user: &str, password: &str, real: Option<&str>) -> ScramServer {
    let mut server = ScramServer::new(mech, secret());
    let bare = format!("n={user},r={CLIENT_NONCE}");
    let credential = real.map(|p| stored(mech, p));
    let server_first = server
        .client_first(format!("n,,{bare}").as_bytes(), |_| credential)
        .expect("client-first accepted");
    let (message, expected) = client_final(mech, password, &bare, &server_first, "biws");
    if let Ok(reply) = server.client_final(message.as_bytes()) {
        assert_eq!(reply, expected.into_bytes(), "server proves itself");
    }
    server
}

/// A server past client-first for `user`/`pencil` with a fixed nonce.
fn started(mech: Mechanism, first: &str) -> (ScramServer, Result<Vec<u8>, ScramError>) {
    let mut server = ScramServer::new(mech, secret()).with_server_nonce(SERVER_NONCE);
    let result = server.client_first(first.as_bytes(), |_| Some(stored(mech, "pencil")));
    (server, result)
}

fn first_error(first: &str) -> ScramError {
    started(Mechanism::Sha256, first)
        .1
        .expect_err("client-first refused")
}

#[test]
fn rfc7677_vector() {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
    let credential = ScramCredential::from_password(Mechanism::Sha256, b"pencil", salt, 4096);
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let mut server = ScramServer::new(Mechanism::Sha256, secret())
        .with_server_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    let server_first = server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |u| {
            (u == "user").then_some(credential)
        })
        .expect("client-first accepted");
    let expected_first = format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    assert_eq!(server_first, expected_first.into_bytes());
    let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let last = format!("c=biws,r={nonce},p={proof}");
    let server_final = server
        .client_final(last.as_bytes())
        .expect("proof accepted");
    let signature = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(server_final, format!("v={signature}").into_bytes());
    assert_eq!(server.authenticated(), Some("user"));
}

#[test]
fn the_test_client_reproduces_the_rfc_proof() {
    let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
    let first =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    let (message, _) = client_final(Mechanism::Sha256, "pencil", bare, first.as_bytes(), "biws");
    assert!(message.ends_with(",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
}

#[test]
fn successful_exchange_with_both_mechanisms() {
    for mech in [Mechanism::Sha256, Mechanism::Sha512] {
        let server = exchange(mech, "alice", "secret", Some("secret"));
        assert_eq!(server.authenticated(), Some("alice"), "{mech:?}");
    }
}

#[test]
fn server_nonce_is_long_printable_and_fresh() {
    let nonce = |server_first: Vec<u8>| {
        let text = String::from_utf8(server_first).expect("UTF-8");
        let r = text
            .split(',')
            .next()
            .and_then(|f| attribute(f, "r"))
            .map(str::to_owned);
        r.expect("nonce first")
    };
    let first = b"n,,n=alice,r=abc";
    let mut one = ScramServer::new(Mechanism::Sha256, secret());
    let mut two = ScramServer::new(Mechanism::Sha256, secret());
    let a = nonce(one.client_first(first, |_| None).expect("accepted"));
    let b = nonce(two.client_first(first, |_| None).expect("accepted"));
    assert!(
        a.starts_with("abc") && a.len() >= 3 + 32 && is_nonce(&a),
        "{a}"
    );
    assert_ne!(a, b);
}

#[test]
fn wrong_password_fails_with_the_credentials_error() {
    for mech in [Mechanism::Sha256, Mechanism::Sha512] {
        let mut server = exchange(mech, "alice", "wrong", Some("secret"));
        assert_eq!(server.authenticated(), None);
        let error = server
            .client_final(b"c=biws,r=x,p=eA==")
            .expect_err("failed for good");
        assert!(matches!(error, ScramError::InvalidState(_)));
    }
    let mut server = ScramServer::new(Mechanism::Sha256, secret());
    let first = server
        .client_first(b"n,,n=alice,r=abc", |_| {
            Some(stored(Mechanism::Sha256, "secret"))
        })
        .expect("accepted");
    let (last, _) = client_final(Mechanism::Sha256, "wrong", "n=alice,r=abc", &first, "biws");
    let error = server.client_final(last.as_bytes()).expect_err("refused");
    assert_eq!(error, ScramError::InvalidCredentials);
    assert_eq!(
        error.to_string(),
        "Authentication failed: Invalid user credentials"
    );
}

#[test]
fn unknown_user_fails_at_client_final_with_the_same_error() {
    let first = b"n,,n=nobody,r=abc";
    let mut server = ScramServer::new(Mechanism::Sha256, secret());
    let server_first = server
        .client_first(first, |_| None)
        .expect("not refused yet");
    let again = ScramServer::new(Mechanism::Sha256, secret())
        .client_first(first, |_| None)
        .expect("not refused yet");
    let salt = |m: &[u8]| {
        String::from_utf8_lossy(m)
            .split(',')
            .nth(1)
            .map(str::to_owned)
    };
    assert_eq!(salt(&server_first), salt(&again), "a stable salt per name");
    let text = String::from_utf8_lossy(&server_first).into_owned();
    assert!(text.ends_with(",i=4096"), "{text}");
    let (last, _) = client_final(
        Mechanism::Sha256,
        "any",
        "n=nobody,r=abc",
        &server_first,
        "biws",
    );
    let error = server.client_final(last.as_bytes()).expect_err("refused");
    assert_eq!(error, ScramError::InvalidCredentials);
    assert_eq!(server.authenticated(), None);
}

#[test]
fn wrong_nonce_fails() {
    let (mut server, first) = started(Mechanism::Sha256, "n,,n=user,r=abc");
    let first = first.expect("accepted");
    let (last, _) = client_final(Mechanism::Sha256, "pencil", "n=user,r=abc", &first, "biws");
    let last = last.replace(SERVER_NONCE, "other");
    let error = server.client_final(last.as_bytes()).expect_err("refused");
    assert_eq!(error, ScramError::InvalidNonce);
    assert_eq!(
        error.to_string(),
        "Invalid client nonce in the final client message."
    );
}

/// librdkafka before 2.6.1 (Debian 12's kcat among its users) sends its
/// client nonce again before the whole nonce; Kafka 3.8.1+ accepts a final
/// nonce that ends with the whole one, and so does this server. The proof
/// is over what the client sent, so it still checks.
#[test]
fn a_final_nonce_repeating_the_client_nonce_is_accepted_as_kafka_does() {
    let mech = Mechanism::Sha512;
    let (mut server, first) = started(mech, &format!("n,,n=user,r={CLIENT_NONCE}"));
    let first = first.expect("accepted");
    let bare = format!("n=user,r={CLIENT_NONCE}");
    let (last, expected) =
        client_final_prefixed(mech, "pencil", &bare, &first, "biws", CLIENT_NONCE);
    assert!(last.contains(&format!("r={CLIENT_NONCE}{CLIENT_NONCE}{SERVER_NONCE}")));
    let reply = server.client_final(last.as_bytes()).expect("accepted");
    assert_eq!(reply, expected.into_bytes());
    // Whatever comes before it, as Kafka's endsWith; a nonce without the
    // server's whole random part is refused.
    let (mut server, first) = started(mech, &format!("n,,n=user,r={CLIENT_NONCE}"));
    let (last, _) = client_final_prefixed(mech, "pencil", &bare, &first.expect("ok"), "biws", "x");
    assert!(
        server.client_final(last.as_bytes()).is_ok(),
        "a suffix match, as Kafka's"
    );
    let (mut server, first) = started(mech, &format!("n,,n=user,r={CLIENT_NONCE}"));
    let first = String::from_utf8(first.expect("ok")).expect("text");
    let cut = first.replacen(SERVER_NONCE, &SERVER_NONCE[..4], 1);
    let (last, _) = client_final(mech, "pencil", &bare, cut.as_bytes(), "biws");
    assert_eq!(
        server.client_final(last.as_bytes()).expect_err("refused"),
        ScramError::InvalidNonce
    );
}

#[test]
fn wrong_channel_binding_fails() {
    let (mut server, first) = started(Mechanism::Sha256, "n,,n=user,r=abc");
    let first = first.expect("accepted");
    let yes = BASE64.encode("y,,");
    let (last, _) = client_final(Mechanism::Sha256, "pencil", "n=user,r=abc", &first, &yes);
    let error = server.client_final(last.as_bytes()).expect_err("refused");
    assert_eq!(error, ScramError::ChannelBindingMismatch);
}

#[test]
fn channel_binding_flags_are_refused() {
    for first in ["y,,n=user,r=abc", "p=tls-unique,,n=user,r=abc"] {
        assert_eq!(first_error(first), ScramError::ChannelBindingUnsupported);
    }
}

#[test]
fn authorization_id_must_be_the_user_name() {
    let error = first_error("n,a=admin,n=user,r=abc");
    assert_eq!(error, ScramError::AuthorizationIdMismatch);
    let text = "Authentication failed: Client requested an authorization id that is different from username";
    assert_eq!(error.to_string(), text);
    let (mut server, first) = started(Mechanism::Sha256, "n,a=user,n=user,r=abc");
    let first = first.expect("same id accepted");
    let c = BASE64.encode("n,a=user,");
    let (last, _) = client_final(Mechanism::Sha256, "pencil", "n=user,r=abc", &first, &c);
    server.client_final(last.as_bytes()).expect("authenticated");
    assert_eq!(server.authenticated(), Some("user"));
}

#[test]
fn delegation_tokens_are_refused() {
    let error = first_error("n,,n=user,r=abc,tokenauth=true");
    assert_eq!(error, ScramError::TokenAuthUnsupported);
    let (_, result) = started(Mechanism::Sha256, "n,,n=user,r=abc,tokenauth=false,foo=bar");
    result.expect("unknown extensions and tokenauth=false are ignored");
}

#[test]
fn escaped_names_are_unescaped() {
    let mut server = ScramServer::new(Mechanism::Sha256, secret());
    let mut seen = String::new();
    server
        .client_first(b"n,,n=a=2Cb=3Dc,r=abc", |u| {
            seen = u.to_owned();
            None
        })
        .expect("accepted");
    assert_eq!(seen, "a,b=c");
    for bad in [
        "n,,n=a=2c,r=abc",
        "n,,n=a=,r=abc",
        "n,,n=a=41,r=abc",
        "n,,n=,r=abc",
    ] {
        assert!(
            matches!(first_error(bad), ScramError::InvalidClientFirst(_)),
            "{bad}"
        );
    }
}

#[test]
fn too_few_iterations_are_refused() {
    let mut server = ScramServer::new(Mechanism::Sha256, secret());
    let weak = ScramCredential::from_password(Mechanism::Sha256, b"pencil", SALT.to_vec(), 4095);
    let error = server
        .client_first(b"n,,n=user,r=abc", |_| Some(weak))
        .expect_err("refused");
    let text = "Iterations 4095 is less than the minimum 4096 for SCRAM-SHA-256";
    assert_eq!(error.to_string(), text);
}

#[test]
fn malformed_messages_are_refused() {
    let firsts = [
        "",
        "n",
        "n,",
        "x,,n=user,r=abc",
        "n,b=user,n=user,r=abc",
        "n,,m=x,n=user,r=abc",
        "n,,r=abc,n=user",
        "n,,n=user",
        "n,,n=user,r=",
        "n,,n=user,r=a b",
        "n,,n=user,r=abc,",
        "n,,n=user,r=abc,n=again",
        "n,,n=user,r=abc,x=1,x=2",
        "n,,n=user,r=abc,1=x",
        "n,,n=us\0er,r=abc",
    ];
    for first in firsts {
        assert!(
            matches!(first_error(first), ScramError::InvalidClientFirst(_)),
            "{first:?}"
        );
    }
    let nonce = format!("abc{SERVER_NONCE}");
    let finals = [
        String::new(),
        format!("c=biws,r={nonce}"),
        format!("c=biws,r={nonce},p="),
        format!("c=biws,r={nonce},p=not base64"),
        format!("r={nonce},c=biws,p=eA=="),
        format!("c=biws,r={nonce},p=eA==,x=1"),
        format!("c=biws,r={nonce},p=eA==,p=eA=="),
        format!("c=biws,r={nonce},r={nonce},p=eA=="),
        format!("c=biws,r={nonce},p=eA=="),
    ];
    for last in finals {
        let (mut server, first) = started(Mechanism::Sha256, "n,,n=user,r=abc");
        first.expect("accepted");
        let error = server.client_final(last.as_bytes()).expect_err("refused");
        assert!(
            matches!(error, ScramError::InvalidClientFinal(_)),
            "{last:?}: {error}"
        );
    }
    assert_eq!(
        first_error("n,,n=\u{e9}\u{ff},r=\u{e9}"),
        ScramError::InvalidClientFirst("missing or invalid nonce")
    );
    let (mut server, _) = started(Mechanism::Sha256, "n,,n=user,r=abc");
    assert_eq!(
        server.client_final(b"c=biws,\xff"),
        Err(ScramError::NotUtf8)
    );
}

#[test]
fn calls_out_of_order_are_refused() {
    let mut server = ScramServer::new(Mechanism::Sha256, secret());
    let error = server
        .client_final(b"c=biws,r=abc,p=eA==")
        .expect_err("final first");
    assert!(matches!(error, ScramError::InvalidState(_)));
    let error = server
        .client_first(b"n,,n=user,r=abc", |_| None)
        .expect_err("failed for good");
    assert!(matches!(error, ScramError::InvalidState(_)));

    let (mut server, first) = started(Mechanism::Sha256, "n,,n=user,r=abc");
    first.expect("accepted");
    let error = server
        .client_first(b"n,,n=user,r=abc", |_| None)
        .expect_err("first twice");
    assert!(matches!(error, ScramError::InvalidState(_)));

    let mut server = exchange(Mechanism::Sha256, "alice", "pw", Some("pw"));
    let error = server
        .client_final(b"c=biws,r=abc,p=eA==")
        .expect_err("after success");
    assert!(matches!(error, ScramError::InvalidState(_)));
    assert_eq!(server.authenticated(), None, "failed for good");

    let (mut server, _) = started(Mechanism::Sha256, "y,,n=user,r=abc");
    let error = server
        .client_final(b"c=biws,r=abc,p=eA==")
        .expect_err("after a failure");
    assert!(matches!(error, ScramError::InvalidState(_)));
}

#[test]
fn oversize_messages_are_refused() {
    let long = format!("n,,n=user,r={}", "a".repeat(MESSAGE_MAX));
    assert_eq!(first_error(&long), ScramError::TooLong(long.len()));
    let (mut server, first) = started(Mechanism::Sha256, "n,,n=user,r=abc");
    first.expect("accepted");
    let long = vec![b'x'; MESSAGE_MAX + 1];
    assert_eq!(
        server.client_final(&long),
        Err(ScramError::TooLong(MESSAGE_MAX + 1))
    );
}

/// xorshift64: deterministic, and no dev-dependency for it.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Random bytes, mostly from SCRAM's own characters so parsing gets
    /// deep, or `valid` with a few bytes changed.
    fn message(&mut self, valid: &[u8]) -> Vec<u8> {
        const ALPHABET: &[u8] = b"nyparmcis=,23CDbiws+/";
        let mut out = if self.below(2) == 0 {
            valid.to_vec()
        } else {
            Vec::new()
        };
        let edits = if out.is_empty() {
            self.below(80)
        } else {
            1 + self.below(4)
        };
        for _ in 0..edits {
            // Few bytes above ASCII: most would stop at the UTF-8 check.
            let byte = match self.below(8) {
                0 => self.next() as u8,
                1 => self.next() as u8 & 0x7f,
                _ => ALPHABET[self.below(ALPHABET.len())],
            };
            let at = self.below(out.len() + 1);
            match self.below(3) {
                0 if at < out.len() => out[at] = byte,
                1 if at < out.len() => {
                    out.remove(at);
                }
                _ => out.insert(at, byte),
            }
        }
        out
    }
}

#[test]
fn random_input_never_panics() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let credential = stored(Mechanism::Sha256, "pencil");
    let valid_first = b"n,,n=user,r=abc,ext=1";
    let (valid_final, _) = {
        let (_, first) = started(Mechanism::Sha256, "n,,n=user,r=abc,ext=1");
        let first = first.expect("accepted");
        client_final(
            Mechanism::Sha256,
            "pencil",
            "n=user,r=abc,ext=1",
            &first,
            "biws",
        )
    };
    for _ in 0..3000 {
        let mut server =
            ScramServer::new(Mechanism::Sha256, secret()).with_server_nonce(SERVER_NONCE);
        let first = random.message(valid_first);
        let lookup = |u: &str| (u == "user").then(|| credential.clone());
        if server.client_first(&first, lookup).is_ok() {
            let _ = server.client_final(&random.message(valid_final.as_bytes()));
        }
        let mut server =
            ScramServer::new(Mechanism::Sha256, secret()).with_server_nonce(SERVER_NONCE);
        server
            .client_first(valid_first, |_| Some(credential.clone()))
            .expect("accepted");
        let last = random.message(valid_final.as_bytes());
        if server.client_final(&last).is_ok() {
            assert_eq!(last, valid_final.as_bytes(), "only the real proof passes");
        }
    }
}

#[test]
fn verify_password_checks_the_password() {
    for mech in [Mechanism::Sha256, Mechanism::Sha512] {
        let credential = stored(mech, "secret");
        assert!(credential.verify_password(mech, b"secret"));
        assert!(!credential.verify_password(mech, b"Secret"));
        assert!(!credential.verify_password(mech, b""));
    }
}

#[test]
fn salted_passwords_make_the_same_credential() {
    for mech in [Mechanism::Sha256, Mechanism::Sha512] {
        let salt = random_salt();
        assert_eq!(salt.len(), 32);
        let salted = salted_password(mech, b"secret", &salt, 8192);
        let from_salted = ScramCredential::from_salted_password(mech, salt.clone(), 8192, &salted);
        assert_eq!(
            from_salted,
            ScramCredential::from_password(mech, b"secret", salt, 8192)
        );
    }
}

#[test]
fn mechanism_names_and_types() {
    for mech in [Mechanism::Sha256, Mechanism::Sha512] {
        assert_eq!(Mechanism::parse(mech.name()), Some(mech));
        assert_eq!(Mechanism::from_kafka_type(mech.kafka_type()), Some(mech));
    }
    assert_eq!(Mechanism::Sha256.kafka_type(), 1);
    assert_eq!(Mechanism::Sha512.kafka_type(), 2);
    assert_eq!(Mechanism::parse("scram-sha-256"), None);
    assert_eq!(Mechanism::from_kafka_type(0), None);
}

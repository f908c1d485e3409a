//! The client side of SCRAM-SHA-256/512 (RFC 5802, RFC 7677), as Kafka
//! clients run it: no channel binding, the user name escaped, the
//! server's signature checked at the end.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};

/// Iterations a server may ask for; more would let a hostile server make
/// the harness spin.
const ITERATIONS_MAX: u32 = 1 << 20;

pub struct ScramClient {
    digest: &'static digest::Algorithm,
    hmac: hmac::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// Set by `client_final`: what the server's last message must prove.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// `None` for a mechanism other than SCRAM-SHA-256/512.
    pub fn new(mechanism: &str, user: &str, password: &str) -> Option<ScramClient> {
        let (digest, hmac, pbkdf2) = match mechanism {
            "SCRAM-SHA-256" => (
                &digest::SHA256,
                hmac::HMAC_SHA256,
                pbkdf2::PBKDF2_HMAC_SHA256,
            ),
            "SCRAM-SHA-512" => (
                &digest::SHA512,
                hmac::HMAC_SHA512,
                pbkdf2::PBKDF2_HMAC_SHA512,
            ),
            _ => return None,
        };
        let nonce: String = uuid::Uuid::new_v4().simple().to_string();
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Some(ScramClient {
            digest,
            hmac,
            pbkdf2,
            password: password.to_string(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            server_signature: None,
        })
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message for the server-first `server_first`.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| "the server-first message is not UTF-8".to_string())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for field in text.split(',') {
            match field.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(B64.decode(v).map_err(|e| format!("salt: {e}"))?),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed server-first message {text:?}"));
        };
        if !nonce.starts_with(&self.nonce) || iterations == 0 || iterations > ITERATIONS_MAX {
            return Err(format!("unacceptable server-first message {text:?}"));
        }
        let len = self.digest.output_len();
        let mut salted = vec![0u8; len];
        let rounds = std::num::NonZeroU32::new(iterations).ok_or("zero iterations")?;
        pbkdf2::derive(
            self.pbkdf2,
            rounds,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(self.hmac, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(self.digest, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(self.hmac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&key, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(self.hmac, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server knew the password too.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).unwrap_or("");
        let Some(want) = &self.server_signature else {
            return Err("server-final before client-final".into());
        };
        match text.strip_prefix("v=").map(|v| B64.decode(v)) {
            Some(Ok(got)) if &got == want => Ok(()),
            _ => Err(format!("the server's signature does not check: {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn the_rfc_7677_exchange_comes_out_exactly() {
        let mut c = ScramClient::new("SCRAM-SHA-256", "user", "pencil").expect("a mechanism");
        c.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        c.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = c.client_final(server_first).expect("a client-final");
        assert_eq!(
            String::from_utf8(last).expect("text"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("the server's signature");
        assert!(c.verify_server(b"v=AAAA").is_err());
    }

    #[test]
    fn a_server_nonce_not_extending_ours_is_refused() {
        let mut c = ScramClient::new("SCRAM-SHA-512", "u", "p").expect("a mechanism");
        assert!(c.client_final(b"r=other,s=AAAA,i=4096").is_err());
        assert!(c.client_final(b"garbage").is_err());
        assert!(ScramClient::new("SCRAM-MD5", "u", "p").is_none());
    }
}

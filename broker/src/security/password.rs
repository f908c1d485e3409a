//! Checking a user's password against the SCRAM credentials of the cluster
//! metadata, for SASL/PLAIN and the ingest listener's HTTP Basic: the key
//! is derived from the password (PBKDF2) off the shard, a bounded number
//! at a time, and an unknown user costs the same as a known one.

use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use super::scram::{Mechanism, ScramCredential};
use crate::shard::Shard;

/// The key that makes unknown users' fake SCRAM salts and credentials:
/// random per process, so an unknown user looks like a known one to a
/// client and fails where a wrong password does.
pub fn fake_credential_secret() -> Arc<[u8; 32]> {
    static SECRET: OnceLock<Arc<[u8; 32]>> = OnceLock::new();
    SECRET
        .get_or_init(|| {
            let mut secret = [0u8; 32];
            let salt = super::scram::random_salt();
            for (s, r) in secret.iter_mut().zip(salt) {
                *s = r;
            }
            Arc::new(secret)
        })
        .clone()
}

/// `user`'s stored credential for `mechanism`, as the metadata holds it now.
pub fn stored(shard: &Shard, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
    let meta = shard.metadata();
    let record = meta
        .scram_credentials
        .get(user)?
        .iter()
        .find(|c| c.mechanism == mechanism.kafka_type())?;
    Some(ScramCredential {
        salt: record.salt.clone(),
        iterations: record.iterations,
        stored_key: record.stored_key.clone(),
        server_key: record.server_key.clone(),
    })
}

/// The credential a password is checked against: the user's strongest.
pub fn strongest(shard: &Shard, user: &str) -> Option<(Mechanism, ScramCredential)> {
    [Mechanism::Sha512, Mechanism::Sha256]
        .into_iter()
        .find_map(|m| stored(shard, user, m).map(|c| (m, c)))
}

/// What a password check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// The shard is stopping; nothing was checked.
    Unavailable,
}

/// Password checks running at once on this shard, at most.
const CHECKS_MAX: u64 = 2;

fn gate() -> Rc<crate::rt::Semaphore> {
    thread_local! {
        static GATE: Rc<crate::rt::Semaphore> = Rc::new(crate::rt::Semaphore::new(CHECKS_MAX));
    }
    GATE.with(|g| g.clone())
}

/// Whether `password` is `user`'s, checked against `found` (what
/// `strongest` gave). An unknown user's password is checked against a
/// made-up credential of the same cost, so that the answer's timing does
/// not tell whether the user exists.
pub async fn verify(
    user: &str,
    found: Option<(Mechanism, ScramCredential)>,
    password: Vec<u8>,
) -> Verdict {
    let known = found.is_some();
    let (mechanism, credential) = found.unwrap_or_else(|| {
        let fake = ScramCredential::from_salted_password(
            Mechanism::Sha512,
            user.as_bytes().to_vec(),
            super::scram::ITERATIONS_MIN,
            &fake_credential_secret()[..],
        );
        (Mechanism::Sha512, fake)
    });
    // A bounded number of checks per shard at a time: each takes
    // milliseconds of a CPU, and a password spray must not queue
    // unbounded work ahead of the shard's file operations.
    let Ok(_turn) = gate().acquire_static_permit(1).await else {
        return Verdict::Unavailable;
    };
    let matches = crate::rt::executor()
        .spawn_blocking(move || credential.verify_password(mechanism, &password))
        .await;
    if matches && known {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

//! The first credentials of a fresh cluster (`scram_bootstrap_file`), as
//! `kafka-storage format --add-scram` seeds them: lines
//! `NAME:MECHANISM:PASSWORD`, created at a start that finds no credential
//! in the cluster at all. Once there are credentials the file is not read
//! again, so a password changed or a user deleted since is never put
//! back, and the file can be removed.

use std::path::Path;

use replication::controller::{Command, ScramRecord};

use super::scram::{self, Mechanism, ScramCredential};
use crate::peers::Peers;
use crate::shard::Shard;

/// Iterations of the credentials made here (Kafka's default).
const ITERATIONS: u32 = 4096;

/// One line of the file: (user, mechanism, password).
type Seed = (String, Mechanism, String);

/// Reads the file: every line well-formed, or an error naming the line.
/// A file that is not there seeds nothing (removed once used).
pub fn read(path: &Path) -> Result<Vec<Seed>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Result<Vec<Seed>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why} (NAME:MECHANISM:PASSWORD)", i + 1);
        let mut parts = line.splitn(3, ':');
        let (Some(user), Some(mechanism), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not three fields"));
        };
        let mechanism = Mechanism::parse(mechanism)
            .ok_or_else(|| bad("the mechanism is SCRAM-SHA-256 or SCRAM-SHA-512"))?;
        if user.is_empty() || password.is_empty() {
            return Err(bad("an empty name or password"));
        }
        out.push((user.to_string(), mechanism, password.to_string()));
    }
    Ok(out)
}

/// Creates the credentials of `seeds` if the cluster has none yet.
pub async fn seed(shard: &Shard, peers: &dyn Peers, seeds: Vec<Seed>) -> Result<usize, String> {
    if !shard.metadata().scram_credentials.is_empty() {
        return Ok(0);
    }
    let mut created = 0;
    for (user, mechanism, password) in seeds {
        let c = ScramCredential::from_password(
            mechanism,
            password.as_bytes(),
            scram::random_salt(),
            ITERATIONS,
        );
        let command = Command::UpsertScramCredential {
            user: user.clone(),
            mechanism: mechanism.kafka_type(),
            credential: ScramRecord {
                mechanism: mechanism.kafka_type(),
                salt: c.salt,
                iterations: c.iterations,
                stored_key: c.stored_key,
                server_key: c.server_key,
            },
        };
        match peers.submit(command).await {
            Ok(Ok(_)) => created += 1,
            Ok(Err(e)) => return Err(format!("creating {user}'s credential: {e}")),
            Err(e) => return Err(format!("creating {user}'s credential: {e}")),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_name_mechanism_password_and_passwords_may_hold_colons() {
        let seeds = parse("# first admin\nadmin:SCRAM-SHA-512:pa:ss\n\nops:SCRAM-SHA-256:x\n")
            .expect("parsed");
        assert_eq!(
            seeds,
            vec![
                ("admin".into(), Mechanism::Sha512, "pa:ss".into()),
                ("ops".into(), Mechanism::Sha256, "x".into()),
            ]
        );
        for bad in [
            "admin:SCRAM-SHA-1:x",
            "admin:SCRAM-SHA-512",
            ":SCRAM-SHA-512:x",
            "a:SCRAM-SHA-512:",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.starts_with("line 1:"), "{e}");
        }
    }
}

//! Bounded-time fuzzing of SASL authentication in-process: the exchange a
//! SASL listener runs before any request reaches the handlers
//! (`security::sasl::Authenticator`), driven with random and mutated
//! handshakes and tokens for every mechanism, on a real shard whose
//! metadata holds a real SCRAM credential. Nothing may panic, no exchange
//! may hang, and no token may authenticate unless it carries the right
//! password. The seed is printed; `SLUICE_FUZZ_SEED` replays a run.

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::config::Config;
use broker::metadata::ClusterMetadata;
use broker::node::Node;
use broker::security::sasl::{Authenticator, Outcome};
use broker::security::scram::{Mechanism, ScramCredential};
use broker::shard::Shard;
use futures_lite::{future, FutureExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replication::controller::ScramRecord;

const ITERATIONS_MAX: usize = 20_000;
const TIME_BUDGET: Duration = Duration::from_secs(8);
/// PLAIN derives a key on the blocking pool: generous for a debug build.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";

/// Valid-looking tokens of each step, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    [
        "n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL",
        "n,,n=bob,r=abc",
        "y,,n=alice,r=x",
        "p=tls-unique,,n=alice,r=x",
        "n,a=alice,n=alice,r=x",
        "n,,n=al=2Cice,r=x,e=ext",
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        "c=eSws,r=x,p=AAAA",
        "\0alice\0alice-secret",
        "alice\0alice\0wrong",
        "\0\0",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..5) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            1 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.gen_range(0..=v.len());
                let b = *b",=\0rnpcsiae".get(rng.gen_range(0..11)).unwrap_or(&b',');
                v.insert(i, b);
            }
            3 => v.extend((0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>())),
            _ => {
                let n = v.len().min(rng.gen_range(0..8));
                v.rotate_left(n);
            }
        }
    }
    v
}

fn credential(mech: Mechanism) -> ScramRecord {
    let c = ScramCredential::from_password(mech, PASSWORD.as_bytes(), b"fuzz-salt".to_vec(), 4096);
    ScramRecord {
        mechanism: mech.kafka_type(),
        salt: c.salt,
        iterations: c.iterations,
        stored_key: c.stored_key,
        server_key: c.server_key,
    }
}

#[test]
fn random_sasl_exchanges_never_panic_hang_nor_authenticate_without_the_password() {
    let seed: u64 = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("SLUICE_FUZZ_SEED={seed}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let outcome = glommio::LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .spawn(move || async move {
            let config = Config {
                data_dir,
                fsync: Some("never".into()),
                ..Config::default()
            };
            let node = Rc::new(Node::new(
                Rc::new(
                    Shard::new(0, 1, Arc::new(config), Arc::new(AtomicBool::new(false)))
                        .expect("shard"),
                ),
                None,
            ));
            let mut meta = ClusterMetadata::new();
            meta.scram_credentials.insert(
                USER.into(),
                vec![
                    credential(Mechanism::parse("SCRAM-SHA-256").expect("mechanism")),
                    credential(Mechanism::parse("SCRAM-SHA-512").expect("mechanism")),
                ],
            );
            node.apply_metadata(Arc::new(meta)).await;
            let mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"];
            let seeds = seeds();
            let mut rng = StdRng::seed_from_u64(seed);
            let started = Instant::now();
            let (mut exchanges, mut steps, mut authenticated) = (0usize, 0usize, 0usize);
            while exchanges < ITERATIONS_MAX && started.elapsed() < TIME_BUDGET {
                exchanges += 1;
                let mut auth =
                    Authenticator::new(mechanisms.iter().map(|m| m.to_string()).collect());
                let asked = if rng.gen_bool(0.9) {
                    mechanisms[rng.gen_range(0..mechanisms.len())].to_string()
                } else {
                    String::from_utf8_lossy(&mutate(&mut rng, b"SCRAM-SHA-512")).into_owned()
                };
                if !auth.handshake(&asked) {
                    assert!(
                        !mechanisms.contains(&asked.as_str()),
                        "{asked} refused (seed {seed})"
                    );
                    continue;
                }
                for _ in 0..rng.gen_range(1..4) {
                    let token = if rng.gen_bool(0.2) {
                        (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect()
                    } else {
                        let pick = rng.gen_range(0..seeds.len());
                        mutate(&mut rng, &seeds[pick])
                    };
                    steps += 1;
                    let step = std::panic::AssertUnwindSafe(auth.authenticate(&node.shard, &token))
                        .catch_unwind();
                    let bounded = future::or(async { Some(step.await) }, async {
                        glommio::timer::sleep(STEP_TIMEOUT).await;
                        None
                    });
                    match bounded.await {
                        None => panic!("a {asked} step hung on token {token:?} (seed {seed})"),
                        Some(Err(_)) => {
                            panic!("a {asked} step panicked on {token:?} (seed {seed})")
                        }
                        Some(Ok(Outcome::Continue(_))) => {}
                        Some(Ok(Outcome::Failed { .. })) => break,
                        Some(Ok(Outcome::Authenticated { principal, .. })) => {
                            // Only PLAIN can succeed from one token, and only
                            // with the password itself in it.
                            assert_eq!(
                                asked, "PLAIN",
                                "{asked} authenticated {token:?} (seed {seed})"
                            );
                            let text = String::from_utf8_lossy(&token);
                            assert!(
                                text.ends_with(&format!("\0{PASSWORD}")),
                                "PLAIN authenticated {token:?} (seed {seed})"
                            );
                            assert_eq!(principal, format!("User:{USER}"));
                            authenticated += 1;
                            break;
                        }
                    }
                }
            }
            node.close_logs().await;
            (exchanges, steps, authenticated)
        })
        .expect("executor")
        .join()
        .expect("fuzz run");
    println!("exchanges, steps, authenticated: {outcome:?}");
    assert!(outcome.1 > 100, "too few steps ran: {outcome:?}");
}

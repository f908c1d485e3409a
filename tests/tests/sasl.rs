//! SASL listeners with a real client (librdkafka): SCRAM-SHA-512 over TLS
//! with the credential the bootstrap file seeded, PLAIN checked against the
//! same credential, and each way of failing as Kafka fails it: a wrong
//! password, an unknown user, a mechanism the user has no credential for,
//! PLAIN offered only under TLS, a client that skips authentication, an
//! oversized frame before authentication. Failures are counted and logged
//! without the secret, and the credentials survive a restart.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use futures_lite::future::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluice_tests::certs::Certs;
use sluice_tests::{free_port, Broker};

const SECRET: &str = "correct horse battery staple";

struct Setup {
    broker: Broker,
    certs: Certs,
    _dir: tempfile::TempDir,
    sasl_ssl: u16,
    sasl_plain: u16,
    metrics: u16,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::new(dir.path());
    let seeds = dir.path().join("scram-bootstrap");
    std::fs::write(&seeds, format!("admin:SCRAM-SHA-512:{SECRET}\n")).expect("seed file");
    let (sasl_ssl, sasl_plain, metrics) = (free_port(), free_port(), free_port());
    let (cert, key, ca) = (certs.pem("server"), certs.key("server"), certs.pem("ca"));
    let broker = Broker::start_with(move |plain| {
        vec![
            "--listeners".into(),
            format!(
                "PLAINTEXT://{plain},SASL_SSL://127.0.0.1:{sasl_ssl},\
                 SASL_PLAINTEXT://127.0.0.1:{sasl_plain}"
            ),
            "--tls-cert".into(),
            cert,
            "--tls-key".into(),
            key,
            // For SSL listeners only: on SASL_SSL, SASL says who a client
            // is, and no certificate is asked for.
            "--tls-client-ca".into(),
            ca,
            "--tls-client-auth".into(),
            "required".into(),
            "--sasl-mechanisms".into(),
            "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN".into(),
            "--scram-bootstrap-file".into(),
            seeds.display().to_string(),
            "--auth-failure-delay-ms".into(),
            "50".into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics}"),
        ]
    });
    Setup {
        broker,
        certs,
        _dir: dir,
        sasl_ssl,
        sasl_plain,
        metrics,
    }
}

impl Setup {
    fn client(&self, tls: bool, mechanism: &str, user: &str, password: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        let port = if tls { self.sasl_ssl } else { self.sasl_plain };
        c.set("bootstrap.servers", format!("localhost:{port}"))
            .set(
                "security.protocol",
                if tls { "sasl_ssl" } else { "sasl_plaintext" },
            )
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password)
            .set("socket.timeout.ms", "5000")
            .set("message.timeout.ms", "20000");
        if tls {
            c.set("ssl.ca.location", self.certs.pem("ca"));
        }
        c
    }
}

fn served(config: &ClientConfig) -> bool {
    let client: BaseConsumer = config.create().expect("client");
    client.fetch_metadata(None, Duration::from_secs(3)).is_ok()
}

/// Served within the tests' patience: what must succeed gets retries, a
/// shared machine may be slow.
fn served_eventually(config: &ClientConfig) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if served(config) {
            return true;
        }
    }
    false
}

#[test]
fn scram_over_tls_produces_consumes_and_administers() {
    let s = start();
    let admin: AdminClient<DefaultClientContext> = s
        .client(true, "SCRAM-SHA-512", "admin", SECRET)
        .create()
        .expect("admin");
    for r in block_on(admin.create_topics(
        &[NewTopic::new("audited", 2, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .expect("create topics over SASL_SSL")
    {
        r.expect("topic created");
    }
    let producer: FutureProducer = s
        .client(true, "SCRAM-SHA-512", "admin", SECRET)
        .create()
        .expect("producer");
    for i in 0..100 {
        block_on(
            producer
                .send_result(
                    FutureRecord::to("audited")
                        .partition(i % 2)
                        .key(&format!("k{i}"))
                        .payload(&format!("v{i}")),
                )
                .map_err(|(e, _)| e)
                .expect("queued"),
        )
        .expect("report")
        .map_err(|(e, _)| e)
        .expect("delivered over SASL_SSL");
    }
    // PLAIN, on the TLS listener, against the same SCRAM credential.
    let group: BaseConsumer = s
        .client(true, "PLAIN", "admin", SECRET)
        .set("group.id", "auditors")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    group.subscribe(&["audited"]).expect("subscribe");
    let mut got = 0;
    let deadline = Instant::now() + TIMEOUT;
    while got < 100 {
        assert!(Instant::now() < deadline, "only {got} of 100 came back");
        if let Some(m) = group.poll(Duration::from_millis(200)) {
            m.expect("message over SASL_SSL with PLAIN").detach();
            got += 1;
        }
    }
    // SCRAM without TLS works too; the credentials survive a restart.
    assert!(served_eventually(&s.client(
        false,
        "SCRAM-SHA-512",
        "admin",
        SECRET
    )));
    let mut s = s;
    // The clients leave first: a consumer closing against a restarted
    // coordinator would wait out its retries.
    drop((group, producer, admin));
    s.broker.restart();
    assert!(
        served_eventually(&s.client(true, "SCRAM-SHA-512", "admin", SECRET)),
        "the seeded credential is gone after a restart:\n{}",
        s.broker.log()
    );
}

#[test]
fn failed_authentications_are_refused_counted_and_logged_without_the_secret() {
    let s = start();
    let refused = [
        (true, "SCRAM-SHA-512", "admin", "wrong password"),
        (true, "SCRAM-SHA-512", "nobody", SECRET),
        // The user has a SHA-512 credential only.
        (true, "SCRAM-SHA-256", "admin", SECRET),
        (true, "PLAIN", "admin", "wrong password"),
        // PLAIN is not offered where the password would cross in clear.
        (false, "PLAIN", "admin", SECRET),
    ];
    // A client that skips SASL on a SASL listener is closed.
    let mut skipping = ClientConfig::new();
    skipping
        .set("bootstrap.servers", format!("127.0.0.1:{}", s.sasl_plain))
        .set("socket.timeout.ms", "5000");
    let mut clients: Vec<(String, ClientConfig)> = refused
        .iter()
        .map(|&(tls, mechanism, user, password)| {
            (
                format!("{mechanism} as {user} with {password:?} (tls {tls})"),
                s.client(tls, mechanism, user, password),
            )
        })
        .collect();
    clients.push(("a client without SASL".into(), skipping));
    // Side by side: each waits out its own retries.
    let outcomes: Vec<(String, bool)> = std::thread::scope(|scope| {
        let running: Vec<_> = clients
            .iter()
            .map(|(who, config)| scope.spawn(move || (who.clone(), served(config))))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect()
    });
    for (who, was_served) in outcomes {
        assert!(!was_served, "{who} was served");
    }
    // Everyone else goes on.
    assert!(served_eventually(&s.client(
        true,
        "SCRAM-SHA-512",
        "admin",
        SECRET
    )));
    let log = s.broker.log();
    assert!(
        log.contains("SASL authentication failed") && log.contains("nobody"),
        "failures are logged with the user tried:\n{log}"
    );
    assert!(
        !log.contains("wrong password"),
        "a password reached the log"
    );
    let metrics = metrics_text(s.metrics);
    let failures: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_sasl_authentications_failed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(failures >= 5, "{failures} failures counted:\n{metrics}");
}

#[test]
fn before_authentication_a_large_frame_is_refused_before_it_is_read() {
    let s = start();
    let mut c = TcpStream::connect(("127.0.0.1", s.sasl_plain)).expect("connect");
    // 100 MB declared, within socket.request.max.bytes but far over the
    // bound of unauthenticated requests.
    c.write_all(&100_000_000i32.to_be_bytes()).expect("length");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert_eq!(
        c.read(&mut buf).unwrap_or(0),
        0,
        "the connection stayed open"
    );
    assert!(served_eventually(&s.client(
        false,
        "SCRAM-SHA-512",
        "admin",
        SECRET
    )));
}

/// The broker's /metrics text.
fn metrics_text(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("response");
    text
}

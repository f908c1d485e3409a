//! TLS listeners with a real client (librdkafka over OpenSSL): a broker
//! with a PLAINTEXT and an SSL listener answers each client with the
//! addresses of the listener it came through; an SSL client with a
//! certificate from the broker's client CA produces, consumes with a group
//! and creates topics; clients without a certificate, with one from a
//! foreign CA, or speaking plaintext to the SSL port are refused without
//! disturbing anyone else; a trickled handshake is cut off; and SIGHUP
//! swaps the certificate for new connections while open ones go on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_lite::future::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluice_tests::certs::Certs;
use sluice_tests::{free_port, Broker};

struct Setup {
    broker: Broker,
    certs: Certs,
    _dir: tempfile::TempDir,
    ssl_port: u16,
}

fn start(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::new(dir.path());
    certs.issue(
        "writer",
        "/C=US/O=Example, Inc./OU=fleet/CN=writer",
        "ca",
        "clientAuth",
    );
    certs.issue("stranger", "/CN=stranger", "other-ca", "clientAuth");
    let ssl_port = free_port();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let (cert, key, ca) = (certs.pem("server"), certs.key("server"), certs.pem("ca"));
    let broker = Broker::start_with(move |plain| {
        let mut args = vec![
            "--listeners".to_string(),
            format!("PLAINTEXT://{plain},SSL://127.0.0.1:{ssl_port}"),
            "--tls-cert".into(),
            cert,
            "--tls-key".into(),
            key,
            "--tls-client-ca".into(),
            ca,
        ];
        args.extend(extra);
        args
    });
    Setup {
        broker,
        certs,
        _dir: dir,
        ssl_port,
    }
}

impl Setup {
    fn ssl_bootstrap(&self) -> String {
        // A name, so that librdkafka checks it against the certificate.
        format!("localhost:{}", self.ssl_port)
    }

    /// librdkafka settings for an SSL client presenting `cert` (if any).
    fn ssl_client(&self, cert: Option<&str>) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.ssl_bootstrap())
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", self.certs.pem("ca"))
            .set("socket.timeout.ms", "5000")
            .set("message.timeout.ms", "20000");
        if let Some(name) = cert {
            c.set("ssl.certificate.location", self.certs.pem(name))
                .set("ssl.key.location", self.certs.key(name));
        }
        c
    }
}

fn metadata_ports(client: &BaseConsumer) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    // A refused client retries until this runs out.
    let md = client.fetch_metadata(None, Duration::from_secs(3))?;
    Ok(md.brokers().iter().map(|b| b.port()).collect())
}

/// The same for a client that must be served: retried within the tests'
/// patience, a shared machine may be slow.
fn served_ports(client: &BaseConsumer) -> Vec<i32> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match metadata_ports(client) {
            Ok(ports) => return ports,
            Err(e) => assert!(Instant::now() < deadline, "not served: {e}"),
        }
    }
}

#[test]
fn an_ssl_client_with_a_certificate_produces_consumes_and_administers() {
    let s = start(&["--tls-client-auth", "required", "--cores", "2"]);
    let admin: AdminClient<DefaultClientContext> =
        s.ssl_client(Some("writer")).create().expect("admin");
    let created = block_on(admin.create_topics(
        &[NewTopic::new("secure", 2, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .expect("create topics over TLS");
    for r in created {
        r.expect("topic created");
    }
    // Each client is told the addresses of the listener it came through.
    let ssl: BaseConsumer = s.ssl_client(Some("writer")).create().expect("client");
    assert_eq!(served_ports(&ssl), vec![i32::from(s.ssl_port)]);
    let plain = consumer(&s.broker.bootstrap());
    assert_eq!(served_ports(&plain), vec![i32::from(s.broker.addr.port())]);

    let producer: FutureProducer = s.ssl_client(Some("writer")).create().expect("producer");
    // Values large enough that answers span several TLS records.
    let value = |i: usize| format!("{i:06}-").repeat(1 + i % 5_000);
    let sends: Vec<_> = (0..300)
        .map(|i| {
            producer
                .send_result(
                    FutureRecord::to("secure")
                        .partition((i % 2) as i32)
                        .key(&format!("k{i}"))
                        .payload(&value(i * 17)),
                )
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    for delivery in sends {
        block_on(delivery)
            .expect("report")
            .map_err(|(e, _)| e)
            .expect("delivered over TLS");
    }
    let group: BaseConsumer = s
        .ssl_client(Some("writer"))
        .set("group.id", "secure-readers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("group consumer");
    group.subscribe(&["secure"]).expect("subscribe");
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while seen.len() < 300 {
        assert!(
            Instant::now() < deadline,
            "only {} of 300 came back",
            seen.len()
        );
        if let Some(m) = group.poll(Duration::from_millis(200)) {
            let m = m.expect("message over TLS");
            let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf8");
            let i: usize = key[1..].parse().expect("index");
            assert_eq!(m.payload(), Some(value(i * 17).as_bytes()), "record {i}");
            seen.insert(i, ());
        }
    }
    group
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .expect("offsets committed over TLS");
}

#[test]
fn clients_the_ssl_listener_must_refuse_are_refused_and_others_go_on() {
    let s = start(&["--tls-client-auth", "required"]);
    let refused = |config: ClientConfig, who: &str| {
        let client: BaseConsumer = config.create().expect("client");
        assert!(
            metadata_ports(&client).is_err(),
            "{who} got metadata from the SSL listener"
        );
    };
    refused(s.ssl_client(None), "a client without a certificate");
    refused(
        s.ssl_client(Some("stranger")),
        "a client whose certificate another CA signed",
    );
    let mut plaintext_on_ssl = ClientConfig::new();
    plaintext_on_ssl
        .set("bootstrap.servers", s.ssl_bootstrap())
        .set("socket.timeout.ms", "5000");
    refused(plaintext_on_ssl, "a PLAINTEXT client on the SSL port");
    let mut trusting_nobody = s.ssl_client(Some("writer"));
    trusting_nobody.set("ssl.ca.location", s.certs.pem("other-ca"));
    refused(
        trusting_nobody,
        "a client that does not trust the broker's CA",
    );
    // The broker serves both listeners as before.
    let ssl: BaseConsumer = s.ssl_client(Some("writer")).create().expect("client");
    served_ports(&ssl);
    served_ports(&consumer(&s.broker.bootstrap()));
    assert!(
        s.broker.log().contains("TLS handshake failed"),
        "refusals are logged:\n{}",
        s.broker.log()
    );
}

#[test]
fn a_trickled_handshake_is_cut_off_without_slowing_anyone() {
    let s = start(&["--tls-handshake-timeout-ms", "1000"]);
    // A ClientHello's first bytes, then nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", s.ssl_port)).expect("connect");
    slow.write_all(&[0x16, 0x03, 0x01]).expect("first bytes");
    let started = Instant::now();
    // Meanwhile a real client is served at once.
    let ssl: BaseConsumer = s.ssl_client(None).create().expect("client");
    served_ports(&ssl);
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the stalled handshake got bytes instead of a close");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "closed after {waited:?}, not near the 1 s handshake bound"
    );
}

/// The subject of the certificate the SSL listener presents now.
fn presented_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null \
             | openssl x509 -noout -subject -nameopt RFC2253"
        ))
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let s = start(&[]);
    assert_eq!(presented_subject(s.ssl_port), "subject=CN=localhost");
    let producer: FutureProducer = s.ssl_client(None).create().expect("producer");
    let send = |i: u32| {
        block_on(
            producer
                .send_result(
                    FutureRecord::to("rotated")
                        .key("k")
                        .payload(&format!("v{i}")),
                )
                .map_err(|(e, _)| e)
                .expect("queued"),
        )
        .expect("report")
        .map_err(|(e, _)| e)
        .expect("delivered")
    };
    send(0);
    // The operator replaces the files in place and sends SIGHUP.
    s.certs
        .issue("rotated", "/O=rotated/CN=localhost", "ca", "serverAuth");
    std::fs::copy(s.certs.pem("rotated"), s.certs.pem("server")).expect("cert");
    std::fs::copy(s.certs.key("rotated"), s.certs.key("server")).expect("key");
    let pid = s.broker.pid().expect("running") as i32;
    // SAFETY: signalling the broker process this test started.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    let deadline = Instant::now() + TIMEOUT;
    while presented_subject(s.ssl_port) != "subject=CN=localhost,O=rotated" {
        assert!(
            Instant::now() < deadline,
            "still presenting {:?}:\n{}",
            presented_subject(s.ssl_port),
            s.broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection opened before the swap goes on.
    for i in 1..20 {
        send(i);
    }
    // A reload that fails keeps the certificate in use.
    std::fs::write(s.certs.key("server"), "not a key").expect("break the key");
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    let deadline = Instant::now() + TIMEOUT;
    while !s.broker.log().contains("TLS files not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no log line for the failed reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        presented_subject(s.ssl_port),
        "subject=CN=localhost,O=rotated"
    );
    send(20);
}

#[test]
fn a_broker_without_its_certificate_does_not_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::new(dir.path());
    let out = Command::new(sluice_tests::sluice_binary())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--metrics-listen",
            "",
            "--listeners",
            &format!("SSL://127.0.0.1:{}", free_port()),
            "--tls-cert",
            &certs.pem("server"),
            "--tls-key",
            &certs.key("ca"),
        ])
        .output()
        .expect("sluice");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS") && err.contains("tls_cert and tls_key"),
        "a key that does not match is named: {err}"
    );
}

//! `sluice produce TOPIC`: one record per input line, from stdin or a
//! file, with optional keys (split at a separator) and headers, waiting
//! for every delivery before it reports.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde_json::json;

use super::client::{key_value, ready, set_default, Common};
use super::output::emit_message;

/// How long a poll waits when librdkafka's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    topic: String,
    /// Read records from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header for every record, KEY=VALUE; repeat for more.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgements to wait for.
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all"])]
    acks: String,
    /// Compression codec of the batches.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    /// Send every record to this partition [default: by key, or spread].
    #[arg(long)]
    partition: Option<i32>,
}

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client::debug_log(level, fac, log_message);
    }
    fn error(&self, _error: KafkaError, _reason: &str) {}
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let mut config = c.config()?;
    config
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        // Producing to a new topic creates it where the broker allows, as
        // kcat and Kafka's console producer do.
        .set("allow.auto.create.topics", "true");
    set_default(&mut config, "linger.ms", "5");
    set_default(
        &mut config,
        "message.timeout.ms",
        c.timeout_ms.max(1).to_string(),
    );
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    ready(producer.client(), c)?;

    let (input, progress): (Box<dyn Read>, Option<indicatif::ProgressBar>) = match &args.file {
        Some(path) => {
            let f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let bar = if std::io::stderr().is_terminal() {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let bar = indicatif::ProgressBar::new(len);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style);
                }
                Some(bar)
            } else {
                None
            };
            (Box::new(f), bar)
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };

    let headers = args.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    });
    let mut sent = 0u64;
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.context("reading input")?;
        if let Some(bar) = &progress {
            bar.inc(line.len() as u64 + 1);
        }
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k), v),
                None => bail!("line {}: no key separator {sep:?} in {line:?}", i + 1),
            },
            None => (None, line.as_str()),
        };
        let mut record = BaseRecord::<str, str>::to(&args.topic)
            .payload(value)
            .headers(headers.clone());
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(QUEUE_FULL_WAIT);
                }
                Err((e, _)) => return Err(anyhow!("producing to {:?}: {e}", args.topic)),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(c.timeout())
        .with_context(|| format!("waiting for deliveries to {:?}", args.topic))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 || delivered != sent {
        let first = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "not acknowledged in time".into());
        bail!(
            "{delivered} of {sent} records delivered to {:?}; first failure: {first}",
            args.topic
        );
    }
    let json = json!({ "topic": args.topic, "records": delivered });
    emit_message(
        c.format,
        &json,
        &format!("Produced {delivered} records to {}.", args.topic),
    );
    Ok(())
}

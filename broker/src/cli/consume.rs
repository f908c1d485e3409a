//! `sluice consume TOPIC`: print records, either from positions chosen on
//! the command line (beginning, end, an offset, a timestamp) or as a
//! member of a consumer group that commits what it printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::client::{metadata, partitions_of, ready, Common, Quiet};
use super::output::{text, Format};

/// How long one poll waits, which bounds how late a signal is noticed.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How often a group member commits what it printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The value, optionally preceded by offsets, headers and key.
    Plain,
    /// One JSON object per record: topic, partition, offset, timestamp,
    /// key, value, headers.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    topic: String,
    /// Start at the first offset [default: the end, only new records].
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    from_beginning: bool,
    /// Start at this offset (of --partition, or of every partition).
    #[arg(long, conflicts_with_all = ["timestamp", "group"])]
    offset: Option<i64>,
    /// Start at the first record with this timestamp (ms) or later.
    #[arg(long, value_name = "MS", conflicts_with = "group")]
    timestamp: Option<i64>,
    /// Consume as a member of this group, committing what was printed.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Only this partition.
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Exit once the end of every partition has been reached.
    #[arg(long)]
    exit_at_end: bool,
    /// How records are printed.
    #[arg(long, value_enum, default_value_t = Output::Plain)]
    output: Output,
    /// Print the key before the value (plain output).
    #[arg(long)]
    print_key: bool,
    /// Print the headers before the key and value (plain output).
    #[arg(long)]
    print_headers: bool,
    /// Print PARTITION:OFFSET first (plain output).
    #[arg(long)]
    print_offsets: bool,
    /// Separator between the fields of plain output.
    #[arg(long, default_value = "\t", value_name = "SEP")]
    separator: String,
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let mut config = c.config()?;
    config
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    // librdkafka assigns partitions only to a consumer with a group id; a
    // consumer that assigns never joins that group nor commits to it.
    let group_id = match &args.group {
        Some(g) => g.clone(),
        None => format!("sluice-cli-{}", std::process::id()),
    };
    config.set("group.id", &group_id);
    let consumer: BaseConsumer<Quiet> = config
        .create_with_context(Quiet)
        .context("creating the consumer")?;
    ready(consumer.client(), c)?;
    let md = metadata(consumer.client(), c)?;
    let mut partitions = partitions_of(&md, &args.topic)?;
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            bail!("topic {:?} has no partition {p}", args.topic);
        }
        partitions = vec![p];
    }
    if args.group.is_some() {
        consumer
            .subscribe(&[&args.topic])
            .with_context(|| format!("subscribing to {:?}", args.topic))?;
    } else {
        consumer
            .assign(&start_positions(&consumer, &args, &partitions)?)
            .context("assigning partitions")?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let json_output = args.output == Output::Json || c.format == Format::Json;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    // Next offset to commit per partition, for group members.
    let mut to_commit: BTreeMap<i32, i64> = BTreeMap::new();
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let done = |printed: u64, at_end: &BTreeSet<i32>| -> bool {
        if args.count.is_some_and(|n| printed >= n) {
            return true;
        }
        if !args.exit_at_end {
            return false;
        }
        let assigned: BTreeSet<i32> = match &args.group {
            Some(_) => consumer
                .assignment()
                .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default(),
            None => partitions.iter().copied().collect(),
        };
        !assigned.is_empty() && assigned.is_subset(at_end)
    };
    while !stop.load(Ordering::Relaxed) && !done(printed, &at_end) {
        match consumer.poll(POLL_WAIT) {
            None => {}
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                print_record(&mut out, &args, json_output, &m)?;
                printed += 1;
                to_commit.insert(m.partition(), m.offset() + 1);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => bail!("consuming {:?}: {e}", args.topic),
        }
        if args.group.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
            out.flush().context("writing to stdout")?;
            commit(
                &consumer,
                &args.topic,
                &to_commit,
                &mut committed,
                CommitMode::Async,
            )?;
            last_commit = Instant::now();
        }
    }
    out.flush().context("writing to stdout")?;
    if args.group.is_some() {
        commit(
            &consumer,
            &args.topic,
            &to_commit,
            &mut committed,
            CommitMode::Sync,
        )?;
    }
    // Dropping a group member leaves the group (LeaveGroup), so the group
    // is empty as soon as the command exits.
    drop(consumer);
    Ok(())
}

/// Where each partition starts without a group: --offset, --timestamp
/// (through ListOffsets by time; the end where no record is that late),
/// --from-beginning, or the end.
fn start_positions(
    consumer: &BaseConsumer<Quiet>,
    args: &ConsumeArgs,
    partitions: &[i32],
) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    if let Some(ts) = args.timestamp {
        let mut query = TopicPartitionList::new();
        for &p in partitions {
            query.add_partition_offset(&args.topic, p, Offset::Offset(ts))?;
        }
        let found = consumer
            .offsets_for_times(query, args.common.timeout())
            .context("looking up offsets by timestamp")?;
        for e in found.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::End,
            };
            tpl.add_partition_offset(&args.topic, e.partition(), offset)?;
        }
        return Ok(tpl);
    }
    let start = match (args.offset, args.from_beginning) {
        (Some(o), _) => Offset::Offset(o),
        (None, true) => Offset::Beginning,
        (None, false) => Offset::End,
    };
    for &p in partitions {
        tpl.add_partition_offset(&args.topic, p, start)?;
    }
    Ok(tpl)
}

fn commit(
    consumer: &BaseConsumer<Quiet>,
    topic: &str,
    to_commit: &BTreeMap<i32, i64>,
    committed: &mut BTreeMap<i32, i64>,
    mode: CommitMode,
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in to_commit {
        if committed.get(&p) != Some(&o) {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            committed.extend(to_commit.iter().map(|(p, o)| (*p, *o)));
            Ok(())
        }
        // A periodic commit may race a rebalance; the final one must not fail.
        Err(_) if matches!(mode, CommitMode::Async) => Ok(()),
        Err(e) => Err(e).context("committing offsets"),
    }
}

fn print_record(
    out: &mut impl Write,
    args: &ConsumeArgs,
    json_output: bool,
    m: &BorrowedMessage<'_>,
) -> anyhow::Result<()> {
    let headers: Vec<(String, Option<String>)> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), text(h.value)))
                .collect()
        })
        .unwrap_or_default();
    if json_output {
        let record = json!({
            "topic": m.topic(),
            "partition": m.partition(),
            "offset": m.offset(),
            "timestamp": m.timestamp().to_millis(),
            "key": text(m.key()),
            "value": text(m.payload()),
            "headers": headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        });
        writeln!(out, "{record}").context("writing to stdout")?;
        return Ok(());
    }
    let mut fields: Vec<String> = Vec::new();
    if args.print_offsets {
        fields.push(format!("{}:{}", m.partition(), m.offset()));
    }
    if args.print_headers {
        let hs: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
            .collect();
        fields.push(if hs.is_empty() {
            "NO_HEADERS".into()
        } else {
            hs.join(",")
        });
    }
    if args.print_key {
        fields.push(text(m.key()).unwrap_or_else(|| "null".into()));
    }
    fields.push(text(m.payload()).unwrap_or_else(|| "null".into()));
    writeln!(out, "{}", fields.join(&args.separator)).context("writing to stdout")?;
    Ok(())
}

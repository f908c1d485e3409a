//! `sluice group`: list, describe (members, assignments, committed
//! offsets and lag), delete consumer groups, and seek: reset an inactive
//! group's committed offsets.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use futures_lite::future::block_on;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::client::{metadata, partitions_of, Common, Quiet};
use super::output::{emit, emit_message, table};

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(clap::Subcommand, Debug)]
enum GroupCommand {
    /// List consumer groups with their states.
    List,
    /// Members, assignments, committed offsets, log end offsets and lag.
    Describe { group: String },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Reset the committed offsets of a group that has no members.
    #[command(group(clap::ArgGroup::new("to").required(true)))]
    #[command(group(clap::ArgGroup::new("topics").required(true)))]
    Seek {
        group: String,
        /// The topic to reset; repeat for more.
        #[arg(long = "topic", group = "topics")]
        topic: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long, group = "topics")]
        all_topics: bool,
        /// To each partition's first offset.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To each partition's end.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To the first record at or after this time (ms), or the end.
        #[arg(long, group = "to", value_name = "MS")]
        to_timestamp: Option<i64>,
        /// To this offset, kept within each partition's range.
        #[arg(long, group = "to", value_name = "N")]
        to_offset: Option<i64>,
        /// Print the plan without committing it.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(args: GroupArgs) -> anyhow::Result<()> {
    let c = &args.common;
    match args.command {
        GroupCommand::List => list(c),
        GroupCommand::Describe { group } => describe(c, &group),
        GroupCommand::Delete { groups } => delete(c, &groups),
        GroupCommand::Seek {
            group,
            topic,
            all_topics: _,
            to_earliest,
            to_latest,
            to_timestamp,
            to_offset,
            dry_run,
        } => {
            let target = match (to_earliest, to_latest, to_timestamp, to_offset) {
                (true, _, _, _) => Target::Earliest,
                (_, true, _, _) => Target::Latest,
                (_, _, Some(ts), _) => Target::Timestamp(ts),
                (_, _, _, Some(o)) => Target::Offset(o),
                _ => bail!("give one of --to-earliest, --to-latest, --to-timestamp, --to-offset"),
            };
            seek(c, &group, &topic, target, dry_run)
        }
    }
}

/// A group as DescribeGroups reports it, with member assignments decoded.
struct Group {
    name: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

struct Member {
    id: String,
    client_id: String,
    host: String,
    assignment: Vec<(String, i32)>,
}

fn describe_group(
    c: &Common,
    consumer: &BaseConsumer<Quiet>,
    group: &str,
) -> anyhow::Result<Group> {
    find_group(c, consumer, group)?.ok_or_else(|| anyhow!("group {group:?} not found"))
}

/// The group, or None if the coordinator does not know it.
fn find_group(
    c: &Common,
    consumer: &BaseConsumer<Quiet>,
    group: &str,
) -> anyhow::Result<Option<Group>> {
    let list = consumer
        .fetch_group_list(Some(group), c.timeout())
        .with_context(|| format!("describing group {group:?}"))?;
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(None);
    };
    let members = g
        .members()
        .iter()
        .map(|m| Member {
            id: m.id().into(),
            client_id: m.client_id().into(),
            host: m.client_host().into(),
            assignment: if g.protocol_type() == "consumer" {
                m.assignment().map(decode_assignment).unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(Some(Group {
        name: g.name().into(),
        state: g.state().into(),
        protocol_type: g.protocol_type().into(),
        protocol: g.protocol().into(),
        members,
    }))
}

/// Decodes a consumer protocol assignment (version, [topic, [partition]],
/// user data); what does not parse is shown as no assignment.
fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    }
    fn parse(mut b: &[u8]) -> Option<Vec<(String, i32)>> {
        let b = &mut b;
        let _version = i16_(b)?;
        let topics = i32_(b)?;
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = usize::try_from(i16_(b)?).ok()?;
            let topic = String::from_utf8_lossy(take(b, len)?).into_owned();
            let n = i32_(b)?;
            for _ in 0..n.max(0) {
                out.push((topic.clone(), i32_(b)?));
            }
        }
        Some(out)
    }
    let mut out = parse(bytes).unwrap_or_default();
    out.sort();
    out
}

fn list(c: &Common) -> anyhow::Result<()> {
    let consumer = c.consumer(None)?;
    let list = consumer
        .fetch_group_list(None, c.timeout())
        .context("listing groups")?;
    let mut groups: Vec<(String, String, String)> = list
        .groups()
        .iter()
        .map(|g| (g.name().into(), g.state().into(), g.protocol_type().into()))
        .collect();
    groups.sort();
    let mut t = table(["GROUP", "STATE", "PROTOCOL TYPE"]);
    for (name, state, pt) in &groups {
        t.add_row(vec![name.clone(), state.clone(), pt.clone()]);
    }
    let json = json!({
        "groups": groups.iter().map(|(n, s, p)| json!({"group": n, "state": s, "protocol_type": p})).collect::<Vec<_>>()
    });
    emit(c.format, &json, &[("", t)]);
    Ok(())
}

/// Every partition of every non-internal topic (or of `only`).
fn all_partitions(
    md: &rdkafka::metadata::Metadata,
    only: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    if only.is_empty() {
        for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
            out.extend(
                t.partitions()
                    .iter()
                    .map(|p| (t.name().to_string(), p.id())),
            );
        }
    } else {
        for topic in only {
            out.extend(
                partitions_of(md, topic)?
                    .into_iter()
                    .map(|p| (topic.clone(), p)),
            );
        }
    }
    out.sort();
    Ok(out)
}

/// The group's committed offset of each partition (None: nothing
/// committed), through OffsetFetch.
fn committed(
    c: &Common,
    consumer: &BaseConsumer<Quiet>,
    partitions: &[(String, i32)],
) -> anyhow::Result<BTreeMap<(String, i32), Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let got = consumer
        .committed_offsets(tpl, c.timeout())
        .context("fetching committed offsets")?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_string(), e.partition()), o)
        })
        .collect())
}

fn describe(c: &Common, group: &str) -> anyhow::Result<()> {
    let consumer = c.consumer(Some(group))?;
    let g = describe_group(c, &consumer, group)?;
    let md = metadata(consumer.client(), c)?;
    let mut rows: BTreeMap<TopicPartition, (Option<i64>, Option<&Member>)> =
        committed(c, &consumer, &all_partitions(&md, &[])?)?
            .into_iter()
            .filter(|(_, o)| o.is_some())
            .map(|(k, o)| (k, (o, None)))
            .collect();
    for m in &g.members {
        for tp in &m.assignment {
            rows.entry(tp.clone()).or_insert((None, None)).1 = Some(m);
        }
    }
    if g.state == "Dead" && rows.is_empty() {
        bail!("group {group:?} not found");
    }
    let mut ot = table([
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOG END",
        "LAG",
        "MEMBER",
        "CLIENT ID",
    ]);
    let mut oj = Vec::new();
    let mut total_lag = 0i64;
    for ((topic, p), (committed, member)) in &rows {
        let (_, end) = consumer
            .fetch_watermarks(topic, *p, c.timeout())
            .with_context(|| format!("fetching the end offset of {topic}-{p}"))?;
        let lag = committed.map(|o| (end - o).max(0));
        total_lag += lag.unwrap_or(0);
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        ot.add_row(vec![
            topic.clone(),
            p.to_string(),
            dash(committed.map(|o| o.to_string())),
            end.to_string(),
            dash(lag.map(|l| l.to_string())),
            dash(member.map(|m| m.id.clone())),
            dash(member.map(|m| m.client_id.clone())),
        ]);
        oj.push(json!({
            "topic": topic,
            "partition": p,
            "committed_offset": committed,
            "log_end_offset": end,
            "lag": lag,
            "member_id": member.map(|m| &m.id),
            "client_id": member.map(|m| &m.client_id),
        }));
    }
    let mut mt = table(["MEMBER", "CLIENT ID", "HOST", "ASSIGNMENT"]);
    let mut mj = Vec::new();
    for m in &g.members {
        let assignment: Vec<String> = m
            .assignment
            .iter()
            .map(|(t, p)| format!("{t}-{p}"))
            .collect();
        mt.add_row(vec![
            m.id.clone(),
            m.client_id.clone(),
            m.host.clone(),
            assignment.join(","),
        ]);
        mj.push(json!({
            "member_id": m.id,
            "client_id": m.client_id,
            "host": m.host,
            "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
        }));
    }
    let json = json!({
        "group": g.name,
        "state": g.state,
        "protocol_type": g.protocol_type,
        "protocol": g.protocol,
        "members": mj,
        "offsets": oj,
        "total_lag": total_lag,
    });
    let title = format!(
        "Group {} ({}, {} members, total lag {total_lag})",
        g.name,
        g.state,
        g.members.len()
    );
    emit(c.format, &json, &[(&title, ot), ("Members", mt)]);
    Ok(())
}

fn delete(c: &Common, groups: &[String]) -> anyhow::Result<()> {
    let admin = c.admin()?;
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(c.timeout()));
    let results = block_on(admin.delete_groups(&names, &opts)).context("deleting groups")?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("deleting group {name:?} failed: {code} ({code:?})");
        }
    }
    let json = json!({ "deleted": groups });
    emit_message(c.format, &json, &format!("Deleted {}.", groups.join(", ")));
    Ok(())
}

/// A topic name and a partition id.
type TopicPartition = (String, i32);

#[derive(Clone, Copy, Debug)]
enum Target {
    Earliest,
    Latest,
    Timestamp(i64),
    Offset(i64),
}

fn refuse_active(group: &str, state: &str, members: usize) -> anyhow::Error {
    anyhow!(
        "cannot seek group {group:?}: offsets can only be reset while the group is inactive, \
         but it is {state} with {members} member(s); stop its consumers first"
    )
}

fn seek(
    c: &Common,
    group: &str,
    topics: &[String],
    target: Target,
    dry_run: bool,
) -> anyhow::Result<()> {
    let consumer = c.consumer(Some(group))?;
    // A group the coordinator does not know yet may be given offsets, as
    // Kafka's tool allows: the commit creates it.
    if let Some(g) = find_group(c, &consumer, group)? {
        if !g.members.is_empty() {
            return Err(refuse_active(group, &g.state, g.members.len()));
        }
    }
    let md = metadata(consumer.client(), c)?;
    let current = committed(c, &consumer, &all_partitions(&md, topics)?)?;
    // --all-topics: the topics the group has committed offsets for.
    let current: BTreeMap<_, _> = if topics.is_empty() {
        current.into_iter().filter(|(_, o)| o.is_some()).collect()
    } else {
        current
    };
    if current.is_empty() {
        bail!("group {group:?} has no committed offsets to reset (name topics with --topic)");
    }
    let by_time = match target {
        Target::Timestamp(ts) => {
            let mut q = TopicPartitionList::new();
            for (t, p) in current.keys() {
                q.add_partition_offset(t, *p, Offset::Offset(ts))?;
            }
            let found = consumer
                .offsets_for_times(q, c.timeout())
                .context("looking up offsets by timestamp")?;
            found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect()
        }
        _ => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    let mut t = table(["TOPIC", "PARTITION", "CURRENT", "NEW"]);
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), cur) in &current {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, c.timeout())
            .with_context(|| format!("fetching the offsets of {topic}-{p}"))?;
        let new = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offset(o) => o.clamp(low, high),
            Target::Timestamp(_) => by_time.get(&(topic.clone(), *p)).copied().unwrap_or(high),
        };
        t.add_row(vec![
            topic.clone(),
            p.to_string(),
            cur.map_or_else(|| "-".into(), |o| o.to_string()),
            new.to_string(),
        ]);
        plan.push(
            json!({"topic": topic, "partition": p, "current_offset": cur, "new_offset": new}),
        );
        tpl.add_partition_offset(topic, *p, Offset::Offset(new))?;
    }
    if !dry_run {
        // Committed outside any generation (generation -1): Kafka accepts
        // that only while the group has no members, which closes the race
        // with a consumer that joined after the check above.
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress,
            )) => {
                let g = describe_group(c, &consumer, group)?;
                return Err(refuse_active(group, &g.state, g.members.len()));
            }
            Err(e) => return Err(e).with_context(|| format!("committing offsets of {group:?}")),
        }
    }
    let json = json!({ "group": group, "dry_run": dry_run, "plan": plan });
    let title = if dry_run {
        format!("Plan for group {group} (dry run, nothing committed)")
    } else {
        format!("Committed new offsets of group {group}")
    };
    emit(c.format, &json, &[(&title, t)]);
    Ok(())
}

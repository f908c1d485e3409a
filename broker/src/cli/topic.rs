//! `sluice topic`: create, list, describe, delete, alter the configs of
//! and add partitions to topics, through the Kafka admin APIs.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use futures_lite::future::block_on;
use rdkafka::admin::{
    AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use super::client::{key_value, metadata, partitions_of, Common};
use super::output::{emit, emit_message, table};

#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// Number of partitions [default: the broker's num.partitions].
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas per partition [default: the broker's].
        #[arg(long)]
        replication_factor: Option<i32>,
        /// A topic config, KEY=VALUE; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics with their partition counts.
    List {
        /// Leave out internal topics (names starting with "__").
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Partitions, leaders, replicas, in-sync replicas and configs.
    Describe {
        topic: String,
        /// Show every config in the table, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Set or remove topic configs, leaving the others as they are.
    AlterConfig {
        topic: String,
        /// Set KEY to VALUE; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Remove KEY, back to the broker's default; repeat for more.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Grow a topic to a total number of partitions.
    AddPartitions {
        topic: String,
        /// The new total number of partitions.
        #[arg(long)]
        partitions: usize,
    },
}

pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    let c = &args.common;
    match args.command {
        TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => create(c, &topic, partitions, replication_factor, &configs),
        TopicCommand::List { exclude_internal } => list(c, exclude_internal),
        TopicCommand::Describe { topic, all_configs } => describe(c, &topic, all_configs),
        TopicCommand::Delete { topics } => delete(c, &topics),
        TopicCommand::AlterConfig { topic, set, delete } => alter_config(c, &topic, &set, &delete),
        TopicCommand::AddPartitions { topic, partitions } => add_partitions(c, &topic, partitions),
    }
}

fn options(c: &Common) -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(c.timeout()))
}

/// The first failure of an admin operation's per-resource results.
fn check<T>(
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
    what: &str,
) -> anyhow::Result<T>
where
    T: Default,
{
    for r in results {
        if let Err((name, code)) = r {
            bail!("{what} {name:?} failed: {code} ({code:?})");
        }
    }
    Ok(T::default())
}

fn create(
    c: &Common,
    topic: &str,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let admin = c.admin()?;
    // -1 asks the broker for its default (CreateTopics v4 and later).
    let mut new = NewTopic::new(
        topic,
        partitions.unwrap_or(-1),
        TopicReplication::Fixed(replication_factor.unwrap_or(-1)),
    );
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let results = block_on(admin.create_topics([&new], &options(c)))
        .with_context(|| format!("creating topic {topic:?}"))?;
    check::<()>(results, "creating topic")?;
    let json = json!({ "topic": topic, "created": true });
    emit_message(c.format, &json, &format!("Created topic {topic}."));
    Ok(())
}

fn list(c: &Common, exclude_internal: bool) -> anyhow::Result<()> {
    let admin = c.admin()?;
    let md = metadata(admin.inner(), c)?;
    let mut topics: Vec<_> = md
        .topics()
        .iter()
        .filter(|t| !(exclude_internal && t.name().starts_with("__")))
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    let mut t = table(["TOPIC", "PARTITIONS"]);
    for (name, n) in &topics {
        t.add_row(vec![name.clone(), n.to_string()]);
    }
    let json = json!({
        "topics": topics.iter().map(|(name, n)| json!({"name": name, "partitions": n})).collect::<Vec<_>>()
    });
    emit(c.format, &json, &[("", t)]);
    Ok(())
}

fn source_name(s: &ConfigSource) -> &'static str {
    match s {
        ConfigSource::Unknown => "unknown",
        ConfigSource::DynamicTopic => "topic",
        ConfigSource::DynamicBroker => "dynamic-broker",
        ConfigSource::DynamicDefaultBroker => "dynamic-default-broker",
        ConfigSource::StaticBroker => "static-broker",
        ConfigSource::Default => "default",
    }
}

/// A topic config: name, value, where it comes from, whether it is the default.
type ConfigRow = (String, Option<String>, ConfigSource, bool);

/// The topic's configs, sorted by name.
fn topic_configs(
    c: &Common,
    admin: &rdkafka::admin::AdminClient<super::client::Quiet>,
    topic: &str,
) -> anyhow::Result<Vec<ConfigRow>> {
    let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options(c)))
        .with_context(|| format!("describing the configs of {topic:?}"))?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no config resource in the answer"))?
        .map_err(|e| anyhow!("describing the configs of {topic:?}: {e}"))?;
    let mut out: Vec<_> = resource
        .entries
        .into_iter()
        .map(|e| (e.name, e.value, e.source, e.is_default))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn describe(c: &Common, topic: &str, all_configs: bool) -> anyhow::Result<()> {
    let admin = c.admin()?;
    let md = metadata(admin.inner(), c)?;
    partitions_of(&md, topic)?;
    let mt = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic:?} does not exist"))?;
    let mut parts: Vec<_> = mt.partitions().iter().collect();
    parts.sort_by_key(|p| p.id());
    let mut pt = table(["PARTITION", "LEADER", "REPLICAS", "ISR"]);
    let mut pj = Vec::new();
    for p in &parts {
        let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        pt.add_row(vec![
            p.id().to_string(),
            p.leader().to_string(),
            list(p.replicas()),
            list(p.isr()),
        ]);
        pj.push(json!({
            "partition": p.id(),
            "leader": p.leader(),
            "replicas": p.replicas(),
            "isr": p.isr(),
            "error": p.error().map(|e| format!("{:?}", RDKafkaErrorCode::from(e))),
        }));
    }
    let configs = topic_configs(c, &admin, topic)?;
    let mut ct = table(["CONFIG", "VALUE", "SOURCE"]);
    let mut cj = Vec::new();
    for (name, value, source, is_default) in &configs {
        if all_configs || !is_default {
            ct.add_row(vec![
                name.clone(),
                value.clone().unwrap_or_default(),
                source_name(source).to_string(),
            ]);
        }
        cj.push(json!({
            "name": name, "value": value, "source": source_name(source), "is_default": is_default,
        }));
    }
    let json = json!({
        "topic": topic,
        "partitions": pj,
        "configs": cj,
    });
    let title = format!("Topic {topic}: {} partitions", parts.len());
    let config_title = if all_configs {
        "Configs"
    } else {
        "Configs set on the topic (--all-configs for every one)"
    };
    emit(c.format, &json, &[(&title, pt), (config_title, ct)]);
    Ok(())
}

fn delete(c: &Common, topics: &[String]) -> anyhow::Result<()> {
    let admin = c.admin()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = block_on(admin.delete_topics(&names, &options(c))).context("deleting topics")?;
    check::<()>(results, "deleting topic")?;
    let json = json!({ "deleted": topics });
    emit_message(c.format, &json, &format!("Deleted {}.", topics.join(", ")));
    Ok(())
}

/// Incremental from the user's view: the configs set on the topic are
/// read, changed and written back whole with AlterConfigs, which every
/// Kafka broker serves (rdkafka 0.37 has no IncrementalAlterConfigs). A
/// change made by someone else between the read and the write is lost.
fn alter_config(
    c: &Common,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> anyhow::Result<()> {
    if set.is_empty() && delete.is_empty() {
        bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
    }
    let admin = c.admin()?;
    let current = topic_configs(c, &admin, topic)?;
    let known: BTreeMap<&str, ()> = current.iter().map(|e| (e.0.as_str(), ())).collect();
    for key in set.iter().map(|(k, _)| k).chain(delete) {
        if !known.contains_key(key.as_str()) {
            bail!("{key:?} is not a config of topic {topic:?}");
        }
    }
    let mut next: BTreeMap<String, String> = current
        .into_iter()
        .filter(|(_, _, source, _)| matches!(source, ConfigSource::DynamicTopic))
        .filter_map(|(k, v, _, _)| v.map(|v| (k, v)))
        .collect();
    for k in delete {
        next.remove(k);
    }
    for (k, v) in set {
        next.insert(k.clone(), v.clone());
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in &next {
        alter = alter.set(k, v);
    }
    let results = block_on(admin.alter_configs([&alter], &options(c)))
        .with_context(|| format!("altering the configs of {topic:?}"))?;
    for r in results {
        if let Err((_, code)) = r {
            bail!("altering the configs of {topic:?} failed: {code} ({code:?})");
        }
    }
    let json = json!({ "topic": topic, "configs": next });
    let summary: Vec<String> = next.iter().map(|(k, v)| format!("{k}={v}")).collect();
    emit_message(
        c.format,
        &json,
        &format!("Topic {topic} configs now: {}", summary.join(", ")),
    );
    Ok(())
}

fn add_partitions(c: &Common, topic: &str, partitions: usize) -> anyhow::Result<()> {
    let admin = c.admin()?;
    let new = NewPartitions::new(topic, partitions);
    let results = block_on(admin.create_partitions([&new], &options(c)))
        .with_context(|| format!("adding partitions to {topic:?}"))?;
    check::<()>(results, "adding partitions to")?;
    let json = json!({ "topic": topic, "partitions": partitions });
    emit_message(
        c.format,
        &json,
        &format!("Topic {topic} now has {partitions} partitions."),
    );
    Ok(())
}

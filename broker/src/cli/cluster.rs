//! `sluice cluster`: what the cluster is (brokers, controller, cluster id,
//! topic and partition counts) and whether it is healthy enough to serve:
//! Metadata answered and every partition has a leader.

use std::ffi::CStr;

use anyhow::bail;
use rdkafka::bindings;
use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use super::client::{metadata, Common};
use super::output::{emit, emit_message, table};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ClusterCommand {
    /// Brokers, controller, cluster id, topic and partition counts.
    Info,
    /// Exit 0 if the cluster answers Metadata and every partition has a
    /// leader; otherwise exit non-zero and say why.
    Health,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Info => info(&args.common),
        ClusterCommand::Health => health(&args.common),
    }
}

/// The cluster id and controller id from librdkafka's cached metadata
/// (rdkafka 0.37 has no safe wrapper for them).
fn cluster_and_controller<C: ClientContext>(
    client: &Client<C>,
    c: &Common,
) -> (Option<String>, Option<i32>) {
    let timeout_ms = i32::try_from(c.timeout_ms).unwrap_or(i32::MAX);
    // SAFETY: the client handle is alive for the call; the returned string
    // is owned by us and freed with rd_kafka_mem_free as librdkafka asks.
    let cluster_id = unsafe {
        let p = bindings::rd_kafka_clusterid(client.native_ptr(), timeout_ms);
        if p.is_null() {
            None
        } else {
            let s = CStr::from_ptr(p).to_string_lossy().into_owned();
            bindings::rd_kafka_mem_free(client.native_ptr(), p.cast());
            Some(s)
        }
    };
    // SAFETY: as above; returns -1 when unknown.
    let controller = unsafe { bindings::rd_kafka_controllerid(client.native_ptr(), timeout_ms) };
    (cluster_id, (controller >= 0).then_some(controller))
}

fn info(c: &Common) -> anyhow::Result<()> {
    let consumer = c.consumer(None)?;
    let md = metadata(consumer.client(), c)?;
    let (cluster_id, controller) = cluster_and_controller(consumer.client(), c);
    let mut brokers: Vec<_> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    brokers.sort();
    let topics = md.topics().len();
    let partitions: usize = md.topics().iter().map(|t| t.partitions().len()).sum();
    let mut bt = table(["BROKER", "HOST", "PORT", "CONTROLLER"]);
    for (id, host, port) in &brokers {
        let is_controller = if controller == Some(*id) { "yes" } else { "" };
        bt.add_row(vec![
            id.to_string(),
            host.clone(),
            port.to_string(),
            is_controller.into(),
        ]);
    }
    let json = json!({
        "cluster_id": cluster_id,
        "controller_id": controller,
        "brokers": brokers.iter().map(|(id, host, port)| json!({"id": id, "host": host, "port": port})).collect::<Vec<_>>(),
        "topics": topics,
        "partitions": partitions,
    });
    let title = format!(
        "Cluster {} — controller {}, {topics} topics, {partitions} partitions",
        cluster_id.as_deref().unwrap_or("(unknown id)"),
        controller.map_or_else(|| "unknown".into(), |id| id.to_string()),
    );
    emit(c.format, &json, &[(&title, bt)]);
    Ok(())
}

fn health(c: &Common) -> anyhow::Result<()> {
    let consumer = c.consumer(None)?;
    let md = metadata(consumer.client(), c)?;
    let mut problems = Vec::new();
    if md.brokers().is_empty() {
        problems.push("the cluster reports no brokers".to_string());
    }
    for t in md.topics() {
        if let Some(e) = t.error() {
            problems.push(format!(
                "topic {}: {:?}",
                t.name(),
                RDKafkaErrorCode::from(e)
            ));
        }
        for p in t.partitions() {
            if p.leader() < 0 {
                problems.push(format!("{}-{} has no leader", t.name(), p.id()));
            } else if let Some(e) = p.error() {
                problems.push(format!(
                    "{}-{}: {:?}",
                    t.name(),
                    p.id(),
                    RDKafkaErrorCode::from(e)
                ));
            }
        }
    }
    let partitions: usize = md.topics().iter().map(|t| t.partitions().len()).sum();
    let json = json!({
        "healthy": problems.is_empty(),
        "brokers": md.brokers().len(),
        "partitions": partitions,
        "problems": problems,
    });
    if problems.is_empty() {
        emit_message(
            c.format,
            &json,
            &format!(
                "healthy: {} broker(s), {partitions} partitions, all with leaders",
                md.brokers().len()
            ),
        );
        return Ok(());
    }
    if c.format == super::output::Format::Json {
        super::output::print_json(&json);
    }
    bail!("unhealthy: {}", problems.join("; "))
}

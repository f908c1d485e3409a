//! This node's place in the cluster, run on shard 0: its controller (every
//! node is a voter of the controller quorum; a single node is a quorum of
//! one, the same code path), its registration and heartbeats, and the
//! loop that turns each metadata version the controller applies into the
//! shards' `ClusterMetadata` and makes every shard apply it.
//!
//! Commands reach the controller leader through `ControllerClient`
//! wherever it runs; a change is answered to a Kafka client only once this
//! node's shards have applied the metadata that holds it, so a client that
//! creates a topic and then asks this node for it finds it. Topic
//! administration (`admin`) is proposed from here too.
//!
//! The rest of the node is reached through `Peers`, which the node
//! implements: this module never names the mesh's messages.

pub mod admin;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replication::controller::file_log::FileLogStore;
use replication::controller::tcp::{start_controller, ControllerClient, ServerHandle, TcpConfig};
use replication::controller::{
    default_config, Command, CommandResult, Controller, MetadataStateMachine, SubmitError,
};
use uuid::Uuid;

use crate::metadata::ClusterMetadata;
pub use crate::peers::Peers;
use crate::preflight::StartError;
use crate::shard::Shard;
use crate::signal::AppendSignal;

/// Sent in every controller connection's hello.
const CLUSTER_NAME: &str = "sluice";
/// How long a command may take to commit before the client is told.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the controller leader looks for expired broker sessions.
const LIVENESS_TICK: Duration = Duration::from_millis(100);

/// Shard 0's handle on the cluster.
pub struct ClusterNode {
    pub client: ControllerClient,
    /// Kept so the controller's listener lives as long as the node.
    _server: ServerHandle,
    /// The controller log index of the metadata every shard has applied.
    published: Cell<u64>,
    on_publish: AppendSignal,
}

impl ClusterNode {
    pub fn controller(&self) -> &Controller {
        self.client.controller()
    }

    /// Proposes `command` and waits until every shard of this node has
    /// applied the metadata that includes it.
    pub async fn submit(&self, command: Command) -> Result<CommandResult, SubmitError> {
        let (index, result) = self.client.submit(command, SUBMIT_TIMEOUT).await?;
        let deadline = Instant::now() + SUBMIT_TIMEOUT;
        while self.published.get() < index {
            if Instant::now() >= deadline {
                return Err(SubmitError::Unknown { leader: None });
            }
            futures_lite::future::or(
                self.on_publish.next(),
                crate::rt::sleep(Duration::from_millis(100)),
            )
            .await;
        }
        Ok(result)
    }
}

/// Starts this node's controller on shard 0, joins the cluster, makes
/// every shard apply the metadata, and keeps it current. `link_addrs` are
/// the shards' replication listeners, as peers reach them.
/// The node is put in `slot` as soon as it exists, so that commands from
/// other shards reach it while it joins.
pub async fn start(
    shard: &Rc<Shard>,
    peers: Rc<dyn Peers>,
    slot: &RefCell<Option<Rc<ClusterNode>>>,
    link_addrs: Vec<String>,
) -> Result<(), StartError> {
    let config = shard.config.clone();
    let node_id = config.node_id as u64;
    let fail = |reason: String| StartError::Cluster { reason };
    let dir = config.data_dir.join("controller");
    let log_store = FileLogStore::open(dir.join("log")).map_err(|e| fail(e.to_string()))?;
    let state_machine = MetadataStateMachine::open(dir.join("state"))
        .map_err(|e| fail(format!("opening {}: {e}", dir.join("state").display())))?;
    let raft = default_config()
        .validate()
        .map_err(|e| fail(format!("controller config: {e}")))?;
    let tcp = TcpConfig {
        cluster: CLUSTER_NAME.into(),
        tls: shard.peer_tls.clone(),
        ..TcpConfig::default()
    };
    let listen = config.controller_addr()?;
    let mut voters = config.voters()?;
    let voter = voters.iter().any(|(id, _)| *id == node_id);
    if !voter && listen.port() == 0 {
        return Err(fail(format!(
            "node {node_id} is not a voter, so it follows the controller log as a learner: its --controller-listen needs a fixed port the voters can reach"
        )));
    }
    let (controller, server) = start_controller(
        node_id,
        listen,
        tcp.clone(),
        Arc::new(raft),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    if config.controller_voters.trim().is_empty() {
        // A quorum of one, at whatever port it got.
        voters = vec![(node_id, server.local_addr().to_string())];
    }
    if voter {
        controller
            .initialize(&voters)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let client = ControllerClient::new(controller.clone(), tcp).map_err(|e| fail(e.to_string()))?;
    if !voter {
        // A broker-only node: the voters add it as a learner, and it
        // follows the metadata log like they do.
        // The address the voters dial back: the advertised host when the
        // listener takes every address.
        let addr = if listen.ip().is_unspecified() {
            format!("{}:{}", shard.advertised.0, listen.port())
        } else {
            listen.to_string()
        };
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            match client.join(&voters, &addr, Duration::from_secs(5)).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && !shard.is_shutting_down() => {
                    tracing::warn!("waiting to join the controller quorum as a learner: {e}");
                }
                Err(e) => return Err(fail(format!("joining as a learner: {e}"))),
            }
        }
    }
    let node = Rc::new(ClusterNode {
        client,
        _server: server,
        published: Cell::new(0),
        on_publish: AppendSignal::default(),
    });
    *slot.borrow_mut() = Some(node.clone());

    wait_for_leader(shard, &node).await?;
    // A damaged file stops start-up rather than leave its topics behind.
    let legacy = ClusterMetadata::load(&config.data_dir).map_err(|e| {
        let path = config.data_dir.join(crate::metadata::METADATA_FILE);
        StartError::Metadata(e, path.display().to_string())
    })?;
    let cluster_id = legacy.as_ref().map_or_else(
        || Uuid::new_v4().simple().to_string(),
        |m| m.cluster_id.clone(),
    );
    let (advertised_host, advertised_port) = shard.advertised.clone();
    let joined = async {
        // A registration is a sign of life: without it, a leader that
        // last heard of this node before it restarted would fence it again.
        let _best_effort = node
            .client
            .heartbeat(node_id as u32, SUBMIT_TIMEOUT)
            .await
            .is_ok();
        // Never refused: the first id proposed wins.
        let _first_wins = node
            .client
            .submit(Command::SetClusterId { cluster_id }, SUBMIT_TIMEOUT)
            .await?
            .1
            .is_ok();
        node.client
            .submit(
                Command::RegisterNode {
                    node_id: node_id as u32,
                    addr: format!("{advertised_host}:{advertised_port}"),
                    shards: shard.nr_shards as u32,
                    link_addrs,
                    listeners: shard
                        .listeners
                        .iter()
                        .map(|l| {
                            let (host, port) = &l.advertised;
                            (l.protocol.name().to_string(), format!("{host}:{port}"))
                        })
                        .collect(),
                },
                SUBMIT_TIMEOUT,
            )
            .await
    };
    match joined.await {
        Ok((_, Ok(_))) => {}
        Ok((_, Err(e))) => return Err(fail(format!("registering node {node_id}: {e}"))),
        Err(e) => return Err(fail(format!("registering node {node_id}: {e}"))),
    }
    if let Some(legacy) = legacy {
        import_legacy(&node, &config.data_dir, legacy).await?;
    }
    // Producer ids this node handed out before the controller existed are
    // stepped over cluster-wide before any node hands out new ones.
    let floor = crate::producer_ids::legacy_floor(&config.data_dir)
        .await
        .map_err(|e| fail(format!("reading the producer id files: {e}")))?;
    if floor > 0 {
        let command = Command::AllocateProducerIds {
            node_id: node_id as u32,
            count: 0,
            at_least: floor,
        };
        if let Err(e) = node.client.submit(command, SUBMIT_TIMEOUT).await {
            return Err(fail(format!("reserving legacy producer ids: {e}")));
        }
    }
    publish(&*peers, &node).await;
    tracing::info!(
        node = node_id,
        cluster = %shard.metadata().cluster_id,
        voters = voters.len(),
        role = if voter { "broker+controller" } else { "broker" },
        "joined the cluster"
    );
    spawn_metadata_loop(shard, &peers, &node);
    spawn_heartbeats(shard, &peers, &node);
    if config.auto_leader_rebalance {
        spawn_leader_balancer(shard, &node);
    }
    let session = Duration::from_millis(config.broker_session_timeout_ms);
    crate::rt::spawn_local(replication::controller::liveness::run(
        controller,
        session,
        LIVENESS_TICK,
    ))
    .detach();
    Ok(())
}

async fn wait_for_leader(shard: &Rc<Shard>, node: &ClusterNode) -> Result<(), StartError> {
    let started = Instant::now();
    let mut said = Instant::now();
    while node.controller().leader().is_none() {
        if shard.is_shutting_down() {
            return Err(StartError::Cluster {
                reason: "stopped while waiting for the controller quorum".into(),
            });
        }
        if said.elapsed() > Duration::from_secs(5) {
            said = Instant::now();
            tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                voters = %shard.config.controller_voters,
                "waiting for a controller leader (a majority of the voters must be up)"
            );
        }
        crate::rt::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Brings the topics of a node that kept them in `metadata.json` (before
/// the controller) into the controller, with their ids, once.
async fn import_legacy(
    node: &ClusterNode,
    data_dir: &std::path::Path,
    legacy: ClusterMetadata,
) -> Result<(), StartError> {
    let have = node.controller().applied().metadata;
    for topic in legacy.topics.values() {
        if have.topics.contains_key(&topic.name) {
            continue;
        }
        let command = Command::CreateTopic {
            name: topic.name.clone(),
            topic_id: topic.topic_id.as_u128(),
            partitions: topic.partitions as u32,
            replication_factor: 1,
            configs: topic.configs.clone(),
        };
        match node.client.submit(command, SUBMIT_TIMEOUT).await {
            Ok(_) => tracing::info!(topic = %topic.name, "imported from metadata.json"),
            Err(e) => {
                return Err(StartError::Cluster {
                    reason: format!("importing topic {} from metadata.json: {e}", topic.name),
                })
            }
        }
    }
    let from: PathBuf = data_dir.join(crate::metadata::METADATA_FILE);
    let to = data_dir.join(format!("{}.imported", crate::metadata::METADATA_FILE));
    std::fs::rename(&from, &to).map_err(|e| StartError::Cluster {
        reason: format!("renaming {}: {e}", from.display()),
    })
}

/// Makes every shard apply what the controller has applied, and records
/// the index it reflects.
async fn publish(peers: &dyn Peers, node: &ClusterNode) {
    let controller = node.controller();
    let applied = controller.applied();
    let index = applied.last_applied.map_or(0, |l| l.index);
    let leader = controller.leader().map_or(-1, |l| l as i32);
    let meta = ClusterMetadata::from_controller(&applied.metadata, index, leader);
    peers.apply_everywhere(Arc::new(meta)).await;
    node.published.set(node.published.get().max(index));
    node.on_publish.notify();
}

fn spawn_metadata_loop(shard: &Rc<Shard>, peers: &Rc<dyn Peers>, node: &Rc<ClusterNode>) {
    let (shard, peers, node) = (shard.clone(), peers.clone(), node.clone());
    crate::rt::spawn_local(async move {
        let mut watch = node.controller().metadata.clone();
        let mut leader = node.controller().leader();
        loop {
            // Leader changes are not metadata changes, but Metadata
            // answers name the controller: look now and then.
            let changed =
                futures_lite::future::or(async { Some(watch.changed().await.is_some()) }, async {
                    crate::rt::sleep(Duration::from_millis(500)).await;
                    None
                })
                .await;
            if shard.is_shutting_down() || changed == Some(false) {
                return;
            }
            let now_leader = node.controller().leader();
            if changed.is_none() && now_leader == leader {
                continue;
            }
            leader = now_leader;
            publish(&*peers, &node).await;
        }
    })
    .detach();
}

/// Heartbeats to the controller leader. A node that has not got one
/// through for a session knows the others have fenced it by now: it stops
/// acting as a leader (NOT_LEADER_OR_FOLLOWER) rather than take writes
/// that the new leaders' logs will not have, and resumes once a heartbeat
/// gets through and it has applied the metadata up to the leader's.
fn spawn_heartbeats(shard: &Rc<Shard>, peers: &Rc<dyn Peers>, node: &Rc<ClusterNode>) {
    let (shard, peers, node) = (shard.clone(), peers.clone(), node.clone());
    let interval = Duration::from_millis(shard.config.broker_heartbeat_interval_ms);
    let session = Duration::from_millis(shard.config.broker_session_timeout_ms);
    let node_id = shard.config.node_id as u32;
    crate::rt::spawn_local(async move {
        let mut last_ok = Instant::now();
        let mut isolated = false;
        while shard.nap(interval).await {
            // Measured from the sending: the leader heard this node then.
            let sent = Instant::now();
            let caught_up = match node.client.heartbeat(node_id, interval).await {
                Ok(leader_applied) => {
                    last_ok = sent;
                    node.published.get() >= leader_applied
                }
                Err(e) => {
                    tracing::debug!("heartbeat not delivered: {e}");
                    false
                }
            };
            // Early by two intervals: the controller fences at the session,
            // and this loop looks only once an interval.
            let now_isolated = if isolated {
                !caught_up
            } else {
                last_ok.elapsed() + 2 * interval > session
            };
            if now_isolated == isolated {
                continue;
            }
            isolated = now_isolated;
            if isolated {
                tracing::warn!(
                    silent_ms = last_ok.elapsed().as_millis() as u64,
                    "no heartbeat reached the controller for a session: this node stops leading until it is back"
                );
            } else {
                tracing::info!("heartbeats get through again: leading as the metadata says");
            }
            peers.set_isolated_everywhere(isolated).await;
        }
    })
    .detach();
}

/// On the controller leader: every `leader.imbalance.check.interval`,
/// partitions whose preferred replica is live and in sync but does not
/// lead get it back as leader (after a restart, failover left them on the
/// others).
fn spawn_leader_balancer(shard: &Rc<Shard>, node: &Rc<ClusterNode>) {
    let (shard, node) = (shard.clone(), node.clone());
    let interval = Duration::from_millis(shard.config.leader_imbalance_check_interval_ms);
    crate::rt::spawn_local(async move {
        while shard.nap(interval).await {
            let controller = node.controller();
            if controller.leader() != Some(controller.id) {
                continue;
            }
            let meta = controller.applied().metadata;
            for (name, topic) in &meta.topics {
                for (p, state) in topic.partitions.iter().enumerate() {
                    let Some(&preferred) = state.replicas.first() else {
                        continue;
                    };
                    let movable = state.leader.is_some()
                        && state.leader != Some(preferred)
                        && state.isr.contains(&preferred)
                        && meta.is_live(preferred);
                    if !movable {
                        continue;
                    }
                    let command = Command::ElectLeader {
                        topic: name.clone(),
                        partition: p as u32,
                        unclean: false,
                    };
                    tracing::info!("leader balance: {command}");
                    if let Err(e) = node.client.submit(command, SUBMIT_TIMEOUT).await {
                        tracing::debug!("leader balance: {e}");
                    }
                }
            }
        }
    })
    .detach();
}

/// Controlled shutdown: a node of a multi-node cluster fences itself
/// before it stops, so that its partitions get new leaders now rather than
/// after its session expires. Bounded: without a quorum it stops anyway.
pub async fn leave(shard: &Shard, node: Option<Rc<ClusterNode>>) {
    let Some(node) = node else {
        return;
    };
    if shard.metadata().nodes.len() < 2 {
        return;
    }
    let node_id = shard.node_id();
    let command = Command::FenceNode { node_id };
    match node.client.submit(command, Duration::from_secs(2)).await {
        Ok(_) => tracing::info!(node = node_id, "left the cluster: partitions led here move"),
        Err(e) => tracing::warn!(
            node = node_id,
            "could not fence this node before stopping: {e}"
        ),
    }
}

//! The controller quorum end to end, in one process: openraft on glommio
//! with the metadata state machine, over the in-process network. Three
//! voters elect a leader and apply commands identically; a cut-off leader
//! is replaced and catches up when it returns; a stopped node restarts
//! from its (memory or file) log; a new node is brought up from a
//! snapshot; AlterPartition's compare-and-set holds through Raft; and the
//! same works with each node on its own executor thread.
//!
//! Every wait is bounded (`WAIT`); nothing depends on machine speed short
//! of that.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use openraft::{AsyncRuntime, BasicNode, ServerState};
use replication::controller::file_log::FileLogStore;
use replication::controller::log_store::MemLogStore;
use replication::controller::metadata::{Applied, Command, MetadataError};
use replication::controller::network::Router;
use replication::controller::runtime::TEST_IO_MEMORY_BYTES;
use replication::controller::{
    default_config, AppliedMetadata, CommandResult, Controller, ControllerId, GlommioRuntime,
    MetadataStateMachine, SubmitError, TypeConfig,
};
use replication::partition_state::AlterError;

const WAIT: Duration = Duration::from_secs(10);

fn run<F: Future<Output = ()>>(f: F) {
    GlommioRuntime::new(1).block_on(f);
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match GlommioRuntime::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

async fn sleep_ms(ms: u64) {
    GlommioRuntime::sleep(Duration::from_millis(ms)).await;
}

fn node(id: ControllerId) -> BasicNode {
    BasicNode::new(format!("controller-{id}"))
}

fn register(node_id: u32) -> Command {
    Command::RegisterNode {
        node_id,
        addr: format!("broker-{node_id}:9092"),
        shards: 2,
        link_addrs: Vec::new(),
        listeners: Vec::new(),
    }
}

fn create_topic(name: &str, topic_id: u128, partitions: u32, rf: u16) -> Command {
    Command::CreateTopic {
        name: name.into(),
        topic_id,
        partitions,
        replication_factor: rf,
        configs: BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]),
    }
}

/// Controllers on one executor, over one router.
struct Cluster {
    router: Router,
    nodes: BTreeMap<ControllerId, Controller>,
}

impl Cluster {
    async fn start(ids: &[ControllerId]) -> (Cluster, BTreeMap<ControllerId, MemLogStore>) {
        let mut cluster = Cluster {
            router: Router::new(),
            nodes: BTreeMap::new(),
        };
        let mut logs = BTreeMap::new();
        for &id in ids {
            let log = MemLogStore::new();
            cluster
                .add(id, log.clone(), MetadataStateMachine::new())
                .await;
            logs.insert(id, log);
        }
        let members: BTreeMap<ControllerId, BasicNode> =
            ids.iter().map(|&id| (id, node(id))).collect();
        cluster.nodes[&ids[0]]
            .raft
            .initialize(members)
            .await
            .expect("initialize the quorum");
        (cluster, logs)
    }

    async fn add<LS: RaftLogStorage<TypeConfig>>(
        &mut self,
        id: ControllerId,
        log: LS,
        sm: (MetadataStateMachine, replication::controller::MetadataWatch),
    ) {
        let config = Arc::new(default_config().validate().expect("valid config"));
        let c = Controller::start(id, config, self.router.network(id), log, sm)
            .await
            .expect("start controller");
        self.router.serve(id, c.raft.clone());
        self.nodes.insert(id, c);
    }

    async fn stop(&mut self, id: ControllerId) {
        self.router.unregister(id);
        let c = self.nodes.remove(&id).expect("a running node");
        within("shutdown", c.raft.shutdown())
            .await
            .expect("shutdown");
    }

    /// Waits until every node in `among` is up to date with one leader
    /// among them, and returns it.
    async fn leader_among(&self, among: &[ControllerId]) -> ControllerId {
        within("a leader all agree on", async {
            loop {
                let leaders: BTreeSet<Option<ControllerId>> =
                    among.iter().map(|id| self.nodes[id].leader()).collect();
                if let [Some(l)] = leaders.iter().copied().collect::<Vec<_>>()[..] {
                    let state = self.nodes[&l].raft.metrics().borrow_watched().state;
                    if among.contains(&l) && state == ServerState::Leader {
                        return l;
                    }
                }
                sleep_ms(10).await;
            }
        })
        .await
    }

    /// Submits through `via`, following the leader if it moved (as a
    /// broker would: a refusal by a non-leader is safe to retry; an entry
    /// lost in a leader change is not retried, the test fails instead).
    async fn submit(&self, via: ControllerId, command: Command) -> Result<Applied, MetadataError> {
        within("a command commits", async {
            let mut via = via;
            loop {
                match self.nodes[&via].submit(command.clone()).await {
                    Ok(answer) => return answer,
                    Err(SubmitError::NotLeader { leader }) => {
                        if let Some(l) = leader.filter(|l| self.nodes.contains_key(l)) {
                            via = l;
                        } else {
                            sleep_ms(20).await;
                        }
                    }
                    Err(e) => panic!("{command} through {via}: {e}"),
                }
            }
        })
        .await
    }

    /// Waits until every node in `among` has applied what `reference` has,
    /// and checks they hold the same metadata.
    async fn converged(&self, reference: ControllerId, among: &[ControllerId]) {
        let want = self.nodes[&reference].applied();
        for id in among {
            let mut watch = self.nodes[id].metadata.clone();
            let got = within(
                "a node catches up",
                watch.wait_until(|a| a.last_applied >= want.last_applied),
            )
            .await
            .expect("the node runs");
            assert_eq!(
                got.last_applied, want.last_applied,
                "node {id} applied past the reference"
            );
            assert_eq!(
                got.metadata, want.metadata,
                "node {id} disagrees with node {reference}"
            );
        }
    }
}

async fn register_brokers(c: &Cluster, leader: ControllerId) {
    for b in 1..=3 {
        let r = c.submit(leader, register(b)).await;
        assert!(matches!(r, Ok(Applied::NodeRegistered { .. })), "{r:?}");
    }
}

#[test]
fn three_controllers_elect_a_leader_and_apply_commands_identically() {
    run(async {
        let (c, _logs) = Cluster::start(&[1, 2, 3]).await;
        let all = [1, 2, 3];
        let leader = c.leader_among(&all).await;
        register_brokers(&c, leader).await;
        assert_eq!(
            c.submit(leader, create_topic("events", 0xfeed, 6, 3)).await,
            Ok(Applied::TopicCreated { topic_id: 0xfeed })
        );
        c.converged(leader, &all).await;
        let m = c.nodes[&leader].applied().metadata;
        let events = &m.topics["events"];
        assert_eq!(events.partitions.len(), 6);
        assert_eq!(events.configs["retention.ms"], "3600000");
        for p in &events.partitions {
            assert_eq!((p.replicas.len(), p.isr.len()), (3, 3));
        }
        // Leadership spreads over the brokers.
        let leaders: BTreeSet<u32> = events.partitions.iter().filter_map(|p| p.leader).collect();
        assert_eq!(leaders, BTreeSet::from([1, 2, 3]));
        // A follower refuses and names the leader.
        let follower = *all.iter().find(|&&id| id != leader).expect("a follower");
        assert_eq!(
            c.nodes[&follower].submit(create_topic("x", 1, 1, 1)).await,
            Err(SubmitError::NotLeader {
                leader: Some(leader)
            })
        );
        // A refused command answers through Raft and changes nothing.
        assert_eq!(
            c.submit(leader, create_topic("events", 0xbeef, 1, 1)).await,
            Err(MetadataError::TopicExists("events".into()))
        );
        c.converged(leader, &all).await;
    });
}

#[test]
fn a_cut_off_leader_is_replaced_and_catches_up_when_it_returns() {
    run(async {
        let (c, _logs) = Cluster::start(&[1, 2, 3]).await;
        let old = c.leader_among(&[1, 2, 3]).await;
        register_brokers(&c, old).await;
        c.submit(old, create_topic("before", 1, 3, 3))
            .await
            .expect("created");

        c.router.isolate(old);
        // A write the cut-off leader accepts but cannot commit.
        let stranded = {
            let node = c.nodes[&old].clone();
            glommio::spawn_local(
                async move { node.submit(create_topic("stranded", 9, 1, 1)).await },
            )
        };
        let rest: Vec<ControllerId> = [1, 2, 3].into_iter().filter(|&id| id != old).collect();
        let new = c.leader_among(&rest).await;
        assert_ne!(new, old);
        c.submit(new, create_topic("after", 2, 2, 3))
            .await
            .expect("created");
        c.submit(new, Command::FenceNode { node_id: 3 })
            .await
            .expect("fenced");
        c.converged(new, &rest).await;

        c.router.heal(old);
        let leader = c.leader_among(&[1, 2, 3]).await;
        c.converged(leader, &[1, 2, 3]).await;
        let m = c.nodes[&old].applied().metadata;
        assert!(m.topics.contains_key("after"));
        assert!(
            !m.topics.contains_key("stranded"),
            "an uncommitted entry was applied"
        );
        assert!(m.nodes[&3].fenced);
        // The stranded write learns that its fate is unknown (or that it
        // was never accepted), it does not hang or claim success.
        let r = within("the stranded write answers", stranded).await;
        assert!(
            matches!(
                r,
                Err(SubmitError::Unknown { .. } | SubmitError::NotLeader { .. })
            ),
            "{r:?}"
        );
        // And the quorum goes on.
        c.submit(leader, Command::UnfenceNode { node_id: 3 })
            .await
            .expect("unfenced");
        c.converged(leader, &[1, 2, 3]).await;
    });
}

#[test]
fn a_stopped_node_restarts_from_its_log_and_catches_up() {
    run(async {
        let (mut c, logs) = Cluster::start(&[1, 2, 3]).await;
        let leader = c.leader_among(&[1, 2, 3]).await;
        register_brokers(&c, leader).await;
        c.submit(leader, create_topic("a", 1, 2, 2))
            .await
            .expect("created");
        c.converged(leader, &[1, 2, 3]).await;

        let down = *[1, 2, 3]
            .iter()
            .find(|&&id| id != leader)
            .expect("a follower");
        c.stop(down).await;
        c.submit(leader, create_topic("b", 2, 2, 2))
            .await
            .expect("created");
        c.submit(
            leader,
            Command::CreatePartitions {
                name: "a".into(),
                total: 4,
            },
        )
        .await
        .expect("grown");

        // Same log, fresh memory: it replays its log and fetches the rest.
        c.add(down, logs[&down].clone(), MetadataStateMachine::new())
            .await;
        c.converged(leader, &[1, 2, 3]).await;
        assert_eq!(
            c.nodes[&down].applied().metadata.topics["a"]
                .partitions
                .len(),
            4
        );
    });
}

#[test]
fn a_new_node_is_brought_up_from_a_snapshot() {
    run(async {
        let (mut c, _logs) = Cluster::start(&[1, 2, 3]).await;
        let leader = c.leader_among(&[1, 2, 3]).await;
        register_brokers(&c, leader).await;
        for i in 0..5u32 {
            c.submit(
                leader,
                create_topic(&format!("t{i}"), 100 + u128::from(i), 2, 2),
            )
            .await
            .expect("created");
        }
        c.converged(leader, &[1, 2, 3]).await;

        let raft = c.nodes[&leader].raft.clone();
        let applied = c.nodes[&leader]
            .applied()
            .last_applied
            .expect("applied")
            .index;
        raft.trigger().snapshot().await.expect("trigger snapshot");
        within(
            "the leader's snapshot",
            raft.wait(Some(WAIT)).metrics(
                |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
                "snapshot",
            ),
        )
        .await
        .expect("snapshot built");
        raft.trigger()
            .purge_log(applied)
            .await
            .expect("trigger purge");
        within(
            "the leader's purge",
            raft.wait(Some(WAIT)).metrics(
                |m| m.purged.as_ref().is_some_and(|p| p.index >= applied),
                "purged",
            ),
        )
        .await
        .expect("log purged");

        // Node 4 starts empty; the log it would need is gone, so the
        // leader sends the snapshot.
        c.add(4, MemLogStore::new(), MetadataStateMachine::new())
            .await;
        within(
            "node 4 joins as a learner",
            raft.add_learner(4, node(4), true),
        )
        .await
        .expect("learner added");
        c.converged(leader, &[4]).await;
        let m4 = c.nodes[&4].raft.metrics().borrow_watched().clone();
        assert!(
            m4.snapshot.as_ref().is_some_and(|s| s.index >= applied),
            "node 4 was not brought up from a snapshot: {:?}",
            m4.snapshot
        );
        // It keeps following after the snapshot.
        c.submit(leader, create_topic("later", 999, 1, 1))
            .await
            .expect("created");
        c.converged(leader, &[1, 2, 3, 4]).await;
    });
}

#[test]
fn alter_partition_with_a_stale_partition_epoch_is_refused_through_raft() {
    run(async {
        let (c, _logs) = Cluster::start(&[1, 2, 3]).await;
        let leader = c.leader_among(&[1, 2, 3]).await;
        register_brokers(&c, leader).await;
        c.submit(leader, create_topic("t", 7, 1, 3))
            .await
            .expect("created");
        let p = c.nodes[&leader].applied().metadata.topics["t"].partitions[0].clone();
        let partition_leader = p.leader.expect("a partition leader");
        let shrink = |partition_epoch: i32| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            from: partition_leader,
            leader_epoch: p.leader_epoch,
            partition_epoch,
            new_isr: vec![partition_leader],
        };
        let Ok(Applied::PartitionAltered(after)) =
            c.submit(leader, shrink(p.partition_epoch)).await
        else {
            panic!("the first AlterPartition is accepted");
        };
        assert_eq!(
            (after.isr.clone(), after.partition_epoch),
            (vec![partition_leader], p.partition_epoch + 1)
        );
        // The same request again carries a stale partition epoch.
        assert_eq!(
            c.submit(leader, shrink(p.partition_epoch)).await,
            Err(MetadataError::AlterPartition(
                AlterError::InvalidUpdateVersion
            ))
        );
        c.converged(leader, &[1, 2, 3]).await;
        for id in [1, 2, 3] {
            assert_eq!(
                c.nodes[&id].applied().metadata.topics["t"].partitions[0],
                after
            );
        }
        // Fencing the partition leader moves nothing it cannot: the ISR is
        // the leader alone, so the partition goes offline, and comes back
        // with it.
        let fenced = c
            .submit(
                leader,
                Command::FenceNode {
                    node_id: partition_leader,
                },
            )
            .await;
        assert_eq!(fenced, Ok(Applied::Done));
        let offline = c.nodes[&leader].applied().metadata.topics["t"].partitions[0].clone();
        assert_eq!(
            (offline.leader, offline.leader_epoch),
            (None, p.leader_epoch + 1)
        );
        c.submit(
            leader,
            Command::NodeHeartbeat {
                node_id: partition_leader,
            },
        )
        .await
        .expect("unfenced");
        let back = c.nodes[&leader].applied().metadata.topics["t"].partitions[0].clone();
        assert_eq!(back.leader, Some(partition_leader));
    });
}

#[test]
fn file_logged_controllers_restart_from_their_files() {
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let open = |i: usize| {
        let log = FileLogStore::open(dirs[i].path().join("log")).expect("open log");
        let sm =
            MetadataStateMachine::open(dirs[i].path().join("snapshots")).expect("open snapshots");
        (log, sm)
    };
    run(async {
        let mut c = Cluster {
            router: Router::new(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=3u64 {
            let (log, sm) = open(id as usize - 1);
            c.add(id, log, sm).await;
        }
        let members: BTreeMap<ControllerId, BasicNode> = (1..=3).map(|id| (id, node(id))).collect();
        c.nodes[&1]
            .raft
            .initialize(members)
            .await
            .expect("initialize");
        let leader = c.leader_among(&[1, 2, 3]).await;
        register_brokers(&c, leader).await;
        c.submit(leader, create_topic("a", 1, 3, 3))
            .await
            .expect("created");
        c.converged(leader, &[1, 2, 3]).await;

        // A follower snapshots and purges its log, then stops.
        let down = *[1, 2, 3]
            .iter()
            .find(|&&id| id != leader)
            .expect("a follower");
        let raft = c.nodes[&down].raft.clone();
        let applied = c.nodes[&down]
            .applied()
            .last_applied
            .expect("applied")
            .index;
        raft.trigger().snapshot().await.expect("snapshot");
        within(
            "the follower's snapshot",
            raft.wait(Some(WAIT)).metrics(
                |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
                "snapshot",
            ),
        )
        .await
        .expect("snapshot built");
        raft.trigger().purge_log(applied).await.expect("purge");
        within(
            "the follower's purge",
            raft.wait(Some(WAIT)).metrics(
                |m| m.purged.as_ref().is_some_and(|p| p.index >= applied),
                "purged",
            ),
        )
        .await
        .expect("purged");
        c.stop(down).await;
        c.submit(leader, create_topic("b", 2, 1, 3))
            .await
            .expect("created");

        // Reopened from its files: snapshot, then what is left of its log,
        // then the rest from the leader.
        let (log, sm) = open(down as usize - 1);
        c.add(down, log, sm).await;
        c.converged(leader, &[1, 2, 3]).await;
        assert!(c.nodes[&down].applied().metadata.topics.contains_key("b"));

        // The whole quorum stops and restarts: the vote and log survive.
        for id in 1..=3 {
            c.stop(id).await;
        }
        for id in 1..=3u64 {
            let (log, sm) = open(id as usize - 1);
            c.add(id, log, sm).await;
        }
        let leader = c.leader_among(&[1, 2, 3]).await;
        c.submit(leader, create_topic("c", 3, 1, 3))
            .await
            .expect("created");
        c.converged(leader, &[1, 2, 3]).await;
        let m = c.nodes[&leader].applied().metadata;
        assert_eq!(m.topics.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    });
}

/// What the test thread asks of a node running on its own executor.
enum Ctl {
    Submit(Command, oneshot::Sender<Result<CommandResult, SubmitError>>),
    Leader(oneshot::Sender<Option<ControllerId>>),
    Applied(oneshot::Sender<AppliedMetadata>),
}

/// Starts controller `id` on a new executor thread; it runs until the
/// returned sender is dropped.
fn spawn_node(
    id: ControllerId,
    router: Router,
    initialize: Option<BTreeMap<ControllerId, BasicNode>>,
) -> (mpsc::UnboundedSender<Ctl>, glommio::ExecutorJoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded::<Ctl>();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("controller-{id}"))
        .io_memory(TEST_IO_MEMORY_BYTES)
        .spawn(move || async move {
            let config = Arc::new(default_config().validate().expect("valid config"));
            let c = Controller::start(
                id,
                config,
                router.network(id),
                MemLogStore::new(),
                MetadataStateMachine::new(),
            )
            .await
            .expect("start controller");
            router.serve(id, c.raft.clone());
            if let Some(members) = initialize {
                c.raft.initialize(members).await.expect("initialize");
            }
            while let Some(ctl) = rx.next().await {
                match ctl {
                    Ctl::Submit(command, answer) => {
                        let c = c.clone();
                        glommio::spawn_local(async move {
                            let _ = answer.send(c.submit(command).await);
                        })
                        .detach();
                    }
                    Ctl::Leader(answer) => {
                        let _ = answer.send(c.leader());
                    }
                    Ctl::Applied(answer) => {
                        let _ = answer.send(c.applied());
                    }
                }
            }
            router.unregister(id);
            c.raft.shutdown().await.expect("shutdown");
        })
        .expect("spawn an executor");
    (tx, handle)
}

async fn ask<T>(
    node: &mpsc::UnboundedSender<Ctl>,
    make: impl FnOnce(oneshot::Sender<T>) -> Ctl,
) -> T {
    let (tx, rx) = oneshot::channel();
    node.unbounded_send(make(tx)).expect("the node runs");
    within("a node answers", rx)
        .await
        .expect("the node answers")
}

#[test]
fn three_controllers_on_three_executor_threads() {
    let router = Router::new();
    let members: BTreeMap<ControllerId, BasicNode> = (1..=3).map(|id| (id, node(id))).collect();
    let nodes: BTreeMap<ControllerId, _> = (1..=3)
        .map(|id| {
            (
                id,
                spawn_node(id, router.clone(), (id == 1).then(|| members.clone())),
            )
        })
        .collect();
    run(async {
        let nodes = &nodes;
        let ctl = |id: ControllerId| &nodes[&id].0;
        let leader_among = |among: Vec<ControllerId>| async move {
            within("a leader all agree on", async {
                loop {
                    let mut seen = BTreeSet::new();
                    for &id in &among {
                        seen.insert(ask(ctl(id), Ctl::Leader).await);
                    }
                    if let [Some(l)] = seen.into_iter().collect::<Vec<_>>()[..] {
                        if among.contains(&l) {
                            return l;
                        }
                    }
                    sleep_ms(10).await;
                }
            })
            .await
        };
        let submit = |via: ControllerId, command: Command| async move {
            within("a command commits", async {
                let mut via = via;
                loop {
                    match ask(ctl(via), |tx| Ctl::Submit(command.clone(), tx)).await {
                        Ok(answer) => return answer,
                        Err(SubmitError::NotLeader { leader: Some(l) })
                            if nodes.contains_key(&l) =>
                        {
                            via = l
                        }
                        Err(SubmitError::NotLeader { .. }) => sleep_ms(20).await,
                        Err(e) => panic!("{command}: {e}"),
                    }
                }
            })
            .await
        };
        let converged = |among: Vec<ControllerId>, want: AppliedMetadata| async move {
            within("the nodes converge", async {
                loop {
                    let mut all = true;
                    for &id in &among {
                        all &= ask(ctl(id), Ctl::Applied).await == want;
                    }
                    if all {
                        return;
                    }
                    sleep_ms(10).await;
                }
            })
            .await
        };

        let leader = leader_among(vec![1, 2, 3]).await;
        for b in 1..=3 {
            submit(leader, register(b)).await.expect("registered");
        }
        submit(leader, create_topic("events", 1, 3, 3))
            .await
            .expect("created");
        converged(vec![1, 2, 3], ask(ctl(leader), Ctl::Applied).await).await;

        // The leader's links are cut: the other two elect one of them.
        router.isolate(leader);
        let rest: Vec<ControllerId> = (1..=3).filter(|&id| id != leader).collect();
        let new = leader_among(rest.clone()).await;
        submit(new, create_topic("more", 2, 2, 2))
            .await
            .expect("created");
        let want = ask(ctl(new), Ctl::Applied).await;
        converged(rest, want.clone()).await;
        router.heal(leader);
        converged(vec![1, 2, 3], want.clone()).await;
        assert!(want.metadata.topics.contains_key("more"));
    });
    for (_, (tx, handle)) in nodes {
        drop(tx);
        handle.join().expect("the node's executor ends");
    }
}

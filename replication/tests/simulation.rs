//! Deterministic simulation of one partition replicated on three nodes: the
//! replica state machines and the controller's partition-state rules, driven
//! over a simulated network that loses, delays and reorders messages and is
//! cut between node pairs, with nodes crashing and restarting (their logs
//! are durable, as under `fsync=always`; their memory is not). A client
//! produces with acks=all throughout. After every step the run checks:
//!
//! - no two nodes lead in one leader epoch;
//! - every acknowledged record is in the log of the current leader, at its
//!   offset;
//! - every replica's log below its high watermark agrees with what was ever
//!   committed there (committed entries never change);
//!
//! and at the end, once everything is healed and quiet: one leader, every
//! replica's log equal to the leader's, high watermarks at the log end, and
//! every acknowledged record present.
//!
//! Seeds are many and each run is a pure function of its seed; a failure
//! prints the seed and every node's state, `SIM_SEED=n` replays only it
//! (`SIM_TRACE=ms` with it prints every message from that time on), and
//! `SIM_SEEDS=n` runs more or fewer seeds. Mutating the replica or the
//! controller rules (high watermark at the log end, no truncation, pending
//! ISR members not counted, a leader from outside the ISR) fails a run
//! within the first few seeds.

use std::collections::{BTreeMap, BTreeSet};

use replication::epochs::EpochCache;
use replication::partition_state::PartitionState;
use replication::replica::{
    AlterIsr, FetchAnswer, FetchError, FetchRequest, Replica, ReplicaConfig,
};
use replication::{Epoch, NodeId, Offset};

const NODES: [NodeId; 3] = [1, 2, 3];
/// The controller's address on the simulated network.
const CONTROLLER: NodeId = 0;
const STEP_MS: u64 = 10;
const STEPS: u64 = 3_000;
const QUIET_STEPS: u64 = 1_500;
const HEARTBEAT_MS: u64 = 100;
const SESSION_TIMEOUT_MS: u64 = 600;
const METADATA_REPEAT_MS: u64 = 300;
const FETCH_TIMEOUT_MS: u64 = 500;
const FETCH_RECORDS_MAX: usize = 256;

/// splitmix64: small, seedable, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    epoch: Epoch,
    id: u64,
}

#[derive(Debug, Clone)]
enum Msg {
    Fetch(FetchRequest),
    FetchReply {
        /// The follower's epoch when it asked: a reply to an older
        /// incarnation of its view is dropped.
        asked_epoch: Epoch,
        answer: FetchAnswer,
        records: Vec<Rec>,
    },
    Alter(AlterIsr),
    AlterReply {
        change: AlterIsr,
        accepted: bool,
    },
    Metadata(PartitionState),
    Heartbeat,
}

struct Envelope {
    at: u64,
    seq: u64,
    from: NodeId,
    to: NodeId,
    msg: Msg,
}

/// Fault rates of one run, drawn from its seed.
struct Faults {
    loss_pm: u64,
    delay_max_ms: u64,
    crash_pm: u64,
    cut_pm: u64,
    heal_pm: u64,
    unclean: bool,
    min_isr: usize,
}

struct Node {
    up: bool,
    log: Vec<Rec>,
    replica: Option<Replica>,
    fetch_sent_ms: Option<u64>,
    next_heartbeat_ms: u64,
    restart_at: u64,
}

struct Pending {
    node: NodeId,
    epoch: Epoch,
    base: Offset,
    ids: Vec<u64>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    faults: Faults,
    config: ReplicaConfig,
    nodes: BTreeMap<NodeId, Node>,
    state: PartitionState,
    heard_ms: BTreeMap<NodeId, u64>,
    fenced: BTreeSet<NodeId>,
    next_metadata_ms: u64,
    net: Vec<Envelope>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    next_id: u64,
    pending: Vec<Pending>,
    acked: BTreeMap<Offset, u64>,
    acked_count: u64,
    committed: BTreeMap<Offset, Rec>,
    /// Per node, the offset below which its log was checked against
    /// `committed` (records there never change: truncating below a high
    /// watermark fails the run).
    verified_to: BTreeMap<NodeId, Offset>,
    /// The leader and epoch for which every acknowledged record was
    /// checked, and the acknowledgements since.
    acks_checked_for: Option<(NodeId, Epoch)>,
    new_acks: Vec<(Offset, u64)>,
    leaders: BTreeMap<Epoch, NodeId>,
    delivered: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let faults = Faults {
            loss_pm: [0, 10_000, 50_000, 150_000][rng.below(4) as usize],
            delay_max_ms: [10, 50, 200][rng.below(3) as usize],
            crash_pm: [0, 500, 2_000][rng.below(3) as usize],
            cut_pm: [0, 1_000, 5_000][rng.below(3) as usize],
            heal_pm: [2_000, 5_000, 20_000][rng.below(3) as usize],
            unclean: false,
            min_isr: 1 + rng.below(2) as usize,
        };
        let config = ReplicaConfig {
            lag_time_max_ms: 300 + rng.below(700),
            alter_retry_ms: 200,
        };
        let state = PartitionState::new(NODES.to_vec(), |_| true).expect("all live");
        let nodes = NODES
            .iter()
            .map(|&id| {
                let node = Node {
                    up: true,
                    log: Vec::new(),
                    replica: Some(Replica::recover(id, config, 0, 0, EpochCache::new(), 0)),
                    fetch_sent_ms: None,
                    next_heartbeat_ms: 0,
                    restart_at: 0,
                };
                (id, node)
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            faults,
            config,
            nodes,
            state,
            heard_ms: NODES.iter().map(|&n| (n, 0)).collect(),
            fenced: BTreeSet::new(),
            next_metadata_ms: 0,
            net: Vec::new(),
            seq: 0,
            cut: BTreeSet::new(),
            next_id: 1,
            pending: Vec::new(),
            acked: BTreeMap::new(),
            acked_count: 0,
            committed: BTreeMap::new(),
            verified_to: NODES.iter().map(|&n| (n, 0)).collect(),
            acks_checked_for: None,
            new_acks: Vec::new(),
            leaders: BTreeMap::new(),
            delivered: 0,
        };
        sim.broadcast_metadata();
        sim
    }

    fn fail(&self, what: String) -> ! {
        let mut view = String::new();
        for id in NODES {
            let n = &self.nodes[&id];
            match n.replica.as_ref().filter(|_| n.up) {
                Some(r) => view.push_str(&format!(
                    "\n  node {id}: leader={:?} epoch={} hw={} end={} epochs={:?}",
                    r.leader(),
                    r.leader_epoch(),
                    r.high_watermark(),
                    r.log_end(),
                    r.epochs().entries()
                )),
                None => view.push_str(&format!("\n  node {id}: down")),
            }
        }
        panic!(
            "seed {}: at {} ms: {what}\n  controller: {:?} fenced={:?}\n  committed to {}{view}",
            self.seed,
            self.now,
            self.state,
            self.fenced,
            self.committed.len()
        );
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let link = (from.min(to), from.max(to));
        if self.cut.contains(&link) || self.rng.chance(self.faults.loss_pm) {
            return;
        }
        let at = self.now + 1 + self.rng.below(self.faults.delay_max_ms);
        self.seq += 1;
        self.net.push(Envelope {
            at,
            seq: self.seq,
            from,
            to,
            msg,
        });
    }

    fn broadcast_metadata(&mut self) {
        for n in NODES {
            let s = self.state.clone();
            self.send(CONTROLLER, n, Msg::Metadata(s));
        }
        self.next_metadata_ms = self.now + METADATA_REPEAT_MS;
    }

    fn step(&mut self, faults_on: bool, produce: bool) {
        self.now += STEP_MS;
        if faults_on {
            self.inject_faults();
        }
        self.restart_due();
        self.controller_tick();
        for id in NODES {
            self.node_tick(id);
        }
        if produce {
            self.produce();
            self.check();
        }
        self.deliver();
        self.settle_acks();
        self.check();
    }

    fn inject_faults(&mut self) {
        for id in NODES {
            if self.nodes[&id].up && self.rng.chance(self.faults.crash_pm) {
                let down_ms = 50 + self.rng.below(2_000);
                let node = self.nodes.get_mut(&id).expect("node");
                node.up = false;
                node.replica = None;
                node.fetch_sent_ms = None;
                node.restart_at = self.now + down_ms;
            }
        }
        if self.rng.chance(self.faults.cut_pm) {
            let all = [CONTROLLER, 1, 2, 3];
            let a = all[self.rng.below(4) as usize];
            let b = all[self.rng.below(4) as usize];
            if a != b {
                self.cut.insert((a.min(b), a.max(b)));
            }
        }
        if !self.cut.is_empty() && self.rng.chance(self.faults.heal_pm) {
            let i = self.rng.below(self.cut.len() as u64) as usize;
            let link = *self.cut.iter().nth(i).expect("link");
            self.cut.remove(&link);
        }
    }

    fn restart_due(&mut self) {
        for id in NODES {
            let node = self.nodes.get_mut(&id).expect("node");
            if node.up || node.restart_at > self.now {
                continue;
            }
            // The log survives; the epochs are rebuilt from its records;
            // the high watermark checkpoint may lag (here: lost).
            let mut epochs = EpochCache::new();
            for (offset, r) in node.log.iter().enumerate() {
                epochs.assign(r.epoch, offset as Offset);
            }
            let end = node.log.len() as Offset;
            node.replica = Some(Replica::recover(id, self.config, 0, end, epochs, 0));
            node.up = true;
            node.next_heartbeat_ms = self.now;
        }
    }

    fn controller_tick(&mut self) {
        let mut changed = false;
        for id in NODES {
            let silent = self.now.saturating_sub(self.heard_ms[&id]) > SESSION_TIMEOUT_MS;
            if silent && !self.fenced.contains(&id) {
                self.fenced.insert(id);
                let fenced = self.fenced.clone();
                changed |= self
                    .state
                    .on_fenced(id, |n| !fenced.contains(&n), self.faults.unclean);
            }
        }
        if changed || self.now >= self.next_metadata_ms {
            self.broadcast_metadata();
        }
    }

    fn node_tick(&mut self, id: NodeId) {
        if !self.nodes[&id].up {
            return;
        }
        if self.now >= self.nodes[&id].next_heartbeat_ms {
            self.nodes.get_mut(&id).expect("node").next_heartbeat_ms = self.now + HEARTBEAT_MS;
            self.send(id, CONTROLLER, Msg::Heartbeat);
        }
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("node");
        let replica = node.replica.as_mut().expect("an up node has a replica");
        if let Some(change) = replica.tick(now) {
            self.send(id, CONTROLLER, Msg::Alter(change));
        }
        let node = self.nodes.get_mut(&id).expect("node");
        let replica = node.replica.as_ref().expect("replica");
        let idle = node
            .fetch_sent_ms
            .is_none_or(|sent| now.saturating_sub(sent) > FETCH_TIMEOUT_MS);
        if idle {
            if let Some((leader, req)) = replica.next_fetch() {
                node.fetch_sent_ms = Some(now);
                self.send(id, leader, Msg::Fetch(req));
            }
        }
    }

    fn produce(&mut self) {
        if !self.rng.chance(300_000) {
            return;
        }
        // The client writes to a node that believes it leads.
        let leaders: Vec<NodeId> = NODES
            .iter()
            .copied()
            .filter(|id| {
                let n = &self.nodes[id];
                n.up && n.replica.as_ref().is_some_and(Replica::is_leader)
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let id = leaders[self.rng.below(leaders.len() as u64) as usize];
        let count = 1 + self.rng.below(4) as i64;
        let min_isr = self.faults.min_isr;
        let node = self.nodes.get_mut(&id).expect("node");
        let replica = node.replica.as_mut().expect("replica");
        if replica.isr().is_some_and(|isr| isr.len() < min_isr) {
            return; // NOT_ENOUGH_REPLICAS
        }
        let (base, epoch) = replica.append(count).expect("a leader appends");
        assert_eq!(base, node.log.len() as Offset, "seed {}", self.seed);
        let ids: Vec<u64> = (0..count as u64).map(|i| self.next_id + i).collect();
        self.next_id += count as u64;
        node.log.extend(ids.iter().map(|&id| Rec { epoch, id }));
        self.pending.push(Pending {
            node: id,
            epoch,
            base,
            ids,
        });
    }

    fn deliver(&mut self) {
        let mut due: Vec<Envelope> = Vec::new();
        let mut later = Vec::with_capacity(self.net.len());
        for e in self.net.drain(..) {
            if e.at <= self.now {
                due.push(e);
            } else {
                later.push(e);
            }
        }
        self.net = later;
        // Messages due together arrive in any order.
        due.sort_by_key(|e| e.seq);
        for i in (1..due.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        for e in due {
            self.delivered += 1;
            self.receive(e);
            // A leader may lose its epoch in the next message, after its
            // high watermark went out: commits are taken as they happen.
            self.check();
        }
    }

    fn receive(&mut self, e: Envelope) {
        let now = self.now;
        let trace_from: Option<u64> = std::env::var("SIM_TRACE").ok().and_then(|v| v.parse().ok());
        if trace_from.is_some_and(|from| now >= from) {
            eprintln!("{now} {} -> {}: {:?}", e.from, e.to, e.msg);
        }
        if e.to == CONTROLLER {
            match e.msg {
                Msg::Heartbeat => {
                    self.heard_ms.insert(e.from, now);
                    if self.fenced.remove(&e.from)
                        && self.state.on_unfenced(e.from, self.faults.unclean)
                    {
                        self.broadcast_metadata();
                    }
                }
                Msg::Alter(change) => {
                    let fenced = self.fenced.clone();
                    let accepted = self
                        .state
                        .alter_isr(
                            e.from,
                            change.leader_epoch,
                            change.partition_epoch,
                            &change.isr,
                            |n| !fenced.contains(&n),
                        )
                        .is_ok();
                    self.send(CONTROLLER, e.from, Msg::AlterReply { change, accepted });
                    if accepted {
                        self.broadcast_metadata();
                    }
                }
                _ => {}
            }
            return;
        }
        let node = self.nodes.get_mut(&e.to).expect("node");
        if !node.up {
            return;
        }
        let replica = node.replica.as_mut().expect("replica");
        match e.msg {
            Msg::Metadata(state) => replica.apply(&state, now),
            Msg::AlterReply { change, accepted } => {
                if accepted {
                    replica.on_alter_accepted(&change);
                } else {
                    replica.on_alter_refused(&change);
                }
            }
            Msg::Fetch(req) => {
                let asked_epoch = req.leader_epoch;
                let (answer, alter) = replica.on_fetch(req, now);
                let records = match answer {
                    FetchAnswer::Records { from, to, .. } => {
                        let to = to.min(from + FETCH_RECORDS_MAX as Offset);
                        node.log[from as usize..to as usize].to_vec()
                    }
                    _ => Vec::new(),
                };
                self.send(
                    e.to,
                    e.from,
                    Msg::FetchReply {
                        asked_epoch,
                        answer,
                        records,
                    },
                );
                if let Some(change) = alter {
                    self.send(e.to, CONTROLLER, Msg::Alter(change));
                }
            }
            Msg::FetchReply {
                asked_epoch,
                answer,
                records,
            } => {
                node.fetch_sent_ms = None;
                if replica.is_leader()
                    || replica.leader_epoch() != asked_epoch
                    || replica.leader() != Some(e.from)
                {
                    return;
                }
                match answer {
                    FetchAnswer::Records {
                        from,
                        high_watermark,
                        ..
                    } => {
                        if from != replica.log_end() {
                            return; // a reply to an earlier fetch
                        }
                        let mut i = 0;
                        while i < records.len() {
                            let epoch = records[i].epoch;
                            let run = records[i..].iter().take_while(|r| r.epoch == epoch).count();
                            node.log.extend_from_slice(&records[i..i + run]);
                            replica.follower_appended(epoch, run as i64);
                            i += run;
                        }
                        replica.follower_high_watermark(high_watermark);
                    }
                    FetchAnswer::Diverging {
                        epoch, end_offset, ..
                    } => {
                        let hw = replica.high_watermark();
                        if let Some(to) = replica.truncation_for(epoch, end_offset) {
                            if to < hw {
                                let id = e.to;
                                self.fail(format!(
                                    "node {id} truncates to {to}, below its high watermark {hw}"
                                ));
                            }
                            node.log.truncate(to as usize);
                        }
                    }
                    FetchAnswer::Error(FetchError::OffsetOutOfRange { log_start }) => {
                        replica.reset_to(log_start);
                        node.log.clear();
                    }
                    FetchAnswer::Error(_) => {}
                }
            }
            Msg::Heartbeat | Msg::Alter(_) => {}
        }
    }

    /// A produce is answered once the leader's high watermark covers it,
    /// and fails if the leader lost its epoch meanwhile.
    fn settle_acks(&mut self) {
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let node = &self.nodes[&p.node];
            let Some(replica) = node.replica.as_ref().filter(|_| node.up) else {
                continue; // the leader crashed: the client sees an error
            };
            if !replica.is_leader() || replica.leader_epoch() != p.epoch {
                continue; // NOT_LEADER_OR_FOLLOWER
            }
            let last = p.base + p.ids.len() as Offset - 1;
            if replica.high_watermark() > last {
                for (i, id) in p.ids.iter().enumerate() {
                    self.acked.insert(p.base + i as Offset, *id);
                    self.new_acks.push((p.base + i as Offset, *id));
                }
                self.acked_count += p.ids.len() as u64;
            } else {
                still.push(p);
            }
        }
        self.pending = still;
    }

    fn check(&mut self) {
        for id in NODES {
            let node = &self.nodes[&id];
            let Some(r) = node.replica.as_ref().filter(|_| node.up) else {
                continue;
            };
            if r.log_end() != node.log.len() as Offset {
                self.fail(format!(
                    "node {id}: replica end {} != log {}",
                    r.log_end(),
                    node.log.len()
                ));
            }
            if r.is_leader() {
                match self.leaders.insert(r.leader_epoch(), id) {
                    Some(other) if other != id => self.fail(format!(
                        "nodes {other} and {id} both led epoch {}",
                        r.leader_epoch()
                    )),
                    _ => {}
                }
            }
            // Records below a high watermark are committed: the same on
            // every replica, for ever.
            let from = self.verified_to[&id].min(r.high_watermark());
            for o in from..r.high_watermark() {
                let rec = node.log[o as usize];
                match self.committed.get(&o) {
                    Some(c) if *c != rec => self.fail(format!(
                        "node {id} holds {rec:?} at {o} below its high watermark {}, committed {c:?}",
                        r.high_watermark()
                    )),
                    Some(_) => {}
                    None if r.is_leader() => {
                        self.committed.insert(o, rec);
                    }
                    None => self.fail(format!(
                        "follower {id}'s high watermark {} passes what any leader committed",
                        r.high_watermark()
                    )),
                }
            }
            let hw = r.high_watermark();
            self.verified_to.insert(id, hw);
        }
        // The controller's leader, once it acts as leader, holds every
        // acknowledged record.
        if let Some(l) = self.state.leader {
            let node = &self.nodes[&l];
            let leading = node.up
                && node
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.is_leader() && r.leader_epoch() == self.state.leader_epoch);
            if leading {
                let current = (l, self.state.leader_epoch);
                let to_check: Vec<(Offset, u64)> = if self.acks_checked_for == Some(current) {
                    std::mem::take(&mut self.new_acks)
                } else {
                    self.new_acks.clear();
                    self.acks_checked_for = Some(current);
                    self.acked.iter().map(|(&o, &id)| (o, id)).collect()
                };
                for (o, id) in to_check {
                    if node.log.get(o as usize).map(|r| r.id) != Some(id) {
                        self.fail(format!(
                            "acknowledged record {id} at offset {o} missing from leader {l} (epoch {})",
                            self.state.leader_epoch
                        ));
                    }
                }
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
        for id in NODES {
            let node = self.nodes.get_mut(&id).expect("node");
            if !node.up {
                node.restart_at = self.now;
            }
        }
        self.faults.loss_pm = 0;
        self.faults.delay_max_ms = self.faults.delay_max_ms.min(50);
    }

    fn check_converged(&self) {
        let Some(l) = self.state.leader else {
            self.fail("no leader after healing".into());
        };
        let leader = &self.nodes[&l];
        let lr = leader.replica.as_ref().expect("leader up");
        if !lr.is_leader() {
            self.fail(format!("node {l} does not act as leader after healing"));
        }
        for id in NODES {
            let node = &self.nodes[&id];
            let r = node.replica.as_ref().expect("up after healing");
            if node.log != leader.log {
                self.fail(format!(
                    "node {id} log ({} records) differs from leader {l}'s ({})",
                    node.log.len(),
                    leader.log.len()
                ));
            }
            if r.high_watermark() != r.log_end() {
                self.fail(format!(
                    "node {id}: high watermark {} below log end {} after healing",
                    r.high_watermark(),
                    r.log_end()
                ));
            }
        }
        for (&o, &id) in &self.acked {
            if leader.log.get(o as usize).map(|r| r.id) != Some(id) {
                self.fail(format!("acknowledged record {id} at {o} lost"));
            }
        }
    }
}

fn run(seed: u64) -> (u64, u64, Epoch) {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step(true, true);
    }
    sim.heal();
    for _ in 0..QUIET_STEPS {
        sim.step(false, false);
    }
    sim.check_converged();
    (sim.acked_count, sim.delivered, sim.state.leader_epoch)
}

#[test]
fn no_acknowledged_record_is_lost_across_seeds() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let (acked, delivered, epochs) = run(seed);
        println!("seed {seed}: {acked} records acknowledged, {delivered} messages, {epochs} leader epochs");
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let mut acked_total = 0;
    let mut elections = 0;
    for seed in 0..seeds {
        let (acked, _, epochs) = run(seed);
        acked_total += acked;
        elections += epochs as u64;
    }
    println!("{seeds} seeds: {acked_total} records acknowledged, {elections} leader changes");
    // The faults must not have stopped all progress (a run that acknowledges
    // nothing checks nothing).
    assert!(
        acked_total > seeds * 100,
        "{acked_total} acknowledged over {seeds} seeds"
    );
    assert!(
        elections > seeds / 4,
        "only {elections} leader changes: faults too rare to test failover"
    );
}

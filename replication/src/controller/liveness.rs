//! Broker liveness, as KRaft's active controller tracks it: heartbeats are
//! kept in the leader's memory, not in the log, and only the decisions
//! they lead to (fence a node whose session expired, unfence one that
//! heartbeats again) are proposed. A controller that becomes leader gives
//! every node a full session before fencing it, since it has not been
//! receiving their heartbeats.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::AsyncRuntime;

use super::{Command, Controller, GlommioRuntime, SubmitError};
use crate::NodeId;

/// Heartbeat times seen by this controller while it leads.
#[derive(Default)]
pub struct Liveness {
    /// When each node was last heard from, and whether it was heard while
    /// this controller led (a fresh leader starts every clock without
    /// having heard anyone).
    last_seen: RefCell<BTreeMap<NodeId, (Instant, bool)>>,
    /// When each fenced node was first seen fenced: only a heartbeat after
    /// that unfences it (a node that fenced itself to stop has sent its
    /// last heartbeat just before).
    fenced_since: RefCell<BTreeMap<NodeId, Instant>>,
    /// Whether this controller led at the last check.
    leading: Cell<bool>,
}

impl Liveness {
    /// Records a heartbeat from `node`.
    pub fn heartbeat(&self, node: NodeId) {
        self.last_seen
            .borrow_mut()
            .insert(node, (Instant::now(), true));
    }

    /// What to propose now: fence nodes silent for `session`, unfence
    /// fenced nodes heard from within it. Nothing unless `leading`.
    fn decide(
        &self,
        leading: bool,
        session: Duration,
        nodes: impl Iterator<Item = (NodeId, bool)>,
    ) -> Vec<Command> {
        let was_leading = self.leading.replace(leading);
        if !leading {
            return Vec::new();
        }
        let now = Instant::now();
        let mut seen = self.last_seen.borrow_mut();
        if !was_leading {
            // A fresh leader has heard nobody yet: everyone gets a session.
            for t in seen.values_mut() {
                *t = (now, false);
            }
        }
        let mut out = Vec::new();
        let mut fenced_since = self.fenced_since.borrow_mut();
        for (node, fenced) in nodes {
            let (last, heard) = *seen.entry(node).or_insert((now, false));
            let silent = now.saturating_duration_since(last) > session;
            if !fenced {
                fenced_since.remove(&node);
                if silent {
                    out.push(Command::FenceNode { node_id: node });
                }
                continue;
            }
            let since = *fenced_since.entry(node).or_insert(now);
            if !silent && heard && last > since {
                out.push(Command::UnfenceNode { node_id: node });
            }
        }
        out
    }
}

/// Runs on the controller's executor until it stops: every `tick`, the
/// leader fences silent nodes and unfences returning ones.
pub async fn run(controller: Controller, session: Duration, tick: Duration) {
    // A leader cut off from the quorum cannot commit anything: the same
    // proposal is repeated at most once a second, not every tick.
    let mut proposed: BTreeMap<String, Instant> = BTreeMap::new();
    let repeat_after = Duration::from_secs(1);
    loop {
        GlommioRuntime::sleep(tick).await;
        let leading = controller.leader() == Some(controller.id);
        let metadata = controller.applied().metadata;
        let nodes: Vec<(NodeId, bool)> = metadata
            .nodes
            .iter()
            .map(|(&id, record)| (id, record.fenced))
            .collect();
        let commands = controller
            .liveness
            .decide(leading, session, nodes.into_iter());
        let now = Instant::now();
        proposed.retain(|_, at| now.duration_since(*at) < repeat_after);
        for command in commands {
            let key = command.to_string();
            if proposed.contains_key(&key) {
                continue;
            }
            proposed.insert(key, now);
            tracing::info!(controller = controller.id, "liveness: {command}");
            // Bounded: without a quorum nothing commits, and the loop must
            // go on noticing that it no longer leads.
            let submitted = GlommioRuntime::timeout(session, controller.submit(command)).await;
            if let Ok(Err(SubmitError::Stopped(_))) = submitted {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_silent_nodes_and_unfences_returning_ones() {
        let live = Liveness::default();
        let session = Duration::from_millis(30);
        // Not leading: nothing, whatever the times.
        assert!(live
            .decide(false, session, [(1, false)].into_iter())
            .is_empty());
        // A new leader gives everyone a session.
        assert!(live
            .decide(true, session, [(1, false), (2, false)].into_iter())
            .is_empty());
        std::thread::sleep(Duration::from_millis(40));
        live.heartbeat(1);
        let out = live.decide(true, session, [(1, false), (2, false)].into_iter());
        assert_eq!(out, vec![Command::FenceNode { node_id: 2 }]);
        // Seen fenced now: only a later heartbeat unfences it.
        live.heartbeat(1);
        assert!(live
            .decide(true, session, [(1, false), (2, true)].into_iter())
            .is_empty());
        std::thread::sleep(Duration::from_millis(2));
        live.heartbeat(2);
        let out = live.decide(true, session, [(1, false), (2, true)].into_iter());
        assert_eq!(out, vec![Command::UnfenceNode { node_id: 2 }]);
        // A node that fenced itself after its last heartbeat stays fenced.
        live.heartbeat(1);
        let out = live.decide(true, session, [(1, true), (2, false)].into_iter());
        assert!(out.is_empty(), "{out:?}");
    }
}

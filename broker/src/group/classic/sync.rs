//! The classic protocol after the join phase: SyncGroup (the leader's
//! assignment handed to every member), heartbeats, LeaveGroup, session and
//! rebalance timeouts, and whether an offset commit may be accepted.

use std::collections::HashMap;

use bytes::Bytes;

use super::{join_error, sync_error, Group, GroupState};
use crate::group::errors::*;
use crate::group::{Action, RequestId, SyncRequest, SyncResponse};

impl Group {
    pub fn sync(&mut self, req: SyncRequest, now: i64) -> Vec<Action> {
        let r = req.request;
        if let Err(e) = self.check_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return vec![Action::Sync(r, sync_error(e))];
        }
        let type_ok = req.protocol_type.is_none() || req.protocol_type == self.protocol_type;
        let name_ok = req.protocol_name.is_none() || req.protocol_name == self.protocol_name;
        if !type_ok || !name_ok {
            return vec![Action::Sync(r, sync_error(INCONSISTENT_GROUP_PROTOCOL))];
        }
        match self.state {
            GroupState::PreparingRebalance => {
                vec![Action::Sync(r, sync_error(REBALANCE_IN_PROGRESS))]
            }
            GroupState::Stable => {
                let assignment = self
                    .members
                    .get(&req.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.last_heartbeat_ms = now;
                }
                vec![Action::Sync(r, self.sync_ok(assignment))]
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.last_heartbeat_ms = now;
                    if let Some(previous) = m.awaiting_sync.replace(r) {
                        // Answered by the newer request; the old one is moot.
                        return vec![Action::Sync(previous, sync_error(REBALANCE_IN_PROGRESS))];
                    }
                }
                if self.leader.as_deref() != Some(req.member_id.as_str()) {
                    return Vec::new();
                }
                let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                let mut actions = Vec::new();
                let reply = |assignment: Bytes| SyncResponse {
                    error_code: NONE,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment,
                };
                let replies: Vec<(Option<RequestId>, String, Bytes)> = self
                    .members
                    .values()
                    .map(|m| {
                        (
                            m.awaiting_sync,
                            m.member_id.clone(),
                            given.get(&m.member_id).cloned().unwrap_or_default(),
                        )
                    })
                    .collect();
                for (waiting, id, assignment) in replies {
                    if let Some(w) = waiting {
                        actions.push(Action::Sync(w, reply(assignment.clone())));
                    }
                    if let Some(m) = self.members.get_mut(&id) {
                        m.awaiting_sync = None;
                        m.assignment = assignment;
                    }
                }
                self.state = GroupState::Stable;
                actions.push(Action::Persist);
                actions
            }
            GroupState::Empty => vec![Action::Sync(r, sync_error(UNKNOWN_MEMBER_ID))],
            GroupState::Dead => vec![Action::Sync(r, sync_error(COORDINATOR_NOT_AVAILABLE))],
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error_code: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        if self.state == GroupState::Empty {
            return UNKNOWN_MEMBER_ID;
        }
        if let Err(e) = self.check_member(member_id, instance, generation) {
            return e;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match self.state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    /// LeaveGroup for each (member id, instance id); per-member error codes.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: i64,
    ) -> (Vec<i16>, Vec<Action>) {
        let mut codes = Vec::with_capacity(leaving.len());
        let mut actions = Vec::new();
        let mut changed = false;
        for (member_id, instance) in leaving {
            if self.state == GroupState::Dead {
                codes.push(COORDINATOR_NOT_AVAILABLE);
                continue;
            }
            // A static member may leave by instance id alone.
            let id = match (member_id.is_empty(), instance) {
                (true, Some(i)) => self.static_members.get(i).cloned().unwrap_or_default(),
                _ => member_id.clone(),
            };
            if self.pending_members.remove(&id).is_some() {
                codes.push(NONE);
                continue;
            }
            if !self.members.contains_key(&id) {
                codes.push(UNKNOWN_MEMBER_ID);
                continue;
            }
            if let Some(e) = self.fenced(&id, instance.as_deref()) {
                codes.push(e);
                continue;
            }
            if let Some(mut m) = self.remove_member(&id) {
                if let Some(r) = m.awaiting_join.take() {
                    actions.push(Action::Join(r, join_error(UNKNOWN_MEMBER_ID, &id)));
                }
                if let Some(r) = m.awaiting_sync.take() {
                    actions.push(Action::Sync(r, sync_error(UNKNOWN_MEMBER_ID)));
                }
            }
            codes.push(NONE);
            changed = true;
        }
        if changed {
            actions.extend(self.after_departure(now));
        }
        (codes, actions)
    }

    fn after_departure(&mut self, now: i64) -> Vec<Action> {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                let mut actions = self.prepare_rebalance(now);
                actions.extend(self.maybe_complete_join(now));
                actions
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => Vec::new(),
        }
    }

    /// Expires silent members and pending member ids, and ends rebalances
    /// whose time is up.
    pub fn tick(&mut self, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| self.expiry(m) <= now)
            .map(|m| m.member_id.clone())
            .collect();
        let min_timeout = i64::from(self.config.session_timeout_ms_min);
        self.pending_members
            .retain(|_, since| *since + min_timeout > now);
        for id in &expired {
            if let Some(mut m) = self.remove_member(id) {
                if let Some(r) = m.awaiting_join.take() {
                    actions.push(Action::Join(r, join_error(UNKNOWN_MEMBER_ID, id)));
                }
            }
        }
        if !expired.is_empty() {
            actions.extend(self.after_departure(now));
        }
        if self.state == GroupState::PreparingRebalance {
            if self.rebalance_deadline_ms.is_some_and(|d| d <= now) {
                actions.extend(self.complete_join(now));
            } else {
                actions.extend(self.maybe_complete_join(now));
            }
        }
        actions
    }

    /// Whether an OffsetCommit from this member may be accepted: NONE or
    /// the error Kafka answers. Generation -1 is a commit from outside group
    /// management (the admin client, `assign` consumers): accepted only
    /// while the group is empty. Members commit with their generation even
    /// while the group prepares a rebalance (eager clients commit in their
    /// revoke callback before rejoining); only the CompletingRebalance gap,
    /// when assignments are being handed out, refuses them.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if generation < 0 && self.state == GroupState::Empty {
            return NONE;
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            if let Err(e) = self.check_member(member_id, instance, generation) {
                return e;
            }
        } else {
            return UNKNOWN_MEMBER_ID;
        }
        match self.state {
            GroupState::CompletingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }
}

//! The classic group protocol's state machine, following Kafka's group
//! coordinator: Empty → PreparingRebalance → CompletingRebalance → Stable,
//! generations, member ids (MEMBER_ID_REQUIRED on a first v4+ join), static
//! membership (`group.instance.id`), session and rebalance timeouts, the
//! delayed first rebalance. The assignment is computed by the leader client;
//! the coordinator stores it and hands it out. No I/O: the caller delivers
//! the actions and calls `tick` at `next_deadline`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::errors::*;
use super::records::{GroupValue, MemberValue};
use super::{Action, GroupConfig, JoinMember, JoinRequest, JoinResponse, RequestId, SyncResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    last_heartbeat_ms: i64,
    /// Joined but never completed a rebalance.
    is_new: bool,
}

impl Member {
    /// The member's metadata for `protocol` (its subscription).
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id of static members.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when.
    pending_members: BTreeMap<String, i64>,
    /// When the current rebalance gives up on members that did not rejoin.
    rebalance_deadline_ms: Option<i64>,
    /// While the first rebalance of an empty group waits for more members.
    initial_delay_until_ms: Option<i64>,
    config: GroupConfig,
}

impl Group {
    pub fn new(group_id: impl Into<String>, config: GroupConfig) -> Group {
        Group {
            group_id: group_id.into(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: None,
            initial_delay_until_ms: None,
            config,
        }
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used.
    pub fn has_pending_members(&self) -> bool {
        !self.pending_members.is_empty()
    }

    /// The group as `__consumer_offsets` stores it.
    pub fn to_value(&self, now: i64) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: now,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// A group loaded from `__consumer_offsets`: Stable with its members
    /// (who must heartbeat within their session timeout from `now`, as
    /// after a coordinator change in Kafka), or Empty.
    pub fn restore(
        group_id: impl Into<String>,
        config: GroupConfig,
        v: GroupValue,
        now: i64,
    ) -> Group {
        let mut g = Group::new(group_id, config);
        g.generation_id = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        let protocol = v.protocol.clone().unwrap_or_default();
        for m in v.members {
            if let Some(instance) = &m.group_instance_id {
                g.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms.max(m.session_timeout_ms),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                last_heartbeat_ms: now,
                is_new: false,
            };
            g.members.insert(m.member_id, member);
        }
        if g.members.is_empty() {
            g.state = GroupState::Empty;
        } else {
            g.state = GroupState::Stable;
            g.protocol_name = v.protocol;
            g.leader = v
                .leader
                .filter(|l| g.members.contains_key(l))
                .or_else(|| g.members.keys().next().cloned());
        }
        g
    }

    /// Marks the group deleted: every later request gets
    /// COORDINATOR_NOT_AVAILABLE, as Kafka answers for a dead group.
    pub fn kill(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for m in self.members.values_mut() {
            if let Some(r) = m.awaiting_join.take() {
                actions.push(Action::Join(r, join_error(COORDINATOR_NOT_AVAILABLE, "")));
            }
            if let Some(r) = m.awaiting_sync.take() {
                actions.push(Action::Sync(r, sync_error(COORDINATOR_NOT_AVAILABLE)));
            }
        }
        self.state = GroupState::Dead;
        actions
    }

    /// The earliest time `tick` has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let mut next: Option<i64> = self.rebalance_deadline_ms;
        let mut take = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));
        // The first rebalance of a new group completes when its delay ends.
        if let Some(t) = self.initial_delay_until_ms {
            take(t);
        }
        for m in self.members.values() {
            take(self.expiry(m));
        }
        for (id, since) in &self.pending_members {
            let timeout = self
                .members
                .get(id)
                .map_or(self.config.session_timeout_ms_min, |m| m.session_timeout_ms);
            take(since + i64::from(timeout));
        }
        next
    }

    fn expiry(&self, m: &Member) -> i64 {
        if m.awaiting_join.is_some() {
            if m.is_new {
                m.last_heartbeat_ms + self.config.new_member_join_timeout_ms
            } else {
                i64::MAX
            }
        } else if m.awaiting_sync.is_some() {
            i64::MAX
        } else {
            m.last_heartbeat_ms + i64::from(m.session_timeout_ms)
        }
    }

    pub fn join(&mut self, req: JoinRequest, now: i64) -> Vec<Action> {
        let r = req.request;
        if self.state == GroupState::Dead {
            return vec![Action::Join(
                r,
                join_error(COORDINATOR_NOT_AVAILABLE, &req.member_id),
            )];
        }
        let timeout = req.session_timeout_ms;
        if timeout < self.config.session_timeout_ms_min
            || timeout > self.config.session_timeout_ms_max
        {
            return vec![Action::Join(
                r,
                join_error(INVALID_SESSION_TIMEOUT, &req.member_id),
            )];
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return vec![Action::Join(
                r,
                join_error(INCONSISTENT_GROUP_PROTOCOL, &req.member_id),
            )];
        }
        if req.member_id.is_empty() {
            self.join_new_member(req, now)
        } else {
            self.join_known_member(req, now)
        }
    }

    /// A member may join if its protocol type matches and the group keeps at
    /// least one protocol every member supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    fn join_new_member(&mut self, req: JoinRequest, now: i64) -> Vec<Action> {
        if self.members.len() >= self.config.members_max {
            return vec![Action::Join(
                req.request,
                join_error(GROUP_MAX_SIZE_REACHED, ""),
            )];
        }
        let member_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(old, member_id, req, now);
            }
            return self.add_member_and_rebalance(member_id, req, now);
        }
        if req.require_known_member_id {
            self.pending_members.insert(member_id.clone(), now);
            let mut response = join_error(MEMBER_ID_REQUIRED, &member_id);
            response.member_id = member_id;
            return vec![Action::Join(req.request, response)];
        }
        self.add_member_and_rebalance(member_id, req, now)
    }

    fn join_known_member(&mut self, req: JoinRequest, now: i64) -> Vec<Action> {
        let id = req.member_id.clone();
        if self.pending_members.remove(&id).is_some() {
            return self.add_member_and_rebalance(id, req, now);
        }
        if let Some(error) = self.fenced(&id, req.group_instance_id.as_deref()) {
            return vec![Action::Join(req.request, join_error(error, &id))];
        }
        let Some(member) = self.members.get(&id) else {
            return vec![Action::Join(
                req.request,
                join_error(UNKNOWN_MEMBER_ID, &id),
            )];
        };
        let same = member.same_protocols(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(req, now),
            GroupState::CompletingRebalance if same => {
                // A retried join of this generation: the same answer again.
                let response = self.join_response(&id);
                vec![Action::Join(req.request, response)]
            }
            GroupState::Stable if same && !is_leader => {
                let response = self.join_response(&id);
                vec![Action::Join(req.request, response)]
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(req, now)
            }
            GroupState::Empty | GroupState::Dead => {
                vec![Action::Join(
                    req.request,
                    join_error(UNKNOWN_MEMBER_ID, &id),
                )]
            }
        }
    }

    /// A static member came back with a new member id: it takes the old
    /// one's place and assignment; a stable group does not rebalance.
    fn replace_static_member(
        &mut self,
        old: String,
        new: String,
        req: JoinRequest,
        now: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(mut member) = self.members.remove(&old) else {
            return self.add_member_and_rebalance(new, req, now);
        };
        // The old incarnation's waiting requests are fenced.
        if let Some(r) = member.awaiting_join.take() {
            actions.push(Action::Join(r, join_error(FENCED_INSTANCE_ID, &old)));
        }
        if let Some(r) = member.awaiting_sync.take() {
            actions.push(Action::Sync(r, sync_error(FENCED_INSTANCE_ID)));
        }
        let changed = !member.same_protocols(&req.protocols);
        member.member_id = new.clone();
        member.last_heartbeat_ms = now;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        self.members.insert(new.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), new.clone());
        }
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new.clone());
        }
        match self.state {
            GroupState::Stable if !changed => {
                let mut response = self.join_response(&new);
                // Only the leader of this generation computes assignments.
                response.members.clear();
                actions.push(Action::Join(req.request, response));
                actions.push(Action::Persist);
            }
            _ => actions.extend(self.update_member_and_rebalance(req_with_id(req, &new), now)),
        }
        actions
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        req: JoinRequest,
        now: i64,
    ) -> Vec<Action> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(req.request),
            awaiting_sync: None,
            last_heartbeat_ms: now,
            is_new: true,
        };
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        self.members.insert(member_id, member);
        let mut actions = self.prepare_rebalance(now);
        actions.extend(self.maybe_complete_join(now));
        actions
    }

    fn update_member_and_rebalance(&mut self, req: JoinRequest, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(m) = self.members.get_mut(&req.member_id) {
            if let Some(previous) = m.awaiting_join.replace(req.request) {
                // A newer join supersedes the one still waiting.
                actions.push(Action::Join(
                    previous,
                    join_error(UNKNOWN_MEMBER_ID, &req.member_id),
                ));
            }
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.last_heartbeat_ms = now;
        }
        actions.extend(self.prepare_rebalance(now));
        actions.extend(self.maybe_complete_join(now));
        actions
    }

    fn prepare_rebalance(&mut self, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == GroupState::CompletingRebalance {
            // Assignments of the abandoned generation are void.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(r) = m.awaiting_sync.take() {
                    actions.push(Action::Sync(r, sync_error(REBALANCE_IN_PROGRESS)));
                }
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        match self.state {
            GroupState::Empty => {
                let delay = self
                    .config
                    .initial_rebalance_delay_ms
                    .min(rebalance_timeout);
                self.initial_delay_until_ms = Some(now + delay);
                self.rebalance_deadline_ms = Some(now + rebalance_timeout.max(delay));
            }
            GroupState::PreparingRebalance => {
                if let Some(until) = self.initial_delay_until_ms {
                    // More members arrive: keep waiting, within the timeout.
                    let cap = self.rebalance_deadline_ms.unwrap_or(now);
                    let extended = (now + self.config.initial_rebalance_delay_ms).min(cap);
                    self.initial_delay_until_ms = Some(until.max(extended));
                }
            }
            _ => self.rebalance_deadline_ms = Some(now + rebalance_timeout),
        }
        self.state = GroupState::PreparingRebalance;
        actions
    }

    /// Completes the join phase when every member has rejoined (and the
    /// first rebalance's delay is over).
    fn maybe_complete_join(&mut self, now: i64) -> Vec<Action> {
        if self.state != GroupState::PreparingRebalance {
            return Vec::new();
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some())
            && self.pending_members.is_empty();
        let delayed = self.initial_delay_until_ms.is_some_and(|t| now < t);
        if all_joined && !delayed {
            self.complete_join(now)
        } else {
            Vec::new()
        }
    }

    fn complete_join(&mut self, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        // Members that did not rejoin in time leave the group.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending_members.clear();
        self.rebalance_deadline_ms = None;
        self.initial_delay_until_ms = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            // Kafka keeps the protocol type of an empty group: it says what
            // kind of group owns the committed offsets.
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            actions.push(Action::Persist);
            return actions;
        }
        self.protocol_name = self.vote();
        self.state = GroupState::CompletingRebalance;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.is_new = false;
                m.last_heartbeat_ms = now;
                if let Some(r) = m.awaiting_join.take() {
                    actions.push(Action::Join(r, response));
                }
            }
        }
        actions
    }

    /// The protocol every member supports that most members prefer.
    fn vote(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: Vec<(usize, usize)> = vec![(0, 0); candidates.len()];
        for (i, v) in votes.iter_mut().enumerate() {
            v.1 = i;
        }
        for m in self.members.values() {
            if let Some(choice) = m
                .protocols
                .iter()
                .find_map(|(n, _)| candidates.iter().position(|c| *c == n))
            {
                votes[choice].0 += 1;
            }
        }
        // Most votes; ties go to the first member's preference order.
        votes
            .iter()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, i)| candidates[*i].clone())
    }

    fn join_response(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResponse {
            error_code: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(m)
    }

    /// FENCED_INSTANCE_ID when `instance` now belongs to another member id.
    fn fenced(&self, member_id: &str, instance: Option<&str>) -> Option<i16> {
        let owner = self.static_members.get(instance?)?;
        (owner != member_id).then_some(FENCED_INSTANCE_ID)
    }

    /// Checks membership and generation; `Ok` with the member id.
    fn check_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(COORDINATOR_NOT_AVAILABLE);
        }
        // Kafka checks fencing first: an old incarnation learns it was
        // replaced rather than that it is unknown.
        if let Some(e) = self.fenced(member_id, instance) {
            return Err(e);
        }
        if !self.members.contains_key(member_id) {
            return Err(UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation_id {
            return Err(ILLEGAL_GENERATION);
        }
        Ok(())
    }
}

fn req_with_id(mut req: JoinRequest, id: &str) -> JoinRequest {
    req.member_id = id.to_string();
    req
}

pub(crate) fn join_error(error_code: i16, member_id: &str) -> JoinResponse {
    JoinResponse {
        error_code,
        generation_id: -1,
        member_id: member_id.to_string(),
        ..JoinResponse::default()
    }
}

pub(crate) fn sync_error(error_code: i16) -> SyncResponse {
    SyncResponse {
        error_code,
        ..SyncResponse::default()
    }
}

mod sync;

#[cfg(test)]
mod tests;

//! Tests of the classic group state machine: whole rebalances driven event
//! by event, with time passed in.

use bytes::Bytes;

use super::*;
use crate::group::{errors, SyncRequest};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn group() -> Group {
    Group::new("g", GroupConfig::default())
}

fn join_req(request: RequestId, member_id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        request,
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}-{member_id}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn sync_req(
    request: RequestId,
    member_id: &str,
    generation_id: i32,
    assignments: &[(&str, &str)],
) -> SyncRequest {
    SyncRequest {
        request,
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation_id,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect(),
    }
}

fn joins(actions: &[Action]) -> Vec<(RequestId, JoinResponse)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Join(r, j) => Some((*r, j.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(actions: &[Action]) -> Vec<(RequestId, SyncResponse)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sync(r, s) => Some((*r, s.clone())),
            _ => None,
        })
        .collect()
}

/// A first member through MEMBER_ID_REQUIRED, the initial delay and sync.
fn stable_with_one(g: &mut Group, now: i64) -> String {
    let a = g.join(join_req(1, "", &["range"]), now);
    let [(1, required)] = &joins(&a)[..] else {
        panic!("{a:?}")
    };
    assert_eq!(required.error_code, errors::MEMBER_ID_REQUIRED);
    let id = required.member_id.clone();
    assert!(id.starts_with("client-"));
    let a = g.join(join_req(2, &id, &["range"]), now);
    assert!(a.is_empty(), "the first rebalance waits for more members");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    // The driver wakes when the delay ends, not at the rebalance timeout.
    assert_eq!(g.next_deadline(), Some(now + 3_000));
    let a = g.tick(now + 3_000);
    let [(2, joined)] = &joins(&a)[..] else {
        panic!("{a:?}")
    };
    assert_eq!((joined.error_code, joined.generation_id), (errors::NONE, 1));
    assert_eq!(joined.leader, id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    let a = g.sync(sync_req(3, &id, 1, &[(&id, "p0,p1")]), now + 3_000);
    let synced = syncs(&a);
    assert_eq!(synced[0].1.assignment, Bytes::from("p0,p1"));
    assert!(a.contains(&Action::Persist));
    assert_eq!(g.state, GroupState::Stable);
    id
}

#[test]
fn a_first_member_joins_syncs_and_heartbeats() {
    let mut g = group();
    let id = stable_with_one(&mut g, 0);
    assert_eq!(g.heartbeat(&id, None, 1, 5_000), errors::NONE);
    assert_eq!(g.heartbeat(&id, None, 0, 5_000), errors::ILLEGAL_GENERATION);
    assert_eq!(
        g.heartbeat("nobody", None, 1, 5_000),
        errors::UNKNOWN_MEMBER_ID
    );
    // A repeated sync in Stable returns the stored assignment.
    let a = g.sync(sync_req(9, &id, 1, &[]), 5_000);
    assert_eq!(syncs(&a)[0].1.assignment, Bytes::from("p0,p1"));
}

#[test]
fn a_second_member_triggers_a_rebalance_and_the_leader_assigns() {
    let mut g = group();
    let first = stable_with_one(&mut g, 0);
    let a = g.join(join_req(10, "", &["range"]), 4_000);
    let second = joins(&a)[0].1.member_id.clone();
    let a = g.join(join_req(11, &second, &["range"]), 4_000);
    assert!(a.is_empty());
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&first, None, 1, 4_100),
        errors::REBALANCE_IN_PROGRESS
    );
    // The first member rejoins: everyone is in, no initial delay now.
    let a = g.join(join_req(12, &first, &["range"]), 4_200);
    let js = joins(&a);
    assert_eq!(js.len(), 2);
    for (_, j) in &js {
        assert_eq!(j.generation_id, 2);
        assert_eq!(j.leader, first);
    }
    let leader_view = js.iter().find(|(r, _)| *r == 12).expect("leader answer");
    assert_eq!(
        leader_view.1.members.len(),
        2,
        "the leader sees every member"
    );
    let follower_view = js.iter().find(|(r, _)| *r == 11).expect("follower answer");
    assert!(follower_view.1.members.is_empty());
    // The follower's sync waits for the leader's.
    assert!(g.sync(sync_req(13, &second, 2, &[]), 4_300).is_empty());
    let a = g.sync(
        sync_req(14, &first, 2, &[(&first, "p0"), (&second, "p1")]),
        4_400,
    );
    let s = syncs(&a);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s.iter()
            .find(|(r, _)| *r == 13)
            .expect("follower")
            .1
            .assignment,
        Bytes::from("p1")
    );
    assert_eq!(
        s.iter()
            .find(|(r, _)| *r == 14)
            .expect("leader")
            .1
            .assignment,
        Bytes::from("p0")
    );
    assert_eq!(g.state, GroupState::Stable);
}

#[test]
fn a_silent_member_expires_and_the_rest_rebalance() {
    let mut g = group();
    let first = stable_with_one(&mut g, 0);
    let a = g.join(join_req(20, "", &["range"]), 4_000);
    let second = joins(&a)[0].1.member_id.clone();
    g.join(join_req(21, &second, &["range"]), 4_000);
    g.join(join_req(22, &first, &["range"]), 4_000);
    g.sync(
        sync_req(23, &first, 2, &[(&first, "a"), (&second, "b")]),
        4_000,
    );
    g.sync(sync_req(24, &second, 2, &[]), 4_000);
    // Only the first keeps heartbeating.
    for t in (5_000..=14_000).step_by(1_000) {
        assert_eq!(g.heartbeat(&first, None, 2, t), errors::NONE);
    }
    assert!(g.next_deadline().is_some_and(|d| d <= 14_000 + 1));
    g.tick(14_001);
    assert_eq!(g.members().count(), 1, "the silent member is gone");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&first, None, 2, 14_500),
        errors::REBALANCE_IN_PROGRESS
    );
    let a = g.join(join_req(25, &first, &["range"]), 15_000);
    assert_eq!(joins(&a)[0].1.generation_id, 3);
}

#[test]
fn members_that_miss_the_rebalance_deadline_are_dropped() {
    let mut g = group();
    let first = stable_with_one(&mut g, 0);
    let a = g.join(join_req(30, "", &["range"]), 4_000);
    let second = joins(&a)[0].1.member_id.clone();
    g.join(join_req(31, &second, &["range"]), 4_000);
    // `first` keeps heartbeating but never rejoins.
    g.heartbeat(&first, None, 1, 10_000);
    g.heartbeat(&first, None, 1, 20_000);
    g.heartbeat(&first, None, 1, 30_000);
    let a = g.tick(4_000 + i64::from(REBALANCE_MS));
    let js = joins(&a);
    assert_eq!(js.len(), 1);
    assert_eq!(
        js[0].1.leader, second,
        "leadership moves to a member still there"
    );
    assert_eq!(g.members().count(), 1);
}

#[test]
fn leaving_triggers_a_rebalance_and_an_empty_group_goes_empty() {
    let mut g = group();
    let id = stable_with_one(&mut g, 0);
    let (codes, actions) = g.leave(&[(id.clone(), None), ("ghost".into(), None)], 5_000);
    assert_eq!(codes, vec![errors::NONE, errors::UNKNOWN_MEMBER_ID]);
    assert!(actions.contains(&Action::Persist));
    assert_eq!(g.state, GroupState::Empty);
    assert!(g.is_empty());
    assert_eq!(
        g.validate_offset_commit("", None, -1),
        errors::NONE,
        "simple commits to an empty group"
    );
}

#[test]
fn static_members_rejoin_without_a_rebalance_and_fence_their_old_id() {
    let mut g = group();
    let mut req = join_req(40, "", &["range"]);
    req.group_instance_id = Some("host-1".into());
    let a = g.join(req.clone(), 0);
    assert!(
        a.is_empty(),
        "static members get no MEMBER_ID_REQUIRED; waits for the delay"
    );
    let a = g.tick(3_000);
    let old = joins(&a)[0].1.member_id.clone();
    let mut s = sync_req(41, &old, 1, &[(&old, "mine")]);
    s.group_instance_id = Some("host-1".into());
    g.sync(s, 3_000);
    assert_eq!(g.state, GroupState::Stable);
    // The process restarts: same instance id, no member id.
    req.request = 42;
    let a = g.join(req, 5_000);
    let j = &joins(&a)[0].1;
    assert_eq!(
        j.generation_id, 1,
        "no rebalance for a returning static member"
    );
    assert_ne!(j.member_id, old);
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(
        g.heartbeat(&old, Some("host-1"), 1, 5_100),
        errors::FENCED_INSTANCE_ID
    );
    let mut s = sync_req(43, &j.member_id, 1, &[]);
    s.group_instance_id = Some("host-1".into());
    assert_eq!(
        syncs(&g.sync(s, 5_200))[0].1.assignment,
        Bytes::from("mine"),
        "keeps its assignment"
    );
}

#[test]
fn the_protocol_is_chosen_by_vote_among_those_all_support() {
    let mut g = group();
    let a = g.join(join_req(50, "", &["range", "roundrobin"]), 0);
    let m1 = joins(&a)[0].1.member_id.clone();
    g.join(join_req(51, &m1, &["range", "roundrobin"]), 0);
    let a = g.join(join_req(52, "", &["roundrobin"]), 100);
    let m2 = joins(&a)[0].1.member_id.clone();
    g.join(join_req(53, &m2, &["roundrobin"]), 100);
    let a = g.tick(10_000);
    for (_, j) in joins(&a) {
        assert_eq!(j.protocol_name.as_deref(), Some("roundrobin"));
    }
    let a = g.join(join_req(54, "", &["sticky"]), 11_000);
    assert_eq!(
        joins(&a)[0].1.error_code,
        errors::INCONSISTENT_GROUP_PROTOCOL
    );
    let mut other = join_req(55, "", &["range"]);
    other.protocol_type = "connect".into();
    assert_eq!(
        joins(&g.join(other, 11_000))[0].1.error_code,
        errors::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn bad_session_timeouts_and_stale_requests_are_refused() {
    let mut g = group();
    let mut req = join_req(60, "", &["range"]);
    req.session_timeout_ms = 10;
    assert_eq!(
        joins(&g.join(req, 0))[0].1.error_code,
        errors::INVALID_SESSION_TIMEOUT
    );
    assert_eq!(
        joins(&g.join(join_req(61, "stranger", &["range"]), 0))[0]
            .1
            .error_code,
        errors::UNKNOWN_MEMBER_ID
    );
    let id = stable_with_one(&mut g, 0);
    assert_eq!(
        syncs(&g.sync(sync_req(62, &id, 7, &[]), 4_000))[0]
            .1
            .error_code,
        errors::ILLEGAL_GENERATION
    );
    assert_eq!(g.validate_offset_commit(&id, None, 1), errors::NONE);
    assert_eq!(
        g.validate_offset_commit(&id, None, 0),
        errors::ILLEGAL_GENERATION
    );
    assert_eq!(
        g.validate_offset_commit("", None, -1),
        errors::UNKNOWN_MEMBER_ID,
        "not while members exist"
    );
    let killed = g.kill();
    assert!(killed.is_empty());
    assert_eq!(
        g.heartbeat(&id, None, 1, 5_000),
        errors::COORDINATOR_NOT_AVAILABLE
    );
}

#[test]
fn pending_member_ids_expire_if_never_used() {
    let mut g = group();
    let a = g.join(join_req(70, "", &["range"]), 0);
    let id = joins(&a)[0].1.member_id.clone();
    g.tick(60_000);
    let a = g.join(join_req(71, &id, &["range"]), 60_001);
    assert_eq!(joins(&a)[0].1.error_code, errors::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_rejoin_while_completing_starts_a_new_rebalance_and_voids_waiting_syncs() {
    let mut g = group();
    let first = stable_with_one(&mut g, 0);
    let a = g.join(join_req(10, "", &["range"]), 4_000);
    let second = joins(&a)[0].1.member_id.clone();
    assert!(g.join(join_req(11, &second, &["range"]), 4_000).is_empty());
    assert_eq!(
        joins(&g.join(join_req(12, &first, &["range"]), 4_100)).len(),
        2
    );
    assert_eq!(g.state, GroupState::CompletingRebalance);
    // The follower waits for the leader's assignment...
    assert!(g.sync(sync_req(13, &second, 2, &[]), 4_200).is_empty());
    // ...but the same join again (a retry) only repeats the answer.
    let a = g.join(join_req(14, &second, &["range"]), 4_250);
    assert_eq!(joins(&a)[0].1.generation_id, 2);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    // New metadata from a member starts another rebalance: the waiting
    // sync learns it, and the old generation is refused from now on.
    let a = g.join(join_req(15, &second, &["range", "roundrobin"]), 4_300);
    let s = syncs(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0], (13, sync_error(errors::REBALANCE_IN_PROGRESS)));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.sync(sync_req(16, &first, 2, &[(&first, "x")]), 4_400),
        vec![Action::Sync(16, sync_error(errors::REBALANCE_IN_PROGRESS))]
    );
    // Members may still commit what they processed (eager clients do so
    // before rejoining); outsiders may not commit to a live group.
    assert_eq!(g.validate_offset_commit(&first, None, 2), errors::NONE);
    assert_eq!(
        g.validate_offset_commit("", None, -1),
        errors::UNKNOWN_MEMBER_ID
    );
    // The leader rejoins: generation 3, both answered, the old one stale.
    let a = g.join(join_req(17, &first, &["range"]), 4_500);
    let js = joins(&a);
    assert_eq!(js.len(), 2);
    assert!(js.iter().all(|(_, j)| j.generation_id == 3));
    assert_eq!(
        g.heartbeat(&second, None, 2, 4_600),
        errors::ILLEGAL_GENERATION
    );
    assert_eq!(
        g.sync(sync_req(18, &second, 2, &[]), 4_600),
        vec![Action::Sync(18, sync_error(errors::ILLEGAL_GENERATION))]
    );
}

#[test]
fn a_member_that_never_syncs_is_expired_and_the_group_rebalances_without_it() {
    let mut g = group();
    let first = stable_with_one(&mut g, 0);
    let a = g.join(join_req(10, "", &["range"]), 4_000);
    let second = joins(&a)[0].1.member_id.clone();
    assert!(g.join(join_req(11, &second, &["range"]), 4_000).is_empty());
    g.join(join_req(12, &first, &["range"]), 4_100);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    // The leader syncs; the follower never does nor heartbeats.
    g.sync(
        sync_req(13, &first, 2, &[(&first, "p0"), (&second, "p1")]),
        4_200,
    );
    assert_eq!(g.state, GroupState::Stable);
    let late = 4_100 + i64::from(SESSION_MS) + 1;
    assert_eq!(g.heartbeat(&first, None, 2, late - 2), errors::NONE);
    let a = g.tick(late);
    assert!(joins(&a).is_empty());
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(g.members().count(), 1);
    assert_eq!(
        g.heartbeat(&second, None, 2, late),
        errors::UNKNOWN_MEMBER_ID
    );
}

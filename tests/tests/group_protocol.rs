//! The group coordinator request by request, in-process on a real shard with
//! real logs: the classic protocol's error codes (MEMBER_ID_REQUIRED,
//! ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS,
//! NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, GROUP_SUBSCRIBED_TO_TOPIC), session
//! expiry, and group state read back from `__consumer_offsets` after a
//! restart.

mod common;

use std::rc::Rc;
use std::time::{Duration, Instant};

use broker::config::Config;
use broker::node::Node;
use bytes::{BufMut, Bytes, BytesMut};
use common::inproc::{call, name, run};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as Kafka;

const OFFSETS_TOPIC: &str = "__consumer_offsets";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        data_dir: dir.path().to_path_buf(),
        fsync: Some("never".into()),
        group_initial_rebalance_delay_ms: 0,
        group_min_session_timeout_ms: 100,
        ..Config::default()
    }
}

/// A consumer-protocol subscription (version 0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

async fn find(shard: &Rc<Node>, group: &str, version: i16) -> FindCoordinatorResponse {
    let mut req = FindCoordinatorRequest::default();
    if version >= 4 {
        req.coordinator_keys = vec![s(group)];
    } else {
        req.key = s(group);
    }
    call(shard, ApiKey::FindCoordinator, version, &req).await
}

async fn create(shard: &Rc<Node>, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1),
    ]);
    let r: CreateTopicsResponse = call(shard, ApiKey::CreateTopics, 7, &req).await;
    assert_eq!(r.topics[0].error_code, 0);
}

async fn join(
    shard: Rc<Node>,
    group: &str,
    member: &str,
    session_ms: i32,
    topics: &[&str],
) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(subscription(topics))]);
    call(&shard, ApiKey::JoinGroup, 5, &req).await
}

/// Joins as a new member: the first answer hands out the member id.
async fn join_new(shard: &Rc<Node>, group: &str, session_ms: i32) -> String {
    let r = join(shard.clone(), group, "", session_ms, &["t"]).await;
    assert_eq!(r.error_code, Kafka::MemberIdRequired.code());
    assert!(!r.member_id.is_empty());
    r.member_id.to_string()
}

async fn sync(
    shard: Rc<Node>,
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    call(&shard, ApiKey::SyncGroup, 3, &req).await
}

async fn heartbeat(shard: &Rc<Node>, group: &str, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id(generation);
    let r: HeartbeatResponse = call(shard, ApiKey::Heartbeat, 3, &req).await;
    r.error_code
}

async fn leave(shard: &Rc<Node>, group: &str, member: &str) -> (i16, Vec<i16>) {
    let req = LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(s(member))
        ]);
    let r: LeaveGroupResponse = call(shard, ApiKey::LeaveGroup, 4, &req).await;
    (
        r.error_code,
        r.members.iter().map(|m| m.error_code).collect(),
    )
}

/// Commits (topic, partition, offset, metadata) and returns each error code.
async fn commit(
    shard: &Rc<Node>,
    group: &str,
    member: &str,
    generation: i32,
    offsets: &[(&str, i32, i64, &str)],
) -> Vec<i16> {
    let topics = offsets
        .iter()
        .map(|(t, p, o, m)| {
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name(t))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(*o)
                        .with_committed_metadata(Some(s(m))),
                ])
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(topics);
    let r: OffsetCommitResponse = call(shard, ApiKey::OffsetCommit, 8, &req).await;
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// Committed offsets of `partitions` of `topic` (v7): group error code and
/// (partition, offset, metadata).
async fn fetch(
    shard: &Rc<Node>,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> (i16, Vec<(i32, i64, String)>) {
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(name(topic))
                .with_partition_indexes(partitions.to_vec()),
        ]));
    let r: OffsetFetchResponse = call(shard, ApiKey::OffsetFetch, 7, &req).await;
    let offsets = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                )
            })
        })
        .collect();
    (r.error_code, offsets)
}

async fn describe(shard: &Rc<Node>, group: &str) -> describe_groups_response::DescribedGroup {
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let mut r: DescribeGroupsResponse = call(shard, ApiKey::DescribeGroups, 5, &req).await;
    r.groups.remove(0)
}

async fn delete_group(shard: &Rc<Node>, group: &str) -> i16 {
    let req = DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]);
    let r: DeleteGroupsResponse = call(shard, ApiKey::DeleteGroups, 2, &req).await;
    r.results[0].error_code
}

async fn list(shard: &Rc<Node>) -> Vec<(String, String)> {
    let r: ListGroupsResponse =
        call(shard, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    let mut out: Vec<(String, String)> = r
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
        .collect();
    out.sort();
    out
}

/// Forms a group of one stable member; returns its id and generation.
async fn stable_member(shard: &Rc<Node>, group: &str, session_ms: i32) -> (String, i32) {
    let id = join_new(shard, group, session_ms).await;
    let r = join(shard.clone(), group, &id, session_ms, &["t"]).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(r.leader.as_str(), id);
    let generation = r.generation_id;
    let r = sync(shard.clone(), group, &id, generation, &[(&id, b"all")]).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(&r.assignment[..], b"all");
    (id, generation)
}

#[test]
fn find_coordinator_creates_the_internal_topic_and_names_this_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(config(&dir), |shard| async move {
        assert!(shard.metadata().topic(OFFSETS_TOPIC).is_none());
        for version in [0, 3] {
            let r = find(&shard, "g", version).await;
            assert_eq!(r.error_code, 0, "v{version}");
            assert_eq!(r.node_id.0, 0);
            assert_eq!(r.port, 9092);
            assert_eq!(r.host.as_str(), "127.0.0.1");
        }
        let r = find(&shard, "g", 4).await;
        assert_eq!(r.coordinators.len(), 1);
        assert_eq!(r.coordinators[0].error_code, 0);
        assert_eq!(r.coordinators[0].key.as_str(), "g");
        let topic = shard
            .metadata()
            .topic(OFFSETS_TOPIC)
            .cloned()
            .expect("created");
        assert_eq!(topic.partitions, 50);
        assert_eq!(
            topic.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );

        // Metadata marks it internal; clients may not produce to it.
        let r: MetadataResponse = call(
            &shard,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
        let t = r
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(OFFSETS_TOPIC))
            .expect("listed");
        assert!(t.is_internal);
        let batch = storage::testing::batch_with_values(1, [b"x".to_vec()]);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name(OFFSETS_TOPIC))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ])]);
        let r: ProduceResponse = call(&shard, ApiKey::Produce, 9, &req).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            Kafka::InvalidTopicException.code()
        );

        // Transactions have no coordinator yet: said plainly.
        let req = FindCoordinatorRequest::default()
            .with_key(s("tx"))
            .with_key_type(1);
        let r: FindCoordinatorResponse = call(&shard, ApiKey::FindCoordinator, 3, &req).await;
        assert_eq!(r.error_code, Kafka::CoordinatorNotAvailable.code());
    });
}

#[test]
fn members_join_rebalance_and_stale_requests_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(config(&dir), |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        create(&shard, "t", 4).await;
        let (a, gen1) = stable_member(&shard, "g", 10_000).await;
        assert_eq!(gen1, 1);

        assert_eq!(heartbeat(&shard, "g", &a, gen1).await, 0);
        assert_eq!(
            heartbeat(&shard, "g", &a, gen1 - 1).await,
            Kafka::IllegalGeneration.code()
        );
        assert_eq!(
            heartbeat(&shard, "g", "nobody", gen1).await,
            Kafka::UnknownMemberId.code()
        );
        assert_eq!(
            heartbeat(&shard, "no-such-group", "nobody", 1).await,
            Kafka::UnknownMemberId.code()
        );

        // Commits: checked per member, generation, topic and metadata size.
        assert_eq!(
            commit(&shard, "g", &a, gen1, &[("t", 0, 5, "m")]).await,
            [0]
        );
        assert_eq!(
            commit(&shard, "g", &a, gen1 + 6, &[("t", 0, 6, "")]).await,
            [Kafka::IllegalGeneration.code()]
        );
        assert_eq!(
            commit(&shard, "g", "nobody", gen1, &[("t", 0, 6, "")]).await,
            [Kafka::UnknownMemberId.code()]
        );
        let big = "x".repeat(5000);
        assert_eq!(
            commit(
                &shard,
                "g",
                &a,
                gen1,
                &[("t", 1, 6, &big), ("nope", 0, 1, ""), ("t", 2, 7, "")]
            )
            .await,
            [
                Kafka::OffsetMetadataTooLarge.code(),
                Kafka::UnknownTopicOrPartition.code(),
                0
            ]
        );
        let (error, offsets) = fetch(&shard, "g", "t", &[0, 1, 2]).await;
        assert_eq!(error, 0);
        assert_eq!(
            offsets,
            [
                (0, 5, "m".to_string()),
                (1, -1, String::new()),
                (2, 7, String::new())
            ]
        );

        // A second member: the group rebalances; the first learns it from
        // its heartbeat and may not commit until it rejoins.
        let b = join_new(&shard, "g", 10_000).await;
        let b_join = {
            let (shard, b) = (shard.clone(), b.clone());
            glommio::spawn_local(async move { join(shard, "g", &b, 10_000, &["t"]).await })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            heartbeat(&shard, "g", &a, gen1).await,
            Kafka::RebalanceInProgress.code()
        );
        // Kafka accepts a member's commit while the group prepares the
        // rebalance (eager clients commit before rejoining), and refuses
        // commits from outside the group while it has members.
        assert_eq!(commit(&shard, "g", &a, gen1, &[("t", 0, 9, "")]).await, [0]);
        assert_eq!(
            commit(&shard, "g", "", -1, &[("t", 0, 9, "")]).await,
            [Kafka::UnknownMemberId.code()]
        );
        assert_eq!(
            describe(&shard, "g").await.group_state.as_str(),
            "PreparingRebalance"
        );
        let ra = join(shard.clone(), "g", &a, 10_000, &["t"]).await;
        let rb = b_join.await;
        assert_eq!((ra.error_code, rb.error_code), (0, 0));
        let gen2 = ra.generation_id;
        assert_eq!(gen2, gen1 + 1);
        assert_eq!(rb.generation_id, gen2);
        assert_eq!(ra.leader.as_str(), a, "the leader stays");
        assert_eq!(ra.members.len(), 2, "the leader sees every member");
        assert!(rb.members.is_empty(), "followers see none");

        // A sync from the old generation is refused; the follower's waits
        // for the leader's assignment.
        assert_eq!(
            sync(shard.clone(), "g", &b, gen1, &[]).await.error_code,
            Kafka::IllegalGeneration.code()
        );
        let b_sync = {
            let (shard, b) = (shard.clone(), b.clone());
            glommio::spawn_local(async move { sync(shard, "g", &b, gen2, &[]).await })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let sa = sync(
            shard.clone(),
            "g",
            &a,
            gen2,
            &[(&a, b"p0p1"), (&b, b"p2p3")],
        )
        .await;
        let sb = b_sync.await;
        assert_eq!((sa.error_code, sb.error_code), (0, 0));
        assert_eq!(
            (&sa.assignment[..], &sb.assignment[..]),
            (&b"p0p1"[..], &b"p2p3"[..])
        );

        let d = describe(&shard, "g").await;
        assert_eq!(d.group_state.as_str(), "Stable");
        assert_eq!(d.protocol_type.as_str(), "consumer");
        assert_eq!(d.protocol_data.as_str(), "range");
        assert_eq!(d.members.len(), 2);
        assert!(d.members.iter().all(|m| !m.member_assignment.is_empty()));
        assert_eq!(
            list(&shard).await,
            [("g".to_string(), "Stable".to_string())]
        );

        // Deleting needs an empty group.
        assert_eq!(delete_group(&shard, "g").await, Kafka::NonEmptyGroup.code());
        assert_eq!(leave(&shard, "g", &b).await, (0, vec![0]));
        assert_eq!(
            leave(&shard, "g", &b).await,
            (0, vec![Kafka::UnknownMemberId.code()])
        );
        assert_eq!(
            heartbeat(&shard, "g", &a, gen2).await,
            Kafka::RebalanceInProgress.code()
        );
        let ra = join(shard.clone(), "g", &a, 10_000, &["t"]).await;
        assert_eq!((ra.error_code, ra.generation_id), (0, gen2 + 1));
        assert_eq!(leave(&shard, "g", &a).await, (0, vec![0]));
        let d = describe(&shard, "g").await;
        assert_eq!(d.group_state.as_str(), "Empty");
        assert_eq!(d.protocol_type.as_str(), "consumer");
        assert_eq!(delete_group(&shard, "g").await, 0);
        assert_eq!(
            delete_group(&shard, "g").await,
            Kafka::GroupIdNotFound.code()
        );
        assert_eq!(describe(&shard, "g").await.group_state.as_str(), "Dead");
        assert_eq!(
            fetch(&shard, "g", "t", &[0]).await.1,
            [(0, -1, String::new())]
        );
        assert!(list(&shard).await.is_empty());
    });
}

#[test]
fn a_silent_member_expires_after_its_session_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(config(&dir), |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        let (a, generation) = stable_member(&shard, "g", 300).await;
        // Bounded wait for the coordinator's timer to expire the member.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            if describe(&shard, "g").await.group_state.as_str() == "Empty" {
                break;
            }
            assert!(Instant::now() < deadline, "member never expired");
        }
        assert_eq!(
            heartbeat(&shard, "g", &a, generation).await,
            Kafka::UnknownMemberId.code()
        );
        // A session below the broker's minimum is refused.
        let r = join(shard.clone(), "g", "", 50, &["t"]).await;
        assert_eq!(r.error_code, Kafka::InvalidSessionTimeout.code());
    });
}

#[test]
fn offsets_are_deleted_only_for_topics_the_group_no_longer_consumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(config(&dir), |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        create(&shard, "t", 1).await;
        create(&shard, "u", 1).await;
        let (a, generation) = stable_member(&shard, "g", 10_000).await;
        assert_eq!(
            commit(
                &shard,
                "g",
                &a,
                generation,
                &[("t", 0, 3, ""), ("u", 0, 4, "")]
            )
            .await,
            [0, 0]
        );
        let req = OffsetDeleteRequest::default()
            .with_group_id(gid("g"))
            .with_topics(
                ["t", "u"]
                    .iter()
                    .map(|t| {
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default()
                                    .with_partition_index(0),
                            ])
                    })
                    .collect(),
            );
        let r: OffsetDeleteResponse = call(&shard, ApiKey::OffsetDelete, 0, &req).await;
        assert_eq!(r.error_code, 0);
        let codes: Vec<i16> = r
            .topics
            .iter()
            .map(|t| t.partitions[0].error_code)
            .collect();
        assert_eq!(codes, [Kafka::GroupSubscribedToTopic.code(), 0]);
        assert_eq!(fetch(&shard, "g", "t", &[0]).await.1[0].1, 3);
        assert_eq!(fetch(&shard, "g", "u", &[0]).await.1[0].1, -1);

        let req = req.with_group_id(gid("unknown"));
        let r: OffsetDeleteResponse = call(&shard, ApiKey::OffsetDelete, 0, &req).await;
        assert_eq!(r.error_code, Kafka::GroupIdNotFound.code());
    });
}

#[test]
fn committed_offsets_and_groups_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let member = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let saved = member.clone();
    run(config(&dir), |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        create(&shard, "t", 4).await;
        // A commit from outside group management (generation -1).
        let offsets: Vec<(&str, i32, i64, &str)> = (0..4)
            .map(|p| ("t", p, 100 + i64::from(p), "meta"))
            .collect();
        assert_eq!(commit(&shard, "standalone", "", -1, &offsets).await, [0; 4]);
        let (a, generation) = stable_member(&shard, "g", 60_000).await;
        assert_eq!(
            commit(&shard, "g", &a, generation, &[("t", 3, 42, "")]).await,
            [0]
        );
        // Superseded, then deleted: neither may come back.
        assert_eq!(
            commit(&shard, "gone", "", -1, &[("t", 0, 1, "")]).await,
            [0]
        );
        assert_eq!(delete_group(&shard, "gone").await, 0);
        *saved.lock().expect("lock") = a;
    });
    let a = member.lock().expect("lock").clone();
    run(config(&dir), move |shard| async move {
        // Loading is asynchronous: COORDINATOR_LOAD_IN_PROGRESS meanwhile.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (error, offsets) = loop {
            let (error, offsets) = fetch(&shard, "standalone", "t", &[0, 1, 2, 3]).await;
            if error != Kafka::CoordinatorLoadInProgress.code() || Instant::now() > deadline {
                break (error, offsets);
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(error, 0);
        let expected: Vec<(i32, i64, String)> = (0..4)
            .map(|p| (p, 100 + i64::from(p), "meta".to_string()))
            .collect();
        assert_eq!(offsets, expected);
        assert_eq!(fetch(&shard, "g", "t", &[3]).await.1[0].1, 42);
        assert_eq!(fetch(&shard, "gone", "t", &[0]).await.1[0].1, -1);
        let d = describe(&shard, "g").await;
        assert_eq!(d.group_state.as_str(), "Stable");
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].member_id.as_str(), a);
        assert_eq!(&d.members[0].member_assignment[..], b"all");
        assert_eq!(
            list(&shard).await,
            [
                ("g".to_string(), "Stable".to_string()),
                ("standalone".to_string(), "Empty".to_string())
            ]
        );
        // The restored member carries on where it was.
        assert_eq!(heartbeat(&shard, "g", &a, 1).await, 0);

        // OffsetFetch v8 asks for several groups at once.
        let req = OffsetFetchRequest::default().with_groups(
            ["g", "standalone"]
                .iter()
                .map(|g| {
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(gid(g))
                        .with_topics(None)
                })
                .collect(),
        );
        let r: OffsetFetchResponse = call(&shard, ApiKey::OffsetFetch, 8, &req).await;
        let counts: Vec<(i16, usize)> = r
            .groups
            .iter()
            .map(|g| {
                (
                    g.error_code,
                    g.topics.iter().map(|t| t.partitions.len()).sum(),
                )
            })
            .collect();
        assert_eq!(counts, [(0, 1), (0, 4)]);
    });
}

#[test]
fn offsets_of_empty_groups_expire_after_the_retention_and_live_groups_keep_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        offsets_retention_ms: 300,
        offsets_retention_check_interval_ms: 50,
        ..config(&dir)
    };
    run(config, |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        create(&shard, "t", 1).await;
        let started = Instant::now();
        assert_eq!(
            commit(&shard, "standalone", "", -1, &[("t", 0, 5, "")]).await,
            [0]
        );
        let (a, generation) = stable_member(&shard, "live", 60_000).await;
        assert_eq!(
            commit(&shard, "live", &a, generation, &[("t", 0, 7, "")]).await,
            [0]
        );
        // Bounded wait for the standalone group's offsets to expire.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetch(&shard, "standalone", "t", &[0]).await.1[0].1 != -1 {
            assert!(Instant::now() < deadline, "offsets never expired");
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "not before the retention"
        );
        // The group went with its offsets; a member keeps its group's.
        assert_eq!(
            list(&shard).await,
            [("live".to_string(), "Stable".to_string())]
        );
        assert_eq!(fetch(&shard, "live", "t", &[0]).await.1[0].1, 7);
        assert_eq!(leave(&shard, "live", &a).await, (0, vec![0]));
        let emptied = Instant::now();
        while fetch(&shard, "live", "t", &[0]).await.1[0].1 != -1 {
            assert!(
                Instant::now() < deadline,
                "offsets of the emptied group never expired"
            );
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        assert!(emptied.elapsed() >= Duration::from_millis(250));
        assert!(list(&shard).await.is_empty());
    });
}

#[test]
fn deleting_a_topic_forgets_the_offsets_committed_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(config(&dir), |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        create(&shard, "t", 1).await;
        create(&shard, "u", 1).await;
        let offsets = [("t", 0, 3, ""), ("u", 0, 4, "")];
        assert_eq!(commit(&shard, "g", "", -1, &offsets).await, [0, 0]);
        let req = DeleteTopicsRequest::default().with_topic_names(vec![name("u")]);
        let r: DeleteTopicsResponse = call(&shard, ApiKey::DeleteTopics, 4, &req).await;
        assert_eq!(r.responses[0].error_code, 0);
        create(&shard, "u", 1).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetch(&shard, "g", "u", &[0]).await.1[0].1 != -1 {
            assert!(
                Instant::now() < deadline,
                "offsets of the deleted topic remain"
            );
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fetch(&shard, "g", "t", &[0]).await.1[0].1, 3);
    });
}

#[test]
fn the_first_join_completes_when_the_initial_rebalance_delay_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        group_initial_rebalance_delay_ms: 500,
        ..config(&dir)
    };
    run(config, |shard| async move {
        assert_eq!(find(&shard, "g", 3).await.error_code, 0);
        let id = join_new(&shard, "g", 10_000).await;
        let started = Instant::now();
        // The rebalance timeout is 10 s: the join must not wait for it.
        let r = join(shard.clone(), "g", &id, 10_000, &["t"]).await;
        let waited = started.elapsed();
        assert_eq!((r.error_code, r.generation_id), (0, 1));
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    });
}

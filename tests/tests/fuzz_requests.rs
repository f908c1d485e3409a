//! Bounded-time fuzzing of the request path in-process: random frames and
//! mutations of valid requests of every implemented API go through the
//! frame decoder and the real handlers (on a real shard with real logs).
//! Nothing may panic, and no single allocation may exceed the frame limit.
//! The seed is printed; `SLUICE_FUZZ_SEED` replays a run.

use std::alloc::{GlobalAlloc, Layout};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::config::Config;
use broker::kafka::{self, Reply};
use broker::metadata::{ClusterMetadata, TopicMeta};
use broker::node::Node;
use broker::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures_lite::{future, FutureExt};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The broker's allocator (see `broker::alloc`), counting the largest
/// request so the run can report it.
struct Tracking;

static LARGEST_REQUEST: AtomicUsize = AtomicUsize::new(0);
static INNER: broker::alloc::ReservingAllocator = broker::alloc::ReservingAllocator;

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_REQUEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_REQUEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_REQUEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Resident memory of this process, from /proc/self/statm.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const FRAME_LIMIT_BYTES: usize = 1 << 20;
/// Resident memory growth allowed over the whole run beyond one frame
/// (logs' buffers and caches, glommio's pools).
const RESIDENT_GROWTH_MAX_BYTES: usize = 128 << 20;
const ITERATIONS_MAX: usize = 40_000;
const TIME_BUDGET: Duration = Duration::from_secs(30);
const HANDLER_TIMEOUT: Duration = Duration::from_millis(300);

fn encode<M: Encodable>(key: ApiKey, version: i16, body: &M) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.freeze()
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("fuzz"))
}

/// Valid requests of every implemented API at a few versions each.
fn seeds(topic_id: uuid::Uuid) -> Vec<Bytes> {
    let batch =
        storage::testing::batch_with_values(1_700_000_000_000, [b"a".to_vec(), b"bc".to_vec()]);
    let mut out = Vec::new();
    for v in [0i16, 3, 4] {
        out.push(encode(
            ApiKey::ApiVersions,
            v,
            &ApiVersionsRequest::default(),
        ));
    }
    for v in [2i16, 4] {
        let req = OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("fuzz")))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(1)
                        .with_current_leader_epoch(0)
                        .with_leader_epoch(0),
                ]),
        ]);
        out.push(encode(ApiKey::OffsetForLeaderEpoch, v, &req));
    }
    for v in [1i16, 9, 12] {
        let req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
        ]));
        out.push(encode(ApiKey::Metadata, v, &req));
    }
    for v in [3i16, 8, 9, 12] {
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(100)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(1)
                        .with_records(Some(batch.clone())),
                ])]);
        out.push(encode(ApiKey::Produce, v, &req));
    }
    for v in [4i16, 11, 12, 13, 16] {
        let req = FetchRequest::default()
            .with_max_wait_ms(10)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(if v < 13 {
                    topic()
                } else {
                    TopicName::default()
                })
                .with_topic_id(if v >= 13 { topic_id } else { uuid::Uuid::nil() })
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(1)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 16)])]);
        out.push(encode(ApiKey::Fetch, v, &req));
    }
    for v in [1i16, 5, 9] {
        let req = ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)]),
        ]);
        out.push(encode(ApiKey::ListOffsets, v, &req));
    }
    for v in [2i16, 5, 7] {
        let req = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("made")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        out.push(encode(ApiKey::CreateTopics, v, &req));
    }
    for v in [1i16, 4] {
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(StrBytes::from_static_str("made"))]);
        out.push(encode(ApiKey::DeleteTopics, v, &req));
    }
    for v in [1i16, 4] {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("fuzz")),
        ]);
        out.push(encode(ApiKey::DescribeConfigs, v, &req));
    }
    for v in [0i16, 3] {
        let req = CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic())
                .with_count(3),
        ]);
        out.push(encode(ApiKey::CreatePartitions, v, &req));
    }
    for v in [0i16, 2] {
        let req = DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(1),
                ]),
        ]);
        out.push(encode(ApiKey::DeleteRecords, v, &req));
    }
    for v in [0i16, 2] {
        let req = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("fuzz"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("100000")))]),
        ]);
        out.push(encode(ApiKey::AlterConfigs, v, &req));
    }
    for v in [0i16, 1] {
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("fuzz"))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("cleanup.policy"))
                        .with_config_operation(2)
                        .with_value(Some(StrBytes::from_static_str("delete"))),
                ]),
        ]);
        out.push(encode(ApiKey::IncrementalAlterConfigs, v, &req));
    }
    for v in [0i16, 4] {
        out.push(encode(
            ApiKey::InitProducerId,
            v,
            &InitProducerIdRequest::default(),
        ));
    }
    out.extend(group_seeds());
    for v in [0i16, 1] {
        out.push(encode(
            ApiKey::DescribeCluster,
            v,
            &DescribeClusterRequest::default().with_endpoint_type(1),
        ));
    }
    out.extend(security_seeds());
    out
}

/// The SASL APIs as an authenticated connection may send them (answered
/// ILLEGAL_SASL_STATE), and the SCRAM credential APIs (KIP-554).
fn security_seeds() -> Vec<Bytes> {
    let mut out = Vec::new();
    for v in [0i16, 1] {
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512"));
        out.push(encode(ApiKey::SaslHandshake, v, &req));
    }
    for v in [0i16, 1, 2] {
        let req = SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"));
        out.push(encode(ApiKey::SaslAuthenticate, v, &req));
    }
    let user = |name: &'static str| {
        describe_user_scram_credentials_request::UserName::default()
            .with_name(StrBytes::from_static_str(name))
    };
    out.push(encode(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default()
            .with_users(Some(vec![user("alice"), user("bob")])),
    ));
    let upsertion = alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_static_str("alice"))
        .with_mechanism(2)
        .with_iterations(4096)
        .with_salt(Bytes::from_static(b"0123456789abcdef"))
        .with_salted_password(Bytes::from(vec![7u8; 64]));
    let deletion = alter_user_scram_credentials_request::ScramCredentialDeletion::default()
        .with_name(StrBytes::from_static_str("bob"))
        .with_mechanism(1);
    out.push(encode(
        ApiKey::AlterUserScramCredentials,
        0,
        &AlterUserScramCredentialsRequest::default()
            .with_upsertions(vec![upsertion])
            .with_deletions(vec![deletion]),
    ));
    out.extend(acl_seeds());
    out
}

/// CreateAcls, DescribeAcls and DeleteAcls with valid and invalid
/// bindings and filters (unknown types, MATCH patterns, empty names).
fn acl_seeds() -> Vec<Bytes> {
    let mut out = Vec::new();
    let creation = |rt: i8, name: &'static str, pt: i8, op: i8, perm: i8| {
        create_acls_request::AclCreation::default()
            .with_resource_type(rt)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_resource_pattern_type(pt)
            .with_principal(StrBytes::from_static_str("User:alice"))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(op)
            .with_permission_type(perm)
    };
    for v in 1i16..=3 {
        out.push(encode(
            ApiKey::CreateAcls,
            v,
            &CreateAclsRequest::default().with_creations(vec![
                creation(2, "metrics.", 4, 4, 3),
                creation(4, "kafka-cluster", 3, 7, 2),
                creation(1, "", 2, 1, 1),
                creation(6, "token", 3, 2, 3),
            ]),
        ));
        out.push(encode(
            ApiKey::DescribeAcls,
            v,
            &DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(2)
                .with_resource_name_filter(Some(StrBytes::from_static_str("metrics.cpu")))
                .with_operation(1)
                .with_permission_type(1),
        ));
        let filter = |rt: i8, pt: i8| {
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(rt)
                .with_pattern_type_filter(pt)
                .with_principal_filter(Some(StrBytes::from_static_str("User:alice")))
                .with_operation(1)
                .with_permission_type(1)
        };
        out.push(encode(
            ApiKey::DeleteAcls,
            v,
            &DeleteAclsRequest::default().with_filters(vec![filter(1, 1), filter(0, 9)]),
        ));
    }
    out
}

/// Valid requests of the group APIs (the group "g" and topic "fuzz").
fn group_seeds() -> Vec<Bytes> {
    let s = |v: &'static str| StrBytes::from_static_str(v);
    let g = || GroupId(s("g"));
    let mut out = Vec::new();
    for v in [0i16, 3] {
        let req = FindCoordinatorRequest::default().with_key(s("g"));
        out.push(encode(ApiKey::FindCoordinator, v, &req));
    }
    let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]);
    out.push(encode(ApiKey::FindCoordinator, 4, &req));
    for v in [0i16, 5, 9] {
        let req = JoinGroupRequest::default()
            .with_group_id(g())
            .with_session_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(&[
                0, 0, 0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z',
            ]))]);
        let req = if v >= 1 {
            req.with_rebalance_timeout_ms(100)
        } else {
            req
        };
        out.push(encode(ApiKey::JoinGroup, v, &req));
    }
    for v in [0i16, 5] {
        let req = SyncGroupRequest::default()
            .with_group_id(g())
            .with_generation_id(1)
            .with_member_id(s("m"))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("m"))
                    .with_assignment(Bytes::from_static(b"assignment")),
            ]);
        out.push(encode(ApiKey::SyncGroup, v, &req));
        let req = HeartbeatRequest::default()
            .with_group_id(g())
            .with_generation_id(1)
            .with_member_id(s("m"));
        out.push(encode(ApiKey::Heartbeat, v.min(4), &req));
        let req = LeaveGroupRequest::default().with_group_id(g());
        let req = if v >= 3 {
            req.with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s("m"))
            ])
        } else {
            req.with_member_id(s("m"))
        };
        out.push(encode(ApiKey::LeaveGroup, v, &req));
        let req = ListGroupsRequest::default();
        out.push(encode(ApiKey::ListGroups, v, &req));
        let req = DescribeGroupsRequest::default().with_groups(vec![g()]);
        out.push(encode(ApiKey::DescribeGroups, v, &req));
    }
    for v in [2i16, 8, 9] {
        let req = OffsetCommitRequest::default()
            .with_group_id(g())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)
                            .with_committed_metadata(Some(s("m"))),
                    ]),
            ]);
        out.push(encode(ApiKey::OffsetCommit, v, &req));
    }
    for v in [1i16, 7] {
        let req = OffsetFetchRequest::default()
            .with_group_id(g())
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0, 1]),
            ]));
        out.push(encode(ApiKey::OffsetFetch, v, &req));
    }
    let req = OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(g())
            .with_topics(None),
    ]);
    out.push(encode(ApiKey::OffsetFetch, 8, &req));
    let req = OffsetDeleteRequest::default()
        .with_group_id(g())
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
        ]);
    out.push(encode(ApiKey::OffsetDelete, 0, &req));
    for v in [0i16, 2] {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![g()]);
        out.push(encode(ApiKey::DeleteGroups, v, &req));
    }
    out
}

fn mutate(rng: &mut StdRng, seed: &Bytes) -> Bytes {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..6) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            2 => {
                let at = rng.gen_range(0..=v.len());
                v.truncate(at);
            }
            3 if v.len() >= 4 => {
                // Lengths and counts: the most dangerous fields.
                let i = rng.gen_range(0..v.len() - 3);
                let big: [i32; 5] = [-1, i32::MAX, 0x7fff, 1 << 24, -2];
                v[i..i + 4].copy_from_slice(&big[rng.gen_range(0..big.len())].to_be_bytes());
            }
            4 => {
                let at = rng.gen_range(0..=v.len());
                let extra: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                v.splice(at..at, extra);
            }
            _ => {
                if !v.is_empty() {
                    let i = rng.gen_range(0..v.len());
                    v[i] = 0xff;
                }
            }
        }
    }
    Bytes::from(v)
}

#[test]
fn arbitrary_and_mutated_frames_never_panic_nor_allocate_beyond_the_limit() {
    let seed: u64 = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("SLUICE_FUZZ_SEED={seed}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let outcome = glommio::LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .spawn(move || async move {
            let config = Config {
                data_dir,
                auto_create_topics: false,
                max_request_bytes: FRAME_LIMIT_BYTES,
                fsync: Some("never".into()),
                partitions_per_topic_max: 8,
                offsets_topic_partitions: 2,
                group_initial_rebalance_delay_ms: 0,
                ..Config::default()
            };
            let shard = Rc::new(Node::new(
                Rc::new(
                    Shard::new(0, 1, Arc::new(config), Arc::new(AtomicBool::new(false)))
                        .expect("shard"),
                ),
                None,
            ));
            let topic_id = uuid::Uuid::new_v4();
            let mut meta = ClusterMetadata::new();
            meta.topics.insert(
                "fuzz".into(),
                TopicMeta {
                    name: "fuzz".into(),
                    topic_id,
                    partitions: 2,
                    configs: Default::default(),
                    // No states: led by this node alone.
                    states: Vec::new(),
                },
            );
            shard.apply_metadata(Arc::new(meta)).await;
            let seeds = seeds(topic_id);
            let mut rng = StdRng::seed_from_u64(seed);
            let started = Instant::now();
            let baseline = resident_bytes();
            let mut time_per_api: std::collections::BTreeMap<String, Duration> = Default::default();
            let (mut answered, mut refused, mut timed_out, mut iterations) = (0, 0, 0, 0);
            while iterations < ITERATIONS_MAX && started.elapsed() < TIME_BUDGET {
                iterations += 1;
                let frame = if rng.gen_bool(0.2) {
                    let n = rng.gen_range(0..256);
                    Bytes::from((0..n).map(|_| rng.gen()).collect::<Vec<u8>>())
                } else {
                    let s = &seeds[rng.gen_range(0..seeds.len())];
                    if rng.gen_bool(0.1) {
                        s.clone()
                    } else {
                        mutate(&mut rng, s)
                    }
                };
                let Ok(request) = net::decode_request(frame.clone()) else {
                    refused += 1;
                    continue;
                };
                let key = request.api_key;
                let t0 = Instant::now();
                let handled =
                    std::panic::AssertUnwindSafe(kafka::dispatch(&shard, request)).catch_unwind();
                let bounded = future::or(async { Some(handled.await) }, async {
                    glommio::timer::sleep(HANDLER_TIMEOUT).await;
                    None
                });
                match bounded.await {
                    None => timed_out += 1,
                    Some(Err(_)) => panic!("a handler panicked on frame {frame:?} (seed {seed})"),
                    Some(Ok(Ok(Reply::Frame(_) | Reply::Nothing))) => answered += 1,
                    Some(Ok(Ok(Reply::Close(_) | Reply::Last(..)) | Err(_))) => refused += 1,
                }
                *time_per_api.entry(format!("{key:?}")).or_insert(Duration::ZERO) += t0.elapsed();
                let resident = resident_bytes();
                assert!(
                    resident <= baseline + FRAME_LIMIT_BYTES + RESIDENT_GROWTH_MAX_BYTES,
                    "resident memory grew from {baseline} to {resident} bytes after frame {frame:?} (seed {seed})"
                );
            }
            let mut slowest: Vec<_> = time_per_api.into_iter().collect();
            slowest.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
            slowest.truncate(5);
            println!("slowest apis: {slowest:?}");
            shard.close_logs().await;
            (iterations, answered, refused, timed_out)
        })
        .expect("executor")
        .join()
        .expect("fuzz run");
    println!("iterations, answered, refused, timed out: {outcome:?}");
    println!(
        "largest allocation requested: {} bytes (reserved, never touched, when huge)",
        LARGEST_REQUEST.load(Ordering::Relaxed)
    );
    assert!(outcome.1 > 0, "some frames must be valid requests");
}

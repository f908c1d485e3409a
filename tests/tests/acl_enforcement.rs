//! What each Kafka API needs of the authorizer, table-driven and in
//! process: for every row, a principal with no ACL is refused with Kafka's
//! error code, and once granted exactly the (operation, resource) of the
//! row, through CreateAcls by a super user, the same request is no longer
//! refused for authorization. The ACL is removed again with DeleteAcls, so
//! that rows do not lend each other rights.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use broker::node::Node;
use common::inproc::{call_as, name, run, test_config};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as Kafka;

const ADMIN: &str = "User:admin";
const ALICE: &str = "User:alice";
const TOPIC: &str = "t";
const GROUP: &str = "g";

// Kafka's codes.
const TOPIC_TYPE: i8 = 2;
const GROUP_TYPE: i8 = 3;
const CLUSTER_TYPE: i8 = 4;
const LITERAL: i8 = 3;
const ALLOW: i8 = 3;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DELETE: i8 = 6;
const ALTER: i8 = 7;
const DESCRIBE: i8 = 8;
const DESCRIBE_CONFIGS: i8 = 10;
const ALTER_CONFIGS: i8 = 11;
const IDEMPOTENT_WRITE: i8 = 12;

type Probe = fn(Rc<Node>) -> Pin<Box<dyn Future<Output = i16>>>;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// (API, operation, resource type, resource name, the refusal, the probe
/// returning the error code that carries it).
fn table() -> Vec<(&'static str, i8, i8, &'static str, Kafka, Probe)> {
    let topic_refused = Kafka::TopicAuthorizationFailed;
    let group_refused = Kafka::GroupAuthorizationFailed;
    let cluster_refused = Kafka::ClusterAuthorizationFailed;
    vec![
        ("Produce", WRITE, TOPIC_TYPE, TOPIC, topic_refused, |n| {
            Box::pin(async move {
                let req = ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(name(TOPIC))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default().with_index(0),
                        ])]);
                let r: ProduceResponse = call_as(&n, ALICE, ApiKey::Produce, 9, &req).await;
                r.responses[0].partition_responses[0].error_code
            })
        }),
        ("Fetch", READ, TOPIC_TYPE, TOPIC, topic_refused, |n| {
            Box::pin(async move {
                let req = FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![fetch_request::FetchTopic::default()
                        .with_topic(name(TOPIC))
                        .with_partitions(vec![fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20)])]);
                let r: FetchResponse = call_as(&n, ALICE, ApiKey::Fetch, 12, &req).await;
                r.responses[0].partitions[0].error_code
            })
        }),
        (
            "ListOffsets",
            DESCRIBE,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                            .with_name(name(TOPIC))
                            .with_partitions(vec![
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(0)
                                    .with_timestamp(-1),
                            ])]);
                    let r: ListOffsetsResponse =
                        call_as(&n, ALICE, ApiKey::ListOffsets, 7, &req).await;
                    r.topics[0].partitions[0].error_code
                })
            },
        ),
        (
            "OffsetForLeaderEpoch",
            DESCRIBE,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    use offset_for_leader_epoch_request::{
                        OffsetForLeaderPartition, OffsetForLeaderTopic,
                    };
                    let req = OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![OffsetForLeaderTopic::default()
                            .with_topic(name(TOPIC))
                            .with_partitions(vec![OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0)])]);
                    let r: OffsetForLeaderEpochResponse =
                        call_as(&n, ALICE, ApiKey::OffsetForLeaderEpoch, 4, &req).await;
                    r.topics[0].partitions[0].error_code
                })
            },
        ),
        (
            "Metadata",
            DESCRIBE,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = MetadataRequest::default()
                        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                        )
                        .with_name(Some(name(TOPIC)))]));
                    let r: MetadataResponse = call_as(&n, ALICE, ApiKey::Metadata, 12, &req).await;
                    r.topics[0].error_code
                })
            },
        ),
        (
            "CreateTopics",
            CREATE,
            CLUSTER_TYPE,
            "kafka-cluster",
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = CreateTopicsRequest::default()
                        .with_validate_only(true)
                        .with_topics(vec![create_topics_request::CreatableTopic::default()
                            .with_name(name("new"))
                            .with_num_partitions(1)
                            .with_replication_factor(-1)]);
                    let r: CreateTopicsResponse =
                        call_as(&n, ALICE, ApiKey::CreateTopics, 7, &req).await;
                    r.topics[0].error_code
                })
            },
        ),
        (
            "CreatePartitions",
            ALTER,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = CreatePartitionsRequest::default()
                        .with_validate_only(true)
                        .with_timeout_ms(1000)
                        .with_topics(vec![
                            create_partitions_request::CreatePartitionsTopic::default()
                                .with_name(name(TOPIC))
                                .with_count(3),
                        ]);
                    let r: CreatePartitionsResponse =
                        call_as(&n, ALICE, ApiKey::CreatePartitions, 3, &req).await;
                    r.results[0].error_code
                })
            },
        ),
        (
            "DeleteRecords",
            DELETE,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = DeleteRecordsRequest::default()
                        .with_timeout_ms(1000)
                        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                            .with_name(name(TOPIC))
                            .with_partitions(vec![
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(0)
                                    .with_offset(0),
                            ])]);
                    let r: DeleteRecordsResponse =
                        call_as(&n, ALICE, ApiKey::DeleteRecords, 2, &req).await;
                    r.topics[0].partitions[0].error_code
                })
            },
        ),
        (
            "DescribeConfigs",
            DESCRIBE_CONFIGS,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(s(TOPIC)),
                    ]);
                    let r: DescribeConfigsResponse =
                        call_as(&n, ALICE, ApiKey::DescribeConfigs, 4, &req).await;
                    r.results[0].error_code
                })
            },
        ),
        (
            "AlterConfigs",
            ALTER_CONFIGS,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = AlterConfigsRequest::default()
                        .with_validate_only(true)
                        .with_resources(vec![
                            alter_configs_request::AlterConfigsResource::default()
                                .with_resource_type(2)
                                .with_resource_name(s(TOPIC)),
                        ]);
                    let r: AlterConfigsResponse =
                        call_as(&n, ALICE, ApiKey::AlterConfigs, 2, &req).await;
                    r.responses[0].error_code
                })
            },
        ),
        (
            "IncrementalAlterConfigs",
            ALTER_CONFIGS,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    let req = IncrementalAlterConfigsRequest::default()
                        .with_validate_only(true)
                        .with_resources(vec![
                            incremental_alter_configs_request::AlterConfigsResource::default()
                                .with_resource_type(4)
                                .with_resource_name(s("0")),
                        ]);
                    let r: IncrementalAlterConfigsResponse =
                        call_as(&n, ALICE, ApiKey::IncrementalAlterConfigs, 1, &req).await;
                    r.responses[0].error_code
                })
            },
        ),
        (
            "FindCoordinator",
            DESCRIBE,
            GROUP_TYPE,
            GROUP,
            group_refused,
            |n| {
                Box::pin(async move {
                    let req = FindCoordinatorRequest::default().with_key(s(GROUP));
                    let r: FindCoordinatorResponse =
                        call_as(&n, ALICE, ApiKey::FindCoordinator, 3, &req).await;
                    r.error_code
                })
            },
        ),
        ("JoinGroup", READ, GROUP_TYPE, GROUP, group_refused, |n| {
            Box::pin(async move {
                let req = JoinGroupRequest::default()
                    .with_group_id(GroupId(s(GROUP)))
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                    )
                    .with_name(s("range"))]);
                let r: JoinGroupResponse = call_as(&n, ALICE, ApiKey::JoinGroup, 5, &req).await;
                r.error_code
            })
        }),
        ("Heartbeat", READ, GROUP_TYPE, GROUP, group_refused, |n| {
            Box::pin(async move {
                let req = HeartbeatRequest::default()
                    .with_group_id(GroupId(s(GROUP)))
                    .with_member_id(s("m"));
                let r: HeartbeatResponse = call_as(&n, ALICE, ApiKey::Heartbeat, 4, &req).await;
                r.error_code
            })
        }),
        ("SyncGroup", READ, GROUP_TYPE, GROUP, group_refused, |n| {
            Box::pin(async move {
                let req = SyncGroupRequest::default()
                    .with_group_id(GroupId(s(GROUP)))
                    .with_member_id(s("m"));
                let r: SyncGroupResponse = call_as(&n, ALICE, ApiKey::SyncGroup, 3, &req).await;
                r.error_code
            })
        }),
        ("LeaveGroup", READ, GROUP_TYPE, GROUP, group_refused, |n| {
            Box::pin(async move {
                let req = LeaveGroupRequest::default()
                    .with_group_id(GroupId(s(GROUP)))
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(s("m"))
                    ]);
                let r: LeaveGroupResponse = call_as(&n, ALICE, ApiKey::LeaveGroup, 4, &req).await;
                r.error_code
            })
        }),
        (
            "OffsetCommit",
            READ,
            GROUP_TYPE,
            GROUP,
            group_refused,
            |n| {
                Box::pin(async move {
                    let req = OffsetCommitRequest::default()
                        .with_group_id(GroupId(s(GROUP)))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![
                            offset_commit_request::OffsetCommitRequestTopic::default()
                                .with_name(name(TOPIC))
                                .with_partitions(vec![
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(0)
                                        .with_committed_offset(0),
                                ]),
                        ]);
                    let r: OffsetCommitResponse =
                        call_as(&n, ALICE, ApiKey::OffsetCommit, 8, &req).await;
                    r.topics[0].partitions[0].error_code
                })
            },
        ),
        (
            "OffsetDelete",
            DELETE,
            GROUP_TYPE,
            GROUP,
            group_refused,
            |n| {
                Box::pin(async move {
                    let req = OffsetDeleteRequest::default()
                        .with_group_id(GroupId(s(GROUP)))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(name(TOPIC))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]);
                    let r: OffsetDeleteResponse =
                        call_as(&n, ALICE, ApiKey::OffsetDelete, 0, &req).await;
                    r.error_code
                })
            },
        ),
        (
            "DescribeGroups",
            DESCRIBE,
            GROUP_TYPE,
            GROUP,
            group_refused,
            |n| {
                Box::pin(async move {
                    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]);
                    let r: DescribeGroupsResponse =
                        call_as(&n, ALICE, ApiKey::DescribeGroups, 5, &req).await;
                    r.groups[0].error_code
                })
            },
        ),
        (
            "OffsetFetch",
            DESCRIBE,
            GROUP_TYPE,
            GROUP,
            group_refused,
            |n| {
                Box::pin(async move {
                    let req = OffsetFetchRequest::default().with_group_id(GroupId(s(GROUP)));
                    let r: OffsetFetchResponse =
                        call_as(&n, ALICE, ApiKey::OffsetFetch, 7, &req).await;
                    r.error_code
                })
            },
        ),
        (
            "DeleteGroups",
            DELETE,
            GROUP_TYPE,
            GROUP,
            group_refused,
            |n| {
                Box::pin(async move {
                    let req =
                        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(GROUP))]);
                    let r: DeleteGroupsResponse =
                        call_as(&n, ALICE, ApiKey::DeleteGroups, 2, &req).await;
                    r.results[0].error_code
                })
            },
        ),
        (
            "InitProducerId",
            IDEMPOTENT_WRITE,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    let req = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(-1)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1);
                    let r: InitProducerIdResponse =
                        call_as(&n, ALICE, ApiKey::InitProducerId, 4, &req).await;
                    r.error_code
                })
            },
        ),
        (
            "DescribeLogDirs",
            DESCRIBE,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    let req = DescribeLogDirsRequest::default();
                    let r: DescribeLogDirsResponse =
                        call_as(&n, ALICE, ApiKey::DescribeLogDirs, 4, &req).await;
                    r.error_code
                })
            },
        ),
        (
            "ElectLeaders",
            ALTER,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    let req = ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(name(TOPIC))
                            .with_partitions(vec![0]),
                    ]));
                    let r: ElectLeadersResponse =
                        call_as(&n, ALICE, ApiKey::ElectLeaders, 2, &req).await;
                    r.error_code
                })
            },
        ),
        (
            "DescribeProducers",
            READ,
            TOPIC_TYPE,
            TOPIC,
            topic_refused,
            |n| {
                Box::pin(async move {
                    let req = DescribeProducersRequest::default().with_topics(vec![
                        describe_producers_request::TopicRequest::default()
                            .with_name(name(TOPIC))
                            .with_partition_indexes(vec![0]),
                    ]);
                    let r: DescribeProducersResponse =
                        call_as(&n, ALICE, ApiKey::DescribeProducers, 0, &req).await;
                    r.topics[0].partitions[0].error_code
                })
            },
        ),
        (
            "DescribeUserScramCredentials",
            DESCRIBE,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    let req = DescribeUserScramCredentialsRequest::default();
                    let r: DescribeUserScramCredentialsResponse =
                        call_as(&n, ALICE, ApiKey::DescribeUserScramCredentials, 0, &req).await;
                    r.error_code
                })
            },
        ),
        (
            "DescribeAcls",
            DESCRIBE,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    let r: DescribeAclsResponse =
                        call_as(&n, ALICE, ApiKey::DescribeAcls, 3, &everything()).await;
                    r.error_code
                })
            },
        ),
        (
            "CreateAcls",
            ALTER,
            CLUSTER_TYPE,
            "kafka-cluster",
            cluster_refused,
            |n| {
                Box::pin(async move {
                    // A binding for someone else, so the row's grant stays the
                    // only one alice has.
                    let req = CreateAclsRequest::default()
                        .with_creations(vec![creation("User:bob", TOPIC_TYPE, "other", READ)]);
                    let r: CreateAclsResponse =
                        call_as(&n, ALICE, ApiKey::CreateAcls, 3, &req).await;
                    r.results[0].error_code
                })
            },
        ),
    ]
}

fn creation(principal: &str, rt: i8, name: &str, op: i8) -> create_acls_request::AclCreation {
    create_acls_request::AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(s(name))
        .with_resource_pattern_type(LITERAL)
        .with_principal(s(principal))
        .with_host(s("*"))
        .with_operation(op)
        .with_permission_type(ALLOW)
}

/// Every binding. The protocol's defaults are empty strings, which match
/// only empty names: a filter says null to match anything.
fn everything() -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1)
}

async fn grant(n: &Rc<Node>, rt: i8, resource: &str, op: i8) {
    let req = CreateAclsRequest::default().with_creations(vec![creation(ALICE, rt, resource, op)]);
    let r: CreateAclsResponse = call_as(n, ADMIN, ApiKey::CreateAcls, 3, &req).await;
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
}

async fn revoke_all(n: &Rc<Node>) {
    let req = DeleteAclsRequest::default().with_filters(vec![
        delete_acls_request::DeleteAclsFilter::default()
            .with_resource_name_filter(None)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    ]);
    let r: DeleteAclsResponse = call_as(n, ADMIN, ApiKey::DeleteAcls, 3, &req).await;
    assert_eq!(r.filter_results[0].error_code, 0);
    let left: DescribeAclsResponse =
        call_as(n, ADMIN, ApiKey::DescribeAcls, 3, &everything()).await;
    assert!(left.resources.is_empty(), "{:?}", left.resources);
}

#[test]
fn every_api_needs_what_kafka_checks() {
    let (_dir, mut config) = test_config();
    config.authorizer = "on".into();
    config.super_users = ADMIN.into();
    config.auto_create_topics = false;
    config.offsets_topic_partitions = 1;
    run(config, |n| async move {
        let req = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name(TOPIC))
                .with_num_partitions(1)
                .with_replication_factor(-1),
        ]);
        let r: CreateTopicsResponse = call_as(&n, ADMIN, ApiKey::CreateTopics, 7, &req).await;
        assert_eq!(r.topics[0].error_code, 0);
        for (api, op, rt, resource, refusal, probe) in table() {
            let denied = probe(n.clone()).await;
            assert_eq!(denied, refusal.code(), "{api} without an ACL");
            grant(&n, rt, resource, op).await;
            let allowed = probe(n.clone()).await;
            assert_ne!(
                allowed,
                refusal.code(),
                "{api} with operation {op} on {resource} (type {rt})"
            );
            revoke_all(&n).await;
            assert_eq!(probe(n.clone()).await, refusal.code(), "{api} once revoked");
        }
        // OffsetCommit needs Read on the topic too, checked per topic once
        // the group is allowed.
        let commit = table()
            .into_iter()
            .find(|row| row.0 == "OffsetCommit")
            .expect("row")
            .5;
        grant(&n, GROUP_TYPE, GROUP, READ).await;
        assert_eq!(
            commit(n.clone()).await,
            Kafka::TopicAuthorizationFailed.code()
        );
        grant(&n, TOPIC_TYPE, TOPIC, READ).await;
        let code = commit(n.clone()).await;
        assert!(
            code != Kafka::TopicAuthorizationFailed.code()
                && code != Kafka::GroupAuthorizationFailed.code(),
            "{code}"
        );
        revoke_all(&n).await;
    });
}

#[test]
fn the_acl_apis_answer_security_disabled_without_an_authorizer() {
    let (_dir, config) = test_config();
    run(config, |n| async move {
        let r: DescribeAclsResponse =
            call_as(&n, ALICE, ApiKey::DescribeAcls, 3, &everything()).await;
        assert_eq!(r.error_code, Kafka::SecurityDisabled.code());
        let req = CreateAclsRequest::default()
            .with_creations(vec![creation(ALICE, TOPIC_TYPE, "t", READ)]);
        let r: CreateAclsResponse = call_as(&n, ALICE, ApiKey::CreateAcls, 3, &req).await;
        assert_eq!(r.results[0].error_code, Kafka::SecurityDisabled.code());
        // Metadata reports every topic operation as authorized (KIP-430).
        let req = MetadataRequest::default()
            .with_topics(None)
            .with_include_cluster_authorized_operations(true);
        let r: MetadataResponse = call_as(&n, ALICE, ApiKey::Metadata, 10, &req).await;
        let cluster_ops = [5, 7, 8, 9, 10, 11, 12];
        let want = cluster_ops.iter().fold(0, |bits, op| bits | (1 << op));
        assert_eq!(r.cluster_authorized_operations, want);
    });
}

#[test]
fn invalid_bindings_and_filters_are_invalid_requests() {
    let (_dir, mut config) = test_config();
    config.authorizer = "on".into();
    config.super_users = ADMIN.into();
    run(config, |n| async move {
        let req = CreateAclsRequest::default().with_creations(vec![
            creation(ALICE, TOPIC_TYPE, "t", READ),
            creation(ALICE, 1, "t", READ),
            creation(ALICE, 6, "token", READ),
            creation("alice", TOPIC_TYPE, "t", READ),
            creation(ALICE, CLUSTER_TYPE, "other", ALTER),
        ]);
        let r: CreateAclsResponse = call_as(&n, ADMIN, ApiKey::CreateAcls, 3, &req).await;
        let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
        let bad = Kafka::InvalidRequest.code();
        assert_eq!(codes, vec![0, bad, bad, bad, bad]);
        let unknown = everything().with_operation(0);
        let r: DescribeAclsResponse = call_as(&n, ADMIN, ApiKey::DescribeAcls, 3, &unknown).await;
        assert_eq!(r.error_code, bad);
        let r: DescribeAclsResponse =
            call_as(&n, ADMIN, ApiKey::DescribeAcls, 3, &everything()).await;
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.resources[0].acls[0].principal.as_str(), ALICE);
    });
}

//! Kafka error semantics of the handlers, in-process on a real shard with
//! real logs: typed requests in, typed responses out, at several versions.

mod common;

use std::rc::Rc;

use broker::node::Node;
use bytes::{Bytes, BytesMut};
use common::inproc::{call, name, run, test_config};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as Kafka;

async fn create(
    shard: &Rc<Node>,
    topic: &str,
    partitions: i32,
    validate_only: bool,
) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default()
        .with_validate_only(validate_only)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    call(shard, ApiKey::CreateTopics, 7, &req).await
}

fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])])
}

#[test]
fn produce_fetch_and_their_errors() {
    let (_dir, config) = test_config();
    run(config, |shard| async move {
        // validate_only creates nothing.
        let r = create(&shard, "t", 2, true).await;
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].num_partitions, 2);
        assert!(shard.metadata().topic("t").is_none());
        let r = create(&shard, "t", 2, false).await;
        assert_eq!(r.topics[0].error_code, 0);
        let topic_id = r.topics[0].topic_id;
        assert!(!topic_id.is_nil());

        // Two batches in one records field are both appended.
        let a = storage::testing::batch_with_values(1000, [b"a".to_vec(), b"b".to_vec()]);
        let b = storage::testing::batch_with_values(2000, [b"c".to_vec()]);
        let mut two = BytesMut::new();
        two.extend_from_slice(&a);
        two.extend_from_slice(&b);
        let resp: ProduceResponse = call(
            &shard,
            ApiKey::Produce,
            9,
            &produce_request("t", 1, two.freeze()),
        )
        .await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));

        // Produce v13 names the topic by id.
        let by_id = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_topic_id(topic_id)
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(b.clone())),
                ])]);
        let resp: ProduceResponse = call(&shard, ApiKey::Produce, 13, &by_id).await;
        assert_eq!(resp.responses[0].topic_id, topic_id);
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));

        // max.message.bytes (2000 here) is enforced.
        let big = storage::testing::batch_with_values(3000, [vec![7u8; 4000]]);
        let resp: ProduceResponse =
            call(&shard, ApiKey::Produce, 9, &produce_request("t", 0, big)).await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code,
            Kafka::MessageTooLarge.code()
        );

        // A corrupt CRC is CORRUPT_MESSAGE; a partition out of range is unknown.
        let mut bad = a.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let resp: ProduceResponse = call(
            &shard,
            ApiKey::Produce,
            9,
            &produce_request("t", 0, Bytes::from(bad)),
        )
        .await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code,
            Kafka::CorruptMessage.code()
        );
        let resp: ProduceResponse = call(
            &shard,
            ApiKey::Produce,
            9,
            &produce_request("t", 5, a.clone()),
        )
        .await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code,
            Kafka::UnknownTopicOrPartition.code()
        );

        // Fetch by name (v12) and by topic id (v13+), and their errors.
        let fetch = |v: i16, id: uuid::Uuid, offset: i64| {
            FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(if v < 13 {
                        name("t")
                    } else {
                        TopicName::default()
                    })
                    .with_topic_id(if v >= 13 { id } else { uuid::Uuid::nil() })
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(1)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])])
        };
        for v in [4i16, 12, 13, 17, 18] {
            let resp: FetchResponse = call(&shard, ApiKey::Fetch, v, &fetch(v, topic_id, 0)).await;
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "v{v}");
            assert_eq!((p.high_watermark, p.last_stable_offset), (3, 3), "v{v}");
            let records = p.records.clone().expect("records");
            assert_eq!(
                records.len(),
                a.len() + b.len(),
                "v{v}: both batches, as stored"
            );
            let resp: FetchResponse = call(&shard, ApiKey::Fetch, v, &fetch(v, topic_id, 4)).await;
            assert_eq!(
                resp.responses[0].partitions[0].error_code,
                Kafka::OffsetOutOfRange.code(),
                "v{v}"
            );
        }
        let resp: FetchResponse = call(
            &shard,
            ApiKey::Fetch,
            13,
            &fetch(13, uuid::Uuid::new_v4(), 0),
        )
        .await;
        assert_eq!(
            resp.responses[0].partitions[0].error_code,
            Kafka::UnknownTopicId.code()
        );

        // ListOffsets: earliest, latest, by time, max timestamp, and nothing.
        for (ts, want_offset, want_ts) in [
            (-2i64, 0i64, -1i64),
            (-1, 3, -1),
            (1500, 2, 2000),
            (-3, 2, 2000),
            (9999, -1, -1),
        ] {
            let req = ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(ts)]),
            ]);
            let resp: ListOffsetsResponse = call(&shard, ApiKey::ListOffsets, 7, &req).await;
            let p = &resp.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.offset, p.timestamp),
                (0, want_offset, want_ts),
                "timestamp {ts}"
            );
        }

        // DeleteRecords moves the log start offset; reading below it is out
        // of range, and deleting past the high watermark is refused.
        let delete = |offset: i64| {
            DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(1)
                            .with_offset(offset),
                    ]),
            ])
        };
        let resp: DeleteRecordsResponse = call(&shard, ApiKey::DeleteRecords, 2, &delete(2)).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (0, 2));
        let resp: FetchResponse = call(&shard, ApiKey::Fetch, 12, &fetch(12, topic_id, 0)).await;
        assert_eq!(
            resp.responses[0].partitions[0].error_code,
            Kafka::OffsetOutOfRange.code()
        );
        let resp: DeleteRecordsResponse = call(&shard, ApiKey::DeleteRecords, 1, &delete(99)).await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            Kafka::OffsetOutOfRange.code()
        );
        let resp: DeleteRecordsResponse = call(&shard, ApiKey::DeleteRecords, 0, &delete(-1)).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (0, 3));

        // DescribeLogDirs reports the partitions' bytes on disk.
        for (v, topics) in [
            (1i16, None),
            (
                4,
                Some(vec![
                    describe_log_dirs_request::DescribableLogDirTopic::default()
                        .with_topic(name("t"))
                        .with_partitions(vec![1, 7]),
                ]),
            ),
        ] {
            let resp: DescribeLogDirsResponse = call(
                &shard,
                ApiKey::DescribeLogDirs,
                v,
                &DescribeLogDirsRequest::default().with_topics(topics),
            )
            .await;
            let dir = &resp.results[0];
            assert_eq!(dir.error_code, 0);
            let t = dir
                .topics
                .iter()
                .find(|t| t.name.0.as_str() == "t")
                .expect("topic t");
            let p1 = t
                .partitions
                .iter()
                .find(|p| p.partition_index == 1)
                .expect("partition 1");
            assert!(p1.partition_size > 0, "v{v}");
            assert!(t.partitions.iter().all(|p| p.partition_index != 7));
            if v >= 4 {
                assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
            }
        }

        // DescribeCluster names this broker as the controller.
        let resp: DescribeClusterResponse = call(
            &shard,
            ApiKey::DescribeCluster,
            1,
            &DescribeClusterRequest::default().with_endpoint_type(1),
        )
        .await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.brokers.len(), 1);
        assert_eq!(resp.cluster_id.as_str(), shard.metadata().cluster_id);

        // DeleteTopics by topic id (v6), then the id is unknown.
        let req = DeleteTopicsRequest::default().with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_topic_id(topic_id),
        ]);
        let resp: DeleteTopicsResponse = call(&shard, ApiKey::DeleteTopics, 6, &req).await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert_eq!(
            resp.responses[0].name.as_ref().map(|n| n.0.as_str()),
            Some("t")
        );
        let resp: DeleteTopicsResponse = call(&shard, ApiKey::DeleteTopics, 6, &req).await;
        assert_eq!(resp.responses[0].error_code, Kafka::UnknownTopicId.code());
        let resp: DeleteTopicsResponse = call(
            &shard,
            ApiKey::DeleteTopics,
            4,
            &DeleteTopicsRequest::default().with_topic_names(vec![name("t")]),
        )
        .await;
        assert_eq!(
            resp.responses[0].error_code,
            Kafka::UnknownTopicOrPartition.code()
        );
    });
}

#[test]
fn metadata_auto_creates_and_reports_bad_names() {
    let (_dir, config) = test_config();
    run(config, |shard| async move {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("auto"))),
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("bad/name"))),
            ]));
        let resp: MetadataResponse = call(&shard, ApiKey::Metadata, 12, &req).await;
        assert_eq!(resp.topics[0].error_code, 0);
        assert_eq!(resp.topics[0].partitions.len(), 1);
        assert!(!resp.topics[0].topic_id.is_nil());
        assert_eq!(
            resp.topics[1].error_code,
            Kafka::InvalidTopicException.code()
        );
        // Without permission to create, an unknown topic stays unknown.
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(name("other")))]));
        let resp: MetadataResponse = call(&shard, ApiKey::Metadata, 12, &req).await;
        assert_eq!(
            resp.topics[0].error_code,
            Kafka::UnknownTopicOrPartition.code()
        );
        // v1+: an empty list asks for no topics; null asks for all.
        let resp: MetadataResponse = call(
            &shard,
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )
        .await;
        assert!(resp.topics.is_empty());
        let resp: MetadataResponse = call(
            &shard,
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
        assert_eq!(resp.topics.len(), 1);
    });
}

#[test]
fn incremental_alter_configs_set_delete_append() {
    let (_dir, config) = test_config();
    run(config, |shard| async move {
        assert_eq!(create(&shard, "c", 1, false).await.topics[0].error_code, 0);
        let alter = |ops: Vec<(&str, i8, Option<&str>)>| {
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("c"))
                    .with_configs(
                        ops.into_iter()
                            .map(|(k, op, v)| {
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_string(k.to_string()))
                                    .with_config_operation(op)
                                    .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
                            })
                            .collect(),
                    ),
            ])
        };
        let configs =
            |shard: &Rc<Node>| shard.metadata().topic("c").expect("topic").configs.clone();
        let resp: IncrementalAlterConfigsResponse = call(
            &shard,
            ApiKey::IncrementalAlterConfigs,
            1,
            &alter(vec![
                ("retention.ms", 0, Some("5000")),
                ("segment.bytes", 0, Some("1048576")),
            ]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert_eq!(
            configs(&shard).get("retention.ms").map(String::as_str),
            Some("5000")
        );
        let resp: IncrementalAlterConfigsResponse = call(
            &shard,
            ApiKey::IncrementalAlterConfigs,
            0,
            &alter(vec![("retention.ms", 1, None)]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert!(!configs(&shard).contains_key("retention.ms"));
        assert!(configs(&shard).contains_key("segment.bytes"));
        for bad in [
            vec![("retention.ms", 2, Some("1"))],
            vec![("segment.bytes", 0, Some("1"))],
            vec![("no.such.key", 0, Some("1"))],
        ] {
            let resp: IncrementalAlterConfigsResponse =
                call(&shard, ApiKey::IncrementalAlterConfigs, 1, &alter(bad)).await;
            assert_eq!(resp.responses[0].error_code, Kafka::InvalidConfig.code());
        }
        assert_eq!(
            configs(&shard).get("segment.bytes").map(String::as_str),
            Some("1048576")
        );
    });
}

#[test]
fn offset_for_leader_epoch_answers_from_the_leaders_epoch_history() {
    let (_dir, config) = test_config();
    run(config, |shard| async move {
        assert_eq!(create(&shard, "e", 1, false).await.topics[0].error_code, 0);
        let batch = storage::testing::batch_with_values(1000, [b"a".to_vec(), b"b".to_vec()]);
        let resp: ProduceResponse =
            call(&shard, ApiKey::Produce, 9, &produce_request("e", 0, batch)).await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        let meta: MetadataResponse = call(
            &shard,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("e"))),
            ])),
        )
        .await;
        let epoch = meta.topics[0].partitions[0].leader_epoch;
        assert!(epoch >= 0, "a replicated partition has a leader epoch");
        let ask = |partition: i32, current: i32, asked: i32| {
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(name("e"))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(partition)
                                .with_current_leader_epoch(current)
                                .with_leader_epoch(asked),
                        ]),
                ])
        };
        let answer = |r: OffsetForLeaderEpochResponse| {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.leader_epoch, p.end_offset)
        };
        // The current epoch ends at the log end.
        let r = call(
            &shard,
            ApiKey::OffsetForLeaderEpoch,
            4,
            &ask(0, epoch, epoch),
        )
        .await;
        assert_eq!(answer(r), (0, epoch, 2));
        // A newer epoch asked about: the latest this log has.
        let r = call(
            &shard,
            ApiKey::OffsetForLeaderEpoch,
            3,
            &ask(0, -1, epoch + 5),
        )
        .await;
        assert_eq!(answer(r), (0, epoch, 2));
        // A client that knows a newer leader epoch than this leader.
        let r = call(
            &shard,
            ApiKey::OffsetForLeaderEpoch,
            4,
            &ask(0, epoch + 1, epoch),
        )
        .await;
        assert_eq!(answer(r).0, Kafka::UnknownLeaderEpoch.code());
        if epoch > 0 {
            let r = call(
                &shard,
                ApiKey::OffsetForLeaderEpoch,
                4,
                &ask(0, epoch - 1, epoch),
            )
            .await;
            assert_eq!(answer(r).0, Kafka::FencedLeaderEpoch.code());
        }
        let r = call(&shard, ApiKey::OffsetForLeaderEpoch, 2, &ask(7, -1, epoch)).await;
        assert_eq!(answer(r).0, Kafka::UnknownTopicOrPartition.code());
    });
}

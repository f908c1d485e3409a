//! Produce on a partition this node leads: the batches checked before any
//! is appended, `min.insync.replicas` enforced for acks=all, and the wait
//! for the in-sync replicas before an acks=all write is answered.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_util::future::join_all;
use kafka_protocol::ResponseError as Kafka;
use replication::log_replica::{LogReplica, ReplicaError};

use super::{PartitionWrite, ProduceItem};
use crate::errors::{code, storage_error_code};
use crate::in_line::Started;
use crate::shard::{Shard, TopicPartition};

/// Appends each item's batches. Every append takes its offsets on this
/// future's first poll, in item order, before anything waits: a request
/// served after this one, even before this one is answered, appends
/// behind it (the order pipelined produce requests rely on).
pub async fn produce(shard: &Rc<Shard>, items: Vec<ProduceItem>) -> Vec<PartitionWrite> {
    // Partitions are written concurrently so that one flush round (and one
    // fsync) covers them all.
    join_all(items.into_iter().map(|item| produce_one(shard, item))).await
}

async fn produce_one(shard: &Shard, item: ProduceItem) -> PartitionWrite {
    let fail = |error_code: i16, message: Option<String>| PartitionWrite {
        error_code,
        error_message: message,
        base_offset: -1,
        log_start_offset: -1,
    };
    let replica = match shard.led(&item.tp) {
        Ok(r) => r,
        Err(code) => return fail(code, None),
    };
    let min_isr = shard
        .metadata()
        .topic(&item.tp.0)
        .map_or(1, min_insync_replicas);
    let short_of_replicas = |replica: &LogReplica| {
        let isr = replica.isr().map_or(0, |i| i.len() as i64);
        (isr < min_isr).then(|| {
            format!(
                "the in-sync replicas ({isr}) of {}-{} are fewer than min.insync.replicas ({min_isr})",
                item.tp.0, item.tp.1
            )
        })
    };
    if item.acks == -1 {
        if let Some(message) = short_of_replicas(&replica) {
            return fail(code(Kafka::NotEnoughReplicas), Some(message));
        }
    }
    let written = append_records(&replica, &item.records).await;
    if written.error_code != 0 {
        return written;
    }
    shard.appended.notify();
    if item.acks != -1 {
        return written;
    }
    // acks=all: the ISR must have everything up to the log end as of
    // this append, which covers these records.
    let end = replica.log().log_end_offset();
    let timeout = Duration::from_millis(item.timeout_ms.max(0) as u64);
    if let Err(error_code) = await_high_watermark(shard, &item.tp, &replica, end, timeout).await {
        let message = (error_code == code(Kafka::RequestTimedOut)).then(|| {
            format!(
                "the in-sync replicas did not acknowledge within {} ms",
                item.timeout_ms
            )
        });
        return fail(error_code, message);
    }
    if let Some(message) = short_of_replicas(&replica) {
        return fail(code(Kafka::NotEnoughReplicasAfterAppend), Some(message));
    }
    written
}

/// Waits until the high watermark reaches `end` while this node leads
/// the partition: NOT_LEADER_OR_FOLLOWER if it stops leading,
/// REQUEST_TIMED_OUT after `timeout`.
pub async fn await_high_watermark(
    shard: &Shard,
    tp: &TopicPartition,
    replica: &Rc<LogReplica>,
    end: i64,
    timeout: Duration,
) -> Result<(), i16> {
    let deadline = Instant::now() + timeout;
    loop {
        let same = shard.replica(tp).is_some_and(|r| Rc::ptr_eq(&r, replica));
        if !replica.is_leader() || !same {
            return Err(code(Kafka::NotLeaderOrFollower));
        }
        if replica.high_watermark() >= end {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || shard.is_shutting_down() {
            return Err(code(Kafka::RequestTimedOut));
        }
        future::or(
            shard.appended.next(),
            crate::rt::sleep(left.min(Duration::from_millis(100))),
        )
        .await;
    }
}

/// Appends the record batches of one partition's produce data. Every batch
/// is validated before any is appended, so a bad batch leaves the log as it
/// was, as Kafka does.
async fn append_records(replica: &LogReplica, records: &bytes::Bytes) -> PartitionWrite {
    let fail = |error_code: i16, message: String| PartitionWrite {
        error_code,
        error_message: Some(message),
        base_offset: -1,
        log_start_offset: -1,
    };
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        let size = match storage::batch::peek_batch_size(rest) {
            Some(size) if size <= rest.len() => size,
            _ => {
                return fail(
                    code(Kafka::CorruptMessage),
                    format!("record batch at byte {at} is truncated"),
                )
            }
        };
        batches.push(records.slice(at..at + size));
        at += size;
    }
    // The log validates every batch it appends; with several, all are
    // checked first so that a bad one leaves the log as it was. One batch
    // (what producers send) is checked once, by the log.
    if batches.len() > 1 {
        for batch in &batches {
            if let Err(e) = storage::batch::validate(batch) {
                let err = storage::StorageError::InvalidBatch(e);
                return fail(storage_error_code(&err), err.to_string());
            }
        }
    }
    if batches.is_empty() {
        return fail(code(Kafka::InvalidRecord), "no record batch".into());
    }
    // Each batch takes its offsets before the next is started, and one
    // refused then stops the rest; the writes are awaited afterwards.
    let mut started = Vec::with_capacity(batches.len());
    for batch in batches {
        let append = Started::start(async move { replica.append_as_leader(&batch).await }).await;
        let refused = matches!(append, Started::Done(Err(_)));
        started.push(append);
        if refused {
            break;
        }
    }
    let mut first: Option<storage::AppendInfo> = None;
    for append in started {
        match append.finish().await {
            Ok(info) => {
                first.get_or_insert(info);
            }
            Err(ReplicaError::Storage(e)) => return fail(storage_error_code(&e), e.to_string()),
            Err(e) => return fail(code(Kafka::NotLeaderOrFollower), e.to_string()),
        }
    }
    match first {
        Some(info) => PartitionWrite {
            error_code: 0,
            error_message: None,
            base_offset: info.base_offset,
            log_start_offset: info.log_start_offset,
        },
        None => fail(code(Kafka::UnknownServerError), "nothing appended".into()),
    }
}

/// `min.insync.replicas` of a topic (1 unless set).
pub fn min_insync_replicas(topic: &crate::metadata::TopicMeta) -> i64 {
    topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use uuid::Uuid;

    use super::*;
    use crate::config::Config;
    use crate::metadata::{ClusterMetadata, TopicMeta};
    use crate::partition::placement::{apply_metadata, close_logs};

    fn batch(value: &str) -> Bytes {
        crate::batch::encode(vec![crate::batch::NewRecord {
            key: None,
            value: Some(Bytes::from(value.to_string())),
            timestamp_ms: 1,
        }])
        .expect("encodes")
    }

    fn item(records: Bytes, acks: i16) -> ProduceItem {
        ProduceItem {
            tp: ("t".into(), 0),
            records,
            acks,
            timeout_ms: 1_000,
        }
    }

    /// A shard context alone, with no node around it: the partition work is
    /// testable without the subsystems.
    fn on_a_shard(configs: &[(&str, &str)], f: impl AsyncFnOnce(Rc<Shard>) + Send + 'static) {
        let dir = tempfile::tempdir().expect("tempdir");
        let configs: std::collections::BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            fsync: Some("never".into()),
            ..Config::default()
        };
        glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move {
                let shard = Rc::new(
                    Shard::new(0, 1, Arc::new(config), Arc::new(AtomicBool::new(false)))
                        .expect("shard"),
                );
                let mut meta = ClusterMetadata::new();
                meta.topics.insert(
                    "t".into(),
                    TopicMeta {
                        name: "t".into(),
                        topic_id: Uuid::new_v4(),
                        partitions: 1,
                        configs,
                        states: Vec::new(),
                    },
                );
                apply_metadata(&shard, Arc::new(meta)).await;
                f(shard.clone()).await;
                close_logs(&shard).await;
            })
            .expect("executor")
            .join()
            .expect("runs");
        drop(dir);
    }

    #[test]
    fn a_bad_batch_among_good_ones_appends_nothing() {
        on_a_shard(&[], async |shard| {
            let mut records = BytesMut::new();
            records.extend_from_slice(&batch("a"));
            let mut bad = batch("b").to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0xff; // the CRC no longer matches
            records.extend_from_slice(&bad);
            let written = produce(&shard, vec![item(records.freeze(), 1)]).await;
            assert_eq!(written[0].error_code, code(Kafka::CorruptMessage));
            let log = shard.log(&("t".into(), 0)).expect("the log is open");
            assert_eq!(log.log_end_offset(), 0, "the good batch was not appended");

            let truncated = batch("c").slice(..20);
            let written = produce(&shard, vec![item(truncated, 1)]).await;
            assert_eq!(written[0].error_code, code(Kafka::CorruptMessage));

            let written = produce(&shard, vec![item(batch("d"), -1)]).await;
            assert_eq!(written[0].error_code, 0);
            assert_eq!(written[0].base_offset, 0);
        });
    }

    #[test]
    fn every_append_takes_its_offsets_when_the_produce_is_started() {
        on_a_shard(&[], async |shard| {
            let earlier = Started::start(produce(
                &shard,
                vec![item(batch("a1"), 1), item(batch("a2"), 1)],
            ))
            .await;
            let log = shard.log(&("t".into(), 0)).expect("the log is open");
            assert_eq!(log.next_offset(), 2, "both appends took their offsets");
            let later = Started::start(produce(&shard, vec![item(batch("b"), 1)])).await;
            assert_eq!(log.next_offset(), 3);
            let later = later.finish().await;
            let earlier = earlier.finish().await;
            let offsets =
                |w: &[PartitionWrite]| w.iter().map(|w| w.base_offset).collect::<Vec<_>>();
            assert_eq!(offsets(&earlier), [0, 1], "the earlier request went first");
            assert_eq!(offsets(&later), [2]);
        });
    }

    #[test]
    fn acks_all_is_refused_below_min_insync_replicas() {
        on_a_shard(&[("min.insync.replicas", "2")], async |shard| {
            let written = produce(&shard, vec![item(batch("a"), -1)]).await;
            assert_eq!(written[0].error_code, code(Kafka::NotEnoughReplicas));
            let written = produce(&shard, vec![item(batch("b"), 1)]).await;
            assert_eq!(written[0].error_code, 0, "acks=1 does not need the ISR");
        });
    }
}

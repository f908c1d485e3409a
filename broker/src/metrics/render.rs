//! Turns the shards' snapshots into one Prometheus text exposition (format
//! 0.0.4, encoded by `prometheus-client`) and into the `/health` verdict.
//! Broker-wide series are sums over shards; per-shard series carry a
//! `shard` label; group lag joins the coordinators' committed offsets with
//! the owners' high watermarks here, since they live on different shards.

use std::collections::BTreeMap;

use kafka_protocol::messages::ApiKey;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use storage::stats::{HistogramSnapshot, LATENCY_BOUNDS_US};

use super::{PartitionSnapshot, ShardSnapshot};

type Labels = Vec<(&'static str, String)>;

/// Every shard's snapshot, added up once per scrape.
#[derive(Debug, Default)]
struct Merged {
    shards: Vec<ShardSnapshot>,
    requests: BTreeMap<i16, HistogramSnapshot>,
    fsync: HistogramSnapshot,
    partitions: BTreeMap<(String, i32), PartitionSnapshot>,
}

impl Merged {
    fn new(shards: Vec<ShardSnapshot>) -> Merged {
        let mut m = Merged::default();
        for s in &shards {
            for (key, h) in &s.requests {
                m.requests.entry(*key).or_default().merge(h);
            }
            m.fsync.merge(&s.fsync);
            for p in &s.partitions {
                m.partitions
                    .insert((p.topic.clone(), p.partition), p.clone());
            }
        }
        m.shards = shards;
        m
    }

    fn sum(&self, f: impl Fn(&ShardSnapshot) -> u64) -> u64 {
        self.shards.iter().map(f).fold(0, u64::wrapping_add)
    }

    /// A (listener, mechanism, count) series of every shard, added up.
    fn by_listener_and_mechanism(
        &self,
        f: impl Fn(&ShardSnapshot) -> &Vec<(String, String, u64)>,
    ) -> Vec<(Labels, u64)> {
        self.by_two_labels(("listener", "mechanism"), f)
    }

    fn by_two_labels(
        &self,
        names: (&'static str, &'static str),
        f: impl Fn(&ShardSnapshot) -> &Vec<(String, String, u64)>,
    ) -> Vec<(Labels, u64)> {
        let mut total: BTreeMap<(String, String), u64> = BTreeMap::new();
        for s in &self.shards {
            for (listener, mechanism, n) in f(s) {
                *total
                    .entry((listener.clone(), mechanism.clone()))
                    .or_default() += n;
            }
        }
        total
            .into_iter()
            .map(|((listener, mechanism), n)| (vec![(names.0, listener), (names.1, mechanism)], n))
            .collect()
    }
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(api) => format!("{api:?}"),
        Err(()) => "other".to_string(),
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut me = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        me.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut me = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        me.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, HistogramSnapshot)],
) -> Result<(), std::fmt::Error> {
    let mut me = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        // The encoder accumulates the buckets and adds +Inf = count.
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
            .iter()
            .zip(h.counts.iter())
            .map(|(&us, &n)| (us as f64 / 1e6, n))
            .collect();
        me.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Merged {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut enc;
        let apis: Vec<(Labels, HistogramSnapshot)> = self
            .requests
            .iter()
            .map(|(k, h)| (vec![("api", api_name(*k))], *h))
            .collect();
        let counts: Vec<(Labels, u64)> = apis.iter().map(|(l, h)| (l.clone(), h.count())).collect();
        counter(
            e,
            "sluice_requests",
            "Kafka requests answered, by API.",
            &counts,
        )?;
        histogram(
            e,
            "sluice_request_duration_seconds",
            "Time from a request decoded to its response written, by API.",
            &apis,
        )?;
        counter(
            e,
            "sluice_bytes_in",
            "Bytes of Kafka request frames received.",
            &[(vec![], self.sum(|s| s.bytes_in))],
        )?;
        counter(
            e,
            "sluice_bytes_out",
            "Bytes of Kafka response frames sent.",
            &[(vec![], self.sum(|s| s.bytes_out))],
        )?;
        gauge(
            e,
            "sluice_connections",
            "Client connections open now.",
            &[(vec![], self.sum(|s| s.connections_active) as i64)],
        )?;
        counter(
            e,
            "sluice_connections_accepted",
            "Client connections accepted.",
            &[(vec![], self.sum(|s| s.connections_accepted))],
        )?;
        counter(
            e,
            "sluice_connections_refused",
            "Client connections refused at the per-shard limit.",
            &[(vec![], self.sum(|s| s.connections_refused))],
        )?;
        let failed = self.by_listener_and_mechanism(|s| &s.authentications_failed);
        counter(
            e,
            "sluice_sasl_authentications_failed",
            "Failed SASL authentications, by listener and mechanism.",
            &failed,
        )?;
        counter(
            e,
            "sluice_http_authentications_failed",
            "HTTP requests refused for missing or wrong credentials, by listener.",
            &[(
                vec![("listener", "ingest".to_string())],
                self.sum(|s| s.ingest_http_authentications_failed),
            )],
        )?;
        counter(
            e,
            "sluice_sasl_reauthentications",
            "SASL re-authentications (KIP-368) completed, by listener and mechanism.",
            &self.by_listener_and_mechanism(|s| &s.reauthentications),
        )?;
        counter(
            e,
            "sluice_authorizations_denied",
            "Operations the authorizer refused, by resource type and operation.",
            &self.by_two_labels(("resource_type", "operation"), |s| &s.authorizations_denied),
        )?;
        counter(
            e,
            "sluice_sasl_sessions_expired",
            "Connections closed because their SASL session expired without a re-authentication.",
            &[(vec![], self.sum(|s| s.sessions_expired))],
        )?;
        counter(
            e,
            "sluice_tls_handshakes_failed",
            "TLS handshakes that failed or timed out: the Kafka SSL and SASL_SSL listeners, and the HTTPS metrics and ingest endpoints.",
            &[(vec![], self.sum(|s| s.tls_handshakes_failed))],
        )?;
        counter(
            e,
            "sluice_influx_points",
            "Influx line-protocol points stored.",
            &[(vec![], self.sum(|s| s.influx_points))],
        )?;
        counter(
            e,
            "sluice_influx_lines_malformed",
            "Influx line-protocol lines refused as malformed (HTTP and TCP).",
            &[(vec![], self.sum(|s| s.influx_lines_malformed))],
        )?;
        counter(
            e,
            "sluice_prometheus_samples",
            "Prometheus remote-write samples stored.",
            &[(vec![], self.sum(|s| s.prometheus_samples))],
        )?;
        counter(
            e,
            "sluice_prometheus_writes_malformed",
            "Prometheus remote-write requests refused as malformed.",
            &[(vec![], self.sum(|s| s.prometheus_writes_malformed))],
        )?;
        counter(
            e,
            "sluice_ingest_writes_busy",
            "Ingest writes refused with 429 because a partition's queue was full.",
            &[(vec![], self.sum(|s| s.ingest_writes_busy))],
        )?;
        histogram(
            e,
            "sluice_fsync_duration_seconds",
            "fdatasync latency of partition logs.",
            &[(vec![], self.fsync)],
        )?;
        self.encode_partitions(e)?;
        self.encode_groups(e)?;
        self.encode_shards(e)
    }
}

impl Merged {
    fn encode_partitions(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per = |f: fn(&PartitionSnapshot) -> i64| -> Vec<(Labels, i64)> {
            self.partitions
                .values()
                .map(|p| {
                    (
                        vec![
                            ("topic", p.topic.clone()),
                            ("partition", p.partition.to_string()),
                        ],
                        f(p),
                    )
                })
                .collect()
        };
        gauge(
            e,
            "sluice_partition_log_end_offset",
            "Offset the partition's next record gets.",
            &per(|p| p.log_end_offset),
        )?;
        gauge(
            e,
            "sluice_partition_high_watermark",
            "Offset up to which consumers are served (what Fetch reports).",
            &per(|p| p.high_watermark),
        )?;
        gauge(
            e,
            "sluice_partition_log_start_offset",
            "First offset still in the partition's log.",
            &per(|p| p.log_start_offset),
        )?;
        gauge(
            e,
            "sluice_partition_size_bytes",
            "Bytes of the partition's segment files.",
            &per(|p| p.size_bytes.min(i64::MAX as u64) as i64),
        )?;
        gauge(
            e,
            "sluice_partition_offline",
            "1 when the partition's log is offline after a failed fsync.",
            &per(|p| i64::from(p.offline)),
        )?;
        let under: u64 = self.shards.iter().map(|s| s.under_replicated).sum();
        gauge(
            e,
            "sluice_under_replicated_partitions",
            "Partitions led here with fewer in-sync replicas than replicas.",
            &[(vec![], under as i64)],
        )
    }

    fn encode_groups(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut committed = Vec::new();
        let mut lag = Vec::new();
        for s in &self.shards {
            for c in &s.committed {
                let labels: Labels = vec![
                    ("group", c.group.clone()),
                    ("topic", c.topic.clone()),
                    ("partition", c.partition.to_string()),
                ];
                committed.push((labels.clone(), c.offset));
                if let Some(p) = self.partitions.get(&(c.topic.clone(), c.partition)) {
                    lag.push((labels, lag_of(c.offset, p)));
                }
            }
        }
        committed.sort();
        lag.sort();
        gauge(
            e,
            "sluice_group_committed_offset",
            "Offset a consumer group committed for a partition.",
            &committed,
        )?;
        gauge(
            e,
            "sluice_group_lag",
            "High watermark minus the group's committed offset (records not yet consumed).",
            &lag,
        )
    }

    fn encode_shards(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per = |f: fn(&ShardSnapshot) -> u64| -> Vec<(Labels, u64)> {
            self.shards
                .iter()
                .map(|s| (vec![("shard", s.shard.to_string())], f(s)))
                .collect()
        };
        let busy: Vec<(Labels, f64)> = self
            .shards
            .iter()
            .map(|s| (vec![("shard", s.shard.to_string())], s.busy_ns as f64 / 1e9))
            .collect();
        let mut me = e.encode_descriptor(
            "sluice_shard_busy_seconds",
            "Time the shard's executor ran tasks or polled I/O; its rate is the busy fraction.",
            None,
            MetricType::Counter,
        )?;
        for (labels, v) in &busy {
            me.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
        counter(
            e,
            "sluice_shard_stalls",
            "Times the shard's reactor ran a timer 150 ms or more late.",
            &per(|s| s.stalls),
        )?;
        let lag: Vec<(Labels, HistogramSnapshot)> = self
            .shards
            .iter()
            .map(|s| (vec![("shard", s.shard.to_string())], s.reactor_lag))
            .collect();
        histogram(
            e,
            "sluice_shard_reactor_lag_seconds",
            "How late the shard's reactor ran a 100 ms timer.",
            &lag,
        )?;
        gauge(
            e,
            "sluice_shard_serving",
            "1 while the shard accepts connections.",
            &self
                .shards
                .iter()
                .map(|s| (vec![("shard", s.shard.to_string())], i64::from(s.serving)))
                .collect::<Vec<_>>(),
        )
    }
}

/// Records a group has not consumed; a commit past the high watermark (or
/// the -1 of "no offset") counts as none or all of it, never negative.
fn lag_of(committed: i64, p: &PartitionSnapshot) -> i64 {
    let from = committed.max(p.log_start_offset);
    (p.high_watermark - from).max(0)
}

/// The Prometheus text exposition of every shard's snapshot.
pub fn render(shards: Vec<ShardSnapshot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Merged::new(shards)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        // Only a fmt::Write to a String, which cannot fail.
        tracing::error!("encoding metrics failed: {e}");
    }
    out
}

/// `/health`: `Ok` when every shard is serving and no log is offline,
/// otherwise the reasons.
pub fn health(shards: &[ShardSnapshot]) -> Result<(), String> {
    let mut reasons = Vec::new();
    for s in shards {
        if !s.serving {
            reasons.push(format!("shard {} is not serving", s.shard));
        }
        for p in s.partitions.iter().filter(|p| p.offline) {
            reasons.push(format!("log {}-{} is offline", p.topic, p.partition));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CommittedOffset;

    fn partition(topic: &str, hw: i64) -> PartitionSnapshot {
        PartitionSnapshot {
            topic: topic.into(),
            partition: 0,
            log_start_offset: 0,
            log_end_offset: hw,
            high_watermark: hw,
            size_bytes: 4096,
            offline: false,
        }
    }

    #[test]
    fn shards_are_summed_and_lag_joins_offsets_with_watermarks() {
        let mut h = HistogramSnapshot::default();
        h.counts[3] = 2;
        h.sum_ns = 600_000;
        let a = ShardSnapshot {
            shard: 0,
            serving: true,
            requests: vec![(0, h)],
            bytes_in: 10,
            partitions: vec![partition("t", 10)],
            ..ShardSnapshot::default()
        };
        let b = ShardSnapshot {
            shard: 1,
            serving: true,
            requests: vec![(0, h)],
            bytes_in: 5,
            committed: vec![CommittedOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 7,
            }],
            ..ShardSnapshot::default()
        };
        assert_eq!(health(&[a.clone(), b.clone()]), Ok(()));
        let text = render(vec![a, b]);
        assert!(
            text.contains("sluice_requests_total{api=\"Produce\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("sluice_bytes_in_total 15\n"), "{text}");
        assert!(text
            .contains("sluice_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("sluice_group_lag{group=\"g\",topic=\"t\",partition=\"0\"} 3\n"));
        assert!(text.contains("sluice_shard_busy_seconds_total{shard=\"1\"} 0"));
    }

    #[test]
    fn health_names_offline_logs_and_idle_shards() {
        let mut p = partition("t", 1);
        p.offline = true;
        let s = ShardSnapshot {
            shard: 1,
            serving: false,
            partitions: vec![p],
            ..ShardSnapshot::default()
        };
        assert_eq!(
            health(&[s]),
            Err("shard 1 is not serving; log t-0 is offline".into())
        );
    }
}

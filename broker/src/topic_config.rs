//! Topic-level configs (`retention.ms`, `segment.bytes`, ...): which keys
//! exist, how values are checked, how they become a storage `LogConfig`,
//! and how DescribeConfigs reports them with their source.

use std::collections::BTreeMap;

use storage::{CleanupPolicy, FsyncPolicy, LogConfig};

use crate::config::Config;

/// DescribeConfigs `config_type` values (Kafka's ConfigType).
pub mod config_type {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
}

/// DescribeConfigs `config_source` values (Kafka's ConfigSource).
pub mod config_source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// One topic config key: its type, the broker key its default comes from,
/// and Kafka's own default (to tell a broker override from a default).
pub struct TopicKey {
    pub name: &'static str,
    pub config_type: i8,
    pub broker_key: &'static str,
    pub kafka_default: &'static str,
}

pub const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey {
        name: "cleanup.policy",
        config_type: config_type::LIST,
        broker_key: "log.cleanup.policy",
        kafka_default: "delete",
    },
    TopicKey {
        name: "delete.retention.ms",
        config_type: config_type::LONG,
        broker_key: "log.cleaner.delete.retention.ms",
        kafka_default: "86400000",
    },
    TopicKey {
        name: "index.interval.bytes",
        config_type: config_type::INT,
        broker_key: "log.index.interval.bytes",
        kafka_default: "4096",
    },
    TopicKey {
        name: "max.message.bytes",
        config_type: config_type::INT,
        broker_key: "message.max.bytes",
        kafka_default: "1048588",
    },
    TopicKey {
        name: "message.timestamp.type",
        config_type: config_type::STRING,
        broker_key: "log.message.timestamp.type",
        kafka_default: "CreateTime",
    },
    TopicKey {
        name: "min.cleanable.dirty.ratio",
        config_type: config_type::DOUBLE,
        broker_key: "log.cleaner.min.cleanable.ratio",
        kafka_default: "0.5",
    },
    TopicKey {
        name: "min.compaction.lag.ms",
        config_type: config_type::LONG,
        broker_key: "log.cleaner.min.compaction.lag.ms",
        kafka_default: "0",
    },
    TopicKey {
        name: "min.insync.replicas",
        config_type: config_type::INT,
        broker_key: "min.insync.replicas",
        kafka_default: "1",
    },
    TopicKey {
        name: "retention.bytes",
        config_type: config_type::LONG,
        broker_key: "log.retention.bytes",
        kafka_default: "-1",
    },
    TopicKey {
        name: "retention.ms",
        config_type: config_type::LONG,
        broker_key: "log.retention.ms",
        kafka_default: "604800000",
    },
    TopicKey {
        name: "segment.bytes",
        config_type: config_type::INT,
        broker_key: "log.segment.bytes",
        kafka_default: "1073741824",
    },
    TopicKey {
        name: "segment.ms",
        config_type: config_type::LONG,
        broker_key: "log.roll.ms",
        kafka_default: "604800000",
    },
    TopicKey {
        name: "unclean.leader.election.enable",
        config_type: config_type::BOOLEAN,
        broker_key: "unclean.leader.election.enable",
        kafka_default: "false",
    },
    TopicKey {
        name: "sluice.fsync",
        config_type: config_type::STRING,
        broker_key: "sluice.fsync",
        kafka_default: "interval",
    },
    TopicKey {
        name: "sluice.fsync.interval.ms",
        config_type: config_type::LONG,
        broker_key: "sluice.fsync.interval.ms",
        kafka_default: "100",
    },
];

/// The value a topic gets for `key` when it sets nothing itself.
pub fn broker_default(config: &Config, key: &str) -> Option<String> {
    Some(match key {
        "cleanup.policy" => "delete".into(),
        "delete.retention.ms" => "86400000".into(),
        "index.interval.bytes" => "4096".into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "max.message.bytes" => config.max_message_bytes.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "retention.bytes" => config.retention_bytes.to_string(),
        "retention.ms" => config.retention_ms.to_string(),
        "segment.bytes" => config.segment_bytes.to_string(),
        "segment.ms" => config.segment_ms.to_string(),
        "min.insync.replicas" => "1".into(),
        "unclean.leader.election.enable" => "false".into(),
        "sluice.fsync" => config
            .fsync_policy()
            .map(|p| p.name().to_string())
            .unwrap_or_default(),
        "sluice.fsync.interval.ms" => config.fsync_interval_ms.to_string(),
        _ => return None,
    })
}

fn parse_i64(key: &str, value: &str, min: i64, max: i64) -> Result<i64, String> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("Invalid value {value} for configuration {key}: Not a number"))?;
    if v < min || v > max {
        return Err(format!(
            "Invalid value {value} for configuration {key}: Value must be between {min} and {max}"
        ));
    }
    Ok(v)
}

/// Applies topic overrides to the broker's default log configuration,
/// refusing unknown keys and bad values with Kafka's wording.
pub fn log_config(
    base: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, String> {
    let mut log = base.clone();
    let mut fsync: Option<&str> = None;
    let mut fsync_interval_ms: Option<u64> = None;
    for (key, value) in overrides {
        match key.as_str() {
            "min.insync.replicas" => {
                // Enforced by Produce with acks=all; not a log setting.
                parse_i64(key, value, 1, i32::MAX.into())?;
            }
            "unclean.leader.election.enable" => {
                // Read by the controller when it elects leaders.
                if !matches!(value.trim(), "true" | "false") {
                    return Err(format!(
                        "Invalid value {value} for configuration {key}: Expected value to be either true or false"
                    ));
                }
            }
            "sluice.fsync" => {
                let v = value.trim();
                if !matches!(v, "always" | "interval" | "never") {
                    return Err(format!(
                        "Invalid value {value} for configuration sluice.fsync: String must be one of: always, interval, never"
                    ));
                }
                fsync = Some(v);
            }
            "sluice.fsync.interval.ms" => {
                fsync_interval_ms = Some(parse_i64(key, value, 1, i64::MAX)? as u64);
            }
            "cleanup.policy" => {
                log.cleanup_policy = CleanupPolicy::parse(value).ok_or_else(|| {
                    format!(
                        "Invalid value {value} for configuration cleanup.policy: String must be one of: compact, delete"
                    )
                })?;
            }
            "delete.retention.ms" => {
                log.delete_retention_ms = parse_i64(key, value, 0, i64::MAX)? as u64;
            }
            "min.compaction.lag.ms" => {
                log.min_compaction_lag_ms = parse_i64(key, value, 0, i64::MAX)? as u64;
            }
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value.trim().parse().map_err(|_| {
                    format!("Invalid value {value} for configuration {key}: Not a number of type DOUBLE")
                })?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!(
                        "Invalid value {value} for configuration {key}: Value must be between 0 and 1"
                    ));
                }
                log.min_cleanable_dirty_ratio = v;
            }
            "message.timestamp.type" => {
                if value.trim() != "CreateTime" {
                    return Err(format!(
                        "Invalid value {value} for configuration message.timestamp.type: only CreateTime is supported"
                    ));
                }
            }
            "index.interval.bytes" => {
                log.index_interval_bytes = parse_i64(key, value, 1, i32::MAX.into())? as u32;
            }
            "max.message.bytes" => {
                log.max_batch_bytes = parse_i64(key, value, 61, i32::MAX.into())? as u32;
            }
            "retention.bytes" => {
                let v = parse_i64(key, value, -1, i64::MAX)?;
                log.retention_bytes = u64::try_from(v).ok();
            }
            "retention.ms" => {
                let v = parse_i64(key, value, -1, i64::MAX)?;
                log.retention_ms = u64::try_from(v).ok();
            }
            "segment.bytes" => {
                log.segment_bytes = parse_i64(key, value, 14, i32::MAX.into())? as u64;
            }
            "segment.ms" => {
                log.segment_ms = parse_i64(key, value, 1, i64::MAX)? as u64;
            }
            other => return Err(format!("Unknown topic config name: {other}")),
        }
    }
    if fsync.is_some() || fsync_interval_ms.is_some() {
        let (base_ms, base_bytes) = match base.fsync {
            FsyncPolicy::Interval {
                interval_ms,
                interval_bytes,
            } => (interval_ms, interval_bytes),
            _ => {
                let defaults = Config::default();
                (defaults.fsync_interval_ms, defaults.fsync_interval_bytes)
            }
        };
        let name = fsync.unwrap_or(base.fsync.name());
        let interval_ms = fsync_interval_ms.unwrap_or(base_ms);
        log.fsync = FsyncPolicy::parse(name, interval_ms, base_bytes)
            .ok_or_else(|| format!("Invalid value {name} for configuration sluice.fsync"))?;
    }
    log.validate().map_err(|e| e.to_string())?;
    Ok(log)
}

/// One described config entry: name, value, source, type.
pub struct Described {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub config_type: i8,
}

pub fn describe_topic(config: &Config, overrides: &BTreeMap<String, String>) -> Vec<Described> {
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let (value, source) = match overrides.get(k.name) {
                Some(v) => (v.clone(), config_source::DYNAMIC_TOPIC_CONFIG),
                None => {
                    let v = broker_default(config, k.name).unwrap_or_default();
                    let source = if v == k.kafka_default {
                        config_source::DEFAULT_CONFIG
                    } else {
                        config_source::STATIC_BROKER_CONFIG
                    };
                    (v, source)
                }
            };
            Described {
                name: k.name.into(),
                value,
                source,
                config_type: k.config_type,
            }
        })
        .collect()
}

pub fn describe_broker(config: &Config) -> Vec<Described> {
    let fsync = config
        .fsync_policy()
        .map(|p| p.name().to_string())
        .unwrap_or_default();
    let entry = |name: &str, value: String, config_type: i8| Described {
        name: name.into(),
        value,
        source: config_source::STATIC_BROKER_CONFIG,
        config_type,
    };
    vec![
        entry(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            config_type::BOOLEAN,
        ),
        entry("broker.id", config.node_id.to_string(), config_type::INT),
        entry(
            "default.replication.factor",
            config.default_replication_factor.to_string(),
            config_type::INT,
        ),
        entry(
            "listeners",
            format!("PLAINTEXT://{}", config.listen),
            config_type::STRING,
        ),
        entry(
            "log.cleaner.backoff.ms",
            config.log_cleaner_backoff_ms.to_string(),
            config_type::LONG,
        ),
        entry(
            "log.dirs",
            config.data_dir.display().to_string(),
            config_type::STRING,
        ),
        entry(
            "log.retention.bytes",
            config.retention_bytes.to_string(),
            config_type::LONG,
        ),
        entry(
            "log.retention.check.interval.ms",
            config.retention_check_interval_ms.to_string(),
            config_type::LONG,
        ),
        entry(
            "log.retention.ms",
            config.retention_ms.to_string(),
            config_type::LONG,
        ),
        entry(
            "log.roll.ms",
            config.segment_ms.to_string(),
            config_type::LONG,
        ),
        entry(
            "log.segment.bytes",
            config.segment_bytes.to_string(),
            config_type::INT,
        ),
        entry(
            "message.max.bytes",
            config.max_message_bytes.to_string(),
            config_type::INT,
        ),
        entry(
            "num.partitions",
            config.default_partitions.to_string(),
            config_type::INT,
        ),
        entry("sluice.fsync", fsync, config_type::STRING),
        entry(
            "sluice.profile",
            config.profile.name().to_string(),
            config_type::STRING,
        ),
        entry(
            "socket.request.max.bytes",
            config.max_request_bytes.to_string(),
            config_type::INT,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_and_min_insync_replicas_are_topic_configs() {
        let base = LogConfig::default();
        let o: BTreeMap<String, String> = [
            ("sluice.fsync".to_string(), "interval".to_string()),
            ("sluice.fsync.interval.ms".to_string(), "7".to_string()),
            ("min.insync.replicas".to_string(), "2".to_string()),
        ]
        .into();
        let log = log_config(&base, &o).expect("valid");
        assert!(matches!(
            log.fsync,
            FsyncPolicy::Interval { interval_ms: 7, .. }
        ));
        let o: BTreeMap<String, String> =
            [("sluice.fsync".to_string(), "always".to_string())].into();
        assert_eq!(
            log_config(&base, &o).expect("valid").fsync,
            FsyncPolicy::Always
        );
        for (k, v) in [
            ("sluice.fsync", "sometimes"),
            ("sluice.fsync.interval.ms", "0"),
            ("min.insync.replicas", "0"),
        ] {
            let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(log_config(&base, &bad).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn overrides_apply_and_nonsense_is_refused() {
        let base = LogConfig::default();
        let ok: BTreeMap<String, String> = [
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), "1048576".to_string()),
            ("max.message.bytes".to_string(), "2000".to_string()),
        ]
        .into();
        let log = log_config(&base, &ok).expect("valid");
        assert_eq!(log.retention_ms, None);
        assert_eq!(log.segment_bytes, 1 << 20);
        assert_eq!(log.max_batch_bytes, 2000);
        for (k, v) in [
            ("retention.ms", "soon"),
            ("segment.bytes", "3"),
            ("cleanup.policy", "compress"),
            ("cleanup.policy", "compact,shred"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "half"),
            ("delete.retention.ms", "-2"),
            ("colour", "blue"),
        ] {
            let bad: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(log_config(&base, &bad).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn compaction_configs_apply() {
        let base = LogConfig::default();
        for (value, policy) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete, compact", CleanupPolicy::CompactDelete),
        ] {
            let o: BTreeMap<String, String> = [
                ("cleanup.policy".to_string(), value.to_string()),
                ("delete.retention.ms".to_string(), "100".to_string()),
                ("min.compaction.lag.ms".to_string(), "5".to_string()),
                ("min.cleanable.dirty.ratio".to_string(), "0.01".to_string()),
            ]
            .into();
            let log = log_config(&base, &o).expect("valid");
            assert_eq!(log.cleanup_policy, policy);
            assert_eq!(log.delete_retention_ms, 100);
            assert_eq!(log.min_compaction_lag_ms, 5);
            assert_eq!(log.min_cleanable_dirty_ratio, 0.01);
        }
        let bad: BTreeMap<String, String> =
            [("cleanup.policy".to_string(), "shred".to_string())].into();
        let err = log_config(&base, &bad).expect_err("refused");
        assert!(
            err.contains("String must be one of: compact, delete"),
            "{err}"
        );
    }

    #[test]
    fn describe_names_sources() {
        let config = Config::default();
        let overrides: BTreeMap<String, String> =
            [("retention.ms".to_string(), "5".to_string())].into();
        let described = describe_topic(&config, &overrides);
        let get = |n: &str| described.iter().find(|d| d.name == n).expect("present");
        assert_eq!(
            get("retention.ms").source,
            config_source::DYNAMIC_TOPIC_CONFIG
        );
        assert_eq!(get("segment.bytes").source, config_source::DEFAULT_CONFIG);
        assert_eq!(described.len(), TOPIC_KEYS.len());
    }
}

//! The cluster and placement settings of `Config`: the controller quorum,
//! the replication links, and the CPUs the shards are pinned to, with
//! their checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, ConfigError};

/// The files of mutual TLS between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Config {
    /// The files of the links' mutual TLS; `None`, plain TCP, when none of
    /// the three is set. Setting only some of them is an error: a node
    /// half configured for TLS would not reach its peers.
    pub fn cluster_tls_files(&self) -> Result<Option<ClusterTlsFiles>, ConfigError> {
        match (
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        ) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(ClusterTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (cert, key, _) => {
                let (key_name, value) = match (cert, key) {
                    (None, _) => ("cluster_tls_cert", String::new()),
                    (_, None) => ("cluster_tls_key", String::new()),
                    _ => ("cluster_tls_ca", String::new()),
                };
                Err(ConfigError {
                    key: key_name,
                    value,
                    allowed: "set together with the other two of cluster_tls_cert, \
                              cluster_tls_key and cluster_tls_ca, or none of them"
                        .into(),
                })
            }
        }
    }

    /// The controller voters as (id, address); this node alone when none
    /// are configured.
    pub fn voters(&self) -> Result<Vec<(u64, String)>, ConfigError> {
        let bad = |value: &str| ConfigError {
            key: "controller-voters",
            value: value.to_string(),
            allowed:
                "id@host:port entries separated by commas, e.g. 1@10.0.0.1:9093,2@10.0.0.2:9093"
                    .into(),
        };
        if self.controller_voters.trim().is_empty() {
            return Ok(vec![(self.node_id as u64, self.controller_listen.clone())]);
        }
        let mut out: Vec<(u64, String)> = Vec::new();
        for entry in self.controller_voters.split(',').map(str::trim) {
            let (id, addr) = entry.split_once('@').ok_or_else(|| bad(entry))?;
            let id: u64 = id.trim().parse().map_err(|_| bad(entry))?;
            let addr = addr.trim();
            if addr.parse::<SocketAddr>().is_err() || out.iter().any(|(i, _)| *i == id) {
                return Err(bad(entry));
            }
            out.push((id, addr.to_string()));
        }
        Ok(out)
    }

    pub fn controller_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.controller_listen.parse().map_err(|_| ConfigError {
            key: "controller-listen",
            value: self.controller_listen.clone(),
            allowed: "an IP address and port, e.g. 127.0.0.1:9093".into(),
        })
    }

    pub fn link_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.link_listen.parse().map_err(|_| ConfigError {
            key: "link-listen",
            value: self.link_listen.clone(),
            allowed: "an IP address and port, e.g. 127.0.0.1:9094".into(),
        })
    }

    /// Checks the cluster and placement settings.
    pub(super) fn validate_cluster(&self) -> Result<(), ConfigError> {
        if let (Some(cpus), Some(cores)) = (self.cpu_list()?, self.cores) {
            if cores > cpus.len() {
                return Err(ConfigError {
                    key: "cores",
                    value: cores.to_string(),
                    allowed: format!("at most the {} CPUs of --cpus", cpus.len()),
                });
            }
        }
        self.controller_addr()?;
        self.link_addr()?;
        self.cluster_tls_files()?;
        let voters = self.voters()?;
        if voters.len() > 1 && self.controller_addr()?.port() == 0 {
            return Err(ConfigError {
                key: "controller-listen",
                value: self.controller_listen.clone(),
                allowed: "a fixed port when there are several controller voters".into(),
            });
        }
        for (key, value) in [
            ("broker-session-timeout-ms", self.broker_session_timeout_ms),
            (
                "broker-heartbeat-interval-ms",
                self.broker_heartbeat_interval_ms,
            ),
            ("replica-lag-time-max-ms", self.replica_lag_time_max_ms),
            ("replica-fetch-wait-max-ms", self.replica_fetch_wait_max_ms),
            (
                "leader-imbalance-check-interval-ms",
                self.leader_imbalance_check_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    key,
                    value: "0".into(),
                    allowed: "at least 1".into(),
                });
            }
        }
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            return Err(ConfigError {
                key: "broker-heartbeat-interval-ms",
                value: self.broker_heartbeat_interval_ms.to_string(),
                allowed: "less than broker-session-timeout-ms".into(),
            });
        }
        if self.replica_fetch_max_bytes < 1024 || self.offsets_topic_replication_factor < 1 {
            return Err(ConfigError {
                key: "replica-fetch-max-bytes",
                value: format!(
                    "{} (offsets-topic-replication-factor {})",
                    self.replica_fetch_max_bytes, self.offsets_topic_replication_factor
                ),
                allowed: "at least 1024, with a replication factor of at least 1".into(),
            });
        }
        Ok(())
    }

    /// The CPUs of `cpus`, in order, without repeats.
    pub fn cpu_list(&self) -> Result<Option<Vec<usize>>, ConfigError> {
        let Some(text) = &self.cpus else {
            return Ok(None);
        };
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bad = || ConfigError {
            key: "cpus",
            value: text.clone(),
            allowed: format!("CPU numbers below {available} as a list or ranges, e.g. 0-1 or 0,2"),
        };
        let mut out: Vec<usize> = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: usize = a.parse().map_err(|_| bad())?;
            let b: usize = b.parse().map_err(|_| bad())?;
            if a > b || b >= available {
                return Err(bad());
            }
            for cpu in a..=b {
                if !out.contains(&cpu) {
                    out.push(cpu);
                }
            }
        }
        if out.is_empty() {
            return Err(bad());
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_tls_takes_all_three_files_or_none() {
        let none = Config::default();
        assert_eq!(none.cluster_tls_files(), Ok(None));
        let all = Config {
            cluster_tls_cert: Some("n.pem".into()),
            cluster_tls_key: Some("n.key".into()),
            cluster_tls_ca: Some("ca.pem".into()),
            ..Config::default()
        };
        assert_eq!(
            all.cluster_tls_files(),
            Ok(Some(ClusterTlsFiles {
                cert: "n.pem".into(),
                key: "n.key".into(),
                ca: "ca.pem".into(),
            }))
        );
        let no_key = Config {
            cluster_tls_key: None,
            ..all.clone()
        };
        assert_eq!(
            no_key.cluster_tls_files().expect_err("half set").key,
            "cluster_tls_key"
        );
        let only_ca = Config {
            cluster_tls_ca: Some("ca.pem".into()),
            ..Config::default()
        };
        assert_eq!(
            only_ca.cluster_tls_files().expect_err("half set").key,
            "cluster_tls_cert"
        );
        assert!(no_key.validate().is_err());
    }
}

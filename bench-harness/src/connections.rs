//! Many connections: the open-files limit they need, and what each costs
//! the broker in memory. The idle measurement holds N connections open,
//! each past the ApiVersions and Metadata exchange every client starts
//! with, and compares the broker's resident set with and without them.
//! It reads only /proc, so it works for any local broker whose pid is known.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::MetadataRequest;
use serde::Serialize;

use crate::broker_proc;
use crate::client::admin::topic_name;
use crate::client::Connection;
use crate::error::{BenchError, Result};

/// Connection attempts in flight at once: a burst of a thousand SYNs could
/// overflow a broker's accept queue and turn into one-second retransmits.
const CONNECTING_MAX: u64 = 64;

/// Descriptors beyond the connections: files, the limits test, stdio.
const OPEN_FILES_SPARE: u64 = 1024;

/// How long the broker gets to settle after connections open or close
/// before its RSS is read: accepting and closing are asynchronous to us.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Open files a run with `connections` client connections needs. An
/// embedded broker inherits the harness's limit and holds the other end
/// of every connection (plus its log files), so it counts twice.
pub fn open_files_needed(connections: u64, partitions: u64, embedded: bool) -> u64 {
    let broker = if embedded {
        connections + 4 * partitions
    } else {
        0
    };
    connections + broker + OPEN_FILES_SPARE
}

/// Raises this process's soft RLIMIT_NOFILE to at least `needed` (up to
/// the hard limit); returns the soft limit now in force. Many systems
/// default to a soft limit of 1024, below a thousand-connection scenario.
pub fn raise_open_files_limit(needed: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(BenchError::io(
            "reading the open-files limit",
            std::io::Error::last_os_error(),
        ));
    }
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    if limit.rlim_max < needed {
        return Err(BenchError::Config {
            key: "producers",
            value: format!("{needed} open files needed"),
            allowed: format!(
                "no more than the hard open-files limit, {} (raise it: ulimit -Hn, LimitNOFILE=)",
                limit.rlim_max
            ),
        });
    }
    limit.rlim_cur = needed;
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up
    // to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(BenchError::io(
            format!("raising the open-files limit to {needed}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(needed)
}

/// The broker's RSS around N idle connections.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct IdleConnections {
    pub connections: u32,
    pub rss_before_kib: u64,
    pub rss_with_kib: u64,
    /// After they closed: whether the broker gives the memory back.
    pub rss_after_close_kib: u64,
}

impl IdleConnections {
    pub fn per_connection_bytes(&self) -> Option<f64> {
        per_connection_bytes(self.rss_before_kib, self.rss_with_kib, self.connections)
    }
}

/// RSS growth from `before_kib` to `after_kib` shared over `connections`,
/// in bytes; negative when the broker shrank meanwhile (a garbage
/// collector, a trimmed heap), which says the figure is noise.
pub fn per_connection_bytes(before_kib: u64, after_kib: u64, connections: u32) -> Option<f64> {
    (connections > 0)
        .then(|| (after_kib as f64 - before_kib as f64) * 1024.0 / f64::from(connections))
}

/// Opens `n` connections to `addr`, each negotiating versions and asking
/// for `topic`'s metadata, holds them idle for [`SETTLE`], reads the RSS
/// of `pid`, closes them and reads it again once the broker had time to
/// notice. `None` when /proc has no such process.
pub async fn measure_idle(
    addr: &str,
    topic: &str,
    n: u32,
    pid: u32,
    connect_timeout: Duration,
) -> Result<Option<IdleConnections>> {
    glommio::timer::sleep(SETTLE).await;
    let Some(before) = broker_proc::sample(pid) else {
        return Ok(None);
    };
    let open = Rc::new(RefCell::new(Vec::with_capacity(n as usize)));
    let gate = Rc::new(Semaphore::new(CONNECTING_MAX));
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (addr, topic) = (addr.to_string(), topic.to_string());
        let (open, gate) = (open.clone(), gate.clone());
        tasks.push(glommio::spawn_local(async move {
            let _permit = gate
                .acquire_permit(1)
                .await
                .map_err(|e| BenchError::Runtime(e.to_string()))?;
            let mut conn = Connection::connect(&addr, connect_timeout).await?;
            let request = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
                ]))
                .with_allow_auto_topic_creation(false);
            conn.call(&request).await?;
            open.borrow_mut().push(conn);
            Ok::<(), BenchError>(())
        }));
    }
    let mut failed = None;
    for t in tasks {
        if let Err(e) = t.await {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    glommio::timer::sleep(SETTLE).await;
    let with = broker_proc::sample(pid);
    open.borrow_mut().clear();
    glommio::timer::sleep(SETTLE).await;
    let after = broker_proc::sample(pid);
    Ok(with.map(|w| IdleConnections {
        connections: n,
        rss_before_kib: before.rss_kib,
        rss_with_kib: w.rss_kib,
        rss_after_close_kib: after.map_or(0, |a| a.rss_kib),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_shared_over_the_connections() {
        assert_eq!(per_connection_bytes(10_000, 10_500, 1000), Some(512.0));
        assert_eq!(per_connection_bytes(10_000, 9_000, 1024), Some(-1000.0));
        assert_eq!(per_connection_bytes(1, 2, 0), None);
    }

    #[test]
    fn an_embedded_broker_counts_every_connection_twice() {
        assert_eq!(
            open_files_needed(1000, 16, true),
            2000 + 64 + OPEN_FILES_SPARE
        );
        assert_eq!(open_files_needed(1000, 16, false), 1000 + OPEN_FILES_SPARE);
    }

    #[test]
    fn a_limit_already_high_enough_is_left_alone() {
        let now = raise_open_files_limit(0).expect("getrlimit");
        assert!(now > 0);
        assert_eq!(raise_open_files_limit(now).expect("same"), now);
    }
}

//! The per-shard log cleaner: every `log.cleaner.backoff.ms` it compacts,
//! one at a time, this shard's logs whose `cleanup.policy` includes
//! `compact` and that are due (dirty ratio reached, or kept tombstones past
//! `delete.retention.ms`). The storage crate does the work
//! (`storage/src/log/compact.rs`); this only schedules it, in a task queue with
//! few shares so that request handling keeps the core when both want it.

use std::rc::Rc;
use std::time::Duration;

use crate::rt::{Latency, Shares};

use crate::shard::Shard;

/// CPU shares of the cleaner's task queue; request handling runs in the
/// default queue (1000 shares), so under load cleaning gets about a tenth.
const CLEANER_SHARES: usize = 100;

/// Starts the cleaner of `shard`; it stops when the shard shuts down.
pub fn spawn_cleaner(shard: &Rc<Shard>) {
    let shard = shard.clone();
    let interval = Duration::from_millis(shard.config.log_cleaner_backoff_ms);
    let queue = crate::rt::executor().create_task_queue(
        Shares::Static(CLEANER_SHARES),
        Latency::NotImportant,
        "log-cleaner",
    );
    let task = crate::rt::spawn_local_into(
        async move {
            loop {
                let woke = shard.nap(interval).await;
                if !woke {
                    return;
                }
                clean_due_logs(&shard).await;
            }
        },
        queue,
    );
    match task {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!("the log cleaner did not start: {e}"),
    }
}

/// One round: every due log of the shard, one after the other.
async fn clean_due_logs(shard: &Rc<Shard>) {
    for ((topic, partition), log) in shard.owned_logs() {
        if shard.is_shutting_down() {
            return;
        }
        if !log.compaction_due() {
            continue;
        }
        match log.compact().await {
            Ok(o) => tracing::info!(
                %topic,
                partition,
                segments = o.segments_rewritten,
                bytes_before = o.bytes_before,
                bytes_after = o.bytes_after,
                records_removed = o.records_removed,
                tombstones_removed = o.tombstones_removed,
                damaged = o.segments_damaged,
                "log compacted"
            ),
            Err(e) => tracing::warn!(%topic, partition, "log compaction failed: {e}"),
        }
        crate::rt::yield_if_needed().await;
    }
}

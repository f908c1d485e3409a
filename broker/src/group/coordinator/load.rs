//! Loading a `__consumer_offsets` partition when its shard opens it: the
//! log read from its start, the last record of each key kept, tombstones
//! applied, groups restored as they were last written.

use std::rc::Rc;

use super::*;

impl Coordinator {
    /// Reads a partition from its start and rebuilds its groups and offsets.
    pub(super) async fn load(&self, shard: &Rc<Shard>, partition: i32) {
        let tp = (OFFSETS_TOPIC.to_string(), partition);
        let Some(log) = shard.log(&tp) else {
            return;
        };
        let mut offsets: HashMap<String, BTreeMap<(String, i32), OffsetValue>> = HashMap::new();
        let mut groups: HashMap<String, Option<GroupValue>> = HashMap::new();
        let mut at = log.log_start_offset();
        let end = log.log_end_offset();
        let mut records = 0u64;
        while at < end {
            let read = match log.read(at, 1 << 20).await {
                Ok(r) => r,
                Err(e) => {
                    // Serving half the state would hand out wrong offsets:
                    // the partition stays unloaded (clients retry) until
                    // the broker is restarted with the damage repaired.
                    tracing::error!(partition, offset = at, "loading group state failed: {e}");
                    return;
                }
            };
            if read.chunks.is_empty() {
                break;
            }
            let before = at;
            for chunk in &read.chunks {
                let mut rest = chunk.clone();
                while let Some(size) = storage::batch::peek_batch_size(&rest) {
                    if size > rest.len() {
                        break;
                    }
                    let batch = rest.split_to(size);
                    // Advance by the header: a batch emptied by compaction
                    // still covers its offsets.
                    if let Ok(header) = storage::batch::parse_header(&batch) {
                        at = at.max(header.last_offset() + 1);
                    }
                    let mut buf = batch;
                    match RecordBatchDecoder::decode(&mut buf) {
                        Ok(set) => {
                            for r in set.records {
                                records += 1;
                                apply_record(&r, &mut offsets, &mut groups);
                            }
                        }
                        Err(e) => {
                            tracing::error!(partition, "undecodable batch in {OFFSETS_TOPIC}: {e}")
                        }
                    }
                }
            }
            if at == before {
                break;
            }
        }
        let now = now_ms();
        {
            let mut table = self.groups.borrow_mut();
            let mut ids: Vec<String> = offsets.keys().cloned().collect();
            ids.extend(groups.keys().cloned());
            ids.sort();
            ids.dedup();
            for id in ids {
                let mut entry = GroupEntry::new(&id, partition, self.config);
                let mut empty_since = None;
                if let Some(Some(v)) = groups.remove(&id) {
                    empty_since = (v.members.is_empty() && v.current_state_timestamp > 0)
                        .then_some(v.current_state_timestamp);
                    entry.group = Group::restore(id.clone(), self.config, v, now);
                }
                entry.offsets = offsets.remove(&id).unwrap_or_default();
                entry.note_membership(now);
                if let Some(t) = empty_since {
                    entry.empty_since_ms = Some(t);
                }
                if !entry.is_vacant() {
                    table.insert(id, entry);
                }
            }
        }
        self.partitions.borrow_mut().insert(partition, true);
        // Topics deleted while the partition was not loaded.
        self.forget_deleted_topics(shard).await;
        tracing::info!(partition, records, "loaded group coordinator partition");
    }
}

/// Applies one `__consumer_offsets` record to the state being loaded; the
/// last record of a key wins, a tombstone deletes.
pub(super) fn apply_record(
    r: &Record,
    offsets: &mut HashMap<String, BTreeMap<(String, i32), OffsetValue>>,
    groups: &mut HashMap<String, Option<GroupValue>>,
) {
    let Some(key) = r.key.as_ref() else {
        return;
    };
    let key = match RecordKey::decode(key) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(offset = r.offset, "skipping a {OFFSETS_TOPIC} record: {e}");
            return;
        }
    };
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            let value = r.value.as_ref().map(|v| OffsetValue::decode(v));
            let table = offsets.entry(group).or_default();
            match value {
                None => {
                    table.remove(&(topic, partition));
                }
                Some(Ok(v)) => {
                    table.insert((topic, partition), v);
                }
                Some(Err(e)) => {
                    tracing::warn!(offset = r.offset, "skipping an offset record: {e}")
                }
            }
        }
        RecordKey::Group { group } => match r.value.as_ref().map(|v| GroupValue::decode(v)) {
            None => {
                groups.insert(group.clone(), None);
                offsets.remove(&group);
            }
            Some(Ok(v)) => {
                groups.insert(group, Some(v));
            }
            Some(Err(e)) => tracing::warn!(offset = r.offset, "skipping a group record: {e}"),
        },
    }
}

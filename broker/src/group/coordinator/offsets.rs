//! The coordinator's committed offsets: OffsetCommit, OffsetFetch,
//! OffsetDelete, DeleteGroups, and the expiry of an empty group's offsets
//! after `offsets.retention.minutes`.

use std::rc::Rc;

use bytes::Buf;

use super::*;

impl Coordinator {
    /// Drops the committed offsets of topics that no longer exist, with
    /// tombstones, as Kafka does when topics are deleted: a topic created
    /// again under the same name starts with no committed offsets.
    pub(super) async fn forget_deleted_topics(&self, shard: &Rc<Shard>) {
        let meta = shard.metadata();
        let loaded = self.partitions.borrow().clone();
        let work: Vec<(String, i32, Expired)> = self
            .groups
            .borrow()
            .iter()
            .filter(|(_, e)| loaded.get(&e.partition) == Some(&true))
            .filter_map(|(id, e)| {
                let gone: Expired = e
                    .offsets
                    .keys()
                    .filter(|(t, _)| meta.topic(t).is_none())
                    .cloned()
                    .collect();
                (!gone.is_empty()).then(|| (id.clone(), e.partition, gone))
            })
            .collect();
        for (group_id, partition, gone) in work {
            let records = offset_tombstones(&group_id, &gone);
            if let Err(e) = self.write(shard, partition, records, now_ms()).await {
                tracing::warn!(group = %group_id, code = e, "forgetting offsets of deleted topics failed");
                continue;
            }
            if let Some(entry) = self.groups.borrow_mut().get_mut(&group_id) {
                for tp in &gone {
                    entry.offsets.remove(tp);
                }
            }
        }
    }

    pub(super) async fn commit(&self, shard: &Rc<Shard>, c: OffsetCommit, now: i64) -> GroupAnswer {
        let n = c.offsets.len();
        let partition = match self.ready(shard, &c.group_id) {
            Ok(p) => p,
            Err(e) => return GroupAnswer::Codes(e, vec![e; n]),
        };
        if c.group_id.is_empty() {
            return GroupAnswer::Codes(INVALID_GROUP_ID, vec![INVALID_GROUP_ID; n]);
        }
        let verdict = match self.groups.borrow().get(&c.group_id) {
            Some(e) => {
                e.group
                    .validate_offset_commit(&c.member_id, c.instance.as_deref(), c.generation)
            }
            // A commit from outside group management creates the group.
            None if c.generation < 0 && c.member_id.is_empty() => NONE,
            None => ILLEGAL_GENERATION,
        };
        if verdict != NONE {
            return GroupAnswer::Codes(verdict, vec![verdict; n]);
        }
        let meta = shard.metadata();
        let mut codes = Vec::with_capacity(n);
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for (topic, p, offset, leader_epoch, metadata) in c.offsets {
            let metadata = metadata.unwrap_or_default();
            let known = meta
                .topic(&topic)
                .is_some_and(|t| p >= 0 && p < t.partitions);
            let code = if !known {
                UNKNOWN_TOPIC_OR_PARTITION
            } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                OFFSET_METADATA_TOO_LARGE
            } else {
                NONE
            };
            codes.push(code);
            if code != NONE {
                continue;
            }
            let value = OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp: now,
            };
            let key = RecordKey::Offset {
                group: c.group_id.clone(),
                topic: topic.clone(),
                partition: p,
            };
            records.push((key.encode(), Some(value.encode())));
            accepted.push(((topic, p), value));
        }
        if records.is_empty() {
            return GroupAnswer::Codes(NONE, codes);
        }
        if let Err(e) = self.write(shard, partition, records, now).await {
            for code in codes.iter_mut().filter(|c| **c == NONE) {
                *code = e;
            }
            return GroupAnswer::Codes(NONE, codes);
        }
        let mut groups = self.groups.borrow_mut();
        let entry = groups
            .entry(c.group_id.clone())
            .or_insert_with(|| GroupEntry::new(&c.group_id, partition, self.config));
        for (tp, value) in accepted {
            entry.offsets.insert(tp, value);
        }
        entry.note_membership(now);
        GroupAnswer::Codes(NONE, codes)
    }

    pub(super) fn fetch_offsets(
        &self,
        shard: &Shard,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> GroupAnswer {
        if let Err(e) = self.ready(shard, group_id) {
            return GroupAnswer::Offsets(e, Vec::new());
        }
        let groups = self.groups.borrow();
        let committed = groups.get(group_id).map(|e| &e.offsets);
        let found = |topic: &str, partition: i32| {
            let v = committed.and_then(|o| o.get(&(topic.to_string(), partition)));
            FetchedOffset {
                topic: topic.to_string(),
                partition,
                offset: v.map_or(-1, |v| v.offset),
                leader_epoch: v.map_or(-1, |v| v.leader_epoch),
                metadata: v.map(|v| v.metadata.clone()).unwrap_or_default(),
                error_code: NONE,
            }
        };
        let out = match topics {
            Some(topics) => topics
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(|p| found(t, *p)))
                .collect(),
            None => committed
                .map(|o| o.keys().map(|(t, p)| found(t, *p)).collect())
                .unwrap_or_default(),
        };
        GroupAnswer::Offsets(NONE, out)
    }

    pub(super) async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        partitions: Vec<(String, i32)>,
    ) -> GroupAnswer {
        let n = partitions.len();
        let partition = match self.ready(shard, &group_id) {
            Ok(p) => p,
            Err(e) => return GroupAnswer::Codes(e, vec![e; n]),
        };
        let (codes, tombstones) = {
            let groups = self.groups.borrow();
            let Some(entry) = groups.get(&group_id) else {
                return GroupAnswer::Codes(GROUP_ID_NOT_FOUND, vec![NONE; n]);
            };
            let g = &entry.group;
            let subscribed: Option<Vec<String>> = if g.is_empty() {
                Some(Vec::new())
            } else if g.protocol_type.as_deref() == Some("consumer") {
                let protocol = g.protocol_name.clone().unwrap_or_default();
                let mut topics = Vec::new();
                for m in g.members() {
                    topics.extend(subscribed_topics(&m.metadata(&protocol)).unwrap_or_default());
                }
                Some(topics)
            } else {
                None
            };
            let Some(subscribed) = subscribed else {
                return GroupAnswer::Codes(NON_EMPTY_GROUP, vec![NONE; n]);
            };
            let mut codes = Vec::with_capacity(n);
            let mut tombstones = Vec::new();
            for (topic, p) in &partitions {
                if subscribed.contains(topic) {
                    codes.push(GROUP_SUBSCRIBED_TO_TOPIC);
                    continue;
                }
                codes.push(NONE);
                if entry.offsets.contains_key(&(topic.clone(), *p)) {
                    let key = RecordKey::Offset {
                        group: group_id.clone(),
                        topic: topic.clone(),
                        partition: *p,
                    };
                    tombstones.push(((topic.clone(), *p), key.encode()));
                }
            }
            (codes, tombstones)
        };
        if !tombstones.is_empty() {
            let records = tombstones.iter().map(|(_, k)| (k.clone(), None)).collect();
            if let Err(e) = self.write(shard, partition, records, now_ms()).await {
                return GroupAnswer::Codes(e, vec![NONE; n]);
            }
            if let Some(entry) = self.groups.borrow_mut().get_mut(&group_id) {
                for (tp, _) in &tombstones {
                    entry.offsets.remove(tp);
                }
            }
        }
        GroupAnswer::Codes(NONE, codes)
    }

    pub(super) async fn delete(&self, shard: &Rc<Shard>, group_id: String, now: i64) -> i16 {
        let partition = match self.ready(shard, &group_id) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let records = {
            let groups = self.groups.borrow();
            let Some(entry) = groups.get(&group_id) else {
                return GROUP_ID_NOT_FOUND;
            };
            if !entry.group.is_empty() || entry.group.state == GroupState::Dead {
                return if entry.group.state == GroupState::Dead {
                    GROUP_ID_NOT_FOUND
                } else {
                    NON_EMPTY_GROUP
                };
            }
            tombstones_of(&group_id, entry)
        };
        if let Err(e) = self.write(shard, partition, records, now).await {
            return e;
        }
        let removed = self.groups.borrow_mut().remove(&group_id);
        if let Some(mut entry) = removed {
            let actions = entry.group.kill();
            self.deliver(shard, &group_id, actions, now).await;
        }
        NONE
    }

    /// Drops the committed offsets of groups empty for longer than the
    /// retention (of standalone commits: older than it), and the groups
    /// left with nothing, writing tombstones first.
    pub(super) async fn expire_offsets(&self, shard: &Rc<Shard>, retention_ms: i64, now: i64) {
        let mut work: Vec<(String, i32, Expired, bool)> = Vec::new();
        for (id, e) in self.groups.borrow().iter() {
            if !e.group.is_empty() || e.group.has_pending_members() {
                continue;
            }
            let managed = e.group.protocol_type.is_some();
            let expired: Vec<(String, i32)> = e
                .offsets
                .iter()
                .filter(|(_, v)| {
                    let base = match (managed, e.empty_since_ms) {
                        (true, Some(t)) => t,
                        _ => v.commit_timestamp,
                    };
                    base + retention_ms <= now
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            let drop_group = expired.len() == e.offsets.len();
            if !expired.is_empty() || (drop_group && e.group.generation_id > 0) {
                work.push((id.clone(), e.partition, expired, drop_group));
            }
        }
        for (group_id, partition, expired, drop_group) in work {
            let mut records = offset_tombstones(&group_id, &expired);
            if drop_group {
                let key = RecordKey::Group {
                    group: group_id.clone(),
                };
                records.push((key.encode(), None));
            }
            if let Err(e) = self.write(shard, partition, records, now).await {
                tracing::warn!(group = %group_id, code = e, "expiring offsets failed");
                continue;
            }
            let mut groups = self.groups.borrow_mut();
            if drop_group {
                groups.remove(&group_id);
            } else if let Some(entry) = groups.get_mut(&group_id) {
                for tp in &expired {
                    entry.offsets.remove(tp);
                }
            }
            tracing::info!(group = %group_id, offsets = expired.len(), removed = drop_group, "expired committed offsets");
        }
    }
}

/// Tombstones for the committed offsets of `partitions` of a group.
fn offset_tombstones<'a>(
    group_id: &str,
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<KeyValue> {
    partitions
        .into_iter()
        .map(|(t, p)| {
            let key = RecordKey::Offset {
                group: group_id.to_string(),
                topic: t.clone(),
                partition: *p,
            };
            (key.encode(), None)
        })
        .collect()
}

pub(super) fn tombstones_of(group_id: &str, entry: &GroupEntry) -> Vec<KeyValue> {
    let mut records = offset_tombstones(group_id, entry.offsets.keys());
    let key = RecordKey::Group {
        group: group_id.to_string(),
    };
    records.push((key.encode(), None));
    records
}

/// The topics of a consumer protocol subscription (any version: they all
/// start with the version and the topic array), or `None` if malformed.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut b = metadata;
    if b.remaining() < 6 {
        return None;
    }
    let _version = b.get_i16();
    let count = b.get_i32();
    if count < 0 || count as usize > b.remaining() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if b.remaining() < 2 {
            return None;
        }
        let len = usize::try_from(b.get_i16()).ok()?;
        if b.remaining() < len {
            return None;
        }
        topics.push(String::from_utf8(b[..len].to_vec()).ok()?);
        b.advance(len);
    }
    Some(topics)
}

//! The records of `__consumer_offsets`, in Kafka's own key and value
//! schemas, so that the topic reads the same as a Kafka broker's (tools that
//! decode it, migrations): committed offsets (key version 1, value version
//! 3) and group metadata (key version 2, value version 3). A deletion is the
//! key with a null value (a tombstone), compacted away later.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct RecordError(&'static str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn get_i16(b: &mut &[u8]) -> Result<i16, RecordError> {
    b.try_get_i16().map_err(|_| RecordError("truncated"))
}

fn get_i32(b: &mut &[u8]) -> Result<i32, RecordError> {
    b.try_get_i32().map_err(|_| RecordError("truncated"))
}

fn get_i64(b: &mut &[u8]) -> Result<i64, RecordError> {
    b.try_get_i64().map_err(|_| RecordError("truncated"))
}

fn get_nullable_string(b: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let len = get_i16(b)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if b.len() < len {
        return Err(RecordError("string runs past the record"));
    }
    let s = std::str::from_utf8(&b[..len]).map_err(|_| RecordError("string is not UTF-8"))?;
    let s = s.to_string();
    b.advance(len);
    Ok(Some(s))
}

fn get_string(b: &mut &[u8]) -> Result<String, RecordError> {
    get_nullable_string(b)?.ok_or(RecordError("null where a string is required"))
}

fn get_bytes(b: &mut &[u8]) -> Result<Bytes, RecordError> {
    let len = get_i32(b)?;
    let len = usize::try_from(len).map_err(|_| RecordError("negative byte length"))?;
    if b.len() < len {
        return Err(RecordError("bytes run past the record"));
    }
    let v = Bytes::copy_from_slice(&b[..len]);
    b.advance(len);
    Ok(v)
}

impl RecordKey {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                b.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut b, group);
                put_string(&mut b, topic);
                b.put_i32(*partition);
            }
            RecordKey::Group { group } => {
                b.put_i16(GROUP_KEY_VERSION);
                put_string(&mut b, group);
            }
        }
        b.freeze()
    }

    /// Key versions 0 and 1 are offsets, 2 is group metadata (Kafka's
    /// numbering); other versions are not ours to read.
    pub fn decode(mut b: &[u8]) -> Result<RecordKey, RecordError> {
        match get_i16(&mut b)? {
            0 | 1 => Ok(RecordKey::Offset {
                group: get_string(&mut b)?,
                topic: get_string(&mut b)?,
                partition: get_i32(&mut b)?,
            }),
            2 => Ok(RecordKey::Group {
                group: get_string(&mut b)?,
            }),
            _ => Err(RecordError("unknown key version")),
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(OFFSET_VALUE_VERSION);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_string(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp);
        b.freeze()
    }

    /// Reads value versions 1 and 3 (1 carries an expiry timestamp, which
    /// is ignored; 3 adds the leader epoch).
    pub fn decode(mut b: &[u8]) -> Result<OffsetValue, RecordError> {
        let version = get_i16(&mut b)?;
        let offset = get_i64(&mut b)?;
        let leader_epoch = if version >= 3 { get_i32(&mut b)? } else { -1 };
        let metadata = get_string(&mut b)?;
        let commit_timestamp = get_i64(&mut b)?;
        if version == 1 {
            get_i64(&mut b)?;
        }
        if !(0..=3).contains(&version) {
            return Err(RecordError("unknown offset value version"));
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nullable_string(&mut b, self.protocol.as_deref());
        put_nullable_string(&mut b, self.leader.as_deref());
        b.put_i64(self.current_state_timestamp);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut b, &m.member_id);
            put_nullable_string(&mut b, m.group_instance_id.as_deref());
            put_string(&mut b, &m.client_id);
            put_string(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout_ms);
            b.put_i32(m.session_timeout_ms);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<GroupValue, RecordError> {
        let version = get_i16(&mut b)?;
        if !(0..=3).contains(&version) {
            return Err(RecordError("unknown group value version"));
        }
        let protocol_type = get_string(&mut b)?;
        let generation = get_i32(&mut b)?;
        let protocol = get_nullable_string(&mut b)?;
        let leader = get_nullable_string(&mut b)?;
        let current_state_timestamp = if version >= 2 { get_i64(&mut b)? } else { -1 };
        let count = get_i32(&mut b)?;
        // Each member takes at least 24 bytes: bound the allocation by input.
        if count < 0 || count as usize > b.len() / 24 + 1 {
            return Err(RecordError("impossible member count"));
        }
        let mut members = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let member_id = get_string(&mut b)?;
            let group_instance_id = if version >= 3 {
                get_nullable_string(&mut b)?
            } else {
                None
            };
            let client_id = get_string(&mut b)?;
            let client_host = get_string(&mut b)?;
            let rebalance_timeout_ms = if version >= 1 { get_i32(&mut b)? } else { -1 };
            let session_timeout_ms = get_i32(&mut b)?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: get_bytes(&mut b)?,
                assignment: get_bytes(&mut b)?,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp,
            members,
        })
    }
}

/// The `__consumer_offsets` partition that holds a group, as Kafka
/// computes it: Java's `String.hashCode` of the group id, made
/// non-negative, modulo the partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: i32::MIN maps to 0 rather than overflowing.
    let positive = if h == i32::MIN { 0 } else { h.abs() };
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = RecordKey::Offset {
            group: "g".into(),
            topic: "orders".into(),
            partition: 7,
        };
        assert_eq!(RecordKey::decode(&k.encode()), Ok(k));
        let k = RecordKey::Group { group: "g".into() };
        assert_eq!(RecordKey::decode(&k.encode()), Ok(k));
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&v.encode()), Ok(v));
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("host-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(&g.encode()), Ok(g));
    }

    #[test]
    fn the_layout_matches_kafkas_bytes() {
        // OffsetCommitKey v1 for ("g", "t", 1), as Kafka writes it.
        let k = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        };
        assert_eq!(&k.encode()[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
        assert_eq!(
            &RecordKey::Group { group: "g".into() }.encode()[..],
            &[0, 2, 0, 1, b'g']
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            &b""[..],
            &[0, 9],
            &[0, 1, 0, 50, b'x'],
            &[0, 3, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],
        ] {
            assert!(RecordKey::decode(input).is_err() || GroupValue::decode(input).is_err());
            let _ = OffsetValue::decode(input);
            let _ = GroupValue::decode(input);
        }
    }

    #[test]
    fn partitions_follow_javas_string_hash() {
        // "test-group".hashCode() is 627841412 in Java; % 50 = 12.
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        assert!((0..50).contains(&partition_for("é-unicode", 50)));
    }
}

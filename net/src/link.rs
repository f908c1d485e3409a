//! Frames of the replication links between nodes: rkyv archives of
//! `LinkMessage`, validated on receipt, never trusted unchecked.
//!
//! On the wire: `[u32 LE length][u16 LE schema version][u16 reserved]
//! [archive]`, where length counts the archive only. The reader refuses a
//! length over its limit before allocating, reads the archive into a
//! 16-byte-aligned buffer (rkyv's root sits at the end of the archive and
//! needs its buffer aligned), and `access` validates it with bytecheck, so a
//! corrupt or hostile frame is an error, not undefined behaviour. The
//! version is checked first: archives are not self-describing, and a peer
//! on another schema must be refused by name, not misread.
//!
//! Record batches travel inside the archive as bytes, exactly as stored.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// The schema of `LinkMessage`; bumped on any change to it.
pub const LINK_SCHEMA_VERSION: u16 = 1;

/// Bytes before the archive.
const HEADER_BYTES: usize = 8;

/// A fetch of one partition by a follower.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PartitionFetch {
    pub topic: String,
    pub partition: i32,
    /// The leader epoch the follower believes current.
    pub leader_epoch: i32,
    /// The follower's log end offset.
    pub fetch_offset: i64,
    /// The epoch of the follower's last record, -1 for an empty log.
    pub last_fetched_epoch: i32,
    pub max_bytes: u32,
}

/// The leader's answer for one partition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PartitionFetched {
    pub topic: String,
    pub partition: i32,
    /// A Kafka error code (0: none).
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Set when the follower's log diverges: the epoch and where it ends in
    /// the leader's log (epoch -1: the leader holds no epoch that old).
    pub diverging: Option<(i32, i64)>,
    /// Whole record batches from the fetch offset, as stored.
    pub records: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum LinkMessage {
    /// The first frame on a link, from the connecting side.
    Hello {
        cluster_id: String,
        node_id: u32,
        shard: u16,
    },
    Fetch {
        correlation: u64,
        /// The follower's node id.
        replica: u32,
        partitions: Vec<PartitionFetch>,
    },
    FetchReply {
        correlation: u64,
        partitions: Vec<PartitionFetched>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link frame of {length} bytes exceeds the limit of {limit}")]
    TooLarge { length: usize, limit: usize },
    #[error("link frame has schema version {got}; this node speaks {LINK_SCHEMA_VERSION}")]
    Version { got: u16 },
    #[error("link closed in the middle of a frame ({read} of {expected} bytes read)")]
    Truncated { read: usize, expected: usize },
    #[error("link frame is not a valid message: {0}")]
    Invalid(String),
    #[error("encoding a link frame failed: {0}")]
    Encode(String),
    #[error("link i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A whole frame for `msg`, header included.
pub fn encode(msg: &LinkMessage) -> Result<Vec<u8>, LinkError> {
    let archive =
        rkyv::to_bytes::<rkyv::rancor::Error>(msg).map_err(|e| LinkError::Encode(e.to_string()))?;
    let length = u32::try_from(archive.len()).map_err(|_| LinkError::TooLarge {
        length: archive.len(),
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(HEADER_BYTES + archive.len());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&LINK_SCHEMA_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&archive);
    Ok(out)
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &LinkMessage,
) -> Result<(), LinkError> {
    writer.write_all(&encode(msg)?).await?;
    // A TLS writer may hold the frame's last record until flushed.
    writer.flush().await?;
    Ok(())
}

async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    allow_clean_eof: bool,
) -> Result<bool, LinkError> {
    let mut got = 0;
    while got < buf.len() {
        let n = reader.read(&mut buf[got..]).await?;
        if n == 0 {
            if got == 0 && allow_clean_eof {
                return Ok(false);
            }
            return Err(LinkError::Truncated {
                read: got,
                expected: buf.len(),
            });
        }
        got += n;
    }
    Ok(true)
}

/// Reads one frame's archive into `buf` (reused between frames). Returns
/// `Ok(false)` when the peer closed the link between two frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut AlignedVec<16>,
    limit_bytes: usize,
) -> Result<bool, LinkError> {
    let mut header = [0u8; HEADER_BYTES];
    if !read_full(reader, &mut header, true).await? {
        return Ok(false);
    }
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != LINK_SCHEMA_VERSION {
        return Err(LinkError::Version { got: version });
    }
    if length > limit_bytes {
        return Err(LinkError::TooLarge {
            length,
            limit: limit_bytes,
        });
    }
    buf.clear();
    buf.resize(length, 0);
    read_full(reader, &mut buf[..], false).await?;
    Ok(true)
}

/// The message in a frame's archive, validated.
pub fn access(archive: &[u8]) -> Result<&ArchivedLinkMessage, LinkError> {
    rkyv::access::<ArchivedLinkMessage, rkyv::rancor::BoxedError>(archive)
        .map_err(|e| LinkError::Invalid(e.to_string()))
}

/// An owned copy of a validated message.
pub fn decode(archive: &[u8]) -> Result<LinkMessage, LinkError> {
    rkyv::deserialize::<LinkMessage, rkyv::rancor::BoxedError>(access(archive)?)
        .map_err(|e| LinkError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    fn sample() -> LinkMessage {
        LinkMessage::FetchReply {
            correlation: 7,
            partitions: vec![
                PartitionFetched {
                    topic: "metrics".into(),
                    partition: 3,
                    error_code: 0,
                    high_watermark: 120,
                    log_start_offset: 0,
                    diverging: None,
                    records: (0..5_000u32).map(|i| i as u8).collect(),
                },
                PartitionFetched {
                    topic: "metrics".into(),
                    partition: 4,
                    error_code: 0,
                    high_watermark: 9,
                    log_start_offset: 0,
                    diverging: Some((2, 17)),
                    records: Vec::new(),
                },
            ],
        }
    }

    fn read_one(bytes: &[u8], limit: usize) -> Result<Option<LinkMessage>, LinkError> {
        let mut buf = AlignedVec::<16>::new();
        let mut cursor = Cursor::new(bytes.to_vec());
        block_on(async {
            if !read_frame(&mut cursor, &mut buf, limit).await? {
                return Ok(None);
            }
            decode(&buf).map(Some)
        })
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let msgs = [
            LinkMessage::Hello {
                cluster_id: "c1".into(),
                node_id: 2,
                shard: 1,
            },
            LinkMessage::Fetch {
                correlation: 1,
                replica: 2,
                partitions: vec![PartitionFetch {
                    topic: "t".into(),
                    partition: 0,
                    leader_epoch: 5,
                    fetch_offset: 100,
                    last_fetched_epoch: -1,
                    max_bytes: 1 << 20,
                }],
            },
            sample(),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend_from_slice(&encode(m).expect("encodes"));
        }
        let mut cursor = Cursor::new(wire);
        let mut buf = AlignedVec::<16>::new();
        block_on(async {
            for m in &msgs {
                assert!(read_frame(&mut cursor, &mut buf, 1 << 20)
                    .await
                    .expect("reads"));
                assert_eq!(&decode(&buf).expect("valid"), m);
            }
            assert!(!read_frame(&mut cursor, &mut buf, 1 << 20)
                .await
                .expect("clean end"));
        });
        // Zero-copy access sees the record bytes in place.
        let frame = encode(&sample()).expect("encodes");
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(&frame[HEADER_BYTES..]);
        match access(&buf).expect("valid") {
            ArchivedLinkMessage::FetchReply { partitions, .. } => {
                assert_eq!(partitions[0].records.len(), 5_000);
                assert_eq!(partitions[0].records[258], 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_versions_and_truncation_are_errors() {
        let frame = encode(&sample()).expect("encodes");
        assert!(matches!(
            read_one(&frame, 100),
            Err(LinkError::TooLarge { limit: 100, .. })
        ));
        let mut other = frame.clone();
        other[4] = 9;
        assert!(matches!(
            read_one(&other, 1 << 20),
            Err(LinkError::Version { got: 9 })
        ));
        for cut in [3, HEADER_BYTES, HEADER_BYTES + 10, frame.len() - 1] {
            assert!(
                matches!(
                    read_one(&frame[..cut], 1 << 20),
                    Err(LinkError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        assert!(matches!(read_one(&[], 1 << 20), Ok(None)));
        // A huge declared length is refused before any allocation.
        let mut huge = frame.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_one(&huge, 64 << 20),
            Err(LinkError::TooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_archives_are_refused_not_trusted() {
        let frame = encode(&sample()).expect("encodes");
        let archive = &frame[HEADER_BYTES..];
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut refused = 0;
        for _ in 0..5_000 {
            let mut buf = AlignedVec::<16>::new();
            buf.extend_from_slice(archive);
            for _ in 0..1 + next() % 4 {
                let i = (next() % buf.len() as u64) as usize;
                buf[i] = next() as u8;
            }
            if decode(&buf).is_err() {
                refused += 1;
            }
        }
        // Flips inside record bytes are valid archives; flips in lengths,
        // offsets and tags must be caught, and none may panic.
        assert!(refused > 0, "no corruption detected");
        for n in 0..archive.len().min(512) {
            let mut buf = AlignedVec::<16>::new();
            buf.extend_from_slice(&archive[..n]);
            let _ = decode(&buf);
        }
    }
}

//! Frames of the controller transport: `[u32 LE length][u16 LE schema
//! version][u16 reserved, zero][payload]`, where length counts the payload
//! only and the payload is the serde_json of a `Frame` (openraft's
//! messages are serde types; the in-process network sends the same
//! `rpc::Request` and `rpc::Reply` encoding).
//!
//! The reader checks the version and the reserved bits, then refuses a
//! length over its limit before allocating anything for it, and grows the
//! buffer as bytes arrive, so a peer that declares a large frame and sends
//! nothing pins little memory.

use futures_lite::{AsyncRead, AsyncReadExt};
use serde::{Deserialize, Serialize};

use super::TcpError;
use crate::controller::rpc::{Reply, Request};
use crate::controller::ControllerId;

/// The schema of `Frame` (and of openraft's messages inside it); bumped on
/// any change to them, so that a node on another schema is refused by
/// name rather than misread.
pub const TCP_SCHEMA_VERSION: u16 = 1;

/// Bytes before the payload.
const HEADER_BYTES: usize = 8;

/// What a frame's buffer starts at: heartbeats and votes fit in one
/// allocation, and a declared length is only believed as bytes arrive.
const FIRST_CHUNK_BYTES: usize = 64 << 10;

#[derive(Serialize, Deserialize)]
pub(super) enum Frame {
    /// The first frame on a connection, from the dialling side.
    Hello {
        cluster: String,
        from: ControllerId,
        to: ControllerId,
    },
    Request {
        correlation: u64,
        request: Request,
    },
    /// The answer to the request with the same correlation id, on the
    /// connection it came in on; answers may come out of order.
    Reply {
        correlation: u64,
        reply: Reply,
    },
}

impl Frame {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Request { .. } => "request",
            Frame::Reply { .. } => "reply",
        }
    }
}

/// A whole frame for `frame`, header included. A frame over `limit_bytes`
/// is refused here rather than sent to a peer that would refuse it.
pub(super) fn encode(frame: &Frame, limit_bytes: usize) -> Result<Vec<u8>, TcpError> {
    let mut out = vec![0u8; HEADER_BYTES];
    serde_json::to_writer(&mut out, frame).map_err(|e| TcpError::Encode(e.to_string()))?;
    let length = out.len() - HEADER_BYTES;
    let too_large = TcpError::TooLarge {
        length,
        limit: limit_bytes,
    };
    if length > limit_bytes {
        return Err(too_large);
    }
    let length = u32::try_from(length).map_err(|_| too_large)?;
    out[0..4].copy_from_slice(&length.to_le_bytes());
    out[4..6].copy_from_slice(&TCP_SCHEMA_VERSION.to_le_bytes());
    // out[6..8], reserved, stays zero.
    Ok(out)
}

/// Fills `buf` from `reader` and returns how many bytes it read: fewer
/// than `buf.len()` only when the peer closed the connection.
async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<usize, std::io::Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = reader.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Reads and decodes one frame. `Ok(None)`: the peer closed the
/// connection between two frames.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit_bytes: usize,
) -> Result<Option<Frame>, TcpError> {
    let mut header = [0u8; HEADER_BYTES];
    match read_full(reader, &mut header).await? {
        0 => return Ok(None),
        HEADER_BYTES => {}
        read => {
            return Err(TcpError::Truncated {
                read,
                expected: HEADER_BYTES,
            })
        }
    }
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let version = u16::from_le_bytes([header[4], header[5]]);
    let reserved = u16::from_le_bytes([header[6], header[7]]);
    if version != TCP_SCHEMA_VERSION {
        return Err(TcpError::Version { got: version });
    }
    if reserved != 0 {
        return Err(TcpError::Reserved { got: reserved });
    }
    if length > limit_bytes {
        return Err(TcpError::TooLarge {
            length,
            limit: limit_bytes,
        });
    }
    let mut payload = vec![0u8; length.min(FIRST_CHUNK_BYTES)];
    let mut got = 0;
    loop {
        let want = payload.len();
        got += read_full(reader, &mut payload[got..]).await?;
        if got < want {
            return Err(TcpError::Truncated {
                read: got,
                expected: length,
            });
        }
        if got == length {
            break;
        }
        // Doubling: a frame costs at most twice its size in copies.
        payload.resize(length.min(want * 2), 0);
    }
    debug_assert_eq!(payload.len(), length);
    serde_json::from_slice(&payload)
        .map(Some)
        .map_err(|e| TcpError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    fn hello() -> Frame {
        Frame::Hello {
            cluster: "c".into(),
            from: 1,
            to: 2,
        }
    }

    fn read_one(bytes: Vec<u8>, limit: usize) -> Result<Option<Frame>, TcpError> {
        block_on(read_frame(&mut Cursor::new(bytes), limit))
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let big = "x".repeat(300 << 10);
        let frames = [
            hello(),
            Frame::Reply {
                correlation: 7,
                reply: Reply::Failed(big.clone()),
            },
            Frame::Reply {
                correlation: 8,
                reply: Reply::Failed("no".into()),
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&encode(f, 1 << 20).expect("encodes"));
        }
        let mut cursor = Cursor::new(wire);
        block_on(async {
            let Some(Frame::Hello { cluster, from, to }) =
                read_frame(&mut cursor, 1 << 20).await.expect("reads")
            else {
                panic!("a hello");
            };
            assert_eq!((cluster.as_str(), from, to), ("c", 1, 2));
            for (want_correlation, want) in [(7, &big), (8, &"no".to_string())] {
                let Some(Frame::Reply {
                    correlation,
                    reply: Reply::Failed(text),
                }) = read_frame(&mut cursor, 1 << 20).await.expect("reads")
                else {
                    panic!("a reply");
                };
                assert_eq!((correlation, &text), (want_correlation, want));
            }
            assert!(read_frame(&mut cursor, 1 << 20)
                .await
                .expect("clean end")
                .is_none());
        });
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_payload() {
        let mut header = Vec::new();
        header.extend_from_slice(&(u32::MAX).to_le_bytes());
        header.extend_from_slice(&TCP_SCHEMA_VERSION.to_le_bytes());
        header.extend_from_slice(&[0, 0]);
        // No payload follows: the limit is checked on the header alone.
        assert!(matches!(
            read_one(header, 1 << 20),
            Err(TcpError::TooLarge {
                length: 4_294_967_295,
                limit: 1_048_576
            })
        ));
        // And the sender refuses to make one.
        let frame = Frame::Reply {
            correlation: 1,
            reply: Reply::Failed("y".repeat(2000)),
        };
        assert!(matches!(
            encode(&frame, 1000),
            Err(TcpError::TooLarge { limit: 1000, .. })
        ));
    }

    #[test]
    fn bad_headers_and_payloads_are_errors_not_panics() {
        let good = encode(&hello(), 1 << 20).expect("encodes");

        let mut other_version = good.clone();
        other_version[4] = 9;
        assert!(matches!(
            read_one(other_version, 1 << 20),
            Err(TcpError::Version { got: 9 })
        ));

        let mut reserved = good.clone();
        reserved[7] = 1;
        assert!(matches!(
            read_one(reserved, 1 << 20),
            Err(TcpError::Reserved { got: 256 })
        ));

        let mut garbage = good.clone();
        for b in &mut garbage[HEADER_BYTES..] {
            *b = b'#';
        }
        assert!(matches!(
            read_one(garbage, 1 << 20),
            Err(TcpError::Invalid(_))
        ));

        let cut = good[..good.len() - 3].to_vec();
        let expected = good.len() - HEADER_BYTES;
        assert!(matches!(
            read_one(cut, 1 << 20),
            Err(TcpError::Truncated { read, expected: e }) if read == expected - 3 && e == expected
        ));
        assert!(matches!(
            read_one(good[..5].to_vec(), 1 << 20),
            Err(TcpError::Truncated {
                read: 5,
                expected: 8
            })
        ));
    }
}

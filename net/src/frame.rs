//! Reading length-prefixed Kafka frames (`[i32 length][payload]`) from any
//! async byte stream, refusing a length above the configured limit before
//! any buffer for it is allocated.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

/// What a frame's buffer starts at before the payload arrives: most
/// requests fit (one allocation), and a peer that declares a large frame
/// and sends nothing pins no more than this.
const FIRST_CHUNK_BYTES: usize = 256 << 10;

/// Kafka's `socket.request.max.bytes` default (100 MiB).
pub const MAX_FRAME_BYTES_DEFAULT: usize = 104_857_600;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {length} is negative")]
    NegativeLength { length: i32 },
    #[error("frame length {length} exceeds socket.request.max.bytes = {limit}")]
    TooLarge { length: usize, limit: usize },
    #[error("connection closed in the middle of a frame ({read} of {expected} bytes read)")]
    Truncated { read: usize, expected: usize },
    #[error("reading the connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame and returns its payload (without the length prefix) as a
/// frozen `Bytes`, so decoders can slice it without copying. Returns
/// `Ok(None)` when the peer closed the connection between two frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                read: got,
                expected: prefix.len(),
            });
        }
        got += n;
    }
    let length = i32::from_be_bytes(prefix);
    let length = usize::try_from(length).map_err(|_| FrameError::NegativeLength { length })?;
    if length > limit_bytes {
        return Err(FrameError::TooLarge {
            length,
            limit: limit_bytes,
        });
    }
    // The buffer grows with what arrives (doubling) rather than being sized
    // by the declared length at once.
    let mut payload = BytesMut::zeroed(length.min(FIRST_CHUNK_BYTES));
    let mut filled = 0;
    while filled < length {
        if filled == payload.len() {
            let grown = (payload.len() * 2).min(length);
            payload.resize(grown, 0);
        }
        let n = reader.read(&mut payload[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                read: filled,
                expected: length,
            });
        }
        filled += n;
    }
    Ok(Some(payload.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn large_frames_arrive_whole_through_a_growing_buffer() {
        let payload: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut r = Cursor::new(framed(&payload));
        block_on(async {
            let got = read_frame(&mut r, 2 << 20)
                .await
                .expect("frame")
                .expect("some");
            assert_eq!(&got[..], &payload[..]);
        });
        let mut r = Cursor::new(framed(&payload)[..500_000].to_vec());
        block_on(async {
            match read_frame(&mut r, 2 << 20).await {
                Err(FrameError::Truncated { read, expected }) => {
                    assert_eq!((read, expected), (500_000 - 4, 1_000_003))
                }
                other => panic!("{other:?}"),
            }
        });
    }

    #[test]
    fn reads_consecutive_frames_then_clean_eof() {
        let mut wire = framed(b"hello");
        wire.extend(framed(b""));
        wire.extend(framed(b"world!"));
        let mut r = Cursor::new(wire);
        block_on(async {
            let a = read_frame(&mut r, 100).await.expect("frame").expect("some");
            assert_eq!(&a[..], b"hello");
            let b = read_frame(&mut r, 100).await.expect("frame").expect("some");
            assert!(b.is_empty());
            let c = read_frame(&mut r, 100).await.expect("frame").expect("some");
            assert_eq!(&c[..], b"world!");
            assert!(read_frame(&mut r, 100).await.expect("eof").is_none());
        });
    }

    #[test]
    fn refuses_oversize_and_negative_lengths_before_reading_the_payload() {
        block_on(async {
            // The prefix alone announces 2 GiB - 1: no payload follows, and
            // the error must come without trying to allocate it.
            let mut r = Cursor::new(i32::MAX.to_be_bytes().to_vec());
            let err = read_frame(&mut r, MAX_FRAME_BYTES_DEFAULT)
                .await
                .expect_err("too large");
            assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
            let mut r = Cursor::new((-5i32).to_be_bytes().to_vec());
            let err = read_frame(&mut r, 100).await.expect_err("negative");
            assert!(matches!(err, FrameError::NegativeLength { length: -5 }));
            let mut r = Cursor::new(framed(&[0u8; 11]));
            let err = read_frame(&mut r, 10).await.expect_err("limit");
            assert!(matches!(
                err,
                FrameError::TooLarge {
                    length: 11,
                    limit: 10
                }
            ));
        });
    }

    #[test]
    fn truncated_frames_are_errors() {
        block_on(async {
            let mut r = Cursor::new(vec![0u8, 0]);
            assert!(matches!(
                read_frame(&mut r, 100).await,
                Err(FrameError::Truncated {
                    read: 2,
                    expected: 4
                })
            ));
            let mut wire = framed(b"abcdef");
            wire.truncate(7);
            let mut r = Cursor::new(wire);
            assert!(matches!(
                read_frame(&mut r, 100).await,
                Err(FrameError::Truncated {
                    read: 3,
                    expected: 6
                })
            ));
        });
    }
}

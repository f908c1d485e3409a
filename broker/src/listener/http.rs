//! What the broker's small HTTP servers (the metrics endpoint and the
//! ingest listener) share: reading a request head, bounded so that a client
//! cannot make a shard buffer more than `REQUEST_HEAD_BYTES_MAX`, from a
//! plain or a TLS stream alike; and the TLS handshake of an HTTPS
//! endpoint, bounded in time, after which a server reads and writes a
//! `TlsStream` as it would the socket.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncReadExt};
use net::tls_stream::TlsStream;

use crate::rt::TcpStream;
use crate::security::tls::ServerTls;

/// Bytes a request head may take, blank line included.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;

/// Bytes asked of the socket at a time.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// What `read_head` found.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadRead {
    /// The client closed the connection before sending anything.
    Closed,
    /// A whole head: `buf[..end]` holds it, blank line included.
    Ready { end: usize },
    /// The head is longer than `REQUEST_HEAD_BYTES_MAX`.
    TooLarge,
}

/// Where a request head ends in `buf`: the index past its blank line.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads from `stream` until `buf` holds a whole head. Bytes after the
/// head (a body, a pipelined request) stay in `buf` behind it. A close in
/// the middle of a head is an `UnexpectedEof` error.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<HeadRead> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut searched = 0usize;
    loop {
        // Only the new bytes and the three before them can complete "\r\n\r\n".
        let from = searched.saturating_sub(3);
        if let Some(end) = head_end(&buf[from..]) {
            let end = from + end;
            if end > REQUEST_HEAD_BYTES_MAX {
                return Ok(HeadRead::TooLarge);
            }
            return Ok(HeadRead::Ready { end });
        }
        if buf.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(HeadRead::TooLarge);
        }
        searched = buf.len();
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(HeadRead::Closed)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What an HTTPS endpoint needs: the SSL listeners' TLS configuration
/// (certificate, client CA, `tls_client_auth`; swapped on SIGHUP) and the
/// bound on a handshake (`tls_handshake_timeout_ms`).
#[derive(Clone)]
pub struct Https {
    pub tls: Arc<ServerTls>,
    pub handshake_timeout: Duration,
}

/// The TLS handshake of a connection to an HTTPS endpoint, with the
/// configuration as it is now (so a SIGHUP reload reaches new
/// connections), within the handshake bound. A client that speaks plain
/// HTTP fails it: rustls answers with an alert and the caller closes.
pub async fn accept_tls<'a>(
    stream: &'a mut TcpStream,
    https: &Https,
) -> std::io::Result<TlsStream<&'a mut TcpStream>> {
    let config = https.tls.config(false);
    let timeout = https.handshake_timeout;
    future::or(TlsStream::accept(stream, config), async {
        crate::rt::sleep(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within {} ms", timeout.as_millis()),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_past_its_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}

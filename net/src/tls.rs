//! TLS on a connection that one task reads and another writes, each with
//! its own handle on the socket (see the broker's `connection`): rustls
//! keeps one session for both directions, so both tasks share it and
//! borrow it only between awaits. The reading side decrypts into the
//! frame reader (`TlsReader` is an `AsyncRead`); the writing side encrypts
//! a response's chunks and sends the records (`TlsWriter`). Under TLS a
//! Fetch answer's record batches pass through the cipher, so the
//! zero-copy path of a plaintext connection becomes one encryption pass.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::{ready, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::{ServerConfig, ServerConnection};

/// The session both sides of one connection share.
pub type Session = Rc<RefCell<ServerConnection>>;

/// Ciphertext read from the socket at a time: one full TLS record.
const CIPHERTEXT_BUFFER_BYTES: usize = 16 * 1024 + 256;

/// Plaintext handed to rustls per step when writing, and ciphertext
/// gathered before a send: bounds the memory a large answer takes.
const WRITE_STEP_BYTES: usize = 64 * 1024;

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the server side of a handshake, reading from `reader` and writing
/// to `writer` (two handles on one socket). Bounded in bytes by rustls
/// (a handshake message over 64 KiB is refused); the caller bounds it in
/// time. A failed handshake sends the client its alert before the error
/// returns.
pub async fn accept<R, W>(
    mut reader: R,
    writer: &mut W,
    config: Arc<ServerConfig>,
) -> io::Result<TlsReader<R>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut conn = ServerConnection::new(config).map_err(invalid)?;
    let mut ct = vec![0u8; CIPHERTEXT_BUFFER_BYTES].into_boxed_slice();
    let mut out = Vec::new();
    let (mut start, mut end) = (0, 0);
    loop {
        if conn.wants_write() {
            out.clear();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
            writer.write_all(&out).await?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if start == end {
            start = 0;
            end = reader.read(&mut ct).await?;
            if end == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ));
            }
        }
        // What follows the handshake in the same read (the first request)
        // stays in the session, or in `ct`, for the reader.
        let mut rest = &ct[start..end];
        let before = rest.len();
        conn.read_tls(&mut rest)?;
        start += before - rest.len();
        if let Err(e) = conn.process_new_packets() {
            out.clear();
            while conn.wants_write() {
                if conn.write_tls(&mut out).is_err() {
                    break;
                }
            }
            // The alert is a courtesy; the error is what counts.
            let _ = writer.write_all(&out).await;
            return Err(invalid(e));
        }
    }
    writer.flush().await?;
    Ok(TlsReader {
        reader,
        session: Rc::new(RefCell::new(conn)),
        ct,
        start,
        end,
    })
}

/// The reading side: ciphertext from the socket, plaintext out.
pub struct TlsReader<R> {
    reader: R,
    session: Session,
    ct: Box<[u8]>,
    /// Ciphertext read and not yet given to rustls: `ct[start..end]`.
    start: usize,
    end: usize,
}

impl<R> TlsReader<R> {
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for TlsReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            {
                let mut conn = this.session.borrow_mut();
                match conn.reader().read(buf) {
                    // 0: the client's close_notify, an orderly end.
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                // No plaintext is waiting, so rustls has room for more.
                if this.start < this.end {
                    let mut rest = &this.ct[this.start..this.end];
                    let before = rest.len();
                    conn.read_tls(&mut rest)?;
                    this.start += before - rest.len();
                    conn.process_new_packets().map_err(invalid)?;
                    continue;
                }
            }
            this.start = 0;
            this.end = 0;
            let n = ready!(Pin::new(&mut this.reader).poll_read(cx, &mut this.ct))?;
            if n == 0 {
                // Closed without close_notify: the frame reader reports a
                // truncated frame if it was inside one.
                return Poll::Ready(Ok(0));
            }
            this.end = n;
        }
    }
}

/// The writing side: encrypts what it is given and sends the records.
pub struct TlsWriter {
    session: Session,
    out: Vec<u8>,
}

impl TlsWriter {
    pub fn new(session: Session) -> TlsWriter {
        TlsWriter {
            session,
            out: Vec::new(),
        }
    }

    /// Sends `chunks` in order, as TLS records, then whatever else the
    /// session has queued (a key update's answer, say).
    pub async fn write_chunks<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
        chunks: &[Bytes],
    ) -> io::Result<()> {
        self.out.clear();
        for chunk in chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let step = rest.len().min(WRITE_STEP_BYTES);
                let taken = {
                    let mut conn = self.session.borrow_mut();
                    let taken = conn.writer().write(&rest[..step])?;
                    while conn.wants_write() {
                        conn.write_tls(&mut self.out)?;
                    }
                    taken
                };
                if taken == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                rest = &rest[taken..];
                if self.out.len() >= WRITE_STEP_BYTES {
                    stream.write_all(&self.out).await?;
                    self.out.clear();
                }
            }
        }
        {
            let mut conn = self.session.borrow_mut();
            while conn.wants_write() {
                conn.write_tls(&mut self.out)?;
            }
        }
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
        }
        // A large answer's buffer is not kept for the life of the
        // connection.
        if self.out.capacity() > 2 * WRITE_STEP_BYTES {
            self.out = Vec::new();
        }
        stream.flush().await
    }

    /// Tells the client the session ends (close_notify), best effort.
    pub async fn close<W: AsyncWrite + Unpin>(&mut self, stream: &mut W) {
        self.out.clear();
        {
            let mut conn = self.session.borrow_mut();
            conn.send_close_notify();
            while conn.wants_write() {
                if conn.write_tls(&mut self.out).is_err() {
                    break;
                }
            }
        }
        let _ = stream.write_all(&self.out).await;
    }
}

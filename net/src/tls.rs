//! TLS on a connection that one task reads and another writes, each with
//! its own handle on the socket (see the broker's `connection`): rustls
//! keeps one session for both directions, so both tasks share it and
//! borrow it only between awaits. The reading side decrypts into the
//! frame reader (`TlsReader` is an `AsyncRead`); the writing side encrypts
//! a response's chunks and sends the records (`TlsWriter`). Under TLS a
//! Fetch answer's record batches pass through the cipher, so the
//! zero-copy path of a plaintext connection becomes one encryption pass.
//! A server that reads and writes in turn from one task (the HTTP
//! endpoints) uses `TlsStream`, both directions over one handle.

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
    let mut both = Halves {
        reader: &mut reader,
        writer,
    };
    let (conn, ct, start, end) = handshake(&mut both, config).await?;
    Ok(TlsReader {
        reader,
        session: Rc::new(RefCell::new(conn)),
        ct,
        start,
        end,
    })
}

/// `accept` on one handle that a single task both reads and writes, as a
/// request-response server does: the stream it gives is read and written
/// like the socket, in plaintext.
pub async fn accept_stream<S>(mut stream: S, config: Arc<ServerConfig>) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (conn, ct, start, end) = handshake(&mut stream, config).await?;
    Ok(TlsStream {
        inner: TlsReader {
            reader: stream,
            session: Rc::new(RefCell::new(conn)),
            ct,
            start,
            end,
        },
        out: Vec::new(),
        sent: 0,
        closing: false,
    })
}

/// The handshake over anything that reads and writes the socket. Returns
/// the session and the ciphertext read past the handshake, `ct[start..end]`.
async fn handshake<IO>(
    io: &mut IO,
    config: Arc<ServerConfig>,
) -> io::Result<(ServerConnection, Box<[u8]>, usize, usize)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
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
            io.write_all(&out).await?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if start == end {
            start = 0;
            end = io.read(&mut ct).await?;
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
            let _ = io.write_all(&out).await;
            return Err(invalid(e));
        }
    }
    io.flush().await?;
    Ok((conn, ct, start, end))
}

/// Two handles on one socket seen as one, for the handshake.
struct Halves<'a, R, W> {
    reader: &'a mut R,
    writer: &'a mut W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Halves<'_, R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().reader).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Halves<'_, R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().writer).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().writer).poll_close(cx)
    }
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

/// One handle, read and written in turn by one task: plaintext in and out
/// over TLS records, for the broker's small HTTP servers. A write hands
/// rustls at most `WRITE_STEP_BYTES` and keeps the ciphertext until the
/// socket took it, so memory stays bounded whatever the caller writes.
pub struct TlsStream<S> {
    inner: TlsReader<S>,
    /// Ciphertext waiting for the socket: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Whether close_notify is queued already.
    closing: bool,
}

impl<S> TlsStream<S> {
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    /// The socket under the session.
    pub fn get_ref(&self) -> &S {
        &self.inner.reader
    }
}

impl<S: AsyncWrite + Unpin> TlsStream<S> {
    /// Moves what rustls has queued into `out`.
    fn gather(&mut self) -> io::Result<()> {
        let mut conn = self.inner.session.borrow_mut();
        while conn.wants_write() {
            conn.write_tls(&mut self.out)?;
        }
        Ok(())
    }

    /// Sends `out` until the socket has all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n =
                ready!(Pin::new(&mut self.inner.reader).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > 2 * WRITE_STEP_BYTES {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What an earlier write left goes first: bounded memory.
        if this.out.len() - this.sent >= WRITE_STEP_BYTES {
            ready!(this.poll_send(cx))?;
        }
        let step = buf.len().min(WRITE_STEP_BYTES);
        let taken = this
            .inner
            .session
            .borrow_mut()
            .writer()
            .write(&buf[..step])?;
        this.gather()?;
        // Sent now if the socket takes it; otherwise by the next write or
        // the flush, which every response ends with.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.gather()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner.reader).poll_flush(cx)
    }

    /// Tells the client the session ends (close_notify), then closes.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.inner.session.borrow_mut().send_close_notify();
        }
        this.gather()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner.reader).poll_close(cx)
    }
}

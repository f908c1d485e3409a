//! TLS on a stream that is one value with both directions: the links
//! between the nodes of a cluster (replication links and the controller
//! quorum; mutual TLS, each node both a client and a server; the links
//! split it with `futures_lite::io::split`, which takes turns on it), the
//! broker's small HTTPS servers (one task reads a request, then writes its
//! answer) and sluice-bench's connections.
//! `LinkStream` is what the links hold, plain or TLS, so their code does
//! not fork on the setting; `PeerTls` is the pair of configurations every
//! shard shares, swapped whole when the files are read again (SIGHUP).
//!
//! The Kafka listeners use `tls` instead: there one task reads and another
//! writes through separate handles on the socket, and a response's record
//! batches are written as chunks.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures_lite::{ready, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Ciphertext read from the socket at a time: one full TLS record.
const CIPHERTEXT_BUFFER_BYTES: usize = 16 * 1024 + 256;

/// Ciphertext a writer may leave unsent before a write waits for the
/// socket: bounds the memory of a link whose peer reads slowly.
const PENDING_WRITE_BYTES_MAX: usize = 256 * 1024;

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The configurations of a node's TLS links: the server side requires a
/// client certificate of the cluster CA, the client side presents this
/// node's certificate and accepts only servers of the same CA.
pub struct PeerTls {
    current: RwLock<(Arc<ServerConfig>, Arc<ClientConfig>)>,
}

impl PeerTls {
    pub fn new(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> PeerTls {
        PeerTls {
            current: RwLock::new((server, client)),
        }
    }

    fn current(&self) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The server configuration a link accepted now uses.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.current().0
    }

    /// The client configuration a link dialled now uses.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.current().1
    }

    /// New links use these; open ones keep theirs.
    pub fn replace(&self, server: Arc<ServerConfig>, client: Arc<ClientConfig>) {
        match self.current.write() {
            Ok(mut c) => *c = (server, client),
            Err(poisoned) => *poisoned.into_inner() = (server, client),
        }
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

/// One configuration holder is one setting: equal only to itself.
impl PartialEq for PeerTls {
    fn eq(&self, other: &PeerTls) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for PeerTls {}

/// A TLS session over `io`, readable and writable.
pub struct TlsStream<S> {
    io: S,
    conn: Connection,
    /// Ciphertext read and not yet given to rustls: `ct[start..end]`.
    ct: Box<[u8]>,
    start: usize,
    end: usize,
    /// Ciphertext made and not yet sent: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Whether close_notify is queued already.
    closing: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// The server side of a handshake on an accepted connection. Bounded in
    /// bytes by rustls; the caller bounds it in time.
    pub async fn accept(io: S, config: Arc<ServerConfig>) -> io::Result<TlsStream<S>> {
        let conn = ServerConnection::new(config).map_err(invalid)?;
        TlsStream::new(io, conn.into()).handshake().await
    }

    /// The client side of a handshake on a dialled connection to `peer`.
    pub async fn connect(
        io: S,
        config: Arc<ClientConfig>,
        peer: ServerName<'static>,
    ) -> io::Result<TlsStream<S>> {
        let conn = ClientConnection::new(config, peer).map_err(invalid)?;
        TlsStream::new(io, conn.into()).handshake().await
    }

    fn new(io: S, conn: Connection) -> TlsStream<S> {
        TlsStream {
            io,
            conn,
            ct: vec![0u8; CIPHERTEXT_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::new(),
            sent: 0,
            closing: false,
        }
    }

    async fn handshake(mut self) -> io::Result<TlsStream<S>> {
        loop {
            while self.conn.wants_write() {
                self.conn.write_tls(&mut self.out)?;
            }
            self.flush_out().await?;
            if !self.conn.is_handshaking() {
                return Ok(self);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = self.io.read(&mut self.ct).await?;
                if self.end == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
            }
            // What follows the handshake in the same read stays in `ct`
            // for the first read.
            let mut rest = &self.ct[self.start..self.end];
            let before = rest.len();
            self.conn.read_tls(&mut rest)?;
            self.start += before - rest.len();
            if let Err(e) = self.conn.process_new_packets() {
                // The alert is a courtesy; the error is what counts.
                while self.conn.wants_write() {
                    if self.conn.write_tls(&mut self.out).is_err() {
                        break;
                    }
                }
                let _ = self.flush_out().await;
                return Err(invalid(e));
            }
        }
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        futures_lite::future::poll_fn(|cx| self.poll_send(cx)).await?;
        self.io.flush().await
    }

    /// The peer's certificate chain, leaf first, once the handshake is done.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Sends `out[sent..]`; ready when all of it is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        // A large answer's buffer is not kept for the life of the
        // connection.
        if self.out.capacity() > 2 * PENDING_WRITE_BYTES_MAX {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.conn.reader().read(buf) {
                // 0: the peer's close_notify, an orderly end.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.start < this.end {
                let mut rest = &this.ct[this.start..this.end];
                let before = rest.len();
                this.conn.read_tls(&mut rest)?;
                this.start += before - rest.len();
                this.conn.process_new_packets().map_err(invalid)?;
                continue;
            }
            this.start = 0;
            this.end = 0;
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.ct))?;
            if n == 0 {
                // Closed without close_notify: the frame reader reports a
                // truncated frame if it was inside one.
                return Poll::Ready(Ok(0));
            }
            this.end = n;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.sent >= PENDING_WRITE_BYTES_MAX {
            ready!(this.poll_send(cx))?;
        }
        let n = this.conn.writer().write(buf)?;
        while this.conn.wants_write() {
            this.conn.write_tls(&mut this.out)?;
        }
        // Sends what it can now; the rest goes with the next write or the
        // flush, and the waker is registered either way.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.conn.wants_write() {
            this.conn.write_tls(&mut this.out)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.conn.send_close_notify();
        }
        while this.conn.wants_write() {
            this.conn.write_tls(&mut this.out)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

/// A link between nodes: plain TCP, or TLS when the cluster has it on.
pub enum LinkStream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> LinkStream<S> {
    /// The accepting side: a TLS handshake first when `tls` is set.
    pub async fn accept(io: S, tls: Option<&PeerTls>) -> io::Result<LinkStream<S>> {
        match tls {
            None => Ok(LinkStream::Plain(io)),
            Some(tls) => Ok(LinkStream::Tls(Box::new(
                TlsStream::accept(io, tls.server()).await?,
            ))),
        }
    }

    /// The dialling side, to `peer`: a TLS handshake first when `tls` is set.
    pub async fn connect(io: S, tls: Option<&PeerTls>, peer: IpAddr) -> io::Result<LinkStream<S>> {
        match tls {
            None => Ok(LinkStream::Plain(io)),
            Some(tls) => Ok(LinkStream::Tls(Box::new(
                TlsStream::connect(io, tls.client(), ServerName::IpAddress(peer.into())).await?,
            ))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for LinkStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LinkStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_flush(cx),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_close(cx),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

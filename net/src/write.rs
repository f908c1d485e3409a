//! Writing a response made of several `Bytes` chunks with vectored
//! `sendmsg` calls, so record batches go from the log's buffers to the
//! socket without being copied into one contiguous response.

use std::io;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use futures_lite::{AsyncWrite, AsyncWriteExt};

/// iovecs handed to one sendmsg call (well below IOV_MAX = 1024).
const IOVECS_PER_CALL_MAX: usize = 64;

/// Writes every chunk in order. The socket must be non-blocking: data goes
/// out with `sendmsg(MSG_DONTWAIT)`, and when the socket is full the stream's
/// own async write waits for room (and sends part of the current chunk).
pub async fn write_chunks<S>(stream: &mut S, chunks: &[Bytes]) -> io::Result<()>
where
    S: AsyncWrite + AsRawFd + Unpin,
{
    let mut cursor = Cursor::new(chunks);
    while !cursor.done() {
        match send_vectored(stream.as_raw_fd(), &cursor) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => cursor.advance(sent),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let n = stream.write(cursor.current()).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                cursor.advance(n);
            }
            Err(e) => return Err(e),
        }
    }
    stream.flush().await
}

/// Position inside a list of chunks, never resting on an empty chunk.
struct Cursor<'a> {
    chunks: &'a [Bytes],
    index: usize,
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn new(chunks: &'a [Bytes]) -> Self {
        let mut c = Cursor {
            chunks,
            index: 0,
            offset: 0,
        };
        c.skip_empty();
        c
    }

    fn skip_empty(&mut self) {
        while self.index < self.chunks.len() && self.offset >= self.chunks[self.index].len() {
            self.index += 1;
            self.offset = 0;
        }
    }

    fn done(&self) -> bool {
        self.index >= self.chunks.len()
    }

    fn current(&self) -> &[u8] {
        &self.chunks[self.index][self.offset..]
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 && !self.done() {
            let left = self.chunks[self.index].len() - self.offset;
            let step = left.min(n);
            self.offset += step;
            n -= step;
            self.skip_empty();
        }
        debug_assert_eq!(n, 0, "advanced past the end of the chunks");
    }
}

fn send_vectored(fd: i32, cursor: &Cursor<'_>) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(IOVECS_PER_CALL_MAX);
    let mut offset = cursor.offset;
    for chunk in &cursor.chunks[cursor.index..] {
        if iov.len() == IOVECS_PER_CALL_MAX {
            break;
        }
        let rest = &chunk[offset..];
        offset = 0;
        if rest.is_empty() {
            continue;
        }
        iov.push(libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        });
    }
    // SAFETY: msghdr is plain data; zeroed is a valid "no name, no control"
    // header, and the iovecs point into `cursor.chunks`, which outlive the
    // call. sendmsg only reads them.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A non-blocking Unix socket whose async write waits by blocking, which
    /// is enough to exercise the fallback path in a test.
    struct Sock(UnixStream);

    impl AsRawFd for Sock {
        fn as_raw_fd(&self) -> i32 {
            self.0.as_raw_fd()
        }
    }

    impl AsyncWrite for Sock {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            use std::io::Write;
            loop {
                match (&self.0).write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    other => return Poll::Ready(other),
                }
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn writes_many_chunks_in_order_even_when_the_socket_fills() {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        let chunks: Vec<Bytes> = (0..300)
            .map(|i| Bytes::from(vec![i as u8; (i * 37) % 5000]))
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let total = expected.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            b.read_exact(&mut got).expect("read all");
            got
        });
        let mut sock = Sock(a);
        futures_lite::future::block_on(write_chunks(&mut sock, &chunks)).expect("written");
        assert_eq!(reader.join().expect("reader"), expected);
    }
}

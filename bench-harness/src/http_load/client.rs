//! A small blocking HTTP/1.1 client for the ingest load: one keep-alive
//! connection per writer thread, one request in flight, `Content-Length`
//! bodies both ways. Enough for the broker's ingest listener, and no
//! runtime of its own, so each writer's cost is a write and a read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest response head read; the broker's are a few hundred bytes.
const HEAD_BYTES_MAX: usize = 16 << 10;
/// Largest response body kept (error messages); longer ones are refused.
const BODY_BYTES_MAX: usize = 1 << 20;

/// The parts of a response the load looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close`: open a new connection.
    pub close: bool,
}

pub struct Client {
    addr: String,
    stream: Option<TcpStream>,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(addr: &str, timeout: Duration) -> Client {
        Client {
            addr: addr.to_string(),
            stream: None,
            timeout,
            buf: Vec::with_capacity(4096),
        }
    }

    fn connect(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.stream = Some(s);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no connection"))
    }

    /// POSTs `body` to `target` with the extra `headers` (each a full
    /// `Name: value` line); after any error the connection is dropped and
    /// the next request opens a new one.
    pub fn post(&mut self, target: &str, headers: &str, body: &[u8]) -> std::io::Result<Response> {
        let result = self.post_once(target, headers, body);
        match &result {
            Ok(r) if !r.close => {}
            _ => self.stream = None,
        }
        result
    }

    fn post_once(&mut self, target: &str, headers: &str, body: &[u8]) -> std::io::Result<Response> {
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-bench\r\n{headers}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let stream = self.connect()?;
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut buf = std::mem::take(&mut self.buf);
        let r = read_response(
            self.stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no connection"))?,
            &mut buf,
        );
        self.buf = buf;
        r
    }
}

/// Reads one response from `r`; `buf` is scratch space kept between calls.
pub fn read_response(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Response> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err(bad("response head too long"));
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut close = version == "HTTP/1.0";
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| bad("malformed Content-Length"))?;
            }
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => return Err(bad("chunked responses are not read")),
            _ => {}
        }
    }
    if length > BODY_BYTES_MAX {
        return Err(bad("response body too long"));
    }
    let mut body = buf[head_end + 4..].to_vec();
    if body.len() > length {
        // One request in flight: nothing may follow the body.
        return Err(bad("bytes past the response body"));
    }
    let have = body.len();
    body.resize(length, 0);
    r.read_exact(&mut body[have..])?;
    Ok(Response {
        status,
        body,
        close,
    })
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, as a socket may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(out.len()).min(7);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn responses_are_read_whole_in_pieces() {
        let mut buf = Vec::new();
        let r = read_response(
            &mut Trickle(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"),
            &mut buf,
        )
        .expect("204");
        assert_eq!((r.status, r.body.len(), r.close), (204, 0, false));
        let text = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nline 1: bad";
        let r = read_response(&mut Trickle(text), &mut buf).expect("400");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (400, &b"line 1: bad"[..], true)
        );
    }

    #[test]
    fn broken_responses_are_errors() {
        let mut buf = Vec::new();
        assert!(read_response(&mut Trickle(b"HTTP/1.1 204"), &mut buf).is_err());
        assert!(read_response(&mut Trickle(b"garbage\r\n\r\n"), &mut buf).is_err());
        assert!(read_response(
            &mut Trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
            &mut buf
        )
        .is_err());
        assert!(read_response(
            &mut Trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &mut buf
        )
        .is_err());
    }
}

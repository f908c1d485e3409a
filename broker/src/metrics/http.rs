//! The metrics endpoint: a minimal HTTP/1.x server on shard 0's executor,
//! in a low-share task queue, answering `GET /metrics` (Prometheus text)
//! and `GET /health` (200 "ok" or 503 with the reasons), one request per
//! connection, over plain HTTP or HTTPS (`metrics_tls`). Requests are
//! bounded in size, time and concurrency; the parser is a pure function so
//! every malformed input is unit-tested.

use std::rc::Rc;
use std::time::Duration;

use crate::rt::{Latency, Shares};
use crate::rt::{TcpListener, TcpStream};
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{ShardMetrics, ShardSnapshot};
use crate::listener::http::{accept_tls, read_head, HeadRead, Https};
use crate::listener::Acceptor;
use crate::peers::LocalFuture;
use crate::shard::Shard;

/// Asks every shard for its snapshot (the node does, over the mesh);
/// `Err(i)` names a shard that did not answer within the time given.
pub type Gather = Rc<dyn Fn(Duration) -> LocalFuture<'static, Result<Vec<ShardSnapshot>, usize>>>;

/// Time a client has to send its request head and take the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Time shards have to answer a scrape before health reports them.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once; more are closed at accept.
const CONNECTIONS_MAX: usize = 16;

/// CPU shares of the endpoint's task queue: request handling (1000 shares)
/// keeps the core when both want it.
const HTTP_SHARES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
}

/// What a request head asks for, or the status that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// `head` is true for HEAD: headers only.
    Ok {
        route: Route,
        head: bool,
    },
    BadRequest(&'static str),
    NotFound,
    MethodNotAllowed,
}

/// Parses a complete request head (up to and excluding the blank line).
pub fn parse_head(head: &[u8]) -> Parsed {
    let Ok(text) = std::str::from_utf8(head) else {
        return Parsed::BadRequest("request is not UTF-8");
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::BadRequest("malformed request line");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Parsed::BadRequest("unsupported HTTP version");
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::BadRequest("malformed method");
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Parsed::BadRequest("malformed request target");
    }
    for line in lines {
        match line.split_once(':') {
            Some((name, _))
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') => {}
            _ => return Parsed::BadRequest("malformed header line"),
        }
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::MethodNotAllowed,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match path {
        "/metrics" => Parsed::Ok {
            route: Route::Metrics,
            head,
        },
        "/health" => Parsed::Ok {
            route: Route::Health,
            head,
        },
        _ => Parsed::NotFound,
    }
}

/// A whole HTTP/1.1 response that closes the connection.
pub fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn answer(gather: &Gather, parsed: Parsed) -> Vec<u8> {
    match parsed {
        Parsed::BadRequest(why) => response(400, TEXT, &format!("bad request: {why}\n"), false),
        Parsed::NotFound => response(404, TEXT, "not found: try /metrics or /health\n", false),
        Parsed::MethodNotAllowed => response(405, TEXT, "only GET and HEAD\n", false),
        Parsed::Ok { route, head } => {
            let gathered = gather(GATHER_TIMEOUT).await;
            match (route, gathered) {
                (Route::Metrics, Ok(snapshots)) => response(
                    200,
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    &super::render(snapshots),
                    head,
                ),
                (Route::Metrics, Err(i)) => response(
                    503,
                    TEXT,
                    &format!("shard {i} did not answer within {GATHER_TIMEOUT:?}\n"),
                    head,
                ),
                (Route::Health, Ok(snapshots)) => match super::health(&snapshots) {
                    Ok(()) => response(200, TEXT, "ok\n", head),
                    Err(why) => response(503, TEXT, &format!("{why}\n"), head),
                },
                (Route::Health, Err(i)) => response(
                    503,
                    TEXT,
                    &format!("shard {i} did not answer within {GATHER_TIMEOUT:?}\n"),
                    head,
                ),
            }
        }
    }
}

/// One request and its answer, within `REQUEST_TIMEOUT`.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(gather: &Gather, stream: &mut S) {
    let exchange = async {
        let mut buf = Vec::with_capacity(1024);
        let reply = match read_head(stream, &mut buf).await {
            Ok(HeadRead::Closed) | Err(_) => return,
            Ok(HeadRead::TooLarge) => {
                response(400, TEXT, "bad request: request head too large\n", false)
            }
            Ok(HeadRead::Ready { end }) => answer(gather, parse_head(&buf[..end - 4])).await,
        };
        if stream.write_all(&reply).await.is_ok() {
            let _ = stream.flush().await;
        }
    };
    let timed_out = future::or(
        async {
            exchange.await;
            false
        },
        async {
            crate::rt::sleep(REQUEST_TIMEOUT).await;
            true
        },
    )
    .await;
    if timed_out {
        tracing::debug!("metrics endpoint: request timed out");
    }
}

/// What serving one connection needs.
struct Serving {
    gather: Gather,
    https: Option<Https>,
    metrics: Rc<ShardMetrics>,
}

async fn serve_connection(serving: Rc<Serving>, mut stream: TcpStream) {
    match &serving.https {
        None => exchange(&serving.gather, &mut stream).await,
        Some(https) => match accept_tls(&mut stream, https).await {
            Ok(mut tls) => {
                exchange(&serving.gather, &mut tls).await;
                let _ = tls.close().await;
            }
            Err(e) => {
                serving.metrics.tls_handshake_failed();
                let peer = stream.peer_addr().ok();
                tracing::info!(?peer, "metrics endpoint: TLS handshake failed: {e}");
                let _ = stream.shutdown(std::net::Shutdown::Both).await;
                return;
            }
        },
    }
    let _ = stream.close().await;
}

/// Serves the endpoint on `listener` (bound before the shards started)
/// until the shard shuts down; over HTTPS when `https` is given.
pub fn spawn_server(
    shard: &Rc<Shard>,
    gather: Gather,
    https: Option<Https>,
    metrics: Rc<ShardMetrics>,
    listener: std::net::TcpListener,
) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("metrics endpoint: {e}");
    }
    // SAFETY: the descriptor comes from a listening std TcpListener whose
    // ownership `into_raw_fd` gives up, so glommio's listener is its only
    // owner.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let queue = crate::rt::executor().create_task_queue(
        Shares::Static(HTTP_SHARES),
        Latency::NotImportant,
        "metrics-http",
    );
    let shard = shard.clone();
    let serving = Rc::new(Serving {
        gather,
        https,
        metrics,
    });
    let task = crate::rt::spawn_local_into(
        async move {
            let acceptor = Acceptor::new(listener, CONNECTIONS_MAX, "metrics endpoint");
            acceptor
                .serve_all(
                    shard.stopped(),
                    || {},
                    |stream| serve_connection(serving.clone(), stream),
                )
                .await;
        },
        queue,
    );
    match task {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!("the metrics endpoint did not start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(route: Route) -> Parsed {
        Parsed::Ok { route, head: false }
    }

    #[test]
    fn routes() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x"),
            ok(Route::Metrics)
        );
        assert_eq!(parse_head(b"GET /health HTTP/1.0"), ok(Route::Health));
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: */*\r\nUser-Agent: Prometheus/2"),
            ok(Route::Metrics)
        );
        assert_eq!(
            parse_head(b"HEAD /health HTTP/1.1"),
            Parsed::Ok {
                route: Route::Health,
                head: true
            }
        );
        assert_eq!(parse_head(b"GET / HTTP/1.1"), Parsed::NotFound);
        assert_eq!(parse_head(b"GET /metricsx HTTP/1.1"), Parsed::NotFound);
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1"),
            Parsed::MethodNotAllowed
        );
    }

    #[test]
    fn malformed_heads_are_bad_requests() {
        for head in [
            &b""[..],
            b"GET",
            b"GET /metrics",
            b"GET  /metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1 extra",
            b"GET /metrics HTTP/2.0",
            b"GET metrics HTTP/1.1",
            b"get /metrics HTTP/1.1",
            b"GET /met\x01rics HTTP/1.1",
            b"GET /metrics HTTP/1.1\r\nno colon",
            b"GET /metrics HTTP/1.1\r\n: empty name",
            b"GET /metrics HTTP/1.1\r\nbad name: x y",
            b"\xff\xfe /metrics HTTP/1.1",
            b"\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(head), Parsed::BadRequest(_)),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and byte flip of a valid head.
        let valid = b"GET /metrics HTTP/1.1\r\nHost: localhost:9644\r\nAccept: text/plain";
        for n in 0..=valid.len() {
            let _ = parse_head(&valid[..n]);
            for flip in [0u8, b' ', b':', b'\r', b'\n', 0x80, 0xff] {
                let mut v = valid.to_vec();
                if n < v.len() {
                    v[n] = flip;
                }
                let _ = parse_head(&v);
            }
        }
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response(404, TEXT, "nope\n", false)).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(r.contains("Content-Length: 5\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nnope\n"));
        let h = String::from_utf8(response(200, TEXT, "ok\n", true)).expect("utf-8");
        assert!(h.contains("Content-Length: 3\r\n") && h.ends_with("\r\n\r\n"));
    }
}

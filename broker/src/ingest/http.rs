//! The HTTP ingest listener (HTTP/1.1, or HTTPS with `ingest_http_tls`):
//! Influx's write API, `POST /api/v2/write` (InfluxDB 2: bucket, org,
//! precision) and `POST /write` (InfluxDB 1: db, precision); Prometheus
//! remote-write, `POST /api/v1/write` (1.0 and 2.0, snappy); and `/ping`,
//! `/health`, which are always open. A write is authenticated as
//! `ingest_http_auth` says before its body is read: refused, it gets 401
//! and nothing of it is stored. Keep-alive, Content-Length bodies only
//! (bounded after decompression), 204 once stored as the topic's
//! durability policy requires, 429 with Retry-After when a partition's
//! queue is full, a JSON error (InfluxDB's shape) otherwise. The
//! request-head parser is a pure function, unit-tested against malformed
//! input.

use std::io::Read;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::rt::{TcpListener, TcpStream};
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::influx_line::{self, Precision};
use super::remote_write::{self, Version};
use super::{Ingest, IngestError, RETRY_AFTER_S};
use crate::acl::{Operation, ResourceType};
use crate::kafka::authz;
use crate::listener::http::{accept_tls, head_end, read_head, HeadRead};
use crate::listener::Acceptor;
use crate::security::http_auth::{self, Presented, Refused};

/// Time a client has to send a whole request (head and body) once it
/// started one, and to take the answer; also the keep-alive idle bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once per shard; more are closed at accept.
const CONNECTIONS_MAX: usize = 256;

/// Bytes of an oversized body read and dropped so its 413 reaches the client.
const DISCARD_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An Influx write with its precision.
    Influx(Precision),
    /// A Prometheus remote-write in the version its Content-Type names.
    RemoteWrite(Version),
    Ping,
}

/// A body's Content-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// A snappy block (remote-write's only encoding).
    Snappy,
}

/// A request head, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub route: Route,
    pub content_length: usize,
    pub encoding: Encoding,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub head_only: bool,
    /// The credentials the request presents.
    pub auth: Presented,
}

/// An answer: status, message (for errors) and extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        headers: Vec::new(),
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Parses a complete request head (up to and excluding the blank line).
pub fn parse_head(head: &[u8]) -> Result<Head, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| refuse(400, "request is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "malformed request line"));
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(refuse(400, "unsupported HTTP version")),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(refuse(400, "malformed request target"));
    }
    let mut content_length: Option<usize> = None;
    let mut encoding = Encoding::Identity;
    let mut content_type = String::new();
    let mut expect_continue = false;
    let mut authorization: Option<&str> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(refuse(400, "malformed header line"));
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(400, "malformed header line"));
        }
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| refuse(400, "malformed Content-Length"))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(refuse(400, "conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                return Err(refuse(
                    411,
                    "chunked bodies are not accepted: send Content-Length",
                ))
            }
            "content-type" => content_type = value.to_string(),
            "content-encoding" => match value.to_ascii_lowercase().as_str() {
                "gzip" => encoding = Encoding::Gzip,
                "snappy" => encoding = Encoding::Snappy,
                "identity" | "" => encoding = Encoding::Identity,
                other => return Err(refuse(415, format!("unsupported Content-Encoding {other}"))),
            },
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep_alive = false;
                } else if v.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            "authorization" => {
                if authorization.is_some() {
                    return Err(refuse(400, "more than one Authorization header"));
                }
                authorization = Some(value);
            }
            _ => {}
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = match (method, path) {
        ("POST", "/api/v2/write") | ("POST", "/write") => {
            let precision = query_param(query, "precision").unwrap_or("");
            let precision = Precision::parse(precision).ok_or_else(|| {
                refuse(
                    400,
                    format!("precision {precision:?} is not one of ns, us, ms, s"),
                )
            })?;
            let (name, what) = if path == "/write" {
                ("db", "database")
            } else {
                ("bucket", "bucket")
            };
            if query_param(query, name).is_none_or(str::is_empty) {
                return Err(refuse(400, format!("{what} not specified ({name}=...)")));
            }
            if encoding == Encoding::Snappy {
                return Err(refuse(415, "Influx writes are plain or gzip, not snappy"));
            }
            Route::Influx(precision)
        }
        ("POST", "/api/v1/write") => {
            if encoding != Encoding::Snappy {
                return Err(refuse(
                    415,
                    "remote-write bodies are snappy blocks: Content-Encoding: snappy",
                ));
            }
            Route::RemoteWrite(
                Version::from_content_type(&content_type).map_err(|e| refuse(415, e))?,
            )
        }
        ("GET" | "HEAD", "/ping" | "/health") => Route::Ping,
        (_, "/api/v2/write" | "/write" | "/api/v1/write") => return Err(refuse(405, "only POST")),
        (_, "/ping" | "/health") => return Err(refuse(405, "only GET and HEAD")),
        _ => return Err(refuse(404, format!("no route {path}"))),
    };
    // InfluxDB 1 reads `u` and `p` before the header.
    let from_query = (path == "/write")
        .then(|| http_auth::from_query(query_param(query, "u"), query_param(query, "p")))
        .flatten();
    let auth = match (from_query, authorization) {
        (Some(presented), _) => presented,
        (None, Some(value)) => http_auth::from_header(value),
        (None, None) => Presented::Nothing,
    };
    let content_length = match (content_length, &route) {
        (Some(n), _) => n,
        (None, Route::Ping) => 0,
        (None, _) => return Err(refuse(411, "Content-Length required")),
    };
    Ok(Head {
        route,
        content_length,
        encoding,
        keep_alive,
        expect_continue,
        head_only: method == "HEAD",
        auth,
    })
}

/// A whole response; `code` is InfluxDB's error code word for errors.
pub fn response(answer: &Refusal, keep_alive: bool) -> Vec<u8> {
    let (status, message) = (answer.status, answer.message.as_str());
    let (reason, code) = match status {
        204 => ("No Content", ""),
        400 => ("Bad Request", "invalid"),
        401 => ("Unauthorized", "unauthorized"),
        403 => ("Forbidden", "forbidden"),
        404 => ("Not Found", "not found"),
        405 => ("Method Not Allowed", "method not allowed"),
        411 => ("Length Required", "invalid"),
        413 => ("Payload Too Large", "request too large"),
        415 => ("Unsupported Media Type", "invalid"),
        429 => ("Too Many Requests", "too many requests"),
        503 => ("Service Unavailable", "unavailable"),
        _ => ("Internal Server Error", "internal error"),
    };
    let body = if status == 204 {
        String::new()
    } else {
        serde_json::json!({ "code": code, "message": message }).to_string()
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    if status == 204 {
        out.push_str("X-Influxdb-Version: sluice\r\n");
    } else {
        out.push_str("Content-Type: application/json; charset=utf-8\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if status == 429 || status == 503 {
        out.push_str(&format!("Retry-After: {RETRY_AFTER_S}\r\n"));
    }
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Decodes a gzip body, refusing one that inflates past `max` bytes.
fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| refuse(400, format!("gzip body: {e}")))?;
    if out.len() > max {
        return Err(refuse(
            413,
            format!("body over {max} bytes once decompressed"),
        ));
    }
    Ok(out)
}

/// Who sent a request: for its log lines and its authorization.
struct Caller {
    peer: Option<SocketAddr>,
    principal: String,
}

/// The answer to a write that reached the log (or did not).
fn stored(result: Result<(), IngestError>, what: &str, caller: &Caller) -> Refusal {
    match result {
        Ok(()) => refuse(204, ""),
        Err(e @ IngestError::NoTopic(_)) => refuse(404, e.to_string()),
        Err(e @ IngestError::Busy(_)) => refuse(429, e.to_string()),
        Err(e @ IngestError::Unavailable(_)) => {
            tracing::warn!(peer = ?caller.peer, principal = %caller.principal, "{what} write: {e}");
            refuse(503, e.to_string())
        }
    }
}

/// An Influx write, once its head and body are in.
async fn influx_write(
    ingest: &Ingest,
    caller: &Caller,
    precision: Precision,
    body: Vec<u8>,
    gzip: bool,
) -> Refusal {
    let shard = &ingest.shard;
    let max = shard.config.ingest_body_bytes_max;
    let body = if gzip {
        match gunzip(&body, max) {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        body
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(400, "body is not UTF-8");
    };
    // Every line is checked before anything is stored.
    let points = match influx_line::parse_all(text, precision, super::now_ns(), ingest.format) {
        Ok(p) => p,
        Err(e) => {
            shard.metrics.influx_lines_refused(1);
            return refuse(400, e.to_string());
        }
    };
    let n = points.len() as u64;
    let answer = stored(
        ingest.write(&shard.config.influx_topic, points).await,
        "influx",
        caller,
    );
    if answer.status == 204 {
        shard.metrics.influx_points_stored(n);
    }
    answer
}

/// A Prometheus remote-write, once its head and body are in. A 2.0 write
/// is told how much was written, as its spec asks.
async fn remote_write(
    ingest: &Ingest,
    caller: &Caller,
    version: Version,
    body: Vec<u8>,
) -> Refusal {
    let shard = &ingest.shard;
    let decoded =
        remote_write::decompress(&body, shard.config.ingest_body_bytes_max).and_then(|raw| {
            remote_write::decode(raw.into(), version, ingest.format).map_err(|e| (400, e))
        });
    let decoded = match decoded {
        Ok(d) => d,
        Err((status, message)) => {
            shard.metrics.prometheus_write_refused();
            return refuse(status, message);
        }
    };
    let samples = decoded.samples;
    let mut answer = stored(
        ingest
            .write(&shard.config.prometheus_topic, decoded.records)
            .await,
        "remote",
        caller,
    );
    if answer.status == 429 {
        // Prometheus retries 5xx always but 429 only when configured to
        // (`retry_on_http_429`), dropping the samples otherwise: a full
        // queue is a 503 here, Retry-After included.
        answer.status = 503;
    }
    if answer.status == 204 {
        shard.metrics.prometheus_samples_stored(samples);
        if version == Version::V2 {
            answer.headers = vec![
                (
                    "X-Prometheus-Remote-Write-Samples-Written",
                    samples.to_string(),
                ),
                ("X-Prometheus-Remote-Write-Histograms-Written", "0".into()),
                ("X-Prometheus-Remote-Write-Exemplars-Written", "0".into()),
            ];
        }
    }
    answer
}

/// Reads and drops up to `len` body bytes (`buf` holds the first ones),
/// at most `DISCARD_BYTES_MAX`: a client sends its body before it reads
/// the answer, and closing on unread bytes would reset the connection and
/// lose the answer. `false` if the connection failed meanwhile.
async fn discard<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>, len: usize) -> bool {
    let mut left = len.min(DISCARD_BYTES_MAX).saturating_sub(buf.len());
    buf.clear();
    let mut chunk = vec![0u8; 64 << 10];
    while left > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    true
}

/// Whether `caller` may write to `topic` (always, with the authorizer
/// off); a refusal is counted and logged as a Produce's is.
fn write_allowed(ingest: &Ingest, caller: &Caller, topic: &str) -> bool {
    let node = &ingest.shard;
    let host = caller.peer.map(|p| p.ip());
    let (op, resource) = (Operation::Write, ResourceType::Topic);
    let allowed = node.metadata().acl_index.authorize(
        &node.acl,
        &caller.principal,
        host,
        op,
        resource,
        topic,
    );
    if !allowed {
        authz::note_denied_for(
            node,
            &caller.principal,
            host,
            op,
            resource,
            topic,
            &"ingest http",
        );
    }
    allowed
}

/// Who sent a write, or the answer that refuses it; refusals are counted,
/// logged and delayed by `auth_failure_delay_ms` here.
async fn authenticate(
    ingest: &Ingest,
    head: &Head,
    peer: Option<SocketAddr>,
) -> Result<Caller, Refusal> {
    let refused = match ingest.auth.authenticate(&ingest.shard, &head.auth).await {
        Ok(principal) => return Ok(Caller { peer, principal }),
        Err(refused) => refused,
    };
    let Refused::Unauthorized(message) = refused else {
        return Err(refuse(503, "shutting down"));
    };
    let shard = &ingest.shard;
    shard.metrics.ingest_http_authentication_failed();
    tracing::warn!(
        ?peer,
        user = head.auth.user().as_deref().unwrap_or("?"),
        "ingest http: authentication failed: {message}"
    );
    crate::rt::sleep(Duration::from_millis(shard.config.auth_failure_delay_ms)).await;
    let mut answer = refuse(401, message);
    answer.headers = vec![("WWW-Authenticate", "Basic realm=\"sluice\"".into())];
    Err(answer)
}

/// Serves requests on one connection until it closes or fails; `false`
/// when the connection must close.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    ingest: &Ingest,
    stream: &mut S,
    buf: &mut Vec<u8>,
    peer: Option<SocketAddr>,
) -> bool {
    let end = match read_head(stream, buf).await {
        Ok(HeadRead::Ready { end }) => end,
        Ok(HeadRead::Closed) | Err(_) => return false,
        Ok(HeadRead::TooLarge) => {
            let _ = stream
                .write_all(&response(&refuse(400, "request head too large"), false))
                .await;
            return false;
        }
    };
    let parsed = parse_head(&buf[..end - 4]);
    buf.drain(..end);
    let head = match parsed {
        Ok(h) => h,
        Err(r) => {
            // The body's length may be unknown: the connection cannot go on.
            let _ = stream.write_all(&response(&r, false)).await;
            return false;
        }
    };
    let max = ingest.shard.config.ingest_body_bytes_max;
    if head.content_length > max {
        let message = format!("body of {} bytes is over {max}", head.content_length);
        if !head.expect_continue && !discard(stream, buf, head.content_length).await {
            return false;
        }
        let _ = stream
            .write_all(&response(&refuse(413, message), false))
            .await;
        return false;
    }
    // Before the body is read: an unauthenticated client gets no buffer.
    let caller = match head.route {
        Route::Ping => Caller {
            peer,
            principal: crate::security::principal::ANONYMOUS.into(),
        },
        _ => match authenticate(ingest, &head, peer).await {
            Ok(caller) => caller,
            Err(answer) => {
                if !head.expect_continue && !discard(stream, buf, head.content_length).await {
                    return false;
                }
                let _ = stream.write_all(&response(&answer, false)).await;
                return false;
            }
        },
    };
    // With the authorizer on, a write needs Write on its topic, as a
    // Produce does.
    let topic = match head.route {
        Route::Ping => None,
        Route::Influx(_) => Some(ingest.shard.config.influx_topic.as_str()),
        Route::RemoteWrite(_) => Some(ingest.shard.config.prometheus_topic.as_str()),
    };
    if let Some(topic) = topic.filter(|t| !write_allowed(ingest, &caller, t)) {
        if !head.expect_continue && !discard(stream, buf, head.content_length).await {
            return false;
        }
        let answer = refuse(403, format!("not authorized to write to topic {topic}"));
        let _ = stream.write_all(&response(&answer, false)).await;
        return false;
    }
    if head.expect_continue
        && buf.len() < head.content_length
        && stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return false;
    }
    let mut chunk = vec![0u8; 64 << 10];
    while buf.len() < head.content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let rest = buf.split_off(head.content_length);
    let body = std::mem::replace(buf, rest);
    let answer = match head.route {
        Route::Ping => refuse(204, ""),
        Route::Influx(precision) => {
            influx_write(
                ingest,
                &caller,
                precision,
                body,
                head.encoding == Encoding::Gzip,
            )
            .await
        }
        Route::RemoteWrite(version) => remote_write(ingest, &caller, version, body).await,
    };
    let keep_alive = head.keep_alive && answer.status != 413;
    let mut bytes = response(&answer, keep_alive);
    if head.head_only {
        if let Some(end) = head_end(&bytes) {
            bytes.truncate(end);
        }
    }
    stream.write_all(&bytes).await.is_ok() && keep_alive
}

/// Serves one connection's requests in turn, plain or TLS.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    ingest: &Ingest,
    stream: &mut S,
    peer: Option<SocketAddr>,
) {
    let shard = &ingest.shard;
    let mut buf = Vec::new();
    let mut first = vec![0u8; 4 << 10];
    loop {
        if buf.is_empty() {
            // Idle between requests: shutdown or the idle bound closes the
            // connection; a request already begun is served to the end.
            let read = future::or(
                async { Some(stream.read(&mut first).await) },
                future::or(
                    async {
                        shard.stopped().await;
                        None
                    },
                    async {
                        crate::rt::sleep(REQUEST_TIMEOUT).await;
                        None
                    },
                ),
            )
            .await;
            match read {
                Some(Ok(n)) if n > 0 => buf.extend_from_slice(&first[..n]),
                _ => break,
            }
        }
        let next = future::or(
            async { Some(exchange(ingest, stream, &mut buf, peer).await) },
            async {
                crate::rt::sleep(REQUEST_TIMEOUT).await;
                None
            },
        )
        .await;
        if next != Some(true) {
            break;
        }
    }
    let _ = stream.close().await;
}

async fn serve_connection(ingest: Rc<Ingest>, mut stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    match &ingest.https {
        None => serve_stream(&ingest, &mut stream, peer).await,
        Some(https) => match accept_tls(&mut stream, https).await {
            Ok(mut tls) => serve_stream(&ingest, &mut tls, peer).await,
            Err(e) => {
                ingest.shard.metrics.tls_handshake_failed();
                tracing::info!(?peer, "ingest http: TLS handshake failed: {e}");
                let _ = stream.shutdown(std::net::Shutdown::Both).await;
                return;
            }
        },
    }
    let _ = stream.close().await;
}

/// Accepts connections on `listener` until the shard shuts down.
pub fn spawn_server(ingest: &Rc<Ingest>, listener: TcpListener) {
    let shard = ingest.shard.clone();
    let ingest = ingest.clone();
    Acceptor::new(listener, CONNECTIONS_MAX, "ingest http")
        .spawn(async move { shard.stopped().await }, move |stream| {
            serve_connection(ingest.clone(), stream)
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_head(target: &str, extra: &str) -> String {
        format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5{extra}")
    }

    #[test]
    fn writes_are_routed_with_precision() {
        let h = parse_head(
            write_head(
                "/api/v2/write?org=o&bucket=b&precision=ms",
                "\r\nAuthorization: Token t\r\nContent-Encoding: gzip",
            )
            .as_bytes(),
        )
        .expect("ok");
        assert_eq!(h.route, Route::Influx(Precision::Ms));
        assert!(h.encoding == Encoding::Gzip && h.keep_alive && !h.expect_continue);
        assert_eq!(h.content_length, 5);
        let h =
            parse_head(write_head("/write?db=x", "\r\nConnection: close").as_bytes()).expect("ok");
        assert_eq!(h.route, Route::Influx(Precision::Ns));
        assert!(!h.keep_alive);
        let h = parse_head(b"GET /ping HTTP/1.0").expect("ok");
        assert_eq!(h.route, Route::Ping);
        assert!(!h.keep_alive);
    }

    #[test]
    fn remote_writes_are_routed_by_content_type() {
        let rw = |extra: &str| {
            parse_head(
                format!("POST /api/v1/write HTTP/1.1\r\nContent-Length: 9\r\n{extra}").as_bytes(),
            )
        };
        let v1 = "Content-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\nX-Prometheus-Remote-Write-Version: 0.1.0";
        assert_eq!(rw(v1).expect("v1").route, Route::RemoteWrite(Version::V1));
        let v2 = "Content-Encoding: snappy\r\nContent-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request";
        assert_eq!(rw(v2).expect("v2").route, Route::RemoteWrite(Version::V2));
        assert_eq!(
            rw("Content-Type: application/x-protobuf")
                .expect_err("plain")
                .status,
            415
        );
        assert_eq!(
            rw("Content-Encoding: snappy\r\nContent-Type: text/plain")
                .expect_err("type")
                .status,
            415
        );
        assert_eq!(
            parse_head(b"GET /api/v1/write HTTP/1.1")
                .expect_err("get")
                .status,
            405
        );
        assert_eq!(
            parse_head(write_head("/write?db=a", "\r\nContent-Encoding: snappy").as_bytes())
                .expect_err("snappy influx")
                .status,
            415
        );
    }

    #[test]
    fn refusals() {
        for (head, status) in [
            (write_head("/api/v2/write", ""), 400),
            (write_head("/write?db=", ""), 400),
            (write_head("/write?db=a&precision=h", ""), 400),
            ("POST /write?db=a HTTP/1.1".to_string(), 411),
            (
                write_head("/write?db=a", "\r\nTransfer-Encoding: chunked"),
                411,
            ),
            (write_head("/write?db=a", "\r\nContent-Encoding: br"), 415),
            (write_head("/write?db=a", "\r\nContent-Length: 6"), 400),
            ("GET /api/v2/write?bucket=a HTTP/1.1".to_string(), 405),
            ("GET /metrics HTTP/1.1".to_string(), 404),
            ("POST /write HTTP/2.0".to_string(), 400),
            (write_head("/write?db=a", "\r\nno colon"), 400),
        ] {
            let r = parse_head(head.as_bytes()).expect_err(&head);
            assert_eq!(r.status, status, "{head:?}: {}", r.message);
        }
    }

    #[test]
    fn credentials_are_read_from_the_head() {
        let pw = |user: &str, password: &str| Presented::Password {
            user: user.into(),
            password: password.into(),
        };
        let auth = |target: &str, extra: &str| {
            parse_head(write_head(target, extra).as_bytes())
                .expect("parses")
                .auth
        };
        // "dTpw" is base64 of "u:p".
        assert_eq!(
            auth(
                "/api/v1/write",
                "\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\nauthorization: basic dTpw"
            ),
            pw("u", "p")
        );
        assert_eq!(
            auth("/api/v2/write?bucket=b", "\r\nAuthorization: Token u:p"),
            pw("u", "p")
        );
        assert_eq!(auth("/api/v2/write?bucket=b", ""), Presented::Nothing);
        // InfluxDB 1 reads u and p first, and only on /write.
        assert_eq!(
            auth("/write?db=d&u=q&p=r", "\r\nAuthorization: Basic dTpw"),
            pw("q", "r")
        );
        assert_eq!(
            auth("/write?db=d&u=q", "\r\nAuthorization: Basic dTpw"),
            pw("u", "p")
        );
        assert_eq!(
            auth("/api/v2/write?bucket=b&u=q&p=r", ""),
            Presented::Nothing
        );
        let twice = write_head(
            "/write?db=d",
            "\r\nAuthorization: Basic dTpw\r\nAuthorization: Basic dTpw",
        );
        assert_eq!(parse_head(twice.as_bytes()).expect_err("twice").status, 400);
        let r = String::from_utf8(response(&refuse(401, "no"), false)).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
        assert!(
            r.ends_with(r#"{"code":"unauthorized","message":"no"}"#),
            "{r}"
        );
    }

    #[test]
    fn arbitrary_heads_never_panic() {
        let valid = write_head(
            "/api/v2/write?bucket=b&precision=s",
            "\r\nExpect: 100-continue",
        );
        let valid = valid.as_bytes();
        for n in 0..=valid.len() {
            let _ = parse_head(&valid[..n]);
            for flip in [0u8, b' ', b':', b'\r', b'\n', b'?', b'&', b'=', 0x80, 0xff] {
                let mut v = valid.to_vec();
                if n < v.len() {
                    v[n] = flip;
                }
                let _ = parse_head(&v);
            }
        }
    }

    #[test]
    fn responses_use_influx_error_shape() {
        let r = String::from_utf8(response(&refuse(400, "line 3: bad"), true)).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(
            r.ends_with(r#"{"code":"invalid","message":"line 3: bad"}"#),
            "{r}"
        );
        assert!(!r.contains("Connection: close"));
        let r = String::from_utf8(response(&refuse(503, "down"), false)).expect("utf-8");
        assert!(r.contains("Retry-After: 1\r\n") && r.contains("Connection: close\r\n"));
        let r = String::from_utf8(response(&refuse(429, "full"), true)).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(r.contains("Retry-After: 1\r\n"));
        let mut written = refuse(204, "");
        written.headers = vec![("X-Prometheus-Remote-Write-Samples-Written", "3".into())];
        let r = String::from_utf8(response(&written, true)).expect("utf-8");
        assert!(
            r.contains("X-Prometheus-Remote-Write-Samples-Written: 3\r\n"),
            "{r}"
        );
        let r = String::from_utf8(response(&refuse(204, ""), true)).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 204 No Content\r\n") && r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn gzip_bodies_are_bounded() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![b'a'; 10_000]).expect("write");
        let gz = enc.finish().expect("finish");
        assert_eq!(gunzip(&gz, 10_000).expect("fits").len(), 10_000);
        assert_eq!(gunzip(&gz, 9_999).expect_err("too big").status, 413);
        assert_eq!(gunzip(b"not gzip", 100).expect_err("bad").status, 400);
    }
}

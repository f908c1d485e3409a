//! The plain-TCP line-protocol listener (as Telegraf's `socket_writer`
//! sends): newline-separated lines, no answers. Malformed lines are counted
//! and logged and the rest stored; complete lines read so far are stored
//! before more is read, so a slow log slows the sender instead of filling
//! memory.

use std::rc::Rc;
use std::time::Duration;

use crate::rt::{TcpListener, TcpStream};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::influx_line::{self, Precision};
use super::Ingest;
use crate::listener::Acceptor;

/// A line longer than this is dropped (counted as malformed) whole.
const LINE_BYTES_MAX: usize = 1 << 20;

/// Bytes read before the complete lines among them are stored.
const READ_BYTES: usize = 256 << 10;

/// Malformed lines logged per connection at warn level; the rest only count.
const LOGGED_ERRORS_MAX: u64 = 10;

/// Connections served at once per shard; more are closed at accept.
const CONNECTIONS_MAX: usize = 256;

/// How long a failed write waits before the next try (the sender waits).
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Writes attempted for one chunk before its points are dropped and counted.
const TRIES_MAX: u32 = 5;

#[derive(Default)]
struct Counts {
    points: u64,
    malformed: u64,
    dropped: u64,
}

/// Parses the complete lines in `text` and stores their points, retrying a
/// failed append a few times (the sender is not read meanwhile).
async fn store(ingest: &Ingest, text: &[u8], first_line: u64, counts: &mut Counts) {
    let shard = &ingest.shard;
    let text = String::from_utf8_lossy(text);
    let (points, errors) =
        influx_line::parse_lossy(&text, Precision::Ns, super::now_ns(), ingest.format);
    shard.metrics.influx_lines_refused(errors.len() as u64);
    for e in errors {
        counts.malformed += 1;
        if counts.malformed <= LOGGED_ERRORS_MAX {
            tracing::warn!(
                "influx tcp: malformed line {}: {}",
                first_line + e.line as u64 - 1,
                e.reason
            );
        }
    }
    let n = points.len() as u64;
    for attempt in 1..=TRIES_MAX {
        match ingest
            .write(&shard.config.influx_topic, points.clone())
            .await
        {
            Ok(()) => {
                shard.metrics.influx_points_stored(n);
                counts.points += n;
                return;
            }
            Err(e) if attempt == TRIES_MAX => {
                tracing::warn!("influx tcp: dropping {n} points: {e}");
                counts.dropped += n;
            }
            Err(_) => crate::rt::sleep(RETRY_DELAY).await,
        }
    }
}

async fn serve_connection(ingest: Rc<Ingest>, mut stream: TcpStream) {
    let shard = &ingest.shard;
    let peer = stream.peer_addr().ok();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_BYTES];
    let mut counts = Counts::default();
    let mut line_no: u64 = 1;
    let mut skipping = false; // inside an overlong line, until its newline
    loop {
        let read = future::or(async { Some(stream.read(&mut chunk).await) }, async {
            shard.stopped().await;
            None
        })
        .await;
        let n = match read {
            Some(Ok(n)) => n,
            Some(Err(_)) | None => 0,
        };
        if n == 0 {
            if !buf.is_empty() && !skipping {
                store(&ingest, &buf, line_no, &mut counts).await;
            }
            break;
        }
        let mut new = &chunk[..n];
        if skipping {
            match new.iter().position(|&b| b == b'\n') {
                None => continue,
                Some(i) => {
                    skipping = false;
                    line_no += 1;
                    new = &new[i + 1..];
                }
            }
        }
        buf.extend_from_slice(new);
        // Complete lines go now; a quoted newline split across reads is
        // the one case this cuts wrongly (the halves are then malformed).
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            let rest = buf.split_off(last + 1);
            store(&ingest, &buf, line_no, &mut counts).await;
            line_no += buf.iter().filter(|&&b| b == b'\n').count() as u64;
            buf = rest;
        }
        if buf.len() > LINE_BYTES_MAX {
            counts.malformed += 1;
            shard.metrics.influx_lines_refused(1);
            tracing::warn!("influx tcp: line {line_no} is over {LINE_BYTES_MAX} bytes: dropped");
            buf.clear();
            skipping = true;
        }
    }
    if counts.malformed > 0 || counts.dropped > 0 {
        tracing::warn!(
            ?peer,
            points = counts.points,
            malformed = counts.malformed,
            dropped = counts.dropped,
            "influx tcp connection closed"
        );
    }
    let _ = stream.close().await;
}

/// Accepts connections on `listener` until the shard shuts down.
pub fn spawn_server(ingest: &Rc<Ingest>, listener: TcpListener) {
    let shard = ingest.shard.clone();
    let ingest = ingest.clone();
    Acceptor::new(listener, CONNECTIONS_MAX, "influx tcp")
        .spawn(async move { shard.stopped().await }, move |stream| {
            serve_connection(ingest.clone(), stream)
        });
}

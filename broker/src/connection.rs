//! One client connection: read a frame, dispatch it, write the response,
//! in order, as Kafka does (one request in flight per connection). A bad
//! frame or a failing handler closes only this connection, with a log line.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::rt::TcpStream;
use futures_lite::{future, FutureExt};

use crate::kafka::{self, Reply};
use crate::node::Node;

pub async fn serve(shard: Rc<Node>, mut stream: TcpStream) {
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(?peer, "TCP_NODELAY refused: {e}");
    }
    let limit = shard.config.max_request_bytes;
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    loop {
        let next = future::or(
            async { Some(net::read_frame(&mut stream, limit).await) },
            future::or(
                async {
                    shard.stopped().await;
                    None
                },
                async {
                    crate::rt::sleep(idle).await;
                    tracing::debug!(?peer, "closing idle connection");
                    None
                },
            ),
        )
        .await;
        let frame = match next {
            None | Some(Ok(None)) => break,
            Some(Ok(Some(frame))) => frame,
            Some(Err(e)) => {
                tracing::warn!(?peer, "closing connection: {e}");
                break;
            }
        };
        // The length prefix counts: it is on the wire too.
        let bytes_in = frame.len() + 4;
        let started = std::time::Instant::now();
        let request = match net::decode_request(frame) {
            Ok(mut r) => {
                r.peer = peer;
                r
            }
            Err(e) => {
                shard.metrics.bytes_received(bytes_in);
                tracing::warn!(?peer, "closing connection: {e}");
                break;
            }
        };
        let api_key = request.api_key;
        let version = request.api_version();
        tracing::trace!(
            ?peer,
            ?api_key,
            version,
            correlation_id = request.correlation_id(),
            "request"
        );
        // A panic in a handler is a bug; it must cost this connection only,
        // not the shard and every connection on it.
        let outcome = std::panic::AssertUnwindSafe(kafka::dispatch(&shard, request))
            .catch_unwind()
            .await;
        let (written, bytes_out) = match outcome {
            Ok(Ok(Reply::Frame(chunks))) => {
                let bytes_out = chunks.iter().map(|c| c.len()).sum();
                (net::write_chunks(&mut stream, &chunks).await, bytes_out)
            }
            Ok(Ok(Reply::Nothing)) => (Ok(()), 0),
            Ok(Ok(Reply::Close(reason))) => {
                shard
                    .metrics
                    .request_done(api_key as i16, bytes_in, 0, started.elapsed());
                tracing::info!(?peer, "closing connection: {reason}");
                break;
            }
            Ok(Err(e)) => {
                shard
                    .metrics
                    .request_done(api_key as i16, bytes_in, 0, started.elapsed());
                tracing::warn!(?peer, "closing connection: {e}");
                break;
            }
            Err(_) => {
                tracing::error!(
                    ?peer,
                    ?api_key,
                    version,
                    "handler panicked; closing connection"
                );
                break;
            }
        };
        shard
            .metrics
            .request_done(api_key as i16, bytes_in, bytes_out, started.elapsed());
        if let Err(e) = written {
            tracing::debug!(?peer, "writing the response failed: {e}");
            break;
        }
    }
    // Dropping the stream only drops this descriptor: a receive still in
    // flight in io_uring holds the socket open until its cancellation is
    // processed. shutdown(2) acts on the socket, so the client sees the
    // close now. It fails harmlessly when the client has already gone.
    let _ = stream.shutdown(std::net::Shutdown::Both).await;
}

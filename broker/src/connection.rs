//! One client connection: requests are read and started in order and
//! answered in order, as Kafka does. Produce requests are pipelined: once
//! a produce request's batches have their place in their logs, the next
//! request is read and started while the writes complete, so that the
//! requests a producer keeps in flight share flush rounds (and fsyncs)
//! instead of each waiting for its own. Every other request runs alone:
//! after every earlier one is answered, before any later one starts. A
//! bad frame or a failing handler closes only this connection, with a log
//! line.
//!
//! One task reads and places requests; another (with its own handle on the
//! socket) awaits each in turn and writes its answer.
//!
//! On a SASL listener the reading task runs the authentication first, and
//! again whenever an authenticated client re-authenticates (KIP-368, a
//! SaslHandshake on the open connection). A session that has expired
//! (`connections_max_reauth_ms`, a token's `exp`) closes the connection at
//! its next request, once what was placed before is answered.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::{future, FutureExt};
use kafka_protocol::messages::ApiKey;

use bytes::Bytes;
use futures_lite::AsyncRead;
use net::tls::TlsWriter;
use std::sync::Arc;

use crate::kafka::{self, HandlerFuture, Reply, Turn};
use crate::node::Node;
use crate::rt::local_channel::{self, LocalReceiver, LocalSender};
use crate::rt::TcpStream;
use crate::security::oauth::Validator;
use crate::security::principal;
use crate::security::sasl::{self, Authenticator};
use crate::security::tls::ServerTls;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError as KafkaError;

/// Requests placed and not yet answered, at most, beyond the one being
/// answered. Producers keep up to 5 in flight (Kafka's limit with
/// idempotence); more wait in the socket.
const PIPELINE_DEPTH: usize = 8;

/// Request bytes placed and not yet answered, at most: a produce request
/// beyond it runs alone, so that a connection holds about one
/// `max_request_bytes` request more than it would without pipelining.
const PIPELINE_BYTES_MAX: usize = 16 << 20;

/// A request on its way to its answer.
struct Pending {
    work: HandlerFuture,
    api_key: ApiKey,
    version: i16,
    bytes_in: usize,
    started: Instant,
    /// For a request that runs alone: told once it is answered.
    answered: Option<oneshot::Sender<()>>,
}

/// What a connection knows of the Kafka listener that accepted it.
#[derive(Clone)]
pub struct Entry {
    /// The listener's place in the broker's list (`Config::kafka_listeners`).
    pub listener: u8,
    /// The listener's TLS configuration, for SSL and SASL_SSL listeners.
    pub tls: Option<Arc<ServerTls>>,
    /// The mechanisms a SASL listener offers; `None` on other listeners.
    pub sasl: Option<Arc<Vec<String>>>,
    /// Checks OAUTHBEARER tokens, where it is offered.
    pub oauth: Option<Arc<Validator>>,
}

pub async fn serve(shard: Rc<Node>, stream: TcpStream, entry: Entry) {
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(?peer, "TCP_NODELAY refused: {e}");
    }
    let mut writer = match crate::rt::second_handle(&stream) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(?peer, "closing connection: no second socket handle: {e}");
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
            return;
        }
    };
    let (to_answer, answers) = local_channel::new_bounded(PIPELINE_DEPTH);
    let placed_bytes = Rc::new(Cell::new(0usize));
    let (answering_ended, ended) = oneshot::channel::<()>();
    let mut stream = stream;
    let Some(tls) = entry.tls else {
        let answering = crate::rt::spawn_local(answer(
            shard.clone(),
            Outbound::Plain(writer),
            answers,
            placed_bytes.clone(),
            answering_ended,
            peer,
        ));
        let context = Context {
            listener: entry.listener,
            peer,
        };
        let auth = entry
            .sasl
            .map(|m| Authenticator::new(m.to_vec()).with_oauth(entry.oauth.clone()));
        read(
            &shard,
            &mut stream,
            to_answer,
            &placed_bytes,
            ended,
            context,
            auth,
            net::request::anonymous(),
        )
        .await;
        // What was placed is answered before the socket closes.
        answering.await;
        let _ = stream.shutdown(std::net::Shutdown::Both).await;
        return;
    };
    let timeout = Duration::from_millis(shard.config.tls_handshake_timeout_ms);
    let handshake = future::or(
        async {
            let config = tls.config(entry.sasl.is_some());
            Some(net::tls::accept(&mut stream, &mut writer, config).await)
        },
        future::or(
            async {
                crate::rt::sleep(timeout).await;
                None
            },
            async {
                shard.stopped().await;
                None
            },
        ),
    )
    .await;
    let mut reader = match handshake {
        Some(Ok(reader)) => reader,
        Some(Err(e)) => {
            shard.metrics.tls_handshake_failed();
            tracing::info!(?peer, "closing connection: TLS handshake failed: {e}");
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
            return;
        }
        None => {
            shard.metrics.tls_handshake_failed();
            tracing::info!(
                ?peer,
                "closing connection: no TLS handshake within {} ms",
                timeout.as_millis()
            );
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
            return;
        }
    };
    let session = reader.session().clone();
    let principal = session
        .borrow()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| principal::from_certificate(cert))
        .unwrap_or_else(|| principal::ANONYMOUS.to_string());
    tracing::debug!(?peer, %principal, "TLS connection");
    let answering = crate::rt::spawn_local(answer(
        shard.clone(),
        Outbound::Tls(writer, TlsWriter::new(session)),
        answers,
        placed_bytes.clone(),
        answering_ended,
        peer,
    ));
    let context = Context {
        listener: entry.listener,
        peer,
    };
    let auth = entry
        .sasl
        .map(|m| Authenticator::new(m.to_vec()).with_oauth(entry.oauth.clone()));
    read(
        &shard,
        &mut reader,
        to_answer,
        &placed_bytes,
        ended,
        context,
        auth,
        Arc::from(principal),
    )
    .await;
    answering.await;
    // Dropping the stream only drops this descriptor: a receive still in
    // flight in io_uring holds the socket open until its cancellation is
    // processed. shutdown(2) acts on the socket, so the client sees the
    // close now. It fails harmlessly when the client has already gone.
    let _ = stream.shutdown(std::net::Shutdown::Both).await;
}

/// What every request of a connection carries.
#[derive(Clone, Copy)]
struct Context {
    listener: u8,
    peer: Option<SocketAddr>,
}

/// Reads requests and places them, until the client closes, the shard
/// stops, the connection idles out or the answering side ends. On a SASL
/// listener (`auth`), requests are first the authentication's, and the
/// principal they establish replaces the TLS one (`principal`).
#[allow(clippy::too_many_arguments)]
async fn read<R: AsyncRead + Unpin>(
    shard: &Rc<Node>,
    stream: &mut R,
    to_answer: LocalSender<Pending>,
    placed_bytes: &Rc<Cell<usize>>,
    mut answering_ended: oneshot::Receiver<()>,
    context: Context,
    mut auth: Option<Authenticator>,
    mut principal: Arc<str>,
) {
    let peer = context.peer;
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    // Set by a SaslHandshake v0: the tokens come as bare frames.
    let mut raw_tokens = false;
    // When the SASL session ends unless the client re-authenticates first.
    let mut session_ends: Option<Instant> = None;
    let mut reauthenticating = false;
    loop {
        // Until a client has authenticated, its requests are bounded far
        // lower: nobody may make the broker hold 100 MB unauthenticated.
        let limit = match &auth {
            Some(a) if !a.is_authenticated() => shard.config.sasl_max_receive_bytes,
            _ => shard.config.max_request_bytes,
        };
        let next = future::or(
            async { Some(net::read_frame(stream, limit).await) },
            future::or(
                async {
                    shard.stopped().await;
                    None
                },
                future::or(
                    async {
                        crate::rt::sleep(idle).await;
                        tracing::debug!(?peer, "closing idle connection");
                        None
                    },
                    async {
                        let _ = (&mut answering_ended).await;
                        None
                    },
                ),
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
        let started = Instant::now();
        if let Some(authenticator) = auth.as_mut() {
            // Answers to requests placed before are written first: the
            // handshake's answer queues behind them.
            if authenticator.is_authenticated()
                && api_key_of(&frame) == Some(ApiKey::SaslHandshake as i16)
                && authenticator.begin_reauthentication()
            {
                reauthenticating = true;
                tracing::debug!(?peer, "re-authenticating");
            }
        }
        if let Some(authenticator) = auth.as_mut().filter(|a| !a.is_authenticated()) {
            let step = sasl_step(shard, authenticator, &mut raw_tokens, frame, context).await;
            let (work, api_key, version) = match step {
                SaslStep::Serve(frame) => {
                    // ApiVersions, before authenticating: served as usual.
                    let work: HandlerFuture = {
                        let shard = shard.clone();
                        Box::pin(async move { kafka::dispatch(&shard, frame).await })
                    };
                    (work, ApiKey::ApiVersions, 0)
                }
                SaslStep::Answer {
                    work,
                    api_key,
                    version,
                    session,
                } => {
                    if let Some(session) = session {
                        raw_tokens = false;
                        principal = Arc::from(session.principal.as_str());
                        session_ends = session.ends;
                        let lifetime_ms =
                            session.ends.map(|e| e.duration_since(started).as_millis());
                        if std::mem::take(&mut reauthenticating) {
                            let mechanism = authenticator.mechanism().unwrap_or("none");
                            shard
                                .metrics
                                .reauthenticated(shard.listener_name(context.listener), mechanism);
                            tracing::debug!(?peer, principal = %session.principal, ?lifetime_ms, "re-authenticated");
                        } else {
                            tracing::debug!(?peer, principal = %session.principal, ?lifetime_ms, "authenticated");
                        }
                    }
                    (work, api_key, version)
                }
                SaslStep::Close(reason) => {
                    shard.metrics.bytes_received(bytes_in);
                    tracing::info!(?peer, "closing connection: {reason}");
                    break;
                }
            };
            let (tx, rx) = oneshot::channel();
            let pending = Pending {
                work,
                api_key,
                version,
                bytes_in,
                started,
                answered: Some(tx),
            };
            if !queue_alone(&to_answer, pending, rx, &mut answering_ended).await {
                break;
            }
            continue;
        }
        if session_ends.is_some_and(|end| Instant::now() >= end) {
            // As Kafka: the request is not served, and what was placed
            // before is still answered.
            shard.metrics.bytes_received(bytes_in);
            shard.metrics.session_expired();
            tracing::info!(
                ?peer,
                "closing connection: its SASL session expired and the client did not re-authenticate (connections_max_reauth_ms, or its token's exp)"
            );
            break;
        }
        let request = match net::decode_request(frame) {
            Ok(mut r) => {
                r.peer = peer;
                r.listener = context.listener;
                r.principal = principal.clone();
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
        let placed = placed_bytes.get();
        let may_place = placed == 0 || placed + bytes_in <= PIPELINE_BYTES_MAX;
        // A panic in a handler is a bug; it must cost this connection only,
        // not the shard and every connection on it.
        let turn = std::panic::AssertUnwindSafe(kafka::take_turn(shard, request, may_place))
            .catch_unwind()
            .await;
        let Ok(turn) = turn else {
            tracing::error!(
                ?peer,
                ?api_key,
                version,
                "handler panicked; closing connection"
            );
            break;
        };
        let (work, answered, alone) = match turn {
            Turn::Placed(work) => {
                placed_bytes.set(placed_bytes.get() + bytes_in);
                (work, None, None)
            }
            Turn::Alone(work) => {
                let (tx, rx) = oneshot::channel();
                (work, Some(tx), Some(rx))
            }
        };
        let pending = Pending {
            work,
            api_key,
            version,
            bytes_in,
            started,
            answered,
        };
        let queued = match alone {
            Some(alone) => queue_alone(&to_answer, pending, alone, &mut answering_ended).await,
            None => queue(&to_answer, pending, &mut answering_ended).await,
        };
        if !queued {
            break;
        }
    }
}

/// Queues `pending` for the answering side; false once that side ended.
async fn queue(
    to_answer: &LocalSender<Pending>,
    pending: Pending,
    answering_ended: &mut oneshot::Receiver<()>,
) -> bool {
    // The queue may be full while the answering side ends (a write
    // failed): a sender waiting on a full queue is not told of that.
    future::or(async { to_answer.send(pending).await.is_ok() }, async {
        let _ = answering_ended.await;
        false
    })
    .await
}

/// Queues a request that runs alone and waits until it is answered;
/// false once the answering side ended.
async fn queue_alone(
    to_answer: &LocalSender<Pending>,
    pending: Pending,
    answered: oneshot::Receiver<()>,
    answering_ended: &mut oneshot::Receiver<()>,
) -> bool {
    if !queue(to_answer, pending, answering_ended).await {
        return false;
    }
    // Queued requests outlive the answering side while this side holds
    // the queue: its end must be watched here too.
    future::or(async { answered.await.is_ok() }, async {
        let _ = answering_ended.await;
        false
    })
    .await
}

/// The API key of a request frame, before decoding it.
fn api_key_of(frame: &[u8]) -> Option<i16> {
    Some(i16::from_be_bytes([*frame.first()?, *frame.get(1)?]))
}

/// An authentication that completed.
struct Session {
    principal: String,
    /// When it ends, if it does (KIP-368).
    ends: Option<Instant>,
}

impl Session {
    /// The session `auth` just opened, and the `session_lifetime_ms` that
    /// tells the client of it (0: it does not end).
    fn opened(shard: &Node, auth: &Authenticator, principal: String) -> (Session, i64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let lifetime_ms = sasl::session_lifetime_ms(
            shard.config.connections_max_reauth_ms,
            auth.credential_expires_at_ms(),
            now_ms,
        );
        let ends = lifetime_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
        let told = lifetime_ms.map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        (Session { principal, ends }, told)
    }
}

/// What a request does to a connection that is authenticating.
enum SaslStep {
    /// Not the authentication's (ApiVersions): served as usual.
    Serve(net::RequestFrame),
    /// Answered here; `session` once it completed authentication.
    Answer {
        work: HandlerFuture,
        api_key: ApiKey,
        version: i16,
        session: Option<Session>,
    },
    /// Closed without an answer, as Kafka does for any other request
    /// before authentication.
    Close(String),
}

/// One request of a connection that has not authenticated yet, as
/// Kafka's SaslServerAuthenticator takes it.
async fn sasl_step(
    shard: &Rc<Node>,
    auth: &mut Authenticator,
    raw_tokens: &mut bool,
    frame: Bytes,
    context: Context,
) -> SaslStep {
    let delay = Duration::from_millis(shard.config.auth_failure_delay_ms);
    let listener = shard.listener_name(context.listener);
    if *raw_tokens {
        // SaslHandshake v0: a bare token, answered bare; a failure closes.
        let outcome = auth.step(shard, &frame).await;
        let (token, session) = match outcome {
            sasl::Outcome::Continue(token) => (token, None),
            sasl::Outcome::Authenticated {
                principal,
                auth_bytes,
            } => (auth_bytes, Some(Session::opened(shard, auth, principal).0)),
            sasl::Outcome::Failed { message, user } => {
                failed(
                    shard,
                    context,
                    listener,
                    auth.mechanism(),
                    user.as_deref(),
                    &logged(auth, &message),
                );
                crate::rt::sleep(delay).await;
                return SaslStep::Close(format!("SASL authentication failed: {message}"));
            }
        };
        let mut bare = Vec::with_capacity(4 + token.len());
        bare.extend_from_slice(&(token.len() as i32).to_be_bytes());
        bare.extend_from_slice(&token);
        let bare = Bytes::from(bare);
        return SaslStep::Answer {
            work: Box::pin(async move { Ok(Reply::Frame(vec![bare])) }),
            api_key: ApiKey::SaslAuthenticate,
            version: 0,
            session,
        };
    }
    let mut request = match net::decode_request(frame) {
        Ok(r) => r,
        Err(e) => return SaslStep::Close(e.to_string()),
    };
    request.peer = context.peer;
    request.listener = context.listener;
    let api_key = request.api_key;
    let version = request.api_version();
    let answer = |reply: Result<Reply, kafka::HandlerError>, session| SaslStep::Answer {
        work: Box::pin(async move { reply }),
        api_key,
        version,
        session,
    };
    // An answer, then the close, after the failure delay.
    let last = |reply: Result<Reply, kafka::HandlerError>, reason: String| SaslStep::Answer {
        work: Box::pin(async move {
            crate::rt::sleep(delay).await;
            match reply? {
                Reply::Frame(chunks) => Ok(Reply::Last(chunks, reason)),
                other => Ok(other),
            }
        }),
        api_key,
        version,
        session: None,
    };
    match api_key {
        // Kafka takes one ApiVersions, before the handshake.
        ApiKey::ApiVersions if auth.expects_handshake() && !auth.versions_asked() => {
            auth.versions_answered();
            SaslStep::Serve(request)
        }
        ApiKey::SaslHandshake if version <= 1 => {
            let Ok(asked) = kafka::decode::<SaslHandshakeRequest>(&request) else {
                return SaslStep::Close("malformed SaslHandshake".into());
            };
            let mut response = SaslHandshakeResponse::default();
            response.mechanisms = auth
                .enabled()
                .iter()
                .map(|m| kafka::str_bytes(m.clone()))
                .collect();
            if !auth.expects_handshake() {
                response.error_code = KafkaError::IllegalSaslState.code();
                let reason = "a second SaslHandshake".to_string();
                return last(kafka::respond(&request, &response), reason);
            }
            let mechanism = asked.mechanism.to_string();
            if !auth.handshake(&mechanism) {
                response.error_code = KafkaError::UnsupportedSaslMechanism.code();
                // The label is fixed: a client's names must not grow the
                // metrics.
                failed(
                    shard,
                    context,
                    listener,
                    Some("unsupported"),
                    None,
                    &format!("mechanism {:?} not offered", clipped(&mechanism)),
                );
                let reason = format!("SASL mechanism {:?} is not offered here", clipped(&mechanism));
                return last(kafka::respond(&request, &response), reason);
            }
            *raw_tokens = version == 0;
            answer(kafka::respond(&request, &response), None)
        }
        ApiKey::SaslAuthenticate if version <= 2 => {
            let Ok(asked) = kafka::decode::<SaslAuthenticateRequest>(&request) else {
                return SaslStep::Close("malformed SaslAuthenticate".into());
            };
            let mut response = SaslAuthenticateResponse::default();
            if !auth.expects_token() {
                response.error_code = KafkaError::IllegalSaslState.code();
                response.error_message =
                    Some(kafka::str_bytes("SaslAuthenticate before a SaslHandshake"));
                let reason = "SaslAuthenticate before SaslHandshake".to_string();
                return last(kafka::respond(&request, &response), reason);
            }
            match auth.step(shard, &asked.auth_bytes).await {
                sasl::Outcome::Continue(token) => {
                    response.auth_bytes = Bytes::from(token);
                    answer(kafka::respond(&request, &response), None)
                }
                sasl::Outcome::Authenticated {
                    principal,
                    auth_bytes,
                } => {
                    response.auth_bytes = Bytes::from(auth_bytes);
                    let (session, lifetime_ms) = Session::opened(shard, auth, principal);
                    // A field of v1 and later; v0 clients are closed at
                    // the session's end all the same.
                    response.session_lifetime_ms = lifetime_ms;
                    answer(kafka::respond(&request, &response), Some(session))
                }
                sasl::Outcome::Failed { message, user } => {
                    failed(
                        shard,
                        context,
                        listener,
                        auth.mechanism(),
                        user.as_deref(),
                        &logged(auth, &message),
                    );
                    response.error_code = KafkaError::SaslAuthenticationFailed.code();
                    response.error_message = Some(kafka::str_bytes(message.clone()));
                    let reason = format!("SASL authentication failed: {message}");
                    last(kafka::respond(&request, &response), reason)
                }
            }
        }
        other => SaslStep::Close(format!(
            "unexpected {other:?} request before SASL authentication (a client configured with the wrong security protocol?)"
        )),
    }
}

/// A failure's message for the log: what the client was told, and why
/// when the client was told less.
fn logged(auth: &Authenticator, message: &str) -> String {
    match auth.failure_detail() {
        Some(detail) => format!("{message}: {detail}"),
        None => message.to_string(),
    }
}

/// Counts and logs a failed authentication: the peer and the user name
/// tried, never the secret.
fn failed(
    shard: &Node,
    context: Context,
    listener: &'static str,
    mechanism: Option<&str>,
    user: Option<&str>,
    message: &str,
) {
    let mechanism = mechanism.unwrap_or("none");
    shard.metrics.authentication_failed(listener, mechanism);
    tracing::warn!(
        peer = ?context.peer,
        listener,
        mechanism,
        user = clipped(user.unwrap_or("?")),
        "SASL authentication failed: {message}"
    );
}

/// A client's name, cut short for a log line: before authentication
/// anyone may send one of half a megabyte.
fn clipped(name: &str) -> String {
    name.chars().take(256).collect()
}

/// The writing side of a connection.
enum Outbound {
    Plain(TcpStream),
    Tls(TcpStream, TlsWriter),
}

impl Outbound {
    async fn write_chunks(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        match self {
            Outbound::Plain(stream) => net::write_chunks(stream, chunks).await,
            Outbound::Tls(stream, tls) => tls.write_chunks(stream, chunks).await,
        }
    }

    /// A TLS session's end is told to the client (close_notify).
    async fn close(&mut self) {
        if let Outbound::Tls(stream, tls) = self {
            tls.close(stream).await;
        }
    }
}

/// Awaits each placed request in turn and writes its answer, until the
/// reading side is done or an answer ends the connection.
async fn answer(
    shard: Rc<Node>,
    mut stream: Outbound,
    answers: LocalReceiver<Pending>,
    placed_bytes: Rc<Cell<usize>>,
    // Dropped on return, which tells the reading side.
    _ended: oneshot::Sender<()>,
    peer: Option<SocketAddr>,
) {
    while let Some(p) = answers.recv().await {
        let api_key = p.api_key;
        let version = p.version;
        let outcome = std::panic::AssertUnwindSafe(p.work).catch_unwind().await;
        if p.answered.is_none() {
            placed_bytes.set(placed_bytes.get() - p.bytes_in);
        }
        let done = |bytes_out| {
            shard
                .metrics
                .request_done(api_key as i16, p.bytes_in, bytes_out, p.started.elapsed())
        };
        let written = match outcome {
            Ok(Ok(Reply::Frame(chunks))) => {
                let bytes_out = chunks.iter().map(|c| c.len()).sum();
                let written = stream.write_chunks(&chunks).await;
                done(bytes_out);
                written
            }
            Ok(Ok(Reply::Nothing)) => {
                done(0);
                Ok(())
            }
            Ok(Ok(Reply::Close(reason))) => {
                done(0);
                tracing::info!(?peer, "closing connection: {reason}");
                break;
            }
            Ok(Ok(Reply::Last(chunks, reason))) => {
                let bytes_out = chunks.iter().map(|c| c.len()).sum();
                let _ = stream.write_chunks(&chunks).await;
                done(bytes_out);
                tracing::info!(?peer, "closing connection: {reason}");
                break;
            }
            Ok(Err(e)) => {
                done(0);
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
        if let Some(answered) = p.answered {
            let _ = answered.send(());
        }
        if let Err(e) = written {
            tracing::debug!(?peer, "writing the response failed: {e}");
            break;
        }
    }
    stream.close().await;
}

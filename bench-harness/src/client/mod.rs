//! A small Kafka client on glommio: one TCP connection, requests encoded
//! with `kafka_protocol`, responses read with `net`'s bounded frame reader.
//! The connection splits into a writer and a reader half so a producer can
//! keep several requests in flight (Kafka answers in request order).

pub mod admin;
pub mod produce;
pub mod records;
mod scram;
pub mod security;
pub mod versions;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::io::{split, ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use net::tls_stream::{LinkStream, TlsStream};

use crate::error::{BenchError, Result};
pub use versions::Versions;

/// Responses larger than this end the connection; generous because a
/// catch-up Fetch may carry many partitions of large batches.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Any single read or write that stalls this long means the broker is gone.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub const CLIENT_ID: &str = "sluice-bench";

/// Builds one request frame: length prefix, header, body.
pub fn encode_request<R: Encodable + HeaderVersion>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut buf = BytesMut::with_capacity(64 + request.compute_size(version).unwrap_or(0));
    buf.put_i32(0);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(BenchError::codec)?;
    request
        .encode(&mut buf, version)
        .map_err(BenchError::codec)?;
    let length = i32::try_from(buf.len() - 4)
        .map_err(|_| BenchError::Protocol(format!("request of {} bytes", buf.len())))?;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// Splits a response frame into its correlation id and decoded body.
pub fn decode_response<Resp: Decodable + HeaderVersion>(
    mut frame: Bytes,
    version: i16,
) -> Result<(i32, Resp)> {
    let header = ResponseHeader::decode(&mut frame, Resp::header_version(version))
        .map_err(BenchError::codec)?;
    let body = Resp::decode(&mut frame, version).map_err(BenchError::codec)?;
    Ok((header.correlation_id, body))
}

/// A connection to a broker, plain or TLS.
type Stream = LinkStream<TcpStream>;

/// The sending half: numbers requests and writes whole frames.
pub struct ConnWriter {
    half: WriteHalf<Stream>,
    correlation_id_next: i32,
    pub addr: String,
}

impl ConnWriter {
    pub fn next_correlation_id(&mut self) -> i32 {
        let id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1) & i32::MAX;
        id
    }

    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        let failed = |e| BenchError::io(format!("writing to {}", self.addr), e);
        self.half.write_all(frame).await.map_err(failed)?;
        // TLS may hold the frame's last record until flushed.
        self.half.flush().await.map_err(failed)
    }

    /// Writes one frame given as consecutive pieces.
    pub async fn write_chunks(&mut self, chunks: &[Bytes]) -> Result<()> {
        let failed = |e| BenchError::io(format!("writing to {}", self.addr), e);
        for c in chunks {
            self.half.write_all(c).await.map_err(failed)?;
        }
        // TLS may hold the frame's last record until flushed.
        self.half.flush().await.map_err(failed)
    }

    /// Encodes and sends `request`; returns its correlation id.
    pub async fn send<R: Encodable + HeaderVersion>(
        &mut self,
        api_key: i16,
        version: i16,
        request: &R,
    ) -> Result<i32> {
        let id = self.next_correlation_id();
        let frame = encode_request(api_key, version, id, request)?;
        self.write_frame(&frame).await?;
        Ok(id)
    }
}

/// The receiving half: reads frames in order.
pub struct ConnReader {
    half: ReadHalf<Stream>,
    pub addr: String,
}

impl ConnReader {
    pub async fn read_frame(&mut self) -> Result<Bytes> {
        match net::frame::read_frame(&mut self.half, RESPONSE_BYTES_MAX).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(BenchError::Closed {
                addr: self.addr.clone(),
            }),
            Err(source) => Err(BenchError::Frame {
                addr: self.addr.clone(),
                source,
            }),
        }
    }

    /// Reads the next response and checks it answers `correlation_id`.
    pub async fn recv<Resp: Decodable + HeaderVersion>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> Result<Resp> {
        let frame = self.read_frame().await?;
        let (id, body) = decode_response::<Resp>(frame, version)?;
        if id != correlation_id {
            return Err(BenchError::Protocol(format!(
                "{} answered correlation id {id}, expected {correlation_id}",
                self.addr
            )));
        }
        Ok(body)
    }
}

/// A negotiated connection to one broker.
pub struct Connection {
    pub writer: ConnWriter,
    pub reader: ConnReader,
    pub versions: Versions,
}

impl Connection {
    /// Connects, negotiates API versions and, as `security::current`
    /// says, runs TLS under it and logs in with SASL.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Connection> {
        let unreachable = |e: std::io::Error| BenchError::Unreachable {
            addr: addr.to_string(),
            message: e.to_string(),
        };
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(|e| unreachable(e.into()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unreachable(e.into()))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| unreachable(e.into()))?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| unreachable(e.into()))?;
        let security = security::current();
        let stream = match &security.tls {
            None => LinkStream::Plain(stream),
            Some(config) => {
                let name = security::server_name(addr)?;
                let tls = futures_lite::future::or(
                    async { TlsStream::connect(stream, config.clone(), name).await },
                    async {
                        glommio::timer::sleep(timeout).await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no TLS handshake within the connect timeout",
                        ))
                    },
                )
                .await
                .map_err(|e| unreachable(std::io::Error::other(format!("TLS: {e}"))))?;
                LinkStream::Tls(Box::new(tls))
            }
        };
        let (read, write) = split(stream);
        let mut writer = ConnWriter {
            half: write,
            correlation_id_next: 1,
            addr: addr.to_string(),
        };
        let mut reader = ConnReader {
            half: read,
            addr: addr.to_string(),
        };
        let versions = negotiate(&mut writer, &mut reader).await?;
        let mut conn = Connection {
            writer,
            reader,
            versions,
        };
        if let Some(login) = &security.sasl {
            security::authenticate(&mut conn, login).await?;
        }
        Ok(conn)
    }

    /// One request, one response, at the highest version both sides speak.
    pub async fn call<R: Request>(&mut self, request: &R) -> Result<R::Response> {
        let version = self.versions.pick::<R>()?;
        let id = self.writer.send(R::KEY, version, request).await?;
        self.reader.recv::<R::Response>(version, id).await
    }
}

/// ApiVersions v3 first; a broker that does not speak it answers in v0
/// with UNSUPPORTED_VERSION and its table, which is all we need.
async fn negotiate(writer: &mut ConnWriter, reader: &mut ConnReader) -> Result<Versions> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let version = 3;
    let id = writer
        .send(ApiVersionsRequest::KEY, version, &request)
        .await?;
    let mut frame = reader.read_frame().await?;
    let header = ResponseHeader::decode(&mut frame, 0).map_err(BenchError::codec)?;
    if header.correlation_id != id {
        return Err(BenchError::Protocol(format!(
            "ApiVersions answered correlation id {}, expected {id}",
            header.correlation_id
        )));
    }
    let error_code = frame
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(-1);
    let body_version = if error_code == versions::UNSUPPORTED_VERSION {
        0
    } else {
        version
    };
    let response =
        ApiVersionsResponse::decode(&mut frame, body_version).map_err(BenchError::codec)?;
    if response.error_code != 0 && response.error_code != versions::UNSUPPORTED_VERSION {
        return Err(BenchError::Kafka {
            api: "ApiVersions",
            code: response.error_code,
            what: versions::error_name(response.error_code).to_string(),
        });
    }
    Ok(Versions::from_response(&response))
}

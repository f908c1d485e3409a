//! The harness's error type: what failed and against what, worded for the
//! person running the benchmark rather than for the code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot reach the broker at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading a response from {addr}: {source}")]
    Frame {
        addr: String,
        #[source]
        source: net::FrameError,
    },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("Kafka codec: {0}")]
    Codec(String),
    #[error("the broker answered {api} with error code {code} ({what})")]
    Kafka {
        api: &'static str,
        code: i16,
        what: String,
    },
    #[error("the broker does not support {api} in any version this client speaks (broker {broker_min}..{broker_max}, client {client_min}..{client_max})")]
    NoCommonVersion {
        api: &'static str,
        broker_min: i16,
        broker_max: i16,
        client_min: i16,
        client_max: i16,
    },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("scenario {path}: {message}")]
    Scenario { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {key}: {allowed}")]
    Config {
        key: &'static str,
        value: String,
        allowed: String,
    },
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("glommio: {0}")]
    Runtime(String),
    #[error("interrupted; the broker was stopped and its data removed")]
    Interrupted,
    #[error("timed out after {seconds} s: {what}")]
    Timeout { what: String, seconds: u64 },
}

impl BenchError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn codec(e: impl std::fmt::Display) -> BenchError {
        BenchError::Codec(e.to_string())
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

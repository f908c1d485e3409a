//! Handlers driven in-process on a real shard with real logs: typed
//! requests in, typed responses out, without a socket, so that Kafka error
//! semantics can be checked request by request.

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use broker::config::Config;
use broker::kafka::{self, Reply};
use broker::node::Node;
use broker::shard::Shard;
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub fn run<F, Fut>(config: Config, f: F)
where
    F: FnOnce(Rc<Node>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .spawn(move || async move {
            let shard = Rc::new(Node::new(
                Rc::new(
                    Shard::new(0, 1, Arc::new(config), Arc::new(AtomicBool::new(false)))
                        .expect("shard"),
                ),
                None,
            ));
            // A one-voter controller in the data dir, as `serve` runs it:
            // what an earlier run stored comes back, so restarts can be
            // tested.
            shard
                .start_cluster(Vec::new())
                .await
                .expect("the controller starts");
            f(shard.clone()).await;
            shard.close_logs().await;
        })
        .expect("executor")
        .join()
        .expect("run");
}

pub async fn call<Q: Encodable, R: Decodable>(
    shard: &Rc<Node>,
    key: ApiKey,
    version: i16,
    req: &Q,
) -> R {
    call_as(shard, net::request::ANONYMOUS, key, version, req).await
}

/// `call`, from a connection authenticated as `principal`.
pub async fn call_as<Q: Encodable, R: Decodable>(
    shard: &Rc<Node>,
    principal: &str,
    key: ApiKey,
    version: i16,
    req: &Q,
) -> R {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(9);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    req.encode(&mut buf, version).expect("body");
    let mut frame = net::decode_request(buf.freeze()).expect("frame");
    frame.principal = Arc::from(principal);
    let Ok(Reply::Frame(chunks)) = kafka::dispatch(shard, frame).await else {
        panic!("{key:?} v{version} gave no response");
    };
    let mut all = BytesMut::new();
    for c in chunks {
        all.extend_from_slice(&c);
    }
    let mut bytes: Bytes = all.freeze();
    let length = bytes.get_i32() as usize;
    assert_eq!(length, bytes.len());
    let header =
        ResponseHeader::decode(&mut bytes, key.response_header_version(version)).expect("header");
    assert_eq!(header.correlation_id, 9);
    R::decode(&mut bytes, version).expect("response body")
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn test_config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        fsync: Some("never".into()),
        max_message_bytes: 2000,
        ..Config::default()
    };
    (dir, config)
}

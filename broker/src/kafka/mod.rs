//! The Kafka APIs: one file per API, each a handler taking a decoded
//! request and returning its response, and the dispatch table that also
//! feeds ApiVersions (so what is advertised is exactly what is handled).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, Message};
use net::RequestFrame;

use crate::node::Node;

pub mod acls;
pub mod alter_configs;
pub mod api_versions;
pub(crate) mod authz;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
mod groups;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl;
pub mod sync_group;
pub(crate) mod topics;
pub mod user_scram_credentials;

use sasl::{authenticate as sasl_authenticate, handshake as sasl_handshake};

mod describe_user_scram_credentials {
    pub(super) use super::user_scram_credentials::describe as handle;
}
mod alter_user_scram_credentials {
    pub(super) use super::user_scram_credentials::alter as handle;
}
mod create_acls {
    pub(super) use super::acls::create as handle;
}
mod describe_acls {
    pub(super) use super::acls::describe as handle;
}
mod delete_acls {
    pub(super) use super::acls::delete as handle;
}

/// What a handler asks the connection to do.
pub enum Reply {
    /// Write these chunks (one whole response frame).
    Frame(Vec<Bytes>),
    /// Produce with acks=0: Kafka sends nothing back.
    Nothing,
    /// Produce with acks=0 failed: Kafka closes the connection, the only
    /// way such a producer learns of it.
    Close(String),
    /// Write this response, then close the connection for the reason
    /// given (a failed authentication).
    Last(Vec<Bytes>, String),
}

/// Failures that end the connection, as Kafka does when it cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion { api_key: ApiKey, version: i16 },
    #[error("api key {0:?} is not implemented")]
    NotImplemented(ApiKey),
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(transparent)]
    Encode(#[from] net::ResponseError),
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, HandlerError>>>>;
pub type Handler = fn(Rc<Node>, RequestFrame) -> HandlerFuture;

pub struct Api {
    pub key: ApiKey,
    /// Versions handled: within what kafka-protocol can decode and encode.
    pub min_version: i16,
    pub max_version: i16,
    pub handler: Handler,
}

/// Declares a table entry: decodes the request at the frame's version and
/// calls `$module::handle(shard, frame, request)`.
macro_rules! api {
    ($key:expr, $module:ident, $request:ty, $min:expr, $max:expr) => {{
        fn run(shard: Rc<Node>, frame: RequestFrame) -> HandlerFuture {
            Box::pin(async move {
                let request: $request = decode(&frame)?;
                $module::handle(&shard, &frame, request).await
            })
        }
        const _: () = assert!(
            <$request as Message>::VERSIONS.min <= $min
                && $max <= <$request as Message>::VERSIONS.max
        );
        Api {
            key: $key,
            min_version: $min,
            max_version: $max,
            handler: run,
        }
    }};
}

use kafka_protocol::messages as m;

pub fn apis() -> &'static [Api] {
    use std::sync::OnceLock;
    static APIS: OnceLock<Vec<Api>> = OnceLock::new();
    APIS.get_or_init(|| {
        vec![
            api!(ApiKey::Produce, produce, m::ProduceRequest, 3, 13),
            api!(ApiKey::Fetch, fetch, m::FetchRequest, 4, 18),
            api!(
                ApiKey::ListOffsets,
                list_offsets,
                m::ListOffsetsRequest,
                1,
                10
            ),
            api!(ApiKey::Metadata, metadata, m::MetadataRequest, 0, 13),
            api!(
                ApiKey::DescribeProducers,
                describe_producers,
                m::DescribeProducersRequest,
                0,
                0
            ),
            api!(
                ApiKey::AlterConfigs,
                alter_configs,
                m::AlterConfigsRequest,
                0,
                2
            ),
            api!(
                ApiKey::IncrementalAlterConfigs,
                incremental_alter_configs,
                m::IncrementalAlterConfigsRequest,
                0,
                1
            ),
            api!(
                ApiKey::DescribeLogDirs,
                describe_log_dirs,
                m::DescribeLogDirsRequest,
                1,
                4
            ),
            api!(
                ApiKey::DeleteRecords,
                delete_records,
                m::DeleteRecordsRequest,
                0,
                2
            ),
            api!(
                ApiKey::InitProducerId,
                init_producer_id,
                m::InitProducerIdRequest,
                0,
                5
            ),
            api!(
                ApiKey::ApiVersions,
                api_versions,
                m::ApiVersionsRequest,
                0,
                4
            ),
            api!(
                ApiKey::CreateTopics,
                create_topics,
                m::CreateTopicsRequest,
                2,
                7
            ),
            api!(
                ApiKey::DeleteTopics,
                delete_topics,
                m::DeleteTopicsRequest,
                1,
                6
            ),
            api!(
                ApiKey::DescribeConfigs,
                describe_configs,
                m::DescribeConfigsRequest,
                1,
                4
            ),
            api!(
                ApiKey::CreatePartitions,
                create_partitions,
                m::CreatePartitionsRequest,
                0,
                3
            ),
            api!(
                ApiKey::DescribeCluster,
                describe_cluster,
                m::DescribeClusterRequest,
                0,
                2
            ),
            api!(
                ApiKey::FindCoordinator,
                find_coordinator,
                m::FindCoordinatorRequest,
                0,
                6
            ),
            api!(ApiKey::JoinGroup, join_group, m::JoinGroupRequest, 0, 9),
            api!(ApiKey::SyncGroup, sync_group, m::SyncGroupRequest, 0, 5),
            api!(ApiKey::Heartbeat, heartbeat, m::HeartbeatRequest, 0, 4),
            api!(ApiKey::LeaveGroup, leave_group, m::LeaveGroupRequest, 0, 5),
            api!(
                ApiKey::OffsetCommit,
                offset_commit,
                m::OffsetCommitRequest,
                2,
                9
            ),
            api!(
                ApiKey::OffsetFetch,
                offset_fetch,
                m::OffsetFetchRequest,
                1,
                9
            ),
            api!(
                ApiKey::OffsetDelete,
                offset_delete,
                m::OffsetDeleteRequest,
                0,
                0
            ),
            api!(ApiKey::ListGroups, list_groups, m::ListGroupsRequest, 0, 5),
            api!(
                ApiKey::ElectLeaders,
                elect_leaders,
                m::ElectLeadersRequest,
                0,
                2
            ),
            api!(
                ApiKey::OffsetForLeaderEpoch,
                offset_for_leader_epoch,
                m::OffsetForLeaderEpochRequest,
                2,
                4
            ),
            api!(
                ApiKey::DescribeGroups,
                describe_groups,
                m::DescribeGroupsRequest,
                0,
                5
            ),
            api!(
                ApiKey::DeleteGroups,
                delete_groups,
                m::DeleteGroupsRequest,
                0,
                2
            ),
            api!(
                ApiKey::SaslHandshake,
                sasl_handshake,
                m::SaslHandshakeRequest,
                0,
                1
            ),
            api!(
                ApiKey::SaslAuthenticate,
                sasl_authenticate,
                m::SaslAuthenticateRequest,
                0,
                2
            ),
            api!(
                ApiKey::DescribeUserScramCredentials,
                describe_user_scram_credentials,
                m::DescribeUserScramCredentialsRequest,
                0,
                0
            ),
            api!(
                ApiKey::AlterUserScramCredentials,
                alter_user_scram_credentials,
                m::AlterUserScramCredentialsRequest,
                0,
                0
            ),
            api!(ApiKey::CreateAcls, create_acls, m::CreateAclsRequest, 1, 3),
            api!(
                ApiKey::DescribeAcls,
                describe_acls,
                m::DescribeAclsRequest,
                1,
                3
            ),
            api!(ApiKey::DeleteAcls, delete_acls, m::DeleteAclsRequest, 1, 3),
        ]
    })
}

pub fn find(key: ApiKey) -> Option<&'static Api> {
    apis().iter().find(|a| a.key == key)
}

/// Handles one request frame. ApiVersions answers any version (with the v0
/// fallback when it does not support it); other unsupported versions and
/// unimplemented keys close the connection, as Kafka does.
pub async fn dispatch(shard: &Rc<Node>, frame: RequestFrame) -> Result<Reply, HandlerError> {
    let version = frame.api_version();
    let Some(api) = find(frame.api_key) else {
        return Err(HandlerError::NotImplemented(frame.api_key));
    };
    if version < api.min_version || version > api.max_version {
        if frame.api_key == ApiKey::ApiVersions {
            return api_versions::unsupported_version(&frame);
        }
        return Err(HandlerError::UnsupportedVersion {
            api_key: frame.api_key,
            version,
        });
    }
    (api.handler)(shard.clone(), frame).await
}

/// How a request takes its turn on its connection (see `connection`).
pub enum Turn {
    /// Already placed in line (a produce request's batches have their
    /// offsets): the rest may run while later requests are read and placed.
    Placed(HandlerFuture),
    /// Not started: runs once every earlier request is answered, and
    /// before any later one starts.
    Alone(HandlerFuture),
}

/// Produce requests, whose appends stay in order however many are in
/// flight, are placed at once when `may_place`; every other request waits
/// its turn.
pub async fn take_turn(shard: &Rc<Node>, frame: RequestFrame, may_place: bool) -> Turn {
    let supported = find(frame.api_key)
        .is_some_and(|api| (api.min_version..=api.max_version).contains(&frame.api_version()));
    if frame.api_key != ApiKey::Produce || !supported || !may_place {
        let shard = shard.clone();
        return Turn::Alone(Box::pin(async move { dispatch(&shard, frame).await }));
    }
    match decode::<m::ProduceRequest>(&frame) {
        Ok(request) => Turn::Placed(produce::place(shard, &frame, request).await),
        Err(e) => Turn::Placed(Box::pin(async move { Err(e) })),
    }
}

pub(crate) fn decode<R: Decodable>(frame: &RequestFrame) -> Result<R, HandlerError> {
    let mut body = frame.body.clone();
    R::decode(&mut body, frame.api_version()).map_err(|e| HandlerError::Malformed {
        api_key: frame.api_key,
        version: frame.api_version(),
        reason: e.to_string(),
    })
}

/// Frames a response with the request's key, version and correlation id.
pub(crate) fn respond<M: Encodable>(frame: &RequestFrame, body: &M) -> Result<Reply, HandlerError> {
    let bytes = net::encode_response(
        frame.api_key,
        frame.api_version(),
        frame.correlation_id(),
        body,
    )?;
    Ok(Reply::Frame(vec![bytes]))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}

//! Consumer groups. `classic` is the classic rebalance protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) as a state machine without I/O: events
//! in, actions out, time passed in, so that it can be tested exhaustively
//! and driven by whichever shard owns the group's `__consumer_offsets`
//! partition. The next-generation protocol (KIP-848) will sit beside it.

pub mod classic;
pub mod coordinator;
pub mod records;

use bytes::Bytes;

/// An opaque token for a client request whose answer may come later (a
/// JoinGroup waits for the rebalance, a follower's SyncGroup for the
/// leader's).
pub type RequestId = u64;

/// Kafka error codes the coordinator answers with.
pub mod errors {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const INVALID_REQUEST: i16 = 42;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
}

pub use crate::config::GroupConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub request: RequestId,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets its id back with
    /// MEMBER_ID_REQUIRED and must join again with it.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinResponse {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata, for the leader only.
    pub members: Vec<JoinMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub request: RequestId,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncResponse {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// What the shard driving a group must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Join(RequestId, JoinResponse),
    Sync(RequestId, SyncResponse),
    /// Membership or assignments changed: write the group metadata record.
    Persist,
}

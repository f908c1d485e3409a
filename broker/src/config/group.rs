//! The group coordinator's limits and delays, as Kafka's broker settings
//! name them; `Config::group_config` fills them in.

/// Limits and delays of the coordinator, Kafka's broker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for
    /// more members before its first rebalance completes.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`
    pub members_max: usize,
    /// How long a member that joined without finishing (no heartbeat yet)
    /// is kept while a rebalance waits for it.
    pub new_member_join_timeout_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_max: usize::MAX,
            new_member_join_timeout_ms: 300_000,
        }
    }
}

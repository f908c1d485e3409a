//! DescribeLogDirs (v1-v4): the one log directory (the data directory),
//! the bytes each partition's log holds there (asked of the owning
//! shards), and from v4 the volume's total and usable bytes.

use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::Operation;
use crate::node::Node;
use crate::route;

/// Kafka's "volume size unknown".
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeLogDirsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    // As Kafka: Describe on the cluster, else no directory (and the error
    // from v3).
    if !super::authz::cluster(shard, &meta, frame, Operation::Describe) {
        let mut response = DescribeLogDirsResponse::default();
        if frame.api_version() >= 3 {
            response.error_code = kafka_protocol::ResponseError::ClusterAuthorizationFailed.code();
        }
        return respond(frame, &response);
    }
    // Partitions this broker hosts among those asked (all when null);
    // others are left out, as Kafka does.
    let wanted: Vec<(String, i32)> = match &request.topics {
        None => meta
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
            .collect(),
        Some(topics) => topics
            .iter()
            .filter_map(|asked| Some((meta.topic(asked.topic.0.as_str())?, asked)))
            .flat_map(|(found, asked)| {
                asked
                    .partitions
                    .iter()
                    .filter(|p| **p >= 0 && **p < found.partitions)
                    .map(move |p| (found.name.clone(), *p))
            })
            .collect(),
    };
    let sizes = route::log_sizes(shard, wanted.clone()).await;
    let mut result = DescribeLogDirsResult::default();
    let dir = &shard.config.data_dir;
    let dir_shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    result.log_dir = str_bytes(dir_shown.display().to_string());
    let (total_bytes, usable_bytes) = volume_bytes(dir);
    result.total_bytes = total_bytes;
    result.usable_bytes = usable_bytes;
    for ((topic, partition), size) in wanted.into_iter().zip(sizes) {
        if size < 0 {
            continue;
        }
        if result
            .topics
            .last()
            .is_none_or(|t| t.name.0.as_str() != topic)
        {
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(str_bytes(topic));
            result.topics.push(t);
        }
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = partition;
        p.partition_size = size;
        if let Some(t) = result.topics.last_mut() {
            t.partitions.push(p);
        }
    }
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    respond(frame, &response)
}

/// Total and available bytes of the volume holding `dir`. statvfs is one
/// quick metadata syscall, made only for this admin request.
fn volume_bytes(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES);
    };
    // SAFETY: statvfs writes into the struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES);
    }
    let block = st.f_frsize as i64;
    (st.f_blocks as i64 * block, st.f_bavail as i64 * block)
}

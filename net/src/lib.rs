//! Sluice's network codec: length-prefixed Kafka frames with a bounded size,
//! request header decoding, response framing, and a Fetch response encoder
//! that places stored record batches on the wire without copying them.
//! The replication links' rkyv frames are here too (`link`).
//! It knows nothing of shards, partitions or handlers.

pub mod fetch;
pub mod frame;
pub mod link;
pub mod request;
pub mod response;
pub mod tls;
pub mod tls_stream;
pub mod write;

pub use fetch::{FetchPartitionParts, FetchResponseParts, FetchTopicParts};
pub use frame::{read_frame, FrameError, MAX_FRAME_BYTES_DEFAULT};
pub use request::{decode_request, RequestError, RequestFrame};
pub use response::{encode_response, response_header_bytes, ResponseError};
pub use write::write_chunks;

//! Storage errors converted to Kafka error codes, at the edge where the
//! broker answers clients.

use kafka_protocol::ResponseError as Kafka;
use storage::batch::BatchErrorKind;
use storage::{SequenceError, StorageError};

pub fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::InvalidBatch(b) => match b.kind() {
            BatchErrorKind::Corrupt => Kafka::CorruptMessage.code(),
            BatchErrorKind::Invalid => Kafka::InvalidRecord.code(),
            BatchErrorKind::TooLarge => Kafka::MessageTooLarge.code(),
            BatchErrorKind::UnsupportedFormat => Kafka::UnsupportedForMessageFormat.code(),
        },
        StorageError::OffsetOutOfRange { .. } => Kafka::OffsetOutOfRange.code(),
        StorageError::Corrupt { .. } | StorageError::Io { .. } => Kafka::KafkaStorageError.code(),
        // A closed log belongs to a shard that is shutting down: clients
        // retry elsewhere, as after a leader change.
        StorageError::Closed | StorageError::FencedLeaderEpoch { .. } => {
            Kafka::NotLeaderOrFollower.code()
        }
        StorageError::InvalidArgument(_) => Kafka::InvalidRequest.code(),
        StorageError::Sequence(SequenceError::InvalidProducerEpoch { .. }) => {
            Kafka::InvalidProducerEpoch.code()
        }
        StorageError::Sequence(SequenceError::OutOfOrderSequence { .. }) => {
            Kafka::OutOfOrderSequenceNumber.code()
        }
    }
}

pub fn code(e: Kafka) -> i16 {
    e.code()
}

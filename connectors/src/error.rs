//! Why a source cannot run: the errors of starting its consumer and of its
//! discovery thread (a missing topic, a start position on no partition, a
//! checkpoint of another cluster), reported by the source's start or polls.

use rdkafka::error::KafkaError;

/// Why a source cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("topic {topic:?} does not exist on the brokers at {brokers} (create it, fix the topic name, or pass --wait-for-topics)")]
    MissingTopic { topic: String, brokers: String },
    #[error("start position names {topic}:{partition}, which is not an input partition")]
    UnknownStartPartition { topic: String, partition: i32 },
    #[error(
        "the brokers at {brokers} are Kafka cluster {found}, but the checkpoint's offsets are of \
         cluster {expected}: point --brokers at that cluster, or start with --reset-state to \
         discard the checkpoint and read this one from --start"
    )]
    OtherCluster {
        brokers: String,
        expected: String,
        found: String,
    },
    #[error("Kafka client error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot start a thread: {0}")]
    Thread(String),
}

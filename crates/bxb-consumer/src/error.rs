use bxb_event::registry::{PoisonReason, RegistryError};
use rdkafka::error::KafkaError;

/// Why [`crate::run`] stopped. Every variant is fatal: the runtime has already committed what
/// was written and nothing else, so restarting the process resumes without loss.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting cannot work; `setting` is the variable to fix.
    #[error("setting {setting}: {problem}")]
    Config { setting: &'static str, problem: String },
    /// The Kafka consumer or the dead-letter producer could not be created or subscribed, or
    /// librdkafka reported a fatal error.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic the consumer needs does not exist (topics are created on purpose, never on use).
    #[error("topic {0:?} does not exist; create it first")]
    MissingTopic(String),
    /// The topic's records are not stamped with the broker's append time, which the identity
    /// rule ranks by (`message.timestamp.type` must be `LogAppendTime`).
    #[error(
        "topic {topic:?} has message.timestamp.type={found}; the identity rule needs LogAppendTime \
         (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config message.timestamp.type=LogAppendTime)"
    )]
    NotAppendTime { topic: String, found: String },
    /// The schema registry client could not be built.
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    /// The sink reported a fatal write failure (misconfiguration, missing table, wrong columns).
    #[error("sink {sink}: {message}")]
    Sink { sink: &'static str, message: String },
    /// A record could not be dead-lettered and never will be (e.g. the DLQ topic refuses it).
    #[error("dead-letter topic: {0}")]
    DeadLetter(String),
    /// More than `BXB_POISON_BREAKER_MAX` of the last `BXB_POISON_BREAKER_WINDOW` records of a
    /// partition are poison: a producer writes something that is not events. The record that
    /// tripped the breaker and everything after it stay uncommitted.
    #[error(
        "poison breaker tripped on partition {partition}: {poison} of its last {window} records are poison \
         (offset {offset}: {reason}); nothing from offset {offset} on is committed. Find the producer from the \
         dead letters, then see docs/operations.md (poison breaker)"
    )]
    PoisonBreaker { partition: i32, offset: i64, reason: PoisonReason, poison: usize, window: usize },
    /// The health and metrics endpoints could not be served.
    #[error("health endpoints: {0}")]
    Serve(#[source] std::io::Error),
}

//! Why events were not published. Each variant says what of the events may already be on Kafka,
//! so a caller can tell its own client whether a retry is needed (it is always safe: the
//! consumers count a transaction id once).

use bxb_event::ingest::ProblemList;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event schema is not registered yet, so nothing can be encoded; nothing was sent.
    #[error("the event schema is not registered yet")]
    SchemaNotRegistered,
    /// Events encode to records larger than the record limit, one problem per such event by its
    /// index (the first listed, all counted); nothing was sent.
    #[error("{} event(s) too large to publish", problems.total())]
    RecordTooLarge { problems: ProblemList },
    /// The producer queue stayed full past the enqueue timeout; the events before were sent.
    #[error("the producer queue is full")]
    QueueFull,
    /// Kafka did not confirm every event in time (broker down, delivery timeout), refused one, or
    /// the producer was shut down; some of the events may be stored.
    #[error("{0}")]
    KafkaUnavailable(String),
}

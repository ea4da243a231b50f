//! The runtime's metrics. Every series carries `sink` (e.g. `clickhouse`); the other labels are
//! `reason` (a [`bxb_event::registry::PoisonReason`]), `outcome`, `partition` and `kind` (a
//! [`bxb_event::registry::LookupError::kind`]).

pub const CONSUMED: &str = "bxb_consumer_events_consumed_total";
pub const WRITTEN: &str = "bxb_consumer_events_written_total";
pub const DEAD_LETTERED: &str = "bxb_consumer_events_dead_lettered_total";
pub const HANDED_OVER: &str = "bxb_consumer_events_handed_over_total";
pub const BATCH_SIZE: &str = "bxb_consumer_batch_size_events";
pub const WRITE_DURATION: &str = "bxb_consumer_write_duration_seconds";
pub const WRITE_RETRIES: &str = "bxb_consumer_write_retries_total";
pub const COMMIT_DURATION: &str = "bxb_consumer_commit_duration_seconds";
pub const COMMIT_FAILURES: &str = "bxb_consumer_commit_failures_total";
pub const LAG: &str = "bxb_consumer_lag_events";
pub const END_TO_END_LATENCY: &str = "bxb_consumer_end_to_end_latency_seconds";
pub const SCHEMA_LOOKUP_FAILURES: &str = "bxb_consumer_schema_lookup_failures_total";
pub const RECORDS_WAITING: &str = "bxb_consumer_records_waiting_for_schema";
/// Records whose Kafka timestamp is not the broker's append time (`type`: `create_time`, `none`):
/// the topic is not `LogAppendTime`, so the producer chose the time they rank by.
pub const NOT_APPEND_TIME: &str = "bxb_consumer_records_not_append_time_total";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CONSUMED, Unit::Count, "Records received from Kafka.");
    describe_counter!(WRITTEN, Unit::Count, "Events written by the sink (batches that succeeded).");
    describe_counter!(DEAD_LETTERED, Unit::Count, "Poison records acknowledged by the dead-letter topic, by reason.");
    describe_counter!(HANDED_OVER, Unit::Count, "In-flight records dropped on partition revocation; the new owner reads them again.");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Records (written and dead-lettered) per flushed batch.");
    describe_histogram!(WRITE_DURATION, Unit::Seconds, "Duration of one attempt to write a batch, by outcome.");
    describe_counter!(WRITE_RETRIES, Unit::Count, "Failed attempts to write a batch that will be retried.");
    describe_histogram!(COMMIT_DURATION, Unit::Seconds, "Duration of one offset commit, until the broker acknowledged it.");
    describe_counter!(COMMIT_FAILURES, Unit::Count, "Offset commits the broker refused (the next commit covers them).");
    describe_gauge!(LAG, Unit::Count, "Records behind the partition's end, from the committed offset (librdkafka statistics).");
    describe_histogram!(END_TO_END_LATENCY, Unit::Seconds, "From the ingestion-time header to the write of the event.");
    describe_counter!(SCHEMA_LOOKUP_FAILURES, Unit::Count, "Failed lookups of a writer schema in the registry, by kind (not_found, refused, status, invalid_response, unreachable); each is retried.");
    describe_gauge!(
        RECORDS_WAITING,
        Unit::Count,
        "Records waiting for their writer schema; above 0 for long, the registry cannot give it."
    );
}

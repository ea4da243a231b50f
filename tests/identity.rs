//! The identity rule (`docs/identity.md`) end to end, against the real Kafka, registry,
//! PostgreSQL and ClickHouse: one organization's records in several partitions, retries that
//! change code, timestamp and value, billing settings that change, and the upgrade of stores
//! written under the previous rule.
//!
//! The truth each test compares with is what the test itself published and in which order (a
//! record acknowledged before the next one was sent reached Kafka first), never what a store
//! says.

mod identity {
    pub mod support;
    mod through_kafka;
    mod upgrade;
}

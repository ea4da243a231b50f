//! ClickHouse DDL and billing queries, as text. They run on ClickHouse 18.16 and on current
//! releases (see `consumer-clickhouse/README.md`).

/// `CREATE TABLE IF NOT EXISTS events_raw`, run in the configured database.
pub const EVENTS_RAW_DDL: &str = include_str!("events_raw.sql");

/// The name of the table [`EVENTS_RAW_DDL`] creates.
pub const EVENTS_RAW_TABLE: &str = "events_raw";

/// Billing usage per organization, code and time bucket, exact before merges. Placeholders are
/// `{name:Type}` (ClickHouse query parameters on current releases; substituted client-side for
/// 18.16 by `bxb_consumer_clickhouse::billing`).
pub const USAGE_QUERY: &str = include_str!("queries/usage.sql");

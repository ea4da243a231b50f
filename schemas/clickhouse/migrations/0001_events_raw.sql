-- Version 1 of events_raw, as the first releases created it (kept so an upgrade can be tested
-- from it; a new database gets events_raw.sql, the current layout, directly).
--
-- Every event consumer-clickhouse reads from Kafka, one row per Kafka record written.
--
-- Runs unchanged on ClickHouse 18.16 (Debian) and current releases: only String, UUID,
-- DateTime, Int32, Int64, UInt64, Float64, Decimal and Nullable; no DateTime64, JSON or
-- LowCardinality.
--
-- Identity is (organization_id, transaction_id). The same identity can be stored more than
-- once (a retried batch, a rebalance, a replay from offset 0, a client retry with another
-- timestamp). The billing queries count it once and use its FIRST record, the lowest
-- kafka_offset (one organization always maps to one partition), as consumer-postgres keeps the
-- first. ReplacingMergeTree keeps the row with the highest dedup_version, which is highest for
-- the lowest offset, so background merges keep exactly the row the queries choose, and results
-- are the same before and after merges.
CREATE TABLE IF NOT EXISTS events_raw
(
    organization_id      UUID,
    transaction_id       String,
    external_customer_id String,
    code                 String,
    -- Whole seconds of timestamp_ms, for partitioning and time filters that prune partitions.
    timestamp            DateTime('UTC'),
    -- The event time exactly, in milliseconds since the Unix epoch (UTC).
    timestamp_ms         Int64,
    -- The properties JSON object as text, byte for byte as received.
    properties           String,
    value                Nullable(Float64),
    decimal_value        Nullable(Decimal(38, 12)),
    -- When the gateway published the event (absent for producers that do not say).
    ingested_at_ms       Nullable(Int64),
    -- When consumer-clickhouse wrote the row.
    written_at_ms        Int64,
    kafka_partition      Int32,
    kafka_offset         Int64,
    dedup_version        UInt64 MATERIALIZED toUInt64(9223372036854775807 - kafka_offset)
)
ENGINE = ReplacingMergeTree(dedup_version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organization_id, transaction_id)

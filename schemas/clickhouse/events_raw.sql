-- Every event consumer-clickhouse reads from Kafka, one row per Kafka record written.
--
-- Runs unchanged on ClickHouse 18.16 (Debian) and current releases: only String, UUID,
-- DateTime, Int32, Int64, UInt64, Float64, Decimal and Nullable; no DateTime64, JSON or
-- LowCardinality.
--
-- Identity is (organization_id, transaction_id). One identity can have several records (a
-- client retry, maybe with another timestamp, value or code; a direct producer that placed it
-- in another partition), and one record can be written more than once (a retried batch, a
-- rebalance, a replay from offset 0). The billing queries count each identity once, with the
-- fields of its FIRST record: the lowest (appended_at_ms, kafka_partition, kafka_offset), see
-- docs/identity.md. The sorting key holds the record's place in Kafka, so background merges
-- collapse only rows of one record, never two records of one identity, and keep the row of the
-- lowest appended_at_ms (all rows of one record are equal but for a legacy row's 0): the rows
-- the queries choose from stay, and results are the same before and after merges.
--
-- This is the current layout, created as it is on a new database; a database of an earlier
-- layout is upgraded by the migrations in schemas/clickhouse/migrations/ (bxbctl migrate).
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
    -- The record's Kafka timestamp: the broker's append time on a LogAppendTime topic, the
    -- first part of its rank. 0 for rows written before the identity rule.
    appended_at_ms       Int64,
    -- Highest for the lowest appended_at_ms: the row of a record a merge keeps.
    dedup_version        UInt64 MATERIALIZED toUInt64(9223372036854775807 - appended_at_ms)
)
ENGINE = ReplacingMergeTree(dedup_version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (organization_id, transaction_id, kafka_partition, kafka_offset)

-- Version 2: events_raw gets the identity rule's rank (docs/identity.md). Version 1 sorted by
-- (organization_id, transaction_id) with the lowest kafka_offset kept, which is wrong once one
-- organization's records are in more than one partition. The sorting key of a table cannot
-- change in place, so the rows move to a table of the current layout (events_raw.sql, created
-- as events_raw_next by bxbctl migrate just before these statements) and the tables swap names.
--
-- Rows written before the rule have no append time: they get 0, so they rank before every
-- record written since, among themselves in (partition, offset) order, the order version 1
-- used. Run it with consumer-clickhouse stopped (docs/deployment.md): rows inserted into the
-- old table after the copy would stay behind in events_raw_before_rank, which is kept for the
-- operator to compare and drop.

INSERT INTO events_raw_next
    (organization_id, transaction_id, external_customer_id, code, timestamp, timestamp_ms, properties, value,
     decimal_value, ingested_at_ms, written_at_ms, kafka_partition, kafka_offset, appended_at_ms)
SELECT organization_id, transaction_id, external_customer_id, code, timestamp, timestamp_ms, properties, value,
       decimal_value, ingested_at_ms, written_at_ms, kafka_partition, kafka_offset, 0
FROM events_raw;

RENAME TABLE events_raw TO events_raw_before_rank, events_raw_next TO events_raw;

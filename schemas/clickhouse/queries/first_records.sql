-- The first record of every identity that has a record whose timestamp is in
-- [from_ms, to_ms) (one organization, or all), by the identity rule (docs/identity.md): the
-- records PostgreSQL must be judged by. bxbctl backfill reads it to bring PostgreSQL to exactly
-- the billable projection of ClickHouse (after a metric was made billable retroactively, or an
-- upgrade from the previous rule).
--
-- Parameters as in usage.sql: from_ms, to_ms, all_organizations, organization_id. The columns
-- are events_raw's, in the order consumer-clickhouse writes them. LIMIT 1 BY leaves one row of
-- a record written more than once.
SELECT
    organization_id, transaction_id, external_customer_id, code, timestamp, timestamp_ms, properties, value,
    decimal_value, ingested_at_ms, written_at_ms, kafka_partition, kafka_offset, appended_at_ms
FROM events_raw
WHERE (organization_id, transaction_id, appended_at_ms, kafka_partition, kafka_offset) IN
(
    SELECT
        organization_id,
        transaction_id,
        argMin(appended_at_ms, (appended_at_ms, kafka_partition, kafka_offset)),
        argMin(kafka_partition, (appended_at_ms, kafka_partition, kafka_offset)),
        argMin(kafka_offset, (appended_at_ms, kafka_partition, kafka_offset))
    FROM events_raw
    WHERE (organization_id, transaction_id) IN
    (
        SELECT organization_id, transaction_id
        FROM events_raw
        WHERE timestamp >= toDateTime(intDiv({from_ms:Int64}, 1000))
          AND timestamp <= toDateTime(intDiv(least({to_ms:Int64}, 4294967295999), 1000))
          AND timestamp_ms >= {from_ms:Int64}
          AND timestamp_ms < {to_ms:Int64}
          AND ({all_organizations:UInt8} OR organization_id = {organization_id:UUID})
    )
    GROUP BY organization_id, transaction_id
)
ORDER BY organization_id, transaction_id
LIMIT 1 BY organization_id, transaction_id

-- Billing usage: events, and the sums of value and decimal_value, per organization, code and
-- time bucket (an hour or a day, UTC), for events whose timestamp is in [from_ms, to_ms).
--
-- Parameters (ClickHouse query parameters on current releases, e.g.
-- clickhouse-client --param_bucket_ms=3600000 ...; substituted as literals for 18.16):
--   bucket_ms          3600000 for hours, 86400000 for days
--   from_ms, to_ms     the time range, milliseconds since the Unix epoch, end excluded
--   all_organizations  1 for every organization, 0 for organization_id only
--   organization_id    the organization when all_organizations = 0 (any UUID otherwise)
--
-- Exact before merges: every (organization_id, transaction_id) counts once, with the fields of
-- its first record (the lowest (appended_at_ms, kafka_partition, kafka_offset), see
-- docs/identity.md), wherever its other records are stored, even in another
-- month partition when a client retried with another timestamp. The inner query finds the
-- identities with any record in the range (partition pruning on timestamp), the middle one
-- picks the first record of each among all their records, the outer one keeps those whose
-- first record is in the range. Background merges keep that same record (see events_raw.sql),
-- so the result does not change when they run.
--
-- GROUP BY with argMin, not FINAL: FINAL collapses only the rows of one Kafka record (the
-- sorting key), so it would still count every record of an identity once each.
SELECT
    organization_id,
    code,
    timestamp_ms - timestamp_ms % {bucket_ms:Int64} AS bucket_start_ms,
    count() AS events,
    sum(value) AS value_sum,
    sum(decimal_value) AS decimal_value_sum,
    -- Float64 cannot wrap around as sum(Decimal) does in Int128: billing.rs checks one by the other.
    sum(toFloat64(decimal_value)) AS decimal_value_sum_f64
FROM
(
    SELECT
        organization_id,
        argMin(code, (appended_at_ms, kafka_partition, kafka_offset)) AS code,
        argMin(timestamp_ms, (appended_at_ms, kafka_partition, kafka_offset)) AS timestamp_ms,
        -- argMin ignores rows whose argument is NULL, so NULL becomes 0 first: sums are unchanged.
        argMin(ifNull(value, 0), (appended_at_ms, kafka_partition, kafka_offset)) AS value,
        argMin(ifNull(decimal_value, toDecimal128(0, 12)), (appended_at_ms, kafka_partition, kafka_offset)) AS decimal_value
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
WHERE timestamp_ms >= {from_ms:Int64} AND timestamp_ms < {to_ms:Int64}
GROUP BY organization_id, code, bucket_start_ms
ORDER BY organization_id, code, bucket_start_ms

-- The billing-critical events, written by consumer-postgres.
--
-- `events` is range-partitioned by `timestamp`. Partitions (one per
-- BXB_POSTGRES_PARTITION_INTERVAL_DAYS, named events_pYYYYMMDD) are created by the consumer ahead
-- of time and on demand, and dropped whole once older than BXB_RETENTION_DAYS: rows are never
-- deleted one by one, so the partitions stay append-only and need next to no vacuuming.
--
-- There is no primary key here: PostgreSQL only accepts a unique index on a partitioned table when
-- it contains the partition key, and (organization_id, transaction_id, timestamp) would let a
-- retry with another timestamp in. Identity lives in `event_keys` below instead.
CREATE TABLE events (
    organization_id      uuid             NOT NULL,
    transaction_id       text             NOT NULL,
    external_customer_id text             NOT NULL,
    code                 text             NOT NULL,
    "timestamp"          timestamptz      NOT NULL,
    properties           jsonb            NOT NULL DEFAULT '{}',
    value                double precision,
    decimal_value        numeric(38, 12),
    -- When the gateway (or a direct producer) published the event; NULL when the record had no
    -- ingestion-time header.
    ingested_at          timestamptz,
    written_at           timestamptz      NOT NULL DEFAULT now(),
    kafka_partition      integer          NOT NULL,
    kafka_offset         bigint           NOT NULL
) PARTITION BY RANGE ("timestamp");

-- BRIN: events arrive roughly in time order, so a block-range summary finds a time range for a
-- small fraction of a B-tree's write cost and size.
CREATE INDEX events_timestamp_brin ON events USING brin ("timestamp");
-- The billing queries: one organization's usage of one metric over a time range.
CREATE INDEX events_organization_code_timestamp ON events (organization_id, code, "timestamp");

-- One row per event identity, written in the same transaction as the event. The primary key makes
-- (organization_id, transaction_id) exact at write time whatever the timestamp: the consumer
-- inserts here with ON CONFLICT DO NOTHING and writes to `events` only the keys that went in.
-- `timestamp` is the one the event was stored under, so the retention job can forget the keys of
-- dropped partitions (a set-based DELETE by time range, see below) and a lookup by key finds the
-- partition of its event.
CREATE TABLE event_keys (
    organization_id uuid        NOT NULL,
    transaction_id  text        NOT NULL,
    "timestamp"     timestamptz NOT NULL,
    PRIMARY KEY (organization_id, transaction_id)
);

-- Keys are inserted roughly in time order too; the retention DELETE scans by time range.
CREATE INDEX event_keys_timestamp_brin ON event_keys USING brin ("timestamp");

-- Unlike the partitions, this table sees deletes (retention): vacuum it after 1% of dead rows
-- rather than the default 20%, so a day's worth of forgotten keys does not bloat it.
ALTER TABLE event_keys SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01
);

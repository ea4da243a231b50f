-- The identity rule (docs/identity.md) in PostgreSQL.
--
-- 1. event_keys holds every identity consumer-postgres has seen, billable or not, with the rank
--    of the record that decides it: (appended_at_ms, kafka_partition, kafka_offset), the broker's
--    append time then the record's place. A record of better rank that arrives later replaces
--    it (and its row in events); a non-billable first record keeps a billable retry out.
--    Keys written before the rule get the rank of their event with append time 0 (before every
--    record ranked since; docs/deployment.md, upgrading).
ALTER TABLE event_keys
    ADD COLUMN appended_at_ms  bigint,
    ADD COLUMN kafka_partition integer,
    ADD COLUMN kafka_offset    bigint,
    -- Whether the deciding record is billable, i.e. whether events holds its row.
    ADD COLUMN billable        boolean;

UPDATE event_keys k
SET appended_at_ms = 0, kafka_partition = e.kafka_partition, kafka_offset = e.kafka_offset, billable = true
FROM events e
WHERE e.organization_id = k.organization_id AND e.transaction_id = k.transaction_id AND e."timestamp" = k."timestamp";

-- A key without its event cannot be written (both go in one transaction), but if one exists it
-- keeps its identity taken, as before, and holds no row.
UPDATE event_keys SET appended_at_ms = 0, kafka_partition = -1, kafka_offset = -1, billable = false
WHERE billable IS NULL;

ALTER TABLE event_keys
    ALTER COLUMN appended_at_ms  SET NOT NULL,
    ALTER COLUMN kafka_partition SET NOT NULL,
    ALTER COLUMN kafka_offset    SET NOT NULL,
    ALTER COLUMN billable        SET NOT NULL;

-- 2. billable_metrics says from when (and until when) a metric is billable. Whether an identity
--    is billable is judged at its first record's append time, so the answer does not depend on
--    when a consumer happened to read the table. Rows from before get -infinity: billable for
--    every record, as they were. A new row is billable from its insert (now()); to stop billing
--    a metric set effective_until rather than deleting the row, so that a replay judges the
--    past as it was. A row with an earlier effective_from is retroactive: bxbctl backfill brings
--    the events of the past into events (docs/operations-postgres.md).
ALTER TABLE billable_metrics
    ADD COLUMN effective_from  timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN effective_until timestamptz NULL,
    ADD CONSTRAINT billable_metrics_effective_range CHECK (effective_until IS NULL OR effective_until > effective_from);
ALTER TABLE billable_metrics ALTER COLUMN effective_from SET DEFAULT now();
-- A metric can be billable, stop, and be billable again: one row per period.
ALTER TABLE billable_metrics DROP CONSTRAINT billable_metrics_pkey;
ALTER TABLE billable_metrics ADD PRIMARY KEY (organization_id, code, effective_from);

-- 3. A counter bumped by every change of billable_metrics, so consumer-postgres can tell with one
--    tiny read per batch whether its copy of the table is current as of a moment (the statement
--    time of that read), and reloads it only when it changed.
CREATE TABLE billable_metrics_changes (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint  NOT NULL
);
INSERT INTO billable_metrics_changes (singleton, version) VALUES (true, 0);

CREATE FUNCTION billable_metrics_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE billable_metrics_changes SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER billable_metrics_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON billable_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION billable_metrics_changed();

-- The metrics an organization is billed for. consumer-postgres keeps only events whose code is
-- listed here for their organization (plus the codes of BXB_BILLABLE_CODES, billable for every
-- organization); it caches the whole table and reloads it every BXB_BILLABLE_REFRESH_MS.
CREATE TABLE billable_metrics (
    organization_id uuid        NOT NULL,
    code            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, code)
);

-- API keys of the gateway's PostgreSQL key source. Only the SHA-256 digest of a key is stored;
-- the gateway reads the whole table on every refresh (BXB_API_KEYS_REFRESH_MS) and refuses
-- keys whose revoked_at is set. Revoke with: UPDATE api_keys SET revoked_at = now() WHERE key_id = ...
CREATE TABLE IF NOT EXISTS api_keys (
    key_id          text        PRIMARY KEY,
    organization_id uuid        NOT NULL,
    key_sha256      bytea       NOT NULL UNIQUE CHECK (octet_length(key_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz NULL
);

CREATE INDEX IF NOT EXISTS api_keys_organization_id_idx ON api_keys (organization_id);

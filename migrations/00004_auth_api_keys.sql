-- +goose Up
-- API keys belong to an organization (and optionally one workspace) with a role.
-- Only a hash is stored; prefix is the first characters, shown to tell keys apart.
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    workspace_id    uuid REFERENCES workspaces (id) ON DELETE CASCADE,
    name            text NOT NULL,
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL UNIQUE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'operator', 'viewer')),
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX api_keys_org ON api_keys (organization_id);

-- +goose Down
DROP TABLE api_keys;

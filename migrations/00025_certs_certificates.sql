-- +goose Up
-- TLS certificates of a workspace, uploaded (provider 'upload') or, later, issued
-- through ACME. certificate_pem is the public chain (leaf first); the private key
-- is stored only sealed with the master's encryption key (AES-256-GCM, nonce
-- first). A pending or failed issuance has no material yet; every other status
-- has a chain, a key and a validity period.
CREATE TABLE certificates (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id       uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name               text NOT NULL DEFAULT '',
    domain             text NOT NULL,
    san                jsonb NOT NULL DEFAULT '[]',
    is_wildcard        boolean NOT NULL DEFAULT false,
    provider           text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{0,31}$'),
    status             text NOT NULL CHECK (status IN ('pending', 'active', 'expiring', 'expired', 'failed')),
    auto_renew         boolean NOT NULL DEFAULT false,
    certificate_pem    text NOT NULL DEFAULT '',
    private_key_sealed bytea,
    issuer             text NOT NULL DEFAULT '',
    serial             text NOT NULL DEFAULT '',
    fingerprint_sha256 text NOT NULL DEFAULT '',
    issued_at          timestamptz,
    expires_at         timestamptz,
    error              text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT certificates_material CHECK (
        status IN ('pending', 'failed')
        OR (certificate_pem <> '' AND private_key_sealed IS NOT NULL
            AND issued_at IS NOT NULL AND expires_at IS NOT NULL)
    )
);
CREATE INDEX certificates_workspace ON certificates (workspace_id, created_at, id);
-- The same certificate is uploaded once per workspace.
CREATE UNIQUE INDEX certificates_workspace_fingerprint ON certificates (workspace_id, fingerprint_sha256)
    WHERE fingerprint_sha256 <> '';
-- Status refreshes and renewal scans look for certificates nearing expiry.
CREATE INDEX certificates_expires ON certificates (expires_at)
    WHERE status IN ('active', 'expiring');

-- +goose Down
DROP TABLE certificates;

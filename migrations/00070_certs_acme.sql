-- +goose Up
-- ACME issuance: what a certificate was requested with, the order lock, retries,
-- the attempt history, the organizations' ACME settings and accounts.
ALTER TABLE certificates
    ADD COLUMN challenge              text NOT NULL DEFAULT '' CHECK (challenge IN ('', 'http-01', 'dns-01')),
    ADD COLUMN key_type               text NOT NULL DEFAULT '',
    ADD COLUMN profile                text NOT NULL DEFAULT '',
    ADD COLUMN dns_provider           text NOT NULL DEFAULT '',
    -- JSON object of the DNS provider's settings, sealed like private keys.
    ADD COLUMN dns_credentials_sealed bytea,
    ADD COLUMN dns_credential_keys    jsonb NOT NULL DEFAULT '[]',
    -- The issuer that issued the current material (letsencrypt, zerossl, custom...).
    ADD COLUMN issued_by              text NOT NULL DEFAULT '',
    -- One order in flight per certificate: set while a job works on it.
    ADD COLUMN order_started_at       timestamptz,
    ADD COLUMN next_attempt_at        timestamptz,
    ADD COLUMN failures               integer NOT NULL DEFAULT 0,
    ADD COLUMN alerted_days           integer NOT NULL DEFAULT 0,
    ADD COLUMN renew_at               timestamptz;
CREATE INDEX certificates_renew ON certificates (renew_at) WHERE auto_renew AND provider <> 'upload';

CREATE TABLE certificate_attempts (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    certificate_id uuid NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('issue', 'renew')),
    issuer         text NOT NULL,
    challenge      text NOT NULL,
    result         text NOT NULL CHECK (result IN ('success', 'failure')),
    error          text NOT NULL DEFAULT '',
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL
);
CREATE INDEX certificate_attempts_certificate ON certificate_attempts (certificate_id, started_at DESC);

-- An organization's ACME settings (set by its admins). eab_hmac is sealed.
CREATE TABLE acme_settings (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    email           text NOT NULL DEFAULT '',
    eab_kid         text NOT NULL DEFAULT '',
    eab_hmac_sealed bytea,
    directory_url   text NOT NULL DEFAULT '',
    fallback        jsonb NOT NULL DEFAULT '[]',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- ACME accounts, one per organization and directory; the key is sealed.
CREATE TABLE acme_accounts (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    directory_url   text NOT NULL,
    email           text NOT NULL DEFAULT '',
    uri             text NOT NULL DEFAULT '',
    key_sealed      bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, directory_url)
);

-- +goose Down
DROP TABLE acme_accounts;
DROP TABLE acme_settings;
DROP TABLE certificate_attempts;
DROP INDEX certificates_renew;
ALTER TABLE certificates
    DROP COLUMN challenge, DROP COLUMN key_type, DROP COLUMN profile, DROP COLUMN dns_provider,
    DROP COLUMN dns_credentials_sealed, DROP COLUMN dns_credential_keys, DROP COLUMN issued_by,
    DROP COLUMN order_started_at, DROP COLUMN next_attempt_at, DROP COLUMN failures,
    DROP COLUMN alerted_days, DROP COLUMN renew_at;

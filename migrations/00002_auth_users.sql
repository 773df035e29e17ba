-- +goose Up
CREATE TABLE users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email               text NOT NULL,
    name                text NOT NULL DEFAULT '',
    password_hash       text NOT NULL,
    is_superadmin       boolean NOT NULL DEFAULT false,
    email_code_required boolean NOT NULL DEFAULT false,
    disabled_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- A session is a refresh-token family (kind 'api') or an admin cookie session
-- (kind 'web', token_hash set). Revoking it ends every token issued from it.
CREATE TABLE auth_sessions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('api', 'web')),
    token_hash     bytea UNIQUE,
    csrf_token     text NOT NULL DEFAULT '',
    ip             text NOT NULL DEFAULT '',
    user_agent     text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text NOT NULL DEFAULT ''
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

-- Refresh tokens, rotated on every use; presenting a used one revokes the session.
CREATE TABLE refresh_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id uuid NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Emailed one-time login codes (6 digits, 5 minutes, single use, 5 attempts).
CREATE TABLE login_codes (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX login_codes_user ON login_codes (user_id, created_at DESC);

-- Failed and successful logins, for throttling per account and per IP.
CREATE TABLE login_attempts (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,
    ip         text NOT NULL,
    success    boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_email ON login_attempts (lower(email), created_at DESC);
CREATE INDEX login_attempts_ip ON login_attempts (ip, created_at DESC);

-- +goose Down
DROP TABLE login_attempts;
DROP TABLE login_codes;
DROP TABLE refresh_tokens;
DROP TABLE auth_sessions;
DROP TABLE users;

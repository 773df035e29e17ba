-- +goose Up
-- Adding an existing account to an organization needs that user's consent: an
-- admin invites, the user accepts (membership) or declines. At most one pending
-- invitation per user and organization; answered, revoked and expired ones stay
-- as history.
CREATE TABLE invitations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'operator', 'viewer')),
    invited_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'accepted', 'declined', 'revoked', 'expired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    responded_at    timestamptz
);
CREATE UNIQUE INDEX invitations_pending_key ON invitations (organization_id, user_id) WHERE status = 'pending';
CREATE INDEX invitations_user_pending ON invitations (user_id) WHERE status = 'pending';

-- Whether a session was confirmed with an emailed one-time code: organizations
-- with require_email_code admit only such sessions.
ALTER TABLE auth_sessions ADD COLUMN email_code_verified boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE auth_sessions DROP COLUMN email_code_verified;
DROP TABLE invitations;

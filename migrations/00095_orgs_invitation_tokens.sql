-- +goose Up
-- Inviting an e-mail address that has no account: the invitation holds the
-- address and the SHA-256 of a single-use token sent in a link; whoever opens
-- the link sets a password, and the account and the membership are created
-- together. The token's hash is cleared once the invitation is answered.
ALTER TABLE invitations ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE invitations ADD COLUMN email text NOT NULL DEFAULT '';
ALTER TABLE invitations ADD COLUMN token_hash bytea;
ALTER TABLE invitations ADD CONSTRAINT invitations_invitee
    CHECK (user_id IS NOT NULL OR (email <> '' AND (token_hash IS NOT NULL OR status <> 'pending')));
CREATE UNIQUE INDEX invitations_token_hash_key ON invitations (token_hash) WHERE token_hash IS NOT NULL;
CREATE UNIQUE INDEX invitations_pending_email_key ON invitations (organization_id, lower(email))
    WHERE status = 'pending' AND user_id IS NULL;

-- +goose Down
DROP INDEX invitations_pending_email_key;
DROP INDEX invitations_token_hash_key;
ALTER TABLE invitations DROP CONSTRAINT invitations_invitee;
DELETE FROM invitations WHERE user_id IS NULL;
ALTER TABLE invitations DROP COLUMN token_hash;
ALTER TABLE invitations DROP COLUMN email;
ALTER TABLE invitations ALTER COLUMN user_id SET NOT NULL;

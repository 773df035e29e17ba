-- +goose Up
-- The audited object's name as it was at the change (a virtual host's or
-- upstream's name, a user's or member's e-mail address, a certificate's
-- domain...), so the audit log reads without looking every id up, and still
-- names objects deleted since. Existing rows take it from their recorded
-- state.
ALTER TABLE audit_log ADD COLUMN object_name text NOT NULL DEFAULT '';

UPDATE audit_log SET object_name = left(coalesce(
    nullif(after->>'email', ''), nullif(after->>'name', ''), nullif(after->>'domain', ''), nullif(after->>'hostname', ''),
    nullif(before->>'email', ''), nullif(before->>'name', ''), nullif(before->>'domain', ''), nullif(before->>'hostname', ''),
    ''), 200)
WHERE jsonb_typeof(after) = 'object' OR jsonb_typeof(before) = 'object';

-- +goose Down
ALTER TABLE audit_log DROP COLUMN object_name;

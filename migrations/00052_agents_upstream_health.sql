-- +goose Up
-- The agents' active health-check verdicts on upstream servers, as of each
-- agent's last HealthReport (upstream_health): a JSON array of
-- {upstream_id, address, healthy, marked_down, last_error, changed_at,
-- checked_at}, replaced as a whole by every report. The GIN index serves the
-- upstream page's "which agents report on this upstream" (@> containment).
ALTER TABLE agents
    ADD COLUMN upstream_health jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(upstream_health) = 'array');
CREATE INDEX agents_upstream_health ON agents USING gin (upstream_health jsonb_path_ops);

-- +goose Down
DROP INDEX agents_upstream_health;
ALTER TABLE agents DROP COLUMN upstream_health;

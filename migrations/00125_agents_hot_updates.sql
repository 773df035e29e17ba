-- +goose Up
-- Heartbeats and configuration statuses rewrite every connected agent's row
-- many times a minute. Without an index on the columns they change
-- (last_seen_at, state) and with room left on each page, PostgreSQL updates
-- the rows in place (heap-only tuples) instead of adding an entry to every
-- index, the two GIN indexes included. Finding silent agents
-- (agents.mark_offline) reads the online and degraded rows instead.
DROP INDEX agents_live;
ALTER TABLE agents SET (fillfactor = 50);

-- +goose Down
ALTER TABLE agents RESET (fillfactor);
CREATE INDEX agents_live ON agents (last_seen_at) WHERE state IN ('online', 'degraded');

-- +goose Up
-- A final answer settles the agent's later versions still in flight
-- (pending, validating, applying): few rows among its whole history. This
-- index finds them by agent; without it each batch of answers scanned every
-- result ever recorded, a cost growing with every rollout.
CREATE INDEX agent_config_results_open ON agent_config_results (agent_id, version)
    WHERE status IN ('pending', 'validating', 'applying');

-- +goose Down
DROP INDEX agent_config_results_open;

-- +goose Up
-- What each agent made of each configuration version of its workspace: the
-- rollout of a version, per agent. The agents module writes a row when it
-- pushes a version to an agent (pending), when the agent answers (validating,
-- applying, success, failed, rolled_back, with nginx's error text), when the
-- update cannot be delivered (failed), and when a version leaves the agent's
-- configuration as it was (the status of the configuration it already has).
-- Rows go with their agent.
CREATE TABLE agent_config_results (
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    version bigint NOT NULL CHECK (version >= 1),
    status text NOT NULL,
    error_message text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, version)
);
CREATE INDEX agent_config_results_version ON agent_config_results (workspace_id, version);

-- +goose Down
DROP TABLE agent_config_results;

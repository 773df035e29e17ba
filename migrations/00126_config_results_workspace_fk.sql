-- +goose Up
-- A configuration result's workspace is its agent's (agents.workspace_id, set
-- from it when the row is written), and deleting a workspace deletes its
-- agents and so their results. The second foreign key only cost a check per
-- row: a rollout to a thousand agents writes a thousand results in one
-- statement.
ALTER TABLE agent_config_results DROP CONSTRAINT agent_config_results_workspace_id_fkey;

-- +goose Down
ALTER TABLE agent_config_results ADD CONSTRAINT agent_config_results_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE;

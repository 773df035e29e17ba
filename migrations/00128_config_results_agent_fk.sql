-- +goose Up
-- A configuration result's agent is locked by the statement that writes the
-- result (the rollout batches lock their agents FOR UPDATE; the other
-- writers read the agent FOR KEY SHARE), so the foreign key's check, one
-- trigger and one query per row (a thousand per rollout batch), only
-- repeated what the writers already hold. Results still go with their agent:
-- deleting agents (one by one, or with their workspace) deletes their
-- results in the same statement's trigger.
-- +goose StatementBegin
CREATE FUNCTION agent_config_results_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM agent_config_results r USING gone g WHERE r.agent_id = g.id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER agents_config_results_gone AFTER DELETE ON agents
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION agent_config_results_gone();
ALTER TABLE agent_config_results DROP CONSTRAINT agent_config_results_agent_id_fkey;

-- +goose Down
DELETE FROM agent_config_results r WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = r.agent_id);
ALTER TABLE agent_config_results ADD CONSTRAINT agent_config_results_agent_id_fkey
    FOREIGN KEY (agent_id) REFERENCES agents (id) ON DELETE CASCADE;
DROP TRIGGER agents_config_results_gone ON agents;
DROP FUNCTION agent_config_results_gone();

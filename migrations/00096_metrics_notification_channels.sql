-- +goose Up
-- Notification channels of an organization: a webhook (url and a secret
-- sealed like private keys, never returned) or a list of e-mail addresses.
-- Alert rules of the organization's workspaces name the channels they
-- notify (alert_rule_channels).
CREATE TABLE notification_channels (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    type            text NOT NULL CHECK (type IN ('webhook', 'email')),
    url             text NOT NULL DEFAULT '',
    secret_sealed   bytea,
    addresses       text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX notification_channels_name ON notification_channels (organization_id, lower(name));

-- The channels each rule notifies, in the order given (position). A channel
-- a rule uses cannot be deleted through the API (409 naming the rules, the
-- channel's row locked against a rule starting to use it); the cascade is
-- for an organization's deletion, which removes channels and rules alike.
CREATE TABLE alert_rule_channels (
    rule_id    uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    channel_id uuid NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    PRIMARY KEY (rule_id, channel_id)
);
CREATE INDEX alert_rule_channels_channel ON alert_rule_channels (channel_id);

-- A rule's scope becomes an object: all (the whole workspace), labels (the
-- agents matching a label selector when the rule is evaluated), agents
-- (listed agents) or virtual_host (one virtual host or stream). A rule
-- scoped to one agent becomes an agents scope of that agent; a rule scoped
-- to a virtual host (with or without an agent) a virtual_host scope.
ALTER TABLE alert_rules
    ADD COLUMN scope_type text NOT NULL DEFAULT 'all'
        CHECK (scope_type IN ('all', 'labels', 'agents', 'virtual_host')),
    ADD COLUMN scope_label_selector text NOT NULL DEFAULT '',
    ADD COLUMN scope_agent_ids uuid[] NOT NULL DEFAULT '{}';
UPDATE alert_rules SET scope_type = 'virtual_host' WHERE virtual_host_id IS NOT NULL;
UPDATE alert_rules SET scope_type = 'agents', scope_agent_ids = ARRAY[agent_id]
    WHERE agent_id IS NOT NULL AND virtual_host_id IS NULL;
ALTER TABLE alert_rules DROP COLUMN agent_id;

-- +goose Down
ALTER TABLE alert_rules ADD COLUMN agent_id uuid REFERENCES agents (id) ON DELETE CASCADE;
UPDATE alert_rules r SET agent_id = r.scope_agent_ids[1]
    WHERE r.scope_type = 'agents' AND EXISTS (SELECT 1 FROM agents a WHERE a.id = r.scope_agent_ids[1]);
UPDATE alert_rules SET virtual_host_id = NULL WHERE scope_type <> 'virtual_host';
ALTER TABLE alert_rules
    DROP COLUMN scope_type,
    DROP COLUMN scope_label_selector,
    DROP COLUMN scope_agent_ids;
DROP TABLE alert_rule_channels;
DROP TABLE notification_channels;

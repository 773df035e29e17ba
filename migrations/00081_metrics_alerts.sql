-- +goose Up
-- Alert rules: a threshold on one metric of a workspace (all of it, one agent
-- or one virtual host), held for a duration, with the channels told when an
-- alert fires and when it resolves. The webhook secret is sealed like private
-- keys (AES-GCM with the master's encryption key) and never returned.
CREATE TABLE alert_rules (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id          uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name                  text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    metric                text NOT NULL,
    operator              text NOT NULL CHECK (operator IN ('>', '>=', '<', '<=')),
    threshold             double precision NOT NULL,
    for_seconds           integer NOT NULL DEFAULT 0 CHECK (for_seconds >= 0),
    window_seconds        integer NOT NULL DEFAULT 300 CHECK (window_seconds > 0),
    severity              text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    agent_id              uuid REFERENCES agents (id) ON DELETE CASCADE,
    virtual_host_id       uuid,
    enabled               boolean NOT NULL DEFAULT true,
    webhook_url           text NOT NULL DEFAULT '',
    webhook_secret_sealed bytea,
    emails                text[] NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_workspace ON alert_rules (workspace_id, created_at, id);

-- Where each rule stands for each thing it watches (subject: "" for the
-- rule's whole scope, "agent:<id>", "certificate:<id>"): since when the
-- condition holds, and the alert firing for it, if any. Rows whose condition
-- no longer holds are deleted.
CREATE TABLE alert_states (
    rule_id       uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    subject       text NOT NULL,
    pending_since timestamptz NOT NULL,
    alert_id      uuid,
    PRIMARY KEY (rule_id, subject)
);

-- Alert history: one row per firing, resolved in place. Kept when the rule
-- is deleted (rule_id becomes null; the rule's figures are copied).
CREATE TABLE alerts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    rule_id         uuid REFERENCES alert_rules (id) ON DELETE SET NULL,
    rule_name       text NOT NULL DEFAULT '',
    subject         text NOT NULL DEFAULT '',
    metric          text NOT NULL,
    operator        text NOT NULL,
    threshold       double precision NOT NULL,
    severity        text NOT NULL,
    agent_id        uuid,
    virtual_host_id uuid,
    certificate_id  uuid,
    value           double precision NOT NULL,
    message         text NOT NULL DEFAULT '',
    state           text NOT NULL CHECK (state IN ('firing', 'resolved')),
    fired_at        timestamptz NOT NULL,
    resolved_at     timestamptz,
    resolved_value  double precision
);
CREATE INDEX alerts_workspace ON alerts (workspace_id, fired_at DESC, id);
CREATE INDEX alerts_rule ON alerts (rule_id) WHERE rule_id IS NOT NULL;

-- +goose Down
DROP TABLE alerts;
DROP TABLE alert_states;
DROP TABLE alert_rules;

-- +goose Up
-- The fleet (modules/agents): agents, their single-use registration tokens, the
-- workspaces' registration ACLs and the commands sent to agents.
--
-- An agent row is created with its first registration token (state pending) and
-- completed when the agent registers with it: the master signs the agent's CSR
-- and records the certificate's serial; later connections must present exactly
-- that certificate, so deleting the row (or registering again) revokes it.
CREATE TABLE agents (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id      uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    hostname          text NOT NULL DEFAULT '',
    ip_address        text NOT NULL DEFAULT '',
    version           text NOT NULL DEFAULT '',
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'online', 'offline', 'degraded')),
    deployment_mode   text NOT NULL DEFAULT '' CHECK (deployment_mode IN ('', 'docker_sidecar', 'kubernetes_sidecar', 'standalone')),
    capabilities      text[] NOT NULL DEFAULT '{}',
    -- Set by admins (token, PATCH); what target_agents selectors match.
    labels            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    last_seen_at      timestamptz,
    registered_at     timestamptz,
    -- Lower-case hex serial of the client certificate signed at registration.
    cert_serial       text,
    cert_expires_at   timestamptz,
    -- Configuration: the workspace version and checksum last pushed, and what
    -- the agent reported applying (ConfigStatus) and having on disk (health).
    desired_version   bigint NOT NULL DEFAULT 0,
    desired_checksum  text NOT NULL DEFAULT '',
    applied_version   bigint NOT NULL DEFAULT 0,
    apply_status      text NOT NULL DEFAULT '' CHECK (apply_status IN ('', 'pending', 'validating', 'applying', 'success', 'failed', 'rolled_back')),
    apply_error       text NOT NULL DEFAULT '',
    applied_checksum  text NOT NULL DEFAULT '',
    reported_checksum text NOT NULL DEFAULT '',
    drift             boolean NOT NULL DEFAULT false,
    -- Summary of the last HealthReport (nginx, system, alerts) and the agent's
    -- own description (version, commit, build date, uptime, features).
    health            jsonb,
    agent_info        jsonb,
    -- Watchdog policy sent to the agent in ConfigUpdate.agent_policy.
    auto_restart      boolean NOT NULL DEFAULT true,
    -- The replica holding the agent's stream and the stream's id; empty/null
    -- while no stream is open.
    connected_replica text NOT NULL DEFAULT '',
    stream_id         uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_workspace ON agents (workspace_id, created_at, id);
CREATE INDEX agents_labels ON agents USING gin (labels jsonb_path_ops);
CREATE INDEX agents_live ON agents (last_seen_at) WHERE state IN ('online', 'degraded');

-- Registration tokens: shown once, stored as SHA-256, single use.
CREATE TABLE agent_tokens (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id              uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    workspace_id          uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash            bytea NOT NULL UNIQUE,
    expires_at            timestamptz NOT NULL,
    used_at               timestamptz,
    revoked_at            timestamptz,
    created_by            uuid,
    created_by_api_key_id uuid,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_tokens_agent ON agent_tokens (agent_id);

-- Registration ACL of a workspace: hostname glob patterns (path.Match syntax).
-- No rows: every hostname may register; a matching deny always wins; with allow
-- rows, a hostname must match one of them.
CREATE TABLE registration_acls (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    action       text NOT NULL CHECK (action IN ('allow', 'deny')),
    position     integer NOT NULL CHECK (position >= 0),
    pattern      text NOT NULL CHECK (char_length(pattern) BETWEEN 1 AND 253),
    PRIMARY KEY (workspace_id, action, position)
);

-- Commands sent to agents (reload, restart, stop, get_status, validate_config)
-- and their results.
CREATE TABLE agent_commands (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id              uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    workspace_id          uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind                  text NOT NULL CHECK (kind IN ('reload', 'restart', 'stop', 'get_status', 'validate_config')),
    params                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    status                text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'succeeded', 'failed')),
    message               text NOT NULL DEFAULT '',
    output                text NOT NULL DEFAULT '',
    created_by            uuid,
    created_by_api_key_id uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    sent_at               timestamptz,
    finished_at           timestamptz
);
CREATE INDEX agent_commands_agent ON agent_commands (agent_id, created_at DESC);
CREATE INDEX agent_commands_open ON agent_commands (agent_id) WHERE status IN ('pending', 'sent');

-- +goose Down
DROP TABLE agent_commands;
DROP TABLE registration_acls;
DROP TABLE agent_tokens;
DROP TABLE agents;

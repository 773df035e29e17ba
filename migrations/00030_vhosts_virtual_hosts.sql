-- +goose Up
-- Virtual hosts and TCP/UDP streams of a workspace (modules/vhosts), and the
-- workspace's versioned configuration.
--
-- Ordered lists that are always replaced as a whole (locations, access lists,
-- custom directives, agent targeting) live in jsonb columns. References to
-- upstreams and certificates (also inside locations) are checked by the service
-- under the workspace's row lock rather than by foreign keys, so that deleting a
-- workspace cascades in any order and a deleted upstream or certificate that is
-- still used is reported by name (409) instead of as a constraint violation.
CREATE TABLE virtual_hosts (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id          uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name                  text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    name_key              text GENERATED ALWAYS AS (lower(name)) STORED,
    server_name           text NOT NULL,
    listen_port           integer NOT NULL CHECK (listen_port BETWEEN 1 AND 65535),
    ssl_enabled           boolean NOT NULL DEFAULT false,
    ssl_certificate_id    uuid,
    http2_enabled         boolean NOT NULL DEFAULT false,
    redirect_https        boolean NOT NULL DEFAULT false,
    redirect_to           text NOT NULL DEFAULT '',
    redirect_code         integer NOT NULL DEFAULT 0 CHECK (redirect_code IN (0, 301, 302, 307, 308)),
    locations             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(locations) = 'array'),
    -- Basic-auth users are stored with bcrypt hashes, never with passwords.
    access_list           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(access_list) = 'object'),
    rate_limit_rps        integer NOT NULL DEFAULT 0 CHECK (rate_limit_rps BETWEEN 0 AND 100000),
    rate_limit_burst      integer NOT NULL DEFAULT 0 CHECK (rate_limit_burst BETWEEN 0 AND 100000),
    client_max_body_size  text NOT NULL DEFAULT '',
    proxy_connect_timeout integer NOT NULL DEFAULT 0 CHECK (proxy_connect_timeout BETWEEN 0 AND 3600),
    proxy_read_timeout    integer NOT NULL DEFAULT 0 CHECK (proxy_read_timeout BETWEEN 0 AND 3600),
    proxy_send_timeout    integer NOT NULL DEFAULT 0 CHECK (proxy_send_timeout BETWEEN 0 AND 3600),
    custom_directives     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom_directives) = 'object'),
    target_agents         jsonb NOT NULL DEFAULT '{"type": "all"}' CHECK (jsonb_typeof(target_agents) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Deferrable so that a rollback can swap names between hosts in one
    -- transaction.
    CONSTRAINT virtual_hosts_workspace_name_key UNIQUE (workspace_id, name_key) DEFERRABLE INITIALLY IMMEDIATE
);
CREATE INDEX virtual_hosts_workspace ON virtual_hosts (workspace_id, created_at, id);
CREATE INDEX virtual_hosts_certificate ON virtual_hosts (ssl_certificate_id) WHERE ssl_certificate_id IS NOT NULL;
CREATE INDEX virtual_hosts_locations ON virtual_hosts USING gin (locations jsonb_path_ops);

CREATE TABLE streams (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id          uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name                  text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    name_key              text GENERATED ALWAYS AS (lower(name)) STORED,
    listen_port           integer NOT NULL CHECK (listen_port BETWEEN 1 AND 65535),
    protocol              text NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    upstream_id           uuid NOT NULL,
    ssl_enabled           boolean NOT NULL DEFAULT false,
    ssl_certificate_id    uuid,
    proxy_protocol        boolean NOT NULL DEFAULT false,
    accept_proxy_protocol boolean NOT NULL DEFAULT false,
    -- NULL keeps nginx's default.
    connect_timeout       integer CHECK (connect_timeout BETWEEN 1 AND 3600),
    timeout               integer CHECK (timeout BETWEEN 1 AND 86400),
    bandwidth_limit       text NOT NULL DEFAULT '',
    target_agents         jsonb NOT NULL DEFAULT '{"type": "all"}' CHECK (jsonb_typeof(target_agents) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT streams_workspace_name_key UNIQUE (workspace_id, name_key) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT streams_udp_plain CHECK (protocol = 'tcp' OR (NOT ssl_enabled AND NOT accept_proxy_protocol))
);
CREATE INDEX streams_workspace ON streams (workspace_id, created_at, id);
CREATE INDEX streams_upstream ON streams (upstream_id);
CREATE INDEX streams_certificate ON streams (ssl_certificate_id) WHERE ssl_certificate_id IS NOT NULL;

-- The configuration version of a workspace: bumped by every change to its
-- upstreams, certificates, virtual hosts and streams, in the change's
-- transaction, with the snapshot of everything the agents are given.
ALTER TABLE workspaces ADD COLUMN config_version bigint NOT NULL DEFAULT 0;

CREATE TABLE config_versions (
    workspace_id     uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    version          bigint NOT NULL CHECK (version > 0),
    actor_user_id    uuid,
    actor_api_key_id uuid,
    actor_email      text NOT NULL DEFAULT '',
    summary          text NOT NULL DEFAULT '',
    snapshot         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, version)
);

-- +goose Down
DROP TABLE config_versions;
ALTER TABLE workspaces DROP COLUMN config_version;
DROP TABLE streams;
DROP TABLE virtual_hosts;

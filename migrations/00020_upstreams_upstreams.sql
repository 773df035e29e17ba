-- +goose Up
-- Upstreams of a workspace (modules/upstreams). Servers are an ordered list that
-- is always replaced as a whole, so they live in one jsonb array. Names are
-- unique per workspace ignoring case; the constraint is deferrable so that a
-- rollback to an earlier snapshot can swap names between upstreams inside one
-- transaction (Service.ReplaceAll defers it and re-checks before returning).
CREATE TABLE upstreams (
    id                                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id                      uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name                              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    name_key                          text GENERATED ALWAYS AS (lower(name)) STORED,
    algorithm                         text NOT NULL DEFAULT 'round_robin'
        CHECK (algorithm IN ('round_robin', 'least_connections', 'ip_hash', 'weighted_round_robin')),
    servers                           jsonb NOT NULL CHECK (jsonb_typeof(servers) = 'array' AND jsonb_array_length(servers) BETWEEN 1 AND 1000),
    keepalive_connections             integer NOT NULL DEFAULT 0 CHECK (keepalive_connections BETWEEN 0 AND 10000),
    health_check_enabled              boolean NOT NULL DEFAULT false,
    health_check_path                 text NOT NULL DEFAULT '/' CHECK (char_length(health_check_path) BETWEEN 1 AND 1024),
    health_check_interval             integer NOT NULL DEFAULT 10 CHECK (health_check_interval BETWEEN 1 AND 3600),
    health_check_timeout              integer NOT NULL DEFAULT 5 CHECK (health_check_timeout BETWEEN 1 AND 300),
    health_check_healthy_threshold    integer NOT NULL DEFAULT 2 CHECK (health_check_healthy_threshold BETWEEN 1 AND 100),
    health_check_unhealthy_threshold  integer NOT NULL DEFAULT 3 CHECK (health_check_unhealthy_threshold BETWEEN 1 AND 100),
    created_at                        timestamptz NOT NULL DEFAULT now(),
    updated_at                        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT upstreams_workspace_name_key UNIQUE (workspace_id, name_key) DEFERRABLE INITIALLY IMMEDIATE
);

-- +goose Down
DROP TABLE upstreams;

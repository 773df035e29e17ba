-- +goose Up
-- Access logs: one row per request (http) or session (tcp/udp stream) an
-- agent's nginx logged, range-partitioned by day on ts. The logs module
-- creates each day's partition ahead (River job logs.partitions) and on demand
-- while ingesting; rows of a day without a partition (a clock far off, or a
-- partition being created) land in access_logs_default and are moved into
-- their day's partition when it is created, so no row is lost. Retention
-- drops whole partitions (logs.retention) and deletes the older rows of
-- workspaces whose own retention is shorter (logs_settings).
--
-- No foreign keys: a partitioned table's foreign key would make deleting a
-- workspace or an agent scan every partition; rows of deleted workspaces are
-- unreachable through the API and expire with their partition.
CREATE TABLE access_logs (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    agent_id uuid NOT NULL,
    virtual_host_id uuid,
    kind text NOT NULL DEFAULT 'http',
    ts timestamptz NOT NULL,
    remote_addr text NOT NULL DEFAULT '',
    method text NOT NULL DEFAULT '',
    uri text NOT NULL DEFAULT '',
    protocol text NOT NULL DEFAULT '',
    host text NOT NULL DEFAULT '',
    status integer NOT NULL DEFAULT 0,
    body_bytes_sent bigint NOT NULL DEFAULT 0,
    request_time_ms double precision NOT NULL DEFAULT 0,
    user_agent text NOT NULL DEFAULT '',
    referer text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    request_length bigint NOT NULL DEFAULT 0,
    bytes_sent bigint NOT NULL DEFAULT 0,
    upstream_addr text NOT NULL DEFAULT '',
    upstream_response_time_ms double precision NOT NULL DEFAULT 0,
    scheme text NOT NULL DEFAULT '',
    server_port integer NOT NULL DEFAULT 0,
    stream_id text NOT NULL DEFAULT ''
) PARTITION BY RANGE (ts);

CREATE TABLE access_logs_default PARTITION OF access_logs DEFAULT;

-- Newest first within a workspace (the API's order and keyset), and per agent.
CREATE INDEX access_logs_workspace_ts ON access_logs (workspace_id, ts DESC, id DESC);
CREATE INDEX access_logs_agent_ts ON access_logs (agent_id, ts DESC);

-- nginx error-log lines; a plain table: far fewer lines than requests,
-- trimmed by the retention job with one DELETE on ts.
CREATE TABLE error_logs (
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    workspace_id uuid NOT NULL,
    agent_id uuid NOT NULL,
    ts timestamptz NOT NULL,
    level text NOT NULL DEFAULT '',
    message text NOT NULL DEFAULT '',
    fields jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX error_logs_agent_ts ON error_logs (agent_id, ts DESC, id DESC);
CREATE INDEX error_logs_ts ON error_logs (ts);

-- The batches stored, so a redelivered batch is acknowledged and not stored
-- twice: the row is inserted in the transaction that copies the batch's rows.
-- kind is "access" or "error" (the agent numbers the two spools apart).
CREATE TABLE log_batches (
    agent_id uuid NOT NULL,
    kind text NOT NULL,
    batch_id text NOT NULL,
    lines integer NOT NULL DEFAULT 0,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, kind, batch_id)
);
CREATE INDEX log_batches_received_at ON log_batches (received_at);

-- A workspace's own retention, shorter than logs.retention.
CREATE TABLE logs_settings (
    workspace_id uuid PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    retention_days integer NOT NULL CHECK (retention_days > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE logs_settings;
DROP TABLE log_batches;
DROP TABLE error_logs;
DROP TABLE access_logs;

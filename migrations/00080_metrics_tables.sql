-- +goose Up
-- Traffic rollups: the access-log entries of each (workspace, agent, virtual
-- host or stream, host name) counted per minute and per hour. The metrics
-- module upserts both in the transaction that stores an access-log batch
-- (after the batch id is recorded in log_batches), so a batch is counted once
-- whatever the number of deliveries. virtual_host_id is the nil UUID when the
-- agent did not name one; host is '' when it did not send one, or when a
-- batch carried more distinct host names than the module keeps apart.
--
-- latency_counts are the entries per fixed latency bucket (the module's
-- LatencyBucketsMs: upper bounds in milliseconds, the last bucket unbounded).
--
-- No foreign keys, as for access_logs: rows of deleted workspaces and agents
-- are unreachable through the API and expire with their resolution's
-- retention (metrics.retention_minute, metrics.retention_hour).
CREATE TABLE traffic_minute (
    workspace_id uuid NOT NULL,
    agent_id uuid NOT NULL,
    virtual_host_id uuid NOT NULL,
    host text NOT NULL,
    bucket timestamptz NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    status_1xx bigint NOT NULL DEFAULT 0,
    status_2xx bigint NOT NULL DEFAULT 0,
    status_3xx bigint NOT NULL DEFAULT 0,
    status_4xx bigint NOT NULL DEFAULT 0,
    status_5xx bigint NOT NULL DEFAULT 0,
    in_bytes bigint NOT NULL DEFAULT 0,
    out_bytes bigint NOT NULL DEFAULT 0,
    latency_counts bigint[] NOT NULL,
    PRIMARY KEY (workspace_id, bucket, agent_id, virtual_host_id, host)
);
CREATE INDEX traffic_minute_agent ON traffic_minute (agent_id, bucket);
CREATE INDEX traffic_minute_bucket ON traffic_minute (bucket);

CREATE TABLE traffic_hour (LIKE traffic_minute INCLUDING ALL);

-- metrics_add_counts adds two count arrays element by element (the shorter
-- one is padded with zeros).
-- +goose StatementBegin
CREATE FUNCTION metrics_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;
-- +goose StatementEnd

-- metrics_sum_counts is the element-wise sum of count arrays.
CREATE AGGREGATE metrics_sum_counts(bigint[]) (SFUNC = metrics_add_counts, STYPE = bigint[], PARALLEL = SAFE);

-- Host metrics: one row per MetricsBatch an agent sends (every 5 s): the
-- scalar gauges and counters as columns, the per-mode CPU seconds, per file
-- system and per interface figures as JSON. nginx_* are null when the agent
-- could not read nginx's stub_status. A batch sent twice (same agent and
-- timestamp) is stored once. Trimmed by metrics.retention_minute.
CREATE TABLE host_metrics (
    agent_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    ts timestamptz NOT NULL,
    cpu_percent double precision NOT NULL DEFAULT 0,
    load_average_1m double precision NOT NULL DEFAULT 0,
    load_average_5m double precision NOT NULL DEFAULT 0,
    load_average_15m double precision NOT NULL DEFAULT 0,
    memory_used_bytes bigint NOT NULL DEFAULT 0,
    memory_total_bytes bigint NOT NULL DEFAULT 0,
    memory_available_bytes bigint NOT NULL DEFAULT 0,
    swap_used_bytes bigint NOT NULL DEFAULT 0,
    swap_total_bytes bigint NOT NULL DEFAULT 0,
    disk_used_bytes bigint NOT NULL DEFAULT 0,
    disk_total_bytes bigint NOT NULL DEFAULT 0,
    net_rx_bytes bigint NOT NULL DEFAULT 0,
    net_tx_bytes bigint NOT NULL DEFAULT 0,
    nginx_active_connections bigint,
    nginx_requests_total bigint,
    nginx_requests_per_second double precision,
    cpu_seconds jsonb NOT NULL DEFAULT '{}',
    filesystems jsonb NOT NULL DEFAULT '[]',
    interfaces jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (agent_id, ts)
);
CREATE INDEX host_metrics_workspace_ts ON host_metrics (workspace_id, ts);
CREATE INDEX host_metrics_ts ON host_metrics (ts);

-- +goose Down
DROP TABLE host_metrics;
DROP AGGREGATE metrics_sum_counts(bigint[]);
DROP FUNCTION metrics_add_counts(bigint[], bigint[]);
DROP TABLE traffic_hour;
DROP TABLE traffic_minute;

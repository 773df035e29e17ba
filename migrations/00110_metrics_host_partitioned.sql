-- +goose Up
-- Host metrics as a time series: host_metrics becomes range-partitioned by
-- day on ts (the metrics module creates each day's partition ahead, job
-- metrics.partitions, and on demand while storing; rows of a day without a
-- partition land in host_metrics_default and move into their day's partition
-- when it is created). Retention drops whole partitions
-- (metrics.retention_minute).
--
-- host_metrics_hour rolls the samples up per agent and hour, updated in the
-- statement that stores a sample (exactly once: a sample sent again is not
-- stored and not counted): sums and maxima from which the hour's means are
-- computed. Long chart ranges read it; it is kept for
-- metrics.retention_hour.
ALTER TABLE host_metrics RENAME TO host_metrics_unpartitioned;
ALTER INDEX host_metrics_workspace_ts RENAME TO host_metrics_unpartitioned_workspace_ts;
ALTER INDEX host_metrics_ts RENAME TO host_metrics_unpartitioned_ts;
ALTER TABLE host_metrics_unpartitioned RENAME CONSTRAINT host_metrics_pkey TO host_metrics_unpartitioned_pkey;

CREATE TABLE host_metrics (LIKE host_metrics_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (ts);
ALTER TABLE host_metrics ADD PRIMARY KEY (agent_id, ts);
CREATE INDEX host_metrics_workspace_ts ON host_metrics (workspace_id, ts);
CREATE INDEX host_metrics_ts ON host_metrics (ts);
CREATE TABLE host_metrics_default PARTITION OF host_metrics DEFAULT;

CREATE TABLE host_metrics_hour (
    agent_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    samples bigint NOT NULL DEFAULT 0,
    cpu_percent_sum double precision NOT NULL DEFAULT 0,
    cpu_percent_max double precision NOT NULL DEFAULT 0,
    load_average_1m_sum double precision NOT NULL DEFAULT 0,
    load_average_5m_sum double precision NOT NULL DEFAULT 0,
    load_average_15m_sum double precision NOT NULL DEFAULT 0,
    memory_used_bytes_sum double precision NOT NULL DEFAULT 0,
    memory_total_bytes_sum double precision NOT NULL DEFAULT 0,
    disk_used_bytes_sum double precision NOT NULL DEFAULT 0,
    disk_total_bytes_sum double precision NOT NULL DEFAULT 0,
    nginx_samples bigint NOT NULL DEFAULT 0,
    nginx_active_connections_max bigint,
    PRIMARY KEY (agent_id, bucket)
);
CREATE INDEX host_metrics_hour_bucket ON host_metrics_hour (bucket);

INSERT INTO host_metrics SELECT * FROM host_metrics_unpartitioned;
INSERT INTO host_metrics_hour (agent_id, workspace_id, bucket, samples, cpu_percent_sum, cpu_percent_max,
        load_average_1m_sum, load_average_5m_sum, load_average_15m_sum, memory_used_bytes_sum, memory_total_bytes_sum,
        disk_used_bytes_sum, disk_total_bytes_sum, nginx_samples, nginx_active_connections_max)
    SELECT agent_id, min(workspace_id::text)::uuid, date_bin('1 hour', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00'), count(*), sum(cpu_percent), max(cpu_percent),
        sum(load_average_1m), sum(load_average_5m), sum(load_average_15m), sum(memory_used_bytes), sum(memory_total_bytes),
        sum(disk_used_bytes), sum(disk_total_bytes), count(nginx_active_connections), max(nginx_active_connections)
    FROM host_metrics_unpartitioned GROUP BY agent_id, date_bin('1 hour', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00');
DROP TABLE host_metrics_unpartitioned;

-- +goose Down
DROP TABLE host_metrics_hour;
CREATE TABLE host_metrics_unpartitioned (LIKE host_metrics INCLUDING DEFAULTS);
INSERT INTO host_metrics_unpartitioned SELECT * FROM host_metrics;
DROP TABLE host_metrics;
ALTER TABLE host_metrics_unpartitioned RENAME TO host_metrics;
ALTER TABLE host_metrics ADD PRIMARY KEY (agent_id, ts);
CREATE INDEX host_metrics_workspace_ts ON host_metrics (workspace_id, ts);
CREATE INDEX host_metrics_ts ON host_metrics (ts);

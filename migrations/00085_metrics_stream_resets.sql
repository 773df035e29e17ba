-- +goose Up
-- Stream counter resets: the moment an operator last reset a stream's
-- traffic counters (POST /v1/streams/{id}/reset-counters). The stream
-- metrics endpoint counts from there on; the rollups themselves are left
-- untouched, so the workspace's totals keep the stream's traffic. A reset
-- replaces the previous one. No foreign key (the streams table is the vhosts
-- module's): the row of a deleted stream (one small row) is unreachable
-- through the API.
CREATE TABLE stream_counter_resets (
    stream_id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    reset_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE stream_counter_resets;

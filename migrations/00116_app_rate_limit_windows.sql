-- +goose Up
-- The API rate limit's fixed windows, summed over every replica: each replica
-- counts requests per credential in memory and adds its counts here about
-- once a second, reading back the cluster's totals. The counts matter for a
-- minute only, so the table is unlogged (a crash of PostgreSQL empties it)
-- and windows older than two minutes are deleted.
CREATE UNLOGGED TABLE rate_limit_windows (
    credential   text NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (credential, window_start)
);

-- +goose Down
DROP TABLE rate_limit_windows;

-- +goose Up
-- The API rate limit's fixed windows, shared by every replica: a replica
-- claims a credential's requests from its row in small batches (count is
-- what the replicas claimed in the window, never more than the limit;
-- last_grant what the latest claim got) and admits them from memory. The
-- counts matter for a minute only, so the table is unlogged (a crash of
-- PostgreSQL empties it) and windows older than two minutes are deleted.
CREATE UNLOGGED TABLE rate_limit_windows (
    credential   text NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL,
    last_grant   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (credential, window_start)
);

-- +goose Down
DROP TABLE rate_limit_windows;

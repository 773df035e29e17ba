-- +goose Up
-- A virtual host may be the default server of its listen port: it answers
-- requests whose Host matches no server name on that port. At most one host
-- per port and workspace is; the service checks it under the workspace's row
-- lock (a unique index could not be deferred, and a rollback may move the
-- flag from one host to another).
ALTER TABLE virtual_hosts ADD COLUMN default_server boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE virtual_hosts DROP COLUMN default_server;

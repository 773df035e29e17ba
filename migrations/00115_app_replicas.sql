-- +goose Up
-- Every running master process (replica) registers itself here at start and
-- refreshes last_seen_at every few seconds; a clean shutdown sets stopped_at.
-- A row not refreshed for 30 s reads as down; rows gone for a day are pruned.
-- id is also the replica's River client id, so river_leader.leader_id names
-- the replica that runs the periodic work.
CREATE TABLE replicas (
    id               text PRIMARY KEY,
    hostname         text NOT NULL,
    version          text NOT NULL DEFAULT '',
    commit           text NOT NULL DEFAULT '',
    grpc_addr        text NOT NULL DEFAULT '',
    http_addr        text NOT NULL DEFAULT '',
    connected_agents integer NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    stopped_at       timestamptz
);

-- +goose Down
DROP TABLE replicas;

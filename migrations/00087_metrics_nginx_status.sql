-- +goose Up
-- The rest of nginx's stub_status in each host sample: the connection
-- counters (accepts, handled) and the connections reading, writing and
-- waiting. Null in samples of agents that do not send them.
ALTER TABLE host_metrics
    ADD COLUMN nginx_accepts bigint,
    ADD COLUMN nginx_handled bigint,
    ADD COLUMN nginx_reading bigint,
    ADD COLUMN nginx_writing bigint,
    ADD COLUMN nginx_waiting bigint;

-- +goose Down
ALTER TABLE host_metrics
    DROP COLUMN nginx_accepts,
    DROP COLUMN nginx_handled,
    DROP COLUMN nginx_reading,
    DROP COLUMN nginx_writing,
    DROP COLUMN nginx_waiting;

-- +goose Up
CREATE TABLE casbin_rule (
    id    bigserial PRIMARY KEY,
    ptype varchar(100) NOT NULL DEFAULT '',
    v0    varchar(100) NOT NULL DEFAULT '',
    v1    varchar(100) NOT NULL DEFAULT '',
    v2    varchar(100) NOT NULL DEFAULT '',
    v3    varchar(100) NOT NULL DEFAULT '',
    v4    varchar(100) NOT NULL DEFAULT '',
    v5    varchar(100) NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX idx_casbin_rule ON casbin_rule (ptype, v0, v1, v2, v3, v4, v5);

CREATE TABLE audit_log (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid,
    workspace_id     uuid,
    actor_user_id    uuid,
    actor_api_key_id uuid,
    actor_email      text NOT NULL DEFAULT '',
    ip               text NOT NULL DEFAULT '',
    request_id       text NOT NULL DEFAULT '',
    action           text NOT NULL,
    object_type      text NOT NULL,
    object_id        text NOT NULL DEFAULT '',
    before           jsonb,
    after            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_org_created ON audit_log (organization_id, created_at DESC, id DESC);
CREATE INDEX audit_log_workspace_created ON audit_log (workspace_id, created_at DESC);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE casbin_rule;

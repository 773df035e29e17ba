-- +goose Up
-- Changes to the rows the replicas cache (credentials, memberships, the scope
-- of organizations and workspaces) are announced on the nxmesh_invalidate
-- channel from inside the writing transaction: PostgreSQL delivers the
-- notification when the transaction commits, to every replica's listener
-- (app/invalidate.go). Tags per row: see app.InvalidationChannel.
-- Updates that change only last_used_at or updated_at announce nothing.
-- +goose StatementBegin
CREATE FUNCTION nxmesh_invalidate_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'UPDATE' AND (to_jsonb(OLD) - 'last_used_at' - 'updated_at') = (to_jsonb(NEW) - 'last_used_at' - 'updated_at') THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    CASE TG_TABLE_NAME
        WHEN 'users' THEN PERFORM pg_notify('nxmesh_invalidate', 'user:' || r.id);
        WHEN 'auth_sessions' THEN PERFORM pg_notify('nxmesh_invalidate', 'session:' || r.id);
        WHEN 'api_keys' THEN PERFORM pg_notify('nxmesh_invalidate', 'apikey:' || r.id);
        WHEN 'memberships' THEN
            PERFORM pg_notify('nxmesh_invalidate', 'member:' || r.organization_id || ':' || r.user_id);
            IF TG_OP = 'UPDATE' THEN
                PERFORM pg_notify('nxmesh_invalidate', 'member:' || OLD.organization_id || ':' || OLD.user_id);
            END IF;
        WHEN 'organizations' THEN PERFORM pg_notify('nxmesh_invalidate', 'org:' || r.id);
        WHEN 'workspaces' THEN
            PERFORM pg_notify('nxmesh_invalidate', 'ws:' || r.id);
            PERFORM pg_notify('nxmesh_invalidate', 'wsorg:' || r.organization_id);
            IF TG_OP = 'UPDATE' THEN
                PERFORM pg_notify('nxmesh_invalidate', 'wsorg:' || OLD.organization_id);
            END IF;
    END CASE;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION nxmesh_invalidate_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nxmesh_invalidate', '*');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER users_invalidate AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION nxmesh_invalidate_row();
CREATE TRIGGER auth_sessions_invalidate AFTER UPDATE OR DELETE ON auth_sessions
    FOR EACH ROW EXECUTE FUNCTION nxmesh_invalidate_row();
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION nxmesh_invalidate_row();
CREATE TRIGGER memberships_invalidate AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION nxmesh_invalidate_row();
CREATE TRIGGER organizations_invalidate AFTER UPDATE OR DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION nxmesh_invalidate_row();
CREATE TRIGGER workspaces_invalidate AFTER INSERT OR UPDATE OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION nxmesh_invalidate_row();

CREATE TRIGGER users_invalidate_all AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION nxmesh_invalidate_all();
CREATE TRIGGER auth_sessions_invalidate_all AFTER TRUNCATE ON auth_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION nxmesh_invalidate_all();
CREATE TRIGGER api_keys_invalidate_all AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION nxmesh_invalidate_all();
CREATE TRIGGER memberships_invalidate_all AFTER TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION nxmesh_invalidate_all();
CREATE TRIGGER organizations_invalidate_all AFTER TRUNCATE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION nxmesh_invalidate_all();
CREATE TRIGGER workspaces_invalidate_all AFTER TRUNCATE ON workspaces
    FOR EACH STATEMENT EXECUTE FUNCTION nxmesh_invalidate_all();

-- +goose Down
DROP TRIGGER workspaces_invalidate_all ON workspaces;
DROP TRIGGER organizations_invalidate_all ON organizations;
DROP TRIGGER memberships_invalidate_all ON memberships;
DROP TRIGGER api_keys_invalidate_all ON api_keys;
DROP TRIGGER auth_sessions_invalidate_all ON auth_sessions;
DROP TRIGGER users_invalidate_all ON users;
DROP TRIGGER workspaces_invalidate ON workspaces;
DROP TRIGGER organizations_invalidate ON organizations;
DROP TRIGGER memberships_invalidate ON memberships;
DROP TRIGGER api_keys_invalidate ON api_keys;
DROP TRIGGER auth_sessions_invalidate ON auth_sessions;
DROP TRIGGER users_invalidate ON users;
DROP FUNCTION nxmesh_invalidate_all();
DROP FUNCTION nxmesh_invalidate_row();

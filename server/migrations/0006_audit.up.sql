-- Audit trail: one row per mutating API call. Append-only: UPDATE, DELETE and TRUNCATE are
-- rejected by triggers so the trail cannot be rewritten through the application's role.
CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY,
    actor         TEXT NOT NULL,
    actor_type    TEXT NOT NULL DEFAULT 'api_key',
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL DEFAULT '',
    details       JSONB NOT NULL DEFAULT '{}',
    request_id    TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_audit_events_created_at_id ON audit_events (created_at DESC, id DESC);
CREATE INDEX idx_audit_events_actor ON audit_events (actor, created_at DESC);
CREATE INDEX idx_audit_events_action ON audit_events (action, created_at DESC);
CREATE INDEX idx_audit_events_resource ON audit_events (resource_type, resource_id, created_at DESC);

CREATE FUNCTION audit_events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% rejected)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_reject_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_reject_change();

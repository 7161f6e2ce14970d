-- Reverses 0006_audit.
DROP TABLE IF EXISTS audit_events;
DROP FUNCTION IF EXISTS audit_events_reject_change();

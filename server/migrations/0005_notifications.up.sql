-- Notification channels and the events sent through them, with retry and dead-letter.
CREATE TABLE notification_channels (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL CHECK (type IN ('webhook', 'email', 'log')),
    config     JSONB NOT NULL DEFAULT '{}',
    enabled    BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT notification_channels_name_key UNIQUE (name)
);

CREATE TABLE notification_events (
    id             TEXT PRIMARY KEY,
    type           TEXT NOT NULL,
    certificate_id TEXT,
    -- NULL once the channel is deleted: the sender then fails the row rather than wedging it.
    channel_id     TEXT,
    channel        TEXT NOT NULL DEFAULT 'log',
    recipient      TEXT NOT NULL DEFAULT '',
    subject        TEXT NOT NULL DEFAULT '',
    message        TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'sent', 'failed', 'dead', 'read')),
    retry_count    INTEGER NOT NULL DEFAULT 0,
    next_retry_at  TIMESTAMPTZ,
    last_error     TEXT,
    sent_at        TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT notification_events_certificate_id_fkey
        FOREIGN KEY (certificate_id) REFERENCES managed_certificates (id) ON DELETE SET NULL,
    CONSTRAINT notification_events_channel_id_fkey
        FOREIGN KEY (channel_id) REFERENCES notification_channels (id) ON DELETE SET NULL
);
-- The retry sweep reads only failed rows that are due (contract §2).
CREATE INDEX idx_notification_events_retry_sweep ON notification_events (next_retry_at)
    WHERE status = 'failed' AND next_retry_at IS NOT NULL;
-- The processor reads pending rows oldest first; lists filter by status.
CREATE INDEX idx_notification_events_status_created ON notification_events (status, created_at);
CREATE INDEX idx_notification_events_certificate_id ON notification_events (certificate_id);

-- Reverses 0005_notifications.
DROP TABLE IF EXISTS notification_events;
DROP TABLE IF EXISTS notification_channels;

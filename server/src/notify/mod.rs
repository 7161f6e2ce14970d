//! Notifications (contract §7): events in `notification_events`, one row per enabled channel
//! of `notification_channels`, delivered by webhook (HTTP POST JSON), email (SMTP) or log.
//!
//! Flow: the renewal check (expiry thresholds) and issuance (success / failure) call
//! [`enqueue`] inside their own transactions. The notification-process loop sends `pending`
//! rows; the retry loop resends `failed` rows whose `next_retry_at` is due. Both run only on
//! the scheduler leader, because a send is an outside side effect.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Event type: a certificate was issued or renewed.
pub const EVENT_ISSUED: &str = "certificate_issued";
/// Event type: issuance failed for good (no attempts left).
pub const EVENT_ISSUANCE_FAILED: &str = "issuance_failed";
/// Event type: a certificate crossed one of its policy's alert thresholds.
pub const EVENT_EXPIRING: &str = "certificate_expiring";

/// Creates one `pending` event per enabled channel, on the caller's transaction. Returns the
/// number of rows created (0 when no channel is enabled).
pub async fn enqueue(
    conn: &mut PgConnection,
    event_type: &str,
    certificate_id: Option<&str>,
    subject: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO notification_events (id, type, certificate_id, channel_id, channel, recipient, subject, message, \
                 status, created_at, updated_at) \
         SELECT 'ne-' || replace(gen_random_uuid()::text, '-', ''), $1, $2, ch.id, ch.type, \
                COALESCE(ch.config->>'to', ch.config->>'url', ''), $3, $4, 'pending', $5, $5 \
           FROM notification_channels ch WHERE ch.enabled",
    )
    .bind(event_type)
    .bind(certificate_id)
    .bind(subject)
    .bind(message)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

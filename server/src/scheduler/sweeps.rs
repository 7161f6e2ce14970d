//! Set-based sweeps: renewal check, short-lived expiry, ACME garbage collection.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What one renewal check did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RenewalCheck {
    /// Renewal jobs created.
    pub jobs_created: u64,
    /// Certificates marked `Expiring` (inside the window, auto-renew off).
    pub marked_expiring: u64,
    /// Expiry-threshold notification rows created.
    pub notifications: u64,
}

/// Renewal check (leader-only, hourly): for certificates inside their policy's renewal window,
/// creates one `Renewal` job each (auto-renew policies; the one-open-job index plus
/// `ON CONFLICT DO NOTHING` make a duplicate impossible) and sets them `RenewalInProgress`;
/// marks the rest `Expiring`; queues one expiry warning per crossed alert threshold, channel
/// and expiry date (only the smallest threshold crossed, so a certificate found at 5 days
/// left gets the 7-day warning, not 30, 14 and 7 at once).
pub async fn renewal_check(pool: &PgPool, now: DateTime<Utc>) -> Result<RenewalCheck, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // `max_attempts` = the policy's retries plus the first attempt.
    let jobs_created = sqlx::query(
        "WITH due AS ( \
            SELECT c.id, p.max_retries FROM managed_certificates c \
              JOIN renewal_policies p ON p.id = c.renewal_policy_id \
             WHERE c.status IN ('Active', 'Expiring') AND p.auto_renew AND c.expires_at IS NOT NULL \
               AND c.expires_at <= $1 + make_interval(days => p.renewal_window_days) \
             FOR UPDATE OF c SKIP LOCKED), \
         ins AS ( \
            INSERT INTO jobs (id, type, certificate_id, status, max_attempts, scheduled_at, created_at, updated_at) \
            SELECT 'job-' || replace(gen_random_uuid()::text, '-', ''), 'Renewal', due.id, 'Pending', \
                   due.max_retries + 1, $1, $1, $1 FROM due \
            ON CONFLICT DO NOTHING \
            RETURNING certificate_id) \
         UPDATE managed_certificates c SET status = 'RenewalInProgress', updated_at = $1 FROM ins WHERE c.id = ins.certificate_id",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let marked_expiring = sqlx::query(
        "UPDATE managed_certificates c SET status = 'Expiring', updated_at = $1 \
           FROM renewal_policies p \
          WHERE p.id = c.renewal_policy_id AND c.status = 'Active' AND c.expires_at IS NOT NULL \
            AND c.expires_at <= $1 + make_interval(days => p.renewal_window_days)",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let notifications = sqlx::query(
        "WITH crossed AS ( \
            SELECT c.id, c.common_name, c.expires_at, \
                   (SELECT min(t) FROM unnest(p.alert_thresholds_days) t \
                     WHERE c.expires_at <= $1 + make_interval(days => t)) AS threshold \
              FROM managed_certificates c JOIN renewal_policies p ON p.id = c.renewal_policy_id \
             WHERE c.status IN ('Active', 'Expiring', 'RenewalInProgress', 'Failed') AND c.expires_at IS NOT NULL \
               AND c.expires_at <= $1 + make_interval(days => \
                   (SELECT COALESCE(max(t), -1) FROM unnest(p.alert_thresholds_days) t))), \
         msg AS ( \
            SELECT id, common_name, expires_at, threshold, \
                   'Certificate ' || common_name || ' expires within ' || threshold || ' days (on ' || \
                   to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC)' AS subject \
              FROM crossed WHERE threshold IS NOT NULL) \
         INSERT INTO notification_events (id, type, certificate_id, channel_id, channel, recipient, subject, message, \
                 status, created_at, updated_at) \
         SELECT 'ne-' || replace(gen_random_uuid()::text, '-', ''), 'certificate_expiring', msg.id, ch.id, ch.type, \
                COALESCE(ch.config->>'to', ch.config->>'url', ''), msg.subject, \
                msg.subject || '. Certificate id: ' || msg.id || '.', 'pending', $1, $1 \
           FROM msg CROSS JOIN notification_channels ch \
          WHERE ch.enabled AND NOT EXISTS ( \
                SELECT 1 FROM notification_events e WHERE e.certificate_id = msg.id \
                   AND e.type = 'certificate_expiring' AND e.channel_id = ch.id AND e.subject = msg.subject)",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(RenewalCheck { jobs_created, marked_expiring, notifications })
}

/// Short-lived expiry (anywhere, idempotent): certificates past `expires_at` become `Expired`.
/// Renewals in flight are left alone — their job decides the outcome.
pub async fn expire_short_lived(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE managed_certificates SET status = 'Expired', updated_at = $1 \
          WHERE status IN ('Active', 'Expiring', 'Failed') AND expires_at < $1",
    )
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected())
}

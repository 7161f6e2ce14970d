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
    let event = NewEvent {
        certificate_id: certificate_id.map(str::to_owned),
        subject: subject.into(),
        message: message.into(),
    };
    enqueue_many(conn, event_type, std::slice::from_ref(&event), now).await
}

/// One event for [`enqueue_many`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The certificate it is about.
    pub certificate_id: Option<String>,
    /// Subject line.
    pub subject: String,
    /// Body.
    pub message: String,
}

/// [`enqueue`] for many events of one type in one statement (the job processor stores a chunk of
/// issued certificates at once): one `pending` row per event and enabled channel.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    event_type: &str,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO notification_events (id, type, certificate_id, channel_id, channel, recipient, subject, message, \
                 status, created_at, updated_at) \
         SELECT 'ne-' || replace(gen_random_uuid()::text, '-', ''), $1, e.certificate_id, ch.id, ch.type, \
                COALESCE(ch.config->>'to', ch.config->>'url', ''), e.subject, e.message, 'pending', $5, $5 \
           FROM UNNEST($2::text[], $3::text[], $4::text[]) AS e(certificate_id, subject, message) \
          CROSS JOIN notification_channels ch WHERE ch.enabled",
    )
    .bind(event_type)
    .bind(events.iter().map(|e| e.certificate_id.as_deref()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;

use crate::AppState;

/// Attempts after which a row is `dead` (contract §7: the fifth failure).
pub const MAX_ATTEMPTS: i32 = 5;

/// Longest back-off between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Rows sent per query; a tick keeps going while batches come back full.
const BATCH: i64 = 100;

/// Sends in flight at once.
const PARALLEL_SENDS: usize = 16;

/// Back-off after a failure, from the retry count *before* this failure is counted:
/// `min(2^retry_count minutes, 1 h)` — 1, 2, 4, 8 minutes for failures one to four (the fifth
/// makes the row dead), and never more than an hour whatever the count.
pub fn backoff(retry_count_before: i32) -> Duration {
    let exp = u32::try_from(retry_count_before.max(0)).unwrap_or(0).min(16);
    Duration::from_secs(60u64 << exp).min(MAX_BACKOFF)
}

/// What one send pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyStats {
    /// Rows delivered (`sent`).
    pub sent: u64,
    /// Rows that failed and are scheduled for a retry (`failed`).
    pub failed: u64,
    /// Rows that failed for good (`dead`).
    pub dead: u64,
}

impl std::ops::AddAssign for NotifyStats {
    fn add_assign(&mut self, o: Self) {
        self.sent += o.sent;
        self.failed += o.failed;
        self.dead += o.dead;
    }
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The row's channel was deleted: nothing to deliver to, so the row dies at once.
    #[error("notification channel was deleted; the event cannot be delivered")]
    ChannelGone,
    /// Any other failure (kept in full as `last_error`, retried).
    #[error("{0}")]
    Failed(String),
}

/// A row due for sending, with its channel.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Due {
    id: String,
    r#type: String,
    certificate_id: Option<String>,
    subject: String,
    message: String,
    recipient: String,
    retry_count: i32,
    created_at: DateTime<Utc>,
    channel_type: Option<String>,
    channel_config: Option<serde_json::Value>,
    channel_enabled: Option<bool>,
}

const SELECT_DUE: &str = "SELECT e.id, e.type, e.certificate_id, e.subject, e.message, e.recipient, e.retry_count, \
        e.created_at, ch.type AS channel_type, ch.config AS channel_config, ch.enabled AS channel_enabled \
   FROM notification_events e LEFT JOIN notification_channels ch ON ch.id = e.channel_id";

/// Sends `pending` rows (the notification-process loop).
pub async fn process_pending(state: &AppState, now: DateTime<Utc>) -> Result<NotifyStats, sqlx::Error> {
    let sql = format!("{SELECT_DUE} WHERE e.status = 'pending' ORDER BY e.created_at, e.id LIMIT $1");
    drain(state, now, &sql).await
}

/// Resends `failed` rows whose `next_retry_at` is due (the notification-retry loop; reads the
/// partial index `idx_notification_events_retry_sweep`).
pub async fn process_retries(state: &AppState, now: DateTime<Utc>) -> Result<NotifyStats, sqlx::Error> {
    let sql = format!(
        "{SELECT_DUE} WHERE e.status = 'failed' AND e.next_retry_at IS NOT NULL AND e.next_retry_at <= $2 \
         ORDER BY e.next_retry_at, e.id LIMIT $1"
    );
    drain(state, now, &sql).await
}

/// Both passes at `now`: what tests call instead of waiting for the loops.
pub async fn process_due(state: &AppState, now: DateTime<Utc>) -> Result<NotifyStats, sqlx::Error> {
    let mut s = process_pending(state, now).await?;
    s += process_retries(state, now).await?;
    Ok(s)
}

/// Number of `dead` rows (for `certctl_notification_dead_total` and the stats summary). An
/// index-only count on `idx_notification_events_status_created (status, created_at)`.
pub async fn dead_count(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM notification_events WHERE status = 'dead'").fetch_one(pool).await
}

async fn drain(state: &AppState, now: DateTime<Utc>, sql: &str) -> Result<NotifyStats, sqlx::Error> {
    let mut total = NotifyStats::default();
    loop {
        let rows: Vec<Due> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string())).bind(BATCH).bind(now).fetch_all(&state.pool).await?;
        let n = rows.len();
        let results: Vec<Result<NotifyStats, sqlx::Error>> = futures::stream::iter(rows)
            .map(|row| async move {
                let outcome = send(state, &row).await;
                record(state, &row, outcome, now).await
            })
            .buffer_unordered(PARALLEL_SENDS)
            .collect()
            .await;
        for r in results {
            total += r?;
        }
        if i64::try_from(n).unwrap_or(0) < BATCH || state.shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}

/// Writes a send's outcome. Guarded by the row's `retry_count`, so a concurrent requeue (which
/// resets it) is never overwritten by a stale outcome.
async fn record(
    state: &AppState,
    row: &Due,
    outcome: Result<(), SendError>,
    now: DateTime<Utc>,
) -> Result<NotifyStats, sqlx::Error> {
    state.metrics.record_notification(outcome.is_ok());
    let mut stats = NotifyStats::default();
    match outcome {
        Ok(()) => {
            sqlx::query(
                "UPDATE notification_events SET status = 'sent', sent_at = $2, next_retry_at = NULL, updated_at = $2 \
                  WHERE id = $1 AND retry_count = $3 AND status IN ('pending', 'failed')",
            )
            .bind(&row.id)
            .bind(now)
            .bind(row.retry_count)
            .execute(&state.pool)
            .await?;
            stats.sent = 1;
        }
        Err(e) => {
            let count = row.retry_count + 1;
            let dead = count >= MAX_ATTEMPTS || matches!(e, SendError::ChannelGone);
            let next = if dead {
                None
            } else {
                Some(now + chrono::Duration::from_std(backoff(row.retry_count)).unwrap_or(chrono::Duration::hours(1)))
            };
            sqlx::query(
                "UPDATE notification_events SET status = $4, retry_count = $3 + 1, next_retry_at = $5, last_error = $6, \
                        updated_at = $2 \
                  WHERE id = $1 AND retry_count = $3 AND status IN ('pending', 'failed')",
            )
            .bind(&row.id)
            .bind(now)
            .bind(row.retry_count)
            .bind(if dead { "dead" } else { "failed" })
            .bind(next)
            .bind(e.to_string())
            .execute(&state.pool)
            .await?;
            if dead {
                tracing::warn!(notification = %row.id, error = %e, "notification is dead");
                stats.dead = 1;
            } else {
                stats.failed = 1;
            }
        }
    }
    Ok(stats)
}

fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

fn config_str<'a>(config: Option<&'a serde_json::Value>, key: &str) -> Option<&'a str> {
    config.and_then(|c| c.get(key)).and_then(|v| v.as_str()).filter(|s| !s.is_empty())
}

async fn send(state: &AppState, row: &Due) -> Result<(), SendError> {
    let Some(kind) = row.channel_type.as_deref() else { return Err(SendError::ChannelGone) };
    if row.channel_enabled == Some(false) {
        return Err(SendError::Failed("notification channel is disabled".into()));
    }
    let config = row.channel_config.as_ref();
    match kind {
        "log" => {
            tracing::info!(notification = %row.id, r#type = %row.r#type, certificate = ?row.certificate_id,
                subject = %row.subject, "notification");
            Ok(())
        }
        "webhook" => {
            let url = config_str(config, "url")
                .ok_or_else(|| SendError::Failed("webhook channel has no 'url' in its config".into()))?;
            let body = serde_json::json!({
                "id": row.id,
                "type": row.r#type,
                "certificate_id": row.certificate_id,
                "subject": row.subject,
                "message": row.message,
                "created_at": row.created_at,
            });
            let resp = http_client()
                .post(url)
                .timeout(state.config.webhook_timeout)
                .json(&body)
                .send()
                .await
                .map_err(|e| SendError::Failed(format!("webhook POST {url}: {e}")))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            Err(SendError::Failed(format!("webhook POST {url}: HTTP {status}: {text}")))
        }
        "email" => send_email(state, row, config).await,
        other => Err(SendError::Failed(format!("unknown channel type '{other}'"))),
    }
}

async fn send_email(state: &AppState, row: &Due, config: Option<&serde_json::Value>) -> Result<(), SendError> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let addr = state
        .config
        .smtp_addr
        .as_deref()
        .ok_or_else(|| SendError::Failed("CERTCTL_SMTP_ADDR is not set: cannot send email".into()))?;
    let to = config_str(config, "to")
        .or(Some(row.recipient.as_str()).filter(|s| !s.is_empty()))
        .ok_or_else(|| SendError::Failed("email channel has no 'to' in its config".into()))?;
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => {
            (h, p.parse::<u16>().map_err(|_| SendError::Failed(format!("bad CERTCTL_SMTP_ADDR '{addr}'")))?)
        }
        None => (addr, 25),
    };
    let msg = Message::builder()
        .from(state.config.smtp_from.parse().map_err(|e| SendError::Failed(format!("bad CERTCTL_SMTP_FROM: {e}")))?)
        .to(to.parse().map_err(|e| SendError::Failed(format!("bad recipient '{to}': {e}")))?)
        .subject(row.subject.clone())
        .body(row.message.clone())
        .map_err(|e| SendError::Failed(format!("building email: {e}")))?;
    // Plain SMTP to a relay the operator runs (no TLS features are compiled in).
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(state.config.webhook_timeout))
        .build();
    transport.send(msg).await.map(|_| ()).map_err(|e| SendError::Failed(format!("SMTP {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_minute_and_caps_at_an_hour() {
        let mins: Vec<u64> = (0..8).map(|c| backoff(c).as_secs() / 60).collect();
        assert_eq!(mins, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(1000), MAX_BACKOFF);
        assert_eq!(backoff(-3).as_secs(), 60);
    }
}

//! The audit trail writer: every mutating API call becomes one `audit_events` row, without a
//! synchronous INSERT on the request path.
//!
//! Requests hand an [`AuditEvent`] to the [`AuditSink`] (a bounded mpsc channel). One writer
//! task buffers events and writes them with a single multi-row `INSERT … SELECT FROM UNNEST(…)`
//! every `CERTCTL_AUDIT_FLUSH_INTERVAL` or as soon as [`BATCH_ROWS`] are waiting. Shutdown
//! ([`AuditSink::close`], called from `finish()` before the pool closes) writes whatever is
//! buffered and then stops the task; because the channel is FIFO, every event recorded before
//! the close is written.
//!
//! When the database is away (restart, stall, killed connections) a failed batch is kept and
//! retried every flush interval until it is written, with its row ids fixed at record time so
//! a retry cannot write a row twice; the backlog is bounded ([`MAX_RETAINED`]) by backpressure,
//! never by dropping rows. What a SIGKILL loses is exactly what is in memory: the channel and
//! the buffer (see `docs/operator/scheduler-ha.md`, "Faults").

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// Rows written per INSERT at most; a full buffer is flushed without waiting for the timer.
pub const BATCH_ROWS: usize = 500;
/// Events that may wait in the channel in front of the writer.
const CHANNEL_CAPACITY: usize = 65_536;
/// Rows the writer buffers while the database cannot take them. At this bound it stops reading
/// the channel; once the channel is full too, [`AuditSink::record`] waits (and with it the
/// mutating request, which `CERTCTL_REQUEST_TIMEOUT` bounds: it then answers 503). Memory is
/// thus bounded by `MAX_RETAINED + CHANNEL_CAPACITY` events (about 1 KiB each), and no event of
/// an acknowledged request is dropped to make room.
pub const MAX_RETAINED: usize = 50_000;

/// One audit row.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Key name, `agent:<id>` or `anonymous`.
    pub actor: String,
    /// `api_key`, `agent` or `anonymous`.
    pub actor_type: String,
    /// e.g. `certificates.create`, `agents.heartbeat`.
    pub action: String,
    /// e.g. `certificates`.
    pub resource_type: String,
    /// The id acted on (empty for collection-wide actions).
    pub resource_id: String,
    /// Method, route, status and anything else worth keeping.
    pub details: serde_json::Value,
    /// The request's `X-Request-ID`.
    pub request_id: String,
    /// When the call happened (not when the row was flushed).
    pub created_at: DateTime<Utc>,
}

/// Longest text kept in one audit field, in characters; longer values (a hostile 60 KiB path
/// id) are cut so one request cannot bloat the append-only table.
const MAX_FIELD_CHARS: usize = 512;

/// `s` as PostgreSQL `text` can store it: U+0000 replaced by U+FFFD, cut to [`MAX_FIELD_CHARS`].
fn storable_text(s: String) -> String {
    let s = if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s };
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s,
    }
}

/// `v` with every string and key made storable (`jsonb` refuses `\u0000` as well).
fn storable_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(storable_text(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (storable_text(k), storable_json(v))).collect())
        }
        other => other,
    }
}

impl AuditEvent {
    /// The event with every text field made storable. Events come from requests, and a single
    /// unstorable row would fail its whole batch on every retry, stalling the audit trail.
    fn storable(self) -> Self {
        AuditEvent {
            actor: storable_text(self.actor),
            actor_type: storable_text(self.actor_type),
            action: storable_text(self.action),
            resource_type: storable_text(self.resource_type),
            resource_id: storable_text(self.resource_id),
            details: storable_json(self.details),
            request_id: storable_text(self.request_id),
            created_at: self.created_at,
        }
    }
}

/// An event waiting to be written, with the row id it was given when recorded: a batch that is
/// retried after a lost connection (the INSERT may have committed before the answer was lost)
/// is inserted `ON CONFLICT (id) DO NOTHING`, so a retry never writes a row twice.
#[derive(Debug)]
struct Pending {
    id: String,
    event: AuditEvent,
}

enum Msg {
    Event(Box<Pending>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
}

impl AuditSink {
    /// Starts the writer task on `pool`, flushing every `interval`.
    pub fn spawn(pool: PgPool, interval: Duration) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(writer(pool, rx, interval));
        AuditSink { tx }
    }

    /// Queues one event. Returns at once unless the backlog is at its bound (see
    /// [`MAX_RETAINED`]): then it waits until the writer has room.
    pub async fn record(&self, event: AuditEvent) {
        let pending = Pending { id: format!("audit-{}", uuid::Uuid::new_v4()), event: event.storable() };
        if self.tx.send(Msg::Event(Box::new(pending))).await.is_err() {
            tracing::error!("audit writer has stopped; event lost");
        }
    }

    /// Writes everything recorded so far and waits until it is stored or the write failed
    /// (tests, admin tools). After a failure the rows stay buffered for the next attempt.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Writes everything recorded so far, then stops the writer. Called once at shutdown.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The writer task. After a failed write (database down, restarting, stalled) it keeps every
/// buffered row and retries on the timer only — not on every new event, which during an outage
/// would turn each event into a multi-second connect attempt. Once [`MAX_RETAINED`] rows are
/// buffered it stops reading the channel, so recording waits instead of rows being dropped.
async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Msg>, interval: Duration) {
    let mut buf: Vec<Pending> = Vec::new();
    let mut failing = false;
    // `interval` would fire its first tick at once: a writer first polled after events had
    // already arrived would flush them immediately instead of batching them. Start one
    // interval from now.
    let period = interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv(), if buf.len() < MAX_RETAINED => match msg {
                Some(Msg::Event(e)) => {
                    buf.push(*e);
                    if buf.len() >= BATCH_ROWS && !failing {
                        failing = !write(&pool, &mut buf).await;
                    }
                }
                Some(Msg::Flush(ack)) => {
                    failing = !write(&pool, &mut buf).await;
                    let _ = ack.send(());
                }
                Some(Msg::Close(ack)) => {
                    write(&pool, &mut buf).await;
                    if !buf.is_empty() {
                        tracing::error!(lost = buf.len(), "audit rows could not be written at shutdown");
                    }
                    let _ = ack.send(());
                    return;
                }
                None => {
                    write(&pool, &mut buf).await;
                    return;
                }
            },
            _ = tick.tick() => {
                if !buf.is_empty() {
                    let was_failing = failing;
                    failing = !write(&pool, &mut buf).await;
                    if was_failing && !failing {
                        tracing::info!("audit writer recovered: buffered rows written");
                    }
                }
            }
        }
    }
}

/// Writes `buf` in chunks of [`BATCH_ROWS`]. Returns false when the database failed: the
/// unwritten rows stay in `buf`, in order, for the next attempt.
async fn write(pool: &PgPool, buf: &mut Vec<Pending>) -> bool {
    while !buf.is_empty() {
        let n = buf.len().min(BATCH_ROWS);
        match insert_batch(pool, &buf[..n]).await {
            Ok(()) => {
                buf.drain(..n);
            }
            Err(e) if is_data_error(&e) => {
                // Some row of this chunk can never be stored (it is not the database being
                // down): write the rows one by one and drop only the offending ones, instead of
                // retrying the same failing chunk forever while the buffer grows behind it.
                tracing::error!(error = %e, rows = n, "audit batch holds an unstorable row; writing rows singly");
                let mut i = 0;
                while i < n {
                    match insert_batch(pool, &buf[i..=i]).await {
                        Ok(()) => i += 1,
                        Err(e) if is_data_error(&e) => {
                            let row = &buf[i].event;
                            tracing::error!(error = %e, action = %row.action, request_id = %row.request_id, "audit row dropped");
                            i += 1;
                        }
                        Err(e) => {
                            // The database went away meanwhile: keep this row and the rest.
                            tracing::error!(error = %e, rows = buf.len() - i, "writing audit rows failed; will retry");
                            buf.drain(..i);
                            return false;
                        }
                    }
                }
                buf.drain(..n);
            }
            Err(e) => {
                tracing::error!(error = %e, rows = buf.len(), "writing audit rows failed; will retry");
                return false;
            }
        }
    }
    true
}

/// A PostgreSQL data exception (SQLSTATE class 22) or constraint violation (class 23): the
/// rows themselves are at fault, so retrying the same statement cannot succeed.
fn is_data_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
}

/// One multi-row INSERT: each column travels as one array parameter. Rows already present (a
/// retried batch whose first attempt committed) are skipped.
async fn insert_batch(pool: &PgPool, rows: &[Pending]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut actors = Vec::with_capacity(rows.len());
    let mut actor_types = Vec::with_capacity(rows.len());
    let mut actions = Vec::with_capacity(rows.len());
    let mut rtypes = Vec::with_capacity(rows.len());
    let mut rids = Vec::with_capacity(rows.len());
    let mut details = Vec::with_capacity(rows.len());
    let mut request_ids = Vec::with_capacity(rows.len());
    let mut created = Vec::with_capacity(rows.len());
    for Pending { id, event: r } in rows {
        ids.push(id.clone());
        actors.push(r.actor.clone());
        actor_types.push(r.actor_type.clone());
        actions.push(r.action.clone());
        rtypes.push(r.resource_type.clone());
        rids.push(r.resource_id.clone());
        details.push(r.details.to_string());
        request_ids.push(r.request_id.clone());
        created.push(r.created_at);
    }
    sqlx::query(
        "INSERT INTO audit_events (id, actor, actor_type, action, resource_type, resource_id, details, request_id, created_at)
         SELECT id, actor, actor_type, action, resource_type, resource_id, details::jsonb, request_id, created_at
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[])
             AS t(id, actor, actor_type, action, resource_type, resource_id, details, request_id, created_at)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ids)
    .bind(actors)
    .bind(actor_types)
    .bind(actions)
    .bind(rtypes)
    .bind(rids)
    .bind(details)
    .bind(request_ids)
    .bind(created)
    .execute(pool)
    .await?;
    Ok(())
}

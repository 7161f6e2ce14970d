//! The database invariants checked after a trial with faults.
//!
//! Before the load, [`Watch::prepare`] notes the database clock and points a fresh webhook
//! notification channel at a [`Receiver`] of the harness, so every renewal the trial completes
//! also sends a notification the harness sees arrive. After the load, [`Watch::check`] waits
//! (bounded by [`SETTLE`] + the reclaim bound) until the work enqueued before the last fault's
//! end has ended, the channel's notifications are delivered and the acknowledged requests'
//! audit rows are written, then judges:
//!
//! - `renewals_end_once`: every Issuance/Renewal job created from the trial's start to the last
//!   fault's end is `Completed` (with exactly one certificate version), `Cancelled`, or
//!   `Failed` with no attempts left — none still open;
//! - `one_version_per_job`: no job produced two certificate versions (whole table);
//! - `no_running_job_with_a_dead_owner`: no `Running` job's lease expired longer ago than the
//!   reclaim bound allows, and every SIGKILLed replica's claims were reclaimed within it;
//! - `notifications_delivered`: every event of the channel reached the receiver (none lost);
//!   events delivered twice are counted in the detail (delivery is at-least-once);
//! - `audit_rows_of_acknowledged_requests`: every write of the [`AuditProbe`] (always-audited
//!   `PUT`s beside the load, each with its own `X-Request-ID`) that got a 2xx has its
//!   `audit_events` row — except, after a SIGKILL, those the killed replica acknowledged within
//!   its audit flush interval (+ 1 s) before the kill, which the docs say a SIGKILL can lose
//!   (counted in the detail). Without an admin key there is no probe and the invariant fails
//!   as not checked.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::audit_probe::{Ack, AuditProbe};
use super::inject::Bounds;
use super::webhook::Receiver;
use super::{FaultEvent, FaultKind};
use crate::HarnessError;
use crate::report::summary::Invariant;

/// How long the check waits, beyond the reclaim bound, for the trial's work to settle.
pub const SETTLE: Duration = Duration::from_secs(30);

fn db(e: sqlx::Error) -> HarnessError {
    HarnessError::Database(e.to_string())
}

/// What the check needs from before the load.
#[derive(Debug)]
pub struct Watch {
    from: DateTime<Utc>,
    channel: String,
    receiver: Receiver,
    /// The audit probe, or why there is none.
    probe: Result<AuditProbe, String>,
}

/// The state the check waits on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Open {
    jobs: i64,
    notifications: i64,
    audit_missing: usize,
}

impl Watch {
    /// Notes the database clock, adds a webhook channel pointing at a new receiver, and starts
    /// the audit probe against `base_urls` (it needs the admin key).
    pub async fn prepare(pool: &PgPool, base_urls: &[String], api_key: Option<&str>) -> Result<Self, HarnessError> {
        let receiver = Receiver::start().await.map_err(|e| HarnessError::Target(format!("webhook receiver: {e}")))?;
        let channel = format!("loadtest-faults-{:08x}", rand::random::<u32>());
        sqlx::query(
            "INSERT INTO notification_channels (id, name, type, config) \
             VALUES ($1, $1, 'webhook', jsonb_build_object('url', $2::text))",
        )
        .bind(&channel)
        .bind(&receiver.url)
        .execute(pool)
        .await
        .map_err(db)?;
        let from = crate::replicas::db_now(pool).await?;
        let probe = match api_key {
            Some(k) => AuditProbe::start(base_urls, k).await,
            None => Err("no admin API key (give --api-key)".into()),
        };
        Ok(Watch { from, channel, receiver, probe })
    }

    /// Waits for the trial's work to settle, judges every invariant, disables the channel.
    pub async fn check(
        mut self,
        pool: &PgPool,
        events: &[FaultEvent],
        bounds: Bounds,
    ) -> Result<Vec<Invariant>, HarnessError> {
        let probe = std::mem::replace(&mut self.probe, Err(String::new()));
        let (acks, no_probe) = match probe {
            Ok(p) => (p.stop().await, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let acks = &acks[..];
        let until = events.iter().map(|e| e.ended_at).max().unwrap_or(self.from);
        let allowed = sigkill_losable(events, bounds);
        let deadline = Instant::now() + SETTLE + bounds.reclaim();
        let mut open;
        loop {
            open = Open {
                jobs: open_jobs(pool, self.from, until).await?,
                notifications: self.undelivered(pool).await?,
                audit_missing: missing_audit(pool, acks).await?.iter().filter(|a| !allowed(a)).count(),
            };
            if open == Open::default() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let invariants = vec![
            renewals_end_once(pool, self.from, until).await?,
            one_version_per_job(pool).await?,
            no_running_job_with_a_dead_owner(pool, events, bounds).await?,
            self.notifications_delivered(pool).await?,
            audit_rows(pool, acks, &allowed, no_probe).await?,
        ];
        sqlx::query("UPDATE notification_channels SET enabled = false WHERE id = $1")
            .bind(&self.channel)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(invariants)
    }

    async fn undelivered(&self, pool: &PgPool) -> Result<i64, HarnessError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM notification_events WHERE channel_id = $1 AND status IN ('pending', 'failed')",
        )
        .bind(&self.channel)
        .fetch_one(pool)
        .await
        .map_err(db)
    }

    async fn notifications_delivered(&self, pool: &PgPool) -> Result<Invariant, HarnessError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, status FROM notification_events WHERE channel_id = $1")
                .bind(&self.channel)
                .fetch_all(pool)
                .await
                .map_err(db)?;
        let got = self.receiver.deliveries();
        let lost = rows.iter().filter(|(id, _)| !got.contains_key(id)).count();
        let undelivered = rows.iter().filter(|(_, s)| s != "sent").count();
        let twice = got.values().filter(|n| **n > 1).count();
        Ok(Invariant {
            name: "notifications_delivered".into(),
            held: lost == 0,
            detail: format!(
                "{} notifications queued for the trial's webhook channel; received {}; never received {lost} \
                 (not marked sent: {undelivered}); delivered twice {twice}",
                rows.len(),
                got.len()
            ),
        })
    }
}

/// Whether an acknowledged request's audit row is one a SIGKILL may lose: answered by the
/// killed server within its audit flush interval + 1 s before the kill.
fn sigkill_losable(events: &[FaultEvent], bounds: Bounds) -> impl Fn(&Ack) -> bool + use<> {
    let window = chrono::Duration::from_std(bounds.audit_flush + Duration::from_secs(1)).unwrap_or_default();
    let kills: Vec<(usize, DateTime<Utc>)> = events
        .iter()
        .filter(|e| e.def.kind == FaultKind::ServerKill)
        .filter_map(|e| e.server.map(|s| (s, e.started_at)))
        .collect();
    // An answer can arrive a moment after the kill signal was sent (it was on the wire).
    let slack = chrono::Duration::milliseconds(100);
    move |a: &Ack| kills.iter().any(|(s, at)| a.server == *s && a.at + window >= *at && a.at <= *at + slack)
}

const JOB_KINDS: &str = "type IN ('Issuance', 'Renewal') AND created_at BETWEEN $1 AND $2";

async fn open_jobs(pool: &PgPool, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<i64, HarnessError> {
    let sql = format!(
        "SELECT count(*) FROM jobs WHERE {JOB_KINDS} \
           AND NOT (status IN ('Completed', 'Cancelled') OR (status = 'Failed' AND attempts >= max_attempts))"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(from).bind(until).fetch_one(pool).await.map_err(db)
}

async fn renewals_end_once(
    pool: &PgPool,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Invariant, HarnessError> {
    let sql = format!(
        "SELECT count(*), count(*) FILTER (WHERE status = 'Completed'), \
                count(*) FILTER (WHERE status = 'Completed' \
                                   AND (SELECT count(*) FROM certificate_versions v WHERE v.job_id = j.id) <> 1), \
                count(*) FILTER (WHERE attempts > 1) \
           FROM jobs j WHERE {JOB_KINDS}"
    );
    let (all, completed, not_one, retried): (i64, i64, i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(from).bind(until).fetch_one(pool).await.map_err(db)?;
    let open = open_jobs(pool, from, until).await?;
    Ok(Invariant {
        name: "renewals_end_once".into(),
        held: open == 0 && not_one == 0,
        detail: format!(
            "{all} issuance/renewal jobs enqueued before the last fault ended; completed {completed}; still open \
             {open}; completed without exactly one certificate version {not_one}; run more than once (reclaimed or \
             retried) {retried}"
        ),
    })
}

async fn one_version_per_job(pool: &PgPool) -> Result<Invariant, HarnessError> {
    let twice = crate::replicas::jobs_with_two_versions(pool).await?;
    Ok(Invariant {
        name: "one_version_per_job".into(),
        held: twice == 0,
        detail: format!("jobs with two certificate versions: {twice}"),
    })
}

async fn no_running_job_with_a_dead_owner(
    pool: &PgPool,
    events: &[FaultEvent],
    bounds: Bounds,
) -> Result<Invariant, HarnessError> {
    // A lease expired longer ago than a processor pass (+ the batch allowance) was not
    // reclaimed in time: its owner is gone and no live replica took the job over.
    let grace = bounds.reclaim().saturating_sub(bounds.lease).as_secs_f64();
    let stuck: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'Running' AND lease_expires_at < now() - make_interval(secs => $1)",
    )
    .bind(grace)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let reclaims: Vec<_> = events.iter().filter_map(|e| e.reclaim.as_ref()).collect();
    let late = reclaims.iter().filter(|r| r.reclaim_s.is_none_or(|s| s > r.bound_s)).count();
    let times: Vec<String> = reclaims
        .iter()
        .map(|r| match r.reclaim_s {
            Some(s) => format!("{} jobs in {s:.2} s", r.jobs),
            None => format!("{} jobs not reclaimed", r.jobs),
        })
        .collect();
    Ok(Invariant {
        name: "no_running_job_with_a_dead_owner".into(),
        held: stuck == 0 && late == 0,
        detail: format!(
            "Running jobs whose lease expired over {grace:.1} s ago: {stuck}; reclaim bound {:.1} s; \
             SIGKILLed replicas' claims reclaimed: [{}]",
            bounds.reclaim().as_secs_f64(),
            if times.is_empty() { "no SIGKILL".to_string() } else { times.join(", ") }
        ),
    })
}

/// The acknowledged requests without an audit row.
async fn missing_audit<'a>(pool: &PgPool, acks: &'a [Ack]) -> Result<Vec<&'a Ack>, HarnessError> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = acks.iter().map(|a| a.request_id.as_str()).collect();
    let found: Vec<String> = sqlx::query_scalar("SELECT request_id FROM audit_events WHERE request_id = ANY($1)")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    let found: BTreeSet<String> = found.into_iter().collect();
    Ok(acks.iter().filter(|a| !found.contains(&a.request_id)).collect())
}

async fn audit_rows(
    pool: &PgPool,
    acks: &[Ack],
    losable: &impl Fn(&Ack) -> bool,
    no_probe: Option<String>,
) -> Result<Invariant, HarnessError> {
    if let Some(why) = no_probe {
        return Ok(Invariant {
            name: "audit_rows_of_acknowledged_requests".into(),
            held: false,
            detail: format!("not checked: the audit probe could not run: {why}"),
        });
    }
    let missing = missing_audit(pool, acks).await?;
    let may_lose = missing.iter().filter(|a| losable(a)).count();
    let lost = missing.len() - may_lose;
    Ok(Invariant {
        name: "audit_rows_of_acknowledged_requests".into(),
        held: lost == 0,
        detail: format!(
            "{} audit-probe writes acknowledged (2xx); audit rows missing {}: {may_lose} acknowledged by a SIGKILLed \
             replica within its audit flush interval + 1 s before the kill (documented loss), {lost} otherwise",
            acks.len(),
            missing.len()
        ),
    })
}

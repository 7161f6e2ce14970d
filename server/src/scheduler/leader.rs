//! Leader election: a PostgreSQL session advisory lock held on a dedicated connection.
//!
//! The connection is opened outside the pool on purpose: a session lock belongs to the
//! connection, and a pooled connection could be handed to other work, recycled or closed by
//! the pool without us noticing. Every `CERTCTL_LEADER_ELECTION_INTERVAL` a non-leader tries
//! `pg_try_advisory_lock`; the leader runs `SELECT 1` on its connection (and refreshes
//! `scheduler_leaders.renewed_at`) — if that fails the connection is gone, PostgreSQL has
//! released the lock, and this instance steps down at once. On shutdown the leader unlocks,
//! deletes its `scheduler_leaders` row and closes the connection, so another instance takes
//! over within one interval. If the process dies, PostgreSQL ends the session and frees the lock.
//! Each election step is bounded by the interval (at least 1 s): a database that stops
//! answering without closing connections (a stall) makes the leader step down, and after the
//! database returns, leadership is re-acquired like at boot.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use sqlx::{Connection, PgConnection};

use crate::AppState;

/// The advisory lock key of the scheduler leader ("certctl" + 1).
pub const LEADER_LOCK_KEY: i64 = 0x6365_7274_6374_6c01;

/// The role name recorded in `scheduler_leaders`.
pub const ROLE: &str = "scheduler";

/// This instance's view of leadership.
#[derive(Debug, Default)]
pub struct Leadership {
    leader: AtomicBool,
}

impl Leadership {
    /// True while this instance holds the leader lock.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn set(&self, v: bool) {
        self.leader.store(v, Ordering::SeqCst);
    }

    /// Stops this instance acting as leader (the lock is released separately).
    pub(crate) fn step_down(&self) {
        self.set(false);
    }
}

/// The election loop; returns after releasing leadership once `state.shutdown` fires.
pub async fn run(state: AppState) {
    let mut conn: Option<PgConnection> = None;
    // A stalled database (frozen VM, SIGSTOP) answers nothing and closes nothing: bound each
    // step so the election loop itself can never hang. A leader whose check did not come back
    // steps down — it can no longer prove it holds the lock — and drops the connection, which
    // ends the session (and frees the lock) as soon as PostgreSQL runs again.
    let step_limit = state.config.leader_election_interval.max(std::time::Duration::from_secs(1));
    loop {
        if tokio::time::timeout(step_limit, step(&state, &mut conn)).await.is_err() {
            if state.scheduler.is_leader() {
                tracing::warn!(instance = %state.instance_id, "leader check did not answer in time: stepping down");
            }
            state.scheduler.leadership.set(false);
            conn = None;
        }
        let wait = super::jittered(state.config.leader_election_interval);
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Wait for leader-only ticks still running to finish before handing over, so two leaders
    // never sign or send at once.
    let held = state.scheduler.is_leader();
    super::wait_for_ticks(&state, super::HaClass::LeaderOnly).await;
    release(&state, conn, held).await;
}

async fn step(state: &AppState, conn: &mut Option<PgConnection>) {
    let leadership = &state.scheduler.leadership;
    if leadership.is_leader() {
        let alive = match conn.as_mut() {
            Some(c) => {
                sqlx::query("UPDATE scheduler_leaders SET renewed_at = now() WHERE role = $1 AND instance_id = $2")
                    .bind(ROLE)
                    .bind(&*state.instance_id)
                    .execute(&mut *c)
                    .await
                    .is_ok()
            }
            None => false,
        };
        if !alive {
            tracing::warn!(instance = %state.instance_id, "lost the leader connection: stepping down");
            leadership.set(false);
            *conn = None;
        }
        return;
    }
    if conn.is_none() {
        match PgConnection::connect(&state.config.database_url).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "leader election: cannot open the dedicated connection");
                return;
            }
        }
    }
    let Some(c) = conn.as_mut() else { return };
    match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK_KEY)
        .fetch_one(&mut *c)
        .await
    {
        Ok(true) => {
            let recorded = sqlx::query(
                "INSERT INTO scheduler_leaders (role, instance_id, acquired_at, renewed_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (role) DO UPDATE SET instance_id = EXCLUDED.instance_id, \
                     acquired_at = EXCLUDED.acquired_at, renewed_at = EXCLUDED.renewed_at",
            )
            .bind(ROLE)
            .bind(&*state.instance_id)
            .bind(Utc::now())
            .execute(&mut *c)
            .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not record leadership in scheduler_leaders");
            }
            tracing::info!(instance = %state.instance_id, "became scheduler leader");
            leadership.set(true);
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "leader election query failed; reconnecting next time");
            *conn = None;
        }
    }
}

async fn release(state: &AppState, conn: Option<PgConnection>, held: bool) {
    state.scheduler.leadership.set(false);
    let Some(mut c) = conn else { return };
    if held {
        let _ = sqlx::query("DELETE FROM scheduler_leaders WHERE role = $1 AND instance_id = $2")
            .bind(ROLE)
            .bind(&*state.instance_id)
            .execute(&mut c)
            .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK_KEY).execute(&mut c).await;
        tracing::info!(instance = %state.instance_id, "released scheduler leadership");
    }
    let _ = c.close().await;
}

//! Database access: the pool, the embedded migrations and the demo seed.
//! Queries live with the aggregate they serve (see the `http` and `scheduler` modules); this
//! module owns the connection lifecycle.

pub mod migrate;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Opens the pool with exactly `max_conns` as its ceiling (the contract's "really applied").
///
/// Every connection is pinged before it is handed out (sqlx's default). That costs one round
/// trip per acquire — measured at about 15 % of the heartbeat's rate
/// (`docs/operator/scale-baseline.md`, Hot paths) — and buys the fault guarantee that after a
/// database restart or killed connections no request fails on a dead pooled connection
/// (`docs/operator/scheduler-ha.md`, Faults; the `faults::` tests). Pinging only connections idle
/// for 10 s was tried and refused for that reason: every connection killed while recently used
/// then failed one request.
pub async fn connect(url: &str, max_conns: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_conns)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(true)
        .connect(url)
        .await
}

/// The idempotent demo data set (`CERTCTL_DEMO_SEED=true`).
pub const DEMO_SEED_SQL: &str = include_str!("demo_seed.sql");

/// Loads the demo data set; every insert is `ON CONFLICT DO NOTHING`, so it is safe to run on
/// every boot of every replica.
pub async fn demo_seed(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(DEMO_SEED_SQL).execute(pool).await?;
    Ok(())
}

/// Whether `e` says only that the connection under a statement died (or could not be had from
/// a database that is shutting down or starting up), not that the statement itself was wrong.
///
/// - `Io`, `Tls`, `Protocol`, `WorkerCrashed`: the socket broke or the wire got out of step —
///   a server restart, `pg_terminate_backend`, a network cut;
/// - SQLSTATE class `08` (connection exception), `57P01` admin_shutdown (fast shutdown and
///   `pg_terminate_backend`), `57P02` crash_shutdown, `57P03` cannot_connect_now.
///
/// Not included: `PoolTimedOut` (the pool already waited its acquire timeout; retrying would
/// double the wait) and `PoolClosed` (only our own shutdown closes the pool; no retry can help).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

/// Runs `op`; if it fails with a connection-class error ([`is_connection_error`]), runs it once
/// more. The second run acquires a fresh connection: the pool discards a connection that failed
/// with an I/O error, pings idle ones before handing them out, and (while the database restarts)
/// keeps retrying the connect until its acquire timeout.
///
/// Only for operations that are **idempotent as a whole** — running them twice leaves the same
/// state as running them once — because a connection can die after the server committed but
/// before the answer arrived. `docs/operator/scheduler-ha.md` lists the callers and why each is
/// safe.
pub async fn retry_idempotent<T, F, Fut>(mut op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match op().await {
        Err(e) if is_connection_error(&e) => {
            tracing::info!(error = %e, "database connection lost under an idempotent write; retrying once");
            op().await
        }
        other => other,
    }
}

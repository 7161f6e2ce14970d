//! Database access: the pool, the embedded migrations and the demo seed.
//! Queries live with the aggregate they serve (see the `http` and `scheduler` modules); this
//! module owns the connection lifecycle.

pub mod migrate;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A pooled connection idle for longer than this is pinged before it is handed out.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// Opens the pool with exactly `max_conns` as its ceiling (the contract's "really applied").
///
/// sqlx pings every connection it hands out by default: one more round trip — and one more
/// wake-up of a PostgreSQL backend — per statement, which on the heartbeat was a third of the
/// database's CPU per request (`docs/operator/scale-baseline.md`, Hot paths). Only connections
/// that sat idle for [`PING_IF_IDLE_FOR`] are pinged here (one that fails the ping is closed and
/// another taken); a busy connection proves itself with every statement, and a statement on a
/// connection the server lost fails once and that connection is discarded.
pub async fn connect(url: &str, max_conns: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_conns)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_IF_IDLE_FOR {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
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

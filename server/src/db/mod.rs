//! Database access: the pool, the embedded migrations and the demo seed.
//! Queries live with the aggregate they serve (see the `http` and `scheduler` modules); this
//! module owns the connection lifecycle.

pub mod migrate;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Opens the pool with exactly `max_conns` as its ceiling (the contract's "really applied").
pub async fn connect(url: &str, max_conns: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_conns)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
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

//! PostgreSQL sliding window on `rate_limit_buckets`: one row per key holding the admitted
//! calls' timestamps, so every replica draws on one budget.
//!
//! Per call, in one transaction: upsert the row (`INSERT … ON CONFLICT DO NOTHING`, so two
//! replicas' concurrent first calls for a key cannot both miss the row and race), lock it with
//! `SELECT … FOR UPDATE` (serialising every caller of that key across replicas), prune and
//! decide in Rust with the same [`decide`](super::decide) the memory backend uses, write back.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Limit, Limiter, LimiterError, bypass, decide};

/// Shared, database-backed sliding-window limiter.
#[derive(Debug, Clone)]
pub struct PgLimiter {
    pool: PgPool,
    namespace: String,
    limit: Limit,
}

impl PgLimiter {
    /// A limiter enforcing `limit` on keys `"{namespace}:{key}"`.
    pub fn new(pool: PgPool, namespace: &str, limit: Limit) -> Self {
        Self { pool, namespace: namespace.to_string(), limit }
    }

    async fn allow_db(&self, key: &str, now: DateTime<Utc>) -> Result<Result<(), super::RateLimited>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO rate_limit_buckets (bucket_key, updated_at) VALUES ($1, $2) ON CONFLICT (bucket_key) DO NOTHING")
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let mut log: Vec<DateTime<Utc>> =
            sqlx::query_scalar("SELECT timestamps FROM rate_limit_buckets WHERE bucket_key = $1 FOR UPDATE")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
        let decision = decide(&mut log, self.limit, now);
        sqlx::query("UPDATE rate_limit_buckets SET timestamps = $2, updated_at = GREATEST(updated_at, $3) WHERE bucket_key = $1")
            .bind(key)
            .bind(&log)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(decision)
    }
}

#[async_trait::async_trait]
impl Limiter for PgLimiter {
    async fn allow(&self, key: &str, now: DateTime<Utc>) -> Result<(), LimiterError> {
        if bypass(self.limit, key) {
            return Ok(());
        }
        let full_key = format!("{}:{key}", self.namespace);
        match self.allow_db(&full_key, now).await {
            Ok(decision) => decision.map_err(LimiterError::from),
            Err(e) => Err(LimiterError::Backend(e.to_string())),
        }
    }

    fn limit(&self) -> Limit {
        self.limit
    }
}

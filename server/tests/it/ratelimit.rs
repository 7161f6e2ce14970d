//! Rate limiters (contract §8): one equivalence suite run against both backends, the memory
//! backend's key bound, the janitor, and the multi-replica budget through three pools.

use std::sync::Arc;
use std::time::Duration;

use certctl_server::config::RateLimitBackend;
use certctl_server::ratelimit::{self, Limit, Limiter, LimiterError, MemoryLimiter, RateLimited};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::support::migrated_database;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("timestamp")
}

fn limited(r: Result<(), LimiterError>) -> Option<Duration> {
    match r {
        Err(LimiterError::Limited(RateLimited { retry_after })) => Some(retry_after),
        _ => None,
    }
}

/// The behaviour every backend must show. `make` builds a limiter for a limit in a fresh
/// namespace so cases do not see each other's keys.
async fn equivalence_suite(make: &dyn Fn(&str, Limit) -> Arc<dyn Limiter>) {
    let per_min = |max| Limit { max, window: Duration::from_secs(60) };

    // Admits exactly `max` calls in a window, then refuses with the time until the oldest leaves.
    let l = make("cap", per_min(3));
    for s in [0, 10, 20] {
        assert!(l.allow("k", t(s)).await.is_ok(), "call at {s}s is within the cap");
    }
    assert_eq!(limited(l.allow("k", t(30)).await), Some(Duration::from_secs(30)));
    // A refused call is not recorded: the window frees up on the original schedule.
    assert!(l.allow("k", t(60)).await.is_ok(), "the call at 0s left the window at 60s");
    assert_eq!(limited(l.allow("k", t(61)).await), Some(Duration::from_secs(9)));

    // Keys are independent.
    let l = make("keys", per_min(1));
    assert!(l.allow("a", t(0)).await.is_ok());
    assert!(l.allow("b", t(0)).await.is_ok());
    assert!(limited(l.allow("a", t(1)).await).is_some());

    // max <= 0 disables; an empty key is never limited.
    for max in [0i64, -1] {
        let l = make(&format!("off{}", max.abs()), per_min(max));
        for s in 0..20 {
            assert!(l.allow("k", t(s)).await.is_ok(), "max {max} disables the limiter");
        }
    }
    let l = make("empty", per_min(1));
    for s in 0..5 {
        assert!(l.allow("", t(s)).await.is_ok(), "an empty key is never limited");
    }

    // The same key in two namespaces draws on two budgets.
    let a = make("ns-a", per_min(1));
    let b = make("ns-b", per_min(1));
    assert!(a.allow("shared", t(0)).await.is_ok());
    assert!(b.allow("shared", t(0)).await.is_ok());

    // A long quiet period empties the window completely.
    let l = make("quiet", per_min(2));
    assert!(l.allow("k", t(0)).await.is_ok());
    assert!(l.allow("k", t(1)).await.is_ok());
    assert!(limited(l.allow("k", t(2)).await).is_some());
    assert!(l.allow("k", t(3600)).await.is_ok());
    assert!(l.allow("k", t(3601)).await.is_ok());
    assert_eq!(l.limit(), per_min(2));
}

#[tokio::test]
async fn the_memory_backend_passes_the_equivalence_suite() {
    let pool = PgPool::connect_lazy("postgres://unused/unused").expect("lazy pool");
    let make = move |ns: &str, limit| ratelimit::build(RateLimitBackend::Memory, &pool, ns, limit);
    equivalence_suite(&make).await;
}

#[tokio::test]
async fn the_postgres_backend_passes_the_equivalence_suite() {
    let (_url, pool) = migrated_database(false).await;
    let make = move |ns: &str, limit| ratelimit::build(RateLimitBackend::Postgres, &pool, ns, limit);
    equivalence_suite(&make).await;
}

#[tokio::test]
async fn the_memory_backend_holds_a_bounded_number_of_keys() {
    let l = MemoryLimiter::new("bound", Limit { max: 5, window: Duration::from_secs(60) }, 100);
    for i in 0..1_000 {
        assert!(l.allow(&format!("k{i}"), t(i / 100)).await.is_ok());
        assert!(l.key_count() <= 100);
    }
    // Keys whose window emptied are swept.
    assert_eq!(l.sweep(t(3600)), 100);
    assert_eq!(l.key_count(), 0);
}

#[tokio::test]
async fn the_janitor_deletes_idle_buckets_only() {
    let (_url, pool) = migrated_database(false).await;
    let l =
        ratelimit::build(RateLimitBackend::Postgres, &pool, "jan", Limit { max: 5, window: Duration::from_secs(60) });
    l.allow("old", t(0)).await.expect("allowed");
    l.allow("fresh", t(3 * 3600)).await.expect("allowed");
    let deleted = ratelimit::janitor_sweep(&pool, t(3 * 3600 + 1)).await.expect("sweep");
    assert_eq!(deleted, 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT bucket_key FROM rate_limit_buckets").fetch_all(&pool).await.expect("rows");
    assert_eq!(left, vec!["jan:fresh".to_string()]);
}

#[tokio::test]
async fn three_replicas_share_one_budget_of_ten_across_one_hundred_concurrent_calls() {
    let (url, _pool) = migrated_database(false).await;
    let mut pools = Vec::new();
    for _ in 0..3 {
        pools.push(certctl_server::db::connect(&url, 10).await.expect("pool"));
    }
    let limit = Limit { max: 10, window: Duration::from_secs(3600) };
    let limiters: Vec<Arc<dyn Limiter>> =
        pools.iter().map(|p| ratelimit::build(RateLimitBackend::Postgres, p, "acme-orders", limit)).collect();
    for round in 0..20 {
        let key = format!("account-{round}");
        let now = Utc::now();
        let mut tasks = Vec::new();
        for i in 0..100 {
            let l = limiters[i % 3].clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move { l.allow(&key, now).await }));
        }
        let mut allowed = 0;
        for task in tasks {
            match task.await.expect("join") {
                Ok(()) => allowed += 1,
                Err(LimiterError::Limited(_)) => {}
                Err(e) => panic!("backend failure: {e}"),
            }
        }
        assert_eq!(allowed, 10, "round {round}: exactly the cap is admitted across replicas");
    }
}

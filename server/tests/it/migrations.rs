//! The migration runner's contract, proven against real PostgreSQL.

use std::borrow::Cow;
use std::collections::BTreeSet;

use certctl_server::db::migrate::{MIGRATOR, MigrationError, run_with};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

use crate::support::fresh_database_url;

/// Everything in the `public` schema that a migration can add, as comparable text.
async fn catalog(url: &str) -> BTreeSet<String> {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let queries = [
        // Tables and columns with type, nullability and default.
        "SELECT 'column ' || c.table_name || '.' || c.column_name || ' ' || c.data_type || ' ' || c.is_nullable
                || ' ' || coalesce(c.column_default, '')
           FROM information_schema.columns c
          WHERE c.table_schema = 'public' AND c.table_name <> '_sqlx_migrations'",
        // Constraints with their definitions.
        "SELECT 'constraint ' || cl.relname || '.' || co.conname || ' ' || pg_get_constraintdef(co.oid)
           FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
          WHERE n.nspname = 'public' AND cl.relname <> '_sqlx_migrations'",
        // Indexes.
        "SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
        // Triggers.
        "SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t
           JOIN pg_class cl ON cl.oid = t.tgrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
          WHERE n.nspname = 'public' AND NOT t.tgisinternal",
        // Functions.
        "SELECT 'function ' || p.proname || ' ' || md5(p.prosrc) FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
        // Sequences and other relations.
        "SELECT 'relation ' || c.relkind::text || ' ' || c.relname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname NOT LIKE '_sqlx_migrations%'",
    ];
    let mut out = BTreeSet::new();
    for q in queries {
        let rows: Vec<String> = sqlx::query_scalar(q).fetch_all(&mut conn).await.expect("catalog query");
        out.extend(rows);
    }
    conn.close().await.expect("close");
    out
}

/// A migrator holding only the first `n` embedded migrations.
fn first(n: usize) -> Migrator {
    let ups: Vec<_> = MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).take(n).cloned().collect();
    let versions: BTreeSet<i64> = ups.iter().map(|m| m.version).collect();
    let mut all: Vec<_> = ups;
    all.extend(
        MIGRATOR.iter().filter(|m| m.migration_type.is_down_migration() && versions.contains(&m.version)).cloned(),
    );
    let mut m = Migrator::DEFAULT;
    m.migrations = Cow::Owned(all);
    m
}

fn up_count() -> usize {
    MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).count()
}

async fn ledger(url: &str) -> Vec<(i64, bool)> {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let rows = sqlx::query_as::<_, (i64, bool)>("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .expect("ledger");
    conn.close().await.expect("close");
    rows
}

#[tokio::test]
async fn first_run_fills_the_ledger_and_a_second_run_applies_nothing() {
    let url = fresh_database_url().await;
    run_with(&MIGRATOR, &url).await.expect("first run");
    let after_first = ledger(&url).await;
    assert_eq!(after_first.len(), up_count(), "one ledger row per migration");
    assert!(after_first.iter().all(|(_, ok)| *ok));
    let schema = catalog(&url).await;

    run_with(&MIGRATOR, &url).await.expect("second run");
    assert_eq!(ledger(&url).await, after_first, "second run added no ledger rows");
    assert_eq!(catalog(&url).await, schema, "second run changed no schema");
}

#[tokio::test]
async fn a_fresh_database_reaches_the_latest_version() {
    let url = fresh_database_url().await;
    run_with(&MIGRATOR, &url).await.expect("run");
    let latest = MIGRATOR.iter().map(|m| m.version).max().expect("has migrations");
    assert_eq!(ledger(&url).await.last().map(|r| r.0), Some(latest));
    // Spot-check the contract's tables exist.
    let schema = catalog(&url).await;
    for table in [
        "teams",
        "owners",
        "renewal_policies",
        "certificate_profiles",
        "issuers",
        "managed_certificates",
        "certificate_versions",
        "certificate_revocations",
        "agents",
        "deployment_targets",
        "certificate_target_mappings",
        "jobs",
        "notification_events",
        "audit_events",
        "acme_accounts",
        "acme_orders",
        "acme_authorizations",
        "acme_challenges",
        "acme_nonces",
        "rate_limit_buckets",
    ] {
        assert!(schema.contains(&format!("relation r {table}")), "table {table} missing");
    }
    assert!(schema.iter().any(|s| s.contains("idx_notification_events_retry_sweep")
        && s.contains("WHERE ((status = 'failed'::text) AND (next_retry_at IS NOT NULL))")));
}

#[tokio::test]
async fn eight_concurrent_migrators_all_succeed_without_duplicate_ledger_rows() {
    let url = fresh_database_url().await;
    // Eight OS threads, each with its own runtime and connection, released together.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                barrier.wait();
                rt.block_on(run_with(&MIGRATOR, &url))
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("every concurrent migrator succeeds");
    }
    let rows = ledger(&url).await;
    assert_eq!(rows.len(), up_count());
    let distinct: BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(distinct.len(), rows.len(), "no version recorded twice");
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused_with_a_clear_error() {
    let url = fresh_database_url().await;
    run_with(&MIGRATOR, &url).await.expect("run");
    // The same migrations, with migration 3's SQL edited after it was applied.
    let mut changed: Vec<_> = MIGRATOR.iter().cloned().collect();
    let target =
        changed.iter_mut().find(|m| m.version == 3 && m.migration_type.is_up_migration()).expect("migration 3");
    let edited = format!("{}\n-- edited after release\n", target.sql.as_str());
    *target = sqlx::migrate::Migration::new(
        target.version,
        target.description.clone(),
        target.migration_type,
        sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(edited)),
        target.no_tx,
    );
    let mut m = Migrator::DEFAULT;
    m.migrations = Cow::Owned(changed);
    let err = run_with(&m, &url).await.expect_err("changed migration must be refused");
    assert!(matches!(err, MigrationError::Changed(3)), "got {err:?}");
    assert!(err.to_string().contains("migration 3 was changed after it was applied"), "{err}");
    // And the lock was released: the original still runs (applies nothing).
    run_with(&MIGRATOR, &url).await.expect("original still runs after the refusal");
}

#[tokio::test]
async fn every_migration_round_trips_up_down_up_to_the_same_schema() {
    let url = fresh_database_url().await;
    let n = up_count();
    let mut before = catalog(&url).await; // empty schema
    for k in 1..=n {
        let m = first(k);
        let version = m.iter().filter(|x| x.migration_type.is_up_migration()).map(|x| x.version).max().expect("v");
        let prev_version = if k == 1 { 0 } else { first(k - 1).iter().map(|x| x.version).max().expect("v") };
        run_with(&m, &url).await.unwrap_or_else(|e| panic!("up {version}: {e}"));
        let after_up = catalog(&url).await;
        assert_ne!(after_up, before, "migration {version} added nothing");

        let mut conn = PgConnection::connect(&url).await.expect("connect");
        m.undo(&mut conn, prev_version).await.unwrap_or_else(|e| panic!("down {version}: {e}"));
        conn.close().await.expect("close");
        let after_down = catalog(&url).await;
        let leftover: Vec<_> = after_down.symmetric_difference(&before).collect();
        assert!(leftover.is_empty(), "down {version} did not restore the schema: {leftover:#?}");

        run_with(&m, &url).await.unwrap_or_else(|e| panic!("re-up {version}: {e}"));
        assert_eq!(catalog(&url).await, after_up, "up after down of {version} gives a different schema");
        before = after_up;
    }
}

#[tokio::test]
async fn audit_events_are_append_only() {
    let (_url, pool) = crate::support::migrated_database(false).await;
    sqlx::query("INSERT INTO audit_events (id, actor, action, resource_type) VALUES ('a1', 'x', 'create', 'team')")
        .execute(&pool)
        .await
        .expect("insert allowed");
    let upd = sqlx::query("UPDATE audit_events SET actor = 'y'").execute(&pool).await;
    assert!(upd.is_err(), "UPDATE must be rejected");
    let del = sqlx::query("DELETE FROM audit_events").execute(&pool).await;
    assert!(del.is_err(), "DELETE must be rejected");
    let tr = sqlx::query("TRUNCATE audit_events").execute(&pool).await;
    assert!(tr.is_err(), "TRUNCATE must be rejected");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events").fetch_one(&pool).await.expect("count");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_demo_seed_is_idempotent() {
    let (_url, pool) = crate::support::migrated_database(true).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM teams) + (SELECT count(*) FROM owners) + (SELECT count(*) FROM managed_certificates)
                  + (SELECT count(*) FROM agents) + (SELECT count(*) FROM certificate_profiles)",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    let first = count().await;
    certctl_server::db::demo_seed(&pool).await.expect("second seed");
    assert_eq!(count().await, first);
    let mode: String = sqlx::query_scalar("SELECT acme_auth_mode FROM certificate_profiles WHERE id = 'prof-test'")
        .fetch_one(&pool)
        .await
        .expect("prof-test");
    assert_eq!(mode, "trust_authenticated");
}

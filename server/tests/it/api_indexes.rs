//! The hot API statements are served by indexes (checked with EXPLAIN, with sequential scans
//! disabled so the answer does not depend on how small the test tables are).

use sqlx::{Connection, Row};

use crate::api_support::seed_certificates;
use crate::support::migrated_database;

async fn plan(conn: &mut sqlx::PgConnection, prepare: &str, execute: &str) -> String {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DEALLOCATE ALL; {prepare}")))
        .execute(&mut *conn)
        .await
        .expect("prepare");
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {execute}"))).fetch_all(&mut *conn).await.expect("explain");
    rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn hot_api_statements_are_served_by_indexes() {
    let (url, pool) = migrated_database(true).await;
    seed_certificates(&pool, "ix", 2_000, "'Active'").await;
    sqlx::query("ANALYZE").execute(&pool).await.expect("analyze");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.expect("set");

    let hb = plan(
        &mut conn,
        &format!(
            "PREPARE hb(text, text, text, text, text, text, text) AS {}",
            certctl_server::http::agents::HEARTBEAT_SQL
        ),
        "EXECUTE hb('agent-demo-web01', NULL, NULL, NULL, NULL, NULL, 'ab')",
    )
    .await;
    assert!(hb.contains("agents_pkey"), "heartbeat:\n{hb}");

    let work = plan(
        &mut conn,
        &format!("PREPARE work(text, bigint) AS {}", certctl_server::http::agents::WORK_SQL),
        "EXECUTE work('agent-demo-web01', 50)",
    )
    .await;
    assert!(work.contains("agents_pkey"), "work poll:\n{work}");
    assert!(!work.contains("Seq Scan"), "work poll:\n{work}");

    let auth = plan(
        &mut conn,
        &format!("PREPARE cred(text) AS {}", certctl_server::http::auth::AGENT_CREDENTIAL_SQL),
        "EXECUTE cred('agent-demo-web01')",
    )
    .await;
    assert!(auth.contains("agents_pkey"), "agent credential lookup:\n{auth}");

    let keyset = plan(
        &mut conn,
        "PREPARE ks(timestamptz, text, bigint) AS SELECT id FROM managed_certificates
          WHERE (created_at, id) > ($1, $2) ORDER BY created_at ASC, id ASC LIMIT $3",
        "EXECUTE ks(now() - interval '1 day', 'ix-1', 51)",
    )
    .await;
    assert!(keyset.contains("idx_managed_certificates_created_at_id"), "keyset page:\n{keyset}");

    let work = plan(
        &mut conn,
        "PREPARE wk(text, bigint) AS SELECT id FROM jobs
          WHERE agent_id = $1 AND type = 'Deployment' AND status = 'Pending' AND scheduled_at <= now()
          ORDER BY scheduled_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        "EXECUTE wk('agent-demo-web01', 50)",
    )
    .await;
    assert!(work.contains("idx_jobs_agent_status"), "work poll:\n{work}");
}

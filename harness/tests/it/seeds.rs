//! The fixtures against a real throw-away PostgreSQL (migrated, with the demo seed): sizes,
//! links, OS mix, heartbeat stagger, credentials the harness can compute, idempotence.

use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;

use certctl_loadtest::embedded::{self, Embedded, EmbeddedOptions};
use certctl_loadtest::scenario::template::{Fleet, agent_id, agent_token, cert_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixtures_build_the_fleet_idempotently_with_usable_agent_credentials() {
    // The real server process migrates the database and applies the demo seed at boot; the
    // harness reaches it only over HTTP and SQL, as in a run.
    let server_bin = match embedded::find_server_bin(None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let logs = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        server_bin,
        durability: certctl_pg_embedded::Durability::Fast,
        log_dir: logs.path().to_path_buf(),
        api_key: "loadtest-seeds-test".into(),
        ready_timeout: std::time::Duration::from_secs(120),
        replicas: 1,
        fault_settings: false,
        extra_env: Vec::new(),
    };
    let env = {
        let _g = crate::support::lock().await;
        Embedded::start(&opts, || false).await.unwrap()
    };
    let url = env.database_url.clone();
    let pool = PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let fleet = Fleet { certs: 1200, agents: 500 };
    let first = certctl_loadtest::seed::apply(&url, &dir, None, fleet).await.unwrap();
    assert_eq!(first.files, ["01_bulk_renewal_certs.sql", "02_agent_fleet.sql", "03_agent_fleet_work.sql"]);
    // Re-running is harmless: nothing is duplicated, nothing fails.
    certctl_loadtest::seed::apply(&url, &dir, None, fleet).await.unwrap();

    let certs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM managed_certificates WHERE name LIKE 'loadtest-bulk-%' AND status = 'Active' \
         AND issuer_id = 'iss-local' AND owner_id = 'o-alice' AND team_id = 't-platform' \
         AND renewal_policy_id = 'rp-standard' AND expires_at > now() AND expires_at <= now() + interval '30 days 1 minute'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(certs, 1200);
    let last: String = sqlx::query_scalar("SELECT max(id) FROM managed_certificates WHERE name LIKE 'loadtest-bulk-%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(last, cert_id(1200));

    let os: Vec<(String, i64)> = sqlx::query_as(
        "SELECT os, count(*) FROM agents WHERE name LIKE 'loadtest-agent-%' AND status = 'Online' GROUP BY os ORDER BY os",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(os, [("darwin".to_string(), 50), ("linux".to_string(), 400), ("windows".to_string(), 50)]);
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agents WHERE name LIKE 'loadtest-agent-%' AND last_heartbeat_at < now() - interval '61 seconds'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stale, 0, "heartbeats are staggered over the last 60 s");

    // The server authenticates agent n when hex(SHA-256(token)) equals credential_hash.
    for n in [1u64, 77, 500] {
        let hash: String = sqlx::query_scalar("SELECT credential_hash FROM agents WHERE id = $1")
            .bind(agent_id(n))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(hash, hex::encode(Sha256::digest(agent_token(n).as_bytes())), "agent {n}");
    }
    pool.close().await;
    drop(env);
}

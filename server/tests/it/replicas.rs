//! The multi-replica proof: three real server instances (`serve` three times in-process, one
//! pool each) on one database renew 2,000 certificates. Every job is processed exactly once,
//! every certificate ends `Active` with exactly one new version, and stopping the leader hands
//! its loops to another instance.

use std::time::Duration;

use crate::issuance::check_leaf;
use crate::support::{TestApp, fresh_database_url, spawn_app_on};

const N: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_renew_two_thousand_certificates_exactly_once_and_hand_over_leadership() {
    let url = fresh_database_url().await;
    let mut apps: Vec<TestApp> = Vec::new();
    for id in ["replica-1", "replica-2", "replica-3"] {
        apps.push(
            spawn_app_on(
                &url,
                &[
                    "--instance-id",
                    id,
                    "--keygen-mode",
                    "server",
                    "--job-processor-interval",
                    "200ms",
                    "--leader-election-interval",
                    "100ms",
                    "--job-batch-size",
                    "100",
                ],
            )
            .await,
        );
    }
    // An observer pool of its own: the replicas' pools close when they stop.
    let pool = certctl_server::db::connect(&url, 5).await.expect("observer pool");
    // One statement seeds the certificates, one creates the jobs — as bulk renew would.
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query(
        "INSERT INTO managed_certificates (id, name, common_name, sans, owner_id, team_id, issuer_id, \
                 renewal_policy_id, certificate_profile_id, status, expires_at) \
         SELECT 'rc-' || g, 'rc-' || g, 'host' || g || '.example.com', ARRAY['host' || g || '.example.com'], \
                'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls', 'RenewalInProgress', \
                now() + interval '5 days' \
           FROM generate_series(1, $1) g",
    )
    .bind(N)
    .execute(&mut *tx)
    .await
    .expect("certificates");
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, status, max_attempts) \
         SELECT 'rjob-' || substr(id, 4), 'Renewal', id, 'Pending', 3 FROM managed_certificates WHERE id LIKE 'rc-%'",
    )
    .execute(&mut *tx)
    .await
    .expect("jobs");
    tx.commit().await.expect("commit");

    let mut done = 0;
    for _ in 0..1200 {
        done = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE id LIKE 'rjob-%' AND status NOT IN ('Pending', 'Running')",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        if done == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done, N, "every job finished");

    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE id LIKE 'rjob-%' AND status = 'Completed' AND attempts = 1",
    )
    .fetch_one(&pool)
    .await
    .expect("completed");
    assert_eq!(completed, N, "every job completed on its first and only claim");
    let (versions, distinct_jobs, distinct_certs): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT job_id), count(DISTINCT certificate_id) FROM certificate_versions \
          WHERE job_id LIKE 'rjob-%'",
    )
    .fetch_one(&pool)
    .await
    .expect("versions");
    assert_eq!((versions, distinct_jobs, distinct_certs), (N, N, N), "one version per job and per certificate");
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM managed_certificates c \
          WHERE c.id LIKE 'rc-%' AND (c.status <> 'Active' \
             OR (SELECT count(*) FROM certificate_versions v WHERE v.certificate_id = c.id) <> 1 \
             OR c.expires_at <> (SELECT v.not_after FROM certificate_versions v WHERE v.certificate_id = c.id))",
    )
    .fetch_one(&pool)
    .await
    .expect("certs");
    assert_eq!(mismatched, 0, "every certificate is Active with exactly one new version and its expiry");
    let serials: i64 = sqlx::query_scalar("SELECT count(DISTINCT serial_number) FROM certificate_versions")
        .fetch_one(&pool)
        .await
        .expect("serials");
    assert!(serials >= N, "serials are unique");
    let chain: String = sqlx::query_scalar("SELECT pem_chain FROM certificate_versions WHERE job_id = 'rjob-1234'")
        .fetch_one(&pool)
        .await
        .expect("sample");
    assert_eq!(check_leaf(&chain, 90, false), vec!["host1234.example.com"]);
    let by_replica: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT claimed_by, count(*) FROM jobs WHERE id LIKE 'rjob-%' GROUP BY claimed_by ORDER BY claimed_by",
    )
    .fetch_all(&pool)
    .await
    .expect("spread");
    eprintln!("jobs per replica: {by_replica:?}");

    // Exactly one leader; stopping it hands the leader-only loops to another instance.
    let leaders: Vec<usize> = (0..3).filter(|i| state(&apps[*i]).scheduler.is_leader()).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let old = apps.remove(leaders[0]);
    let old_id = state(&old).instance_id.to_string();
    old.stop().await;
    let mut new_leader = None;
    for _ in 0..300 {
        new_leader = apps.iter().position(|a| state(a).scheduler.is_leader());
        if new_leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = new_leader.expect("another instance became leader");
    let new_id = state(&apps[new_leader]).instance_id.to_string();
    assert_ne!(new_id, old_id);
    let recorded: String = sqlx::query_scalar("SELECT instance_id FROM scheduler_leaders WHERE role = 'scheduler'")
        .fetch_one(&pool)
        .await
        .expect("leader row");
    assert_eq!(recorded, new_id);
    for app in apps {
        app.stop().await;
    }
}

fn state(app: &TestApp) -> &certctl_server::AppState {
    &app.server.as_ref().expect("running").state
}

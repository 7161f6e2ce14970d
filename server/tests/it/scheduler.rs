//! The job queue and the scheduler loops, driven tick by tick with an injected `now`, plus
//! leader election between real in-process replicas.

use std::time::Duration;

use certctl_server::AppState;
use certctl_server::issuance::{self, IssuanceError};
use certctl_server::scheduler::{LoopKind, run_tick};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::issuance::{check_leaf, csr_for};
use crate::support::{TestApp, fresh_database_url, spawn_app, spawn_app_on};

fn state_of(app: &TestApp) -> AppState {
    app.server.as_ref().expect("running").state.clone()
}

async fn insert_job(pool: &PgPool, id: &str, cert: &str, status: &str, max_attempts: i32) {
    sqlx::query("INSERT INTO jobs (id, type, certificate_id, status, max_attempts) VALUES ($1, 'Renewal', $2, $3, $4)")
        .bind(id)
        .bind(cert)
        .bind(status)
        .bind(max_attempts)
        .execute(pool)
        .await
        .expect("job");
    sqlx::query("UPDATE managed_certificates SET status = 'RenewalInProgress' WHERE id = $1")
        .bind(cert)
        .execute(pool)
        .await
        .expect("cert");
}

async fn job(pool: &PgPool, id: &str) -> (String, i32, Option<String>, Option<String>) {
    sqlx::query_as("SELECT status, attempts, last_error, claimed_by FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job row")
}

async fn cert_status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM managed_certificates WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("cert")
}

async fn add_log_channel(pool: &PgPool) {
    sqlx::query("INSERT INTO notification_channels (id, name, type) VALUES ('ch-log', 'log', 'log')")
        .execute(pool)
        .await
        .expect("channel");
}

#[tokio::test]
async fn server_keygen_renewal_stores_one_version_and_activates_the_certificate_in_one_step() {
    let app = spawn_app(&["--scheduler-enabled", "false", "--keygen-mode", "server"]).await;
    let state = state_of(&app);
    add_log_channel(&app.pool).await;
    insert_job(&app.pool, "job-1", "mc-demo-www", "Pending", 3).await;
    let now = Utc::now();
    run_tick(&state, LoopKind::JobProcessor, now).await.expect("tick");
    let (status, attempts, error, claimed_by) = job(&app.pool, "job-1").await;
    assert_eq!((status.as_str(), attempts, error), ("Completed", 1, None));
    assert_eq!(claimed_by.as_deref(), Some(&*state.instance_id));
    let (chain, not_after, key, alg): (String, DateTime<Utc>, Option<String>, String) = sqlx::query_as(
        "SELECT pem_chain, not_after, private_key_pem, key_algorithm FROM certificate_versions WHERE job_id = 'job-1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("one version for the job");
    let sans = check_leaf(&chain, 90, false);
    assert_eq!(sans, vec!["www.example.com", "example.com"]);
    assert_eq!(alg, "ECDSA-P256");
    assert!(key.is_some_and(|k| k.contains("PRIVATE KEY")));
    let (status, expires_at, renewed): (String, DateTime<Utc>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT status, expires_at, last_renewal_at FROM managed_certificates WHERE id = 'mc-demo-www'")
            .fetch_one(&app.pool)
            .await
            .expect("cert");
    assert_eq!(status, "Active");
    assert_eq!(expires_at, not_after);
    assert!(renewed.is_some());
    assert_eq!(state.metrics.issuance_count("GenericCA", "success"), 1);
    let issued: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_events WHERE type = 'certificate_issued'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(issued, 1, "one event per enabled channel");
    // Nothing left to claim.
    let again = run_tick(&state, LoopKind::JobProcessor, now).await.expect("tick");
    assert!(again.contains("completed: 0"), "{again}");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_of_renewals_is_issued_and_stored_in_chunks_with_one_version_and_event_per_job() {
    // 120 jobs, concurrency 2: chunks of at most JOB_CHUNK (50), each stored in one transaction.
    let app =
        spawn_app(&["--scheduler-enabled", "false", "--keygen-mode", "server", "--renewal-concurrency", "2"]).await;
    let state = state_of(&app);
    add_log_channel(&app.pool).await;
    sqlx::query(
        "INSERT INTO managed_certificates (id, name, common_name, sans, owner_id, team_id, issuer_id, \
                 renewal_policy_id, certificate_profile_id, status) \
         SELECT 'mc-b-' || g, 'mc-b-' || g, 'b' || g || '.example.com', '{}'::text[], \
                'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls', 'RenewalInProgress' \
           FROM generate_series(1, 120) g",
    )
    .execute(&app.pool)
    .await
    .expect("certificates");
    sqlx::query("INSERT INTO jobs (id, type, certificate_id, status) SELECT 'job-b-' || g, 'Renewal', 'mc-b-' || g, 'Pending' FROM generate_series(1, 120) g")
        .execute(&app.pool)
        .await
        .expect("jobs");
    // One job's certificate is archived meanwhile: only that job fails, the chunk still stores.
    sqlx::query("UPDATE managed_certificates SET status = 'Archived' WHERE id = 'mc-b-7'")
        .execute(&app.pool)
        .await
        .expect("archive");
    let stats = certctl_server::scheduler::jobs::process_batch(&state, Utc::now()).await.expect("batch");
    assert_eq!((stats.completed, stats.failed), (119, 1));
    let (status, _, error, _) = job(&app.pool, "job-b-7").await;
    assert_eq!(status, "Failed");
    assert!(error.is_some_and(|e| e.contains("Archived")));
    let (versions, distinct_serials, jobs_done, active, events): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM certificate_versions WHERE certificate_id LIKE 'mc-b-%'),
                (SELECT count(DISTINCT serial_number) FROM certificate_versions WHERE certificate_id LIKE 'mc-b-%'),
                (SELECT count(*) FROM jobs j JOIN certificate_versions v ON v.job_id = j.id
                  WHERE j.id LIKE 'job-b-%' AND j.status = 'Completed' AND v.certificate_id = j.certificate_id),
                (SELECT count(*) FROM managed_certificates c JOIN certificate_versions v ON v.certificate_id = c.id
                  WHERE c.id LIKE 'mc-b-%' AND c.status = 'Active' AND c.expires_at = v.not_after
                    AND c.last_renewal_at IS NOT NULL),
                (SELECT count(*) FROM notification_events WHERE type = 'certificate_issued' AND certificate_id LIKE 'mc-b-%')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!((versions, distinct_serials, jobs_done, active, events), (119, 119, 119, 119, 119));
    let chain: String =
        sqlx::query_scalar("SELECT pem_chain FROM certificate_versions WHERE certificate_id = 'mc-b-42'")
            .fetch_one(&app.pool)
            .await
            .expect("chain");
    assert_eq!(check_leaf(&chain, 90, false), vec!["b42.example.com"]);
    assert_eq!(state.metrics.issuance_count("GenericCA", "success"), 119);
    app.stop().await;
}

#[tokio::test]
async fn agent_mode_parks_the_job_until_the_agent_posts_a_csr_for_its_own_names() {
    let app = spawn_app(&["--scheduler-enabled", "false", "--keygen-mode", "agent"]).await;
    let state = state_of(&app);
    insert_job(&app.pool, "job-a", "mc-demo-api", "Pending", 3).await;
    run_tick(&state, LoopKind::JobProcessor, Utc::now()).await.expect("tick");
    let (status, attempts, _, _) = job(&app.pool, "job-a").await;
    assert_eq!((status.as_str(), attempts), ("AwaitingCSR", 1));
    let agent: Option<String> =
        sqlx::query_scalar("SELECT agent_id FROM jobs WHERE id = 'job-a'").fetch_one(&app.pool).await.expect("agent");
    assert_eq!(agent.as_deref(), Some("agent-demo-web01"));

    let good = csr_for(&["api.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let err = issuance::complete_job_with_csr(&state, "agent-demo-db01", "mc-demo-api", &good)
        .await
        .expect_err("other agent");
    assert!(matches!(err, IssuanceError::Conflict(_)), "{err}");
    let foreign = csr_for(&["evil.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let err =
        issuance::complete_job_with_csr(&state, "agent-demo-web01", "mc-demo-api", &foreign).await.expect_err("names");
    assert!(matches!(err, IssuanceError::NotAllowed(_)), "{err}");
    assert_eq!(job(&app.pool, "job-a").await.0, "AwaitingCSR", "a refused CSR leaves the job waiting");
    let err = issuance::complete_job_with_csr(&state, "agent-demo-web01", "mc-nope", &good).await.expect_err("unknown");
    assert!(matches!(err, IssuanceError::NotFound(_)));

    let job_id = issuance::complete_job_with_csr(&state, "agent-demo-web01", "mc-demo-api", &good).await.expect("done");
    assert_eq!(job_id, "job-a");
    assert_eq!(job(&app.pool, "job-a").await.0, "Completed");
    assert_eq!(cert_status(&app.pool, "mc-demo-api").await, "Active");
    let (chain, csr): (String, Option<String>) =
        sqlx::query_as("SELECT pem_chain, csr_pem FROM certificate_versions WHERE job_id = 'job-a'")
            .fetch_one(&app.pool)
            .await
            .expect("version");
    assert_eq!(check_leaf(&chain, 90, false), vec!["api.example.com"]);
    assert_eq!(csr.as_deref(), Some(good.as_str()));
    // A second CSR finds no job waiting.
    let err =
        issuance::complete_job_with_csr(&state, "agent-demo-web01", "mc-demo-api", &good).await.expect_err("done");
    assert!(matches!(err, IssuanceError::Conflict(_)));
    app.stop().await;
}

#[tokio::test]
async fn a_failing_job_is_retried_until_max_attempts_and_then_fails_its_certificate() {
    let app = spawn_app(&["--scheduler-enabled", "false", "--keygen-mode", "server"]).await;
    let state = state_of(&app);
    add_log_channel(&app.pool).await;
    sqlx::query("INSERT INTO issuers (id, name, type) VALUES ('iss-ext', 'External', 'ACME')")
        .execute(&app.pool)
        .await
        .expect("issuer");
    sqlx::query("UPDATE managed_certificates SET issuer_id = 'iss-ext' WHERE id = 'mc-demo-www'")
        .execute(&app.pool)
        .await
        .expect("cert");
    insert_job(&app.pool, "job-f", "mc-demo-www", "Pending", 2).await;
    let now = Utc::now();
    run_tick(&state, LoopKind::JobProcessor, now).await.expect("tick");
    let (status, attempts, error, _) = job(&app.pool, "job-f").await;
    assert_eq!((status.as_str(), attempts), ("Failed", 1));
    assert!(error.is_some_and(|e| e.contains("only the local CA")));
    assert_eq!(cert_status(&app.pool, "mc-demo-www").await, "RenewalInProgress", "attempts are left");

    assert_eq!(run_tick(&state, LoopKind::JobRetry, now).await.expect("retry"), "requeued=1");
    assert_eq!(job(&app.pool, "job-f").await.0, "Pending");
    run_tick(&state, LoopKind::JobProcessor, now).await.expect("tick");
    assert_eq!(job(&app.pool, "job-f").await.0, "Failed");
    assert_eq!(job(&app.pool, "job-f").await.1, 2);
    assert_eq!(cert_status(&app.pool, "mc-demo-www").await, "Failed", "no attempts left");
    assert_eq!(run_tick(&state, LoopKind::JobRetry, now).await.expect("retry"), "requeued=0");
    let failed_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_events WHERE type = 'issuance_failed'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(failed_events, 1);
    assert_eq!(state.metrics.issuance_count("ACME", "failure"), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_timeout_sweep_fails_stuck_running_and_awaiting_csr_jobs_only() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let now = Utc::now();
    for (id, cert, status, age) in [
        ("job-run-old", "mc-demo-api", "Running", chrono::Duration::minutes(11)),
        ("job-csr-old", "mc-demo-www", "AwaitingCSR", chrono::Duration::hours(25)),
        ("job-run-new", "mc-demo-db", "Running", chrono::Duration::minutes(1)),
    ] {
        insert_job(&app.pool, id, cert, status, 3).await;
        sqlx::query("UPDATE jobs SET started_at = $2, attempts = 1, claimed_by = 'replica-x' WHERE id = $1")
            .bind(id)
            .bind(now - age)
            .execute(&app.pool)
            .await
            .expect("age");
    }
    assert_eq!(run_tick(&state, LoopKind::JobTimeout, now).await.expect("tick"), "timed_out=2");
    let (s, _, e, _) = job(&app.pool, "job-run-old").await;
    assert_eq!(s, "Failed");
    assert_eq!(e.as_deref(), Some("timed out: Running for longer than 10m (claimed by replica-x)"));
    let (s, _, e, _) = job(&app.pool, "job-csr-old").await;
    assert_eq!(s, "Failed");
    assert!(e.is_some_and(|e| e.starts_with("timed out: AwaitingCSR for longer than 24h")));
    assert_eq!(job(&app.pool, "job-run-new").await.0, "Running");
    app.stop().await;
}

#[tokio::test]
async fn silent_agents_go_offline_and_their_csr_jobs_are_reaped_after_the_csr_timeout() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let now = Utc::now();
    sqlx::query("UPDATE agents SET status = 'Online', last_heartbeat_at = $1 WHERE id = 'agent-demo-web01'")
        .bind(now - chrono::Duration::minutes(6))
        .execute(&app.pool)
        .await
        .expect("web01");
    sqlx::query("UPDATE agents SET status = 'Offline', last_heartbeat_at = $1 WHERE id = 'agent-demo-db01'")
        .bind(now - chrono::Duration::hours(48))
        .execute(&app.pool)
        .await
        .expect("db01");
    insert_job(&app.pool, "job-db", "mc-demo-db", "AwaitingCSR", 1).await;
    sqlx::query("UPDATE jobs SET agent_id = 'agent-demo-db01', started_at = $1, attempts = 1 WHERE id = 'job-db'")
        .bind(now - chrono::Duration::minutes(5))
        .execute(&app.pool)
        .await
        .expect("job");
    insert_job(&app.pool, "job-web", "mc-demo-api", "AwaitingCSR", 1).await;
    sqlx::query("UPDATE jobs SET agent_id = 'agent-demo-web01', started_at = $1, attempts = 1 WHERE id = 'job-web'")
        .bind(now - chrono::Duration::minutes(5))
        .execute(&app.pool)
        .await
        .expect("job");
    let summary = run_tick(&state, LoopKind::AgentHealth, now).await.expect("tick");
    assert_eq!(summary, "agents_offline=1 jobs_reaped=1");
    let status: String = sqlx::query_scalar("SELECT status FROM agents WHERE id = 'agent-demo-web01'")
        .fetch_one(&app.pool)
        .await
        .expect("agent");
    assert_eq!(status, "Offline");
    let (s, _, e, _) = job(&app.pool, "job-db").await;
    assert_eq!(s, "Failed");
    assert!(e.is_some_and(|e| e.contains("agent offline")));
    assert_eq!(cert_status(&app.pool, "mc-demo-db").await, "Failed", "max_attempts 1 reached");
    assert_eq!(job(&app.pool, "job-web").await.0, "AwaitingCSR", "recently silent agent keeps its job");
    app.stop().await;
}

#[tokio::test]
async fn the_renewal_check_creates_one_job_per_due_certificate_and_warns_once_per_threshold() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    add_log_channel(&app.pool).await;
    let now = Utc::now();
    let first = run_tick(&state, LoopKind::RenewalCheck, now).await.expect("tick");
    assert_eq!(first, "RenewalCheck { jobs_created: 1, marked_expiring: 0, notifications: 1 }");
    assert_eq!(cert_status(&app.pool, "mc-demo-www").await, "RenewalInProgress");
    assert_eq!(cert_status(&app.pool, "mc-demo-api").await, "Active", "60 days left, window is 30");
    let (subject, max_attempts): (String, i32) = sqlx::query_as(
        "SELECT e.subject, j.max_attempts FROM notification_events e JOIN jobs j ON j.certificate_id = e.certificate_id \
          WHERE e.type = 'certificate_expiring'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("warning");
    assert!(subject.starts_with("Certificate www.example.com expires within 14 days"), "{subject}");
    assert_eq!(max_attempts, 4, "policy max_retries 3 + the first attempt");
    let second = run_tick(&state, LoopKind::RenewalCheck, now).await.expect("tick");
    assert_eq!(second, "RenewalCheck { jobs_created: 0, marked_expiring: 0, notifications: 0 }");
    // Four days later www crosses the 7-day threshold: one more warning, still one job.
    let later = run_tick(&state, LoopKind::RenewalCheck, now + chrono::Duration::days(4)).await.expect("tick");
    assert_eq!(later, "RenewalCheck { jobs_created: 0, marked_expiring: 0, notifications: 1 }");
    app.stop().await;
}

#[tokio::test]
async fn expired_certificates_are_marked_and_stale_acme_state_is_collected() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let now = Utc::now();
    sqlx::query("UPDATE managed_certificates SET expires_at = $1 WHERE id = 'mc-demo-api'")
        .bind(now - chrono::Duration::seconds(1))
        .execute(&app.pool)
        .await
        .expect("expire");
    assert_eq!(run_tick(&state, LoopKind::ShortLivedExpiry, now).await.expect("tick"), "expired=1");
    assert_eq!(cert_status(&app.pool, "mc-demo-api").await, "Expired");
    let past = now - chrono::Duration::minutes(1);
    let future = now + chrono::Duration::hours(1);
    sqlx::raw_sql(
        "INSERT INTO acme_accounts (id, profile_id, jwk_thumbprint, jwk) VALUES ('acct-1', 'prof-test', 'tp', '{}'); \
         INSERT INTO acme_orders (id, account_id, profile_id, identifiers, expires_at) \
              VALUES ('ord-old', 'acct-1', 'prof-test', '[]', now() - interval '1 hour'), \
                     ('ord-new', 'acct-1', 'prof-test', '[]', now() + interval '1 hour'); \
         INSERT INTO acme_authorizations (id, order_id, account_id, identifier_value, expires_at) \
              VALUES ('authz-old', 'ord-old', 'acct-1', 'a.example.com', now() - interval '1 hour');",
    )
    .execute(&app.pool)
    .await
    .expect("acme rows");
    sqlx::query("INSERT INTO acme_nonces (nonce, expires_at) VALUES ('n-old', $1), ('n-new', $2)")
        .bind(past)
        .bind(future)
        .execute(&app.pool)
        .await
        .expect("nonces");
    let gc = run_tick(&state, LoopKind::AcmeGc, now).await.expect("gc");
    assert_eq!(gc, "GcReport { nonces: 1, orders_expired: 1, authorizations_expired: 1, orders_deleted: 0 }");
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM acme_orders ORDER BY id").fetch_all(&app.pool).await.expect("orders");
    assert_eq!(statuses, vec![("ord-new".into(), "pending".into()), ("ord-old".into(), "invalid".into())]);
    app.stop().await;
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn exactly_one_replica_leads_and_leadership_moves_when_the_leader_stops_or_loses_its_connection() {
    let url = fresh_database_url().await;
    let flags = |id: &'static str| ["--instance-id", id, "--leader-election-interval", "100ms"];
    let a = spawn_app_on(&url, &flags("replica-a")).await;
    let b = spawn_app_on(&url, &flags("replica-b")).await;
    let (sa, sb) = (state_of(&a), state_of(&b));
    wait_for("a leader", async || sa.scheduler.is_leader() || sb.scheduler.is_leader()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sa.scheduler.is_leader() ^ sb.scheduler.is_leader(), "exactly one leader");
    let recorded: String = sqlx::query_scalar("SELECT instance_id FROM scheduler_leaders WHERE role = 'scheduler'")
        .fetch_one(&a.pool)
        .await
        .expect("leader row");
    let leader_is_a = sa.scheduler.is_leader();
    assert_eq!(recorded, if leader_is_a { "replica-a" } else { "replica-b" });

    // Kill the leader's dedicated connection (advisory locks are per database; other tests'
    // leaders live in other databases of the same cluster): it steps down, and someone leads again.
    let old = if leader_is_a { sa.clone() } else { sb.clone() };
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND objid = ($1::bigint & x'ffffffff'::bigint)::oid",
    )
    .bind(certctl_server::scheduler::leader::LEADER_LOCK_KEY)
    .fetch_one(&a.pool)
    .await
    .expect("terminate");
    assert_eq!(killed, 1);
    wait_for("the old leader to step down", async || !old.scheduler.is_leader()).await;
    wait_for("a new leader", async || sa.scheduler.is_leader() || sb.scheduler.is_leader()).await;

    // Stop whoever leads now: the other takes over.
    let (leader, follower, follower_state, follower_id) =
        if sa.scheduler.is_leader() { (a, b, sb.clone(), "replica-b") } else { (b, a, sa.clone(), "replica-a") };
    leader.stop().await;
    wait_for("the follower to take over", async || follower_state.scheduler.is_leader()).await;
    let recorded: String = sqlx::query_scalar("SELECT instance_id FROM scheduler_leaders WHERE role = 'scheduler'")
        .fetch_one(&follower.pool)
        .await
        .expect("leader row");
    assert_eq!(recorded, follower_id);
    follower.stop().await;
}

#[tokio::test]
async fn shutdown_drains_the_running_processor_tick_so_no_claimed_job_is_left_running() {
    let url = fresh_database_url().await;
    let app = spawn_app_on(
        &url,
        &[
            "--keygen-mode",
            "server",
            "--job-processor-interval",
            "50ms",
            "--job-batch-size",
            "50",
            "--config-encryption-key",
            "a-long-enough-test-secret",
        ],
    )
    .await;
    let pool = certctl_server::db::connect(&url, 2).await.expect("observer pool");
    sqlx::raw_sql(
        "INSERT INTO managed_certificates (id, name, common_name, owner_id, team_id, issuer_id, renewal_policy_id, status) \
         SELECT 'dc-' || g, 'dc-' || g, 'd' || g || '.example.com', 'o-alice', 't-platform', 'iss-local', 'rp-standard', \
                'RenewalInProgress' FROM generate_series(1, 600) g; \
         INSERT INTO jobs (id, type, certificate_id) SELECT 'djob-' || substr(id, 4), 'Renewal', id \
           FROM managed_certificates WHERE id LIKE 'dc-%';",
    )
    .execute(&pool)
    .await
    .expect("seed");
    wait_for("the processor to start completing jobs", async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE status = 'Completed'")
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n > 0)
    })
    .await;
    app.stop().await;
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'Running'").fetch_one(&pool).await.expect("count");
    assert_eq!(running, 0, "every claimed job finished before shutdown returned");
    let (completed, versions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'Completed'), (SELECT count(*) FROM certificate_versions)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!(completed, versions);
    let sealed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM certificate_versions WHERE private_key_pem LIKE 'enc:v1:%' AND private_key_pem NOT LIKE '%PRIVATE KEY%'",
    )
    .fetch_one(&pool)
    .await
    .expect("sealed");
    assert_eq!(sealed, versions, "server-generated keys are encrypted at rest");
}

#[tokio::test]
async fn leader_only_loops_run_on_the_leader_alone() {
    let url = fresh_database_url().await;
    let flags = |id: &'static str| {
        [
            "--instance-id",
            id,
            "--leader-election-interval",
            "100ms",
            "--notification-process-interval",
            "100ms",
            "--crl-interval",
            "100ms",
            "--short-lived-expiry-interval",
            "100ms",
        ]
    };
    let a = spawn_app_on(&url, &flags("only-a")).await;
    let b = spawn_app_on(&url, &flags("only-b")).await;
    let (sa, sb) = (state_of(&a), state_of(&b));
    add_log_channel(&a.pool).await;
    let mut tx = a.pool.begin().await.expect("tx");
    for i in 0..50 {
        certctl_server::notify::enqueue(&mut tx, "test", None, &format!("s{i}"), "m", Utc::now())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    wait_for("all notifications sent", async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notification_events WHERE status <> 'sent'")
            .fetch_one(&a.pool)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;
    let (leader, follower) = if sa.scheduler.is_leader() { (&sa, &sb) } else { (&sb, &sa) };
    assert!(leader.scheduler.is_leader() && !follower.scheduler.is_leader());
    // The leader's own renewal check may add expiry warnings for the demo certificates, so
    // compare with what was really sent rather than with the 50 enqueued here.
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_events WHERE status = 'sent'")
        .fetch_one(&a.pool)
        .await
        .expect("sent count");
    assert!(sent >= 50);
    let rendered = leader.metrics.render();
    assert!(
        rendered.contains(&format!("certctl_notification_sent_total {sent}\n")),
        "leader sent all {sent}:\n{rendered}"
    );
    assert!(follower.metrics.render().contains("certctl_notification_sent_total 0\n"));
    assert_eq!(follower.scheduler.ticks(LoopKind::NotificationProcess), 0);
    assert_eq!(follower.scheduler.ticks(LoopKind::Crl), 0);
    // Idempotent loops, by contrast, run on every replica.
    wait_for("both replicas to run the expiry loop", async || {
        follower.scheduler.ticks(LoopKind::ShortLivedExpiry) > 0
            && leader.scheduler.ticks(LoopKind::ShortLivedExpiry) > 0
    })
    .await;
    a.stop().await;
    b.stop().await;
}

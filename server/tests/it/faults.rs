//! What the server guarantees through database faults and killed replicas (issue 13):
//!
//! - after a database restart, a stall (SIGSTOP of postmaster and backends) or killed
//!   connections: `/ready` says 503 while the database is unreachable and 200 after, `/health`
//!   keeps answering, leadership is re-acquired, every scheduler loop resumes, the audit writer
//!   keeps and retries its pending rows, and no request waits past `CERTCTL_REQUEST_TIMEOUT`;
//! - an idempotent write that failed only because its pooled connection died succeeds when
//!   retried once ([`certctl_server::db::retry_idempotent`]);
//! - a SIGKILLed replica's claimed jobs are reclaimed through their claim lease by the other
//!   replicas and complete exactly once (real server processes).
//!
//! Every test here owns its PostgreSQL cluster, since it restarts, stops or freezes it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certctl_server::pg_embedded::{Cluster, ClusterOptions, create_database, free_port, terminate_connections};
use certctl_server::scheduler::LoopKind;
use serde_json::json;

use crate::support::{ADMIN_KEY, TestApp, spawn_app_on};

/// Request deadline of the apps under test: short, so a hanging request shows quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Every loop and the election on short intervals, so recovery shows within a test.
const FAST: &[&str] = &[
    "--rate-limit-enabled",
    "false",
    "--keygen-mode",
    "server",
    "--request-timeout",
    "3s",
    "--leader-election-interval",
    "100ms",
    "--audit-flush-interval",
    "200ms",
    "--renewal-check-interval",
    "300ms",
    "--job-processor-interval",
    "300ms",
    "--job-retry-interval",
    "300ms",
    "--job-timeout-interval",
    "300ms",
    "--agent-health-interval",
    "300ms",
    "--notification-process-interval",
    "300ms",
    "--notification-retry-interval",
    "300ms",
    "--short-lived-expiry-interval",
    "300ms",
    "--acme-gc-interval",
    "300ms",
    "--ratelimit-janitor-interval",
    "300ms",
    "--crl-interval",
    "300ms",
];

/// A cluster of the test's own, a database on it and an app serving that database.
async fn own_cluster_and_app() -> (Cluster, String, TestApp) {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await
        .expect("join")
        .expect("own cluster");
    let url = create_database(&cluster.url("postgres"), "app").await.expect("database");
    let app = spawn_app_on(&url, FAST).await;
    (cluster, url, app)
}

fn state(app: &TestApp) -> &certctl_server::AppState {
    &app.server.as_ref().expect("running").state
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    // A client deadline well past the server's own: a request the server fails to bound shows
    // up as a client error here, not as a quiet wait.
    let req = app.client.get(app.url(path)).bearer_auth(ADMIN_KEY);
    match req.timeout(REQUEST_TIMEOUT + Duration::from_secs(5)).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("GET {path} did not answer: {e}"),
    }
}

/// Creates a team through the API (a mutating, audited request); returns its request id.
async fn audited_write(app: &TestApp, name: &str) -> String {
    let r = app.post("/api/v1/teams", &json!({ "name": name })).await;
    assert_eq!(r.status(), 201, "team {name}");
    r.headers()["x-request-id"].to_str().expect("ascii").to_string()
}

/// Successful ticks of every loop, in `LoopKind::ALL` order.
fn ok_ticks(app: &TestApp) -> Vec<u64> {
    LoopKind::ALL.iter().map(|k| state(app).scheduler.ticks_ok(*k)).collect()
}

/// After a fault: `/ready` is 200 again, the single app is leader again, every loop (the
/// leader-only ones included) completes a tick without error, a renewal job created now is
/// completed by the processor, and every row of `request_ids` is in `audit_events` exactly once.
async fn assert_recovered(app: &TestApp, request_ids: &[String]) {
    assert!(
        eventually(Duration::from_secs(20), || async { status_of(app, "/ready").await == 200 }).await,
        "ready again"
    );
    assert!(
        eventually(Duration::from_secs(10), || async { state(app).scheduler.is_leader() }).await,
        "leadership re-acquired"
    );
    let before = ok_ticks(app);
    let resumed = eventually(Duration::from_secs(20), || {
        let before = before.clone();
        async move { ok_ticks(app).iter().zip(&before).all(|(now, then)| now > then) }
    })
    .await;
    let stuck: Vec<&str> = LoopKind::ALL
        .iter()
        .zip(ok_ticks(app).iter().zip(&before))
        .filter(|(_, (now, then))| now <= then)
        .map(|(k, _)| k.name())
        .collect();
    assert!(resumed, "every loop completes ticks again; stuck: {stuck:?}");

    let r = app.post("/api/v1/certificates/mc-demo-api/renew?force=true", &json!({})).await;
    assert_eq!(r.status(), 202, "renew accepted");
    let job: serde_json::Value = r.json().await.expect("json");
    let job_id = job["job_id"].as_str().expect("job id").to_string();
    let completed = eventually(Duration::from_secs(20), || {
        let job_id = job_id.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM jobs WHERE id = $1")
                .bind(&job_id)
                .fetch_one(&app.pool)
                .await
                .is_ok_and(|s| s == "Completed")
        }
    })
    .await;
    assert!(completed, "the job processor completes a renewal after the fault");

    let arrived = eventually(Duration::from_secs(20), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT request_id) FROM audit_events WHERE request_id = ANY($1)")
                .bind(request_ids)
                .fetch_one(&app.pool)
                .await
                .unwrap_or(0);
        n as usize == request_ids.len()
    })
    .await;
    assert!(arrived, "every acknowledged request's audit row arrived after the fault");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE request_id = ANY($1)")
        .bind(request_ids)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows as usize, request_ids.len(), "no audit row written twice by the retries");
}

/// Rows recorded straight into the audit sink while the database is away: they sit in the
/// writer's buffer, exactly like the rows of requests acknowledged just before a fault.
async fn record_while_down(app: &TestApp, tag: &str, n: usize) -> Vec<String> {
    let sink = state(app).audit.clone();
    let mut ids = Vec::new();
    for i in 0..n {
        let request_id = format!("{tag}-{i}");
        sink.record(certctl_server::audit::AuditEvent {
            actor: "faults-test".into(),
            actor_type: "api_key".into(),
            action: "teams.create".into(),
            resource_type: "teams".into(),
            resource_id: String::new(),
            details: json!({ "fault": tag }),
            request_id: request_id.clone(),
            created_at: chrono::Utc::now(),
        })
        .await;
        ids.push(request_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_database_restart_and_an_outage_ready_leadership_loops_and_audit_recover() {
    let (mut cluster, _url, app) = own_cluster_and_app().await;
    assert!(eventually(Duration::from_secs(10), || async { state(&app).scheduler.is_leader() }).await, "leader");
    assert_eq!(status_of(&app, "/ready").await, 200);

    // A fast restart under a stream of heartbeats: every pooled and the leader's connection die.
    let mut acked = vec![audited_write(&app, "before-restart").await];
    let load = HeartbeatLoad::start(&app, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restart_started = Instant::now();
    tokio::task::block_in_place(|| cluster.restart()).expect("restart");
    let restart_took = restart_started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (total, failed) = load.stop().await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for s in &failed {
        *by_status.entry(*s).or_default() += 1;
    }
    eprintln!(
        "db restart ({restart_took:?}) under 4 heartbeat clients: {} of {total} heartbeats failed, by status {by_status:?}",
        failed.len()
    );
    assert!(by_status.keys().all(|s| *s == 503), "a restart costs 503s (retry), never a 500: {by_status:?}");
    acked.push(audited_write(&app, "right-after-restart").await);
    assert_recovered(&app, &acked).await;

    // An outage: the database stays down for a while.
    acked.push(audited_write(&app, "before-outage").await);
    tokio::task::block_in_place(|| cluster.stop_server()).expect("stop");
    assert_eq!(status_of(&app, "/ready").await, 503, "/ready while the database is down");
    assert_eq!(status_of(&app, "/health").await, 200, "/health does not need the database");
    let started = Instant::now();
    let during = status_of(&app, "/api/v1/certificates").await;
    assert_eq!(during, 503, "a request needing the database fails fast with 503");
    eprintln!("request during the outage answered {during} after {:?}", started.elapsed());
    assert!(
        eventually(Duration::from_secs(5), || async { !state(&app).scheduler.is_leader() }).await,
        "the leader steps down when its connection is gone"
    );
    acked.extend(record_while_down(&app, "outage", 25).await);
    // Let the writer fail at least one attempt with those rows buffered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.start_server()).expect("start");
    assert_recovered(&app, &acked).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_a_database_stall_health_answers_requests_are_bounded_and_everything_recovers() {
    let (cluster, _url, app) = own_cluster_and_app().await;
    assert!(eventually(Duration::from_secs(10), || async { state(&app).scheduler.is_leader() }).await, "leader");
    let mut acked = vec![audited_write(&app, "before-stall").await];

    let frozen = cluster.freeze().expect("SIGSTOP");
    assert!(frozen.pids().len() > 1, "postmaster and its children are stopped: {:?}", frozen.pids());
    let stall_started = Instant::now();
    assert_eq!(status_of(&app, "/health").await, 200, "/health answers during the stall");
    assert_eq!(status_of(&app, "/ready").await, 503, "/ready says 503 during the stall");
    let (a, b) = tokio::join!(status_of(&app, "/api/v1/certificates"), status_of(&app, "/api/v1/teams"));
    assert_eq!((a, b), (503, 503), "requests on a frozen database end with 503, not a hang");
    assert!(
        eventually(Duration::from_secs(3), || async { !state(&app).scheduler.is_leader() }).await,
        "a leader whose check cannot answer steps down"
    );
    acked.extend(record_while_down(&app, "stall", 25).await);
    eprintln!("stall held for {:?}", stall_started.elapsed());
    frozen.thaw().expect("SIGCONT");
    assert_recovered(&app, &acked).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_every_server_connection_is_killed_requests_succeed_and_everything_recovers() {
    let (cluster, _url, app) = own_cluster_and_app().await;
    assert!(eventually(Duration::from_secs(10), || async { state(&app).scheduler.is_leader() }).await, "leader");
    let mut acked = vec![audited_write(&app, "before-kill").await];
    // Warm several pooled connections, then kill them all (and the leader's).
    let warm: Vec<u16> = futures_join_all(&app, 8).await;
    assert!(warm.iter().all(|s| *s == 200), "{warm:?}");
    let killed = terminate_connections(&cluster.url("postgres"), "app").await.expect("terminate");
    assert!(killed >= 2, "the pool's and the leader's connections were killed ({killed})");
    // Idle pooled connections are checked before use, so nothing fails afterwards.
    let after: Vec<u16> = futures_join_all(&app, 8).await;
    assert!(after.iter().all(|s| *s == 200), "requests right after the kill: {after:?}");
    acked.push(audited_write(&app, "after-kill").await);
    assert_recovered(&app, &acked).await;
    app.stop().await;
}

/// Clients sending heartbeats back to back until stopped. A heartbeat left unanswered past the
/// server's request timeout (plus slack) fails the test: every request ends as a response.
struct HeartbeatLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<(u64, Vec<u16>)>,
}

impl HeartbeatLoad {
    fn start(app: &TestApp, clients: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (client, url, stop) =
                (app.client.clone(), app.url("/api/v1/agents/agent-demo-web01/heartbeat"), stop.clone());
            tasks.spawn(async move {
                let (mut total, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = client
                        .post(&url)
                        .bearer_auth(ADMIN_KEY)
                        .timeout(REQUEST_TIMEOUT + Duration::from_secs(5))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("a heartbeat got no answer: {e}"));
                    total += 1;
                    if !r.status().is_success() {
                        failed.push(r.status().as_u16());
                    }
                }
                (total, failed)
            });
        }
        HeartbeatLoad { stop, tasks }
    }

    /// Stops the clients; (heartbeats sent, statuses of the failed ones).
    async fn stop(mut self) -> (u64, Vec<u16>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut total, mut failed) = (0, Vec::new());
        while let Some(r) = self.tasks.join_next().await {
            let (t, f) = r.expect("heartbeat client panicked");
            total += t;
            failed.extend(f);
        }
        (total, failed)
    }
}

/// `n` concurrent authenticated reads; their statuses.
async fn futures_join_all(app: &TestApp, n: usize) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let req = app.client.get(app.url("/api/v1/certificates?per_page=5")).bearer_auth(ADMIN_KEY);
        set.spawn(async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap_or(0));
    }
    out
}

#[tokio::test]
async fn an_idempotent_write_on_a_killed_pooled_connection_succeeds_when_retried_once() {
    use certctl_server::db::{is_connection_error, retry_idempotent};
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await
        .expect("join")
        .expect("own cluster");
    let url = create_database(&cluster.url("postgres"), "app").await.expect("database");
    // One connection, handed out without the pre-use ping: the way a connection that dies
    // while a statement is in flight looks to its caller.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(&url)
        .await
        .expect("pool");
    sqlx::query("CREATE TABLE beats (id int PRIMARY KEY, at timestamptz)").execute(&pool).await.expect("table");
    sqlx::query("INSERT INTO beats VALUES (1, NULL)").execute(&pool).await.expect("row");
    let beat = || sqlx::query("UPDATE beats SET at = now() WHERE id = 1").execute(&pool);

    assert!(terminate_connections(&cluster.url("postgres"), "app").await.expect("kill") >= 1);
    let bare = beat().await.expect_err("the dead connection fails the statement");
    assert!(is_connection_error(&bare), "classified as a connection error: {bare:?}");

    beat().await.expect("a fresh connection works");
    assert!(terminate_connections(&cluster.url("postgres"), "app").await.expect("kill") >= 1);
    let r = retry_idempotent(beat).await.expect("retried once on a fresh connection");
    assert_eq!(r.rows_affected(), 1);

    // Not every error is retried: a statement error is returned as it is.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let wrong = retry_idempotent(|| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        sqlx::query("UPDATE no_such_table SET x = 1").execute(&pool)
    })
    .await;
    assert!(wrong.is_err());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "no retry of a statement error");
    pool.close().await;
}

/// A real `certctl-server` process; SIGKILLed when dropped.
struct Replica {
    id: String,
    port: u16,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_replica(url: &str, id: &str, lease: &str) -> Replica {
    let port = free_port().expect("port");
    let child = Command::new(env!("CARGO_BIN_EXE_certctl-server"))
        .env("CERTCTL_DATABASE_URL", url)
        .env("CERTCTL_SERVER_PORT", port.to_string())
        .env("CERTCTL_AUTH_TYPE", "none")
        .env("CERTCTL_DEMO_SEED", "true")
        .env("CERTCTL_INSTANCE_ID", id)
        .env("CERTCTL_KEYGEN_MODE", "server")
        .env("CERTCTL_JOB_PROCESSOR_INTERVAL", "200ms")
        .env("CERTCTL_LEADER_ELECTION_INTERVAL", "200ms")
        .env("CERTCTL_JOB_BATCH_SIZE", "40")
        .env("CERTCTL_JOB_LEASE", lease)
        .env("CERTCTL_RATE_LIMIT_ENABLED", "false")
        .env("CERTCTL_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn certctl-server");
    Replica { id: id.to_string(), port, child }
}

const WAVE: i64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_replicas_claimed_jobs_are_reclaimed_through_their_lease_and_complete_exactly_once() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await
        .expect("join")
        .expect("own cluster");
    let url = create_database(&cluster.url("postgres"), "app").await.expect("database");
    let lease = Duration::from_secs(2);
    let mut replicas: Vec<Replica> = (1..=3).map(|i| spawn_replica(&url, &format!("kill-{i}"), "2s")).collect();
    let client = reqwest::Client::new();
    for r in &replicas {
        let port = r.port;
        let up =
            eventually(Duration::from_secs(30), || {
                let client = client.clone();
                async move {
                    client.get(format!("http://127.0.0.1:{port}/ready")).send().await.is_ok_and(|r| r.status() == 200)
                }
            })
            .await;
        assert!(up, "replica {} ready", r.id);
    }
    let pool = certctl_server::db::connect(&url, 4).await.expect("observer pool");
    sqlx::query("INSERT INTO teams (id, name) VALUES ('t-wave', 'wave')").execute(&pool).await.expect("team");
    sqlx::query(
        "INSERT INTO managed_certificates (id, name, common_name, sans, owner_id, team_id, issuer_id, \
                 renewal_policy_id, certificate_profile_id, status, expires_at) \
         SELECT 'wc-' || g, 'wc-' || g, 'wave' || g || '.example.com', ARRAY['wave' || g || '.example.com'], \
                'o-alice', 't-wave', 'iss-local', 'rp-standard', 'prof-standard-tls', 'Active', \
                now() + interval '5 days' \
           FROM generate_series(1, $1) g",
    )
    .bind(WAVE)
    .execute(&pool)
    .await
    .expect("certificates");

    // Bulk renew through the API of one replica: every replica's processor picks up the wave.
    let r = client
        .post(format!("http://127.0.0.1:{}/api/v1/certificates/bulk-renew", replicas[0].port))
        .json(&json!({ "team_id": "t-wave" }))
        .send()
        .await
        .expect("bulk renew");
    assert!(r.status().is_success(), "bulk renew: {}", r.status());
    let jobs = "FROM jobs j JOIN managed_certificates c ON c.id = j.certificate_id WHERE c.team_id = 't-wave'";
    let enqueued: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {jobs}"))).fetch_one(&pool).await.expect("n");
    assert_eq!(enqueued, WAVE, "one renewal job per certificate");

    // Mid-wave (a tenth of the wave done): SIGKILL a replica holding at least 10 Running jobs.
    let running_by = format!("SELECT count(*) {jobs} AND j.status = 'Running' AND j.claimed_by = $1");
    let done_sql = format!("SELECT count(*) {jobs} AND j.status = 'Completed'");
    let mut victim = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim.is_none() && Instant::now() < deadline {
        let done: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(done_sql.clone())).fetch_one(&pool).await.expect("done");
        if done < WAVE / 10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for (i, r) in replicas.iter().enumerate() {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(running_by.clone()))
                .bind(&r.id)
                .fetch_one(&pool)
                .await
                .expect("running");
            if n >= 10 {
                victim = Some(i);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut dead = replicas.remove(victim.expect("a replica held Running jobs mid-wave"));
    dead.child.kill().expect("SIGKILL");
    let killed_at = Instant::now();
    let _ = dead.child.wait();
    let held: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(running_by.clone()))
        .bind(&dead.id)
        .fetch_one(&pool)
        .await
        .expect("held");
    let done_at_kill: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(done_sql)).fetch_one(&pool).await.expect("done");
    assert!(held > 0, "the killed replica held claimed jobs");

    // Reclaim: no job stays Running under the dead replica.
    let reclaimed = eventually(Duration::from_secs(60), || {
        let (pool, sql, id) = (pool.clone(), running_by.clone(), dead.id.clone());
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(&id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    let reclaim_time = killed_at.elapsed();
    assert!(reclaimed, "the dead replica's jobs were reclaimed");

    let finished =
        eventually(Duration::from_secs(180), || {
            let (pool, sql) =
                (pool.clone(), format!("SELECT count(*) {jobs} AND j.status NOT IN ('Pending', 'Running')"));
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.is_ok_and(|n| n == WAVE)
            }
        })
        .await;
    let wave_time = killed_at.elapsed();
    assert!(finished, "the whole wave finished");

    let (completed, retaken): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FILTER (WHERE j.status = 'Completed'), count(*) FILTER (WHERE j.attempts = 2) {jobs}"
    )))
    .fetch_one(&pool)
    .await
    .expect("completed");
    assert_eq!(completed, WAVE, "every enqueued renewal completed");
    assert!(retaken >= held, "every job the dead replica held ran again, on another replica ({retaken} >= {held})");
    let on_dead: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) {jobs} AND j.attempts = 2 AND j.claimed_by = $1"
    )))
    .bind(&dead.id)
    .fetch_one(&pool)
    .await
    .expect("on dead");
    assert_eq!(on_dead, 0, "reclaimed jobs are completed by a live replica");
    let (versions, distinct_jobs, distinct_certs): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT v.job_id), count(DISTINCT v.certificate_id) FROM certificate_versions v \
           JOIN managed_certificates c ON c.id = v.certificate_id WHERE c.team_id = 't-wave'",
    )
    .fetch_one(&pool)
    .await
    .expect("versions");
    assert_eq!((versions, distinct_jobs, distinct_certs), (WAVE, WAVE, WAVE), "exactly one version per job");
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM managed_certificates WHERE team_id = 't-wave' AND status = 'Active'")
            .fetch_one(&pool)
            .await
            .expect("active");
    assert_eq!(active, WAVE, "every certificate of the wave is Active again");
    eprintln!(
        "replica kill: {} held {held} Running jobs at the SIGKILL ({done_at_kill}/{WAVE} done); \
         reclaimed within {reclaim_time:?} (lease {lease:?}, processor interval 200 ms); {retaken} jobs ran twice, \
         each completed once; wave finished {wave_time:?} after the kill",
        dead.id
    );
    drop(replicas);
    pool.close().await;
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed_a_live_one_is_not_and_the_last_attempt_is_failed_instead() {
    use certctl_server::scheduler::run_tick;
    let app = crate::support::spawn_app(&["--scheduler-enabled", "false", "--keygen-mode", "server"]).await;
    let st = state(&app).clone();
    let pool = &app.pool;
    // Three Running jobs of a vanished owner: expired lease with attempts left, live lease,
    // expired lease on the last attempt.
    for (id, cert, lease, attempts) in [
        ("job-expired", "mc-demo-api", "-1 second", 1),
        ("job-live", "mc-demo-www", "1 hour", 1),
        ("job-last", "mc-demo-db", "-1 second", 3),
    ] {
        sqlx::query(
            "INSERT INTO jobs (id, type, certificate_id, status, attempts, max_attempts, claimed_by, started_at, \
                     lease_expires_at) \
             VALUES ($1, 'Renewal', $2, 'Running', $3, 3, 'ghost', now(), now() + $4::interval)",
        )
        .bind(id)
        .bind(cert)
        .bind(attempts)
        .bind(lease)
        .execute(pool)
        .await
        .expect("job");
    }
    run_tick(&st, LoopKind::JobProcessor, chrono::Utc::now()).await.expect("processor tick");
    let row = |id: &'static str| async move {
        sqlx::query_as::<_, (String, i32, Option<String>, Option<String>)>(
            "SELECT status, attempts, claimed_by, last_error FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("row")
    };
    let (status, attempts, owner, _) = row("job-expired").await;
    assert_eq!((status.as_str(), attempts), ("Completed", 2), "the expired claim was taken over and completed");
    assert_eq!(owner.as_deref(), Some(&*st.instance_id));
    assert_eq!(st.metrics.jobs_reclaimed(), 1);
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM certificate_versions WHERE job_id = 'job-expired'")
        .fetch_one(pool)
        .await
        .expect("versions");
    assert_eq!(versions, 1);
    let (status, attempts, owner, _) = row("job-live").await;
    assert_eq!(
        (status.as_str(), attempts, owner.as_deref()),
        ("Running", 1, Some("ghost")),
        "a live lease is respected"
    );
    assert_eq!(row("job-last").await.0, "Running", "no attempts left: not reclaimed");

    run_tick(&st, LoopKind::JobTimeout, chrono::Utc::now()).await.expect("timeout tick");
    let (status, _, _, error) = row("job-last").await;
    assert_eq!(status, "Failed", "the timeout sweep fails an expired last attempt at once");
    assert!(error.is_some_and(|e| e.contains("claim lease expired") && e.contains("ghost")));
    assert_eq!(row("job-live").await.0, "Running", "the sweep leaves a live lease alone");
    app.stop().await;
}

//! Notification delivery against a real local webhook receiver that fails on purpose: exact
//! retry times, the dead transition on the fifth failure, requeue then success, nothing lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use certctl_server::AppState;
use certctl_server::notify::{self, NotifyStats};
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::support::{TestApp, spawn_app};

#[derive(Clone, Default)]
struct Receiver {
    failing: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<serde_json::Value>>>,
    delivered: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// The long failure body: `last_error` must keep all of it.
fn failure_body(n: usize) -> String {
    format!("boom #{n} {}", "x".repeat(5000))
}

async fn hook(State(r): State<Receiver>, body: axum::Json<serde_json::Value>) -> (StatusCode, String) {
    let mut attempts = r.attempts.lock().await;
    attempts.push(body.0.clone());
    if r.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, failure_body(attempts.len()));
    }
    r.delivered.lock().await.push(body.0);
    (StatusCode::OK, "ok".into())
}

async fn start_receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = axum::Router::new().route("/hook", post(hook)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), r)
}

fn state_of(app: &TestApp) -> AppState {
    app.server.as_ref().expect("running").state.clone()
}

async fn add_channel(pool: &PgPool, id: &str, kind: &str, config: serde_json::Value) {
    sqlx::query("INSERT INTO notification_channels (id, name, type, config) VALUES ($1, $1, $2, $3)")
        .bind(id)
        .bind(kind)
        .bind(config)
        .execute(pool)
        .await
        .expect("channel");
}

async fn enqueue(pool: &PgPool, now: DateTime<Utc>) -> u64 {
    let mut tx = pool.begin().await.expect("tx");
    let n = notify::enqueue(&mut tx, notify::EVENT_ISSUED, Some("mc-demo-api"), "subject", "message", now)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    n
}

type Row = (String, i32, Option<DateTime<Utc>>, Option<String>);

async fn row(pool: &PgPool) -> Row {
    sqlx::query_as("SELECT status, retry_count, next_retry_at, last_error FROM notification_events")
        .fetch_one(pool)
        .await
        .expect("one row")
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now")
}

#[tokio::test]
async fn a_failing_webhook_is_retried_after_1_2_4_8_minutes_dies_on_the_fifth_failure_and_a_requeue_delivers_it() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let (url, receiver) = start_receiver().await;
    receiver.failing.store(true, Ordering::SeqCst);
    add_channel(&app.pool, "ch-hook", "webhook", serde_json::json!({ "url": url })).await;
    let start = t0();
    assert_eq!(enqueue(&app.pool, start).await, 1);

    let mut now = start;
    for (attempt, wait_min) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
        let stats = notify::process_due(&state, now).await.expect("send");
        assert_eq!(stats, NotifyStats { sent: 0, failed: 1, dead: 0 }, "attempt {attempt}");
        let (status, count, next, error) = row(&app.pool).await;
        assert_eq!(status, "failed");
        assert_eq!(count, attempt);
        assert_eq!(next, Some(now + Duration::minutes(wait_min)), "attempt {attempt} waits {wait_min} min");
        let error = error.expect("last_error");
        assert!(error.ends_with(&failure_body(attempt as usize)), "last_error is kept in full");
        // Not due a second before the retry time.
        let early = notify::process_due(&state, now + Duration::minutes(wait_min) - Duration::seconds(1)).await;
        assert_eq!(early.expect("send"), NotifyStats::default());
        now += Duration::minutes(wait_min);
    }
    let stats = notify::process_due(&state, now).await.expect("send");
    assert_eq!(stats, NotifyStats { sent: 0, failed: 0, dead: 1 });
    let (status, count, next, error) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("dead", 5, None));
    assert!(error.is_some_and(|e| e.contains("HTTP 500")));
    assert_eq!(notify::dead_count(&app.pool).await.expect("dead"), 1);
    assert_eq!(notify::process_due(&state, now + Duration::days(1)).await.expect("send"), NotifyStats::default());

    // Requeue exactly as POST /notifications/{id}/requeue does, then the receiver recovers.
    sqlx::query(
        "UPDATE notification_events SET status = 'pending', retry_count = 0, next_retry_at = NULL, last_error = NULL",
    )
    .execute(&app.pool)
    .await
    .expect("requeue");
    receiver.failing.store(false, Ordering::SeqCst);
    let stats = notify::process_due(&state, now).await.expect("send");
    assert_eq!(stats, NotifyStats { sent: 1, failed: 0, dead: 0 });
    let (status, count, next, _) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("sent", 0, None));
    assert_eq!(receiver.attempts.lock().await.len(), 6, "five failures and one success");
    let delivered = receiver.delivered.lock().await;
    assert_eq!(delivered.len(), 1, "delivered exactly once");
    assert_eq!(delivered[0]["type"], "certificate_issued");
    assert_eq!(delivered[0]["certificate_id"], "mc-demo-api");
    assert_eq!(notify::dead_count(&app.pool).await.expect("dead"), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_success_after_a_failure_is_sent_without_touching_the_retry_count() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let (url, receiver) = start_receiver().await;
    receiver.failing.store(true, Ordering::SeqCst);
    add_channel(&app.pool, "ch-hook", "webhook", serde_json::json!({ "url": url })).await;
    let start = t0();
    enqueue(&app.pool, start).await;
    notify::process_due(&state, start).await.expect("send");
    receiver.failing.store(false, Ordering::SeqCst);
    let stats = notify::process_due(&state, start + Duration::minutes(1)).await.expect("send");
    assert_eq!(stats.sent, 1);
    let (status, count, next, _) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("sent", 1, None));
    app.stop().await;
}

#[tokio::test]
async fn a_row_whose_channel_was_deleted_dies_with_a_clear_error_instead_of_wedging() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    add_channel(&app.pool, "ch-gone", "webhook", serde_json::json!({ "url": "http://127.0.0.1:9/" })).await;
    let start = t0();
    enqueue(&app.pool, start).await;
    sqlx::query("DELETE FROM notification_channels").execute(&app.pool).await.expect("delete");
    let stats = notify::process_due(&state, start).await.expect("send");
    assert_eq!(stats.dead, 1);
    let (status, count, next, error) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("dead", 1, None));
    assert_eq!(error.as_deref(), Some("notification channel was deleted; the event cannot be delivered"));
    app.stop().await;
}

#[tokio::test]
async fn log_channels_deliver_and_email_without_smtp_fails_with_a_reason() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    add_channel(&app.pool, "ch-log", "log", serde_json::json!({})).await;
    add_channel(&app.pool, "ch-mail", "email", serde_json::json!({ "to": "ops@example.com" })).await;
    let start = t0();
    assert_eq!(enqueue(&app.pool, start).await, 2, "one row per enabled channel");
    let stats = notify::process_due(&state, start).await.expect("send");
    assert_eq!(stats, NotifyStats { sent: 1, failed: 1, dead: 0 });
    let error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM notification_events WHERE channel = 'email'")
            .fetch_one(&app.pool)
            .await
            .expect("email row");
    assert_eq!(error.as_deref(), Some("CERTCTL_SMTP_ADDR is not set: cannot send email"));
    app.stop().await;
}

#[tokio::test]
async fn the_dead_count_and_the_retry_sweep_can_use_their_indexes() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let mut conn = app.pool.acquire().await.expect("conn");
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.expect("set");
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN SELECT count(*) FROM notification_events WHERE status = 'dead'")
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
    assert!(plan.join("\n").contains("idx_notification_events_status_created"), "{plan:?}");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM notification_events e WHERE e.status = 'failed' AND e.next_retry_at IS NOT NULL \
           AND e.next_retry_at <= now() ORDER BY e.next_retry_at LIMIT 100",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    assert!(plan.join("\n").contains("idx_notification_events_retry_sweep"), "{plan:?}");
    sqlx::query("RESET enable_seqscan").execute(&mut *conn).await.expect("reset");
    drop(conn);
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_slower_than_its_timeout_counts_as_a_failure() {
    let app = spawn_app(&["--scheduler-enabled", "false", "--webhook-timeout", "200ms"]).await;
    let state = state_of(&app);
    let slow = axum::Router::new().route(
        "/slow",
        post(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            "late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, slow).await;
    });
    add_channel(&app.pool, "ch-slow", "webhook", serde_json::json!({ "url": format!("http://{addr}/slow") })).await;
    let start = t0();
    enqueue(&app.pool, start).await;
    let stats = notify::process_due(&state, start).await.expect("send");
    assert_eq!(stats, NotifyStats { sent: 0, failed: 1, dead: 0 });
    let (status, count, next, error) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("failed", 1, Some(start + Duration::minutes(1))));
    assert!(error.is_some_and(|e| e.contains("webhook POST")));
    app.stop().await;
}

/// The virtualenv python with the pinned test tools (installed by scripts/ensure-py-tools.sh
/// on first use, as `make deps` does).
fn py_tools_python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-py-tools.sh");
        let out = std::process::Command::new("bash").arg(script).output().expect("run ensure-py-tools.sh");
        assert!(out.status.success(), "ensure-py-tools.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// A real SMTP server (aiosmtpd, `tests/fixtures/smtp_server.py`) on 127.0.0.1; it stops when
/// dropped (its stdin closes and the process is killed).
struct SmtpServer {
    port: u16,
    log: std::path::PathBuf,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start(mode: &str, port: u16) -> Self {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("smtp.jsonl");
        let mut child = tokio::process::Command::new(py_tools_python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_server.py"))
            .args(["--mode", mode, "--port", &port.to_string(), "--log"])
            .arg(&log)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the SMTP server starts")
        .expect("read its port");
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT line");
        SmtpServer { port, log, _child: child, _dir: dir }
    }

    /// The transactions it logged.
    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

async fn spawn_with_smtp(port: u16) -> TestApp {
    let addr = format!("127.0.0.1:{port}");
    let app =
        spawn_app(&["--scheduler-enabled", "false", "--smtp-addr", &addr, "--smtp-from", "certctl@example.com"]).await;
    add_channel(&app.pool, "ch-mail", "email", serde_json::json!({ "to": "ops@example.com" })).await;
    app
}

#[tokio::test]
async fn email_notifications_are_delivered_to_a_real_smtp_server() {
    let smtp = SmtpServer::start("accept", 0).await;
    let app = spawn_with_smtp(smtp.port).await;
    let state = state_of(&app);
    let start = t0();
    assert_eq!(enqueue(&app.pool, start).await, 1);
    assert_eq!(notify::process_due(&state, start).await.expect("send"), NotifyStats { sent: 1, failed: 0, dead: 0 });
    let (status, count, next, error) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next, error), ("sent", 0, None, None));
    let events = smtp.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["event"], "delivered");
    assert_eq!(e["mail_from"], "certctl@example.com");
    assert_eq!(e["rcpt_tos"], serde_json::json!(["ops@example.com"]));
    let data = e["data"].as_str().expect("data");
    assert!(data.contains("Subject: subject"), "{data}");
    assert!(data.contains("To: ops@example.com"), "{data}");
    assert!(data.contains("message"), "{data}");
    app.stop().await;
}

#[tokio::test]
async fn an_smtp_server_that_refuses_is_retried_with_backoff_then_the_email_is_dead() {
    let smtp = SmtpServer::start("refuse", 0).await;
    let app = spawn_with_smtp(smtp.port).await;
    let state = state_of(&app);
    let start = t0();
    enqueue(&app.pool, start).await;
    let mut now = start;
    for (attempt, wait_min) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
        let stats = notify::process_due(&state, now).await.expect("send");
        assert_eq!(stats, NotifyStats { sent: 0, failed: 1, dead: 0 }, "attempt {attempt}");
        let (status, count, next, error) = row(&app.pool).await;
        assert_eq!((status.as_str(), count, next), ("failed", attempt, Some(now + Duration::minutes(wait_min))));
        let error = error.expect("last_error");
        assert!(error.contains("451"), "the server's refusal is kept: {error}");
        now += Duration::minutes(wait_min);
    }
    assert_eq!(notify::process_due(&state, now).await.expect("send"), NotifyStats { sent: 0, failed: 0, dead: 1 });
    let (status, count, next, _) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("dead", 5, None));
    let refused = smtp.events();
    assert_eq!(refused.len(), 5, "five real attempts reached the server: {refused:?}");
    assert!(refused.iter().all(|e| e["event"] == "refused" && e["rcpt"] == "ops@example.com"));
    app.stop().await;
}

#[tokio::test]
async fn an_smtp_server_that_is_down_fails_the_send_and_the_retry_delivers_once_it_is_up() {
    // A port with nothing listening (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let app = spawn_with_smtp(port).await;
    let state = state_of(&app);
    let start = t0();
    enqueue(&app.pool, start).await;
    assert_eq!(notify::process_due(&state, start).await.expect("send"), NotifyStats { sent: 0, failed: 1, dead: 0 });
    let (status, count, next, error) = row(&app.pool).await;
    assert_eq!((status.as_str(), count, next), ("failed", 1, Some(start + Duration::minutes(1))));
    let error = error.expect("last_error");
    assert!(error.contains(&format!("SMTP 127.0.0.1:{port}")), "{error}");
    // The server comes up on that port; the retry delivers.
    let smtp = SmtpServer::start("accept", port).await;
    let stats = notify::process_due(&state, start + Duration::minutes(1)).await.expect("send");
    assert_eq!(stats, NotifyStats { sent: 1, failed: 0, dead: 0 });
    assert_eq!(row(&app.pool).await.0, "sent");
    assert_eq!(smtp.events().len(), 1);
    app.stop().await;
}

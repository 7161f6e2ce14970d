//! Helpers shared by the `/api/v1` tests: a server without rate limiting (so paging loops do
//! not trip it), one-call requests that return status + JSON, envelope checks, SQL seeding.

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use sqlx::PgPool;

use crate::support::{ADMIN_KEY, TestApp, spawn_app};

/// A test server with rate limiting (per key and per address for failed authentications) and
/// the scheduler off plus `extra` flags. The API tests count rows; background loops (the
/// renewal check creates jobs for the demo certificates at start-up) would race with those
/// counts, and route-table walks present wrong keys on purpose. Both have their own tests.
pub async fn spawn_api(extra: &[&str]) -> TestApp {
    let mut args = vec!["--rate-limit-enabled", "false"];
    if !extra.contains(&"--auth-failure-limit") {
        args.extend(["--auth-failure-limit", "0"]);
    }
    if !extra.contains(&"--scheduler-enabled") {
        args.extend(["--scheduler-enabled", "false"]);
    }
    args.extend_from_slice(extra);
    spawn_app(&args).await
}

/// What a call answered.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as JSON (`Null` when empty or not JSON).
    pub json: Value,
}

/// Sends `method path` with bearer `key` (none when `None`) and an optional JSON body.
pub async fn call(app: &TestApp, method: Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Answer {
    let mut rb = app.client.request(method, app.url(path));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, json }
}

/// GET with the admin key.
pub async fn get(app: &TestApp, path: &str) -> Answer {
    call(app, Method::GET, path, Some(ADMIN_KEY), None).await
}

/// POST JSON with the admin key.
pub async fn post(app: &TestApp, path: &str, body: &Value) -> Answer {
    call(app, Method::POST, path, Some(ADMIN_KEY), Some(body)).await
}

/// PUT JSON with the admin key.
pub async fn put(app: &TestApp, path: &str, body: &Value) -> Answer {
    call(app, Method::PUT, path, Some(ADMIN_KEY), Some(body)).await
}

/// DELETE with the admin key.
pub async fn delete(app: &TestApp, path: &str) -> Answer {
    call(app, Method::DELETE, path, Some(ADMIN_KEY), None).await
}

/// Asserts `a` is a `status` answer carrying the JSON error envelope.
#[track_caller]
pub fn assert_envelope(a: &Answer, status: u16) {
    assert_eq!(a.status.as_u16(), status, "unexpected status; body: {}", a.json);
    assert!(a.json["error"].is_string(), "no envelope: {}", a.json);
    assert!(a.json["message"].is_string(), "no envelope: {}", a.json);
    assert!(a.json["request_id"].as_str().is_some_and(|s| !s.is_empty()), "no request id: {}", a.json);
}

/// Rows in `table`.
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count")
}

/// A valid create body for a certificate named `name` under the demo organisation.
pub fn cert_body(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "common_name": format!("{name}.example.com"),
        "owner_id": "o-alice",
        "team_id": "t-platform",
        "issuer_id": "iss-local",
        "renewal_policy_id": "rp-standard",
    })
}

/// Seeds `n` certificates `<prefix>-<i>` (status from `status_sql`, an SQL expression over `i`)
/// with one INSERT … SELECT generate_series.
pub async fn seed_certificates(pool: &PgPool, prefix: &str, n: i64, status_sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO managed_certificates (id, name, common_name, owner_id, team_id, issuer_id, renewal_policy_id,
                                           certificate_profile_id, status, expires_at, created_at)
         SELECT '{prefix}-' || i, '{prefix}-' || i, '{prefix}-' || i || '.example.com', 'o-alice', 't-platform',
                'iss-local', 'rp-standard', 'prof-standard-tls', {status_sql}, now() + (i || ' hours')::interval,
                now() - (i % 7 || ' seconds')::interval
           FROM generate_series(1, $1) AS i"
    )))
    .bind(n)
    .execute(pool)
    .await
    .expect("seed certificates");
}

/// Registers an agent through the API; returns `(id, credential)`.
pub async fn register_agent(app: &TestApp, name: &str) -> (String, String) {
    let a = post(app, "/api/v1/agents", &serde_json::json!({"name": name, "hostname": format!("{name}.local")})).await;
    assert_eq!(a.status, 201, "register: {}", a.json);
    let id = a.json["id"].as_str().expect("id").to_string();
    let cred = a.json["credential"].as_str().expect("credential").to_string();
    (id, cred)
}

/// Writes buffered audit rows now.
pub async fn flush_audit(app: &TestApp) {
    app.server.as_ref().expect("server").state.audit.flush().await;
}

//! Jobs, notifications, audit, organisation CRUD, stats, ETags and hostile input.

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{assert_envelope, call, cert_body, count, delete, flush_audit, get, post, put, spawn_api};
use crate::support::{ADMIN_KEY, USER_KEY, spawn_app_on};

#[tokio::test]
async fn jobs_are_listed_filtered_read_and_cancelled() {
    let app = spawn_api(&[]).await;
    let renew = post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await;
    let job = renew.json["job_id"].as_str().expect("job").to_string();
    sqlx::query("INSERT INTO jobs (id, type, certificate_id, status) VALUES ('job-done', 'Deployment', 'mc-demo-db', 'Completed')")
        .execute(&app.pool)
        .await
        .expect("job");
    let a = get(&app, "/api/v1/jobs").await;
    assert_eq!(a.json["total"], 2);
    let a = get(&app, "/api/v1/jobs?status=Pending&type=Renewal").await;
    assert_eq!(a.json["total"], 1);
    assert_eq!(a.json["data"][0]["id"], job.as_str());
    assert_envelope(&get(&app, "/api/v1/jobs?type=Coffee").await, 400);
    assert_envelope(&get(&app, "/api/v1/jobs?status=Done").await, 400);
    assert_envelope(&get(&app, "/api/v1/jobs/job-nope").await, 404);

    let a = post(&app, &format!("/api/v1/jobs/{job}/cancel"), &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["status"], "Cancelled");
    assert_eq!(
        get(&app, "/api/v1/certificates/mc-demo-api").await.json["status"],
        "Active",
        "the certificate is released"
    );
    assert_envelope(&post(&app, &format!("/api/v1/jobs/{job}/cancel"), &json!({})).await, 409);
    assert_envelope(&post(&app, "/api/v1/jobs/job-nope/cancel", &json!({})).await, 404);
    // Released: a plain renew works again.
    assert_eq!(post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await.status, 202);
    app.stop().await;
}

async fn seed_notifications(pool: &sqlx::PgPool) {
    sqlx::query(
        "INSERT INTO notification_events (id, type, certificate_id, channel, status, retry_count, next_retry_at, last_error) VALUES
            ('n-dead', 'expiration_warning', 'mc-demo-www', 'webhook', 'dead', 5, NULL, 'connection refused'),
            ('n-failed', 'expiration_warning', 'mc-demo-www', 'webhook', 'failed', 2, now() + interval '4 minutes', 'timeout'),
            ('n-sent', 'renewal_success', 'mc-demo-api', 'email', 'sent', 0, NULL, NULL)",
    )
    .execute(pool)
    .await
    .expect("notifications");
}

#[tokio::test]
async fn notifications_filter_by_dead_and_requeue_resets_the_retry_state_atomically() {
    let app = spawn_api(&[]).await;
    seed_notifications(&app.pool).await;
    let a = get(&app, "/api/v1/notifications?status=dead").await;
    assert_eq!(a.json["total"], 1);
    assert_eq!(a.json["data"][0]["id"], "n-dead");
    assert_eq!(get(&app, "/api/v1/notifications").await.json["total"], 3);
    assert_envelope(&get(&app, "/api/v1/notifications?status=lost").await, 400);
    assert_eq!(get(&app, "/api/v1/stats/summary").await.json["notifications_dead"], 1);

    for id in ["n-dead", "n-failed"] {
        let a = post(&app, &format!("/api/v1/notifications/{id}/requeue"), &json!({})).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json, json!({"status": "requeued"}));
        let n = get(&app, &format!("/api/v1/notifications/{id}")).await.json;
        assert_eq!(n["status"], "pending");
        assert_eq!(n["retry_count"], 0);
        assert!(n["next_retry_at"].is_null() && n["last_error"].is_null(), "{n}");
    }
    assert_envelope(&post(&app, "/api/v1/notifications/n-sent/requeue", &json!({})).await, 409);
    assert_envelope(&post(&app, "/api/v1/notifications/n-nope/requeue", &json!({})).await, 404);
    let a = post(&app, "/api/v1/notifications/n-sent/read", &json!({})).await;
    assert_eq!(a.json["status"], "read");
    assert_envelope(&post(&app, "/api/v1/notifications/n-nope/read", &json!({})).await, 404);
    assert_envelope(&get(&app, "/api/v1/notifications/n-nope").await, 404);
    app.stop().await;
}

#[tokio::test]
async fn organisation_resources_support_crud_and_a_referenced_delete_is_409() {
    let app = spawn_api(&[]).await;
    let cases: [(&str, Value, Value); 5] = [
        ("teams", json!({"name": "Security", "description": "sec"}), json!({"description": "security team"})),
        (
            "owners",
            json!({"name": "Bob", "email": "bob@example.com", "team_id": "t-platform"}),
            json!({"email": "b@example.com"}),
        ),
        ("renewal-policies", json!({"name": "Short", "renewal_window_days": 7}), json!({"max_retries": 5})),
        (
            "profiles",
            json!({"name": "Short TLS", "issuer_id": "iss-local", "validity_days": 7}),
            json!({"max_sans": 3}),
        ),
        ("issuers", json!({"name": "Other CA", "type": "GenericCA", "config": {"k": "v"}}), json!({"enabled": false})),
    ];
    for (res, create, update) in cases {
        let a = post(&app, &format!("/api/v1/{res}"), &create).await;
        assert_eq!(a.status, 201, "{res}: {}", a.json);
        let id = a.json["id"].as_str().expect("id").to_string();
        assert_eq!(get(&app, &format!("/api/v1/{res}/{id}")).await.json["name"], create["name"]);
        let list = get(&app, &format!("/api/v1/{res}")).await;
        assert!(list.json["total"].as_i64().unwrap_or(0) >= 2, "{res}: {}", list.json);
        let u = put(&app, &format!("/api/v1/{res}/{id}"), &update).await;
        assert_eq!(u.status, 200, "{res}: {}", u.json);
        let (field, value) = update.as_object().and_then(|o| o.iter().next()).expect("field");
        assert_eq!(&u.json[field], value, "{res}");
        assert_envelope(&post(&app, &format!("/api/v1/{res}"), &create).await, 409);
        assert_envelope(&post(&app, &format!("/api/v1/{res}"), &json!({"name": "z", "surprise": 1})).await, 400);
        assert_envelope(&put(&app, &format!("/api/v1/{res}/{id}"), &json!({"surprise": 1})).await, 400);
        assert_eq!(delete(&app, &format!("/api/v1/{res}/{id}")).await.status, 204, "{res}");
        assert_envelope(&get(&app, &format!("/api/v1/{res}/{id}")).await, 404);
        assert_envelope(&delete(&app, &format!("/api/v1/{res}/{id}")).await, 404);
    }
    // The demo rows are referenced by certificates: deleting them is a conflict, not a 500.
    for path in [
        "/api/v1/teams/t-platform",
        "/api/v1/owners/o-alice",
        "/api/v1/renewal-policies/rp-standard",
        "/api/v1/profiles/prof-standard-tls",
        "/api/v1/issuers/iss-local",
    ] {
        assert_envelope(&delete(&app, path).await, 409);
    }
    assert_envelope(&post(&app, "/api/v1/owners", &json!({"name": "Eve", "team_id": "t-nope"})).await, 422);
    assert_envelope(&post(&app, "/api/v1/renewal-policies", &json!({"name": "Neg", "max_retries": -1})).await, 422);
    assert_envelope(&post(&app, "/api/v1/profiles", &json!({"name": "Bad", "acme_auth_mode": "yolo"})).await, 400);
    assert_envelope(&call(&app, Method::DELETE, "/api/v1/issuers/iss-local", Some(USER_KEY), None).await, 403);
    app.stop().await;
}

#[tokio::test]
async fn stats_summary_counts_certificates_by_status_agents_and_jobs() {
    let app = spawn_api(&[]).await;
    post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await;
    let s = get(&app, "/api/v1/stats/summary").await.json;
    assert_eq!(s["total_certificates"], 3);
    assert_eq!(s["certificates_by_status"]["RenewalInProgress"], 1);
    assert_eq!(s["certificates_by_status"]["Expiring"], 1);
    assert_eq!(s["certificates_by_status"]["Revoked"], 0);
    assert_eq!(s["total_agents"], 2);
    assert_eq!(s["agents_online"], 1);
    assert_eq!(s["jobs_pending"], 1);
    assert_eq!(s["notifications_dead"], 0);
    app.stop().await;
}

#[tokio::test]
async fn hot_reads_carry_an_etag_and_answer_304_until_something_changes() {
    let app = spawn_api(&[]).await;
    for path in ["/api/v1/certificates", "/api/v1/agents", "/api/v1/jobs", "/api/v1/audit"] {
        let first = get(&app, path).await;
        let tag = first.headers["etag"].to_str().expect("ascii").to_string();
        assert!(tag.starts_with('"') && tag.len() == 66, "{path}: {tag}");
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(ADMIN_KEY)
            .header("if-none-match", &tag)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 304, "{path}");
        assert_eq!(r.headers()["etag"], tag.as_str());
        assert!(r.bytes().await.expect("body").is_empty());
    }
    let tag = get(&app, "/api/v1/certificates").await.headers["etag"].to_str().expect("ascii").to_string();
    assert_eq!(post(&app, "/api/v1/certificates", &cert_body("etag-change")).await.status, 201);
    let r = app
        .client
        .get(app.url("/api/v1/certificates"))
        .bearer_auth(ADMIN_KEY)
        .header("if-none-match", &tag)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"], tag.as_str(), "a change gives a new tag");
    // Errors and other routes are untouched; big pages pass through untagged.
    assert!(get(&app, "/api/v1/certificates?page=0").await.headers.get("etag").is_none());
    assert!(get(&app, "/api/v1/teams").await.headers.get("etag").is_none());
    crate::api_support::seed_certificates(&app.pool, "big", 400, "'Active'").await;
    assert!(get(&app, "/api/v1/certificates?per_page=500").await.headers.get("etag").is_none());
    app.stop().await;
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_envelope_and_changes_nothing() {
    let app = spawn_api(&["--max-body-size", "4KiB"]).await;
    let tables = [
        "managed_certificates",
        "agents",
        "jobs",
        "teams",
        "owners",
        "renewal_policies",
        "certificate_profiles",
        "issuers",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(count(&app.pool, t).await);
    }
    let raw = |method: Method, path: &str, body: String, ctype: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", ctype.to_string())
            .body(body)
            .send()
    };
    let mut answers = Vec::new();
    for (path, body) in [
        ("/api/v1/certificates", "{\"name\": "),
        ("/api/v1/certificates", "[1,2,3]"),
        ("/api/v1/certificates", "null"),
        ("/api/v1/teams", "{\"name\": 42}"),
        ("/api/v1/agents", "{\"name\": [\"a\"]}"),
        ("/api/v1/certificates/bulk-renew", "{\"certificate_ids\": \"mc-demo-api\"}"),
        ("/api/v1/certificates/mc-demo-api/renew", "{\"force\": \"yes\"}"),
        ("/api/v1/certificates/mc-demo-api/revoke", "{\"reason\": 1}"),
        ("/api/v1/renewal-policies", "{\"name\": \"big\", \"max_retries\": 99999999999}"),
    ] {
        answers.push((
            path.to_string(),
            raw(Method::POST, path, body.to_string(), "application/json").await.expect("send"),
        ));
    }
    let mut oversized = cert_body("huge");
    oversized["common_name"] = json!("a".repeat(8 * 1024));
    answers.push((
        "oversized".into(),
        raw(Method::POST, "/api/v1/certificates", oversized.to_string(), "application/json").await.expect("send"),
    ));
    answers.push((
        "oversized heartbeat".into(),
        raw(
            Method::POST,
            "/api/v1/agents/agent-demo-web01/heartbeat",
            format!("{{\"version\":\"{}\"}}", "v".repeat(8192)),
            "application/json",
        )
        .await
        .expect("send"),
    ));
    answers.push((
        "wrong content type".into(),
        raw(Method::POST, "/api/v1/teams", "{\"name\":\"x\"}".into(), "text/plain").await.expect("send"),
    ));
    answers.push((
        "update unknown field".into(),
        raw(Method::PUT, "/api/v1/certificates/mc-demo-api", "{\"status\":\"Active\"}".into(), "application/json")
            .await
            .expect("send"),
    ));
    for (what, r) in answers {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!((400..500).contains(&status), "{what}: {status} {body}");
        assert!(body["error"].is_string() && body["request_id"].is_string(), "{what}: {body}");
        if what.starts_with("oversized") {
            assert_eq!(status, 413, "{what}");
        }
    }
    for q in [
        "page=-1",
        "page=0",
        "per_page=0",
        "per_page=-5",
        "per_page=501",
        "per_page=99999999999999999999",
        "page=99999999999999999999",
        "page=9223372036854775807&per_page=500",
        "page=abc",
        "cursor=%FF%FE",
        "expires_after=2024-13-45",
    ] {
        for path in ["/api/v1/certificates", "/api/v1/agents", "/api/v1/jobs", "/api/v1/audit", "/api/v1/teams"] {
            let certificates_only = q.starts_with("cursor") || q.starts_with("expires");
            if certificates_only && path != "/api/v1/certificates" {
                continue;
            }
            let a = get(&app, &format!("{path}?{q}")).await;
            assert_envelope(&a, 400);
        }
    }
    assert_envelope(&get(&app, "/api/v1/certificates/%00%01").await, 400);
    for (t, n) in tables.iter().zip(before) {
        assert_eq!(count(&app.pool, t).await, n, "{t} unchanged");
    }
    let cert = get(&app, "/api/v1/certificates/mc-demo-api").await.json;
    assert_eq!(cert["status"], "Active", "nothing renewed or revoked");
    app.stop().await;
}

#[tokio::test]
async fn mutating_calls_leave_audit_rows_with_the_actor_and_shutdown_flushes_them() {
    // A long flush interval: rows appear only through an explicit flush or the shutdown.
    let app = spawn_api(&["--audit-flush-interval", "1h"]).await;
    let url = app.url.clone();
    let created = post(&app, "/api/v1/certificates", &cert_body("audited")).await;
    let id = created.json["id"].as_str().expect("id").to_string();
    call(&app, Method::POST, "/api/v1/teams", Some(USER_KEY), Some(&json!({"name": "Audited"}))).await;
    let (agent, cred) = crate::api_support::register_agent(&app, "audited-agent").await;
    // A heartbeat is audited when it reports a new inventory (docs/operator/audit.md); a bare
    // liveness heartbeat is not.
    call(&app, Method::POST, &format!("/api/v1/agents/{agent}/heartbeat"), Some(&cred), None).await;
    let inventory = json!({"version": "3.0.0"});
    call(&app, Method::POST, &format!("/api/v1/agents/{agent}/heartbeat"), Some(&cred), Some(&inventory)).await;
    get(&app, "/api/v1/certificates").await; // reads are not audited
    assert_eq!(count(&app.pool, "audit_events").await, 0, "nothing written synchronously");
    flush_audit(&app).await;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT actor, action, resource_type, resource_id FROM audit_events ORDER BY created_at")
            .fetch_all(&app.pool)
            .await
            .expect("audit");
    assert!(
        rows.contains(&("admin".into(), "certificates.create".into(), "certificates".into(), id.clone())),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.0 == "reader" && r.1 == "teams.create"), "{rows:?}");
    assert!(
        rows.contains(&(format!("agent:{agent}"), "agents.heartbeat".into(), "agents".into(), agent.clone())),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 4);

    let audit = get(&app, "/api/v1/audit?actor=admin&action=certificates.create").await;
    assert_eq!(audit.json["total"], 1);
    let row_id = audit.json["data"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(get(&app, &format!("/api/v1/audit/{row_id}")).await.json["resource_id"], id.as_str());
    assert_eq!(get(&app, &format!("/api/v1/audit?resource_type=agents&resource_id={agent}")).await.json["total"], 2);
    assert_envelope(&get(&app, "/api/v1/audit/audit-nope").await, 404);

    // Rows buffered at shutdown are written before the pool closes.
    post(&app, "/api/v1/teams", &json!({"name": "Last words"})).await;
    let pool = certctl_server::db::connect(&url, 2).await.expect("pool");
    app.stop().await;
    let last: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'teams.create' AND actor = 'admin'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(last, 1, "the shutdown flushed the buffered row");
    // And a restarted server on the same database sees it through the API.
    let again = spawn_app_on(&url, &["--rate-limit-enabled", "false"]).await;
    assert_eq!(get(&again, "/api/v1/audit?action=teams.create").await.json["total"], 2);
    again.stop().await;
}

#[tokio::test]
async fn head_of_a_hot_read_carries_the_same_etag_as_get() {
    let app = spawn_api(&[]).await;
    let tag = get(&app, "/api/v1/certificates").await.headers["etag"].to_str().expect("ascii").to_string();
    let r = app.client.head(app.url("/api/v1/certificates")).bearer_auth(ADMIN_KEY).send().await.expect("head");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("etag").and_then(|v| v.to_str().ok()), Some(tag.as_str()));
    let r = app
        .client
        .head(app.url("/api/v1/certificates"))
        .bearer_auth(ADMIN_KEY)
        .header("if-none-match", &tag)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 304);
    app.stop().await;
}

//! Hostile and unexpected input through the real server: each test names a class of input that
//! once produced a 500, a non-JSON error, a stuck audit trail or a response the OpenAPI document
//! did not describe, and checks the 4xx, the error envelope (with a request id) and that nothing
//! stored changed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{Answer, assert_envelope, call, cert_body, count, flush_audit, get, post, spawn_api};
use crate::support::{ADMIN_KEY, TestApp};

/// Sends raw `body` bytes with an optional Content-Type and the admin key.
async fn raw(app: &TestApp, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let mut rb = app.client.request(method, app.url(path)).bearer_auth(ADMIN_KEY).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    Answer { status, headers, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// Row counts of the tables a rejected request must leave alone.
async fn counts(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for t in ["managed_certificates", "jobs", "issuers", "teams", "agents", "certificate_revocations"] {
        out.push(count(&app.pool, t).await);
    }
    out
}

#[tokio::test]
async fn a_nul_in_the_path_or_query_is_a_400_and_does_not_stall_the_audit_trail() {
    let app = spawn_api(&[]).await;
    let before = counts(&app).await;
    flush_audit(&app).await;
    let audited = count(&app.pool, "audit_events").await;

    // Once a 400 with PostgreSQL's wording — and the audit row carrying the NUL path id made
    // every later audit batch fail forever.
    assert_envelope(&call(&app, Method::POST, "/api/v1/jobs/ab%00c/cancel", Some(ADMIN_KEY), None).await, 400);
    assert_envelope(&get(&app, "/api/v1/certificates?owner_id=a%00b").await, 400);
    assert_envelope(&get(&app, "/api/v1/certificates/mc%00x").await, 400);
    assert_envelope(&call(&app, Method::POST, "/api/v1/agents/a%00/heartbeat", Some(ADMIN_KEY), None).await, 400);
    assert_eq!(counts(&app).await, before);

    // Later mutating calls are still audited.
    assert_eq!(post(&app, "/api/v1/teams", &json!({"name": "after-nul"})).await.status, 201);
    flush_audit(&app).await;
    assert_eq!(count(&app.pool, "audit_events").await, audited + 1, "the audit trail keeps flowing");
    app.stop().await;
}

#[tokio::test]
async fn an_unstorable_audit_event_is_cleaned_not_retried_forever() {
    let app = spawn_api(&[]).await;
    let sink = app.server.as_ref().expect("server").state.audit.clone();
    flush_audit(&app).await;
    let before = count(&app.pool, "audit_events").await;
    sink.record(certctl_server::audit::AuditEvent {
        actor: "test".into(),
        actor_type: "api_key".into(),
        action: "teams.update".into(),
        resource_type: "teams".into(),
        resource_id: format!("bad\0id{}", "x".repeat(10_000)),
        details: json!({"note": "nul \u{0} inside", "k\u{0}": 1}),
        request_id: "req-nul".into(),
        created_at: chrono::Utc::now(),
    })
    .await;
    assert_eq!(post(&app, "/api/v1/teams", &json!({"name": "next"})).await.status, 201);
    flush_audit(&app).await;
    assert_eq!(count(&app.pool, "audit_events").await, before + 2, "both rows written");
    let (rid, details): (String, Value) =
        sqlx::query_as("SELECT resource_id, details FROM audit_events WHERE request_id = 'req-nul'")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert!(rid.starts_with("bad\u{FFFD}id") && rid.chars().count() <= 512, "cleaned and capped: {} chars", rid.len());
    assert_eq!(details["note"], "nul \u{FFFD} inside");
    app.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_json_string_or_jsonb_value_is_a_400_and_stores_nothing() {
    let app = spawn_api(&[]).await;
    let before = counts(&app).await;
    // `tags` and `config` are jsonb: PostgreSQL refuses \u0000 there with 22P05, once a 500.
    let mut body = cert_body("nul-tags");
    body["tags"] = json!({"k": "a\u{0}b"});
    assert_envelope(&post(&app, "/api/v1/certificates", &body).await, 400);
    let mut body = cert_body("nul-key");
    body["tags"] = json!({"\u{0}": "v"});
    assert_envelope(&post(&app, "/api/v1/certificates", &body).await, 400);
    let a =
        post(&app, "/api/v1/issuers", &json!({"name": "nul-ca", "type": "GenericCA", "config": {"a": "\u{0}"}})).await;
    assert_envelope(&a, 400);
    assert!(a.json["message"].as_str().is_some_and(|m| m.contains("NUL")), "{}", a.json);
    assert_envelope(&post(&app, "/api/v1/certificates", &cert_body("nul\u{0}name")).await, 400);
    assert_envelope(&post(&app, "/api/v1/certificates/bulk-renew", &json!({"certificate_ids": ["a\u{0}"]})).await, 400);
    assert_eq!(counts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_a_400_and_changes_nothing() {
    let app = spawn_api(&[]).await;
    let team_before: Value = get(&app, "/api/v1/teams/t-platform").await.json;
    // serde builds a struct from an array of its fields; `[null, null]` once "updated" a team.
    for body in ["[null, null]", "[\"x\"]", "42", "\"text\"", "true"] {
        let a = raw(&app, Method::PUT, "/api/v1/teams/t-platform", Some("application/json"), body.into()).await;
        assert_envelope(&a, 400);
    }
    assert_eq!(get(&app, "/api/v1/teams/t-platform").await.json, team_before, "team untouched");
    let before = counts(&app).await;
    let a = raw(
        &app,
        Method::POST,
        "/api/v1/certificates/bulk-renew",
        Some("application/json"),
        b"[[\"mc-demo-api\"]]".to_vec(),
    )
    .await;
    assert_envelope(&a, 400);
    let a =
        raw(&app, Method::POST, "/api/v1/certificates/mc-demo-api/revoke", Some("application/json"), b"[]".to_vec())
            .await;
    assert_envelope(&a, 400);
    // No or the wrong content type on a required body is a 415 envelope.
    assert_envelope(&raw(&app, Method::POST, "/api/v1/teams", None, b"{\"name\":\"x\"}".to_vec()).await, 415);
    assert_envelope(
        &raw(&app, Method::POST, "/api/v1/teams", Some("text/plain"), b"{\"name\":\"x\"}".to_vec()).await,
        415,
    );
    // Invalid UTF-8 in a body.
    assert_envelope(
        &raw(&app, Method::POST, "/api/v1/teams", Some("application/json"), b"{\"name\":\"\xff\"}".to_vec()).await,
        400,
    );
    assert_eq!(counts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn a_null_optional_body_means_no_body() {
    let app = spawn_api(&[]).await;
    // The document declares these bodies nullable; `null` was a 400 "expected struct".
    let a = raw(
        &app,
        Method::POST,
        "/api/v1/agents/agent-demo-web01/heartbeat",
        Some("application/json"),
        b"null".to_vec(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let a =
        raw(&app, Method::POST, "/api/v1/certificates/mc-demo-api/renew", Some("application/json"), b" null ".to_vec())
            .await;
    assert_eq!(a.status, 202, "{}", a.json);
    app.stop().await;
}

#[tokio::test]
async fn out_of_range_and_unknown_query_values_are_400s_in_our_words() {
    let app = spawn_api(&[]).await;
    for path in [
        "/api/v1/certificates?expires_before=99999-01-01",
        "/api/v1/certificates?expires_before=99999-01-01T00:00:00Z",
        "/api/v1/certificates?status=Sleeping",
        "/api/v1/certificates?sort=-password",
        "/api/v1/certificates?page=",
        "/api/v1/certificates?per_page=501",
        "/api/v1/certificates?page=18446744073709553",
        "/api/v1/certificates?page=99999999999999999999",
        "/api/v1/certificates?cursor=%FF%FE",
        "/api/v1/certificates?page_size=0",
        "/api/v1/jobs?type=Coffee",
        "/api/v1/agents?retired=maybe",
        "/api/v1/notifications?status=Dead",
        "/api/v1/audit?page=0",
        "/api/v1/teams?per_page=-1",
    ] {
        assert_envelope(&get(&app, path).await, 400);
    }
    // A timestamp PostgreSQL cannot hold: a 400 whose message is ours, not the database's.
    let a = get(&app, "/api/v1/certificates?expires_before=-5000-01-01T00:00:00Z").await;
    assert_envelope(&a, 400);
    assert_eq!(a.json["message"], "a date or time is out of range");
    // The largest documented page is accepted (and simply empty).
    let a = get(&app, "/api/v1/certificates?page=18446744073709552&per_page=500").await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["data"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_huge_id_is_a_404_with_a_short_message() {
    let app = spawn_api(&[]).await;
    let id = "a".repeat(20_000);
    let a = get(&app, &format!("/api/v1/certificates/{id}")).await;
    assert_envelope(&a, 404);
    let message = a.json["message"].as_str().unwrap_or_default();
    assert!(message.len() < 400, "message is {} bytes", message.len());
    let before = counts(&app).await;
    assert_envelope(&post(&app, "/api/v1/teams", &json!({"name": "x", "id": id})).await, 400);
    assert_eq!(counts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_bulk_body_is_a_413_envelope_and_enqueues_nothing() {
    let app = spawn_api(&["--max-body-size", "4096"]).await;
    let before = counts(&app).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("mc-{i}")).collect();
    assert_envelope(&post(&app, "/api/v1/certificates/bulk-renew", &json!({"certificate_ids": ids})).await, 413);
    assert_envelope(&post(&app, "/api/v1/certificates/bulk-revoke", &json!({"certificate_ids": ids})).await, 413);
    assert_eq!(counts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_failures_shared_layers_produce() {
    let app = spawn_api(&[]).await;
    let doc = get(&app, "/api/v1/openapi.json").await.json;
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            let responses = op["responses"].as_object().expect("responses");
            let public = op["security"] == json!([{}]);
            if path.starts_with("/api/") {
                assert!(responses.contains_key("400"), "{method} {path} lacks 400");
            }
            if !public {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
                assert!(responses.contains_key("429"), "{method} {path} lacks 429");
            }
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("413"), "{method} {path} lacks 413");
                if op["requestBody"]["required"] == json!(true) {
                    assert!(responses.contains_key("415"), "{method} {path} lacks 415");
                }
            }
        }
    }
    // Keyset and offset pages are both described.
    let list = &paths["/api/v1/certificates"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let list = serde_json::to_string(list).unwrap_or_default();
    let schemas = &doc["components"]["schemas"];
    let certificate_list = serde_json::to_string(&schemas["CertificateList"]).unwrap_or_default();
    assert!(list.contains("CertificateList") && certificate_list.contains("oneOf"), "{list} {certificate_list}");
    // The bulk selectors say "at least one".
    assert!(schemas["BulkSelector"]["allOf"][1]["anyOf"].is_array(), "{}", schemas["BulkSelector"]);
    app.stop().await;
}

#[tokio::test]
async fn extreme_numbers_in_jsonb_fields_read_back_instead_of_poisoning_the_row() {
    let app = spawn_api(&[]).await;
    // PostgreSQL stores a jsonb number as `numeric` and prints it in full (309 digits for one
    // near f64::MAX). serde_json's default parser rounded that to infinity on the way back, so
    // one stored tag made every later read of the row — and every list containing it — a 500.
    let mut body = cert_body("extreme-numbers");
    body["tags"] = json!({"big": 1.797_693_134_862_315_5e308, "tiny": -1.835_768_491_581_405_3e-270, "neg": -1.7e308});
    let a = post(&app, "/api/v1/certificates", &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().unwrap_or_default().to_string();
    let a = get(&app, &format!("/api/v1/certificates/{id}")).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["tags"], body["tags"]);
    assert_eq!(get(&app, "/api/v1/certificates?per_page=500").await.status, 200);
    let a = call(
        &app,
        Method::PUT,
        "/api/v1/issuers/iss-local",
        Some(ADMIN_KEY),
        Some(&json!({"config": {"x": 1.797_693_134_862_315_5e308}})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(get(&app, "/api/v1/issuers/iss-local").await.status, 200);
    assert_eq!(get(&app, "/api/v1/issuers").await.status, 200);
    app.stop().await;
}

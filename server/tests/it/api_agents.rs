//! `/api/v1/agents`: registration, heartbeat, work poll, CSR submission, job status reports.

use reqwest::Method;
use serde_json::json;

use crate::api_support::{assert_envelope, call, count, delete, flush_audit, get, post, register_agent, spawn_api};

#[tokio::test]
async fn registration_returns_the_credential_once_and_stores_only_its_hash() {
    let app = spawn_api(&[]).await;
    let a = post(&app, "/api/v1/agents", &json!({"name": "edge01", "hostname": "edge01.local", "os": "linux"})).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().expect("id").to_string();
    let cred = a.json["credential"].as_str().expect("credential").to_string();
    assert!(cred.len() >= 64);
    assert!(a.json.get("credential_hash").is_none());
    let stored: String = sqlx::query_scalar("SELECT credential_hash FROM agents WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(stored, certctl_server::http::auth::credential_hash(&cred));
    assert_ne!(stored, cred);

    let one = get(&app, &format!("/api/v1/agents/{id}")).await;
    assert_eq!(one.json["hostname"], "edge01.local");
    assert!(one.json.get("credential").is_none() && one.json.get("credential_hash").is_none());
    let list = get(&app, "/api/v1/agents?per_page=10").await;
    assert_eq!(list.json["total"], 3);
    assert!(list.json["data"].as_array().expect("data").iter().all(|a| a.get("credential_hash").is_none()));

    assert_envelope(&post(&app, "/api/v1/agents", &json!({"name": "edge01"})).await, 409);
    assert_envelope(&post(&app, "/api/v1/agents", &json!({"name": "x", "credential_hash": "abc"})).await, 400);
    assert_envelope(&post(&app, "/api/v1/agents", &json!({"name": ""})).await, 400);
    assert_envelope(&get(&app, "/api/v1/agents/agent-nope").await, 404);
    assert_envelope(&get(&app, "/api/v1/agents?status=Sleeping").await, 400);
    app.stop().await;
}

#[tokio::test]
async fn heartbeat_records_and_answers_404_for_unknown_and_410_for_retired_agents() {
    let app = spawn_api(&[]).await;
    let (id, cred) = register_agent(&app, "hb01").await;
    let path = format!("/api/v1/agents/{id}/heartbeat");
    // No body at all.
    let a = call(&app, Method::POST, &path, Some(&cred), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json, json!({"status": "heartbeat_recorded"}));
    // With the optional fields.
    let body = json!({"version": "2.1.0", "hostname": "hb01.new", "os": "linux", "architecture": "arm64", "ip_address": "10.1.1.1"});
    assert_eq!(call(&app, Method::POST, &path, Some(&cred), Some(&body)).await.status, 200);
    let agent = get(&app, &format!("/api/v1/agents/{id}")).await;
    assert_eq!(agent.json["status"], "Online");
    assert_eq!(agent.json["version"], "2.1.0");
    assert_eq!(agent.json["architecture"], "arm64");
    assert!(agent.json["last_heartbeat_at"].is_string());
    // A malformed body is still a 400.
    let r = app
        .client
        .post(app.url(&path))
        .bearer_auth(&cred)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);

    assert_envelope(&post(&app, "/api/v1/agents/agent-nope/heartbeat", &json!({})).await, 404);
    let retired = delete(&app, &format!("/api/v1/agents/{id}?reason=decommissioned")).await;
    assert_eq!(retired.status, 200);
    assert!(retired.json["retired_at"].is_string());
    assert_eq!(retired.json["retired_reason"], "decommissioned");
    let a = call(&app, Method::POST, &path, Some(&cred), None).await;
    assert_envelope(&a, 410);
    assert_envelope(&delete(&app, "/api/v1/agents/agent-nope").await, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_heartbeat_statement_verifies_the_credential_and_keeps_401_404_and_410_apart() {
    let app = spawn_api(&[]).await;
    let (id, cred) = register_agent(&app, "hb-auth").await;
    let (_, other_cred) = register_agent(&app, "hb-other").await;
    let hb = |id: &str| format!("/api/v1/agents/{id}/heartbeat");
    // A wrong credential, another agent's credential, an unknown agent: 401, nothing written.
    for (path, token) in
        [(hb(&id), "not-the-credential"), (hb(&id), other_cred.as_str()), (hb("agent-nope"), cred.as_str())]
    {
        let a = call(&app, Method::POST, &path, Some(token), Some(&json!({"version": "9.9.9"}))).await;
        assert_envelope(&a, 401);
        assert_eq!(a.headers["www-authenticate"], "Bearer realm=\"certctl\"");
    }
    let seen: (Option<chrono::DateTime<chrono::Utc>>, String) =
        sqlx::query_as("SELECT last_heartbeat_at, version FROM agents WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("agent");
    assert_eq!(seen, (None, String::new()), "a refused heartbeat changes nothing");
    assert_eq!(call(&app, Method::POST, &hb(&id), Some(&cred), None).await.status, 200);
    assert_eq!(post(&app, &hb(&id), &json!({})).await.status, 200, "an admin key may heartbeat any agent");
    assert_envelope(&post(&app, &hb("agent-nope"), &json!({})).await, 404);
    assert_eq!(delete(&app, &format!("/api/v1/agents/{id}")).await.status, 200);
    // Retired: its own credential and an admin key learn 410; a wrong credential still 401.
    assert_envelope(&call(&app, Method::POST, &hb(&id), Some(&cred), None).await, 410);
    assert_envelope(&post(&app, &hb(&id), &json!({})).await, 410);
    assert_envelope(&call(&app, Method::POST, &hb(&id), Some("not-the-credential"), None).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn heartbeats_are_audited_only_when_the_inventory_changes_or_after_authentication_they_are_refused() {
    let app = spawn_api(&["--audit-flush-interval", "1h"]).await;
    let (id, cred) = register_agent(&app, "hb-audit").await;
    let path = format!("/api/v1/agents/{id}/heartbeat");
    for body in [None, None, Some(json!({"hostname": "hb-audit.local"}))] {
        assert_eq!(call(&app, Method::POST, &path, Some(&cred), body.as_ref()).await.status, 200);
    }
    let changed = json!({"version": "2.1.0"});
    assert_eq!(call(&app, Method::POST, &path, Some(&cred), Some(&changed)).await.status, 200);
    assert_eq!(call(&app, Method::POST, &path, Some(&cred), Some(&changed)).await.status, 200);
    assert_envelope(&call(&app, Method::POST, &path, Some("wrong"), None).await, 401);
    assert_envelope(&post(&app, "/api/v1/agents/agent-nope/heartbeat", &json!({})).await, 404);
    delete(&app, &format!("/api/v1/agents/{id}")).await;
    assert_envelope(&call(&app, Method::POST, &path, Some(&cred), None).await, 410);
    flush_audit(&app).await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, resource_id, details->>'status' FROM audit_events WHERE action = 'agents.heartbeat' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("audit");
    let agent = format!("agent:{id}");
    assert_eq!(
        rows,
        vec![
            (agent.clone(), id.clone(), "200".into()),
            ("admin".into(), "agent-nope".into(), "404".into()),
            (agent, id.clone(), "410".into()),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_work_poll_claims_deployments_once_and_lists_csr_requests() {
    let app = spawn_api(&[]).await;
    let (id, cred) = register_agent(&app, "worker").await;
    sqlx::query("UPDATE managed_certificates SET agent_id = $1 WHERE id IN ('mc-demo-api', 'mc-demo-www')")
        .bind(&id)
        .execute(&app.pool)
        .await
        .expect("assign");
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, agent_id, status) VALUES
            ('job-dep', 'Deployment', 'mc-demo-api', $1, 'Pending'),
            ('job-csr', 'Renewal', 'mc-demo-www', $1, 'AwaitingCSR'),
            ('job-other', 'Deployment', 'mc-demo-db', 'agent-demo-db01', 'Pending')",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("jobs");
    let path = format!("/api/v1/agents/{id}/work");
    let a = call(&app, Method::GET, &path, Some(&cred), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["count"], 2);
    let jobs = a.json["jobs"].as_array().expect("jobs");
    let dep = jobs.iter().find(|j| j["id"] == "job-dep").expect("deployment");
    assert_eq!(dep["status"], "Running");
    assert_eq!(dep["common_name"], "api.example.com");
    let csr = jobs.iter().find(|j| j["id"] == "job-csr").expect("csr request");
    assert_eq!(csr["status"], "AwaitingCSR");
    assert_eq!(csr["sans"], json!(["www.example.com", "example.com"]));
    let claimed_by: Option<String> =
        sqlx::query_scalar("SELECT claimed_by FROM jobs WHERE id = 'job-dep'").fetch_one(&app.pool).await.expect("job");
    assert_eq!(claimed_by, Some(format!("agent:{id}")));

    // The claimed deployment is not handed out again; the CSR request still is.
    let a = call(&app, Method::GET, &path, Some(&cred), None).await;
    assert_eq!(a.json["count"], 1);
    assert_eq!(a.json["jobs"][0]["id"], "job-csr");
    assert_envelope(&get(&app, "/api/v1/agents/agent-nope/work").await, 404);
    app.stop().await;
}

#[tokio::test]
async fn job_status_reports_accept_only_valid_statuses_for_the_agents_own_open_jobs() {
    let app = spawn_api(&[]).await;
    let (id, cred) = register_agent(&app, "reporter").await;
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, agent_id, status) VALUES
            ('job-mine', 'Deployment', 'mc-demo-api', $1, 'Running'),
            ('job-theirs', 'Deployment', 'mc-demo-db', 'agent-demo-db01', 'Running')",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("jobs");
    let url = |job: &str| format!("/api/v1/agents/{id}/jobs/{job}/status");
    let a = call(&app, Method::POST, &url("job-mine"), Some(&cred), Some(&json!({"status": "Exploded"}))).await;
    assert_envelope(&a, 400);
    let a = call(&app, Method::POST, &url("job-mine"), Some(&cred), Some(&json!({"status": 7}))).await;
    assert_envelope(&a, 400);
    let a = call(&app, Method::POST, &url("job-theirs"), Some(&cred), Some(&json!({"status": "Completed"}))).await;
    assert_envelope(&a, 404);
    let theirs: String =
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = 'job-theirs'").fetch_one(&app.pool).await.expect("job");
    assert_eq!(theirs, "Running", "another agent's job is untouched");

    let a = call(&app, Method::POST, &url("job-mine"), Some(&cred), Some(&json!({"status": "Completed"}))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["status"], "Completed");
    assert!(a.json["completed_at"].is_string());
    let deployed = get(&app, "/api/v1/certificates/mc-demo-api").await;
    assert!(deployed.json["last_deployed_at"].is_string(), "a completed deployment is recorded");
    let a =
        call(&app, Method::POST, &url("job-mine"), Some(&cred), Some(&json!({"status": "Failed", "error": "late"})))
            .await;
    assert_envelope(&a, 409);
    app.stop().await;
}

#[tokio::test]
async fn csr_submission_validates_its_body_and_maps_issuance_errors_to_the_envelope() {
    let app = spawn_api(&[]).await;
    let (id, cred) = register_agent(&app, "csr01").await;
    let path = format!("/api/v1/agents/{id}/csr");
    let jobs_before = count(&app.pool, "jobs").await;
    let a = call(
        &app,
        Method::POST,
        &path,
        Some(&cred),
        Some(&json!({"csr_pem": "hello", "certificate_id": "mc-demo-api"})),
    )
    .await;
    assert_envelope(&a, 400);
    let a = call(&app, Method::POST, &path, Some(&cred), Some(&json!({"certificate_id": "mc-demo-api"}))).await;
    assert_envelope(&a, 400);
    let a = call(
        &app,
        Method::POST,
        &path,
        Some(&cred),
        Some(&json!({"csr_pem": "x", "certificate_id": "mc-demo-api", "extra": 1})),
    )
    .await;
    assert_envelope(&a, 400);
    // A well-formed submission reaches crate::issuance; whatever it answers comes back as the
    // envelope with the status its IssuanceError maps to (never a bare 500 page).
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    let a =
        call(&app, Method::POST, &path, Some(&cred), Some(&json!({"csr_pem": pem, "certificate_id": "mc-demo-api"})))
            .await;
    if a.status != 202 {
        assert!(a.json["error"].is_string() && a.json["request_id"].is_string(), "{}", a.json);
    }
    assert_eq!(count(&app.pool, "jobs").await, jobs_before);
    app.stop().await;
}

#[test]
fn issuance_errors_map_to_their_http_statuses() {
    use certctl_server::http::error::ApiError;
    use certctl_server::issuance::IssuanceError;
    let status = |e: IssuanceError| ApiError::from(e).status().as_u16();
    assert_eq!(status(IssuanceError::BadCsr("sig".into())), 400);
    assert_eq!(status(IssuanceError::NotAllowed("san".into())), 422);
    assert_eq!(status(IssuanceError::NotFound("job".into())), 404);
    assert_eq!(status(IssuanceError::Conflict("no job awaiting a CSR".into())), 409);
    assert_eq!(status(IssuanceError::Ca("boom".into())), 500);
}

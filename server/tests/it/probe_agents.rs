//! Agent findings of the security probe (issue 14, items 3 and 4): a retired agent is gone on
//! every agent route, and status reports follow the job state machine.

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{assert_envelope, call, count, delete, get, register_agent, spawn_api};
use crate::issuance::csr_for;
use crate::support::{ADMIN_KEY, TestApp};

/// Every agent-authenticated route of agent `id` (method, path, body), read from the served
/// OpenAPI document so a route added later is covered without editing this test.
async fn agent_routes(app: &TestApp, id: &str) -> Vec<(Method, String, Option<Value>)> {
    let doc = call(app, Method::GET, "/api/v1/openapi.json", None, None).await.json;
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let Some(rest) = path.strip_prefix("/api/v1/agents/{id}/") else { continue };
        for (method, _) in item.as_object().expect("item") {
            let m: Method = method.to_ascii_uppercase().parse().expect("method");
            let concrete = format!("/api/v1/agents/{id}/{}", rest.replace("{job_id}", "job-retired"));
            let body = match rest {
                "csr" => Some(json!({"csr_pem": csr_for(&["api.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256),
                                     "certificate_id": "mc-demo-api"})),
                r if r.ends_with("/status") => Some(json!({"status": "Completed"})),
                _ => None,
            };
            out.push((m, concrete, body));
        }
    }
    out
}

#[tokio::test]
async fn a_retired_agent_gets_410_on_every_agent_route_and_changes_nothing() {
    let app = spawn_api(&[]).await;
    let (id, credential) = register_agent(&app, "retiree").await;
    sqlx::query("UPDATE managed_certificates SET agent_id = $1 WHERE id = 'mc-demo-api'")
        .bind(&id)
        .execute(&app.pool)
        .await
        .expect("assign");
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, agent_id, status) VALUES
            ('job-retired', 'Deployment', 'mc-demo-db', $1, 'Running'),
            ('job-csr', 'Renewal', 'mc-demo-api', $1, 'AwaitingCSR')",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("jobs");
    let routes = agent_routes(&app, &id).await;
    assert!(routes.len() >= 4, "heartbeat, work, csr and job status at least: {routes:?}");
    // Before retirement the credential works.
    let hb = format!("/api/v1/agents/{id}/heartbeat");
    assert_eq!(call(&app, Method::POST, &hb, Some(&credential), None).await.status, 200);

    assert_eq!(delete(&app, &format!("/api/v1/agents/{id}")).await.status, 200);
    for (method, path, body) in &routes {
        for key in [credential.as_str(), ADMIN_KEY] {
            let a = call(&app, method.clone(), path, Some(key), body.as_ref()).await;
            assert_envelope(&a, 410);
            assert!(a.json["message"].as_str().unwrap_or_default().contains("retired"), "{method} {path}: {}", a.json);
        }
        // A wrong credential learns nothing about the agent.
        assert_envelope(&call(&app, method.clone(), path, Some("cca_wrong"), body.as_ref()).await, 401);
    }
    let jobs: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM jobs WHERE id IN ('job-retired', 'job-csr') ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("jobs");
    assert_eq!(
        jobs,
        vec![("job-csr".into(), "AwaitingCSR".into()), ("job-retired".into(), "Running".into())],
        "no job moved"
    );
    assert_eq!(count(&app.pool, "certificate_versions").await, 0, "no certificate was issued");
    // Reading the agent itself still works: the row stays for history.
    assert_eq!(get(&app, &format!("/api/v1/agents/{id}")).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn status_reports_follow_the_job_state_machine() {
    let app = spawn_api(&[]).await;
    let (id, cred) = register_agent(&app, "machine").await;
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, agent_id, status) VALUES
            ('job-renew', 'Renewal', 'mc-demo-api', $1, 'AwaitingCSR'),
            ('job-deploy', 'Deployment', 'mc-demo-db', $1, 'Pending'),
            ('job-keygen', 'Issuance', 'mc-demo-www', $1, 'Running')",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("jobs");
    sqlx::query("UPDATE managed_certificates SET status = 'RenewalInProgress' WHERE id = 'mc-demo-api'")
        .execute(&app.pool)
        .await
        .expect("cert");
    let report = |job: &str, body: Value| {
        let path = format!("/api/v1/agents/{id}/jobs/{job}/status");
        let cred = cred.clone();
        let app = &app;
        async move { call(app, Method::POST, &path, Some(&cred), Some(&body)).await }
    };
    let status = |job: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&pool)
                .await
                .expect("job")
        }
    };

    // The probe's case: an AwaitingCSR renewal cannot be completed without its CSR.
    let a = report("job-renew", json!({"status": "Completed"})).await;
    assert_envelope(&a, 409);
    assert!(a.json["message"].as_str().unwrap_or_default().contains("csr"), "points at the CSR route: {}", a.json);
    assert_eq!(status("job-renew").await, "AwaitingCSR");
    for to in ["Running", "Pending", "Cancelled", "AwaitingApproval"] {
        assert_envelope(&report("job-renew", json!({"status": to})).await, 409);
    }
    // A server-keygen job is not the agent's to finish; a deployment is not done before it runs.
    assert_envelope(&report("job-keygen", json!({"status": "Completed"})).await, 409);
    assert_envelope(&report("job-deploy", json!({"status": "Completed"})).await, 409);
    assert_eq!((status("job-keygen").await, status("job-deploy").await), ("Running".into(), "Pending".into()));

    // Allowed: the deployment runs then completes; the agent gives up on the renewal.
    assert_eq!(report("job-deploy", json!({"status": "Running"})).await.status, 200);
    assert_eq!(report("job-deploy", json!({"status": "Completed"})).await.status, 200);
    let a = report("job-renew", json!({"status": "Failed", "error": "no entropy"})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["status"], "Failed");
    assert_eq!(a.json["last_error"], "no entropy");
    assert_envelope(&report("job-renew", json!({"status": "Failed"})).await, 409);
    assert_eq!(count(&app.pool, "certificate_versions").await, 0);
    app.stop().await;
}

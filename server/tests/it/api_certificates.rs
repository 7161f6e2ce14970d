//! `/api/v1/certificates`: CRUD, filters, both pagination modes, renew, revoke, bulk operations.

use std::collections::HashSet;
use std::time::Instant;

use reqwest::Method;
use serde_json::json;

use crate::api_support::{
    assert_envelope, call, cert_body, count, delete, get, post, put, seed_certificates, spawn_api,
};
use crate::support::USER_KEY;

#[tokio::test]
async fn a_created_certificate_starts_pending_and_can_be_read_updated_and_archived() {
    let app = spawn_api(&[]).await;
    let a = post(&app, "/api/v1/certificates", &cert_body("shop")).await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["status"], "Pending");
    let id = a.json["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("mc-"), "{id}");

    let a = get(&app, &format!("/api/v1/certificates/{id}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["common_name"], "shop.example.com");

    let a =
        put(&app, &format!("/api/v1/certificates/{id}"), &json!({"environment": "staging", "sans": ["a.example.com"]}))
            .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["environment"], "staging");
    assert_eq!(a.json["sans"], json!(["a.example.com"]));
    assert_eq!(a.json["name"], "shop", "absent fields are unchanged");

    let a = delete(&app, &format!("/api/v1/certificates/{id}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["status"], "Archived");
    assert_eq!(get(&app, &format!("/api/v1/certificates/{id}")).await.json["status"], "Archived");

    assert_envelope(&get(&app, "/api/v1/certificates/mc-missing").await, 404);
    assert_envelope(&put(&app, "/api/v1/certificates/mc-missing", &json!({"environment": "x"})).await, 404);
    assert_envelope(&delete(&app, "/api/v1/certificates/mc-missing").await, 404);
    assert_envelope(&get(&app, "/api/v1/certificates/mc-missing/versions").await, 404);
    assert_eq!(get(&app, &format!("/api/v1/certificates/{id}/versions")).await.json["data"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_name_is_409_an_unknown_reference_422_and_a_missing_field_400() {
    let app = spawn_api(&[]).await;
    assert_eq!(post(&app, "/api/v1/certificates", &cert_body("dup")).await.status, 201);
    let before = count(&app.pool, "managed_certificates").await;
    let a = post(&app, "/api/v1/certificates", &cert_body("dup")).await;
    assert_envelope(&a, 409);
    assert_eq!(a.json["message"], "a certificate with this name already exists");

    let mut body = cert_body("ghost-owner");
    body["owner_id"] = json!("o-nobody");
    let a = post(&app, "/api/v1/certificates", &body).await;
    assert_envelope(&a, 422);
    assert!(a.json["message"].as_str().unwrap_or("").contains("owner_id"), "{}", a.json);

    let mut body = cert_body("no-policy");
    body.as_object_mut().expect("object").remove("renewal_policy_id");
    assert_envelope(&post(&app, "/api/v1/certificates", &body).await, 400);

    let mut body = cert_body("same-id");
    body["id"] = json!("mc-demo-api");
    assert_envelope(&post(&app, "/api/v1/certificates", &body).await, 409);
    assert_eq!(count(&app.pool, "managed_certificates").await, before);
    app.stop().await;
}

#[tokio::test]
async fn list_filters_and_sort_narrow_and_order_the_rows() {
    let app = spawn_api(&[]).await;
    let a = get(&app, "/api/v1/certificates?status=Active").await;
    assert_eq!(a.json["total"], 1);
    assert_eq!(a.json["data"][0]["id"], "mc-demo-api");
    let a = get(&app, "/api/v1/certificates?environment=staging").await;
    assert_eq!(a.json["total"], 1);
    let a = get(
        &app,
        "/api/v1/certificates?owner_id=o-alice&team_id=t-platform&issuer_id=iss-local&profile_id=prof-standard-tls",
    )
    .await;
    assert_eq!(a.json["total"], 3);
    let soon = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let a = get(&app, &format!("/api/v1/certificates?expires_before={soon}")).await;
    assert_eq!(a.json["total"], 1, "{}", a.json);
    assert_eq!(a.json["data"][0]["id"], "mc-demo-www");
    let a = get(&app, &format!("/api/v1/certificates?expires_after={soon}")).await;
    assert_eq!(a.json["data"][0]["id"], "mc-demo-api");

    let a = get(&app, "/api/v1/certificates?sort=-expires_at").await;
    let ids: Vec<&str> = a.json["data"].as_array().expect("data").iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, ["mc-demo-api", "mc-demo-www", "mc-demo-db"], "descending, NULL last");
    let a = get(&app, "/api/v1/certificates?sort=name").await;
    assert_eq!(a.json["data"][0]["name"], "api-example-com");

    assert_envelope(&get(&app, "/api/v1/certificates?sort=credential_hash").await, 400);
    assert_envelope(&get(&app, "/api/v1/certificates?status=Bogus").await, 400);
    assert_envelope(&get(&app, "/api/v1/certificates?expires_before=tomorrow").await, 400);
    let a = get(&app, "/api/v1/certificates?status=Revoked").await;
    assert_eq!(a.json["data"], json!([]), "an empty page is [] not null");
    app.stop().await;
}

#[tokio::test]
async fn offset_pagination_returns_every_row_exactly_once_over_1000_rows() {
    let app = spawn_api(&[]).await;
    seed_certificates(&app.pool, "pg", 997, "'Active'").await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let a = get(&app, &format!("/api/v1/certificates?page={page}&per_page=37")).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json["total"], 1000);
        assert_eq!(a.json["per_page"], 37);
        let data = a.json["data"].as_array().expect("data");
        if data.is_empty() {
            break;
        }
        seen.extend(data.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)));
        page += 1;
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1000, "no duplicates");
    app.stop().await;
}

#[tokio::test]
async fn cursor_pagination_returns_every_row_exactly_once_and_refuses_garbage() {
    let app = spawn_api(&[]).await;
    seed_certificates(&app.pool, "cur", 997, "'Active'").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/v1/certificates?page_size=64".to_string(),
            Some(c) => format!("/api/v1/certificates?page_size=64&cursor={c}"),
        };
        let a = get(&app, &path).await;
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json["page_size"], 64);
        seen.extend(
            a.json["data"].as_array().expect("data").iter().filter_map(|c| c["id"].as_str().map(str::to_owned)),
        );
        pages += 1;
        match a.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 100, "runaway paging");
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1000, "no duplicates");

    // Filters apply in keyset mode too.
    let a = get(&app, "/api/v1/certificates?page_size=500&status=Pending").await;
    assert_eq!(a.json["data"].as_array().map(Vec::len), Some(1));
    assert!(a.json["next_cursor"].is_null());

    for bad in ["garbage!!", "bm9wZQ", "MTIzLA", "%00"] {
        assert_envelope(&get(&app, &format!("/api/v1/certificates?cursor={bad}")).await, 400);
    }
    assert_envelope(&get(&app, "/api/v1/certificates?page_size=0").await, 400);
    assert_envelope(&get(&app, "/api/v1/certificates?page_size=501").await, 400);
    assert_envelope(&get(&app, "/api/v1/certificates?page_size=10&page=2").await, 400);
    app.stop().await;
}

#[tokio::test]
async fn renew_enqueues_one_job_and_a_second_renew_is_409_unless_forced() {
    let app = spawn_api(&[]).await;
    let a = post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await;
    assert_eq!(a.status, 202, "{}", a.json);
    assert_eq!(a.json["status"], "renewal_triggered");
    let first_job = a.json["job_id"].as_str().expect("job").to_string();
    assert_eq!(get(&app, "/api/v1/certificates/mc-demo-api").await.json["status"], "RenewalInProgress");
    let job = get(&app, &format!("/api/v1/jobs/{first_job}")).await;
    assert_eq!(job.json["type"], "Renewal");
    assert_eq!(job.json["status"], "Pending");
    assert_eq!(job.json["agent_id"], "agent-demo-web01");

    assert_envelope(&post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await, 409);
    // Without a body at all, too.
    let a =
        call(&app, Method::POST, "/api/v1/certificates/mc-demo-api/renew", Some(crate::support::ADMIN_KEY), None).await;
    assert_envelope(&a, 409);

    let a = post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({"force": true})).await;
    assert_eq!(a.status, 202, "{}", a.json);
    assert_ne!(a.json["job_id"], first_job);
    assert_eq!(get(&app, &format!("/api/v1/jobs/{first_job}")).await.json["status"], "Cancelled");
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE certificate_id = 'mc-demo-api' AND status IN ('Pending','AwaitingCSR','AwaitingApproval','Running')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(open, 1);

    assert_envelope(&post(&app, "/api/v1/certificates/mc-nope/renew", &json!({})).await, 404);
    assert_envelope(&post(&app, "/api/v1/certificates/mc-demo-www/renew", &json!({"forse": true})).await, 400);
    app.stop().await;
}

#[tokio::test]
async fn revoke_records_the_current_version_and_marks_the_certificate_revoked() {
    let app = spawn_api(&[]).await;
    sqlx::query(
        "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after,
                                           fingerprint_sha256, pem_chain, created_at)
         VALUES ('cv-old', 'mc-demo-api', 'iss-local', 'aa01', now() - interval '100 days', now() - interval '10 days', 'f1', 'pem', now() - interval '100 days'),
                ('cv-new', 'mc-demo-api', 'iss-local', 'bb02', now() - interval '10 days', now() + interval '80 days', 'f2', 'pem', now() - interval '10 days')",
    )
    .execute(&app.pool)
    .await
    .expect("versions");
    let versions = get(&app, "/api/v1/certificates/mc-demo-api/versions").await;
    assert_eq!(versions.json["total"], 2);
    assert_eq!(versions.json["data"][0]["serial_number"], "bb02", "newest first");

    assert_envelope(&post(&app, "/api/v1/certificates/mc-demo-api/revoke", &json!({"reason": "bored"})).await, 400);
    // removeFromCRL is reserved for delta CRLs (RFC 5280 §5.3.1), in any spelling.
    for reason in ["removeFromCRL", "removefromcrl"] {
        let a = post(&app, "/api/v1/certificates/mc-demo-api/revoke", &json!({"reason": reason})).await;
        assert_envelope(&a, 400);
        assert!(a.json["message"].as_str().unwrap_or_default().contains("removeFromCRL"), "{}", a.json);
    }
    let a = post(&app, "/api/v1/certificates/mc-demo-api/revoke", &json!({"reason": "keyCompromise"})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["serial_number"], "bb02");
    let (serial, reason, code): (String, String, i32) = sqlx::query_as(
        "SELECT serial_number, reason, reason_code FROM certificate_revocations WHERE certificate_id = 'mc-demo-api'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("revocation");
    assert_eq!((serial.as_str(), reason.as_str(), code), ("bb02", "keyCompromise", 1));
    let cert = get(&app, "/api/v1/certificates/mc-demo-api").await;
    assert_eq!(cert.json["status"], "Revoked");
    assert_eq!(cert.json["revocation_reason"], "keyCompromise");
    assert!(cert.json["revoked_at"].is_string());
    assert_envelope(&post(&app, "/api/v1/certificates/mc-demo-api/revoke", &json!({})).await, 409);

    // A certificate without any version is revoked without a revocation row.
    let a =
        call(&app, Method::POST, "/api/v1/certificates/mc-demo-db/revoke", Some(crate::support::ADMIN_KEY), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(a.json["serial_number"].is_null());
    assert_eq!(count(&app.pool, "certificate_revocations").await, 1);
    assert_envelope(&post(&app, "/api/v1/certificates/mc-nope/revoke", &json!({})).await, 404);
    app.stop().await;
}

#[tokio::test]
async fn one_bulk_renew_over_10000_certificates_enqueues_every_eligible_one_exactly_once() {
    let app = spawn_api(&[]).await;
    // Statuses cycle through all eight; 4 of 8 are eligible (Pending, Active, Expiring, Failed).
    seed_certificates(
        &app.pool,
        "bulk",
        10_000,
        "(ARRAY['Pending','Active','Expiring','Expired','RenewalInProgress','Failed','Revoked','Archived'])[i % 8 + 1]",
    )
    .await;
    // One eligible certificate already has an open job: it must be skipped, not duplicated.
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, status) VALUES ('job-pre', 'Issuance', 'bulk-8', 'Pending')",
    )
    .execute(&app.pool)
    .await
    .expect("pre-existing job");
    let started = Instant::now();
    let a = post(
        &app,
        "/api/v1/certificates/bulk-renew",
        &json!({"profile_id": "prof-standard-tls", "team_id": "t-platform"}),
    )
    .await;
    eprintln!("bulk-renew over 10,003 matched certificates took {:?}", started.elapsed());
    assert_eq!(a.status, 200, "{}", a.json);
    // 10,000 seeded + 3 demo certificates match the selectors.
    assert_eq!(a.json["total_matched"], 10_003);
    let eligible_seeded = 5_000 - 1; // bulk-8 is Pending but already has an open job
    let eligible_demo = 3; // Active, Expiring, Pending
    let enqueued = eligible_seeded + eligible_demo;
    assert_eq!(a.json["total_enqueued"], enqueued);
    assert_eq!(a.json["total_skipped"], 10_003 - enqueued);
    assert_eq!(a.json["total_failed"], 0);
    assert_eq!(a.json["enqueued_jobs"].as_array().map(Vec::len), Some(enqueued as usize));

    let (jobs, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT certificate_id) FROM jobs WHERE type = 'Renewal' AND status = 'Pending'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("jobs");
    assert_eq!((jobs, distinct), (enqueued, enqueued), "exactly one job per enqueued certificate");
    let in_progress: i64 =
        sqlx::query_scalar("SELECT count(*) FROM managed_certificates WHERE status = 'RenewalInProgress'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(in_progress, 1_250 + enqueued, "pre-existing RenewalInProgress plus every enqueued one");

    // A second call finds nothing left to enqueue.
    let again = post(&app, "/api/v1/certificates/bulk-renew", &json!({"team_id": "t-platform"})).await;
    assert_eq!(again.json["total_enqueued"], 0);
    assert_eq!(count(&app.pool, "jobs").await, enqueued + 1);
    app.stop().await;
}

#[tokio::test]
async fn bulk_renew_needs_a_selector_and_reports_unknown_ids() {
    let app = spawn_api(&[]).await;
    assert_envelope(&post(&app, "/api/v1/certificates/bulk-renew", &json!({})).await, 400);
    assert_envelope(&post(&app, "/api/v1/certificates/bulk-renew", &json!({"certificate_ids": []})).await, 400);
    assert_envelope(&post(&app, "/api/v1/certificates/bulk-renew", &json!({"colour": "red"})).await, 400);
    let a =
        post(&app, "/api/v1/certificates/bulk-renew", &json!({"certificate_ids": ["mc-demo-api", "mc-ghost"]})).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["total_matched"], 1);
    assert_eq!(a.json["total_enqueued"], 1);
    assert_eq!(a.json["total_failed"], 1);
    assert_eq!(a.json["errors"][0]["certificate_id"], "mc-ghost");
    assert_eq!(a.json["enqueued_jobs"][0]["certificate_id"], "mc-demo-api");
    let a = post(&app, "/api/v1/certificates/bulk-renew", &json!({"agent_id": "agent-demo-db01"})).await;
    assert_eq!(a.json["total_matched"], 1);
    assert_eq!(a.json["enqueued_jobs"][0]["certificate_id"], "mc-demo-db");
    app.stop().await;
}

#[tokio::test]
async fn bulk_revoke_is_admin_only_and_revokes_every_match_set_based() {
    let app = spawn_api(&[]).await;
    seed_certificates(&app.pool, "rv", 50, "'Active'").await;
    sqlx::query(
        "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after, fingerprint_sha256, pem_chain)
         SELECT 'cv-' || i, 'rv-' || i, 'iss-local', 'ser' || i, now(), now() + interval '1 day', 'f', 'pem' FROM generate_series(1, 50) i",
    )
    .execute(&app.pool)
    .await
    .expect("versions");
    let body = json!({"owner_id": "o-alice", "reason": "superseded"});
    let a = call(&app, Method::POST, "/api/v1/certificates/bulk-revoke", Some(USER_KEY), Some(&body)).await;
    assert_envelope(&a, 403);
    assert_eq!(count(&app.pool, "certificate_revocations").await, 0);
    assert_envelope(
        &post(&app, "/api/v1/certificates/bulk-revoke", &json!({"owner_id": "o-alice", "reason": "nope"})).await,
        400,
    );
    let a = post(&app, "/api/v1/certificates/bulk-revoke", &body).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["total_matched"], 53);
    assert_eq!(a.json["total_revoked"], 53);
    assert_eq!(count(&app.pool, "certificate_revocations").await, 50);
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM managed_certificates WHERE status = 'Revoked' AND revocation_reason = 'superseded'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(revoked, 53);
    let again = post(&app, "/api/v1/certificates/bulk-revoke", &body).await;
    assert_eq!(again.json["total_revoked"], 0);
    assert_eq!(again.json["total_skipped"], 53);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_bulk_renews_over_the_same_certificates_enqueue_each_one_once() {
    let app = spawn_api(&[]).await;
    seed_certificates(&app.pool, "race", 2_000, "'Active'").await;
    let body = json!({"team_id": "t-platform"});
    let calls = (0..4).map(|_| post(&app, "/api/v1/certificates/bulk-renew", &body));
    let answers = futures::future::join_all(calls).await;
    let mut enqueued = 0;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.json);
        enqueued += a.json["total_enqueued"].as_i64().unwrap_or(0);
    }
    // 2,000 seeded + 3 demo certificates, all eligible, split between the calls.
    assert_eq!(enqueued, 2_003);
    let (jobs, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT certificate_id) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .expect("jobs");
    assert_eq!((jobs, distinct), (2_003, 2_003));
    app.stop().await;
}

//! Authentication, authorisation, rate limiting, the route table (OpenAPI) and metrics.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api_support::{Answer, assert_envelope, call, flush_audit, get, post, register_agent, spawn_api};
use crate::support::{ADMIN_KEY, USER_KEY, spawn_app};

/// `/api/v1` routes that answer without a key by design.
const PUBLIC_API_ROUTES: &[&str] =
    &["/api/v1/version", "/api/v1/auth/info", "/api/v1/metrics/prometheus", "/api/v1/openapi.json"];

/// Every (method, concrete path) of the served OpenAPI document under `/api/v1`.
async fn api_operations(app: &crate::support::TestApp) -> Vec<(Method, String, String)> {
    let doc = call(app, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let paths = doc.json["paths"].as_object().expect("paths").clone();
    let mut ops = Vec::new();
    for (template, item) in paths {
        if !template.starts_with("/api/v1/") {
            continue;
        }
        // Substitute every {param} with a harmless value.
        let mut concrete = String::new();
        let mut rest = template.as_str();
        while let Some(start) = rest.find('{') {
            concrete.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing brace") + start;
            concrete.push_str("x-unknown");
            rest = &rest[end + 1..];
        }
        concrete.push_str(rest);
        for method in item.as_object().expect("path item").keys() {
            let m = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "put" => Method::PUT,
                "delete" => Method::DELETE,
                "patch" => Method::PATCH,
                _ => continue,
            };
            ops.push((m, template.clone(), concrete.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn every_api_route_in_the_route_table_answers_401_without_a_key() {
    let app = spawn_api(&[]).await;
    let ops = api_operations(&app).await;
    assert!(ops.len() >= 50, "the document lists the API ({} operations)", ops.len());
    let mut checked = 0;
    for (method, template, path) in &ops {
        if PUBLIC_API_ROUTES.contains(&template.as_str()) {
            continue;
        }
        for key in [None, Some("not-a-key")] {
            let a = call(&app, method.clone(), path, key, Some(&json!({}))).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {template} with {key:?}: {}", a.json);
            assert_eq!(a.headers["www-authenticate"], "Bearer realm=\"certctl\"", "{method} {template}");
            assert_envelope(&a, 401);
        }
        checked += 1;
    }
    assert!(checked >= 50);
    app.stop().await;
}

#[tokio::test]
async fn every_route_in_the_openapi_document_exists_in_the_router() {
    let app = spawn_api(&[]).await;
    for (method, template, path) in api_operations(&app).await {
        let a = call(&app, method.clone(), &path, Some(ADMIN_KEY), Some(&json!({}))).await;
        assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {template} is documented but not routed");
        assert_ne!(a.json["message"], "no such route", "{method} {template} is documented but not routed");
        assert!(a.status.as_u16() < 500, "{method} {template} answered {}: {}", a.status, a.json);
    }
    app.stop().await;
}

#[tokio::test]
async fn version_auth_info_health_and_metrics_answer_without_a_key() {
    let app = spawn_api(&[]).await;
    let info = call(&app, Method::GET, "/api/v1/auth/info", None, None).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json, json!({"auth_type": "api-key", "required": true}));
    for path in ["/health", "/ready", "/api/v1/version", "/metrics", "/api/v1/metrics/prometheus"] {
        let a = call(&app, Method::GET, path, None, None).await;
        assert_eq!(a.status, 200, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_need_a_key_when_not_public() {
    let app = spawn_api(&["--metrics-public", "false"]).await;
    assert_eq!(call(&app, Method::GET, "/metrics", None, None).await.status, 401);
    let r = app.client.get(app.url("/metrics")).bearer_auth(ADMIN_KEY).send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_non_admin_key_gets_403_on_admin_routes_and_agent_endpoints() {
    let app = spawn_api(&[]).await;
    let a = call(
        &app,
        Method::POST,
        "/api/v1/certificates/bulk-revoke",
        Some(USER_KEY),
        Some(&json!({"owner_id": "o-alice"})),
    )
    .await;
    assert_envelope(&a, 403);
    let a =
        call(&app, Method::POST, "/api/v1/issuers", Some(USER_KEY), Some(&json!({"name": "x", "type": "GenericCA"})))
            .await;
    assert_envelope(&a, 403);
    let (agent, _) = register_agent(&app, "web-403").await;
    let a = call(&app, Method::POST, &format!("/api/v1/agents/{agent}/heartbeat"), Some(USER_KEY), None).await;
    assert_envelope(&a, 403);
    // The non-admin key may read and write ordinary resources.
    assert_eq!(call(&app, Method::GET, "/api/v1/certificates", Some(USER_KEY), None).await.status, 200);
    // The admin key may act for any agent.
    assert_eq!(
        call(&app, Method::POST, &format!("/api/v1/agents/{agent}/heartbeat"), Some(ADMIN_KEY), None).await.status,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn an_agent_credential_acts_only_for_its_own_agent() {
    let app = spawn_api(&[]).await;
    let (a_id, a_cred) = register_agent(&app, "agent-a").await;
    let (b_id, _) = register_agent(&app, "agent-b").await;
    let hb = |id: &str| format!("/api/v1/agents/{id}/heartbeat");
    let own = call(&app, Method::POST, &hb(&a_id), Some(&a_cred), None).await;
    assert_eq!(own.status, 200, "{}", own.json);
    assert_eq!(own.json, json!({"status": "heartbeat_recorded"}));
    for (method, path) in [
        (Method::POST, hb(&b_id)),
        (Method::GET, format!("/api/v1/agents/{b_id}/work")),
        (Method::POST, format!("/api/v1/agents/{b_id}/jobs/j-1/status")),
        (Method::GET, "/api/v1/certificates".to_string()),
        (Method::GET, format!("/api/v1/agents/{a_id}")),
        (Method::POST, "/api/v1/agents".to_string()),
    ] {
        let a = call(&app, method.clone(), &path, Some(&a_cred), Some(&json!({"status": "Running"}))).await;
        assert_envelope(&a, 401);
        assert_eq!(a.headers["www-authenticate"], "Bearer realm=\"certctl\"");
    }
    let b_seen: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_heartbeat_at FROM agents WHERE id = $1")
            .bind(&b_id)
            .fetch_one(&app.pool)
            .await
            .expect("b");
    assert!(b_seen.is_none(), "agent B was never heartbeated");
    app.stop().await;
}

#[tokio::test]
async fn agents_seeded_in_sql_with_the_harness_hash_form_authenticate() {
    let app = spawn_api(&[]).await;
    sqlx::query(
        "INSERT INTO agents (id, name, credential_hash)
         VALUES ('agent-seeded', 'seeded', encode(sha256(convert_to('tok-seeded-1', 'UTF8')), 'hex'))",
    )
    .execute(&app.pool)
    .await
    .expect("seed agent");
    let a = call(&app, Method::POST, "/api/v1/agents/agent-seeded/heartbeat", Some("tok-seeded-1"), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let a = call(&app, Method::POST, "/api/v1/agents/agent-seeded/heartbeat", Some("tok-seeded-2"), None).await;
    assert_envelope(&a, 401);
    app.stop().await;
}

#[tokio::test]
async fn auth_type_none_makes_every_caller_the_admin_anonymous() {
    let app = spawn_api(&["--auth-type", "none"]).await;
    let info = call(&app, Method::GET, "/api/v1/auth/info", None, None).await;
    assert_eq!(info.json, json!({"auth_type": "none", "required": false}));
    let a = call(&app, Method::POST, "/api/v1/teams", None, Some(&json!({"name": "Open"}))).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let a =
        call(&app, Method::POST, "/api/v1/certificates/bulk-revoke", None, Some(&json!({"certificate_ids": ["nope"]})))
            .await;
    assert_eq!(a.status, 200, "admin-only routes are open: {}", a.json);
    flush_audit(&app).await;
    let actor: String = sqlx::query_scalar("SELECT actor FROM audit_events WHERE action = 'teams.create'")
        .fetch_one(&app.pool)
        .await
        .expect("audit row");
    assert_eq!(actor, "anonymous");
    app.stop().await;
}

#[tokio::test]
async fn the_rate_limit_is_per_key_and_answers_429_with_retry_after() {
    let app = spawn_app(&["--rate-limit-rps", "1", "--rate-limit-burst", "3"]).await;
    let mut statuses = Vec::new();
    let mut limited: Option<Answer> = None;
    for _ in 0..6 {
        let a = get(&app, "/api/v1/teams").await;
        statuses.push(a.status.as_u16());
        if a.status == 429 {
            limited = Some(a);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst is admitted: {statuses:?}");
    let limited = limited.expect("some request was limited");
    assert_envelope(&limited, 429);
    let retry: u64 = limited.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry >= 1);
    // Another key has its own budget.
    assert_eq!(call(&app, Method::GET, "/api/v1/teams", Some(USER_KEY), None).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_agent_credential_cannot_use_up_the_agents_rate_limit() {
    let app = spawn_app(&["--rate-limit-rps", "1", "--rate-limit-burst", "2"]).await;
    let (id, cred) = register_agent(&app, "rl-agent").await;
    let path = format!("/api/v1/agents/{id}/heartbeat");
    let mut guesses = Vec::new();
    for _ in 0..5 {
        guesses.push(call(&app, Method::POST, &path, Some("a-guess"), None).await.status.as_u16());
    }
    assert!(guesses.iter().all(|s| *s == 401 || *s == 429), "{guesses:?}");
    assert!(guesses.contains(&429), "the guesser is limited in its own bucket: {guesses:?}");
    // The agent's budget is untouched, and its own bucket limits it in turn.
    let mut own = Vec::new();
    for _ in 0..4 {
        own.push(call(&app, Method::POST, &path, Some(&cred), None).await.status.as_u16());
    }
    assert_eq!(&own[..2], &[200, 200], "{own:?}");
    assert!(own.contains(&429), "{own:?}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_the_reference_names_and_request_durations_by_route() {
    let app = spawn_api(&[]).await;
    assert_eq!(get(&app, "/api/v1/certificates").await.status, 200);
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for name in [
        "certctl_certificate_total 3",
        "certctl_certificate_active 1",
        "certctl_certificate_expiring_soon",
        "certctl_certificate_expired",
        "certctl_certificate_revoked",
        "certctl_agent_total 2",
        "certctl_agent_online 1",
        "certctl_job_pending",
        "certctl_job_completed_total",
        "certctl_job_failed_total",
        "certctl_notification_dead_total",
        "certctl_issuance_total",
        "certctl_issuance_duration_seconds",
        "certctl_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/certificates\",status=\"200\"} 1",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    // The gauges are a cached snapshot: a new certificate shows up only after the TTL.
    let created = post(&app, "/api/v1/certificates", &crate::api_support::cert_body("metrics-new")).await;
    assert_eq!(created.status, 201);
    let text = app.client.get(app.url("/api/v1/metrics/prometheus")).send().await.expect("m").text().await.expect("t");
    assert!(text.contains("certctl_certificate_total 3"), "served from the snapshot");
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_is_served_and_names_bearer_auth() {
    let app = spawn_api(&[]).await;
    let doc: Value = call(&app, Method::GET, "/api/v1/openapi.json", None, None).await.json;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["paths"]["/api/v1/certificates/bulk-renew"]["post"].is_object());
    assert_eq!(doc["paths"]["/api/v1/auth/info"]["get"]["security"], json!([{}]));
    // Stateful links: a created team links to its member operations, by OpenAPI's key names.
    let link = &doc["paths"]["/api/v1/teams"]["post"]["responses"]["201"]["links"]["get"];
    assert_eq!(link["operationRef"], "#/paths/~1api~1v1~1teams~1{id}/get", "{link}");
    assert_eq!(link["parameters"]["id"], "$response.body#/id");
    assert!(link.get("operation_ref").is_none());
    // Path parameters are never empty.
    let id = &doc["paths"]["/api/v1/teams/{id}"]["get"]["parameters"][0];
    assert_eq!((id["in"].as_str(), id["schema"]["minLength"].as_u64()), (Some("path"), Some(1)), "{id}");
    // The same document is available without a server, for tooling.
    let built = serde_json::to_value(certctl_server::http::openapi_document(true)).expect("doc");
    assert_eq!(built["paths"].as_object().map(|p| p.len()), doc["paths"].as_object().map(|p| p.len()));
    app.stop().await;
}

/// The role matrix as the contract states it (README "Roles"): every operation the server
/// documents, and who may call it. The test below fails on any route missing here, so a new
/// route cannot be added without deciding its role.
const ROLE_MATRIX: &[(&str, &str, &str)] = &[
    ("GET", "/health", "public"),
    ("GET", "/ready", "public"),
    ("GET", "/api/v1/version", "public"),
    ("GET", "/api/v1/auth/info", "public"),
    ("GET", "/metrics", "public"),
    ("GET", "/api/v1/metrics/prometheus", "public"),
    ("GET", "/api/v1/certificates", "any-key"),
    ("POST", "/api/v1/certificates", "any-key"),
    ("GET", "/api/v1/certificates/{id}", "any-key"),
    ("PUT", "/api/v1/certificates/{id}", "any-key"),
    ("DELETE", "/api/v1/certificates/{id}", "any-key"),
    ("GET", "/api/v1/certificates/{id}/versions", "any-key"),
    ("POST", "/api/v1/certificates/{id}/renew", "any-key"),
    ("POST", "/api/v1/certificates/{id}/revoke", "any-key"),
    ("POST", "/api/v1/certificates/bulk-renew", "any-key"),
    ("POST", "/api/v1/certificates/bulk-revoke", "admin"),
    ("GET", "/api/v1/agents", "any-key"),
    ("POST", "/api/v1/agents", "any-key"),
    ("GET", "/api/v1/agents/{id}", "any-key"),
    ("DELETE", "/api/v1/agents/{id}", "any-key"),
    ("POST", "/api/v1/agents/{id}/heartbeat", "agent"),
    ("GET", "/api/v1/agents/{id}/work", "agent"),
    ("POST", "/api/v1/agents/{id}/csr", "agent"),
    ("POST", "/api/v1/agents/{id}/jobs/{job_id}/status", "agent"),
    ("GET", "/api/v1/jobs", "any-key"),
    ("GET", "/api/v1/jobs/{id}", "any-key"),
    ("POST", "/api/v1/jobs/{id}/cancel", "any-key"),
    ("GET", "/api/v1/notifications", "any-key"),
    ("GET", "/api/v1/notifications/{id}", "any-key"),
    ("POST", "/api/v1/notifications/{id}/read", "any-key"),
    ("POST", "/api/v1/notifications/{id}/requeue", "any-key"),
    ("GET", "/api/v1/audit", "any-key"),
    ("GET", "/api/v1/audit/{id}", "any-key"),
    ("GET", "/api/v1/stats/summary", "any-key"),
    ("GET", "/api/v1/teams", "any-key"),
    ("POST", "/api/v1/teams", "any-key"),
    ("GET", "/api/v1/teams/{id}", "any-key"),
    ("PUT", "/api/v1/teams/{id}", "any-key"),
    ("DELETE", "/api/v1/teams/{id}", "any-key"),
    ("GET", "/api/v1/owners", "any-key"),
    ("POST", "/api/v1/owners", "any-key"),
    ("GET", "/api/v1/owners/{id}", "any-key"),
    ("PUT", "/api/v1/owners/{id}", "any-key"),
    ("DELETE", "/api/v1/owners/{id}", "any-key"),
    ("GET", "/api/v1/renewal-policies", "any-key"),
    ("POST", "/api/v1/renewal-policies", "admin"),
    ("GET", "/api/v1/renewal-policies/{id}", "any-key"),
    ("PUT", "/api/v1/renewal-policies/{id}", "admin"),
    ("DELETE", "/api/v1/renewal-policies/{id}", "admin"),
    ("GET", "/api/v1/profiles", "any-key"),
    ("POST", "/api/v1/profiles", "admin"),
    ("GET", "/api/v1/profiles/{id}", "any-key"),
    ("PUT", "/api/v1/profiles/{id}", "admin"),
    ("DELETE", "/api/v1/profiles/{id}", "admin"),
    ("GET", "/api/v1/issuers", "any-key"),
    ("POST", "/api/v1/issuers", "admin"),
    ("GET", "/api/v1/issuers/{id}", "any-key"),
    ("PUT", "/api/v1/issuers/{id}", "admin"),
    ("DELETE", "/api/v1/issuers/{id}", "admin"),
];

/// `template` with `{id}` replaced by `id` and any other parameter by a harmless unknown value.
fn concrete(template: &str, id: &str) -> String {
    template.replace("{id}", id).replace("{job_id}", "x-unknown")
}

/// Whether a credential got past authentication and authorisation.
fn admitted(a: &Answer) -> bool {
    a.status != StatusCode::UNAUTHORIZED && a.status != StatusCode::FORBIDDEN
}

#[tokio::test]
async fn the_role_matrix_covers_every_route_and_each_credential_gets_exactly_its_role() {
    let app = spawn_api(&[]).await;
    let doc = call(&app, Method::GET, "/api/v1/openapi.json", None, None).await.json;
    // 1. The served document lists exactly the matrix's operations, each with its role.
    let mut documented = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let role = op["x-certctl-access"].as_str().unwrap_or("<none>").to_string();
            documented.insert((method.to_ascii_uppercase(), path.clone()), role);
        }
    }
    let expected: std::collections::BTreeMap<(String, String), String> =
        ROLE_MATRIX.iter().map(|(m, p, r)| ((m.to_string(), p.to_string()), r.to_string())).collect();
    let missing: Vec<_> = documented.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty(), "routes without a role in ROLE_MATRIX (decide one): {missing:?}");
    assert_eq!(documented, expected, "the served roles differ from the matrix");
    for (method, path, role) in ROLE_MATRIX {
        let op = &doc["paths"][*path][method.to_ascii_lowercase()];
        let description = op["description"].as_str().unwrap_or("");
        assert!(description.contains("Access:"), "{method} {path} states its access: {description}");
        if matches!(*role, "admin" | "agent") {
            assert!(op["responses"]["403"].is_object(), "{method} {path} documents its 403");
        }
    }

    // 2. Every route, called with each kind of credential, answers as its role says.
    let (agent, agent_cred) = register_agent(&app, "matrix-agent").await;
    let (_, other_cred) = register_agent(&app, "matrix-other").await;
    let body = json!({});
    for (method, template, role) in ROLE_MATRIX {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let id = if *role == "agent" { agent.as_str() } else { "x-unknown" };
        let path = concrete(template, id);
        let send = |key: Option<String>| {
            let (method, path) = (method.clone(), path.clone());
            let app = &app;
            let body = &body;
            async move { call(app, method, &path, key.as_deref(), Some(body)).await }
        };
        let none = send(None).await;
        let admin = send(Some(ADMIN_KEY.into())).await;
        let user = send(Some(USER_KEY.into())).await;
        let own = send(Some(agent_cred.clone())).await;
        let other = send(Some(other_cred.clone())).await;
        let ctx = format!("{method} {template} ({role})");
        for a in [&none, &admin, &user, &own, &other] {
            assert!(a.status.as_u16() < 500, "{ctx}: {} {}", a.status, a.json);
        }
        match *role {
            "public" => {
                assert!(admitted(&none), "{ctx}: public without a key: {}", none.status);
            }
            "any-key" => {
                assert_envelope(&none, 401);
                assert!(admitted(&admin), "{ctx}: admin key: {} {}", admin.status, admin.json);
                assert!(admitted(&user), "{ctx}: non-admin key: {} {}", user.status, user.json);
                assert_envelope(&own, 401);
            }
            "admin" => {
                assert_envelope(&none, 401);
                assert!(admitted(&admin), "{ctx}: admin key: {} {}", admin.status, admin.json);
                assert_envelope(&user, 403);
                assert_envelope(&own, 401);
            }
            "agent" => {
                assert_envelope(&none, 401);
                assert!(admitted(&admin), "{ctx}: admin key: {} {}", admin.status, admin.json);
                assert_envelope(&user, 403);
                assert!(admitted(&own), "{ctx}: own agent credential: {} {}", own.status, own.json);
                assert_envelope(&other, 401);
            }
            other => panic!("unknown role {other}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_non_admin_key_cannot_change_how_the_ca_issues() {
    let app = spawn_api(&[]).await;
    let before = get(&app, "/api/v1/profiles/prof-standard-tls").await.json;
    // The probe's request: loosen the standard profile.
    let loosen = json!({"acme_auth_mode": "trust_authenticated", "max_sans": 100000});
    let a = call(&app, Method::PUT, "/api/v1/profiles/prof-standard-tls", Some(USER_KEY), Some(&loosen)).await;
    assert_envelope(&a, 403);
    assert_eq!(get(&app, "/api/v1/profiles/prof-standard-tls").await.json, before, "the profile is unchanged");
    // A profile whose leaves could sign code, OCSP answers or timestamps.
    let signing = json!({"name": "signing", "issuer_id": "iss-local",
        "extended_key_usages": ["serverAuth", "codeSigning", "OCSPSigning", "timeStamping"]});
    let a = call(&app, Method::POST, "/api/v1/profiles", Some(USER_KEY), Some(&signing)).await;
    assert_envelope(&a, 403);
    let a = call(&app, Method::POST, "/api/v1/renewal-policies", Some(USER_KEY), Some(&json!({"name": "x"}))).await;
    assert_envelope(&a, 403);
    let a = call(&app, Method::PUT, "/api/v1/issuers/iss-local", Some(USER_KEY), Some(&json!({"validity_days": 3650})))
        .await;
    assert_envelope(&a, 403);
    let profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM certificate_profiles WHERE name = 'signing'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(profiles, 0);
    // The same requests with the admin key are accepted; the non-admin key still reads them.
    let a = call(&app, Method::POST, "/api/v1/profiles", Some(ADMIN_KEY), Some(&signing)).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().expect("id").to_string();
    let a = call(&app, Method::GET, &format!("/api/v1/profiles/{id}"), Some(USER_KEY), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["extended_key_usages"][1], "codeSigning");
    app.stop().await;
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches the server).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(std::net::IpAddr::from(ip)).build().expect("client")
}

async fn status_of(
    client: &reqwest::Client,
    app: &crate::support::TestApp,
    path: &str,
    key: &str,
) -> reqwest::Response {
    client.post(app.url(path)).bearer_auth(key).send().await.expect("request")
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_before_the_agent_lookup_and_valid_keys_never_wait() {
    let app =
        spawn_app(&["--scheduler-enabled", "false", "--auth-failure-limit", "5", "--auth-failure-window", "1m"]).await;
    let (agent, cred) = register_agent(&app, "guessed").await;
    let hb = format!("/api/v1/agents/{agent}/heartbeat");
    let attacker = client_from([127, 0, 0, 1]);
    // Four wrong API keys and valid calls in between: only failures count.
    for i in 0..4 {
        let r = attacker.get(app.url("/api/v1/teams")).bearer_auth(format!("wrong-key-{i}")).send().await.expect("r");
        assert_eq!(r.status(), 401);
        let ok = attacker.get(app.url("/api/v1/teams")).bearer_auth(ADMIN_KEY).send().await.expect("r");
        assert_eq!(ok.status(), 200);
    }
    // The fifth failure, a wrong agent credential, is still a plain 401 (it is within the limit).
    assert_eq!(status_of(&attacker, &app, &hb, "wrong-agent-credential-5").await.status(), 401);
    // The sixth is refused with Retry-After and the envelope.
    let r = status_of(&attacker, &app, &hb, "wrong-agent-credential-6").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After within the window: {retry}");
    let body: Value = r.json().await.expect("envelope");
    assert!(body["error"].is_string() && body["request_id"].is_string(), "{body}");
    // Over the limit, wrong agent credentials cost no database work: with the agents table out
    // of reach, a lookup would fail with a 5xx; the limiter answers first.
    sqlx::query("ALTER TABLE agents RENAME TO agents_hidden").execute(&app.pool).await.expect("hide");
    for i in 0..20 {
        let r = status_of(&attacker, &app, &hb, &format!("flood-{i}")).await;
        assert_eq!(r.status(), 429, "flood {i}");
    }
    sqlx::query("ALTER TABLE agents_hidden RENAME TO agents").execute(&app.pool).await.expect("restore");
    // A valid API key from the same address is neither counted nor delayed.
    let ok = attacker.get(app.url("/api/v1/teams")).bearer_auth(USER_KEY).send().await.expect("r");
    assert_eq!(ok.status(), 200);
    assert_eq!(status_of(&attacker, &app, &hb, ADMIN_KEY).await.status(), 200, "admin key on the agent route");
    // Another address has its own budget: the agent itself, from 127.0.0.2, heartbeats.
    let agent_host = client_from([127, 0, 0, 2]);
    assert_eq!(status_of(&agent_host, &app, &hb, &cred).await.status(), 200);
    assert_eq!(status_of(&agent_host, &app, &hb, "one-wrong").await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn the_failed_authentication_limit_can_be_disabled() {
    let app = spawn_app(&["--scheduler-enabled", "false", "--auth-failure-limit", "0"]).await;
    for i in 0..30 {
        let r = app.client.get(app.url("/api/v1/teams")).bearer_auth(format!("nope-{i}")).send().await.expect("r");
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    app.stop().await;
}

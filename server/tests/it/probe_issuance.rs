//! Issuance safety found by the security probe (issue 14, items 1 and 2): absurd validity
//! values, date arithmetic that must never panic, and the name rules on every path that leads
//! to a signature.

use certctl_server::issuance::{self, LeafRequest, LocalCa};
use certctl_server::scheduler::{LoopKind, run_tick};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{assert_envelope, call, cert_body, count, get, post, put, register_agent, spawn_api};
use crate::issuance::csr_for;

/// The names the probe got signed, plus a few more of the same kinds.
const BAD_NAMES: &[&str] =
    &["*.*.com", "*", "exa mple.com", "a..b", "10.0.0.1/8", "*.com", "f*o.example.com", "-a.example.com", "bücher.de"];

#[tokio::test]
async fn validity_days_beyond_the_ca_lifetime_are_a_422_at_write_time() {
    let app = spawn_api(&[]).await;
    for days in [2_147_483_647, 3651, 0, -5] {
        let a = put(&app, "/api/v1/issuers/iss-local", &json!({"validity_days": days})).await;
        assert_envelope(&a, 422);
        assert!(a.json["message"].as_str().unwrap_or_default().contains("validity_days"), "{}", a.json);
        let a = put(&app, "/api/v1/profiles/prof-standard-tls", &json!({"validity_days": days})).await;
        assert_envelope(&a, 422);
        let a =
            post(&app, "/api/v1/issuers", &json!({"name": "huge", "type": "GenericCA", "validity_days": days})).await;
        assert_envelope(&a, 422);
        let a = post(&app, "/api/v1/profiles", &json!({"name": "huge", "validity_days": days})).await;
        assert_envelope(&a, 422);
    }
    let days: i32 = sqlx::query_scalar("SELECT validity_days FROM issuers WHERE id = 'iss-local'")
        .fetch_one(&app.pool)
        .await
        .expect("issuer");
    assert_ne!(days, 2_147_483_647, "nothing was stored");
    assert_eq!(put(&app, "/api/v1/issuers/iss-local", &json!({"validity_days": 3650})).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_absurd_validity_already_in_the_database_is_capped_at_the_ca_not_a_panic() {
    let app = spawn_api(&["--keygen-mode", "agent"]).await;
    let state = app.server.as_ref().expect("server").state.clone();
    // A row written before the write-time bound (or by hand): the CHECK only says > 0.
    sqlx::query("UPDATE issuers SET validity_days = 2147483647 WHERE id = 'iss-local'")
        .execute(&app.pool)
        .await
        .expect("issuer");
    sqlx::query("UPDATE certificate_profiles SET validity_days = 2147483647")
        .execute(&app.pool)
        .await
        .expect("profiles");
    let (agent_id, credential) = register_agent(&app, "edge-huge").await;
    sqlx::query("UPDATE managed_certificates SET agent_id = $1 WHERE id = 'mc-demo-api'")
        .bind(&agent_id)
        .execute(&app.pool)
        .await
        .expect("assign");
    assert_eq!(post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await.status, 202);
    run_tick(&state, LoopKind::JobProcessor, Utc::now()).await.expect("tick");
    let csr = csr_for(&["api.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let a = call(
        &app,
        Method::POST,
        &format!("/api/v1/agents/{agent_id}/csr"),
        Some(&credential),
        Some(&json!({"csr_pem": csr, "certificate_id": "mc-demo-api"})),
    )
    .await;
    assert_eq!(a.status, 202, "the CSR gets an answer: {}", a.json);
    let versions = get(&app, "/api/v1/certificates/mc-demo-api/versions").await;
    let not_after: DateTime<Utc> =
        versions.json["data"][0]["not_after"].as_str().and_then(|s| s.parse().ok()).expect("not_after");
    let ca = state.cas.get("iss-local").await.expect("CA loaded");
    assert_eq!(not_after, ca.not_after, "the leaf ends with its CA");
    app.stop().await;
}

/// One CA and one leaf key for the property tests (generating them per case would be slow).
fn fixture() -> &'static (LocalCa, rcgen::KeyPair) {
    static FIXTURE: std::sync::OnceLock<(LocalCa, rcgen::KeyPair)> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca = LocalCa::generate("iss-prop", "prop CA", Utc::now()).expect("CA");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        (ca, key)
    })
}

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
        .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any validity (any i64, as rows and settings could hold) at any representable time:
    /// signing answers Ok within the CA's lifetime or an error, never a panic.
    #[test]
    fn signing_never_panics_over_validity_and_time(days in any::<i64>(), now in any_time()) {
        let (ca, key) = fixture();
        let req = LeafRequest {
            common_name: "prop.example.com".into(),
            dns_names: vec!["prop.example.com".into()],
            ip_addresses: vec![],
            extended_key_usages: vec!["serverAuth".into()],
            validity_days: days,
            max_sans: Some(100),
        };
        if let Ok(signed) = ca.issue(&req, key, now) {
            prop_assert!(signed.not_before < signed.not_after);
            prop_assert!(signed.not_after <= ca.not_after);
        }
        if let Ok((from, to)) = ca.leaf_validity(days, now) {
            prop_assert!(from < to && to <= ca.not_after);
        }
    }

    /// Any CRL interval at any time: a window or an error, never a panic.
    #[test]
    fn crl_windows_never_panic(secs in any::<u64>(), nanos in 0u32..1_000_000_000, now in any_time()) {
        let interval = std::time::Duration::new(secs, nanos);
        if let Ok((this_update, next_update)) = issuance::crl_window(now, interval) {
            prop_assert!(next_update > this_update);
        }
    }
}

#[tokio::test]
async fn invalid_names_are_a_422_naming_the_value_on_create_and_update() {
    let app = spawn_api(&[]).await;
    let before = count(&app.pool, "managed_certificates").await;
    for (i, bad) in BAD_NAMES.iter().enumerate() {
        let mut body = cert_body(&format!("bad-san-{i}"));
        body["sans"] = json!(["ok.example.com", bad]);
        let a = post(&app, "/api/v1/certificates", &body).await;
        assert_envelope(&a, 422);
        assert!(a.json["message"].as_str().unwrap_or_default().contains(bad), "names {bad:?}: {}", a.json);
        let mut body = cert_body(&format!("bad-cn-{i}"));
        body["common_name"] = json!(bad);
        assert_envelope(&post(&app, "/api/v1/certificates", &body).await, 422);
        let a = put(&app, "/api/v1/certificates/mc-demo-api", &json!({"sans": [bad]})).await;
        assert_envelope(&a, 422);
        assert!(a.json["message"].as_str().unwrap_or_default().contains(bad), "names {bad:?}: {}", a.json);
    }
    assert_eq!(count(&app.pool, "managed_certificates").await, before, "nothing was created");
    // IP addresses are fine as IP SANs; wildcards as the whole leftmost label.
    let mut body = cert_body("good-names");
    body["sans"] = json!(["*.good.example.com", "10.0.0.1", "::1", "xn--bcher-kva.example"]);
    assert_eq!(post(&app, "/api/v1/certificates", &body).await.status, 201);
    let sans: Vec<String> = sqlx::query_scalar("SELECT sans FROM managed_certificates WHERE id = 'mc-demo-api'")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert!(sans.iter().all(|s| !BAD_NAMES.contains(&s.as_str())), "update stored nothing: {sans:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_profiles_max_sans_holds_on_create_update_and_profile_change() {
    let app = spawn_api(&[]).await;
    let many: Vec<String> = (0..1000).map(|i| format!("h{i}.example.com")).collect();
    let mut body = cert_body("thousand");
    body["sans"] = json!(many);
    body["certificate_profile_id"] = json!("prof-standard-tls");
    let a = post(&app, "/api/v1/certificates", &body).await;
    assert_envelope(&a, 422);
    assert!(a.json["message"].as_str().unwrap_or_default().contains("at most 100"), "{}", a.json);
    // The same names without a profile are allowed; moving that certificate under the profile is not.
    if let Some(o) = body.as_object_mut() {
        o.remove("certificate_profile_id");
    }
    let a = post(&app, "/api/v1/certificates", &body).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["id"].as_str().expect("id").to_string();
    let a =
        put(&app, &format!("/api/v1/certificates/{id}"), &json!({"certificate_profile_id": "prof-standard-tls"})).await;
    assert_envelope(&a, 422);
    let a = put(
        &app,
        "/api/v1/certificates/mc-demo-api",
        &json!({"sans": many, "certificate_profile_id": "prof-standard-tls"}),
    )
    .await;
    assert_envelope(&a, 422);
    app.stop().await;
}

/// Puts invalid names straight into a certificate row (as an old release could have stored).
async fn store_bad_names(pool: &sqlx::PgPool, id: &str) {
    sqlx::query("UPDATE managed_certificates SET sans = $2 WHERE id = $1")
        .bind(id)
        .bind(BAD_NAMES)
        .execute(pool)
        .await
        .expect("bad names");
}

#[tokio::test]
async fn stored_invalid_names_are_never_signed_by_an_agent_csr() {
    let app = spawn_api(&["--keygen-mode", "agent"]).await;
    let state = app.server.as_ref().expect("server").state.clone();
    let (agent_id, credential) = register_agent(&app, "edge-names").await;
    sqlx::query("UPDATE managed_certificates SET agent_id = $1 WHERE id = 'mc-demo-api'")
        .bind(&agent_id)
        .execute(&app.pool)
        .await
        .expect("assign");
    store_bad_names(&app.pool, "mc-demo-api").await;
    assert_eq!(post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await.status, 202);
    run_tick(&state, LoopKind::JobProcessor, Utc::now()).await.expect("tick");
    // The probe's CSR named nothing: the names would have come from the row.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").pem().expect("pem");
    let a = call(
        &app,
        Method::POST,
        &format!("/api/v1/agents/{agent_id}/csr"),
        Some(&credential),
        Some(&json!({"csr_pem": csr, "certificate_id": "mc-demo-api"})),
    )
    .await;
    assert_envelope(&a, 422);
    assert!(a.json["message"].as_str().unwrap_or_default().contains("*.*.com"), "{}", a.json);
    assert_eq!(count(&app.pool, "certificate_versions").await, 0, "nothing was signed");
    app.stop().await;
}

#[tokio::test]
async fn stored_invalid_names_are_never_signed_by_server_keygen() {
    let app = spawn_api(&["--keygen-mode", "server"]).await;
    let state = app.server.as_ref().expect("server").state.clone();
    store_bad_names(&app.pool, "mc-demo-api").await;
    let renew = post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await;
    let job_id = renew.json["job_id"].as_str().expect("job").to_string();
    run_tick(&state, LoopKind::JobProcessor, Utc::now()).await.expect("tick");
    let job: Value = get(&app, &format!("/api/v1/jobs/{job_id}")).await.json;
    assert_eq!(job["status"], "Failed", "{job}");
    assert!(job["last_error"].as_str().unwrap_or_default().contains("*.*.com"), "{job}");
    assert_eq!(count(&app.pool, "certificate_versions").await, 0, "nothing was signed");
    app.stop().await;
}

#[tokio::test]
async fn sign_csr_refuses_invalid_names_and_more_than_max_sans() {
    let app = spawn_api(&[]).await;
    let state = app.server.as_ref().expect("server").state.clone();
    for bad in ["a..b.example.com", "*.*.example.com", "10.0.0.1"] {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::default();
        // rcgen refuses most of these names itself; a raw IA5String SAN carries them as given.
        params.subject_alt_names = vec![rcgen::SanType::DnsName(bad.try_into().expect("ia5"))];
        let csr = params.serialize_request(&key).expect("csr").pem().expect("pem");
        let e = issuance::sign_csr(&state, "iss-local", Some("prof-test"), &csr).await.expect_err(bad);
        assert!(e.to_string().contains(bad), "{bad}: {e}");
    }
    let names: Vec<String> = (0..101).map(|i| format!("n{i}.example.com")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let csr = csr_for(&refs, &rcgen::PKCS_ECDSA_P256_SHA256);
    let e = issuance::sign_csr(&state, "iss-local", Some("prof-standard-tls"), &csr).await.expect_err("101 names");
    assert!(e.to_string().contains("at most 100"), "{e}");
    app.stop().await;
}

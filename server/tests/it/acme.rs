//! ACME server (RFC 8555, ARI RFC 9773) against the real router and PostgreSQL: a small JWS
//! client written here for the protocol and hostile-input checks, and `instant-acme` (a real
//! client nobody here wrote) for the full account → order → http-01 → finalize → download →
//! revoke flow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestApp, spawn_app};

/// A minimal ACME client key: ES256, signs flattened JWS.
pub struct Jose {
    kp: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    /// The public key as a JWK.
    pub jwk: Value,
    /// The account URL once registered.
    pub kid: Option<String>,
}

impl Jose {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen").as_ref().to_vec();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).expect("kp");
        let p = kp.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])});
        Jose { kp, pkcs8, jwk, kid: None }
    }

    /// RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> String {
        let c = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk["x"].as_str().expect("x"),
            self.jwk["y"].as_str().expect("y")
        );
        B64.encode(Sha256::digest(c.as_bytes()))
    }

    /// Signs `payload` (None: POST-as-GET) with an explicit protected header.
    pub fn sign_header(&self, header: &Value, payload: Option<&Value>) -> Value {
        let p = B64.encode(header.to_string());
        let pl = payload.map(|v| B64.encode(v.to_string())).unwrap_or_default();
        let sig = self.kp.sign(&SystemRandom::new(), format!("{p}.{pl}").as_bytes()).expect("sign");
        json!({"protected": p, "payload": pl, "signature": B64.encode(sig.as_ref())})
    }

    /// The usual header: kid when registered, else jwk.
    pub fn header(&self, url: &str, nonce: &str) -> Value {
        match &self.kid {
            Some(kid) => json!({"alg": "ES256", "kid": kid, "nonce": nonce, "url": url}),
            None => json!({"alg": "ES256", "jwk": self.jwk, "nonce": nonce, "url": url}),
        }
    }

    /// A CSR-capable rcgen key pair from the same key (to test "CSR key = account key").
    pub fn rcgen_key(&self) -> rcgen::KeyPair {
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.clone());
        rcgen::KeyPair::try_from(&der).expect("rcgen key")
    }
}

/// `{base}/acme` (default profile) or `{base}/acme/profile/{id}`.
pub fn prefix(app: &TestApp, profile: Option<&str>) -> String {
    match profile {
        Some(p) => app.url(&format!("/acme/profile/{p}")),
        None => app.url("/acme"),
    }
}

async fn nonce(app: &TestApp, prefix: &str) -> String {
    let r = app.client.head(format!("{prefix}/new-nonce")).send().await.expect("nonce");
    assert_eq!(r.status(), 200);
    r.headers()["replay-nonce"].to_str().expect("ascii").to_string()
}

async fn post_raw(app: &TestApp, url: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(url)
        .header("content-type", "application/jose+json")
        .body(body.to_string())
        .send()
        .await
        .expect("post")
}

/// Signs and posts `payload` to `url` with a fresh nonce.
async fn post(app: &TestApp, pfx: &str, jose: &Jose, url: &str, payload: Option<&Value>) -> reqwest::Response {
    let n = nonce(app, pfx).await;
    post_raw(app, url, &jose.sign_header(&jose.header(url, &n), payload)).await
}

/// Asserts a problem document of `typ` with `status`, carrying the index link, a fresh nonce
/// and `Cache-Control: no-store` (every ACME error, GET or POST: RFC 8555 §6.5, §6.7).
pub async fn assert_problem(r: reqwest::Response, status: u16, typ: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("replay-nonce"), "every ACME error carries a fresh nonce");
    assert_eq!(r.headers().get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]), "errors are not cached");
    assert!(r.headers()["link"].to_str().expect("link").contains("rel=\"index\""));
    let v: Value = r.json().await.expect("problem json");
    assert_eq!(v["type"], format!("urn:ietf:params:acme:error:{typ}"), "{v}");
    v
}

async fn register(app: &TestApp, pfx: &str, jose: &mut Jose) {
    let r = post(app, pfx, jose, &format!("{pfx}/new-account"), Some(&json!({"termsOfServiceAgreed": true}))).await;
    assert_eq!(r.status(), 201);
    jose.kid = Some(r.headers()["location"].to_str().expect("loc").to_string());
}

fn csr_der(names: &[&str], key: &rcgen::KeyPair) -> Vec<u8> {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    params.serialize_request(key).expect("csr").der().to_vec()
}

/// A challenge responder: serves `/.well-known/acme-challenge/{token}` on 127.0.0.1:port.
struct Responder {
    port: u16,
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

async fn responder() -> Responder {
    use axum::extract::{Path, State};
    let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(
                |State(t): State<Arc<Mutex<HashMap<String, String>>>>, Path(token): Path<String>| async move {
                    match t.lock().expect("lock").get(&token) {
                        Some(v) => (axum::http::StatusCode::OK, v.clone()),
                        None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                    }
                },
            ),
        )
        .with_state(tokens.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Responder { port, tokens }
}

#[tokio::test]
async fn the_directory_lists_absolute_urls_and_unknown_profiles_are_404_problems() {
    let app = spawn_app(&[]).await;
    for (path, pfx) in [
        ("/acme/directory", app.url("/acme")),
        ("/acme/profile/prof-standard-tls/directory", app.url("/acme/profile/prof-standard-tls")),
    ] {
        let r = app.client.get(app.url(path)).send().await.expect("dir");
        assert_eq!(r.status(), 200);
        let d: Value = r.json().await.expect("json");
        for (k, ep) in [
            ("newNonce", "new-nonce"),
            ("newAccount", "new-account"),
            ("newOrder", "new-order"),
            ("revokeCert", "revoke-cert"),
            ("keyChange", "key-change"),
            ("renewalInfo", "renewal-info"),
        ] {
            assert_eq!(d[k], format!("{pfx}/{ep}"), "{k}");
        }
    }
    let r = app.client.get(app.url("/acme/profile/nope/directory")).send().await.expect("dir");
    assert_problem(r, 404, "malformed").await;
    // GET on a POST-as-GET resource: 405 as a problem document.
    let r = app.client.get(app.url("/acme/order/ord-x")).send().await.expect("get");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // No API key needed anywhere under /acme, and the external URL wins over Host.
    app.stop().await;
    let app = spawn_app(&["--external-url", "https://acme.example.org/"]).await;
    let d: Value = app.client.get(app.url("/acme/directory")).send().await.expect("dir").json().await.expect("json");
    assert_eq!(d["newOrder"], "https://acme.example.org/acme/new-order");
    app.stop().await;
}

#[tokio::test]
async fn new_nonce_answers_head_200_and_get_204_with_a_fresh_uncacheable_nonce() {
    let app = spawn_app(&[]).await;
    let h = app.client.head(app.url("/acme/new-nonce")).send().await.expect("head");
    assert_eq!(h.status(), 200);
    assert_eq!(h.headers()["cache-control"], "no-store");
    assert!(h.headers()["link"].to_str().expect("link").contains("/acme/directory>;rel=\"index\""));
    let g = app.client.get(app.url("/acme/new-nonce")).send().await.expect("get");
    assert_eq!(g.status(), 204);
    assert_ne!(h.headers()["replay-nonce"], g.headers()["replay-nonce"]);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM acme_nonces").fetch_one(&app.pool).await.expect("count");
    assert_eq!(n, 2);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_new_nonces_are_stored_in_groups_each_distinct_and_redeemable_exactly_once() {
    let app = spawn_app(&[]).await;
    let asks = (0..200).map(|_| app.client.get(app.url("/acme/new-nonce")).send());
    let mut nonces = Vec::new();
    for r in futures::future::join_all(asks).await {
        let r = r.expect("new-nonce");
        assert_eq!(r.status(), 204);
        nonces.push(r.headers()["replay-nonce"].to_str().expect("ascii").to_string());
    }
    let distinct: std::collections::HashSet<&String> = nonces.iter().collect();
    assert_eq!(distinct.len(), 200);
    // Every nonce was stored before it was handed out.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM acme_nonces WHERE nonce = ANY($1)")
        .bind(&nonces)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 200);
    for n in &nonces[..20] {
        assert!(certctl_server::acme::nonce::consume(&app.pool, n).await.expect("consume"), "first use");
        assert!(!certctl_server::acme::nonce::consume(&app.pool, n).await.expect("consume"), "second use");
    }
    app.stop().await;
}

#[tokio::test]
async fn accounts_are_created_found_by_key_updated_and_deactivated() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, None);
    let mut jose = Jose::new();
    // onlyReturnExisting never creates.
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-account"), Some(&json!({"onlyReturnExisting": true}))).await;
    assert_problem(r, 400, "accountDoesNotExist").await;
    let r = post(
        &app,
        &pfx,
        &jose,
        &format!("{pfx}/new-account"),
        Some(&json!({"termsOfServiceAgreed": true, "contact": ["mailto:ops@example.com"]})),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("replay-nonce"));
    let loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert!(loc.starts_with(&format!("{pfx}/account/acct-")));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "valid");
    assert_eq!(body["contact"][0], "mailto:ops@example.com");
    // The same key again: 200 and the same Location.
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-account"), Some(&json!({"onlyReturnExisting": true}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["location"], loc.as_str());
    let (thumb,): (String,) =
        sqlx::query_as("SELECT jwk_thumbprint FROM acme_accounts").fetch_one(&app.pool).await.expect("row");
    assert_eq!(thumb, jose.thumbprint());

    jose.kid = Some(loc.clone());
    let r = post(&app, &pfx, &jose, &loc, Some(&json!({"contact": ["mailto:new@example.com"]}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["contact"][0], "mailto:new@example.com");
    let r = post(&app, &pfx, &jose, &loc, Some(&json!({"contact": ["tel:+123"]}))).await;
    assert_problem(r, 400, "unsupportedContact").await;
    // A new-account request must carry jwk, not kid.
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-account"), Some(&json!({}))).await;
    assert_problem(r, 400, "malformed").await;

    let r = post(&app, &pfx, &jose, &loc, Some(&json!({"status": "deactivated"}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "deactivated");
    // RFC 8555 §7.3.6: every later request of a deactivated account is a 401 `unauthorized`,
    // whether signed with its kid or (new-account) with its key.
    let r = post(&app, &pfx, &jose, &loc, None).await;
    assert_problem(r, 401, "unauthorized").await;
    let r = post(
        &app,
        &pfx,
        &jose,
        &format!("{pfx}/new-order"),
        Some(&json!({"identifiers": [{"type": "dns", "value": "a.example.com"}]})),
    )
    .await;
    assert_problem(r, 401, "unauthorized").await;
    jose.kid = None;
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-account"), Some(&json!({"onlyReturnExisting": true}))).await;
    assert_problem(r, 401, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn hostile_requests_get_the_right_problem_never_a_500() {
    let app = spawn_app(&["--max-body-size", "4MiB"]).await;
    let pfx = prefix(&app, None);
    let url = format!("{pfx}/new-account");
    let mut jose = Jose::new();

    // Garbage, truncated and wrong-shape bodies.
    for body in ["", "{", "[]", "null", r#"{"protected":"x"}"#, r#"{"protected":"!!","payload":"","signature":""}"#] {
        let r =
            app.client.post(&url).header("content-type", "application/jose+json").body(body).send().await.expect("req");
        assert_problem(r, 400, "malformed").await;
    }
    let n = nonce(&app, &pfx).await;
    let good = jose.sign_header(&jose.header(&url, &n), Some(&json!({})));
    let s = good.to_string();
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/jose+json")
        .body(s[..s.len() / 2].to_string())
        .send()
        .await
        .expect("req");
    assert_problem(r, 400, "malformed").await;
    // Wrong content type.
    let r = app.client.post(&url).header("content-type", "application/json").body(s.clone()).send().await.expect("req");
    assert_problem(r, 415, "malformed").await;
    // Oversized body.
    let big = json!({"protected": "a".repeat(200_000), "payload": "", "signature": ""});
    let r = post_raw(&app, &url, &big).await;
    assert_problem(r, 413, "malformed").await;
    // Unsupported algorithms.
    for alg in ["HS256", "none", "RS512"] {
        let n = nonce(&app, &pfx).await;
        let r = post_raw(
            &app,
            &url,
            &jose.sign_header(&json!({"alg": alg, "jwk": jose.jwk, "nonce": n, "url": url}), None),
        )
        .await;
        let p = assert_problem(r, 400, "badSignatureAlgorithm").await;
        assert!(p["algorithms"].as_array().is_some_and(|a| !a.is_empty()));
    }
    // Wrong url.
    let n = nonce(&app, &pfx).await;
    let r =
        post_raw(&app, &url, &jose.sign_header(&jose.header(&format!("{pfx}/new-order"), &n), Some(&json!({})))).await;
    assert_problem(r, 403, "unauthorized").await;
    // Unknown nonce, then a reused one.
    let r = post_raw(&app, &url, &jose.sign_header(&jose.header(&url, "bm90LWEtbm9uY2U"), Some(&json!({})))).await;
    assert_problem(r, 400, "badNonce").await;
    let n = nonce(&app, &pfx).await;
    let body = jose.sign_header(&jose.header(&url, &n), Some(&json!({"termsOfServiceAgreed": true})));
    let r = post_raw(&app, &url, &body).await;
    assert_eq!(r.status(), 201);
    jose.kid = Some(r.headers()["location"].to_str().expect("loc").to_string());
    let r = post_raw(&app, &url, &body).await;
    assert_problem(r, 400, "badNonce").await;
    // A bad signature.
    let n = nonce(&app, &pfx).await;
    let mut forged = jose.sign_header(&Jose::new().header(&url, &n), Some(&json!({})));
    forged["payload"] = json!(B64.encode(r#"{"x":1}"#));
    assert_problem(post_raw(&app, &url, &forged).await, 400, "malformed").await;
    // Unknown kid.
    let order_url = format!("{pfx}/new-order");
    let mut stranger = Jose::new();
    stranger.kid = Some(format!("{pfx}/account/acct-doesnotexist"));
    let r = post(
        &app,
        &pfx,
        &stranger,
        &order_url,
        Some(&json!({"identifiers": [{"type": "dns", "value": "a.example.com"}]})),
    )
    .await;
    assert_problem(r, 400, "accountDoesNotExist").await;
    // Bad identifiers.
    for ids in [
        json!([]),
        json!("x"),
        json!([{"type": "dns", "value": "not a name"}]),
        json!([{"type": "dns", "value": "localhost"}]),
    ] {
        let r = post(&app, &pfx, &jose, &order_url, Some(&json!({"identifiers": ids}))).await;
        assert!(r.status() == 400, "{ids}");
    }
    let r =
        post(&app, &pfx, &jose, &order_url, Some(&json!({"identifiers": [{"type": "ip", "value": "10.0.0.1"}]}))).await;
    assert_problem(r, 400, "unsupportedIdentifier").await;
    let bad_replaces = json!({"identifiers": [{"type": "dns", "value": "a.example.com"}], "replaces": "not-a-cert-id"});
    assert_problem(post(&app, &pfx, &jose, &order_url, Some(&bad_replaces)).await, 400, "malformed").await;
    let other_profile = json!({"identifiers": [{"type": "dns", "value": "a.example.com"}], "profile": "prof-other"});
    assert_problem(post(&app, &pfx, &jose, &order_url, Some(&other_profile)).await, 400, "malformed").await;
    // Someone else's order is invisible.
    let mut other = Jose::new();
    register(&app, &pfx, &mut other).await;
    let r =
        post(&app, &pfx, &jose, &order_url, Some(&json!({"identifiers": [{"type": "dns", "value": "a.example.com"}]})))
            .await;
    assert_eq!(r.status(), 201);
    let order_loc = r.headers()["location"].to_str().expect("loc").to_string();
    assert_problem(post(&app, &pfx, &other, &order_loc, None).await, 404, "malformed").await;
    // Invalid ARI ids.
    for id in ["nodot", "a.b.c", "!!!.AQ", "AQ.gA", "AQ.", ".AQ"] {
        let r = app.client.get(format!("{pfx}/renewal-info/{id}")).send().await.expect("ari");
        assert_problem(r, 400, "malformed").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn trusted_profile_orders_are_ready_and_finalize_checks_the_csr() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, Some("prof-test"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let ids = json!({"identifiers": [{"type": "dns", "value": "Web.Example.com"}, {"type": "dns", "value": "api.example.com"}]});
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-order"), Some(&ids)).await;
    assert_eq!(r.status(), 201);
    let order_url = r.headers()["location"].to_str().expect("loc").to_string();
    let order: Value = r.json().await.expect("json");
    assert_eq!(order["status"], "ready");
    assert_eq!(order["identifiers"][1]["value"], "web.example.com");
    let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
    let authz: Value = post(&app, &pfx, &jose, &authz_url, None).await.json().await.expect("authz");
    assert_eq!(authz["status"], "valid");
    let finalize = order["finalize"].as_str().expect("finalize").to_string();

    // CSR for names not in the order.
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = B64.encode(csr_der(&["web.example.com", "evil.example.com"], &key));
    assert_problem(post(&app, &pfx, &jose, &finalize, Some(&json!({"csr": csr}))).await, 400, "badCSR").await;
    // A subset is not enough either.
    let csr = B64.encode(csr_der(&["web.example.com"], &key));
    assert_problem(post(&app, &pfx, &jose, &finalize, Some(&json!({"csr": csr}))).await, 400, "badCSR").await;
    // Garbage CSR; the account key as certificate key.
    assert_problem(post(&app, &pfx, &jose, &finalize, Some(&json!({"csr": "AAAA"}))).await, 400, "badCSR").await;
    let csr = B64.encode(csr_der(&["web.example.com", "api.example.com"], &jose.rcgen_key()));
    assert_problem(post(&app, &pfx, &jose, &finalize, Some(&json!({"csr": csr}))).await, 400, "badCSR").await;
    // The order is still ready after refused CSRs.
    let o: Value = post(&app, &pfx, &jose, &order_url, None).await.json().await.expect("order");
    assert_eq!(o["status"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn http_01_is_really_validated_and_finalize_before_ready_is_refused() {
    let resp = responder().await;
    let port = resp.port.to_string();
    let app =
        spawn_app(&["--acme-http01-port", &port, "--acme-resolve", "good.acme.test=127.0.0.1,bad.acme.test=127.0.0.1"])
            .await;
    let pfx = prefix(&app, Some("prof-standard-tls"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    for (name, serve_right_answer, want) in [("good.acme.test", true, "valid"), ("bad.acme.test", false, "invalid")] {
        let r = post(
            &app,
            &pfx,
            &jose,
            &format!("{pfx}/new-order"),
            Some(&json!({"identifiers": [{"type": "dns", "value": name}]})),
        )
        .await;
        assert_eq!(r.status(), 201);
        let order_url = r.headers()["location"].to_str().expect("loc").to_string();
        let order: Value = r.json().await.expect("order");
        assert_eq!(order["status"], "pending");
        let finalize = order["finalize"].as_str().expect("fin").to_string();
        let csr = B64.encode(csr_der(&[name], &rcgen::KeyPair::generate().expect("key")));
        assert_problem(post(&app, &pfx, &jose, &finalize, Some(&json!({"csr": csr}))).await, 403, "orderNotReady")
            .await;

        let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
        let authz: Value = post(&app, &pfx, &jose, &authz_url, None).await.json().await.expect("authz");
        assert_eq!(authz["status"], "pending");
        let chal = authz["challenges"]
            .as_array()
            .expect("chals")
            .iter()
            .find(|c| c["type"] == "http-01")
            .expect("http-01")
            .clone();
        let token = chal["token"].as_str().expect("token").to_string();
        let answer = if serve_right_answer { format!("{token}.{}", jose.thumbprint()) } else { "wrong".to_string() };
        resp.tokens.lock().expect("lock").insert(token, answer);
        let r = post(&app, &pfx, &jose, chal["url"].as_str().expect("url"), Some(&json!({}))).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get_all("link").iter().any(|l| l.to_str().is_ok_and(|s| s.contains("rel=\"up\""))));
        let mut status = String::new();
        for _ in 0..100 {
            let a: Value = post(&app, &pfx, &jose, &authz_url, None).await.json().await.expect("authz");
            status = a["status"].as_str().unwrap_or("").to_string();
            if status != "pending" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status, want, "{name}");
        let o: Value = post(&app, &pfx, &jose, &order_url, None).await.json().await.expect("order");
        assert_eq!(o["status"], if want == "valid" { "ready" } else { "invalid" });
        if want == "invalid" {
            assert_eq!(o["error"]["type"], "urn:ietf:params:acme:error:incorrectResponse");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn new_order_refuses_what_the_shared_name_rules_refuse_naming_the_value() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, Some("prof-standard-tls"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let url = format!("{pfx}/new-order");
    for bad in ["*.*.com", "*", "*.com", "exa mple.com", "a..b.example", "10.0.0.1/8", "10.0.0.1", "f*o.example.com"] {
        let ids = json!({"identifiers": [{"type": "dns", "value": "ok.example.com"}, {"type": "dns", "value": bad}]});
        let v = assert_problem(post(&app, &pfx, &jose, &url, Some(&ids)).await, 400, "rejectedIdentifier").await;
        assert!(v["detail"].as_str().unwrap_or_default().contains(bad), "{bad}: {v}");
    }
    // prof-standard-tls allows 100 names per certificate.
    let many: Vec<Value> = (0..101).map(|i| json!({"type": "dns", "value": format!("n{i}.example.com")})).collect();
    let v = assert_problem(
        post(&app, &pfx, &jose, &url, Some(&json!({"identifiers": many}))).await,
        400,
        "rejectedIdentifier",
    )
    .await;
    assert!(v["detail"].as_str().unwrap_or_default().contains("at most 100"), "{v}");
    let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM acme_orders").fetch_one(&app.pool).await.expect("n");
    assert_eq!(orders, 0);
    app.stop().await;
}

#[tokio::test]
async fn pending_orders_per_account_are_capped_with_a_429() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, Some("prof-standard-tls"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let url = format!("{pfx}/new-order");
    for i in 0..5 {
        let ids = json!({"identifiers": [{"type": "dns", "value": format!("n{i}.example.com")}]});
        assert_eq!(post(&app, &pfx, &jose, &url, Some(&ids)).await.status(), 201);
    }
    let ids = json!({"identifiers": [{"type": "dns", "value": "n6.example.com"}]});
    let r = post(&app, &pfx, &jose, &url, Some(&ids)).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(r, 429, "rateLimited").await;
    app.stop().await;
}

#[tokio::test]
async fn key_change_rolls_the_account_key_over() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, None);
    let mut old = Jose::new();
    register(&app, &pfx, &mut old).await;
    let kid = old.kid.clone().expect("kid");
    let url = format!("{pfx}/key-change");
    let new = Jose::new();
    let inner = new.sign_header(
        &json!({"alg": "ES256", "jwk": new.jwk, "url": url}),
        Some(&json!({"account": kid, "oldKey": old.jwk})),
    );
    let r = post(&app, &pfx, &old, &url, Some(&inner)).await;
    assert_eq!(r.status(), 200);
    // The old key no longer works, the new one does.
    let r = post(&app, &pfx, &old, &kid, None).await;
    assert_problem(r, 400, "malformed").await;
    let mut new = new;
    new.kid = Some(kid.clone());
    assert_eq!(post(&app, &pfx, &new, &kid, None).await.status(), 200);
    // An inner JWS signed by a key other than its jwk is refused.
    let third = Jose::new();
    let bad = third.sign_header(
        &json!({"alg": "ES256", "jwk": Jose::new().jwk, "url": url}),
        Some(&json!({"account": kid, "oldKey": new.jwk})),
    );
    assert_problem(post(&app, &pfx, &new, &url, Some(&bad)).await, 400, "malformed").await;
    app.stop().await;
}

/// A CA and a leaf signed by it, stored as if issued: `(version serial DER bytes, AKI, leaf DER, leaf key)`.
async fn insert_issued(app: &TestApp, revoked: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>, rcgen::KeyPair) {
    use x509_parser::prelude::*;
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut lp = rcgen::CertificateParams::new(vec!["ari.example.com".to_string()]).expect("leaf params");
    lp.use_authority_key_identifier_extension = true;
    lp.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x9a, 0x11, 0x22]));
    let leaf = lp.signed_by(&leaf_key, &ca).expect("leaf");
    let (_, x) = X509Certificate::from_der(leaf.der()).expect("parse");
    let serial = x.tbs_certificate.raw_serial().to_vec();
    let aki = x
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
        .expect("aki");
    let not_before = chrono::DateTime::from_timestamp(x.validity().not_before.timestamp(), 0).expect("nb");
    let not_after = chrono::DateTime::from_timestamp(x.validity().not_after.timestamp(), 0).expect("na");
    sqlx::query(
        "INSERT INTO managed_certificates (id, name, common_name, owner_id, team_id, issuer_id, renewal_policy_id, status, source)
         VALUES ('mc-ari', 'ari', 'ari.example.com', 'o-alice', 't-platform', 'iss-local', 'rp-standard', $1, 'ACME')",
    )
    .bind(if revoked { "Revoked" } else { "Active" })
    .execute(&app.pool)
    .await
    .expect("cert");
    sqlx::query(
        "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after, fingerprint_sha256, pem_chain)
         VALUES ('cv-ari', 'mc-ari', 'iss-local', $1, $2, $3, $4, $5)",
    )
    .bind(hex::encode(&serial))
    .bind(not_before)
    .bind(not_after)
    .bind(hex::encode(Sha256::digest(leaf.der())))
    .bind(format!("{}{}", leaf.pem(), ca.pem()))
    .execute(&app.pool)
    .await
    .expect("version");
    (serial, aki, leaf.der().to_vec(), leaf_key)
}

#[tokio::test]
async fn renewal_info_suggests_the_policy_window_and_404s_unknown_ids() {
    let app = spawn_app(&[]).await;
    let (serial, aki, _, _) = insert_issued(&app, false).await;
    let pfx = prefix(&app, None);
    let id = format!("{}.{}", B64.encode(&aki), B64.encode(&serial));
    let r = app.client.get(format!("{pfx}/renewal-info/{id}")).send().await.expect("ari");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["retry-after"], "21600");
    let v: Value = r.json().await.expect("json");
    let start =
        chrono::DateTime::parse_from_rfc3339(v["suggestedWindow"]["start"].as_str().expect("start")).expect("rfc3339");
    let end =
        chrono::DateTime::parse_from_rfc3339(v["suggestedWindow"]["end"].as_str().expect("end")).expect("rfc3339");
    assert!(start < end);
    // Unknown serial, and a known serial under another CA's key identifier.
    let r = app
        .client
        .get(format!("{pfx}/renewal-info/{}.{}", B64.encode(&aki), B64.encode([0x01, 0x02])))
        .send()
        .await
        .expect("ari");
    assert_problem(r, 404, "malformed").await;
    let r = app
        .client
        .get(format!("{pfx}/renewal-info/{}.{}", B64.encode([7u8; 20]), B64.encode(&serial)))
        .send()
        .await
        .expect("ari");
    assert_problem(r, 404, "malformed").await;
    app.stop().await;
}

#[tokio::test]
async fn revocation_by_the_certificate_key_works_once() {
    let app = spawn_app(&[]).await;
    let (_, _, leaf_der, leaf_key) = insert_issued(&app, false).await;
    let pfx = prefix(&app, None);
    let url = format!("{pfx}/revoke-cert");
    let payload = json!({"certificate": B64.encode(&leaf_der), "reason": 4});
    // Signed by an unrelated key (jwk): unauthorized.
    let stranger = Jose::new();
    assert_problem(post(&app, &pfx, &stranger, &url, Some(&payload)).await, 403, "unauthorized").await;
    // A reason code RFC 5280 does not allow.
    let leaf = Jose::from_rcgen(&leaf_key);
    let bad = json!({"certificate": B64.encode(&leaf_der), "reason": 7});
    assert_problem(post(&app, &pfx, &leaf, &url, Some(&bad)).await, 400, "badRevocationReason").await;
    // removeFromCRL (8) exists only in delta CRLs (RFC 5280 §5.3.1): never a reason to revoke.
    let remove = json!({"certificate": B64.encode(&leaf_der), "reason": 8});
    assert_problem(post(&app, &pfx, &leaf, &url, Some(&remove)).await, 400, "badRevocationReason").await;
    let r = post(&app, &pfx, &leaf, &url, Some(&payload)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("replay-nonce"));
    let (status,): (String,) = sqlx::query_as("SELECT status FROM managed_certificates WHERE id = 'mc-ari'")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(status, "Revoked");
    assert_problem(post(&app, &pfx, &leaf, &url, Some(&payload)).await, 400, "alreadyRevoked").await;
    app.stop().await;
}

#[tokio::test]
async fn gc_removes_expired_nonces_and_abandoned_orders() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, Some("prof-standard-tls"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let r = post(
        &app,
        &pfx,
        &jose,
        &format!("{pfx}/new-order"),
        Some(&json!({"identifiers": [{"type": "dns", "value": "gc.example.com"}]})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let _ = nonce(&app, &pfx).await;
    // Past its expiry the order is kept, marked invalid, so a polling client sees why ...
    let expired_at = chrono::Utc::now() + chrono::Duration::days(8);
    let report = certctl_server::acme::gc(&app.pool, expired_at).await.expect("gc");
    assert!(report.nonces >= 1);
    assert_eq!((report.orders_expired, report.authorizations_expired, report.orders_deleted), (1, 1, 0));
    let (status,): (String,) =
        sqlx::query_as("SELECT status FROM acme_orders").fetch_one(&app.pool).await.expect("order");
    assert_eq!(status, "invalid");
    // ... and deleted once the retention has passed.
    let later = expired_at + certctl_server::acme::EXPIRED_ORDER_RETENTION + chrono::Duration::days(1);
    let report = certctl_server::acme::gc(&app.pool, later).await.expect("gc");
    assert_eq!(report.orders_deleted, 1);
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM acme_authorizations").fetch_one(&app.pool).await.expect("count");
    assert_eq!(n, 0, "authorizations go with their order");
    app.stop().await;
}

impl Jose {
    /// A signer from an rcgen P-256 key (the certificate key, for revocation by key).
    pub fn from_rcgen(key: &rcgen::KeyPair) -> Self {
        let pkcs8 = key.serialize_der();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).expect("kp");
        let p = kp.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])});
        Jose { kp, pkcs8, jwk, kid: None }
    }
}

#[tokio::test]
async fn a_trusted_profile_issues_stores_a_managed_certificate_answers_ari_and_revokes_by_account() {
    use x509_parser::prelude::*;
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, None); // the default profile, prof-test (trust_authenticated)
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let names = ["svc.example.com", "alt.example.com"];
    let ids = json!({"identifiers": names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>()});
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-order"), Some(&ids)).await;
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.expect("order");
    assert_eq!(order["status"], "ready");
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = B64.encode(csr_der(&names, &key));
    let r = post(&app, &pfx, &jose, order["finalize"].as_str().expect("finalize"), Some(&json!({"csr": csr}))).await;
    assert_eq!(r.status(), 200);
    let order: Value = r.json().await.expect("order");
    assert_eq!(order["status"], "valid");
    let cert_url = order["certificate"].as_str().expect("certificate url").to_string();
    // Finalizing twice is refused.
    let csr = B64.encode(csr_der(&names, &key));
    let fin = format!("{}/finalize", order["finalize"].as_str().expect("f").trim_end_matches("/finalize"));
    assert_problem(post(&app, &pfx, &jose, &fin, Some(&json!({"csr": csr}))).await, 403, "orderNotReady").await;

    let r = post(&app, &pfx, &jose, &cert_url, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pem-certificate-chain");
    let chain = r.text().await.expect("pem");
    let pems = ::pem::parse_many(&chain).expect("chain");
    let (_, leaf) = X509Certificate::from_der(pems[0].contents()).expect("leaf");
    let (_, ca) = X509Certificate::from_der(pems[1].contents()).expect("ca");
    leaf.verify_signature(Some(ca.public_key())).expect("chains");
    // Another account cannot download it.
    let mut other = Jose::new();
    register(&app, &pfx, &mut other).await;
    assert_problem(post(&app, &pfx, &other, &cert_url, None).await, 404, "malformed").await;

    // The managed certificate: owner/team/policy/issuer from the profile, Active, source ACME.
    let row: (String, String, String, String, String, String, String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "SELECT name, owner_id, team_id, renewal_policy_id, issuer_id, status, source, expires_at
           FROM managed_certificates WHERE source = 'ACME'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("managed certificate");
    assert!(row.0.starts_with("acme-ord-"));
    assert_eq!(
        (&*row.1, &*row.2, &*row.3, &*row.4, &*row.5),
        ("o-alice", "t-platform", "rp-standard", "iss-local", "Active")
    );
    assert_eq!(row.6, "ACME");
    assert_eq!(row.7.map(|t| t.timestamp()), Some(leaf.validity().not_after.timestamp()));

    // ARI for the real certificate: 30-day policy window before notAfter.
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
        .expect("aki");
    let id = format!("{}.{}", B64.encode(aki), B64.encode(leaf.tbs_certificate.raw_serial()));
    let r = app.client.get(format!("{pfx}/renewal-info/{id}")).send().await.expect("ari");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let start =
        chrono::DateTime::parse_from_rfc3339(v["suggestedWindow"]["start"].as_str().expect("start")).expect("t");
    assert_eq!(start.timestamp(), leaf.validity().not_after.timestamp() - 30 * 86400);

    // Revocation by another account is refused; by the ordering account it works.
    let payload = json!({"certificate": B64.encode(pems[0].contents())});
    let url = format!("{pfx}/revoke-cert");
    assert_problem(post(&app, &pfx, &other, &url, Some(&payload)).await, 403, "unauthorized").await;
    assert_eq!(post(&app, &pfx, &jose, &url, Some(&payload)).await.status(), 200);
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM certificate_revocations").fetch_one(&app.pool).await.expect("count");
    assert_eq!(n, 1);
    // Issuance and revocation are audited with the account as actor.
    app.server.as_ref().expect("server").state.audit.flush().await;
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM audit_events WHERE actor_type = 'acme_account'")
            .fetch_all(&app.pool)
            .await
            .expect("audit");
    let acct_id = jose.kid.as_deref().and_then(|k| k.rsplit('/').next()).expect("id");
    for action in ["acme.account.create", "acme.certificate.issue", "acme.certificate.revoke"] {
        assert!(
            actions.iter().any(|(a, who)| a == action && who == &format!("acme:{acct_id}")),
            "{action}: {actions:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_profile_without_acme_ownership_answers_a_clear_problem_not_a_500() {
    let app = spawn_app(&[]).await;
    sqlx::query(
        "INSERT INTO certificate_profiles (id, name, issuer_id, acme_enabled, acme_auth_mode)
         VALUES ('prof-bare', 'Bare', 'iss-local', true, 'trust_authenticated')",
    )
    .execute(&app.pool)
    .await
    .expect("profile");
    let pfx = prefix(&app, Some("prof-bare"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let ids = json!({"identifiers": [{"type": "dns", "value": "x.example.com"}]});
    let p = assert_problem(post(&app, &pfx, &jose, &format!("{pfx}/new-order"), Some(&ids)).await, 403, "unauthorized")
        .await;
    assert!(p["detail"].as_str().expect("detail").contains("acme_owner_id"), "{p}");
    app.stop().await;
}

/// A DNS server on 127.0.0.1 (UDP) answering TXT queries from `records`.
async fn dns_server(records: Arc<Mutex<HashMap<String, Vec<String>>>>) -> u16 {
    use certctl_server::acme::dns;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let port = sock.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let q = &buf[..n];
            let name = dns::query_name(q).unwrap_or_default().to_ascii_lowercase();
            let txt = records.lock().expect("lock").get(&name).cloned().unwrap_or_default();
            let refs: Vec<&str> = txt.iter().map(String::as_str).collect();
            if let Some(a) = dns::build_answer(q, &refs) {
                let _ = sock.send_to(&a, peer).await;
            }
        }
    });
    port
}

#[tokio::test]
async fn dns_01_validates_wildcards_through_the_configured_resolver() {
    let records: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let port = dns_server(records.clone()).await;
    let resolver = format!("127.0.0.1:{port}");
    let app = spawn_app(&["--acme-dns-resolver", &resolver]).await;
    let pfx = prefix(&app, Some("prof-standard-tls"));
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let ids = json!({"identifiers": [{"type": "dns", "value": "*.wild.acme.test"}, {"type": "dns", "value": "wild.acme.test"}]});
    let r = post(&app, &pfx, &jose, &format!("{pfx}/new-order"), Some(&ids)).await;
    assert_eq!(r.status(), 201);
    let order_url = r.headers()["location"].to_str().expect("loc").to_string();
    let order: Value = r.json().await.expect("order");
    for authz_url in order["authorizations"].as_array().expect("authzs") {
        let authz_url = authz_url.as_str().expect("url");
        let authz: Value = post(&app, &pfx, &jose, authz_url, None).await.json().await.expect("authz");
        let types: Vec<&str> =
            authz["challenges"].as_array().expect("chals").iter().filter_map(|c| c["type"].as_str()).collect();
        if authz["wildcard"] == true {
            assert_eq!(types, vec!["dns-01"], "a wildcard is only provable by dns-01");
            assert_eq!(authz["identifier"]["value"], "wild.acme.test");
        } else {
            assert!(types.contains(&"http-01") && types.contains(&"dns-01"));
        }
        let chal = authz["challenges"]
            .as_array()
            .expect("chals")
            .iter()
            .find(|c| c["type"] == "dns-01")
            .expect("dns-01")
            .clone();
        let key_auth = format!("{}.{}", chal["token"].as_str().expect("token"), jose.thumbprint());
        let digest = B64.encode(Sha256::digest(key_auth.as_bytes()));
        records.lock().expect("lock").entry("_acme-challenge.wild.acme.test".into()).or_default().push(digest);
        assert_eq!(post(&app, &pfx, &jose, chal["url"].as_str().expect("url"), Some(&json!({}))).await.status(), 200);
        let mut status = String::new();
        for _ in 0..100 {
            let a: Value = post(&app, &pfx, &jose, authz_url, None).await.json().await.expect("authz");
            status = a["status"].as_str().unwrap_or("").to_string();
            if status != "pending" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status, "valid");
    }
    let o: Value = post(&app, &pfx, &jose, &order_url, None).await.json().await.expect("order");
    assert_eq!(o["status"], "ready");
    let csr = B64.encode(csr_der(&["wild.acme.test", "*.wild.acme.test"], &rcgen::KeyPair::generate().expect("key")));
    let r = post(&app, &pfx, &jose, o["finalize"].as_str().expect("finalize"), Some(&json!({"csr": csr}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("order")["status"], "valid");

    // A wrong TXT value makes the challenge (and order) invalid with incorrectResponse.
    let ids = json!({"identifiers": [{"type": "dns", "value": "nope.acme.test"}]});
    let order: Value =
        post(&app, &pfx, &jose, &format!("{pfx}/new-order"), Some(&ids)).await.json().await.expect("order");
    let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
    let authz: Value = post(&app, &pfx, &jose, &authz_url, None).await.json().await.expect("authz");
    let chal =
        authz["challenges"].as_array().expect("chals").iter().find(|c| c["type"] == "dns-01").expect("dns-01").clone();
    records.lock().expect("lock").insert("_acme-challenge.nope.acme.test".into(), vec!["wrong".into()]);
    post(&app, &pfx, &jose, chal["url"].as_str().expect("url"), Some(&json!({}))).await;
    let mut a = Value::Null;
    for _ in 0..100 {
        a = post(&app, &pfx, &jose, &authz_url, None).await.json().await.expect("authz");
        if a["status"] != "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(a["status"], "invalid");
    let c = a["challenges"].as_array().expect("chals").iter().find(|c| c["type"] == "dns-01").expect("dns-01").clone();
    assert_eq!(c["error"]["type"], "urn:ietf:params:acme:error:incorrectResponse");
    app.stop().await;
}

#[tokio::test]
async fn key_changes_are_limited_to_five_per_hour() {
    let app = spawn_app(&[]).await;
    let pfx = prefix(&app, None);
    let mut current = Jose::new();
    register(&app, &pfx, &mut current).await;
    let kid = current.kid.clone().expect("kid");
    let url = format!("{pfx}/key-change");
    for i in 0..6 {
        let mut next = Jose::new();
        let inner = next.sign_header(
            &json!({"alg": "ES256", "jwk": next.jwk, "url": url}),
            Some(&json!({"account": kid, "oldKey": current.jwk})),
        );
        let r = post(&app, &pfx, &current, &url, Some(&inner)).await;
        if i < 5 {
            assert_eq!(r.status(), 200, "key change {i}");
            next.kid = Some(kid.clone());
            current = next;
        } else {
            assert!(r.headers()["retry-after"].to_str().expect("ascii").parse::<u64>().expect("secs") > 0);
            assert_problem(r, 429, "rateLimited").await;
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn hot_acme_statements_are_served_by_indexes() {
    use sqlx::{Connection, Row};
    let (url, pool) = crate::support::migrated_database(true).await;
    sqlx::query(
        "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after,
                                           fingerprint_sha256, pem_chain)
         SELECT 'cv-ix-' || g, (SELECT id FROM managed_certificates ORDER BY id LIMIT 1), 'iss-local', to_hex(g * 7919),
                now(), now() + interval '90 days', '', ''
           FROM generate_series(1, 2000) g",
    )
    .execute(&pool)
    .await
    .expect("versions");
    sqlx::query("ANALYZE").execute(&pool).await.expect("analyze");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.expect("set");
    let mut plan = async |prepare: String, execute: &str| -> String {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DEALLOCATE ALL; {prepare}")))
            .execute(&mut conn)
            .await
            .expect("prepare");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {execute}"))).fetch_all(&mut conn).await.expect("explain");
        rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
    };
    let ari =
        plan(format!("PREPARE ari(text[]) AS {}", certctl_server::acme::ari::LOOKUP_SQL), "EXECUTE ari('{0a,a}')")
            .await;
    assert!(ari.contains("idx_certificate_versions_serial_number"), "renewal-info:\n{ari}");
    let nonce =
        plan(format!("PREPARE nc(text) AS {}", certctl_server::acme::nonce::CONSUME_SQL), "EXECUTE nc('x')").await;
    assert!(nonce.contains("acme_nonces_pkey"), "nonce redeem:\n{nonce}");
    let pending =
        plan(format!("PREPARE pc(text) AS {}", certctl_server::acme::order::PENDING_COUNT_SQL), "EXECUTE pc('acct-x')")
            .await;
    assert!(pending.contains("idx_acme_orders_account_status"), "pending orders:\n{pending}");
}

#[tokio::test]
async fn a_nonce_from_one_replica_is_accepted_once_by_another() {
    let a = spawn_app(&[]).await;
    let b = crate::support::spawn_app_on(&a.url, &[]).await;
    let (pa, pb) = (prefix(&a, None), prefix(&b, None));
    let jose = Jose::new();
    let n = nonce(&a, &pa).await;
    let url_b = format!("{pb}/new-account");
    let body = jose.sign_header(&jose.header(&url_b, &n), Some(&json!({"termsOfServiceAgreed": true})));
    assert_eq!(post_raw(&b, &url_b, &body).await.status(), 201);
    // Replayed at either replica: badNonce.
    assert_problem(post_raw(&b, &url_b, &body).await, 400, "badNonce").await;
    let url_a = format!("{pa}/new-account");
    let again = jose.sign_header(&jose.header(&url_a, &n), Some(&json!({"termsOfServiceAgreed": true})));
    assert_problem(post_raw(&a, &url_a, &again).await, 400, "badNonce").await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn an_expired_nonce_is_refused() {
    let app = spawn_app(&["--acme-nonce-ttl", "300ms"]).await;
    let pfx = prefix(&app, None);
    let jose = Jose::new();
    let n = nonce(&app, &pfx).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let url = format!("{pfx}/new-account");
    let body = jose.sign_header(&jose.header(&url, &n), Some(&json!({"termsOfServiceAgreed": true})));
    assert_problem(post_raw(&app, &url, &body).await, 400, "badNonce").await;
    app.stop().await;
}

/// Orders and finalizes `names` under the default (trusted) profile; returns the leaf's certID
/// (RFC 9773 §4.1).
async fn issue_cert_id(app: &TestApp, pfx: &str, jose: &Jose, names: &[&str]) -> String {
    use x509_parser::prelude::*;
    let ids = json!({"identifiers": names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>()});
    let r = post(app, pfx, jose, &format!("{pfx}/new-order"), Some(&ids)).await;
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.expect("order");
    let csr = B64.encode(csr_der(names, &rcgen::KeyPair::generate().expect("key")));
    let r = post(app, pfx, jose, order["finalize"].as_str().expect("finalize"), Some(&json!({"csr": csr}))).await;
    let order: Value = r.json().await.expect("finalized");
    assert_eq!(order["status"], "valid", "{order}");
    let chain =
        post(app, pfx, jose, order["certificate"].as_str().expect("cert"), None).await.text().await.expect("pem");
    let pems = ::pem::parse_many(&chain).expect("chain");
    let (_, leaf) = X509Certificate::from_der(pems[0].contents()).expect("leaf");
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
        .expect("aki");
    format!("{}.{}", B64.encode(aki), B64.encode(leaf.tbs_certificate.raw_serial()))
}

#[tokio::test]
async fn ari_replaces_must_name_a_known_related_certificate_is_echoed_and_is_used_by_one_live_order() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let pfx = prefix(&app, None);
    let mut jose = Jose::new();
    register(&app, &pfx, &mut jose).await;
    let cert_id = issue_cert_id(&app, &pfx, &jose, &["renew.example.com"]).await;
    let order_for =
        |name: &str, replaces: &str| json!({"identifiers": [{"type": "dns", "value": name}], "replaces": replaces});
    let new_order = format!("{pfx}/new-order");

    // The replacement order is accepted and echoes `replaces`, also when fetched again.
    let r = post(&app, &pfx, &jose, &new_order, Some(&order_for("renew.example.com", &cert_id))).await;
    assert_eq!(r.status(), 201);
    let url = r.headers()["location"].to_str().expect("location").to_string();
    let order: Value = r.json().await.expect("order");
    assert_eq!(order["replaces"], cert_id.as_str());
    let fetched: Value = post(&app, &pfx, &jose, &url, None).await.json().await.expect("order");
    assert_eq!(fetched["replaces"], cert_id.as_str());

    // The same certificate again while the first replacement is live: 409 alreadyReplaced.
    let r = post(&app, &pfx, &jose, &new_order, Some(&order_for("renew.example.com", &cert_id))).await;
    let p = assert_problem(r, 409, "alreadyReplaced").await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("already")), "{p}");

    // A well-formed certID of a certificate that does not exist here.
    let (aki, _) = cert_id.split_once('.').expect("certID");
    let unknown = format!("{aki}.{}", B64.encode([0x01, 0x02, 0x03]));
    let r = post(&app, &pfx, &jose, &new_order, Some(&order_for("renew.example.com", &unknown))).await;
    let p = assert_problem(r, 400, "malformed").await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("no certificate")), "{p}");

    // Another account naming this account's certificate for unrelated names.
    let mut other = Jose::new();
    register(&app, &pfx, &mut other).await;
    let other_cert = issue_cert_id(&app, &pfx, &jose, &["mine.example.com"]).await;
    let r = post(&app, &pfx, &other, &new_order, Some(&order_for("theirs.example.com", &other_cert))).await;
    let p = assert_problem(r, 400, "malformed").await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("shares no identifier")), "{p}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM acme_orders WHERE replaces IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 1, "refused orders are not stored");

    // Once the first replacement is invalid, the certificate may be replaced again.
    sqlx::query("UPDATE acme_orders SET status = 'invalid' WHERE replaces = $1")
        .bind(&cert_id)
        .execute(&app.pool)
        .await
        .expect("invalidate");
    let r = post(&app, &pfx, &jose, &new_order, Some(&order_for("renew.example.com", &cert_id))).await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}

//! The local CA: leaves checked with an independent X.509 parser (SANs, EKUs, SKI/AKI, serial,
//! validity, chain signature), persistence and sharing of the CA, encryption at rest, CSR
//! refusals, and the CRL endpoint.

use certctl_server::AppState;
use certctl_server::issuance::{self, IssuanceError};
use rcgen::{CertificateParams, KeyPair};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::{fresh_database_url, spawn_app, spawn_app_on, test_config};

/// A CSR for `names` with a fresh key of `alg`.
pub fn csr_for(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = KeyPair::generate_for(alg).expect("key");
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn der_of(pem_text: &str, index: usize) -> Vec<u8> {
    pem::parse_many(pem_text).expect("pem")[index].contents().to_vec()
}

fn ski(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

fn aki(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    })
}

/// Checks a leaf PEM chain (leaf then CA) with x509-parser; returns the leaf's DNS SANs.
pub fn check_leaf(chain: &str, want_validity_days: i64, want_client_auth: bool) -> Vec<String> {
    let leaf_der = der_of(chain, 0);
    let ca_der = der_of(chain, 1);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf parses");
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("CA parses");
    leaf.verify_signature(Some(ca.public_key())).expect("leaf is signed by the CA");
    ca.verify_signature(None).expect("CA is self-signed");
    assert!(ca.is_ca());
    assert!(!leaf.is_ca());
    assert_eq!(leaf.issuer(), ca.subject());
    // 159-bit positive serial: 20 octets, top bit clear.
    let serial = leaf.raw_serial();
    assert_eq!(serial.len(), 20, "serial is 20 octets");
    assert_eq!(serial[0] & 0x80, 0, "serial is positive");
    assert_eq!(leaf.serial.bits(), 159);
    // SKI present; AKI equals the CA's SKI.
    assert!(ski(&leaf).is_some(), "leaf has a SKI");
    assert_eq!(aki(&leaf), ski(&ca), "leaf AKI is the CA's SKI");
    let eku = leaf.extended_key_usage().expect("eku ok").expect("eku present").value;
    assert!(eku.server_auth);
    assert_eq!(eku.client_auth, want_client_auth);
    let v = leaf.validity();
    assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), want_validity_days * 86_400);
    let san = leaf.subject_alternative_name().expect("san ok").expect("san present").value;
    san.general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

fn state_of(app: &crate::support::TestApp) -> AppState {
    app.server.as_ref().expect("running").state.clone()
}

#[tokio::test]
async fn a_leaf_signed_from_a_csr_carries_its_sans_profile_ekus_key_ids_and_a_159_bit_serial() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let csr = csr_for(&["a.example.com", "b.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let signed = issuance::sign_csr(&state, "iss-local", Some("prof-test"), &csr).await.expect("signed");
    let sans = check_leaf(&signed.pem_chain, 90, true);
    assert_eq!(sans, vec!["a.example.com", "b.example.com"]);
    assert_eq!(signed.serial_hex.len(), 40);
    assert_eq!((signed.not_after - signed.not_before).num_days(), 90);
    let (_, leaf) = X509Certificate::from_der(&signed.leaf_der).expect("leaf");
    assert_eq!(hex::encode(leaf.raw_serial()), signed.serial_hex);
    // prof-standard-tls has only serverAuth.
    let signed = issuance::sign_csr(&state, "iss-local", Some("prof-standard-tls"), &csr).await.expect("signed");
    check_leaf(&signed.pem_chain, 90, false);
    assert_eq!(state.metrics.issuance_count("GenericCA", "success"), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_ca_is_created_once_shared_by_concurrent_first_boots_and_survives_restarts() {
    let url = fresh_database_url().await;
    let first = spawn_app_on(&url, &["--scheduler-enabled", "false"]).await;
    let a = AppState::build(test_config(&url, &[])).await.expect("state a");
    let b = AppState::build(test_config(&url, &[])).await.expect("state b");
    let csr = csr_for(&["x.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let (ra, rb) =
        tokio::join!(issuance::sign_csr(&a, "iss-local", None, &csr), issuance::sign_csr(&b, "iss-local", None, &csr));
    let (ra, rb) = (ra.expect("a signs"), rb.expect("b signs"));
    assert_eq!(der_of(&ra.pem_chain, 1), der_of(&rb.pem_chain, 1), "both replicas sign with one CA");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM issuer_ca_keys").fetch_one(&first.pool).await.expect("count");
    assert_eq!(rows, 1);
    // A "restarted" replica (fresh state, fresh cache) loads the same CA.
    let c = AppState::build(test_config(&url, &[])).await.expect("state c");
    let rc = issuance::sign_csr(&c, "iss-local", None, &csr).await.expect("c signs");
    assert_eq!(der_of(&ra.pem_chain, 1), der_of(&rc.pem_chain, 1));
    check_leaf(&rc.pem_chain, 90, false);
    first.stop().await;
}

#[tokio::test]
async fn the_ca_key_is_encrypted_at_rest_when_an_encryption_key_is_set() {
    let url = fresh_database_url().await;
    let app = spawn_app_on(
        &url,
        &["--scheduler-enabled", "false", "--config-encryption-key", "correct horse battery staple"],
    )
    .await;
    let state = state_of(&app);
    let csr = csr_for(&["e.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    issuance::sign_csr(&state, "iss-local", None, &csr).await.expect("signed");
    let (key_pem, encrypted): (String, bool) =
        sqlx::query_as("SELECT key_pem, key_encrypted FROM issuer_ca_keys").fetch_one(&app.pool).await.expect("row");
    assert!(encrypted);
    assert!(key_pem.starts_with("enc:v1:"));
    assert!(!key_pem.contains("PRIVATE KEY"));
    // A replica without the key cannot use the CA, and says why.
    let other = AppState::build(test_config(&url, &[])).await.expect("state");
    let err = issuance::sign_csr(&other, "iss-local", None, &csr).await.expect_err("no key");
    assert!(err.to_string().contains("CERTCTL_CONFIG_ENCRYPTION_KEY"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_csr_a_forbidden_key_algorithm_and_a_foreign_issuer_are_refused() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let csr = csr_for(&["t.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut der = der_of(&csr, 0);
    let last = der.len() - 5;
    der[last] ^= 0xff;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = issuance::sign_csr(&state, "iss-local", None, &tampered).await.expect_err("tampered");
    assert!(matches!(err, IssuanceError::BadCsr(_)), "{err}");
    assert!(matches!(issuance::sign_csr(&state, "iss-local", None, "junk").await, Err(IssuanceError::BadCsr(_))));
    // prof-standard-tls does not allow Ed25519.
    let ed = csr_for(&["t.example.com"], &rcgen::PKCS_ED25519);
    let err = issuance::sign_csr(&state, "iss-local", Some("prof-standard-tls"), &ed).await.expect_err("ed25519");
    assert!(matches!(err, IssuanceError::NotAllowed(_)), "{err}");
    issuance::sign_csr(&state, "iss-local", Some("prof-test"), &ed).await.expect("prof-test allows Ed25519");
    let err = issuance::sign_csr(&state, "iss-nope", None, &csr).await.expect_err("unknown issuer");
    assert!(matches!(err, IssuanceError::NotFound(_)));
    sqlx::query("INSERT INTO issuers (id, name, type) VALUES ('iss-acme', 'ACME upstream', 'ACME')")
        .execute(&app.pool)
        .await
        .expect("issuer");
    let err = issuance::sign_csr(&state, "iss-acme", None, &csr).await.expect_err("not local");
    assert!(matches!(err, IssuanceError::NotAllowed(_)));
    app.stop().await;
}

#[tokio::test]
async fn the_crl_lists_revoked_serials_is_signed_by_the_ca_and_is_served_without_a_key() {
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let csr = csr_for(&["r.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let signed = issuance::sign_csr(&state, "iss-local", None, &csr).await.expect("signed");
    sqlx::query(
        "INSERT INTO certificate_revocations (id, certificate_id, issuer_id, serial_number, reason, reason_code) \
         VALUES ('rev-1', 'mc-demo-api', 'iss-local', $1, 'keyCompromise', 1)",
    )
    .bind(&signed.serial_hex)
    .execute(&app.pool)
    .await
    .expect("revocation");
    let first = issuance::generate_crl(&state, "iss-local", chrono::Utc::now()).await.expect("crl");
    let r = app.client.get(app.url("/.well-known/pki/crl/iss-local")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pkix-crl");
    let body = r.bytes().await.expect("body").to_vec();
    assert_eq!(body, first);
    let (_, crl) = x509_parser::parse_x509_crl(&body).expect("CRL parses");
    let ca_der = der_of(&signed.pem_chain, 1);
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("ca");
    crl.verify_signature(ca.public_key()).expect("CRL signed by the CA");
    let serials: Vec<String> = crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
    assert_eq!(serials, vec![signed.serial_hex.clone()]);
    // CRL numbers increase.
    issuance::generate_crl(&state, "iss-local", chrono::Utc::now()).await.expect("crl 2");
    let n: i64 = sqlx::query_scalar("SELECT crl_number FROM issuer_crls WHERE issuer_id = 'iss-local'")
        .fetch_one(&app.pool)
        .await
        .expect("n");
    assert_eq!(n, 2);
    let r = app.client.get(app.url("/.well-known/pki/crl/iss-unknown")).send().await.expect("get");
    assert_eq!(r.status(), 404);
    let env: serde_json::Value = r.json().await.expect("envelope");
    assert_eq!(env["error"], "Not Found");
    sqlx::query("INSERT INTO issuers (id, name, type) VALUES ('iss-upstream', 'Upstream', 'ACME')")
        .execute(&app.pool)
        .await
        .expect("issuer");
    let r = app.client.get(app.url("/.well-known/pki/crl/iss-upstream")).send().await.expect("get");
    assert_eq!(r.status(), 404, "an issuer that is not the local CA publishes no CRL here");
    app.stop().await;
}

#[tokio::test]
async fn rsa_csrs_are_recognised_and_a_profile_default_algorithm_drives_server_keygen() {
    let app = spawn_app(&["--scheduler-enabled", "false", "--keygen-mode", "server"]).await;
    let state = state_of(&app);
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("rsa key");
    let csr = CertificateParams::new(vec!["rsa.example.com".to_string()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    assert_eq!(issuance::parse_csr(&csr).expect("parses").key_algorithm, "RSA-2048");
    let signed = issuance::sign_csr(&state, "iss-local", Some("prof-standard-tls"), &csr).await.expect("signed");
    check_leaf(&signed.pem_chain, 90, false);

    sqlx::query("UPDATE certificate_profiles SET default_key_algorithm = 'ECDSA-P384' WHERE id = 'prof-standard-tls'")
        .execute(&app.pool)
        .await
        .expect("profile");
    sqlx::query("INSERT INTO jobs (id, type, certificate_id) VALUES ('job-384', 'Renewal', 'mc-demo-api')")
        .execute(&app.pool)
        .await
        .expect("job");
    certctl_server::scheduler::run_tick(&state, certctl_server::scheduler::LoopKind::JobProcessor, chrono::Utc::now())
        .await
        .expect("tick");
    let (alg, chain): (String, String) =
        sqlx::query_as("SELECT key_algorithm, pem_chain FROM certificate_versions WHERE job_id = 'job-384'")
            .fetch_one(&app.pool)
            .await
            .expect("version");
    assert_eq!(alg, "ECDSA-P384");
    let leaf_der = der_of(&chain, 0);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf");
    let x509_parser::public_key::PublicKey::EC(point) = leaf.public_key().parsed().expect("key") else {
        panic!("expected an EC key")
    };
    assert_eq!(point.key_size(), 384);
    app.stop().await;
}

/// Issues a real leaf for each of `n` seeded certificates `<prefix>-<i>` and stores it as their
/// current version; returns the serials (lower-case hex).
async fn seed_issued(app: &crate::support::TestApp, prefix: &str, n: i64) -> Vec<String> {
    crate::api_support::seed_certificates(&app.pool, prefix, n, "'Active'").await;
    let state = state_of(app);
    let mut serials = Vec::new();
    for i in 1..=n {
        let name = format!("{prefix}-{i}.example.com");
        let signed = issuance::sign_csr(&state, "iss-local", None, &csr_for(&[&name], &rcgen::PKCS_ECDSA_P256_SHA256))
            .await
            .expect("signed");
        sqlx::query(
            "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after,
                                               fingerprint_sha256, pem_chain)
             VALUES ($1 || '-v', $1, 'iss-local', $2, $3, $4, $5, $6)",
        )
        .bind(format!("{prefix}-{i}"))
        .bind(&signed.serial_hex)
        .bind(signed.not_before)
        .bind(signed.not_after)
        .bind(&signed.fingerprint_sha256)
        .bind(&signed.pem_chain)
        .execute(&app.pool)
        .await
        .expect("version");
        serials.push(signed.serial_hex);
    }
    serials
}

/// The serials a DER CRL lists, read with x509-parser (independent of rcgen, which signs it).
fn crl_serials(der: &[u8]) -> Vec<String> {
    let (_, crl) = x509_parser::parse_x509_crl(der).expect("CRL parses");
    crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect()
}

async fn revoke(app: &crate::support::TestApp, id: &str) {
    let r =
        app.post(&format!("/api/v1/certificates/{id}/revoke"), &serde_json::json!({"reason": "keyCompromise"})).await;
    assert_eq!(r.status(), 200, "revoke {id}");
}

#[tokio::test]
async fn three_revocations_reach_the_served_crl_within_seconds() {
    let app = spawn_app(&["--crl-refresh-interval", "1s", "--leader-election-interval", "1s"]).await;
    let serials = seed_issued(&app, "crl-fast", 3).await;
    // A CRL exists before the revocations (the first fetch signs one), so staleness would show.
    let r = app.client.get(app.url("/.well-known/pki/crl/iss-local")).send().await.expect("crl");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "max-age=1", "caches keep it no longer than a refresh");
    assert!(crl_serials(&r.bytes().await.expect("body")).is_empty());
    for i in 1..=3 {
        revoke(&app, &format!("crl-fast-{i}")).await;
    }
    let started = std::time::Instant::now();
    let listed = loop {
        let body = app.client.get(app.url("/.well-known/pki/crl/iss-local")).send().await.expect("crl");
        let listed = crl_serials(&body.bytes().await.expect("body"));
        if listed.len() >= 3 || started.elapsed() > std::time::Duration::from_secs(30) {
            break listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut want = serials.clone();
    want.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, want, "all three revoked serials are listed");
    app.stop().await;
}

#[tokio::test]
async fn revocations_between_two_refresh_ticks_share_one_crl_re_sign() {
    use certctl_server::scheduler::{LoopKind, run_tick};
    let app = spawn_app(&["--scheduler-enabled", "false"]).await;
    let state = state_of(&app);
    let serials = seed_issued(&app, "crl-burst", 5).await;
    issuance::current_crl(&state, "iss-local").await.expect("first CRL");
    let number = || async {
        sqlx::query_scalar::<_, i64>("SELECT crl_number FROM issuer_crls WHERE issuer_id = 'iss-local'")
            .fetch_one(&app.pool)
            .await
            .expect("crl number")
    };
    let before = number().await;
    // A burst: four single revocations and one bulk revocation.
    for i in 1..=4 {
        revoke(&app, &format!("crl-burst-{i}")).await;
    }
    let bulk =
        app.post("/api/v1/certificates/bulk-revoke", &serde_json::json!({"certificate_ids": ["crl-burst-5"]})).await;
    assert_eq!(bulk.status(), 200);
    let requests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM crl_refresh_requests").fetch_one(&app.pool).await.expect("requests");
    assert_eq!(requests, 1, "one request per issuer, however many revocations");
    run_tick(&state, LoopKind::CrlRefresh, chrono::Utc::now()).await.expect("tick");
    assert_eq!(number().await, before + 1, "one re-sign for the burst");
    let der = issuance::current_crl(&state, "iss-local").await.expect("crl");
    let mut got = crl_serials(&der);
    got.sort();
    let mut want = serials;
    want.sort();
    assert_eq!(got, want);
    // Nothing new: the next tick signs nothing.
    run_tick(&state, LoopKind::CrlRefresh, chrono::Utc::now()).await.expect("tick");
    assert_eq!(number().await, before + 1);
    app.stop().await;
}

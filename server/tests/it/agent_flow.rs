//! The agent-mode renewal, end to end over real HTTP: an operator asks for a renewal, the job
//! processor parks the job in `AwaitingCSR` for the certificate's agent, the agent finds it by
//! polling for work with its own credential, posts a CSR for the certificate's names, and the
//! certificate comes back `Active` with a version carrying the agent's key.

use certctl_server::scheduler::{LoopKind, run_tick};
use chrono::Utc;
use reqwest::Method;
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::api_support::{call, get, post, register_agent, spawn_api};

#[tokio::test]
async fn an_agent_completes_its_renewal_by_polling_for_work_and_posting_a_csr() {
    let app = spawn_api(&["--scheduler-enabled", "false", "--keygen-mode", "agent"]).await;
    let state = app.server.as_ref().expect("server").state.clone();
    let (agent_id, credential) = register_agent(&app, "edge01").await;
    sqlx::query("UPDATE managed_certificates SET agent_id = $1 WHERE id = 'mc-demo-api'")
        .bind(&agent_id)
        .execute(&app.pool)
        .await
        .expect("assign the certificate to the agent");

    let renew = post(&app, "/api/v1/certificates/mc-demo-api/renew", &json!({})).await;
    assert_eq!(renew.status, 202, "{:?}", renew.json);
    let job_id = renew.json["job_id"].as_str().expect("job id").to_string();

    run_tick(&state, LoopKind::JobProcessor, Utc::now()).await.expect("processor tick");
    let job = get(&app, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(job.json["status"], "AwaitingCSR", "{:?}", job.json);

    let work = call(&app, Method::GET, &format!("/api/v1/agents/{agent_id}/work"), Some(&credential), None).await;
    assert_eq!(work.status, 200, "{:?}", work.json);
    let jobs = work.json["jobs"].as_array().expect("jobs");
    assert!(
        jobs.iter().any(|j| j["id"] == job_id.as_str() && j["certificate_id"] == "mc-demo-api"),
        "the parked job is offered to its agent: {jobs:?}"
    );

    // The agent keeps its key: only the CSR leaves the host.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::new(vec!["api.example.com".to_string()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let submit = call(
        &app,
        Method::POST,
        &format!("/api/v1/agents/{agent_id}/csr"),
        Some(&credential),
        Some(&json!({"csr_pem": csr, "certificate_id": "mc-demo-api"})),
    )
    .await;
    assert_eq!(submit.status, 202, "{:?}", submit.json);

    assert_eq!(get(&app, &format!("/api/v1/jobs/{job_id}")).await.json["status"], "Completed");
    let cert = get(&app, "/api/v1/certificates/mc-demo-api").await;
    assert_eq!(cert.json["status"], "Active");
    let versions = get(&app, "/api/v1/certificates/mc-demo-api/versions").await;
    let data = versions.json["data"].as_array().expect("versions");
    assert_eq!(data.len(), 1, "exactly one new version");
    let chain = data[0]["pem_chain"].as_str().expect("chain");
    let leaf_pem = pem::parse_many(chain).expect("pem chain");
    let (_, leaf) = X509Certificate::from_der(leaf_pem[0].contents()).expect("leaf parses");
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the issued certificate carries the agent's own key"
    );

    // A second agent cannot submit for this certificate.
    let (_, other) = register_agent(&app, "edge02").await;
    let a = call(
        &app,
        Method::POST,
        &format!("/api/v1/agents/{agent_id}/csr"),
        Some(&other),
        Some(&json!({"csr_pem": csr, "certificate_id": "mc-demo-api"})),
    )
    .await;
    assert_eq!(a.status, 401, "another agent's credential is refused: {:?}", a.json);
    app.stop().await;
}

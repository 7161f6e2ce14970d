//! Interoperability: `instant-acme` (a real, independent ACME client) runs the whole flow
//! against the server — account → order → http-01 (served here on loopback) → finalize →
//! download → revoke — and the chain it downloads verifies.

use std::future::Future;
use std::pin::Pin;

use axum::body::Bytes;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy, RevocationRequest,
};

use crate::support::spawn_app;

/// instant-acme's default client speaks HTTPS only; the test server is plain HTTP on loopback.
struct PlainHttp(reqwest::Client);

impl HttpClient for PlainHttp {
    fn request(
        &self,
        req: axum::http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(bytes.to_vec())
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut out = axum::http::Response::new(BodyWrapper::from(body.to_vec()));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(BytesResponse::from(out))
        })
    }
}

#[tokio::test]
async fn instant_acme_completes_account_order_http01_finalize_download_and_revoke() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    // The http-01 responder on loopback.
    let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let t = tokens.clone();
    let responder = axum::Router::new().route(
        "/.well-known/acme-challenge/{token}",
        axum::routing::get(move |axum::extract::Path(token): axum::extract::Path<String>| {
            let t = t.clone();
            async move { t.lock().expect("lock").get(&token).cloned().unwrap_or_default() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, responder).await;
    });
    let name = "www.interop.test";
    let app = spawn_app(&["--acme-http01-port", &port, "--acme-resolve", &format!("{name}=127.0.0.1")]).await;
    let directory = app.url("/acme/profile/prof-standard-tls/directory");

    let (account, _creds) = Account::builder_with_http(Box::new(PlainHttp(reqwest::Client::new())))
        .create(
            &NewAccount {
                contact: &["mailto:ops@example.com"],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory,
            None,
        )
        .await
        .expect("account");
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.expect("order");
    assert_eq!(order.state().status, OrderStatus::Pending);
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut authz = a.expect("authz");
        assert_eq!(authz.status, AuthorizationStatus::Pending);
        let mut chal = authz.challenge(ChallengeType::Http01).expect("http-01 offered");
        tokens.lock().expect("lock").insert(chal.token.clone(), chal.key_authorization().as_str().to_string());
        chal.set_ready().await.expect("set ready");
    }
    let status = order.poll_ready(&RetryPolicy::default()).await.expect("poll ready");
    assert_eq!(status, OrderStatus::Ready);

    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).expect("csr");
    order.finalize_csr(csr.der()).await.expect("finalize");
    let chain = order.poll_certificate(&RetryPolicy::default()).await.expect("certificate");

    // The chain: leaf signed by the CA that follows it, for exactly the ordered name.
    use x509_parser::prelude::*;
    let pems = ::pem::parse_many(&chain).expect("pem chain");
    assert!(pems.len() >= 2, "leaf and CA");
    let (_, leaf) = X509Certificate::from_der(pems[0].contents()).expect("leaf");
    let (_, ca) = X509Certificate::from_der(pems[1].contents()).expect("ca");
    leaf.verify_signature(Some(ca.public_key())).expect("leaf signed by the CA");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .expect("san ext")
        .expect("san")
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(sans, vec![name.to_string()]);

    // A managed certificate with owner/team/policy from the profile, and its version.
    let (status, source, owner, team): (String, String, String, String) =
        sqlx::query_as("SELECT status, source, owner_id, team_id FROM managed_certificates WHERE source = 'ACME'")
            .fetch_one(&app.pool)
            .await
            .expect("managed certificate");
    assert_eq!(
        (status.as_str(), source.as_str(), owner.as_str(), team.as_str()),
        ("Active", "ACME", "o-alice", "t-platform")
    );

    let der = rustls::pki_types::CertificateDer::from(pems[0].contents().to_vec());
    account.revoke(&RevocationRequest { certificate: &der, reason: None }).await.expect("revoke");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM managed_certificates WHERE source = 'ACME'")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(status, "Revoked");
    app.stop().await;
}

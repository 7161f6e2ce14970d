//! The `acme_enrollment` flow: one full RFC 8555 enrollment per iteration, with real JWS.
//!
//! Steps (each HTTP step under its own label; URLs and nonces taken from the answers, as a real
//! client does — only new-nonce, new-account and new-order come from the scenario file):
//!
//! 1. `client_keygen` (CLIENT): a fresh ES256 account key, a fresh P-256 certificate key and
//!    the PKCS#10 CSR for the order's name — a first-time enrollment of a new host;
//! 2. `new_nonce`: `HEAD new-nonce` (§7.2) for the first nonce; every later nonce is the
//!    `Replay-Nonce` of the previous answer;
//! 3. `new_account` (§7.3, `jwk` header) → 201 + `Location` (the `kid` of later requests);
//! 4. `new_order` (§7.4) for `enr-<run>-<seq>.loadtest.example` → 201 + `Location`;
//! 5. `authz`: POST-as-GET the authorization (§7.5) — with the `trust_authenticated` profile
//!    `prof-test` it is `valid` at once, so no challenge is answered and the load measures the
//!    server, not http-01 fetches;
//! 6. `finalize` (§7.4) with the CSR;
//! 7. `order_poll`: POST-as-GET the order until it is `valid` (at least once, as clients do to
//!    learn the certificate URL);
//! 8. `cert_download`: POST-as-GET the certificate (`application/pem-certificate-chain`).
//!
//! Every JWS signature is timed under `client_sign` (one record per signature) and happens
//! before the HTTP step's clock starts, so server latencies never include client crypto. A
//! failed step ends the iteration.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use goose::prelude::GooseUser;
use serde_json::{Value, json};

use super::{Answer, FlowCtx, Send, send};
use crate::scenario::template::{self, Context};

/// The flow's name in scenario files.
pub const FLOW: &str = "acme_enrollment";
/// Follow-up labels it records.
pub const FOLLOW_UPS: &[&str] =
    &["client_keygen", "client_sign", "new_account", "new_order", "authz", "finalize", "order_poll", "cert_download"];

/// Order polls before an iteration gives up on an order that stays `processing`.
const MAX_POLLS: usize = 20;
/// Pause between polls of a `processing` order.
const POLL_PAUSE: Duration = Duration::from_millis(50);

/// An ES256 account key that signs flattened JWS (RFC 7515 §7.2.2, RFC 8555 §6.2).
pub struct AccountKey {
    kp: EcdsaKeyPair,
    rng: SystemRandom,
    jwk: Value,
}

impl AccountKey {
    /// A fresh P-256 key.
    pub fn generate() -> Option<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).ok()?;
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).ok()?;
        // Uncompressed point: 0x04 || x (32) || y (32).
        let p = kp.public_key().as_ref();
        if p.len() != 65 {
            return None;
        }
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])});
        Some(AccountKey { kp, rng, jwk })
    }

    /// A flattened JWS of `payload` (`None`: POST-as-GET, empty payload) for `url`, with `kid`
    /// once the account exists and the `jwk` before.
    pub fn sign(&self, url: &str, nonce: &str, kid: Option<&str>, payload: Option<&Value>) -> Option<String> {
        let header = match kid {
            Some(kid) => json!({"alg": "ES256", "kid": kid, "nonce": nonce, "url": url}),
            None => json!({"alg": "ES256", "jwk": self.jwk, "nonce": nonce, "url": url}),
        };
        let protected = B64.encode(header.to_string());
        let payload = payload.map(|v| B64.encode(v.to_string())).unwrap_or_default();
        let sig = self.kp.sign(&self.rng, format!("{protected}.{payload}").as_bytes()).ok()?;
        Some(json!({"protected": protected, "payload": payload, "signature": B64.encode(sig.as_ref())}).to_string())
    }
}

/// A DER CSR (base64url, as finalize wants it) for `name` with a fresh P-256 key.
pub fn csr_b64(name: &str) -> Option<String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).ok()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).ok()?;
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    Some(B64.encode(params.serialize_request(&key).ok()?.der()))
}

/// Label indices of the flow.
struct Labels {
    keygen: usize,
    sign: usize,
    account: usize,
    order: usize,
    authz: usize,
    finalize: usize,
    poll: usize,
    download: usize,
}

impl Labels {
    fn find(ctx: &FlowCtx<'_>) -> Option<Self> {
        Some(Labels {
            keygen: ctx.index("client_keygen")?,
            sign: ctx.index("client_sign")?,
            account: ctx.index("new_account")?,
            order: ctx.index("new_order")?,
            authz: ctx.index("authz")?,
            finalize: ctx.index("finalize")?,
            poll: ctx.index("order_poll")?,
            download: ctx.index("cert_download")?,
        })
    }
}

/// One client's state through an enrollment.
struct Client<'c, 'x> {
    ctx: &'c FlowCtx<'x>,
    labels: Labels,
    key: AccountKey,
    kid: Option<String>,
    nonce: String,
}

impl Client<'_, '_> {
    /// Signs (timed as `client_sign`) and posts to `url` under label `label`; keeps the answer's
    /// nonce for the next request.
    async fn post(&mut self, user: &mut GooseUser, label: usize, url: &str, payload: Option<&Value>) -> Option<Answer> {
        let t = Instant::now();
        let jws = self.key.sign(url, &self.nonce, self.kid.as_deref(), payload);
        self.ctx.record_client(self.labels.sign, t, jws.is_some());
        let jws = jws?;
        let now = Instant::now();
        let s =
            Send { label, url, bearer: None, body: Some(("application/jose+json", jws)), intended: now, started: now };
        let a = send(user, self.ctx, s).await?;
        self.nonce = a.header("replay-nonce")?;
        Some(a)
    }
}

/// Runs one enrollment; request `i` is `new_nonce`.
pub async fn run(user: &mut GooseUser, ctx: &FlowCtx<'_>, i: usize, seq: u64, intended: Instant, started: Instant) {
    let Some(labels) = Labels::find(ctx) else { return };
    let tctx = Context { seq, run: &ctx.cfg.run_tag, fleet: ctx.cfg.fleet, batch: 1 };
    let expand = |label: usize| {
        ctx.requests
            .get(label)
            .map(|r| {
                let p = template::expand(&r.path, &tctx);
                // JWS `url` must be the absolute URL the server sees (RFC 8555 §6.4).
                if p.starts_with("http") { p } else { format!("{}{p}", ctx.cfg.base_url) }
            })
            .unwrap_or_default()
    };
    let name = format!("enr-{}-{seq}.loadtest.example", ctx.cfg.run_tag);

    // Client key material first, timed on its own; the nonce is fetched after it so the
    // new_nonce slot's latency is the server's.
    let t = Instant::now();
    let material = AccountKey::generate().zip(csr_b64(&name));
    ctx.record_client(labels.keygen, t, material.is_some());
    let Some((key, csr)) = material else { return };

    // The scheduled request (closed model: intended = actual start) is new_nonce.
    let nonce_url = expand(i);
    // Closed model: the slot is "now" (intended == started), so both clocks restart after the
    // client work. Open model: the slot's due time stays the intended start.
    let closed = intended == started;
    let started = Instant::now();
    let intended = if closed { started } else { intended };
    let Some(a) =
        send(user, ctx, Send { label: i, url: &nonce_url, bearer: None, body: None, intended, started }).await
    else {
        return;
    };
    let Some(nonce) = a.header("replay-nonce") else { return };
    let (account_url, order_url) = (expand(labels.account), expand(labels.order));
    let mut c = Client { ctx, labels, key, kid: None, nonce };

    let acct = json!({"termsOfServiceAgreed": true});
    let Some(a) = c.post(user, c.labels.account, &account_url, Some(&acct)).await else { return };
    let Some(kid) = a.header("location") else { return };
    c.kid = Some(kid);

    let ids = json!({"identifiers": [{"type": "dns", "value": name}]});
    let Some(a) = c.post(user, c.labels.order, &order_url, Some(&ids)).await else { return };
    let Some(order_loc) = a.header("location") else { return };
    let order = a.json();
    let authzs: Vec<String> = order
        .get("authorizations")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let Some(finalize_url) = order.get("finalize").and_then(Value::as_str).map(str::to_string) else { return };
    for authz in &authzs {
        if c.post(user, c.labels.authz, authz, None).await.is_none() {
            return;
        }
    }

    let Some(a) = c.post(user, c.labels.finalize, &finalize_url, Some(&json!({"csr": csr}))).await else { return };
    drop(a);
    let mut cert_url = None;
    for poll in 0..MAX_POLLS {
        if poll > 0 {
            tokio::time::sleep(POLL_PAUSE).await;
        }
        let Some(a) = c.post(user, c.labels.poll, &order_loc, None).await else { return };
        let order = a.json();
        match order.get("status").and_then(Value::as_str) {
            Some("valid") => {
                cert_url = order.get("certificate").and_then(Value::as_str).map(str::to_string);
                break;
            }
            Some("processing" | "ready" | "pending") => {}
            // `invalid`: the enrollment failed; its earlier steps are already recorded.
            _ => return,
        }
    }
    let Some(cert_url) = cert_url else { return };
    c.post(user, c.labels.download, &cert_url, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jws_has_the_three_flattened_members_and_a_64_byte_signature() {
        let k = AccountKey::generate().unwrap();
        let jws: Value = serde_json::from_str(&k.sign("http://h/acme/new-account", "n", None, None).unwrap()).unwrap();
        assert_eq!(jws["payload"], "");
        let header: Value = serde_json::from_slice(&B64.decode(jws["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert_eq!(B64.decode(jws["signature"].as_str().unwrap()).unwrap().len(), 64);
        assert!(csr_b64("a.loadtest.example").is_some());
    }
}

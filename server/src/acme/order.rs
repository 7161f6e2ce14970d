//! Orders, authorizations, finalization, certificate download and revocation
//! (RFC 8555 §7.4, §7.5, §7.6).
//!
//! Order lifecycle: `pending` (authorizations outstanding) → `ready` (all valid) →
//! `processing` (finalize claimed it) → `valid` (certificate stored), or `invalid`. Profiles in
//! `trust_authenticated` mode create valid authorizations, so orders start `ready`.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use x509_parser::prelude::*;

use super::account::Account;
use super::jws::{Jwk, b64d};
use super::problem::{AcmePath, Problem, ProblemKind};
use super::request::Signed;
use super::{Ctx, ORDER_LIFETIME_DAYS, Profile, check_limit, new_id, ts};
use crate::AppState;

/// An order row.
#[derive(Debug, Clone)]
pub struct Order {
    /// Order id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Status (`pending`, `ready`, `processing`, `valid`, `invalid`).
    pub status: String,
    /// Requested identifiers (`[{"type":"dns","value":…}]`).
    pub identifiers: Value,
    /// Requested notBefore.
    pub not_before: Option<DateTime<Utc>>,
    /// Requested notAfter.
    pub not_after: Option<DateTime<Utc>>,
    /// Expiry of the order.
    pub expires_at: DateTime<Utc>,
    /// Error that made the order invalid.
    pub error: Option<Value>,
    /// The issued certificate version.
    pub certificate_version_id: Option<String>,
    /// The certID this order replaces (RFC 9773 §5), echoed in the order object.
    pub replaces: Option<String>,
}

type OrderRow = (
    String,
    String,
    String,
    Value,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Option<Value>,
    Option<String>,
    Option<String>,
);

/// Loads order `id` if it belongs to `account`; otherwise 404 (no existence oracle).
pub async fn load_own(pool: &PgPool, id: &str, account: &Account) -> Result<Order, Problem> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, account_id, status, identifiers, not_before, not_after, expires_at, error, certificate_version_id,
                replaces
           FROM acme_orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let r = row.filter(|r| r.1 == account.id).ok_or_else(|| Problem::not_found(format!("no order '{id}'")))?;
    let mut o = Order {
        id: r.0,
        account_id: r.1,
        status: r.2,
        identifiers: r.3,
        not_before: r.4,
        not_after: r.5,
        expires_at: r.6,
        error: r.7,
        certificate_version_id: r.8,
        replaces: r.9,
    };
    // RFC 8555 §7.1.6: an order that expires before it is finalized is invalid.
    if matches!(o.status.as_str(), "pending" | "ready") && o.expires_at <= Utc::now() {
        o.status = "invalid".into();
        o.error.get_or_insert_with(|| Problem::unauthorized("the order expired").to_json());
    }
    Ok(o)
}

/// The order object (RFC 8555 §7.1.3).
pub async fn order_json(pool: &PgPool, ctx: &Ctx, o: &Order) -> Result<Value, Problem> {
    let authz: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM acme_authorizations WHERE order_id = $1 ORDER BY created_at, id")
            .bind(&o.id)
            .fetch_all(pool)
            .await?;
    let mut v = json!({
        "status": o.status,
        "expires": ts(o.expires_at),
        "identifiers": o.identifiers,
        "authorizations": authz.iter().map(|(id,)| ctx.url_of("authz", id)).collect::<Vec<_>>(),
        "finalize": format!("{}/finalize", ctx.url_of("order", &o.id)),
    });
    if let Some(t) = o.not_before {
        v["notBefore"] = json!(ts(t));
    }
    if let Some(t) = o.not_after {
        v["notAfter"] = json!(ts(t));
    }
    if let Some(e) = &o.error {
        v["error"] = e.clone();
    }
    if let Some(r) = &o.replaces {
        v["replaces"] = json!(r);
    }
    if o.status == "valid"
        && let Some(cv) = &o.certificate_version_id
    {
        v["certificate"] = json!(ctx.url_of("cert", cv));
    }
    Ok(v)
}

fn with_location(mut resp: Response, url: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Validates a DNS identifier by the shared name rules ([`crate::issuance::names`]), lower-cased;
/// `rejectedIdentifier` naming the value otherwise (RFC 8555 §7.4). `*.` is allowed only when
/// `wildcard_ok`. ACME names must also have at least two labels: the challenges validate them
/// through DNS, where a single label (`localhost`) means nothing.
pub fn normalize_dns(value: &str, wildcard_ok: bool) -> Result<String, Problem> {
    let rejected = |detail: String| Problem::new(ProblemKind::RejectedIdentifier, detail);
    let v = crate::issuance::names::dns_name(value).map_err(|e| rejected(e.to_string()))?;
    if !v.contains('.') {
        return Err(rejected(format!("'{value}' is not a fully qualified DNS name")));
    }
    if v.starts_with("*.") && !wildcard_ok {
        return Err(rejected("wildcard names are not allowed here".into()));
    }
    Ok(v)
}

/// The profile must say who owns ACME certificates, or finalize could only violate foreign
/// keys (the reference's bug): refuse early with a clear problem instead.
fn check_profile_ready(p: &Profile) -> Result<(String, String, String, String), Problem> {
    let missing = |what: &str| {
        Problem::unauthorized(format!(
            "profile '{}' is not configured for ACME issuance: {what} is not set (ask the operator)",
            p.id
        ))
    };
    Ok((
        p.issuer_id.clone().ok_or_else(|| missing("issuer_id"))?,
        p.acme_owner_id.clone().ok_or_else(|| missing("acme_owner_id"))?,
        p.acme_team_id.clone().ok_or_else(|| missing("acme_team_id"))?,
        p.acme_renewal_policy_id.clone().ok_or_else(|| missing("acme_renewal_policy_id"))?,
    ))
}

fn parse_time(v: Option<&Value>, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| Problem::malformed(format!("{name} is not an RFC 3339 time"))),
        Some(_) => Err(Problem::malformed(format!("{name} must be a string"))),
    }
}

/// Counts an account's unfinished, unexpired orders (served by `idx_acme_orders_account_status`).
pub const PENDING_COUNT_SQL: &str = "SELECT count(*) FROM acme_orders
  WHERE account_id = $1 AND status IN ('pending', 'ready', 'processing') AND expires_at > now()";

/// Marks expired, unfinished orders that replace `$1` invalid (served by the partial unique
/// index `acme_orders_replaces_key`).
const EXPIRE_STALE_REPLACING_SQL: &str = "UPDATE acme_orders SET status = 'invalid', updated_at = now()
  WHERE replaces = $1 AND status IN ('pending', 'ready') AND expires_at <= now()";

/// A second order replacing the same certificate while the first is not `invalid` violates
/// `acme_orders_replaces_key`: 409 `alreadyReplaced` (RFC 9773 §5).
fn already_replaced(e: sqlx::Error) -> Problem {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("acme_orders_replaces_key") => {
            Problem::already_replaced("another order already replaces this certificate")
        }
        _ => e.into(),
    }
}

/// POST `new-order` (RFC 8555 §7.4).
pub async fn new_order(State(state): State<AppState>, signed: Signed) -> Result<Response, Problem> {
    let acct = signed.account()?.clone();
    let ctx = &signed.ctx;
    let profile = ctx.profile.clone();
    let payload = signed.payload()?.ok_or_else(|| Problem::malformed("new-order needs a JSON payload"))?;
    let ids = payload
        .get("identifiers")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Problem::malformed("identifiers must be a non-empty array"))?;
    let mut names = BTreeSet::new();
    for id in ids {
        let typ = id.get("type").and_then(Value::as_str).unwrap_or("");
        let value = id.get("value").and_then(Value::as_str).unwrap_or("");
        if typ != "dns" {
            return Err(Problem::new(
                ProblemKind::UnsupportedIdentifier,
                format!("identifier type '{typ}' is not supported"),
            ));
        }
        // Wildcards are allowed: their authorizations offer dns-01 (RFC 8555 §7.1.3).
        names.insert(normalize_dns(value, true)?);
    }
    if names.len() > usize::try_from(profile.max_sans).unwrap_or(0) {
        return Err(Problem::new(
            ProblemKind::RejectedIdentifier,
            format!("at most {} names per order under profile '{}'", profile.max_sans, profile.id),
        ));
    }
    // RFC 9773 §5: `replaces` names a certificate issued here that this order renews.
    let replaces = match payload.get("replaces") {
        None | Some(Value::Null) => None,
        Some(r) => {
            let id = r.as_str().ok_or_else(|| Problem::malformed("replaces must be a certID string"))?;
            Some(super::ari::check_replaces(&state.pool, id, &names).await?)
        }
    };
    // The directory advertises exactly one profile (`meta.profiles`); naming another is an error.
    if let Some(p) = payload.get("profile")
        && p.as_str() != Some(profile.id.as_str())
    {
        return Err(Problem::malformed(format!("this directory serves only profile '{}'", profile.id)));
    }
    let not_before = parse_time(payload.get("notBefore"), "notBefore")?;
    let not_after = parse_time(payload.get("notAfter"), "notAfter")?;
    check_profile_ready(&profile)?;

    // Contract §5: at most N concurrent pending orders per account (a count query, so it holds
    // across replicas), then the hourly sliding window.
    let (pending,): (i64,) = sqlx::query_as(PENDING_COUNT_SQL).bind(&acct.id).fetch_one(&state.pool).await?;
    let max_pending = state.acme.limiters.max_pending_orders;
    if max_pending > 0 && pending >= max_pending {
        return Err(Problem::rate_limited(
            format!("too many pending orders: at most {max_pending} per account; finalize or let them expire"),
            60,
        ));
    }
    check_limit(state.acme.limiters.orders.as_ref(), &acct.id, "new orders").await?;

    let trusted = profile.trust_authenticated;
    let order_id = new_id("ord-");
    let expires = Utc::now() + Duration::days(ORDER_LIFETIME_DAYS);
    let identifiers: Vec<Value> = names.iter().map(|n| json!({"type": "dns", "value": n})).collect();
    let mut tx = state.pool.begin().await?;
    if let Some(r) = &replaces {
        // An expired order that the GC has not swept yet no longer replaces anything.
        sqlx::query(EXPIRE_STALE_REPLACING_SQL).bind(r).execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO acme_orders (id, account_id, profile_id, status, identifiers, not_before, not_after, expires_at,
                                  replaces)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&order_id)
    .bind(&acct.id)
    .bind(&profile.id)
    .bind(if trusted { "ready" } else { "pending" })
    .bind(Value::Array(identifiers))
    .bind(not_before)
    .bind(not_after)
    .bind(expires)
    .bind(&replaces)
    .execute(&mut *tx)
    .await
    .map_err(already_replaced)?;
    for name in &names {
        let authz_id = new_id("authz-");
        let (wildcard, value) = match name.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, name.as_str()),
        };
        sqlx::query(
            "INSERT INTO acme_authorizations (id, order_id, account_id, identifier_value, wildcard, status, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&authz_id)
        .bind(&order_id)
        .bind(&acct.id)
        .bind(value)
        .bind(wildcard)
        .bind(if trusted { "valid" } else { "pending" })
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        // Challenge mode offers http-01 (not for wildcards, RFC 8555 §8.3) and dns-01; trusted
        // profiles record one already-valid challenge so the authorization reads naturally.
        let kinds: &[&str] = match (trusted, wildcard) {
            (true, true) => &["dns-01"],
            (true, false) => &["http-01"],
            (false, true) => &["dns-01"],
            (false, false) => &["http-01", "dns-01"],
        };
        for kind in kinds {
            sqlx::query(
                "INSERT INTO acme_challenges (id, authorization_id, type, token, status, validated_at)
                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 = 'valid' THEN now() END)",
            )
            .bind(new_id("chal-"))
            .bind(&authz_id)
            .bind(kind)
            .bind(super::challenge::new_token())
            .bind(if trusted { "valid" } else { "pending" })
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let order = load_own(&state.pool, &order_id, &acct).await?;
    let body = order_json(&state.pool, ctx, &order).await?;
    Ok(with_location((StatusCode::CREATED, axum::Json(body)).into_response(), &ctx.url_of("order", &order_id)))
}

fn path_id(params: &HashMap<String, String>) -> &str {
    params.get("id").map(String::as_str).unwrap_or("")
}

/// POST-as-GET `order/{id}` (RFC 8555 §7.4).
pub async fn get_order(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let acct = signed.account()?;
    signed.require_post_as_get()?;
    let order = load_own(&state.pool, path_id(&params), acct).await?;
    let body = order_json(&state.pool, &signed.ctx, &order).await?;
    Ok(axum::Json(body).into_response())
}

type AuthzRow = (String, String, String, bool, String, DateTime<Utc>, String);

/// Loads authorization `id` of `account`: `(id, order_id, identifier, wildcard, status, expires, account_id)`.
pub async fn load_authz(pool: &PgPool, id: &str, account: &Account) -> Result<AuthzRow, Problem> {
    let row: Option<AuthzRow> = sqlx::query_as(
        "SELECT id, order_id, identifier_value, wildcard, status, expires_at, account_id
           FROM acme_authorizations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.filter(|r| r.6 == account.id).ok_or_else(|| Problem::not_found(format!("no authorization '{id}'")))
}

/// The authorization object (RFC 8555 §7.1.4) of `a`.
pub async fn authz_json(pool: &PgPool, ctx: &Ctx, a: &AuthzRow) -> Result<Value, Problem> {
    let chals = super::challenge::load_for_authz(pool, &a.0).await?;
    let status = if a.4 == "pending" && a.5 <= Utc::now() { "expired" } else { a.4.as_str() };
    let mut v = json!({
        "identifier": {"type": "dns", "value": a.2},
        "status": status,
        "expires": ts(a.5),
        "challenges": chals.iter().map(|c| super::challenge::to_json(ctx, c)).collect::<Vec<_>>(),
    });
    if a.3 {
        v["wildcard"] = json!(true);
    }
    Ok(v)
}

/// POST `authz/{id}`: POST-as-GET, or `{"status":"deactivated"}` (RFC 8555 §7.5.2).
pub async fn authz(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let acct = signed.account()?;
    let mut a = load_authz(&state.pool, path_id(&params), acct).await?;
    if let Some(p) = signed.payload()? {
        if p.get("status").and_then(Value::as_str) != Some("deactivated") {
            return Err(Problem::malformed("the only update of an authorization is {\"status\":\"deactivated\"}"));
        }
        if !matches!(a.4.as_str(), "pending" | "valid") {
            return Err(Problem::malformed(format!("cannot deactivate a {} authorization", a.4)));
        }
        let mut tx = state.pool.begin().await?;
        sqlx::query("UPDATE acme_authorizations SET status = 'deactivated', updated_at = now() WHERE id = $1")
            .bind(&a.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE acme_orders SET status = 'invalid', updated_at = now() WHERE id = $1 AND status IN ('pending', 'ready')",
        )
        .bind(&a.1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        a.4 = "deactivated".into();
    }
    Ok(axum::Json(authz_json(&state.pool, &signed.ctx, &a).await?).into_response())
}

/// Profile key-algorithm name of a public key (`ECDSA-P256`, `RSA-2048`, `Ed25519`, …).
pub fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    use x509_parser::public_key::PublicKey;
    let oid = spki.algorithm.algorithm.to_id_string();
    if oid == "1.3.101.112" {
        return Some("Ed25519".into());
    }
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => Some(format!("RSA-{}", rsa.key_size())),
        PublicKey::EC(_) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok())?.to_id_string();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => Some("ECDSA-P256".into()),
                "1.3.132.0.34" => Some("ECDSA-P384".into()),
                "1.3.132.0.35" => Some("ECDSA-P521".into()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// What finalize takes from a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// Every name: the SAN dNSNames (or the subject CN when there are none), lower-cased.
    pub names: BTreeSet<String>,
    /// The first CN, if any.
    pub common_name: Option<String>,
    /// The key algorithm name.
    pub key_algorithm: String,
    /// The CSR's key as a JWK, when we can express it.
    pub jwk: Option<Jwk>,
}

/// Parses and checks a DER CSR (RFC 8555 §7.4, RFC 2986): signature, names, key type.
pub fn inspect_csr(der: &[u8]) -> Result<CsrInfo, Problem> {
    let bad = |m: String| Problem::new(ProblemKind::BadCsr, m);
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| bad(format!("CSR does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing data after the CSR".into()));
    }
    csr.verify_signature().map_err(|_| bad("CSR signature does not verify".into()))?;
    let info = &csr.certification_request_info;
    let mut names = BTreeSet::new();
    let mut cns = BTreeSet::new();
    let mut common_name = None;
    for cn in info.subject.iter_common_name() {
        let s = cn.as_str().map_err(|_| bad("CSR common name is not a string".into()))?.to_ascii_lowercase();
        common_name.get_or_insert_with(|| s.clone());
        cns.insert(s);
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(n) => {
                            names.insert(n.to_ascii_lowercase());
                        }
                        other => return Err(bad(format!("unsupported subjectAltName {other:?}"))),
                    }
                }
            }
        }
    }
    // The certificate carries the SANs (or the CN alone when there are none), so every CN must
    // also be a SAN, or the leaf would not cover a name the order asked for.
    if names.is_empty() {
        names = cns;
    } else if let Some(cn) = cns.iter().find(|cn| !names.contains(*cn)) {
        return Err(bad(format!("CSR common name {cn} is not among its subjectAltNames")));
    }
    if names.is_empty() {
        return Err(bad("CSR names no identifier".into()));
    }
    let spki = &info.subject_pki;
    let key_algorithm = key_algorithm(spki).ok_or_else(|| bad("unsupported CSR key type".into()))?;
    Ok(CsrInfo { names, common_name, key_algorithm, jwk: Jwk::from_spki(spki) })
}

fn order_names(o: &Order) -> BTreeSet<String> {
    o.identifiers
        .as_array()
        .map(|a| a.iter().filter_map(|i| i.get("value").and_then(Value::as_str)).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

/// POST `order/{id}/finalize` (RFC 8555 §7.4): checks the CSR against the order and the
/// profile, signs it with the profile's issuer, stores a managed certificate and its version,
/// and makes the order `valid`.
pub async fn finalize(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let acct = signed.account()?.clone();
    let ctx = signed.ctx.clone();
    let order = load_own(&state.pool, path_id(&params), &acct).await?;
    if order.status != "ready" {
        return Err(Problem::new(ProblemKind::OrderNotReady, format!("order is {}, not ready", order.status)));
    }
    let payload = signed.payload()?.ok_or_else(|| Problem::malformed("finalize needs {\"csr\": …}"))?;
    let der = payload
        .get("csr")
        .and_then(Value::as_str)
        .and_then(b64d)
        .ok_or_else(|| Problem::malformed("csr must be base64url DER"))?;
    let csr = inspect_csr(&der)?;
    let wanted = order_names(&order);
    if csr.names != wanted {
        return Err(Problem::new(
            ProblemKind::BadCsr,
            format!(
                "CSR names {:?} differ from the order's identifiers {:?}",
                csr.names.iter().collect::<Vec<_>>(),
                wanted.iter().collect::<Vec<_>>()
            ),
        ));
    }
    let profile = &ctx.profile;
    if !profile.allowed_key_algorithms.iter().any(|a| a.eq_ignore_ascii_case(&csr.key_algorithm)) {
        return Err(Problem::new(
            ProblemKind::BadCsr,
            format!(
                "key algorithm {} is not allowed by profile '{}' ({:?})",
                csr.key_algorithm, profile.id, profile.allowed_key_algorithms
            ),
        ));
    }
    // RFC 8555 §11.1: the certificate key must not be the account key.
    if csr.jwk.as_ref().is_some_and(|k| k.thumbprint() == acct.jwk.thumbprint()) {
        return Err(Problem::new(ProblemKind::BadCsr, "the CSR key must differ from the account key"));
    }
    let (issuer_id, owner_id, team_id, policy_id) = check_profile_ready(profile)?;

    // Claim the order: exactly one finalize proceeds, on any replica.
    let claimed = sqlx::query(
        "UPDATE acme_orders SET status = 'processing', updated_at = now() WHERE id = $1 AND status = 'ready' AND expires_at > now()",
    )
    .bind(&order.id)
    .execute(&state.pool)
    .await?;
    if claimed.rows_affected() == 0 {
        return Err(Problem::new(ProblemKind::OrderNotReady, "order is no longer ready"));
    }
    let csr_pem = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
    let result =
        issue(&state, &order, &csr, &csr_pem, (&issuer_id, &owner_id, &team_id, &policy_id), &profile.id).await;
    if let Err(e) = result {
        // Give the client another try with a better CSR (or after the CA recovers).
        let _ = sqlx::query(
            "UPDATE acme_orders SET status = 'ready', updated_at = now() WHERE id = $1 AND status = 'processing'",
        )
        .bind(&order.id)
        .execute(&state.pool)
        .await;
        return Err(e);
    }
    let order = load_own(&state.pool, &order.id, &acct).await?;
    let body = order_json(&state.pool, &ctx, &order).await?;
    Ok(with_location(axum::Json(body).into_response(), &ctx.url_of("order", &order.id)))
}

async fn issue(
    state: &AppState,
    order: &Order,
    csr: &CsrInfo,
    csr_pem: &str,
    (issuer_id, owner_id, team_id, policy_id): (&str, &str, &str, &str),
    profile_id: &str,
) -> Result<(), Problem> {
    use crate::issuance::IssuanceError;
    let signed = crate::issuance::sign_csr(state, issuer_id, Some(profile_id), csr_pem).await.map_err(|e| match e {
        IssuanceError::BadCsr(m) | IssuanceError::NotAllowed(m) => Problem::new(ProblemKind::BadCsr, m),
        IssuanceError::Name(e) => Problem::new(ProblemKind::RejectedIdentifier, e.to_string()),
        IssuanceError::NotFound(m) => Problem::unauthorized(format!("profile '{profile_id}' cannot issue: {m}")),
        other => Problem::internal(format!("issuance failed: {other}")),
    })?;
    let cert_id = new_id("mc-");
    let version_id = new_id("cv-");
    let names: Vec<&String> = csr.names.iter().collect();
    let common_name =
        csr.common_name.clone().unwrap_or_else(|| names.first().map(|s| s.to_string()).unwrap_or_default());
    let fk_problem = |e: sqlx::Error| -> Problem {
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("23503")
        {
            return Problem::unauthorized(format!(
                "profile '{profile_id}' refers to a missing owner, team, issuer or renewal policy ({})",
                db.constraint().unwrap_or("foreign key")
            ));
        }
        e.into()
    };
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "INSERT INTO managed_certificates (id, name, common_name, sans, owner_id, team_id, issuer_id, renewal_policy_id,
                                           certificate_profile_id, status, source, expires_at, last_renewal_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'Active', 'ACME', $10, now())",
    )
    .bind(&cert_id)
    .bind(format!("acme-{}", order.id))
    .bind(&common_name)
    .bind(&names)
    .bind(owner_id)
    .bind(team_id)
    .bind(issuer_id)
    .bind(policy_id)
    .bind(profile_id)
    .bind(signed.not_after)
    .execute(&mut *tx)
    .await
    .map_err(fk_problem)?;
    sqlx::query(
        "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after,
                                           fingerprint_sha256, pem_chain, csr_pem, key_algorithm)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&version_id)
    .bind(&cert_id)
    .bind(issuer_id)
    .bind(&signed.serial_hex)
    .bind(signed.not_before)
    .bind(signed.not_after)
    .bind(&signed.fingerprint_sha256)
    .bind(&signed.pem_chain)
    .bind(csr_pem)
    .bind(&csr.key_algorithm)
    .execute(&mut *tx)
    .await
    .map_err(fk_problem)?;
    sqlx::query(
        "UPDATE acme_orders SET status = 'valid', csr_pem = $2, certificate_id = $3, certificate_version_id = $4,
                                updated_at = now()
          WHERE id = $1",
    )
    .bind(&order.id)
    .bind(csr_pem)
    .bind(&cert_id)
    .bind(&version_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    super::audit(
        state,
        &order.account_id,
        "acme.certificate.issue",
        "certificates",
        &cert_id,
        json!({"order_id": order.id, "version_id": version_id, "serial": signed.serial_hex, "names": names, "profile_id": profile_id}),
    )
    .await;
    Ok(())
}

/// POST-as-GET `cert/{id}` (RFC 8555 §7.4.2): the PEM chain, leaf first.
pub async fn certificate(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let acct = signed.account()?;
    signed.require_post_as_get()?;
    let id = path_id(&params);
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT cv.pem_chain FROM acme_orders o JOIN certificate_versions cv ON cv.id = o.certificate_version_id
          WHERE o.certificate_version_id = $1 AND o.account_id = $2",
    )
    .bind(id)
    .bind(&acct.id)
    .fetch_optional(&state.pool)
    .await?;
    let (pem,) = row.ok_or_else(|| Problem::not_found(format!("no certificate '{id}'")))?;
    let mut resp = pem.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pem-certificate-chain"));
    Ok(resp)
}

/// Hex spellings a stored serial may have for the DER serial bytes `raw` (with or without the
/// sign byte, either case), for `serial_number = ANY(…)` lookups.
pub fn serial_candidates(raw: &[u8]) -> Vec<String> {
    let stripped: &[u8] = {
        let i = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
        &raw[i..]
    };
    let mut out = vec![hex::encode(raw), hex::encode(stripped)];
    let short = hex::encode(stripped).trim_start_matches('0').to_string();
    if !short.is_empty() {
        out.push(short);
    }
    let upper: Vec<String> = out.iter().map(|s| s.to_ascii_uppercase()).collect();
    out.extend(upper);
    out.sort();
    out.dedup();
    out
}

/// RFC 5280 §5.3.1 reason codes ACME clients may send (RFC 8555 §7.6). 7 is unused, and 8
/// (`removeFromCRL`) only ever appears in delta CRLs (RFC 5280 §5.3.1), so both are refused
/// with `badRevocationReason`.
fn reason_name(code: i64) -> Option<&'static str> {
    Some(match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => return None,
    })
}

/// POST `revoke-cert` (RFC 8555 §7.6): signed by the account that ordered the certificate
/// (`kid`), or by the certificate's own key (`jwk`).
pub async fn revoke(State(state): State<AppState>, signed: Signed) -> Result<Response, Problem> {
    let payload = signed.payload()?.ok_or_else(|| Problem::malformed("revoke-cert needs {\"certificate\": …}"))?;
    let der = payload
        .get("certificate")
        .and_then(Value::as_str)
        .and_then(b64d)
        .ok_or_else(|| Problem::malformed("certificate must be base64url DER"))?;
    let code = match payload.get("reason") {
        None | Some(Value::Null) => 0,
        Some(v) => {
            v.as_i64().ok_or_else(|| Problem::new(ProblemKind::BadRevocationReason, "reason must be an integer"))?
        }
    };
    let reason = reason_name(code).ok_or_else(|| {
        let why = if code == 8 { " (removeFromCRL is reserved for delta CRLs, RFC 5280 §5.3.1)" } else { "" };
        Problem::new(ProblemKind::BadRevocationReason, format!("reason code {code} is not allowed{why}"))
    })?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|_| Problem::malformed("certificate does not parse"))?;
    let fingerprint = hex::encode(Sha256::digest(&der));
    let candidates = serial_candidates(cert.tbs_certificate.raw_serial());
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT id, certificate_id, issuer_id, serial_number, fingerprint_sha256 FROM certificate_versions
          WHERE serial_number = ANY($1)",
    )
    .bind(&candidates)
    .fetch_all(&state.pool)
    .await?;
    let (version_id, cert_id, issuer_id, serial, _) = rows
        .into_iter()
        .find(|r| r.4.eq_ignore_ascii_case(&fingerprint))
        .ok_or_else(|| Problem::not_found("this server did not issue that certificate"))?;
    match &signed.account {
        Some(acct) => {
            let owns: Option<(String,)> =
                sqlx::query_as("SELECT id FROM acme_orders WHERE certificate_version_id = $1 AND account_id = $2")
                    .bind(&version_id)
                    .bind(&acct.id)
                    .fetch_optional(&state.pool)
                    .await?;
            if owns.is_none() {
                return Err(Problem::unauthorized("the account did not order this certificate"));
            }
        }
        None => {
            let cert_key = Jwk::from_spki(cert.public_key());
            if cert_key.map(|k| k.thumbprint()) != Some(signed.key.thumbprint()) {
                return Err(Problem::unauthorized("the JWS is not signed by the certificate's key"));
            }
        }
    }
    let mut tx = state.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO certificate_revocations (id, certificate_id, issuer_id, serial_number, reason, reason_code)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT ON CONSTRAINT certificate_revocations_issuer_serial_key DO NOTHING",
    )
    .bind(new_id("rev-"))
    .bind(&cert_id)
    .bind(&issuer_id)
    .bind(&serial)
    .bind(reason)
    .bind(i32::try_from(code).unwrap_or(0))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Problem::new(ProblemKind::AlreadyRevoked, "the certificate is already revoked"));
    }
    sqlx::query(
        "UPDATE managed_certificates SET status = 'Revoked', revoked_at = now(), revocation_reason = $2, updated_at = now()
          WHERE id = $1",
    )
    .bind(&cert_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let actor = signed.account.as_ref().map(|a| a.id.as_str()).unwrap_or("certificate-key");
    super::audit(
        &state,
        actor,
        "acme.certificate.revoke",
        "certificates",
        &cert_id,
        json!({"version_id": version_id, "serial": serial, "reason": reason}),
    )
    .await;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_validated_and_lower_cased() {
        assert_eq!(normalize_dns("WWW.Example.COM", false).expect("ok"), "www.example.com");
        assert!(normalize_dns("localhost", false).is_err());
        assert!(normalize_dns("-a.example.com", false).is_err());
        assert!(normalize_dns("a..example.com", false).is_err());
        assert!(normalize_dns("10.0.0.1", false).is_err());
        assert!(normalize_dns("*.example.com", false).is_err());
        assert_eq!(normalize_dns("*.example.com", true).expect("wild"), "*.example.com");
        assert!(normalize_dns("a b.example.com", false).is_err());
    }

    #[test]
    fn serial_candidates_cover_sign_byte_and_case() {
        let c = serial_candidates(&[0x00, 0x8a, 0x01]);
        assert!(c.contains(&"008a01".to_string()));
        assert!(c.contains(&"8a01".to_string()));
        assert!(c.contains(&"8A01".to_string()));
        let c = serial_candidates(&[0x05]);
        assert!(c.contains(&"05".to_string()) && c.contains(&"5".to_string()));
    }

    #[test]
    fn a_csr_from_rcgen_is_inspected() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example.com".into(), "b.example.com".into()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "a.example.com");
        let csr = params.serialize_request(&key).expect("csr");
        let info = inspect_csr(csr.der()).expect("inspect");
        assert_eq!(info.key_algorithm, "ECDSA-P256");
        assert_eq!(info.common_name.as_deref(), Some("a.example.com"));
        assert_eq!(info.names.len(), 2);
        assert!(info.jwk.is_some());
        assert_eq!(inspect_csr(b"garbage").expect_err("garbage").kind, ProblemKind::BadCsr);
    }
}

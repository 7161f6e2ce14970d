//! Accounts (RFC 8555 §7.3): creation and lookup by key, contact update, deactivation,
//! key rollover and the orders list.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::jws::{self, Jwk};
use super::problem::{AcmePath, Problem, ProblemKind};
use super::request::Signed;
use super::{Ctx, check_limit, new_id};
use crate::AppState;

/// An ACME account row.
#[derive(Debug, Clone)]
pub struct Account {
    /// Account id (the last segment of its URL).
    pub id: String,
    /// The profile it was created under.
    pub profile_id: String,
    /// Its public key.
    pub jwk: Jwk,
    /// `mailto:` contacts.
    pub contact: Vec<String>,
    /// `valid`, `deactivated` or `revoked`.
    pub status: String,
    /// Whether the client agreed to the terms of service.
    pub terms_agreed: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

type AccountRow = (String, String, Value, Vec<String>, String, bool, DateTime<Utc>);

fn from_row(r: AccountRow) -> Result<Account, Problem> {
    let jwk = Jwk::from_json(&r.2).map_err(|e| Problem::internal(format!("stored jwk of {} unreadable: {e}", r.0)))?;
    Ok(Account { id: r.0, profile_id: r.1, jwk, contact: r.3, status: r.4, terms_agreed: r.5, created_at: r.6 })
}

/// Loads account `id`.
pub async fn load(pool: &PgPool, id: &str) -> Result<Option<Account>, Problem> {
    let row: Option<AccountRow> = sqlx::query_as(
        "SELECT id, profile_id, jwk, contact, status, terms_agreed, created_at FROM acme_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

/// Loads the account of `profile_id` whose key has RFC 7638 thumbprint `thumbprint`.
pub async fn load_by_thumbprint(pool: &PgPool, profile_id: &str, thumbprint: &str) -> Result<Option<Account>, Problem> {
    let row: Option<AccountRow> = sqlx::query_as(
        "SELECT id, profile_id, jwk, contact, status, terms_agreed, created_at FROM acme_accounts
          WHERE profile_id = $1 AND jwk_thumbprint = $2",
    )
    .bind(profile_id)
    .bind(thumbprint)
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

/// The account object (RFC 8555 §7.1.2).
pub fn to_json(ctx: &Ctx, a: &Account) -> Value {
    json!({
        "status": a.status,
        "contact": a.contact,
        "termsOfServiceAgreed": a.terms_agreed,
        "orders": format!("{}/orders", ctx.url_of("account", &a.id)),
        "createdAt": super::ts(a.created_at),
    })
}

fn account_response(ctx: &Ctx, a: &Account, status: StatusCode) -> Response {
    let mut resp = (status, axum::Json(to_json(ctx, a))).into_response();
    if let Ok(v) = HeaderValue::from_str(&ctx.url_of("account", &a.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Validates `contact` (RFC 8555 §7.3: `mailto:` URLs only here).
fn parse_contacts(v: Option<&Value>) -> Result<Option<Vec<String>>, Problem> {
    let Some(v) = v else { return Ok(None) };
    let arr = v.as_array().ok_or_else(|| Problem::malformed("contact must be an array of URLs"))?;
    if arr.len() > 10 {
        return Err(Problem::new(ProblemKind::InvalidContact, "at most 10 contacts"));
    }
    let mut out = Vec::with_capacity(arr.len());
    for c in arr {
        let s = c.as_str().ok_or_else(|| Problem::malformed("contact must be an array of strings"))?;
        let Some(addr) = s.strip_prefix("mailto:") else {
            return Err(Problem::new(
                ProblemKind::UnsupportedContact,
                format!("only mailto: contacts are supported: '{s}'"),
            ));
        };
        let valid = addr.len() <= 254
            && !addr.contains([',', '?', ' ', '<', '>'])
            && addr.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
        if !valid {
            return Err(Problem::new(ProblemKind::InvalidContact, format!("'{s}' is not a valid email contact")));
        }
        out.push(s.to_string());
    }
    Ok(Some(out))
}

/// POST `new-account` (RFC 8555 §7.3): 201 for a new account, 200 with its `Location` for the
/// key's existing one; `onlyReturnExisting` never creates (§7.3.1).
pub async fn new_account(State(state): State<AppState>, signed: Signed) -> Result<Response, Problem> {
    let key = signed.require_jwk()?.clone();
    let payload = signed.payload()?.ok_or_else(|| Problem::malformed("new-account needs a JSON payload"))?;
    let obj = payload.as_object().ok_or_else(|| Problem::malformed("payload must be a JSON object"))?;
    let ctx = &signed.ctx;
    let thumbprint = key.thumbprint();
    if let Some(existing) = load_by_thumbprint(&state.pool, &ctx.profile.id, &thumbprint).await? {
        if existing.status != "valid" {
            return Err(Problem::account_not_valid(&existing.status));
        }
        return Ok(account_response(ctx, &existing, StatusCode::OK));
    }
    if obj.get("onlyReturnExisting").and_then(Value::as_bool) == Some(true) {
        return Err(Problem::new(ProblemKind::AccountDoesNotExist, "no account exists for this key"));
    }
    let contact = parse_contacts(obj.get("contact"))?.unwrap_or_default();
    let terms = obj.get("termsOfServiceAgreed").and_then(Value::as_bool).unwrap_or(false);
    let id = new_id("acct-");
    let inserted = sqlx::query(
        "INSERT INTO acme_accounts (id, profile_id, jwk_thumbprint, jwk, contact, terms_agreed)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT ON CONSTRAINT acme_accounts_profile_thumbprint_key DO NOTHING",
    )
    .bind(&id)
    .bind(&ctx.profile.id)
    .bind(&thumbprint)
    .bind(key.to_json())
    .bind(&contact)
    .bind(terms)
    .execute(&state.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        // A concurrent new-account with the same key won the race: return that account.
        let existing = load_by_thumbprint(&state.pool, &ctx.profile.id, &thumbprint)
            .await?
            .ok_or_else(|| Problem::internal("account vanished after a conflicting insert"))?;
        return Ok(account_response(ctx, &existing, StatusCode::OK));
    }
    let acct = load(&state.pool, &id).await?.ok_or_else(|| Problem::internal("new account not found"))?;
    super::audit(
        &state,
        &acct.id,
        "acme.account.create",
        "acme_accounts",
        &acct.id,
        json!({"profile_id": ctx.profile.id}),
    )
    .await;
    Ok(account_response(ctx, &acct, StatusCode::CREATED))
}

/// The signed request's account, which must be the one at `path_id` (RFC 8555 §7.3.2).
fn own_account<'a>(signed: &'a Signed, path_id: &str) -> Result<&'a Account, Problem> {
    let acct = signed.account()?;
    if acct.id != path_id {
        return Err(Problem::unauthorized("the request is signed by another account"));
    }
    Ok(acct)
}

/// POST `account/{id}`: POST-as-GET returns it; `contact` updates (§7.3.2);
/// `{"status":"deactivated"}` deactivates (§7.3.6).
pub async fn update_account(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let path_id = params.get("id").map(String::as_str).unwrap_or("");
    let acct = own_account(&signed, path_id)?.clone();
    let Some(payload) = signed.payload()? else {
        return Ok(account_response(&signed.ctx, &acct, StatusCode::OK));
    };
    let obj = payload.as_object().ok_or_else(|| Problem::malformed("payload must be a JSON object"))?;
    match obj.get("status").map(|s| s.as_str()) {
        None => {}
        Some(Some("deactivated")) => {
            sqlx::query("UPDATE acme_accounts SET status = 'deactivated', updated_at = now() WHERE id = $1")
                .bind(&acct.id)
                .execute(&state.pool)
                .await?;
            // RFC 8555 §7.3.6: pending authorizations of a deactivated account are deactivated.
            sqlx::query(
                "UPDATE acme_authorizations SET status = 'deactivated', updated_at = now()
                  WHERE account_id = $1 AND status IN ('pending', 'valid')",
            )
            .bind(&acct.id)
            .execute(&state.pool)
            .await?;
            super::audit(&state, &acct.id, "acme.account.deactivate", "acme_accounts", &acct.id, json!({})).await;
        }
        Some(Some("valid")) if acct.status == "valid" => {}
        Some(_) => return Err(Problem::malformed("the only status a client may set is 'deactivated'")),
    }
    if let Some(contact) = parse_contacts(obj.get("contact"))? {
        sqlx::query("UPDATE acme_accounts SET contact = $2, updated_at = now() WHERE id = $1")
            .bind(&acct.id)
            .bind(&contact)
            .execute(&state.pool)
            .await?;
    }
    let acct = load(&state.pool, &acct.id).await?.ok_or_else(|| Problem::internal("account vanished"))?;
    Ok(account_response(&signed.ctx, &acct, StatusCode::OK))
}

/// POST-as-GET `account/{id}/orders` (RFC 8555 §7.1.2.1): the account's unexpired orders.
pub async fn list_orders(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let acct = own_account(&signed, params.get("id").map(String::as_str).unwrap_or(""))?;
    signed.require_post_as_get()?;
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM acme_orders WHERE account_id = $1 AND (expires_at > now() OR status = 'valid')
          ORDER BY created_at DESC LIMIT 1000",
    )
    .bind(&acct.id)
    .fetch_all(&state.pool)
    .await?;
    let urls: Vec<String> = ids.iter().map(|(id,)| signed.ctx.url_of("order", id)).collect();
    Ok(axum::Json(json!({ "orders": urls })).into_response())
}

/// POST `key-change` (RFC 8555 §7.3.5): the payload is an inner JWS signed by the new key
/// (with `jwk`, same `url`), whose payload names the account and its old key.
pub async fn key_change(State(state): State<AppState>, signed: Signed) -> Result<Response, Problem> {
    let acct = signed.account()?.clone();
    check_limit(state.acme.limiters.key_changes.as_ref(), &acct.id, "key changes").await?;
    let outer_kid = signed.jws.header.kid.clone().unwrap_or_default();
    let inner_body = signed.payload()?.ok_or_else(|| Problem::malformed("key-change needs an inner JWS"))?;
    let inner = jws::parse(inner_body.to_string().as_bytes())?;
    let new_key =
        inner.header.jwk.clone().ok_or_else(|| Problem::malformed("the inner JWS must carry the new key as 'jwk'"))?;
    if inner.header.url != signed.jws.header.url {
        return Err(Problem::malformed("the inner JWS url must equal the outer url"));
    }
    inner.verify_with(&new_key)?;
    let p = inner.payload_json()?.ok_or_else(|| Problem::malformed("the inner JWS needs a payload"))?;
    if p.get("account").and_then(Value::as_str) != Some(outer_kid.as_str()) {
        return Err(Problem::malformed("inner payload 'account' must equal the outer kid"));
    }
    let old = Jwk::from_json(p.get("oldKey").unwrap_or(&Value::Null))?;
    if old.thumbprint() != acct.jwk.thumbprint() {
        return Err(Problem::unauthorized("oldKey is not the account's current key"));
    }
    let thumbprint = new_key.thumbprint();
    if let Some(other) = load_by_thumbprint(&state.pool, &acct.profile_id, &thumbprint).await? {
        let mut p = Problem::malformed("the new key is already in use by an account").with_status(StatusCode::CONFLICT);
        p.location = Some(signed.ctx.url_of("account", &other.id));
        return Err(p);
    }
    let res = sqlx::query("UPDATE acme_accounts SET jwk = $2, jwk_thumbprint = $3, updated_at = now() WHERE id = $1")
        .bind(&acct.id)
        .bind(new_key.to_json())
        .bind(&thumbprint)
        .execute(&state.pool)
        .await;
    match res {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            return Err(
                Problem::malformed("the new key is already in use by an account").with_status(StatusCode::CONFLICT)
            );
        }
        Err(e) => return Err(e.into()),
    }
    let acct = load(&state.pool, &acct.id).await?.ok_or_else(|| Problem::internal("account vanished"))?;
    super::audit(
        &state,
        &acct.id,
        "acme.account.key_change",
        "acme_accounts",
        &acct.id,
        json!({"thumbprint": thumbprint}),
    )
    .await;
    Ok(account_response(&signed.ctx, &acct, StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_must_be_mailto_addresses() {
        assert_eq!(parse_contacts(None).expect("none"), None);
        let ok = json!(["mailto:a@example.com"]);
        assert_eq!(parse_contacts(Some(&ok)).expect("ok"), Some(vec!["mailto:a@example.com".to_string()]));
        let tel = json!(["tel:+1"]);
        assert_eq!(parse_contacts(Some(&tel)).expect_err("tel").kind, ProblemKind::UnsupportedContact);
        let bad = json!(["mailto:nobody"]);
        assert_eq!(parse_contacts(Some(&bad)).expect_err("bad").kind, ProblemKind::InvalidContact);
        assert!(parse_contacts(Some(&json!("mailto:a@b.c"))).is_err());
    }
}

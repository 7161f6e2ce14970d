//! ACME Renewal Information (RFC 9773): `GET renewal-info/{certID}`, unauthenticated.
//!
//! certID = base64url(AKI keyIdentifier) "." base64url(serial number DER value bytes)
//! (RFC 9773 §4.1). The certificate is found by serial (indexed) and must have been issued by
//! the CA whose key identifier is the AKI. The suggested window comes from the certificate's
//! renewal policy: it starts `renewal_window_days` before `notAfter` (RFC 9773 §4.2).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::jws::b64d;
use super::order::serial_candidates;
use super::problem::{AcmePath, Problem};
use super::{Ctx, ts};
use crate::AppState;

/// How long clients should wait before asking again (RFC 9773 §4.3 `Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 6 * 3600;

/// Renewal window used when a certificate has no readable policy.
const DEFAULT_WINDOW_DAYS: i64 = 30;

/// A parsed certID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// The AuthorityKeyIdentifier keyIdentifier bytes.
    pub aki: Vec<u8>,
    /// The serial number's DER value bytes (with a sign byte when the high bit is set).
    pub serial: Vec<u8>,
}

/// Parses a certID (RFC 9773 §4.1). Never panics; anything malformed is `malformed`.
pub fn parse_cert_id(s: &str) -> Result<CertId, Problem> {
    let bad = |why: &str| Problem::malformed(format!("invalid certID: {why}"));
    let (a, b) = s.split_once('.').ok_or_else(|| bad("expected keyIdentifier.serial"))?;
    if b.contains('.') || a.contains('=') || b.contains('=') {
        return Err(bad("expected exactly two unpadded base64url parts"));
    }
    let aki =
        b64d(a).filter(|v| !v.is_empty() && v.len() <= 64).ok_or_else(|| bad("keyIdentifier is not base64url"))?;
    let serial = b64d(b).filter(|v| !v.is_empty() && v.len() <= 21).ok_or_else(|| bad("serial is not base64url"))?;
    // DER INTEGER value rules: positive (RFC 5280 §4.1.2.2), minimal encoding.
    if serial[0] & 0x80 != 0 {
        return Err(bad("serial is negative"));
    }
    if serial.len() > 1 && serial[0] == 0 && serial[1] & 0x80 == 0 {
        return Err(bad("serial is not minimally encoded"));
    }
    Ok(CertId { aki, serial })
}

/// The DNS names (subjectAltName dNSName, lower-cased) of a stored chain's leaf.
fn chain_leaf_names(pem_chain: &str) -> Vec<String> {
    use x509_parser::prelude::*;
    let Some(leaf) = ::pem::parse_many(pem_chain).ok().and_then(|p| p.into_iter().next()) else { return Vec::new() };
    let Ok((_, cert)) = X509Certificate::from_der(leaf.contents()) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Checks an order's `replaces` (RFC 9773 §5) against the certificates this server issued:
/// it must be a valid certID of a stored certificate (issued by the CA whose key identifier it
/// carries), and the order must share at least one identifier with that certificate — which
/// also refuses an account naming another account's unrelated certificate. Returns the certID
/// to store; "already replaced" is decided at insert time by a unique index, so it holds
/// across replicas.
pub async fn check_replaces(
    pool: &sqlx::PgPool,
    raw: &str,
    names: &std::collections::BTreeSet<String>,
) -> Result<String, Problem> {
    let id = parse_cert_id(raw)?;
    let rows: Vec<AriRow> = sqlx::query_as(LOOKUP_SQL).bind(serial_candidates(&id.serial)).fetch_all(pool).await?;
    let chain = rows
        .into_iter()
        .map(|r| r.2)
        .find(|chain| chain_aki(chain).is_some_and(|k| k == id.aki))
        .ok_or_else(|| Problem::malformed(format!("replaces: no certificate issued here has certID '{raw}'")))?;
    if !chain_leaf_names(&chain).iter().any(|n| names.contains(n)) {
        return Err(Problem::malformed(
            "replaces: the order shares no identifier with the certificate it would replace",
        ));
    }
    Ok(raw.to_string())
}

/// The issuing CA key identifier of a stored chain: the leaf's AKI keyIdentifier, else the
/// SKI of the next certificate in the chain.
fn chain_aki(pem_chain: &str) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let pems = ::pem::parse_many(pem_chain).ok()?;
    let leaf = pems.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.contents()).ok()?;
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityKeyIdentifier(aki) = ext.parsed_extension()
            && let Some(k) = &aki.key_identifier
        {
            return Some(k.0.to_vec());
        }
    }
    let (_, ca) = X509Certificate::from_der(pems.get(1)?.contents()).ok()?;
    ca.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// The suggested renewal window for a certificate (RFC 9773 §4.2): from `window_days` before
/// `not_after`, lasting a third of the window (at least a day, never past `not_after`); a
/// revoked certificate gets a window in the past (renew now).
pub fn suggested_window(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    window_days: i64,
    revoked: bool,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    if revoked {
        return (now - Duration::hours(2), now - Duration::hours(1));
    }
    let life = not_after - not_before;
    let window = Duration::days(window_days.max(0));
    if window >= life || window.is_zero() {
        // Policy window longer than the lifetime (or none): renew in the last third.
        let start = not_before + life * 2 / 3;
        return (start, start + life / 6);
    }
    let start = not_after - window;
    let len = (window / 3).max(Duration::days(1)).min(not_after - start);
    (start, start + len)
}

/// Finds certificate versions by serial spellings (`$1 text[]`); served by
/// `idx_certificate_versions_serial_number` (migration 0012).
pub const LOOKUP_SQL: &str = "SELECT cv.not_before, cv.not_after, cv.pem_chain, rp.renewal_window_days, mc.status
   FROM certificate_versions cv
   JOIN managed_certificates mc ON mc.id = cv.certificate_id
   LEFT JOIN renewal_policies rp ON rp.id = mc.renewal_policy_id
  WHERE cv.serial_number = ANY($1)";

/// `(not_before, not_after, pem_chain, renewal_window_days, certificate status)`.
type AriRow = (DateTime<Utc>, DateTime<Utc>, String, Option<i32>, String);

/// GET `renewal-info/{certID}`.
pub async fn renewal_info(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    _ctx: Ctx,
) -> Result<Response, Problem> {
    let raw = params.get("cert_id").map(String::as_str).unwrap_or("");
    let id = parse_cert_id(raw)?;
    let rows: Vec<AriRow> =
        sqlx::query_as(LOOKUP_SQL).bind(serial_candidates(&id.serial)).fetch_all(&state.pool).await?;
    let (nb, na, _, days, status) = rows
        .into_iter()
        .find(|r| chain_aki(&r.2).is_some_and(|k| k == id.aki))
        .ok_or_else(|| Problem::not_found("no certificate with this certID"))?;
    let (start, end) = suggested_window(
        nb,
        na,
        i64::from(days.unwrap_or(DEFAULT_WINDOW_DAYS as i32)),
        status == "Revoked",
        Utc::now(),
    );
    let mut resp = axum::Json(json!({ "suggestedWindow": { "start": ts(start), "end": ts(end) } })).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_ids_parse_per_rfc_9773() {
        // RFC 9773 §4.1 example: aki 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
        // serial 00:87:65:43:21.
        let id = parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").expect("example");
        assert_eq!(id.serial, vec![0x00, 0x87, 0x65, 0x43, 0x21]);
        assert_eq!(id.aki.len(), 20);
        for bad in
            ["", ".", "abc", "a.b.c", "aYhb=.AIdl", "!!.AIdlQyE", "aYhba4dGQEHhs3uEe6CuLN4ByNQ.", "AQ.gA", "AQ.AAE"]
        {
            assert!(parse_cert_id(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn the_window_starts_the_policy_days_before_expiry() {
        let nb = Utc::now();
        let na = nb + Duration::days(90);
        let (s, e) = suggested_window(nb, na, 30, false, nb);
        assert_eq!(s, na - Duration::days(30));
        assert_eq!(e, s + Duration::days(10));
        let (s, e) = suggested_window(nb, na, 120, false, nb);
        assert!(s > nb && e < na && s < e);
        let (s, e) = suggested_window(nb, na, 30, true, nb);
        assert!(e < nb && s < e);
    }

    mod prop {
        use super::super::*;
        use crate::acme::jws::b64e;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_cert_id_never_panics(s in "\\PC{0,120}") {
                let _ = parse_cert_id(&s);
            }

            #[test]
            fn ids_without_exactly_one_dot_are_rejected(s in "[A-Za-z0-9_-]{0,80}") {
                prop_assert!(parse_cert_id(&s).is_err());
                let three = format!("{s}.{s}.{s}");
                prop_assert!(parse_cert_id(&three).is_err());
            }

            #[test]
            fn valid_ids_round_trip(aki in proptest::collection::vec(any::<u8>(), 1..40), mut serial in proptest::collection::vec(any::<u8>(), 1..20)) {
                // Make the serial a minimal positive DER integer value.
                serial[0] &= 0x7f;
                if serial[0] == 0 && serial.len() > 1 { serial[1] |= 0x80; }
                let id = parse_cert_id(&format!("{}.{}", b64e(&aki), b64e(&serial))).expect("valid");
                prop_assert_eq!(id.aki, aki);
                prop_assert_eq!(id.serial, serial);
            }
        }
    }
}

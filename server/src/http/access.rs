//! The role matrix: which credential may call which operation, declared once for every route.
//!
//! [`ROUTES`] is the single table of `(method, route template, Access)`. It is read in three
//! places, so they cannot disagree:
//! - [`super::auth::middleware`] looks the matched route up ([`required`]) and refuses the call
//!   before any handler runs — no handler checks roles itself;
//! - [`super::openapi_document`] writes each operation's entry into the served OpenAPI document
//!   (`x-certctl-access` plus a sentence in the operation's description);
//! - the role-matrix tests compare the table with the router and call every route with each
//!   kind of credential.
//!
//! A route that is missing from the table is treated as [`Access::Admin`] (fail closed), and a
//! unit test fails on any documented operation without an entry, or any entry without a route.
//!
//! Why these roles: a non-admin key manages ordinary resources (certificates, agents, teams,
//! owners, jobs, notifications) but must not change *how the CA issues*. Profiles decide key
//! types, lifetimes, SAN limits, EKUs (codeSigning, OCSPSigning, timeStamping …) and the ACME
//! authorization mode; issuers decide which CA signs and for how long; renewal policies decide
//! when and how often certificates are re-issued. Writes to those three are admin-only, as is
//! the fleet-wide bulk revocation. Agent credentials reach only their own agent's routes.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::Method;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential needed.
    Public,
    /// Any API key, admin or not. Agent credentials are refused (401).
    AnyKey,
    /// An admin API key only; a non-admin key gets 403, an agent credential 401.
    Admin,
    /// The agent's own credential (the `{id}` in the path) or an admin key; a non-admin key
    /// gets 403, another agent's credential 401.
    Agent,
}

impl Access {
    /// The value of the `x-certctl-access` OpenAPI extension.
    pub fn name(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::AnyKey => "any-key",
            Access::Admin => "admin",
            Access::Agent => "agent",
        }
    }

    /// The sentence appended to the operation's OpenAPI description.
    pub fn sentence(self) -> &'static str {
        match self {
            Access::Public => "Access: public (no credential).",
            Access::AnyKey => "Access: any API key (admin or not); agent credentials are refused.",
            Access::Admin => "Access: admin API key only (a non-admin key gets 403).",
            Access::Agent => {
                "Access: the agent's own credential (for the `{id}` in the path) or an admin API key; \
                 a non-admin key gets 403."
            }
        }
    }
}

use Access::{Admin, Agent, AnyKey, Public};

/// Every routed operation and who may call it. `/metrics` and `/api/v1/metrics/prometheus`
/// are public unless `CERTCTL_METRICS_PUBLIC=false`, when any API key may read them.
pub const ROUTES: &[(&str, &str, Access)] = &[
    // Health and discovery.
    ("GET", "/health", Public),
    ("GET", "/ready", Public),
    ("GET", "/api/v1/version", Public),
    ("GET", "/api/v1/auth/info", Public),
    ("GET", "/metrics", AnyKey),
    ("GET", "/api/v1/metrics/prometheus", AnyKey),
    // Certificates.
    ("GET", "/api/v1/certificates", AnyKey),
    ("POST", "/api/v1/certificates", AnyKey),
    ("GET", "/api/v1/certificates/{id}", AnyKey),
    ("PUT", "/api/v1/certificates/{id}", AnyKey),
    ("DELETE", "/api/v1/certificates/{id}", AnyKey),
    ("GET", "/api/v1/certificates/{id}/versions", AnyKey),
    ("POST", "/api/v1/certificates/{id}/renew", AnyKey),
    ("POST", "/api/v1/certificates/{id}/revoke", AnyKey),
    ("POST", "/api/v1/certificates/bulk-renew", AnyKey),
    ("POST", "/api/v1/certificates/bulk-revoke", Admin),
    // Agents: management by key, the agent protocol by the agent itself.
    ("GET", "/api/v1/agents", AnyKey),
    ("POST", "/api/v1/agents", AnyKey),
    ("GET", "/api/v1/agents/{id}", AnyKey),
    ("DELETE", "/api/v1/agents/{id}", AnyKey),
    ("POST", "/api/v1/agents/{id}/heartbeat", Agent),
    ("GET", "/api/v1/agents/{id}/work", Agent),
    ("POST", "/api/v1/agents/{id}/csr", Agent),
    ("POST", "/api/v1/agents/{id}/jobs/{job_id}/status", Agent),
    // Jobs, notifications, audit, stats.
    ("GET", "/api/v1/jobs", AnyKey),
    ("GET", "/api/v1/jobs/{id}", AnyKey),
    ("POST", "/api/v1/jobs/{id}/cancel", AnyKey),
    ("GET", "/api/v1/notifications", AnyKey),
    ("GET", "/api/v1/notifications/{id}", AnyKey),
    ("POST", "/api/v1/notifications/{id}/read", AnyKey),
    ("POST", "/api/v1/notifications/{id}/requeue", AnyKey),
    ("GET", "/api/v1/audit", AnyKey),
    ("GET", "/api/v1/audit/{id}", AnyKey),
    ("GET", "/api/v1/stats/summary", AnyKey),
    // Organisation: teams and owners are ordinary data.
    ("GET", "/api/v1/teams", AnyKey),
    ("POST", "/api/v1/teams", AnyKey),
    ("GET", "/api/v1/teams/{id}", AnyKey),
    ("PUT", "/api/v1/teams/{id}", AnyKey),
    ("DELETE", "/api/v1/teams/{id}", AnyKey),
    ("GET", "/api/v1/owners", AnyKey),
    ("POST", "/api/v1/owners", AnyKey),
    ("GET", "/api/v1/owners/{id}", AnyKey),
    ("PUT", "/api/v1/owners/{id}", AnyKey),
    ("DELETE", "/api/v1/owners/{id}", AnyKey),
    // Issuance policy: readable by any key, changed by admins only.
    ("GET", "/api/v1/renewal-policies", AnyKey),
    ("POST", "/api/v1/renewal-policies", Admin),
    ("GET", "/api/v1/renewal-policies/{id}", AnyKey),
    ("PUT", "/api/v1/renewal-policies/{id}", Admin),
    ("DELETE", "/api/v1/renewal-policies/{id}", Admin),
    ("GET", "/api/v1/profiles", AnyKey),
    ("POST", "/api/v1/profiles", Admin),
    ("GET", "/api/v1/profiles/{id}", AnyKey),
    ("PUT", "/api/v1/profiles/{id}", Admin),
    ("DELETE", "/api/v1/profiles/{id}", Admin),
    ("GET", "/api/v1/issuers", AnyKey),
    ("POST", "/api/v1/issuers", Admin),
    ("GET", "/api/v1/issuers/{id}", AnyKey),
    ("PUT", "/api/v1/issuers/{id}", Admin),
    ("DELETE", "/api/v1/issuers/{id}", Admin),
];

/// [`ROUTES`] indexed by route template, then method (built once).
static INDEX: LazyLock<HashMap<&'static str, Vec<(&'static str, Access)>>> = LazyLock::new(|| {
    let mut index: HashMap<&'static str, Vec<(&'static str, Access)>> = HashMap::new();
    for (method, route, access) in ROUTES {
        index.entry(route).or_default().push((method, *access));
    }
    index
});

/// The table's entry for `method` on `route`, if any.
pub fn lookup(method: &str, route: &str) -> Option<Access> {
    INDEX.get(route)?.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// Who may call `method` on the matched `route` template. HEAD is answered by the GET handler,
/// so it needs what GET needs; anything not in the table needs an admin key (fail closed).
pub fn required(method: &Method, route: &str) -> Access {
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    lookup(method, route).unwrap_or(Admin)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every documented operation (both metrics settings) as `(METHOD, path)`.
    fn documented() -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for public in [true, false] {
            let doc = serde_json::to_value(crate::http::openapi_document(public)).unwrap_or_default();
            for (path, item) in doc["paths"].as_object().into_iter().flatten() {
                for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                    ops.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    #[test]
    fn every_documented_operation_has_exactly_one_entry_and_no_entry_is_stale() {
        let documented = documented();
        let table: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, r, _)| (m.to_string(), r.to_string())).collect();
        assert_eq!(table.len(), ROUTES.len(), "the table lists an operation twice");
        let missing: Vec<_> = documented.difference(&table).collect();
        assert!(missing.is_empty(), "operations without a role in http::access::ROUTES: {missing:?}");
        let stale: Vec<_> = table.difference(&documented).collect();
        assert!(stale.is_empty(), "role entries for operations that do not exist: {stale:?}");
    }

    #[test]
    fn unknown_routes_fail_closed_and_head_follows_get() {
        assert_eq!(required(&Method::GET, "/api/v1/new-thing"), Admin);
        assert_eq!(required(&Method::PATCH, "/api/v1/profiles/{id}"), Admin);
        assert_eq!(required(&Method::HEAD, "/api/v1/certificates"), AnyKey);
        assert_eq!(required(&Method::PUT, "/api/v1/profiles/{id}"), Admin);
        assert_eq!(required(&Method::POST, "/api/v1/agents/{id}/heartbeat"), Agent);
    }
}

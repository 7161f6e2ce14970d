//! Issuance: the local CA and the entry points other modules call to get certificates signed.
//!
//! Callers:
//! - the job processor (scheduler) issues server-keygen renewals;
//! - `POST /api/v1/agents/{id}/csr` completes an `AwaitingCSR` job with the agent's CSR
//!   ([`complete_job_with_csr`]);
//! - ACME finalize signs the order's CSR ([`sign_csr`]) and stores the version itself;
//! - the CRL loop and `GET /.well-known/pki/crl/{issuer_id}` ([`generate_crl`], [`current_crl`]),
//!   and the prompt re-sign after revocations ([`refresh_requested_crls`]).
//!
//! The CA itself lives in [`ca`] (created once per issuer, persisted, cached in
//! `AppState::cas`); stored private keys are sealed by [`crypto`].

pub mod ca;
pub mod crypto;
pub mod names;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rcgen::{KeyPair, PublicKeyData};
use sqlx::PgConnection;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::AppState;
use crate::http::error::ApiError;
pub use ca::{CaCache, LeafRequest, LocalCa};

/// A signed leaf certificate, ready to be stored as a `certificate_versions` row.
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    /// Serial number, lower-case hex without separators.
    pub serial_hex: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
    /// SHA-256 of the leaf's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// Leaf then issuing CA, PEM.
    pub pem_chain: String,
    /// The leaf's DER.
    pub leaf_der: Vec<u8>,
}

/// Why issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    /// The CSR could not be parsed or its signature does not verify.
    #[error("bad CSR: {0}")]
    BadCsr(String),
    /// The request is well-formed but the profile or issuer does not allow it.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// No such issuer, profile, certificate or job.
    #[error("{0}")]
    NotFound(String),
    /// A name the rules of [`names`] refuse, or more names than the profile's `max_sans`.
    #[error(transparent)]
    Name(#[from] names::NameError),
    /// The target is not in a state that allows this (e.g. no job awaiting a CSR).
    #[error("{0}")]
    Conflict(String),
    /// The CA itself failed.
    #[error("CA error: {0}")]
    Ca(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<IssuanceError> for ApiError {
    fn from(e: IssuanceError) -> Self {
        match e {
            IssuanceError::BadCsr(m) => ApiError::BadRequest(format!("bad CSR: {m}")),
            IssuanceError::NotAllowed(m) => ApiError::Unprocessable(m),
            IssuanceError::Name(e) => ApiError::Unprocessable(e.to_string()),
            IssuanceError::NotFound(m) => ApiError::NotFound(m),
            IssuanceError::Conflict(m) => ApiError::Conflict(m),
            IssuanceError::Ca(m) => ApiError::Internal(format!("CA: {m}")),
            IssuanceError::Db(e) => ApiError::from(e),
        }
    }
}

/// Largest `validity_days` an issuer or a profile accepts (write time, 422 beyond): the
/// lifetime of the local CA itself, which no leaf may outlive.
pub const MAX_VALIDITY_DAYS: i32 = ca::CA_VALIDITY_DAYS as i32;

/// Key algorithm used when a profile names none.
pub const DEFAULT_KEY_ALGORITHM: &str = "ECDSA-P256";

/// An issuer row, as issuance needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IssuerInfo {
    /// Issuer id.
    pub id: String,
    /// Issuer type (`GenericCA` = the local CA).
    pub r#type: String,
    /// Disabled issuers sign nothing.
    pub enabled: bool,
    /// Longest leaf lifetime this issuer grants.
    pub validity_days: i32,
    /// Subject CN of the CA certificate (from `config.common_name`).
    pub ca_common_name: String,
}

/// A profile row, as issuance needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileInfo {
    /// Leaf lifetime in days.
    pub validity_days: i32,
    /// EKU names put in every leaf.
    pub extended_key_usages: Vec<String>,
    /// Key algorithms a CSR may use (`ECDSA-P256`, `RSA-2048`, …).
    pub allowed_key_algorithms: Vec<String>,
    /// Algorithm of server-generated keys.
    pub default_key_algorithm: String,
    /// Most SAN entries allowed.
    pub max_sans: i32,
}

impl ProfileInfo {
    /// `max_sans` as a count (a negative value allows nothing).
    pub fn max_names(&self) -> usize {
        usize::try_from(self.max_sans).unwrap_or(0)
    }
}

/// Reads an issuer; `NotFound` when there is none.
pub async fn load_issuer(pool: &sqlx::PgPool, issuer_id: &str) -> Result<IssuerInfo, IssuanceError> {
    sqlx::query_as::<_, IssuerInfo>(
        "SELECT id, type, enabled, validity_days, \
                COALESCE(NULLIF(config->>'common_name', ''), name || ' CA') AS ca_common_name \
           FROM issuers WHERE id = $1",
    )
    .bind(issuer_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| IssuanceError::NotFound(format!("issuer '{issuer_id}' not found")))
}

async fn load_profile(pool: &sqlx::PgPool, profile_id: &str) -> Result<ProfileInfo, IssuanceError> {
    sqlx::query_as::<_, ProfileInfo>(
        "SELECT validity_days, extended_key_usages, allowed_key_algorithms, default_key_algorithm, max_sans \
           FROM certificate_profiles WHERE id = $1",
    )
    .bind(profile_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| IssuanceError::NotFound(format!("profile '{profile_id}' not found")))
}

/// The loaded local CA of `issuer` (created on first use), checking it may sign.
pub async fn local_ca(state: &AppState, issuer: &IssuerInfo) -> Result<Arc<LocalCa>, IssuanceError> {
    if issuer.r#type != ca::LOCAL_CA_TYPE {
        return Err(IssuanceError::NotAllowed(format!(
            "issuer '{}' has type '{}'; only the local CA ({}) signs in-process",
            issuer.id,
            issuer.r#type,
            ca::LOCAL_CA_TYPE
        )));
    }
    if !issuer.enabled {
        return Err(IssuanceError::NotAllowed(format!("issuer '{}' is disabled", issuer.id)));
    }
    state.cas.load(&state.pool, &issuer.id, &issuer.ca_common_name, state.config.config_encryption_key.as_deref()).await
}

/// Leaf lifetime: the profile's, never longer than the issuer allows.
fn validity_days(issuer: &IssuerInfo, profile: Option<&ProfileInfo>) -> i64 {
    let issuer_days = i64::from(issuer.validity_days);
    profile.map_or(issuer_days, |p| i64::from(p.validity_days).min(issuer_days))
}

fn ekus(profile: Option<&ProfileInfo>) -> Vec<String> {
    profile.map_or_else(|| vec!["serverAuth".to_string()], |p| p.extended_key_usages.clone())
}

/// A CSR after parsing and signature verification.
#[derive(Debug)]
pub struct ParsedCsr {
    /// Subject CN, if any.
    pub common_name: Option<String>,
    /// Requested DNS SANs.
    pub dns_names: Vec<String>,
    /// Requested IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// The key to certify.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// `ECDSA-P256`, `ECDSA-P384`, `RSA-2048`, `Ed25519`, …
    pub key_algorithm: String,
}

/// Parses a PEM CSR and verifies its self-signature (proof of possession).
pub fn parse_csr(csr_pem: &str) -> Result<ParsedCsr, IssuanceError> {
    let bad = |m: &str| IssuanceError::BadCsr(m.to_string());
    let block = pem::parse(csr_pem.trim()).map_err(|e| IssuanceError::BadCsr(format!("not PEM: {e}")))?;
    if !block.tag().ends_with("CERTIFICATE REQUEST") {
        return Err(IssuanceError::BadCsr(format!("PEM block is '{}', not CERTIFICATE REQUEST", block.tag())));
    }
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(block.contents())
        .map_err(|e| IssuanceError::BadCsr(format!("malformed: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the CSR"));
    }
    csr.verify_signature().map_err(|_| bad("signature does not verify"))?;
    let info = &csr.certification_request_info;
    let common_name =
        info.subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(|s| s.trim().to_string());
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => dns_names.push(d.to_ascii_lowercase()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).map_err(|_| bad("bad IP"))?)),
                            16 => ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(*b).map_err(|_| bad("bad IP"))?)),
                            _ => return Err(bad("IP address SAN of invalid length")),
                        },
                        other => return Err(IssuanceError::BadCsr(format!("unsupported SAN type {other:?}"))),
                    }
                }
            }
        }
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| IssuanceError::BadCsr(format!("unsupported public key: {e}")))?;
    let alg = public_key.algorithm();
    let key_algorithm = if *alg == rcgen::PKCS_ECDSA_P256_SHA256 {
        "ECDSA-P256".to_string()
    } else if *alg == rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA-P384".to_string()
    } else if *alg == rcgen::PKCS_ED25519 {
        "Ed25519".to_string()
    } else if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = info.subject_pki.parsed() {
        format!("RSA-{}", rsa.key_size())
    } else {
        return Err(bad("unsupported public key algorithm"));
    };
    Ok(ParsedCsr { common_name, dns_names, ip_addresses, public_key, key_algorithm })
}

fn check_key_algorithm(profile: Option<&ProfileInfo>, alg: &str) -> Result<(), IssuanceError> {
    match profile {
        Some(p) if !p.allowed_key_algorithms.iter().any(|a| a.eq_ignore_ascii_case(alg)) => {
            Err(IssuanceError::NotAllowed(format!("key algorithm {alg} is not allowed by the profile")))
        }
        _ => Ok(()),
    }
}

/// Signs `csr_pem` with issuer `issuer_id` under profile `profile_id` (validity, EKUs, SAN
/// limits). Does not store anything.
///
/// The leaf gets the CSR's SANs (or its CN as the only SAN when it has none), the profile's
/// EKUs and lifetime (capped at the issuer's), a random 159-bit serial, SKI and AKI. The CSR's
/// signature must verify, its key algorithm must be allowed by the profile, and the SAN count
/// must not exceed the profile's `max_sans`.
pub async fn sign_csr(
    state: &AppState,
    issuer_id: &str,
    profile_id: Option<&str>,
    csr_pem: &str,
) -> Result<SignedCertificate, IssuanceError> {
    let started = std::time::Instant::now();
    let issuer = load_issuer(&state.pool, issuer_id).await?;
    let result = async {
        let profile = match profile_id {
            Some(id) => Some(load_profile(&state.pool, id).await?),
            None => None,
        };
        let csr = parse_csr(csr_pem)?;
        check_key_algorithm(profile.as_ref(), &csr.key_algorithm)?;
        let mut dns = csr.dns_names.clone();
        let ips = csr.ip_addresses.clone();
        if dns.is_empty() && ips.is_empty() {
            match &csr.common_name {
                Some(cn) if !cn.is_empty() => dns.push(cn.to_ascii_lowercase()),
                _ => return Err(IssuanceError::BadCsr("CSR names no subject (no SAN and no CN)".into())),
            }
        }
        let max_sans = profile.as_ref().map(ProfileInfo::max_names);
        names::check_split(&dns, &ips, max_sans)?;
        let common_name = csr
            .common_name
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| dns.first().cloned())
            .or_else(|| ips.first().map(|i| i.to_string()))
            .unwrap_or_default();
        let req = LeafRequest {
            common_name,
            dns_names: dns,
            ip_addresses: ips,
            extended_key_usages: ekus(profile.as_ref()),
            validity_days: validity_days(&issuer, profile.as_ref()),
            max_sans,
        };
        let ca = local_ca(state, &issuer).await?;
        ca.issue(&req, &csr.public_key, Utc::now())
    }
    .await;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    state.metrics.record_issuance(&issuer.r#type, outcome, started.elapsed());
    result
}

/// Everything about a managed certificate that issuing for it needs (one query).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CertContext {
    /// Certificate id.
    pub id: String,
    /// Subject CN.
    pub common_name: String,
    /// SANs.
    pub sans: Vec<String>,
    /// Certificate status.
    pub status: String,
    /// Deploying agent, if any.
    pub agent_id: Option<String>,
    /// Issuer id.
    pub issuer_id: String,
    /// Issuer type.
    pub issuer_type: String,
    /// Issuer enabled.
    pub issuer_enabled: bool,
    /// Issuer maximum lifetime.
    pub issuer_validity_days: i32,
    /// CA subject CN.
    pub ca_common_name: String,
    /// Profile id, if any.
    pub profile_id: Option<String>,
    /// Profile lifetime.
    pub profile_validity_days: Option<i32>,
    /// Profile EKUs.
    pub extended_key_usages: Option<Vec<String>>,
    /// Profile allowed key algorithms.
    pub allowed_key_algorithms: Option<Vec<String>>,
    /// Profile default key algorithm.
    pub default_key_algorithm: Option<String>,
    /// Profile SAN cap.
    pub max_sans: Option<i32>,
}

impl CertContext {
    /// The issuer part.
    pub fn issuer(&self) -> IssuerInfo {
        IssuerInfo {
            id: self.issuer_id.clone(),
            r#type: self.issuer_type.clone(),
            enabled: self.issuer_enabled,
            validity_days: self.issuer_validity_days,
            ca_common_name: self.ca_common_name.clone(),
        }
    }

    /// The profile part, when the certificate has a profile.
    pub fn profile(&self) -> Option<ProfileInfo> {
        self.profile_id.as_ref()?;
        Some(ProfileInfo {
            validity_days: self.profile_validity_days.unwrap_or(self.issuer_validity_days),
            extended_key_usages: self.extended_key_usages.clone().unwrap_or_default(),
            allowed_key_algorithms: self.allowed_key_algorithms.clone().unwrap_or_default(),
            default_key_algorithm: self.default_key_algorithm.clone().unwrap_or_else(|| DEFAULT_KEY_ALGORITHM.into()),
            max_sans: self.max_sans.unwrap_or(100),
        })
    }

    /// The leaf this certificate should get: its CN and SANs (checked by [`names`], distinct,
    /// order kept, within the profile's `max_sans`), profile EKUs and lifetime. A row written
    /// before the name rules existed is refused here rather than signed.
    pub fn leaf_request(&self) -> Result<LeafRequest, IssuanceError> {
        let profile = self.profile();
        let max_sans = profile.as_ref().map(ProfileInfo::max_names);
        let (dns, ips) = names::check_all(
            std::iter::once(self.common_name.as_str()).chain(self.sans.iter().map(|s| s.as_str())),
            max_sans,
        )?;
        Ok(LeafRequest {
            common_name: self.common_name.clone(),
            dns_names: dns,
            ip_addresses: ips,
            extended_key_usages: ekus(profile.as_ref()),
            validity_days: validity_days(&self.issuer(), profile.as_ref()),
            max_sans,
        })
    }
}

/// The issuance contexts of the certificates `$1` (a text array).
const CERT_CONTEXT_SQL: &str = "SELECT c.id, c.common_name, c.sans, c.status, c.agent_id, c.issuer_id, \
        i.type AS issuer_type, i.enabled AS issuer_enabled, i.validity_days AS issuer_validity_days, \
        COALESCE(NULLIF(i.config->>'common_name', ''), i.name || ' CA') AS ca_common_name, \
        p.id AS profile_id, p.validity_days AS profile_validity_days, p.extended_key_usages, \
        p.allowed_key_algorithms, p.default_key_algorithm, p.max_sans \
   FROM managed_certificates c \
   JOIN issuers i ON i.id = c.issuer_id \
   LEFT JOIN certificate_profiles p ON p.id = c.certificate_profile_id \
  WHERE c.id = ANY($1)";

/// Loads the issuance context of certificate `certificate_id`.
pub async fn load_cert_context(
    conn: &mut PgConnection,
    certificate_id: &str,
) -> Result<Option<CertContext>, sqlx::Error> {
    sqlx::query_as::<_, CertContext>(CERT_CONTEXT_SQL).bind([certificate_id]).fetch_optional(conn).await
}

/// Loads the issuance contexts of many certificates in one query, by certificate id (ids that
/// do not exist are absent).
pub async fn load_cert_contexts(
    pool: &sqlx::PgPool,
    certificate_ids: &[&str],
) -> Result<std::collections::HashMap<String, CertContext>, sqlx::Error> {
    let rows = sqlx::query_as::<_, CertContext>(CERT_CONTEXT_SQL).bind(certificate_ids).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|c| (c.id.clone(), c)).collect())
}

/// Generates a key pair for a profile algorithm name (`ECDSA-P256` when empty).
pub fn generate_key(algorithm: &str) -> Result<KeyPair, IssuanceError> {
    let err = |e: rcgen::Error| IssuanceError::Ca(format!("key generation ({algorithm}): {e}"));
    match algorithm.to_ascii_uppercase().as_str() {
        "" | "ECDSA-P256" | "EC-P256" | "P256" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err),
        "ECDSA-P384" | "EC-P384" | "P384" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(err),
        "ED25519" => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err),
        "RSA-2048" => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).map_err(err),
        "RSA-3072" => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072).map_err(err),
        "RSA-4096" => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096).map_err(err),
        other => Err(IssuanceError::NotAllowed(format!("unknown key algorithm '{other}'"))),
    }
}

/// One issued version to store.
#[derive(Debug)]
pub struct NewVersion<'a> {
    /// Certificate it belongs to.
    pub certificate_id: &'a str,
    /// Signing issuer.
    pub issuer_id: &'a str,
    /// The signed leaf.
    pub signed: &'a SignedCertificate,
    /// The agent's CSR, when there was one.
    pub csr_pem: Option<&'a str>,
    /// Key algorithm name.
    pub key_algorithm: &'a str,
    /// Server-generated key as stored (sealed when an encryption key is configured).
    pub private_key_pem: Option<&'a str>,
    /// Issuing job.
    pub job_id: Option<&'a str>,
}

/// Stores a version, sets the certificate `Active` with the new expiry, and returns the
/// version id. Runs on the caller's transaction so it commits together with the job.
pub async fn store_version(
    conn: &mut PgConnection,
    v: &NewVersion<'_>,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let mut ids = store_versions(conn, std::slice::from_ref(v), now).await?;
    Ok(ids.pop().unwrap_or_default())
}

/// [`store_version`] for many versions (of distinct certificates) with two statements: one
/// multi-row INSERT and one UPDATE, each column travelling as one array parameter. Returns the
/// version ids in order.
pub async fn store_versions<'a>(
    conn: &mut PgConnection,
    versions: &'a [NewVersion<'a>],
    now: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    if versions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = versions.iter().map(|_| format!("cv-{}", uuid::Uuid::new_v4().simple())).collect();
    let col = |f: fn(&'a NewVersion<'a>) -> Option<&'a str>| versions.iter().map(f).collect::<Vec<Option<&str>>>();
    let certs = col(|v| Some(v.certificate_id));
    let not_after: Vec<DateTime<Utc>> = versions.iter().map(|v| v.signed.not_after).collect();
    sqlx::query(
        "INSERT INTO certificate_versions (id, certificate_id, issuer_id, serial_number, not_before, not_after, \
                 fingerprint_sha256, pem_chain, csr_pem, key_algorithm, private_key_pem, job_id, created_at) \
         SELECT id, certificate_id, issuer_id, serial_number, not_before, not_after, fingerprint_sha256, pem_chain, \
                csr_pem, key_algorithm, private_key_pem, job_id, $13 \
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], \
                       $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) \
             AS t(id, certificate_id, issuer_id, serial_number, not_before, not_after, fingerprint_sha256, \
                  pem_chain, csr_pem, key_algorithm, private_key_pem, job_id)",
    )
    .bind(&ids)
    .bind(&certs)
    .bind(col(|v| Some(v.issuer_id)))
    .bind(col(|v| Some(v.signed.serial_hex.as_str())))
    .bind(versions.iter().map(|v| v.signed.not_before).collect::<Vec<_>>())
    .bind(&not_after)
    .bind(col(|v| Some(v.signed.fingerprint_sha256.as_str())))
    .bind(col(|v| Some(v.signed.pem_chain.as_str())))
    .bind(col(|v| v.csr_pem))
    .bind(col(|v| Some(v.key_algorithm)))
    .bind(col(|v| v.private_key_pem))
    .bind(col(|v| v.job_id))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE managed_certificates c SET status = 'Active', expires_at = t.not_after, last_renewal_at = $3, \
                updated_at = $3 \
           FROM UNNEST($1::text[], $2::timestamptz[]) AS t(id, not_after) \
          WHERE c.id = t.id",
    )
    .bind(&certs)
    .bind(&not_after)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(ids)
}

/// Completes the agent's `AwaitingCSR` job for `certificate_id` with `csr_pem`: signs it,
/// stores the version, sets the certificate `Active`, completes the job. Returns the job id.
///
/// The CSR supplies the key (and proves possession); the names come from the managed
/// certificate, and a CSR asking for a name the certificate does not have is refused. A
/// refused CSR leaves the job `AwaitingCSR`, so the agent can post a corrected one.
/// Errors: `NotFound` (no such certificate), `Conflict` (no job of this agent awaits a CSR
/// for it), `BadCsr`, `NotAllowed`.
pub async fn complete_job_with_csr(
    state: &AppState,
    agent_id: &str,
    certificate_id: &str,
    csr_pem: &str,
) -> Result<String, IssuanceError> {
    let started = std::time::Instant::now();
    let mut tx = state.pool.begin().await?;
    let ctx = load_cert_context(&mut tx, certificate_id)
        .await?
        .ok_or_else(|| IssuanceError::NotFound(format!("certificate '{certificate_id}' not found")))?;
    // Lock the job so a concurrent second CSR (or the timeout sweep) waits for this one.
    let job_id: Option<String> = sqlx::query_scalar(
        "SELECT j.id FROM jobs j \
          WHERE j.certificate_id = $1 AND j.status = 'AwaitingCSR' AND j.type IN ('Issuance', 'Renewal') \
            AND (j.agent_id = $2 OR (j.agent_id IS NULL AND $3::text = $2)) \
          ORDER BY j.created_at LIMIT 1 FOR UPDATE",
    )
    .bind(certificate_id)
    .bind(agent_id)
    .bind(ctx.agent_id.as_deref())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job_id) = job_id else {
        return Err(IssuanceError::Conflict(format!(
            "no job of agent '{agent_id}' is awaiting a CSR for certificate '{certificate_id}'"
        )));
    };
    let result = async {
        let csr = parse_csr(csr_pem)?;
        let profile = ctx.profile();
        check_key_algorithm(profile.as_ref(), &csr.key_algorithm)?;
        let req = ctx.leaf_request()?;
        for name in &csr.dns_names {
            if !req.dns_names.contains(name) {
                return Err(IssuanceError::NotAllowed(format!(
                    "CSR names '{name}', which the certificate does not have"
                )));
            }
        }
        for ip in &csr.ip_addresses {
            if !req.ip_addresses.contains(ip) {
                return Err(IssuanceError::NotAllowed(format!(
                    "CSR names '{ip}', which the certificate does not have"
                )));
            }
        }
        let ca = local_ca(state, &ctx.issuer()).await?;
        Ok((ca.issue(&req, &csr.public_key, Utc::now())?, csr.key_algorithm))
    }
    .await;
    let (signed, key_algorithm) = match result {
        Ok(v) => v,
        Err(e) => {
            state.metrics.record_issuance(&ctx.issuer_type, "failure", started.elapsed());
            return Err(e);
        }
    };
    let now = Utc::now();
    let version = NewVersion {
        certificate_id,
        issuer_id: &ctx.issuer_id,
        signed: &signed,
        csr_pem: Some(csr_pem),
        key_algorithm: &key_algorithm,
        private_key_pem: None,
        job_id: Some(&job_id),
    };
    store_version(&mut tx, &version, now).await?;
    sqlx::query(
        "UPDATE jobs SET status = 'Completed', completed_at = $2, last_error = NULL, updated_at = $2 WHERE id = $1",
    )
    .bind(&job_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    crate::notify::enqueue(
        &mut tx,
        crate::notify::EVENT_ISSUED,
        Some(certificate_id),
        &format!("Certificate {} renewed", ctx.common_name),
        &format!(
            "Certificate {certificate_id} ({}) was issued, serial {}, valid until {}.",
            ctx.common_name, signed.serial_hex, signed.not_after
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    state.metrics.record_issuance(&ctx.issuer_type, "success", started.elapsed());
    state.metrics.record_job(true);
    Ok(job_id)
}

/// `thisUpdate` and `nextUpdate` of a CRL signed at `now` (whole seconds): the next one is due
/// after two CRL intervals, at least one hour. Checked throughout: an interval or a time no date
/// can hold is an error, never a panic.
pub fn crl_window(
    now: DateTime<Utc>,
    crl_interval: std::time::Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), IssuanceError> {
    let this_update = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let lifetime = crl_interval
        .checked_mul(2)
        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
        .map(|d| d.max(chrono::TimeDelta::hours(1)))
        .ok_or_else(|| IssuanceError::Ca(format!("CRL interval {crl_interval:?} is out of range")))?;
    let next_update = this_update
        .checked_add_signed(lifetime)
        .ok_or_else(|| IssuanceError::Ca(format!("CRL nextUpdate after {this_update} is out of range")))?;
    Ok((this_update, next_update))
}

/// Re-signs the CRL of `issuer_id` from `certificate_revocations` and stores it in
/// `issuer_crls` with the next CRL number. Returns the DER.
pub async fn generate_crl(state: &AppState, issuer_id: &str, now: DateTime<Utc>) -> Result<Vec<u8>, IssuanceError> {
    let issuer = load_issuer(&state.pool, issuer_id).await?;
    let ca = local_ca(state, &issuer).await?;
    let revoked: Vec<(String, DateTime<Utc>, i32)> = sqlx::query_as(
        "SELECT serial_number, revoked_at, reason_code FROM certificate_revocations WHERE issuer_id = $1 ORDER BY revoked_at",
    )
    .bind(issuer_id)
    .fetch_all(&state.pool)
    .await?;
    let mut tx = state.pool.begin().await?;
    // Serialise CRL numbering per issuer; the advisory lock also covers the very first CRL,
    // when there is no row to lock yet.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('certctl-crl:' || $1, 0))")
        .bind(issuer_id)
        .execute(&mut *tx)
        .await?;
    let last: Option<i64> = sqlx::query_scalar("SELECT crl_number FROM issuer_crls WHERE issuer_id = $1")
        .bind(issuer_id)
        .fetch_optional(&mut *tx)
        .await?;
    let number = last.unwrap_or(0).checked_add(1).ok_or_else(|| IssuanceError::Ca("CRL number exhausted".into()))?;
    let (this_update, next_update) = crl_window(now, state.config.crl_interval)?;
    let der = ca.sign_crl(number, &revoked, this_update, next_update)?;
    sqlx::query(
        "INSERT INTO issuer_crls (issuer_id, crl_number, crl_der, this_update, next_update, created_at) \
         VALUES ($1, $2, $3, $4, $5, $4) \
         ON CONFLICT (issuer_id) DO UPDATE SET crl_number = EXCLUDED.crl_number, crl_der = EXCLUDED.crl_der, \
             this_update = EXCLUDED.this_update, next_update = EXCLUDED.next_update, created_at = EXCLUDED.created_at",
    )
    .bind(issuer_id)
    .bind(number)
    .bind(&der)
    .bind(this_update)
    .bind(next_update)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(der)
}

/// The stored CRL of `issuer_id`, signing a first one if there is none yet. `NotFound` for an
/// unknown issuer, `NotAllowed` for an issuer that is not the local CA.
pub async fn current_crl(state: &AppState, issuer_id: &str) -> Result<Vec<u8>, IssuanceError> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT crl_der FROM issuer_crls WHERE issuer_id = $1")
        .bind(issuer_id)
        .fetch_optional(&state.pool)
        .await?;
    match stored {
        Some(der) => Ok(der),
        None => generate_crl(state, issuer_id, Utc::now()).await,
    }
}

/// The issuers whose revocations asked for a CRL re-sign (`crl_refresh_requests`, written by
/// a trigger on `certificate_revocations`), with the request generation seen.
const CRL_REFRESH_PENDING_SQL: &str = "SELECT issuer_id, generation FROM crl_refresh_requests ORDER BY requested_at";

/// Deletes a served request unless a newer revocation bumped its generation meanwhile.
const CRL_REFRESH_DONE_SQL: &str = "DELETE FROM crl_refresh_requests WHERE issuer_id = $1 AND generation = $2";

/// The prompt CRL refresh (the `crl_refresh` loop, leader only): re-signs the CRL of every
/// issuer with revocations since its last refresh — once, however many revocations there were
/// — and clears the requests it served. A request whose issuer cannot publish a CRL here (not
/// the local CA, or gone) is dropped; one that failed otherwise stays for the next tick.
/// Returns how many CRLs were signed.
pub async fn refresh_requested_crls(state: &AppState, now: DateTime<Utc>) -> Result<usize, IssuanceError> {
    let pending: Vec<(String, i64)> = sqlx::query_as(CRL_REFRESH_PENDING_SQL).fetch_all(&state.pool).await?;
    let mut done = 0;
    for (issuer_id, generation) in pending {
        match generate_crl(state, &issuer_id, now).await {
            Ok(_) => done += 1,
            Err(IssuanceError::NotFound(_) | IssuanceError::NotAllowed(_)) => {}
            Err(e) => {
                tracing::warn!(issuer = %issuer_id, error = %e, "prompt CRL refresh failed; retrying next tick");
                continue;
            }
        }
        sqlx::query(CRL_REFRESH_DONE_SQL).bind(&issuer_id).bind(generation).execute(&state.pool).await?;
    }
    Ok(done)
}

/// Re-signs the CRL of every enabled local-CA issuer (the CRL loop). Returns how many.
pub async fn generate_all_crls(state: &AppState, now: DateTime<Utc>) -> Result<usize, IssuanceError> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM issuers WHERE type = $1 AND enabled ORDER BY id")
        .bind(ca::LOCAL_CA_TYPE)
        .fetch_all(&state.pool)
        .await?;
    let mut done = 0;
    for id in ids {
        match generate_crl(state, &id, now).await {
            Ok(_) => done += 1,
            Err(e) => tracing::warn!(issuer = %id, error = %e, "CRL generation failed"),
        }
    }
    Ok(done)
}

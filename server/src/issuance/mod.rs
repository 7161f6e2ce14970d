//! Issuance: the local CA and the entry points other modules call to get certificates signed.
//!
//! Callers:
//! - the job processor (scheduler) issues server-keygen renewals;
//! - `POST /api/v1/agents/{id}/csr` completes an `AwaitingCSR` job with the agent's CSR
//!   ([`complete_job_with_csr`]);
//! - ACME finalize signs the order's CSR ([`sign_csr`]) and stores the version itself.

use chrono::{DateTime, Utc};

use crate::AppState;
use crate::http::error::ApiError;

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
            IssuanceError::NotFound(m) => ApiError::NotFound(m),
            IssuanceError::Conflict(m) => ApiError::Conflict(m),
            IssuanceError::Ca(m) => ApiError::Internal(format!("CA: {m}")),
            IssuanceError::Db(e) => ApiError::from(e),
        }
    }
}

/// Signs `csr_pem` with issuer `issuer_id` under profile `profile_id` (validity, EKUs, SAN
/// limits). Does not store anything.
pub async fn sign_csr(
    state: &AppState,
    issuer_id: &str,
    profile_id: Option<&str>,
    csr_pem: &str,
) -> Result<SignedCertificate, IssuanceError> {
    let _ = (state, issuer_id, profile_id, csr_pem);
    Err(IssuanceError::Ca("the local CA is not wired in yet".into()))
}

/// Completes the agent's `AwaitingCSR` job for `certificate_id` with `csr_pem`: signs it,
/// stores the version, sets the certificate `Active`, completes the job. Returns the job id.
pub async fn complete_job_with_csr(
    state: &AppState,
    agent_id: &str,
    certificate_id: &str,
    csr_pem: &str,
) -> Result<String, IssuanceError> {
    let _ = (state, agent_id, certificate_id, csr_pem);
    Err(IssuanceError::Ca("the local CA is not wired in yet".into()))
}

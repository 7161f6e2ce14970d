//! The local CA of a `GenericCA` issuer: created once, persisted in `issuer_ca_keys`, shared
//! by every replica, cached per process, and the leaf/CRL signing built on it.
//!
//! First use of an issuer: generate a P-256 CA key and self-signed certificate, then
//! `INSERT … ON CONFLICT DO NOTHING` and read the row back. Two replicas booting at once both
//! insert; one wins, both read the winner's row, so every replica signs with one key and the
//! loser's freshly generated key is simply dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::RwLock;

use super::crypto;
use super::{IssuanceError, SignedCertificate};

/// Issuer type served by the built-in local CA.
pub const LOCAL_CA_TYPE: &str = "GenericCA";

/// Lifetime of a newly created CA certificate; no leaf outlives its CA, so this is also the
/// largest `validity_days` an issuer or profile accepts ([`super::MAX_VALIDITY_DAYS`]).
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// A loaded local CA, ready to sign.
pub struct LocalCa {
    /// The issuer row this CA belongs to.
    pub issuer_id: String,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// End of the CA certificate's validity: no leaf outlives it.
    pub not_after: DateTime<Utc>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("issuer_id", &self.issuer_id).field("not_after", &self.not_after).finish()
    }
}

/// Per-process cache of loaded CAs (lives in `AppState`), so signing does not re-read and
/// re-decrypt the CA key on every issuance.
#[derive(Debug, Default)]
pub struct CaCache {
    cas: RwLock<HashMap<String, Arc<LocalCa>>>,
}

impl CaCache {
    /// The cached CA of `issuer_id`, if loaded.
    pub async fn get(&self, issuer_id: &str) -> Option<Arc<LocalCa>> {
        self.cas.read().await.get(issuer_id).cloned()
    }

    /// Loads (creating on first use) the CA of `issuer_id` and caches it.
    pub async fn load(
        &self,
        pool: &PgPool,
        issuer_id: &str,
        common_name: &str,
        secret: Option<&str>,
    ) -> Result<Arc<LocalCa>, IssuanceError> {
        if let Some(ca) = self.get(issuer_id).await {
            return Ok(ca);
        }
        let ca = Arc::new(load_or_create(pool, issuer_id, common_name, secret, Utc::now()).await?);
        // Another task may have loaded it meanwhile; both loaded the same row, keep the first.
        let mut map = self.cas.write().await;
        Ok(map.entry(issuer_id.to_string()).or_insert(ca).clone())
    }
}

fn ca_err(e: impl std::fmt::Display) -> IssuanceError {
    IssuanceError::Ca(e.to_string())
}

/// Converts a chrono time to the `time` type rcgen uses (whole seconds, as X.509 encodes).
/// X.509 times are UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5), four-digit years: a time
/// outside years 0–9999 is an error here, before the encoder would panic on it.
pub(crate) fn to_offset(t: DateTime<Utc>) -> Result<time::OffsetDateTime, IssuanceError> {
    use chrono::Datelike;
    if !(0..=9999).contains(&t.year()) {
        return Err(IssuanceError::Ca(format!("{t} cannot be encoded in an X.509 certificate or CRL")));
    }
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(ca_err)
}

/// A random positive 159-bit serial (RFC 5280 §4.1.2.2: at most 20 octets, positive; CA/B
/// Forum: at least 64 random bits). The top bit is cleared (positive, no DER padding byte) and
/// the next one set, so every serial is exactly 20 octets / 159 bits.
pub fn random_serial() -> Vec<u8> {
    let mut bytes: [u8; 20] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    bytes.to_vec()
}

async fn load_or_create(
    pool: &PgPool,
    issuer_id: &str,
    common_name: &str,
    secret: Option<&str>,
    now: DateTime<Utc>,
) -> Result<LocalCa, IssuanceError> {
    if let Some(ca) = read_ca(pool, issuer_id, secret).await? {
        return Ok(ca);
    }
    let (cert_pem, key_pem) = new_ca_material(common_name, now)?;
    let (stored_key, encrypted) = crypto::seal_optional(secret, &key_pem).map_err(ca_err)?;
    sqlx::query(
        "INSERT INTO issuer_ca_keys (issuer_id, cert_pem, key_pem, key_encrypted) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (issuer_id) DO NOTHING",
    )
    .bind(issuer_id)
    .bind(&cert_pem)
    .bind(&stored_key)
    .bind(encrypted)
    .execute(pool)
    .await?;
    read_ca(pool, issuer_id, secret).await?.ok_or_else(|| IssuanceError::Ca("CA row vanished after insert".into()))
}

async fn read_ca(pool: &PgPool, issuer_id: &str, secret: Option<&str>) -> Result<Option<LocalCa>, IssuanceError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT cert_pem, key_pem FROM issuer_ca_keys WHERE issuer_id = $1")
            .bind(issuer_id)
            .fetch_optional(pool)
            .await?;
    let Some((cert_pem, stored_key)) = row else { return Ok(None) };
    let key_pem = crypto::decrypt(secret, &stored_key).map_err(ca_err)?;
    LocalCa::from_pem(issuer_id, cert_pem, &key_pem).map(Some)
}

fn new_ca_material(common_name: &str, now: DateTime<Utc>) -> Result<(String, String), IssuanceError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "certctl");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let out_of_range = || IssuanceError::Ca(format!("CA validity from {now} is out of range"));
    let start = now.checked_sub_signed(chrono::TimeDelta::hours(1)).ok_or_else(out_of_range)?;
    let end = chrono::TimeDelta::try_days(CA_VALIDITY_DAYS)
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(out_of_range)?;
    params.not_before = to_offset(start)?;
    params.not_after = to_offset(end)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.key_identifier_method = KeyIdMethod::Sha256;
    let cert = params.self_signed(&key).map_err(ca_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What a leaf certificate must contain.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// Subject common name.
    pub common_name: String,
    /// DNS names for the SAN extension.
    pub dns_names: Vec<String>,
    /// IP addresses for the SAN extension.
    pub ip_addresses: Vec<IpAddr>,
    /// EKU names from the profile (`serverAuth`, `clientAuth`, …).
    pub extended_key_usages: Vec<String>,
    /// Requested lifetime in days.
    pub validity_days: i64,
    /// The profile's SAN cap, when there is a profile.
    pub max_sans: Option<usize>,
}

/// Maps a profile's EKU name to rcgen's purpose.
pub fn eku(name: &str) -> Result<ExtendedKeyUsagePurpose, IssuanceError> {
    Ok(match name.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
        "serverauth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientauth" => ExtendedKeyUsagePurpose::ClientAuth,
        "codesigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "emailprotection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocspsigning" => ExtendedKeyUsagePurpose::OcspSigning,
        _ => return Err(IssuanceError::NotAllowed(format!("unknown extended key usage '{name}' in profile"))),
    })
}

impl LocalCa {
    /// A CA from its certificate and (clear) private key, PEM.
    pub fn from_pem(issuer_id: &str, cert_pem: String, key_pem: &str) -> Result<LocalCa, IssuanceError> {
        let key = KeyPair::from_pem(key_pem).map_err(ca_err)?;
        let cert_der = pem::parse(&cert_pem).map_err(ca_err)?.into_contents();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(ca_err)?;
        let not_after = DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
            .ok_or_else(|| IssuanceError::Ca("CA notAfter out of range".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key).map_err(ca_err)?;
        Ok(LocalCa { issuer_id: issuer_id.to_string(), cert_pem, cert_der, not_after, issuer })
    }

    /// A new, unstored CA valid from `now` for [`CA_VALIDITY_DAYS`] (what the first use of an
    /// issuer persists; also what tests sign with).
    pub fn generate(issuer_id: &str, common_name: &str, now: DateTime<Utc>) -> Result<LocalCa, IssuanceError> {
        let (cert_pem, key_pem) = new_ca_material(common_name, now)?;
        LocalCa::from_pem(issuer_id, cert_pem, &key_pem)
    }

    /// The validity of a leaf signed at `now` for `validity_days` (at least one day): from `now`
    /// (whole seconds) to `now + validity_days`, never past the CA's own end. Every step is
    /// checked: a lifetime beyond what a date can hold is simply capped at the CA's end, and a
    /// CA that has already expired is an error, never a panic.
    pub fn leaf_validity(
        &self,
        validity_days: i64,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), IssuanceError> {
        let not_before = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let end = chrono::TimeDelta::try_days(validity_days.max(1)).and_then(|d| not_before.checked_add_signed(d));
        let not_after = end.map_or(self.not_after, |end| end.min(self.not_after));
        if not_after <= not_before {
            return Err(IssuanceError::Ca(format!(
                "the CA of issuer '{}' is valid only until {}; it cannot sign at {not_before}",
                self.issuer_id, self.not_after
            )));
        }
        Ok((not_before, not_after))
    }

    /// Signs a leaf for `public_key` at `now`. Pure CPU work (no I/O).
    pub fn issue(
        &self,
        req: &LeafRequest,
        public_key: &impl PublicKeyData,
        now: DateTime<Utc>,
    ) -> Result<SignedCertificate, IssuanceError> {
        // Every signature passes here, whichever path asked for it (agent CSR, server keygen,
        // ACME finalize): the name rules and the SAN cap are checked once more on what is signed.
        super::names::check_split(&req.dns_names, &req.ip_addresses, req.max_sans)?;
        let (not_before, not_after) = self.leaf_validity(req.validity_days, now)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.common_name.as_str());
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for name in &req.dns_names {
            sans.push(SanType::DnsName(
                name.clone().try_into().map_err(|_| IssuanceError::BadCsr(format!("invalid DNS name '{name}'")))?,
            ));
        }
        sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        // ExplicitNoCa writes basicConstraints CA:FALSE and, with it, the SKI extension.
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = req.extended_key_usages.iter().map(|n| eku(n)).collect::<Result<_, _>>()?;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        let cert = params.signed_by(public_key, &self.issuer).map_err(ca_err)?;
        let der = cert.der().to_vec();
        Ok(SignedCertificate {
            serial_hex: hex::encode(&serial),
            not_before,
            not_after,
            fingerprint_sha256: hex::encode(Sha256::digest(&der)),
            pem_chain: format!("{}{}", cert.pem(), self.cert_pem),
            leaf_der: der,
        })
    }

    /// Signs a CRL listing `revoked` (serial hex, revocation time, RFC 5280 reason code).
    pub fn sign_crl(
        &self,
        crl_number: i64,
        revoked: &[(String, DateTime<Utc>, i32)],
        this_update: DateTime<Utc>,
        next_update: DateTime<Utc>,
    ) -> Result<Vec<u8>, IssuanceError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for (serial_hex, at, code) in revoked {
            let Ok(serial) = hex::decode(serial_hex) else {
                tracing::warn!(issuer = %self.issuer_id, serial = %serial_hex, "skipping revocation with a non-hex serial");
                continue;
            };
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: to_offset(*at)?,
                reason_code: reason(*code),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: to_offset(this_update)?,
            next_update: to_offset(next_update)?,
            crl_number: SerialNumber::from(u64::try_from(crl_number).unwrap_or(0)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer).map_err(ca_err)?.der().to_vec())
    }
}

/// RFC 5280 §5.3.1 reason codes; unknown codes are listed without a reason.
fn reason(code: i32) -> Option<RevocationReason> {
    Some(match code {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_and_exactly_159_bits() {
        for _ in 0..200 {
            let s = random_serial();
            assert_eq!(s.len(), 20);
            assert_eq!(s[0] & 0x80, 0);
            assert_eq!(s[0] & 0x40, 0x40);
        }
    }

    #[test]
    fn profile_eku_names_map_to_purposes() {
        assert!(matches!(eku("serverAuth"), Ok(ExtendedKeyUsagePurpose::ServerAuth)));
        assert!(matches!(eku("client_auth"), Ok(ExtendedKeyUsagePurpose::ClientAuth)));
        assert!(eku("bogus").is_err());
    }
}

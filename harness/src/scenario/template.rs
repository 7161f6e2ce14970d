//! Request templates: the per-request values a scenario file can use.
//!
//! Placeholders (expanded in `path` and `body`):
//! - `{seq}` — the request's sequence number within its label (0, 1, 2, …);
//! - `{run}` — a tag unique to this run, so names created by one run never collide with an
//!   earlier run's rows against the same database (`managed_certificates.name` is unique);
//! - `{agent_id}` — fleet agent `loadtest-agent-NNNNN`, rotating over the fleet; a request with
//!   `auth = "agent"` carries that agent's credential (see [`agent_token`]);
//! - `{cert_batch}` — a JSON array of `batch` fleet certificate ids, rotating over the fleet so
//!   consecutive requests name consecutive batches;
//! - `{ari_cert_id}` — an RFC 9773 certID (`base64url(AKI keyIdentifier) "." base64url(serial)`)
//!   that is well-formed but names no certificate the server issued. The server answers 404 for
//!   it, which `acme_burst` declares the expected status: the load measures the lookup path
//!   without needing an ACME enrollment first (the fleet certificates have no issued version
//!   until the scheduler renews them).
//!
//! The id and credential schemes here must match `seeds/*.sql`.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Fleet sizes the templates rotate over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    /// Seeded `loadtest-bulk-NNNNN` certificates.
    pub certs: u64,
    /// Seeded `loadtest-agent-NNNNN` agents.
    pub agents: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet { certs: 10_000, agents: 5_000 }
    }
}

/// Id (and name) of fleet certificate `n` (1-based), as `seeds/01_bulk_renewal_certs.sql` makes it.
pub fn cert_id(n: u64) -> String {
    format!("loadtest-bulk-{n:05}")
}

/// Id (and name) of fleet agent `n` (1-based), as `seeds/02_agent_fleet.sql` makes it.
pub fn agent_id(n: u64) -> String {
    format!("loadtest-agent-{n:05}")
}

/// Bearer credential of fleet agent `n`: the seed stores
/// `encode(sha256(convert_to('loadtest-agent-credential-' || n, 'UTF8')), 'hex')`.
pub fn agent_token(n: u64) -> String {
    format!("loadtest-agent-credential-{n}")
}

/// The fleet agent a request with sequence `seq` uses (1-based).
pub fn agent_for(seq: u64, fleet: Fleet) -> u64 {
    seq % fleet.agents.max(1) + 1
}

/// An RFC 9773 certID no certificate has: constant AKI, serial derived from `seq`.
pub fn ari_cert_id(seq: u64) -> String {
    let aki = Sha256::digest(b"certctl-loadtest ari aki");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A leading 0x01 keeps the DER INTEGER positive and non-minimal-zero.
    let mut serial = vec![0x01];
    serial.extend_from_slice(&seq.to_be_bytes());
    format!("{}.{}", b64.encode(&aki[..20]), b64.encode(serial))
}

/// What a template needs to expand.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Sequence number within the label.
    pub seq: u64,
    /// Run tag.
    pub run: &'a str,
    /// Fleet sizes.
    pub fleet: Fleet,
    /// Batch size for `{cert_batch}`.
    pub batch: usize,
}

/// Expands the placeholders of `template`.
pub fn expand(template: &str, ctx: &Context<'_>) -> String {
    if !template.contains('{') {
        return template.to_string();
    }
    let mut out = template.replace("{seq}", &ctx.seq.to_string()).replace("{run}", ctx.run);
    if out.contains("{agent_id}") {
        out = out.replace("{agent_id}", &agent_id(agent_for(ctx.seq, ctx.fleet)));
    }
    if out.contains("{ari_cert_id}") {
        out = out.replace("{ari_cert_id}", &ari_cert_id(ctx.seq));
    }
    if out.contains("{cert_batch}") {
        let certs = ctx.fleet.certs.max(1);
        let batch = ctx.batch.max(1) as u64;
        let ids: Vec<String> =
            (0..batch).map(|j| format!("\"{}\"", cert_id((ctx.seq.wrapping_mul(batch) + j) % certs + 1))).collect();
        out = out.replace("{cert_batch}", &format!("[{}]", ids.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(seq: u64) -> Context<'static> {
        Context { seq, run: "r1", fleet: Fleet { certs: 250, agents: 3 }, batch: 100 }
    }

    #[test]
    fn agent_ids_rotate_over_the_fleet() {
        let t = "/api/v1/agents/{agent_id}/heartbeat";
        assert_eq!(expand(t, &ctx(0)), "/api/v1/agents/loadtest-agent-00001/heartbeat");
        assert_eq!(expand(t, &ctx(3)), "/api/v1/agents/loadtest-agent-00001/heartbeat");
        assert_eq!(agent_token(agent_for(2, ctx(2).fleet)), "loadtest-agent-credential-3");
    }

    #[test]
    fn cert_batches_are_consecutive_and_wrap() {
        let b: serde_json::Value = serde_json::from_str(&expand("{cert_batch}", &ctx(2))).unwrap();
        let ids = b.as_array().unwrap();
        assert_eq!(ids.len(), 100);
        assert_eq!(ids[0], "loadtest-bulk-00201");
        assert_eq!(ids[49], "loadtest-bulk-00250");
        assert_eq!(ids[50], "loadtest-bulk-00001");
    }

    #[test]
    fn ari_cert_ids_are_two_base64url_parts() {
        let id = ari_cert_id(7);
        let (a, s) = id.split_once('.').unwrap();
        assert_eq!(a.len(), 27);
        assert!(!s.is_empty() && !id.contains('='));
        assert_ne!(ari_cert_id(8), id);
    }
}

//! The `agent_work` flow: what a certctl agent does with the answer of a work poll.
//!
//! For every job the poll hands out (the fleet agent is the one the slot's `{agent_id}` names,
//! authenticated with its own credential):
//! - an `Issuance`/`Renewal` job in `AwaitingCSR`: generate a fresh ECDSA P-256 key and a
//!   PKCS#10 CSR for the job's common name and SANs on the client (`csr_generate`, a CLIENT
//!   label), then `POST /api/v1/agents/{id}/csr` (`csr_submit`, 202: the server signs and
//!   completes the job);
//! - a `Deployment` job (claimed `Running` by the poll itself): "deploy" it and report
//!   `POST /api/v1/agents/{id}/jobs/{job_id}/status` `{"status":"Completed"}` (`status_report`,
//!   200; the server stamps the certificate's `last_deployed_at`).
//!
//! CSRs are handled before deployments, as an agent renews before it deploys. The private key
//! never leaves the client — as with a real agent — and is dropped after the CSR is built.
//! Where the jobs come from is `seeds/03_agent_fleet_work.sql` (see the scenario file).

use std::time::Instant;

use goose::prelude::GooseUser;
use serde_json::{Value, json};

use super::{FlowCtx, Send, send};
use crate::scenario::template::{self, Context};

/// The flow's name in scenario files.
pub const FLOW: &str = "agent_work";
/// Follow-up labels it records.
pub const FOLLOW_UPS: &[&str] = &["csr_generate", "csr_submit", "status_report"];

/// Polls for work (request `i`), then acts on every job returned.
pub async fn run(user: &mut GooseUser, ctx: &FlowCtx<'_>, i: usize, seq: u64, intended: Instant, started: Instant) {
    let Some(req) = ctx.requests.get(i) else { return };
    let tctx = Context { seq, run: &ctx.cfg.run_tag, fleet: ctx.cfg.fleet, batch: 1 };
    let n = template::agent_for(seq, ctx.cfg.fleet);
    let token = template::agent_token(n);
    let path = template::expand(&req.path, &tctx);
    let Some(answer) =
        send(user, ctx, Send { label: i, url: &path, bearer: Some(&token), body: None, intended, started }).await
    else {
        return;
    };
    let jobs = answer.json().get("jobs").and_then(Value::as_array).cloned().unwrap_or_default();
    if jobs.is_empty() {
        return;
    }
    let (Some(gen_i), Some(csr_i), Some(status_i)) =
        (ctx.index("csr_generate"), ctx.index("csr_submit"), ctx.index("status_report"))
    else {
        return;
    };
    let csr_path = ctx.requests.get(csr_i).map(|r| template::expand(&r.path, &tctx)).unwrap_or_default();
    let status_tpl = ctx.requests.get(status_i).map(|r| template::expand(&r.path, &tctx)).unwrap_or_default();
    let field = |j: &Value, k: &str| j.get(k).and_then(Value::as_str).unwrap_or_default().to_string();

    for job in jobs.iter().filter(|j| field(j, "status") == "AwaitingCSR") {
        let t = Instant::now();
        let sans: Vec<String> = job
            .get("sans")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let csr = build_csr(&field(job, "common_name"), &sans);
        ctx.record_client(gen_i, t, csr.is_some());
        let Some(csr_pem) = csr else { continue };
        let body = json!({"csr_pem": csr_pem, "certificate_id": field(job, "certificate_id")}).to_string();
        let now = Instant::now();
        let s = Send {
            label: csr_i,
            url: &csr_path,
            bearer: Some(&token),
            body: Some(("application/json", body)),
            intended: now,
            started: now,
        };
        send(user, ctx, s).await;
    }
    for job in jobs.iter().filter(|j| field(j, "type") == "Deployment") {
        let url = status_tpl.replace("{job_id}", &field(job, "id"));
        let now = Instant::now();
        let s = Send {
            label: status_i,
            url: &url,
            bearer: Some(&token),
            body: Some(("application/json", json!({"status": "Completed"}).to_string())),
            intended: now,
            started: now,
        };
        send(user, ctx, s).await;
    }
}

/// A PEM CSR for `common_name` and `sans` with a fresh P-256 key (what the agent generates
/// locally), or `None` when the names cannot go into a CSR. Runs inline: P-256 key generation
/// and one signature take well under a millisecond, far less than blocking-pool hand-off noise.
pub fn build_csr(common_name: &str, sans: &[String]) -> Option<String> {
    let mut names: Vec<String> = sans.to_vec();
    if names.is_empty() && !common_name.is_empty() {
        names.push(common_name.to_string());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).ok()?;
    let mut params = rcgen::CertificateParams::new(names).ok()?;
    if !common_name.is_empty() {
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    }
    params.serialize_request(&key).ok()?.pem().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_is_built_for_the_jobs_names() {
        let pem = build_csr("a.loadtest.example", &["a.loadtest.example".into()]).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }
}

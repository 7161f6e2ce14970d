//! The multi-replica invariants of `run --replicas N`, checked against the database after
//! the load (contract §7: each job processed once, shared rate limits exact).
//!
//! - `job_processed_once`: no `certificate_versions.job_id` appears twice; every Issuance/
//!   Renewal job completed during the run has exactly one version; no version belongs to a job
//!   that is not `Completed`; every such job was claimed by one of the run's replicas (the
//!   detail shows how the work spread over them).
//! - `renewed_once_per_job`: the versions created by the jobs completed during the run equal
//!   the number of those jobs, and no certificate got two versions from one job. (Counted
//!   through the job join rather than by `created_at`, so a transaction straddling the window's
//!   edge cannot make the counts differ by one.)
//! - `replicas_share_the_limiter`: every server process runs with
//!   `CERTCTL_RATELIMIT_BACKEND=postgres` and its own `CERTCTL_INSTANCE_ID` (read from
//!   `/proc/<pid>/environ`).
//! - `shared_rate_limit_exact`: an active probe of the shared budget over HTTP, as ACME
//!   clients see it. The postgres-backed limits are the ACME per-account ones; the probe takes
//!   the key-change limit ([`PROBE_CAP`] per account per hour, contract §5): it registers one
//!   fresh account (ES256, the enrollment flow's [`AccountKey`]), takes one nonce per call, then
//!   fires [`PROBE_CALLS`] signed `key-change` requests at once, spread round-robin over the
//!   probe URLs — every replica directly, or the balancer in front of them. The limiter runs
//!   before the request's payload is looked at, and the probe's payload is deliberately not a
//!   valid inner JWS, so an admitted call answers `400 malformed` (and changes nothing) and a
//!   limited one `429 rateLimited`. Exactly [`PROBE_CAP`] must be admitted, every other answer
//!   must be `rateLimited`, and exactly [`PROBE_CAP`] timestamps must be stored in the
//!   account's `rate_limit_buckets` row. Per-replica (memory) limiters would admit up to
//!   N × [`PROBE_CAP`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::HarnessError;
use crate::report::summary::{Invariant, Replicas};
use crate::scenario::engine::is_acme_rate_limited;
use crate::scenario::flows::acme::AccountKey;

/// Signed key-change calls the rate-limit probe fires at once.
pub const PROBE_CALLS: usize = 30;
/// The server's key-change limit per account per hour (contract §5), which the probe checks.
pub const PROBE_CAP: i64 = 5;
/// The ACME profile the probe registers its account under (the demo seed's test profile).
pub const PROBE_PROFILE: &str = "prof-test";
/// The limiter namespace of key changes (`rate_limit_buckets.bucket_key` = `<namespace>:<account id>`).
const KEY_CHANGE_NAMESPACE: &str = "acme-key-changes";
/// The problem an admitted probe call gets (RFC 8555 §6.7).
const MALFORMED: &str = "urn:ietf:params:acme:error:malformed";

fn db(e: sqlx::Error) -> HarnessError {
    HarnessError::Database(e.to_string())
}

/// The database's clock (the invariants' window is measured on it, as the servers' rows are).
pub async fn db_now(pool: &PgPool) -> Result<DateTime<Utc>, HarnessError> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await.map_err(db)
}

/// The servers of a `--replicas N` run and how the load reached them.
#[derive(Debug, Clone, Copy)]
pub struct Topology<'a> {
    /// `CERTCTL_INSTANCE_ID` of every server.
    pub instance_ids: &'a [String],
    /// Every server's pid.
    pub pids: &'a [u32],
    /// Every server's own base URL (their `/metrics` say what each served).
    pub replica_urls: &'a [String],
    /// Where the rate-limit probe goes: the replicas' URLs, or the balancer's.
    pub probe_urls: &'a [String],
    /// How the load was balanced (for the report).
    pub balancer: &'a str,
    /// The admin key (`/metrics` needs it).
    pub api_key: Option<&'a str>,
}

/// Checks every invariant for the window from `from` until now, then reads what each
/// replica served.
pub async fn check(pool: &PgPool, from: DateTime<Utc>, t: Topology<'_>) -> Result<Replicas, HarnessError> {
    let to = db_now(pool).await?;
    let invariants = vec![
        job_processed_once(pool, from, to, t.instance_ids).await?,
        renewed_once_per_job(pool, from, to).await?,
        replicas_share_the_limiter(t.pids),
        shared_rate_limit_exact(pool, t.probe_urls).await?,
    ];
    let mut served = Vec::new();
    for url in t.replica_urls {
        served.push(served_requests(url, t.api_key).await);
    }
    Ok(Replicas {
        count: t.instance_ids.len().max(t.pids.len()),
        invariants,
        balancer: Some(t.balancer.to_string()),
        served_requests: served,
    })
}

/// Requests the server at `url` has answered, from its `/metrics` (the sum of
/// `certctl_http_request_duration_seconds_count` over every route but the balancer's
/// `/ready` checks and `/metrics` itself); `None` when it cannot be read.
pub async fn served_requests(url: &str, api_key: Option<&str>) -> Option<u64> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
    let mut rb = client.get(format!("{url}/metrics"));
    if let Some(k) = api_key {
        rb = rb.bearer_auth(k);
    }
    let r = rb.send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    Some(count_served(&r.text().await.ok()?))
}

/// The request count of a Prometheus text page (see [`served_requests`]).
pub fn count_served(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("certctl_http_request_duration_seconds_count{"))
        .filter(|l| !l.contains("route=\"/ready\"") && !l.contains("route=\"/metrics\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Jobs that produced more than one certificate version (whole table; 0 unless a job ran twice).
pub(crate) async fn jobs_with_two_versions(pool: &PgPool) -> Result<i64, HarnessError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM certificate_versions WHERE job_id IS NOT NULL \
         GROUP BY job_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .map_err(db)
}

async fn job_processed_once(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    instance_ids: &[String],
) -> Result<Invariant, HarnessError> {
    let dup_job_ids = jobs_with_two_versions(pool).await?;
    let not_one_version: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE j.type IN ('Issuance', 'Renewal') AND j.status = 'Completed' \
           AND j.completed_at BETWEEN $1 AND $2 \
           AND (SELECT count(*) FROM certificate_versions v WHERE v.job_id = j.id) <> 1",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let orphan_versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM certificate_versions v JOIN jobs j ON j.id = v.job_id \
         WHERE v.created_at BETWEEN $1 AND $2 AND j.status <> 'Completed'",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let by: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT claimed_by, count(*) FROM jobs WHERE type IN ('Issuance', 'Renewal') AND status = 'Completed' \
           AND completed_at BETWEEN $1 AND $2 GROUP BY claimed_by ORDER BY claimed_by",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let foreign: i64 =
        by.iter().filter(|(c, _)| c.as_ref().is_none_or(|c| !instance_ids.contains(c))).map(|(_, n)| n).sum();
    let spread =
        by.iter().map(|(c, n)| format!("{}: {n}", c.as_deref().unwrap_or("unclaimed"))).collect::<Vec<_>>().join(", ");
    let held = dup_job_ids == 0 && not_one_version == 0 && orphan_versions == 0 && foreign == 0;
    Ok(Invariant {
        name: "job_processed_once".into(),
        held,
        detail: format!(
            "job ids with two versions: {dup_job_ids}; completed jobs without exactly one version: \
             {not_one_version}; versions of jobs not completed: {orphan_versions}; completed jobs \
             claimed outside the replicas: {foreign}; completed by [{}]",
            if spread.is_empty() { "none".to_string() } else { spread }
        ),
    })
}

async fn renewed_once_per_job(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Invariant, HarnessError> {
    let (jobs, versions): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT j.id), count(v.id) FROM jobs j LEFT JOIN certificate_versions v ON v.job_id = j.id \
         WHERE j.type IN ('Issuance', 'Renewal') AND j.status = 'Completed' AND j.completed_at BETWEEN $1 AND $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT certificate_id, job_id FROM certificate_versions WHERE job_id IS NOT NULL \
         GROUP BY certificate_id, job_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(Invariant {
        name: "renewed_once_per_job".into(),
        held: jobs == versions && twice == 0,
        detail: format!(
            "jobs completed during the run: {jobs}; versions they created: {versions}; certificates with two \
             versions from one job: {twice}"
        ),
    })
}

fn replicas_share_the_limiter(pids: &[u32]) -> Invariant {
    let mut bad = Vec::new();
    let mut ids = Vec::new();
    for pid in pids {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let vars: Vec<String> = env.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if !vars.iter().any(|v| v == "CERTCTL_RATELIMIT_BACKEND=postgres") {
            bad.push(pid.to_string());
        }
        if let Some(id) = vars.iter().find_map(|v| v.strip_prefix("CERTCTL_INSTANCE_ID=")) {
            ids.push(id.to_string());
        }
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    let held = bad.is_empty() && distinct.len() == pids.len();
    Invariant {
        name: "replicas_share_the_limiter".into(),
        held,
        detail: format!(
            "{} servers; without the postgres limiter backend: [{}]; distinct instance ids: {} ({})",
            pids.len(),
            bad.join(", "),
            distinct.len(),
            ids.join(", ")
        ),
    }
}

/// The ACME endpoints of one base URL (from its directory, as a client learns them).
struct AcmeEndpoints {
    new_nonce: String,
    new_account: String,
    key_change: String,
}

async fn endpoints(client: &reqwest::Client, base: &str) -> Result<AcmeEndpoints, String> {
    let url = format!("{base}/acme/profile/{PROBE_PROFILE}/directory");
    let dir: Value = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let field = |k: &str| dir.get(k).and_then(Value::as_str).map(str::to_string).ok_or(format!("{url} has no {k}"));
    Ok(AcmeEndpoints {
        new_nonce: field("newNonce")?,
        new_account: field("newAccount")?,
        key_change: field("keyChange")?,
    })
}

async fn nonce(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = client.head(url).send().await.map_err(|e| format!("HEAD {url}: {e}"))?;
    r.headers()
        .get("replay-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or(format!("HEAD {url}: no Replay-Nonce"))
}

/// An answer to a signed POST.
struct Reply {
    status: u16,
    content_type: String,
    location: String,
    body: Vec<u8>,
}

impl Reply {
    fn problem_type(&self) -> Option<String> {
        if !self.content_type.starts_with("application/problem+json") {
            return None;
        }
        serde_json::from_slice::<Value>(&self.body).ok()?.get("type")?.as_str().map(str::to_string)
    }
}

async fn post_jws(client: &reqwest::Client, url: &str, jws: String) -> Result<Reply, String> {
    let r = client
        .post(url)
        .header("content-type", "application/jose+json")
        .body(jws)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (content_type, location) = (header("content-type"), header("location"));
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| format!("POST {url}: {e}"))?.to_vec();
    Ok(Reply { status, content_type, location, body })
}

/// How the probe's answers fell.
#[derive(Debug, Default, PartialEq, Eq)]
struct ProbeCounts {
    /// Past the limiter (`400 malformed`: the deliberately bad inner JWS).
    admitted: usize,
    /// `429 rateLimited`.
    limited: usize,
    /// Anything else (transport errors, 5xx, other problems).
    other: Vec<String>,
}

/// Registers an account through `urls[0]`, then fires [`PROBE_CALLS`] key changes at once over
/// `urls`; returns the account id and the counts.
async fn probe_key_changes(urls: &[String]) -> Result<(String, ProbeCounts), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(PROBE_CALLS)
        .build()
        .map_err(|e| e.to_string())?;
    let mut eps = Vec::new();
    for u in urls {
        eps.push(endpoints(&client, u).await?);
    }
    let first = eps.first().ok_or("no probe URL")?;
    let key = AccountKey::generate().ok_or("generating the probe's account key")?;
    let n = nonce(&client, &first.new_nonce).await?;
    let jws = key
        .sign(&first.new_account, &n, None, Some(&json!({"termsOfServiceAgreed": true})))
        .ok_or("signing new-account")?;
    let reply = post_jws(&client, &first.new_account, jws).await?;
    let kid = reply.location.clone();
    if reply.status != 201 || kid.is_empty() {
        return Err(format!("new-account answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body)));
    }
    let account_id = kid.rsplit('/').next().unwrap_or_default().to_string();
    // Every nonce first, so the key changes themselves go out together.
    let mut signed = Vec::new();
    for i in 0..PROBE_CALLS {
        let ep = &eps[i % eps.len()];
        let n = nonce(&client, &ep.new_nonce).await?;
        // Not an inner JWS: past the limiter the server refuses it as malformed.
        let jws = key.sign(&ep.key_change, &n, Some(&kid), Some(&json!({}))).ok_or("signing key-change")?;
        signed.push((ep.key_change.clone(), jws));
    }
    let answers = futures::future::join_all(signed.into_iter().map(|(url, jws)| {
        let client = client.clone();
        async move { post_jws(&client, &url, jws).await }
    }))
    .await;
    let mut c = ProbeCounts::default();
    for a in answers {
        match a {
            Ok(r) if r.status == 429 && is_acme_rate_limited(&r.content_type, &r.body) => c.limited += 1,
            Ok(r) if r.status == 400 && r.problem_type().as_deref() == Some(MALFORMED) => c.admitted += 1,
            Ok(r) => c.other.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
            Err(e) => c.other.push(e),
        }
    }
    Ok((account_id, c))
}

async fn shared_rate_limit_exact(pool: &PgPool, urls: &[String]) -> Result<Invariant, HarnessError> {
    let name = "shared_rate_limit_exact".to_string();
    let (account, c) = match probe_key_changes(urls).await {
        Ok(r) => r,
        Err(e) => return Ok(Invariant { name, held: false, detail: format!("the probe could not run: {e}") }),
    };
    let stored: Option<i64> =
        sqlx::query_scalar("SELECT cardinality(timestamps)::bigint FROM rate_limit_buckets WHERE bucket_key = $1")
            .bind(format!("{KEY_CHANGE_NAMESPACE}:{account}"))
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    let held = c.admitted as i64 == PROBE_CAP && c.other.is_empty() && stored == Some(PROBE_CAP);
    Ok(Invariant {
        name,
        held,
        detail: format!(
            "{PROBE_CALLS} concurrent signed key-change requests for one fresh ACME account over HTTP, spread over \
             [{}], limit {PROBE_CAP}/h per account: admitted {}, rateLimited {}, other answers {}{}; timestamps \
             stored {}",
            urls.join(", "),
            c.admitted,
            c.limited,
            c.other.len(),
            c.other
                .first()
                .map(|o| format!(" (first: {})", o.chars().take(200).collect::<String>()))
                .unwrap_or_default(),
            stored.map(|n| n.to_string()).unwrap_or_else(|| "none".into())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_requests_leave_out_health_checks_and_the_metrics_reads() {
        let text = "certctl_http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",status=\"200\",le=\"+Inf\"} 7\n\
                    certctl_http_request_duration_seconds_count{method=\"GET\",route=\"/health\",status=\"200\"} 7\n\
                    certctl_http_request_duration_seconds_count{method=\"POST\",route=\"/x\",status=\"500\"} 2\n\
                    certctl_http_request_duration_seconds_count{method=\"GET\",route=\"/ready\",status=\"200\"} 40\n\
                    certctl_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\",status=\"200\"} 1\n";
        assert_eq!(count_served(text), 9);
    }

    #[test]
    fn a_process_without_the_postgres_backend_breaks_the_shared_limiter_invariant() {
        // This test process runs with neither the backend setting nor an instance id.
        let inv = replicas_share_the_limiter(&[std::process::id()]);
        assert!(!inv.held, "{}", inv.detail);
        assert!(inv.detail.contains(&std::process::id().to_string()));
    }
}

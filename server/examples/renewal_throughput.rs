//! Renewal throughput: how many certificates per second the job processor renews in
//! server-keygen mode (ECDSA P-256 keys, local CA, one transaction per job).
//!
//! Starts a throw-away PostgreSQL cluster (fast settings: fsync off — the figure is for the
//! issuance path, not for disk), seeds N certificates with one INSERT, enqueues one renewal
//! job each with one INSERT … SELECT (as bulk renew does), then runs the job processor's
//! batches back to back until every job is done, and prints the rate.
//!
//! ```text
//! cargo run --release --example renewal_throughput -- [N] [CONCURRENCY] [BATCH]
//! ```
//! Defaults: N = 10000, concurrency 25 (`CERTCTL_RENEWAL_CONCURRENCY`), batch 200
//! (`CERTCTL_JOB_BATCH_SIZE`). Not a test: timing claims live here, never in assertions.

use std::time::Instant;

use anyhow::Context;
use certctl_pg_embedded::{Cluster, ClusterOptions, create_database};
use certctl_server::AppState;
use certctl_server::config::{Config, ConfigOutcome};
use certctl_server::scheduler::jobs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let concurrency = args.next().unwrap_or_else(|| "25".into());
    let batch = args.next().unwrap_or_else(|| "200".into());

    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default())).await??;
    let url = create_database(&cluster.url("postgres"), "throughput").await?;
    let args = [
        "renewal_throughput",
        "--database-url",
        url.as_str(),
        "--auth-type",
        "none",
        "--demo-seed",
        "true",
        "--scheduler-enabled",
        "false",
        "--keygen-mode",
        "server",
        "--renewal-concurrency",
        concurrency.as_str(),
        "--job-batch-size",
        batch.as_str(),
        "--log-level",
        "warn",
    ];
    let ConfigOutcome::Run(config) = Config::parse_from_args(args)? else { anyhow::bail!("no config") };
    let state = AppState::build(*config).await.context("state")?;

    let seed_started = Instant::now();
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "INSERT INTO managed_certificates (id, name, common_name, sans, owner_id, team_id, issuer_id, \
                 renewal_policy_id, certificate_profile_id, status, expires_at) \
         SELECT 'tp-' || g, 'tp-' || g, 'host' || g || '.example.com', ARRAY['host' || g || '.example.com'], \
                'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls', 'RenewalInProgress', \
                now() + interval '5 days' \
           FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO jobs (id, type, certificate_id, status) \
         SELECT 'tpjob-' || substr(id, 4), 'Renewal', id, 'Pending' FROM managed_certificates WHERE id LIKE 'tp-%'",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    println!("seeded {n} certificates and jobs in {:.2?}", seed_started.elapsed());

    // Load the CA once so the figure measures renewals, not CA creation.
    let issuer = certctl_server::issuance::load_issuer(&state.pool, "iss-local").await?;
    certctl_server::issuance::local_ca(&state, &issuer).await?;

    let started = Instant::now();
    let mut completed = 0u64;
    let mut failed = 0u64;
    loop {
        let s = jobs::process_batch(&state, chrono::Utc::now()).await?;
        if s.completed + s.failed == 0 {
            break;
        }
        completed += s.completed;
        failed += s.failed;
    }
    let took = started.elapsed();
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM certificate_versions WHERE job_id LIKE 'tpjob-%'")
        .fetch_one(&state.pool)
        .await?;
    println!(
        "renewed {completed} certificates ({failed} failed, {versions} versions stored) in {took:.2?}: {:.0} certificates/s \
         (concurrency {concurrency}, batch {batch}, {})",
        completed as f64 / took.as_secs_f64(),
        cluster.durability().as_str(),
    );
    state.pool.close().await;
    drop(cluster);
    Ok(())
}

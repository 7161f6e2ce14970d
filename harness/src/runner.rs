//! The `run`, `seed`, `compare` and `list` commands: orchestration only — every step's logic
//! lives in its own module.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::cli::{CompareArgs, ListArgs, Mode, RunPlan, SeedArgs, default_dir};
use crate::embedded::{Embedded, EmbeddedOptions};
use crate::gate::{self, NoiseFloor, ThresholdVerdict};
use crate::host::{HostInfo, git_commit};
use crate::metrics::{fleet, hlog, sampler};
use crate::report::summary::{
    self, PgStatStatements, PostgresInfo, Resources, ScenarioSummary, StatementDelta, Summary, Verdict,
};
use crate::report::{self, label_summary};
use crate::scenario::engine::{self, EngineConfig};
use crate::scenario::{self, Model, ResolvedScenario, ThresholdSet, scheduler_throughput};
use crate::seed::{self, SeedReport};
use crate::{HarnessError, Outcome};

/// The process-wide Ctrl-C flag. The handler is installed once (the `ctrlc` crate allows one
/// per process); installing ours first also keeps goose's own handler from taking over, so a
/// Ctrl-C ends the load through this flag and the normal teardown path runs. A second Ctrl-C
/// exits at once (the PostgreSQL watchdog still removes the cluster).
pub fn cancel_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                std::process::exit(2);
            }
            eprintln!("certctl-loadtest: Ctrl-C — stopping the load and tearing down (again to exit at once)");
        });
        flag
    })
    .clone()
}

/// The environment being driven.
struct Target {
    base_url: String,
    database_url: Option<String>,
    /// Every server's pid (sampled together).
    server_pids: Vec<u32>,
    /// Every server's base URL (one unless `--replicas`).
    base_urls: Vec<String>,
    /// Instance ids of the replicas (empty unless `--replicas N`, N > 1).
    instance_ids: Vec<String>,
    postgres: Option<PostgresInfo>,
    embedded: Option<Embedded>,
    mode: &'static str,
    server_env: BTreeMap<String, String>,
}

impl Target {
    fn teardown(&mut self) {
        if let Some(mut e) = self.embedded.take() {
            e.teardown();
        }
    }
}

/// `run`: everything, with teardown on every path.
pub async fn run(plan: RunPlan) -> Outcome {
    let cancel = cancel_flag();
    if let Err(e) = std::fs::create_dir_all(&plan.out_dir) {
        return Outcome::failed(HarnessError::io(&plan.out_dir, e));
    }
    let started_at = chrono::Utc::now();
    let mut target = match start_target(&plan, &cancel).await {
        Ok(t) => t,
        Err(e) => return Outcome::failed(e),
    };
    let result = drive(&plan, &mut target, &cancel, started_at).await;
    target.teardown();
    match result {
        Ok(o) => o,
        Err(e) => Outcome { code: 2, message: e.to_string(), run_dir: Some(plan.out_dir.clone()) },
    }
}

async fn start_target(plan: &RunPlan, cancel: &Arc<AtomicBool>) -> Result<Target, HarnessError> {
    match &plan.mode {
        Mode::Embedded { server_bin, durability } => {
            eprintln!("certctl-loadtest: starting PostgreSQL and {}", server_bin.display());
            let opts = EmbeddedOptions {
                server_bin: server_bin.clone(),
                durability: *durability,
                log_dir: plan.out_dir.clone(),
                api_key: plan.api_key.clone().unwrap_or_default(),
                ready_timeout: plan.ready_timeout,
                replicas: plan.replicas,
            };
            let c = cancel.clone();
            let env = Embedded::start(&opts, move || c.load(Ordering::Relaxed)).await.map_err(|e| match e {
                crate::embedded::EmbeddedError::Interrupted => HarnessError::Interrupted,
                e => HarnessError::Embedded(e),
            })?;
            eprintln!(
                "certctl-loadtest: {} ready at {} (pid {}), {}",
                if env.base_urls.len() > 1 { "servers" } else { "server" },
                env.base_urls.join(", "),
                env.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
                env.pg_version
            );
            Ok(Target {
                base_url: env.base_url.clone(),
                database_url: Some(env.database_url.clone()),
                server_pids: env.pids.clone(),
                base_urls: env.base_urls.clone(),
                instance_ids: env.instance_ids.clone(),
                postgres: Some(PostgresInfo {
                    version: env.pg_version.clone(),
                    durability: env.durability.as_str().to_string(),
                    pg_stat_statements: env.pg_stat_statements,
                }),
                server_env: env.server_env.clone(),
                embedded: Some(env),
                mode: "embedded",
            })
        }
        Mode::External { target, database_url } => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| HarnessError::Target(e.to_string()))?;
            // One request before anything else: an unreachable target is a run that cannot be
            // carried out (exit 2), not a run full of transport errors (exit 1).
            let url = format!("{target}/health");
            client.get(&url).send().await.map_err(|e| HarnessError::Target(format!("{target} unreachable: {e}")))?;
            Ok(Target {
                base_url: target.clone(),
                database_url: database_url.clone(),
                server_pids: Vec::new(),
                base_urls: vec![target.clone()],
                instance_ids: Vec::new(),
                postgres: None,
                embedded: None,
                mode: "external",
                server_env: BTreeMap::new(),
            })
        }
    }
}

async fn connect(url: &str) -> Result<PgPool, HarnessError> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| HarnessError::Database(e.to_string()))
}

/// Creates pg_stat_statements if it can; returns the status text for the summary.
async fn prepare_pss(pool: &PgPool) -> String {
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(pool).await {
        return format!("unavailable: {e}");
    }
    match sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1").fetch_optional(pool).await {
        Ok(_) => "available".into(),
        Err(e) => format!("unavailable: {e}"),
    }
}

type PssSnapshot = HashMap<i64, (String, i64, f64)>;

async fn pss_snapshot(pool: &PgPool) -> Option<PssSnapshot> {
    let rows: Vec<(Option<i64>, String, i64, f64)> = sqlx::query_as(
        "SELECT queryid, left(query, 300), calls, total_exec_time FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(pool)
    .await
    .ok()?;
    Some(rows.into_iter().filter_map(|(id, q, c, t)| id.map(|id| (id, (q, c, t)))).collect())
}

fn pss_diff(before: &PssSnapshot, after: &PssSnapshot) -> Vec<StatementDelta> {
    let mut d: Vec<StatementDelta> = after
        .iter()
        .filter_map(|(id, (q, c, t))| {
            let (bc, bt) = before.get(id).map(|(_, c, t)| (*c, *t)).unwrap_or((0, 0.0));
            let calls = c - bc;
            (calls > 0).then(|| StatementDelta {
                query: q.split_whitespace().collect::<Vec<_>>().join(" "),
                calls,
                total_ms: t - bt,
                mean_ms: (t - bt) / calls as f64,
            })
        })
        .filter(|s| !s.query.contains("pg_stat_statements") && !s.query.contains("pg_stat_activity"))
        .collect();
    d.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    d.truncate(10);
    d
}

async fn db_counter(pool: &PgPool, sql: &str) -> Option<i64> {
    fleet::read_counter(pool, sql).await.ok()
}

async fn drive(
    plan: &RunPlan,
    target: &mut Target,
    cancel: &Arc<AtomicBool>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, HarnessError> {
    let pool = match &target.database_url {
        Some(url) => Some(connect(url).await?),
        None => None,
    };
    if let (Some(pool), None) = (&pool, &target.postgres) {
        // External mode with a database: record what we can learn about it.
        let version: String =
            sqlx::query_scalar("SHOW server_version").fetch_one(pool).await.unwrap_or_else(|_| "unknown".into());
        let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(pool).await.unwrap_or_default();
        let sc: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(pool).await.unwrap_or_default();
        target.postgres = Some(PostgresInfo {
            version: format!("PostgreSQL {version}"),
            durability: format!("fsync={fsync}, synchronous_commit={sc}"),
            pg_stat_statements: false,
        });
    }
    if target.database_url.is_none() && !plan.fixtures.is_empty() {
        eprintln!(
            "certctl-loadtest: no --database-url: assuming fixtures {} are already in the target's database",
            plan.fixtures.join(", ")
        );
    }
    let mut seeding: Option<SeedReport> = None;
    let pss_status = match &pool {
        Some(p) => prepare_pss(p).await,
        None => "unavailable: no database connection".into(),
    };
    if let Some(pg) = target.postgres.as_mut() {
        pg.pg_stat_statements = pss_status == "available";
    }
    let live = match plan.metrics_listen {
        Some(addr) => Some(crate::metrics::live::serve(addr).await?),
        None => None,
    };
    if let Some(l) = &live {
        l.metrics().set_targets(&target.base_urls);
    }

    // The database clock bounds the run window of the multi-replica invariants.
    let window_start = match (&pool, target.instance_ids.len() > 1) {
        (Some(p), true) => Some(crate::replicas::db_now(p).await?),
        _ => None,
    };
    let cfg = EngineConfig {
        base_url: target.base_url.clone(),
        base_urls: target.base_urls.clone(),
        api_key: plan.api_key.clone(),
        fleet: plan.fleet,
        run_tag: format!("{}{:04x}", chrono::Utc::now().format("%H%M%S"), rand::random::<u16>()),
        late_tolerance: plan.late_tolerance,
        drain: plan.drain,
        request_timeout: plan.request_timeout,
        cancel: cancel.clone(),
        progress: plan.progress,
        live: live.as_ref().map(|l| l.metrics()),
    };
    let mut scenarios = Vec::new();
    for sc in &plan.scenarios {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        // Fixtures are applied right before the first scenario that needs them, so a fleet
        // the scheduler starts renewing (bulk_renewal's) does not load the server during
        // scenarios that do not ask for it.
        if let Some(url) = &target.database_url {
            let applied: Vec<String> = seeding.as_ref().map(|s| s.files.clone()).unwrap_or_default();
            let need: Vec<String> =
                sc.def.fixtures.iter().filter(|f| plan.fixtures.contains(f) && !applied.contains(f)).cloned().collect();
            if !need.is_empty() {
                let r = seed::apply(url, &plan.seeds_dir, Some(&need), plan.fleet).await?;
                eprintln!(
                    "certctl-loadtest: seeded {} ({} certs, {} agents) in {:.2} s",
                    r.files.join(", "),
                    r.certs,
                    r.agents,
                    r.seconds
                );
                seeding = Some(match seeding.take() {
                    None => r,
                    Some(mut acc) => {
                        acc.files.extend(r.files);
                        acc.seconds += r.seconds;
                        acc
                    }
                });
            }
        }
        scenarios.push(run_one(plan, sc, &cfg, target, pool.as_ref(), &pss_status).await?);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(HarnessError::Interrupted);
    }
    let replicas = match (&pool, &target.database_url, window_start) {
        (Some(p), Some(url), Some(from)) => {
            eprintln!("certctl-loadtest: checking the multi-replica invariants");
            Some(crate::replicas::check(p, url, from, &target.instance_ids, &target.server_pids).await?)
        }
        _ => None,
    };

    let mut summary = Summary {
        schema_version: summary::SCHEMA_VERSION,
        tool: format!("certctl-loadtest {}", env!("CARGO_PKG_VERSION")),
        commit: git_commit(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        profile: plan.profile.clone(),
        mode: target.mode.into(),
        // Every server driven (one, or the replicas comma-separated).
        target: target.base_urls.join(", "),
        server_settings: target.server_env.clone(),
        host: HostInfo::detect(),
        postgres: target.postgres.clone(),
        seeding,
        scenarios,
        verdict: Verdict {
            seed_thresholds_held: true,
            targets_held: true,
            gate_passed: None,
            exit_code: 0,
            reason: String::new(),
        },
        comparison: None,
        shard: plan.shard,
        merged_from: None,
        replicas,
    };
    summary.verdict = verdict(&summary);
    summary::write(&plan.out_dir, &summary)?;
    if let Some(base) = &plan.baseline {
        let c = gate::compare_dirs(base, &plan.out_dir, &NoiseFloor::default())?;
        summary.comparison = Some(c);
        summary.verdict = verdict(&summary);
        summary::write(&plan.out_dir, &summary)?;
    }
    report::render(&plan.out_dir)?;
    print_table(&summary, &plan.out_dir);
    Ok(Outcome {
        code: summary.verdict.exit_code,
        message: summary.verdict.reason.clone(),
        run_dir: Some(plan.out_dir.clone()),
    })
}

async fn run_one(
    plan: &RunPlan,
    sc: &ResolvedScenario,
    cfg: &EngineConfig,
    target: &Target,
    pool: Option<&PgPool>,
    pss_status: &str,
) -> Result<ScenarioSummary, HarnessError> {
    let def = &sc.def;
    if let Some(st) = &def.scheduler_throughput {
        eprintln!(
            "[{}] {} profile: one bulk renew of {} fleet certificates, time limit {:.0} s",
            def.name,
            sc.profile,
            st.certs_for(&sc.profile, plan.fleet.certs),
            sc.duration.as_secs_f64()
        );
    } else {
        eprintln!(
            "[{}] {} profile{}: {:.0} s, {} model{}",
            def.name,
            sc.profile,
            if sc.shard.count > 1 { format!(", shard {}", sc.shard) } else { String::new() },
            sc.duration.as_secs_f64(),
            if def.load.model == Model::Open { "open" } else { "closed" },
            match def.load.model {
                Model::Open => format!(
                    ", {}",
                    def.requests
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| !r.follow_up)
                        .map(|(i, r)| format!("{} {:.1}/s", r.label, sc.shard_rate(i)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Model::Closed => format!(", {} users, {} ms pause", sc.shard_users(), def.load.pause_ms),
            }
        );
    }
    let pss_before = match (pool, pss_status == "available") {
        (Some(p), true) => pss_snapshot(p).await,
        _ => None,
    };
    let mut counters_before = BTreeMap::new();
    for m in &def.db_metrics {
        let v = match pool {
            Some(p) => db_counter(p, &m.counter_sql).await,
            None => None,
        };
        counters_before.insert(m.name.clone(), v);
    }
    let sampled_from = Instant::now();
    let sampler = sampler::Sampler::start(target.server_pids.clone(), pool.cloned(), sampled_from);
    let fleet_sampler = match (&def.fleet_renewal, pool) {
        (Some(f), Some(p)) => Some(fleet::CounterSampler::start(p.clone(), f.counter_sql.clone(), sampled_from)),
        _ => None,
    };
    let t = Instant::now();
    let (run, throughput) = match &def.scheduler_throughput {
        Some(d) => match scheduler_throughput::run(sc, d, cfg, pool).await {
            Ok((r, st)) => (Ok(r), Some(st)),
            Err(e) => (Err(HarnessError::Target(e.to_string())), None),
        },
        None => (engine::run_scenario(sc, cfg).await.map_err(HarnessError::from), None),
    };
    let wall = t.elapsed();
    let mut samples = sampler.stop().await;
    let fleet_readings = match fleet_sampler {
        Some(f) => Some(f.stop().await),
        None => None,
    };
    let run = run?;
    // Sampling starts before goose launches its users; shift the samples onto the scenario's
    // time zero so they line up with the latency intervals (launch-time samples go negative).
    let shift = run.t0.saturating_duration_since(sampled_from).as_secs_f64();
    for s in &mut samples {
        s.t_s -= shift;
    }
    let fleet_renewal = def.fleet_renewal.as_ref().map(|f| match &fleet_readings {
        Some(r) => {
            let shifted: Vec<(f64, i64)> = r.iter().map(|&(t, v)| (t - shift, v)).collect();
            fleet::summarize(&shifted, f.window_s)
        }
        None => fleet::FleetRenewal::unavailable("no database connection (give --database-url)", f.window_s),
    });
    let mut db_metrics = BTreeMap::new();
    for m in &def.db_metrics {
        let after = match pool {
            Some(p) => db_counter(p, &m.counter_sql).await,
            None => None,
        };
        let rate = match (counters_before.get(&m.name).copied().flatten(), after) {
            (Some(b), Some(a)) => Some((a - b) as f64 / wall.as_secs_f64().max(1e-9)),
            _ => None,
        };
        db_metrics.insert(m.name.clone(), rate);
    }
    let pss = match (pool, pss_before) {
        (Some(p), Some(before)) => match pss_snapshot(p).await {
            Some(after) => PgStatStatements { status: "available".into(), top: pss_diff(&before, &after) },
            None => PgStatStatements { status: "unavailable: snapshot failed".into(), top: vec![] },
        },
        _ => PgStatStatements { status: pss_status.to_string(), top: vec![] },
    };
    let hlog_name = format!("{}.hlog", def.name);
    hlog::write(
        &plan.out_dir.join(&hlog_name),
        run.started_at,
        &format!(
            "certctl-loadtest {} scenario {} profile {} commit {}",
            env!("CARGO_PKG_VERSION"),
            def.name,
            sc.profile,
            git_commit()
        ),
        &run.labels,
    )
    .map_err(|e| HarnessError::Config(format!("writing {hlog_name}: {e}")))?;
    let duration_s = sc.duration.as_secs_f64();
    let labels: Vec<_> = run
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // A [scheduler_throughput] scenario's one call and a flow's follow-ups (their
            // arrivals follow the answers) have no planned rate; a shard plans its share of
            // each open-model rate.
            let target_rate = (def.load.model == Model::Open && i < sc.rates.len() && !def.requests[i].follow_up)
                .then(|| sc.shard_rate(i));
            label_summary(l, run.schedule.get(i).copied().unwrap_or_default(), target_rate, duration_s)
        })
        .collect();
    let mut scenario_metrics = db_metrics.clone();
    if let Some(f) = &fleet_renewal {
        scenario_metrics.insert(fleet::FLEET_RENEWAL_RATE.into(), f.judged_rate());
    }
    if let Some(st) = &throughput {
        scenario_metrics.extend(st.metrics());
    }
    let thresholds = gate::evaluate(&def.thresholds, &labels, &scenario_metrics);
    let users = match def.load.model {
        Model::Open => (0..def.requests.len()).map(|i| sc.open_users(i)).sum(),
        Model::Closed => sc.shard_users(),
    };
    Ok(ScenarioSummary {
        name: def.name.clone(),
        description: def.description.clone(),
        model: if throughput.is_some() {
            "drain"
        } else if def.load.model == Model::Open {
            "open"
        } else {
            "closed"
        }
        .into(),
        duration_s,
        elapsed_s: run.elapsed.as_secs_f64(),
        users,
        cancelled: run.cancelled,
        hlog: hlog_name,
        labels,
        db_metrics,
        thresholds,
        resources: Resources { peaks: sampler::peaks(&samples), samples },
        pg_stat_statements: pss,
        fleet_renewal,
        scheduler_throughput: throughput,
    })
}

/// A summary's overall verdict: a violated multi-replica invariant, then a failed seed
/// threshold, then a failed regression gate decide exit code 1 (in that order of reporting).
pub fn verdict(s: &Summary) -> Verdict {
    let all: Vec<(&str, &gate::ThresholdResult)> =
        s.scenarios.iter().flat_map(|sc| sc.thresholds.iter().map(move |t| (sc.name.as_str(), t))).collect();
    let seed_fail: Vec<_> =
        all.iter().filter(|(_, t)| t.set == ThresholdSet::Seed && t.verdict == ThresholdVerdict::Fail).collect();
    let targets: Vec<_> = all.iter().filter(|(_, t)| t.set == ThresholdSet::Target).collect();
    let targets_met = targets.iter().filter(|(_, t)| t.verdict == ThresholdVerdict::Pass).count();
    let gate_passed = s.comparison.as_ref().map(|c| !c.regressed);
    let seed_held = seed_fail.is_empty();
    let targets_note = format!("{targets_met}/{} project targets met", targets.len());
    let broken: Vec<&summary::Invariant> =
        s.replicas.iter().flat_map(|r| r.invariants.iter()).filter(|i| !i.held).collect();
    // A label that completed no request measured nothing: the run could not be carried out
    // (exit 2), but the other scenarios' results are still written and reported.
    let unmeasured = s.scenarios.iter().find_map(|sc| {
        sc.labels.iter().find(|l| l.count == 0).map(|l| {
            let why = sc
                .scheduler_throughput
                .as_ref()
                .filter(|t| t.status != "measured")
                .map(|t| format!(" ({})", t.status))
                .unwrap_or_default();
            format!("{}: label {} completed no requests{why} — the run measured nothing", sc.name, l.label)
        })
    });
    let (exit_code, reason) = if let Some(why) = unmeasured {
        (2, format!("{why}; {targets_note}"))
    } else if let Some(inv) = broken.first() {
        (1, format!("multi-replica invariant violated: {} ({}); {targets_note}", inv.name, inv.detail))
    } else if let Some((sc, t)) = seed_fail.first() {
        let obs = t.observed.map(|v| format!("{v:.3}")).unwrap_or_default();
        (
            1,
            format!(
                "seed threshold failed: {sc} {} (observed {obs}); {} failed in all; {targets_note}",
                t.describe(),
                seed_fail.len()
            ),
        )
    } else if gate_passed == Some(false) {
        let n = s
            .comparison
            .as_ref()
            .map(|c| c.results.iter().filter(|r| r.verdict == gate::CompareVerdict::Regressed).count())
            .unwrap_or(0);
        (1, format!("regression gate failed: {n} metric(s) regressed against the baseline; {targets_note}"))
    } else {
        (0, format!("all seed thresholds held; {targets_note}"))
    };
    Verdict {
        seed_thresholds_held: seed_held,
        targets_held: targets_met == targets.len(),
        gate_passed,
        exit_code,
        reason,
    }
}

pub(crate) fn print_table(s: &Summary, dir: &Path) {
    println!(
        "\n{:<14} {:<14} {:>10} {:>10} {:>10} {:>9} {:>6} {:>8}",
        "scenario", "label", "p50 ms", "p95 ms", "p99 ms", "err %", "seed", "targets"
    );
    for sc in &s.scenarios {
        for l in &sc.labels {
            let v = |set: ThresholdSet| {
                let ts: Vec<_> = sc.thresholds.iter().filter(|t| t.set == set && t.label == l.label).collect();
                if ts.iter().any(|t| t.verdict == ThresholdVerdict::Fail) { "fail" } else { "pass" }
            };
            println!(
                "{:<14} {:<14} {:>10.2} {:>10.2} {:>10.2} {:>9.3} {:>6} {:>8}",
                sc.name,
                l.label,
                l.corrected.p50,
                l.corrected.p95,
                l.corrected.p99,
                l.error_rate * 100.0,
                v(ThresholdSet::Seed),
                v(ThresholdSet::Target)
            );
        }
    }
    println!("\n{}\nrun directory: {}", s.verdict.reason, dir.display());
}

/// `seed`.
pub async fn seed_only(args: &SeedArgs) -> Result<Outcome, HarnessError> {
    let dir = default_dir(args.files.seeds_dir.as_deref(), "seeds");
    let fleet = scenario::template::Fleet { certs: args.certs, agents: args.agents };
    let r = seed::apply(&args.database_url, &dir, None, fleet).await?;
    let msg = format!("seeded {} ({} certs, {} agents) in {:.2} s", r.files.join(", "), r.certs, r.agents, r.seconds);
    println!("{msg}");
    Ok(Outcome { code: 0, message: msg, run_dir: None })
}

/// `compare`.
pub fn compare(args: &CompareArgs) -> Result<Outcome, HarnessError> {
    let noise = NoiseFloor {
        rel: args.rel_floor,
        rel_p95: args.rel_floor_p95,
        rel_p99: args.rel_floor_p99,
        abs_ms: args.abs_floor_ms,
        abs_ms_p95: args.abs_floor_p95_ms,
        abs_ms_p99: args.abs_floor_p99_ms,
        rel_throughput: args.rel_floor_throughput,
        alpha: args.alpha,
        ..NoiseFloor::default()
    };
    let c = gate::compare_dirs(&args.baseline, &args.run, &noise)?;
    println!("{}", gate::comparison_table(&c));
    let path = args.run.join("compare.json");
    let text = serde_json::to_string_pretty(&c).map_err(|e| HarnessError::Config(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| HarnessError::io(&path, e))?;
    let n = c.results.iter().filter(|r| r.verdict == gate::CompareVerdict::Regressed).count();
    Ok(if c.regressed {
        Outcome {
            code: 1,
            message: format!("{n} metric(s) regressed against {}", args.baseline.display()),
            run_dir: Some(args.run.clone()),
        }
    } else {
        Outcome { code: 0, message: "no regression".into(), run_dir: Some(args.run.clone()) }
    })
}

/// `list`.
pub fn list(args: &ListArgs) -> Result<Outcome, HarnessError> {
    let dir = default_dir(args.files.scenarios_dir.as_deref(), "scenarios");
    for d in scenario::load_dir(&dir)? {
        println!("{} — {}", d.name, d.description.split_whitespace().collect::<Vec<_>>().join(" "));
        println!("  fixtures: {}", if d.fixtures.is_empty() { "none".into() } else { d.fixtures.join(", ") });
        for p in ["smoke", "ci", "scale"] {
            if let Ok(r) = d.resolve(p) {
                let load = match (&d.scheduler_throughput, d.load.model) {
                    (Some(st), _) => format!(
                        "one bulk renew of {} fleet certificates (time limit)",
                        st.certs_for(p, scenario::template::Fleet::default().certs)
                    ),
                    (None, Model::Open) => d
                        .requests
                        .iter()
                        .zip(&r.rates)
                        .filter(|(q, _)| !q.follow_up)
                        .map(|(q, x)| format!("{} {x:.0}/s", q.label))
                        .collect::<Vec<_>>()
                        .join(", "),
                    (None, Model::Closed) => format!("{} users, {} ms pause", r.users.unwrap_or(1), d.load.pause_ms),
                };
                println!("  profile {p:<5}: {:>4.0} s, {load}", r.duration.as_secs_f64());
            }
        }
        for r in &d.requests {
            let how = match (&r.flow, r.follow_up) {
                (Some(f), _) => format!(", flow {f}"),
                (None, true) => ", follow-up".to_string(),
                (None, false) => String::new(),
            };
            if r.method == scenario::Method::Client {
                println!("  {:<13} client-side work, timed apart from server latency{how}", r.label);
            } else {
                let path = if r.path.is_empty() { "<URL from an earlier answer>" } else { r.path.as_str() };
                println!("  {:<13} {:?} {path} (expect {:?}{how})", r.label, r.method, r.expect);
            }
        }
        for t in &d.thresholds {
            let (op, v) = match (t.max, t.min) {
                (Some(m), _) => ("<", m),
                (_, Some(m)) => (">=", m),
                _ => ("?", 0.0),
            };
            println!("  {:<6} {} {} {op} {v}", t.set.as_str(), t.label, t.metric);
        }
        println!();
    }
    // The multi-generator workflow is not a scenario property, but `list` is where people look
    // for how to run things.
    println!("several generators: `run --shard I/N` on each (started together), then `merge RUN_DIR... --out DIR`");
    println!("several servers (embedded): `run --replicas N` also checks the multi-replica invariants");
    Ok(Outcome { code: 0, message: String::new(), run_dir: None })
}

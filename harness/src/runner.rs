//! The `run`, `seed`, `compare` and `list` commands: orchestration only — every step's logic
//! lives in its own module. `run` is one [`trial`] per scenario against one [`target`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;

use crate::cli::{CompareArgs, ListArgs, RunPlan, SeedArgs, default_dir};
use crate::faults::inject::{Bounds, FaultTarget, Injector};
use crate::gate::{self, NoiseFloor, ThresholdVerdict};
use crate::host::{HostInfo, git_commit};
use crate::metrics::live::LiveServer;
use crate::report;
use crate::report::summary::{self, ScenarioSummary, Summary, Verdict};
use crate::scenario::engine::EngineConfig;
use crate::scenario::{self, Model, ResolvedScenario, ThresholdSet};
use crate::seed::{self, SeedReport};
use crate::target::{self, Target, TargetSpec};
use crate::trial::{self, TrialEnv};
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

/// The target half of a run plan.
pub(crate) fn target_spec(plan: &RunPlan) -> TargetSpec {
    TargetSpec {
        mode: plan.mode.clone(),
        log_dir: plan.out_dir.clone(),
        api_key: plan.api_key.clone(),
        ready_timeout: plan.ready_timeout,
        replicas: plan.replicas,
        balancer: plan.balancer,
        faults: plan.scenarios.iter().any(|s| !s.def.faults.is_empty()),
        extra_env: Vec::new(),
    }
}

/// `run`: one trial per scenario, with teardown on every path.
pub async fn run(plan: RunPlan) -> Outcome {
    let cancel = cancel_flag();
    if let Err(e) = std::fs::create_dir_all(&plan.out_dir) {
        return Outcome::failed(HarnessError::io(&plan.out_dir, e));
    }
    let started_at = chrono::Utc::now();
    let mut target = match target::start(&target_spec(&plan), &cancel).await {
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

/// Serves `--metrics-listen` (when given) with the target's servers as discovery targets.
pub(crate) async fn start_live(plan: &RunPlan, target: &Target) -> Result<Option<LiveServer>, HarnessError> {
    let Some(addr) = plan.metrics_listen else { return Ok(None) };
    let live = crate::metrics::live::serve(addr).await?;
    live.metrics().set_targets(&target.base_urls);
    Ok(Some(live))
}

/// The engine configuration of a plan against a target (`live`: the `--metrics-listen` feed).
pub(crate) fn engine_config(
    plan: &RunPlan,
    target: &Target,
    cancel: &Arc<AtomicBool>,
    live: Option<&LiveServer>,
) -> EngineConfig {
    EngineConfig {
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
        live: live.map(|l| l.metrics()),
        start_at: plan.start_at,
        started: None,
    }
}

/// Applies the fixtures `sc` needs that are not applied yet (right before the first scenario
/// that needs them, so a fleet the scheduler starts renewing — bulk_renewal's — does not load
/// the server during scenarios that do not ask for it).
pub(crate) async fn seed_for(
    plan: &RunPlan,
    target: &Target,
    sc: &ResolvedScenario,
    seeding: &mut Option<SeedReport>,
) -> Result<(), HarnessError> {
    let Some(url) = &target.database_url else { return Ok(()) };
    let applied: Vec<String> = seeding.as_ref().map(|s| s.files.clone()).unwrap_or_default();
    let need: Vec<String> =
        sc.def.fixtures.iter().filter(|f| plan.fixtures.contains(f) && !applied.contains(f)).cloned().collect();
    if need.is_empty() {
        return Ok(());
    }
    let r = seed::apply(url, &plan.seeds_dir, Some(&need), plan.fleet).await?;
    eprintln!(
        "certctl-loadtest: seeded {} ({} certs, {} agents) in {:.2} s",
        r.files.join(", "),
        r.certs,
        r.agents,
        r.seconds
    );
    *seeding = Some(match seeding.take() {
        None => r,
        Some(mut acc) => {
            acc.files.extend(r.files);
            acc.seconds += r.seconds;
            acc
        }
    });
    Ok(())
}

async fn drive(
    plan: &RunPlan,
    target: &mut Target,
    cancel: &Arc<AtomicBool>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, HarnessError> {
    let pool = target::open_database(target).await?;
    if target.database_url.is_none() && !plan.fixtures.is_empty() {
        eprintln!(
            "certctl-loadtest: no --database-url: assuming fixtures {} are already in the target's database",
            plan.fixtures.join(", ")
        );
    }
    let mut seeding: Option<SeedReport> = None;
    let pss_status = trial::prepare_pss(pool.as_ref()).await;
    if let Some(pg) = target.postgres.as_mut() {
        pg.pg_stat_statements = pss_status == "available";
    }
    // The database clock bounds the run window of the multi-replica invariants.
    let window_start = match (&pool, target.instance_ids.len() > 1) {
        (Some(p), true) => Some(crate::replicas::db_now(p).await?),
        _ => None,
    };
    let live = start_live(plan, target).await?;
    let cfg = engine_config(plan, target, cancel, live.as_ref());
    // Measured before the load, so the reading does not compete with it.
    let sync_start = match plan.start_at {
        Some(at) => Some(crate::clock::record(at, pool.as_ref()).await),
        None => None,
    };
    let env = TrialEnv { cfg: &cfg, pool: pool.as_ref(), pss_status: &pss_status };
    let mut scenarios = Vec::new();
    for sc in &plan.scenarios {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        seed_for(plan, target, sc, &mut seeding).await?;
        announce(plan, sc);
        let procs = target.procs();
        let injector = fault_injector(target, sc, pool.as_ref(), cancel);
        let result = trial::run(env, sc, procs, injector).await?;
        let hlog_name = format!("{}.hlog", sc.def.name);
        result.write_hlog(&plan.out_dir, &hlog_name, sc)?;
        scenarios.push(result.summarize(sc, hlog_name));
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(HarnessError::Interrupted);
    }
    let replicas = match (&pool, window_start) {
        (Some(p), Some(from)) => {
            eprintln!("certctl-loadtest: checking the multi-replica invariants");
            let pids = target.procs().server;
            let topology = crate::replicas::Topology {
                instance_ids: &target.instance_ids,
                pids: &pids,
                replica_urls: &target.replica_urls,
                probe_urls: &target.probe_urls,
                balancer: &target.balancing,
                api_key: plan.api_key.as_deref(),
            };
            Some(crate::replicas::check(p, from, topology).await?)
        }
        _ => None,
    };
    let mut summary = new_summary(plan, target, started_at, seeding, scenarios);
    summary.replicas = replicas;
    summary.start = sync_start;
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

/// The injector of `sc`'s faults against `target` (none without faults).
fn fault_injector<'a>(
    target: &'a mut Target,
    sc: &ResolvedScenario,
    pool: Option<&PgPool>,
    cancel: &Arc<AtomicBool>,
) -> Option<Injector<'a>> {
    if sc.def.faults.is_empty() {
        return None;
    }
    let bounds = Bounds::from_settings(&target.server_env);
    let ids = target.instance_ids.clone();
    let on = match (target.embedded.as_mut(), &target.database_url) {
        (Some(e), _) => FaultTarget::Embedded(e),
        (None, Some(url)) => FaultTarget::External { database_url: url.clone() },
        // The plan refused faults an external target without a database cannot suffer.
        (None, None) => return None,
    };
    Some(Injector::new(&sc.def.faults, on, pool.cloned(), ids, bounds, cancel.clone()))
}

/// A summary of `scenarios` run under `plan` against `target` (verdict still to be judged).
pub(crate) fn new_summary(
    plan: &RunPlan,
    target: &Target,
    started_at: chrono::DateTime<chrono::Utc>,
    seeding: Option<SeedReport>,
    scenarios: Vec<ScenarioSummary>,
) -> Summary {
    Summary {
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
        replicas: None,
        start: None,
    }
}

/// The line that opens a scenario's trial.
fn announce(plan: &RunPlan, sc: &ResolvedScenario) {
    let def = &sc.def;
    if let Some(st) = &def.scheduler_throughput {
        eprintln!(
            "[{}] {} profile: one bulk renew of {} fleet certificates, time limit {:.0} s",
            def.name,
            sc.profile,
            st.certs_for(&sc.profile, plan.fleet.certs),
            sc.duration.as_secs_f64()
        );
        return;
    }
    let load = match def.load.model {
        Model::Open => def
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.follow_up)
            .map(|(i, r)| format!("{} {:.1}/s", r.label, sc.shard_rate(i)))
            .collect::<Vec<_>>()
            .join(", "),
        Model::Closed => format!("{} users, {} ms pause", sc.shard_users(), def.load.pause_ms),
    };
    eprintln!(
        "[{}] {} profile{}: {:.0} s, {} model{}, {load}",
        def.name,
        sc.profile,
        if sc.shard.count > 1 { format!(", shard {}", sc.shard) } else { String::new() },
        sc.duration.as_secs_f64(),
        if def.load.model == Model::Open { "open" } else { "closed" },
        if def.load.stages.is_empty() { "" } else { " (ramped: mean rates)" },
    );
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
    let faults = |f: fn(&crate::faults::FaultsSummary) -> Option<String>| {
        s.scenarios.iter().find_map(|sc| sc.faults.as_ref().and_then(f).map(|why| format!("{}: {why}", sc.name)))
    };
    let (exit_code, reason) = if let Some(why) = unmeasured {
        (2, format!("{why}; {targets_note}"))
    } else if let Some(why) = faults(crate::faults::FaultsSummary::not_carried_out) {
        (2, format!("fault not carried out: {why}; {targets_note}"))
    } else if let Some(why) = faults(crate::faults::FaultsSummary::failure) {
        (1, format!("{why}; {targets_note}"))
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
        if !d.faults.is_empty() {
            let f: Vec<String> = d
                .faults
                .iter()
                .map(|f| match f.duration_s {
                    Some(x) => format!("{}@{}:{x}", f.kind.as_str(), f.at_s),
                    None => format!("{}@{}", f.kind.as_str(), f.at_s),
                })
                .collect();
            println!("  faults: {} (run only when named)", f.join(", "));
        }
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
    println!("faults (embedded): `run --fault KIND@SECONDS[:DURATION]`, or a scenario's [[faults]]");
    Ok(Outcome { code: 0, message: String::new(), run_dir: None })
}

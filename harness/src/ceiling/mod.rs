//! `ceiling`: the highest offered open-model rate at which a steady trial meets every criterion.
//!
//! Data flow: [`CeilingPlan::from_args`] validates the options into a plan with the scenario as
//! an open-model load (a closed scenario's sequence becomes open arrivals; `--label` keeps one
//! label and its flow's follow-ups). [`run`] starts the target, seeds it and saves the seeded
//! database as a template; then [`search::Search`] says which factor of the scenario's rates to
//! try next, each try is one [`crate::trial`] (warm-up, then the measured window) started from
//! the template's state, [`judge`] decides pass / fail / harness-bound, and [`output`] writes
//! `ceiling.json`, the Capacity section of `report.md`, the knee chart and one `.hlog` per trial.

pub mod chart;
pub mod judge;
pub mod output;
pub mod page;
pub mod search;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::{CeilingArgs, Profile, RunArgs, RunPlan};
use crate::runner::{self, cancel_flag};
use crate::scenario::engine::EngineConfig;
use crate::scenario::{Model, ResolvedScenario};
use crate::seed::SeedReport;
use crate::target::{self, Target};
use crate::trial::{self, TrialEnv};
use crate::{HarnessError, Outcome};
use judge::{CpuSplit, Criteria};
use output::{Ceiling, TrialRecord};
use search::{Phase, Search, SearchParams};

/// A validated `ceiling`.
#[derive(Debug, Clone)]
pub struct CeilingPlan {
    /// Target, fleet, schedule and output options (one scenario: the search's base load).
    pub run: RunPlan,
    /// The base load: the scenario's rates (factor 1.0), open model.
    pub base: ResolvedScenario,
    /// `--label`.
    pub label: Option<String>,
    /// The judged criteria.
    pub criteria: Criteria,
    /// Search parameters.
    pub params: SearchParams,
    /// Warm-up of every trial.
    pub warmup: Duration,
    /// Measured window of a search trial.
    pub trial: Duration,
    /// Measured window of a confirmation trial.
    pub confirm: Duration,
    /// Put the database back before every trial.
    pub reset: bool,
}

impl CeilingPlan {
    /// Validates `args` (reads the scenario file; starts nothing).
    pub fn from_args(args: &CeilingArgs) -> Result<Self, HarnessError> {
        let bad = |m: String| HarnessError::Config(m);
        if !(args.precision > 0.0 && args.precision < 1.0) {
            return Err(bad(format!("--precision must be between 0 and 1, got {}", args.precision)));
        }
        if !(0.0..=1.0).contains(&args.max_error_rate) {
            return Err(bad(format!("--max-error-rate must be a fraction in [0, 1], got {}", args.max_error_rate)));
        }
        if args.slo_p99_ms.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(bad("--slo-p99-ms must be > 0".into()));
        }
        let out = args.out.clone().unwrap_or_else(|| {
            PathBuf::from("artifacts/runs").join(format!(
                "{}-{}-ceiling-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                crate::host::git_commit(),
                args.scenario
            ))
        });
        let run_args = RunArgs {
            scenarios: vec![args.scenario.clone()],
            profile: Profile::Scale,
            out: Some(out),
            baseline: None,
            shard: None,
            start_at: None,
            start_in: None,
            faults: Vec::new(),
            common: args.common.clone(),
        };
        let run = RunPlan::from_args(&run_args)?;
        let sc = run.scenarios.first().ok_or_else(|| bad("no scenario".into()))?;
        if !sc.def.faults.is_empty() {
            return Err(bad(format!(
                "scenario {} has [[faults]]: a capacity search needs steady trials — use `run`",
                sc.def.name
            )));
        }
        if sc.def.scheduler_throughput.is_some() {
            return Err(bad(format!(
                "scenario {} is a drain (one bulk renew timed to the end): its certificates/s is its ceiling — use `run`",
                sc.def.name
            )));
        }
        let base = open_load(sc, args.label.as_deref())?;
        let criteria = Criteria::of(&base, args.slo_p99_ms, args.max_error_rate);
        if criteria.slo_p99_ms.iter().all(Option::is_none) {
            return Err(bad(format!(
                "scenario {} has no p99 threshold to use as the SLO: pass --slo-p99-ms",
                base.def.name
            )));
        }
        let reset = !args.no_reset && matches!(run.mode, crate::cli::Mode::Embedded { .. });
        Ok(CeilingPlan {
            run,
            base,
            label: args.label.clone(),
            criteria,
            params: SearchParams {
                precision: args.precision,
                confirmations: args.confirmations as usize,
                max_factor: 4096.0,
                max_trials: args.max_trials as usize,
            },
            warmup: Duration::from_secs(args.warmup_s),
            trial: Duration::from_secs(args.trial_s),
            confirm: Duration::from_secs(args.confirm_s),
            reset,
        })
    }

    /// The trial of `phase` at `factor` × the base rates.
    pub fn trial_load(&self, phase: Phase, factor: f64) -> ResolvedScenario {
        let measure = if phase == Phase::Confirm { self.confirm } else { self.trial };
        self.base.steady_trial(factor, self.warmup, measure)
    }
}

/// The scenario as an open-model load at its own rates. A closed scenario's sequence becomes
/// open arrivals: each of its scheduled labels at `users / (1 s + pause)` per second (one
/// iteration a second per user, plus its pause), the rate its users would reach if each
/// iteration took a second. With `label`, the other scheduled labels offer nothing (they keep
/// their place, so per-label data stays aligned with the scenario file).
pub fn open_load(sc: &ResolvedScenario, label: Option<&str>) -> Result<ResolvedScenario, HarnessError> {
    let mut base = sc.clone();
    if base.def.load.model == Model::Closed {
        let users = base.users.unwrap_or(1) as f64;
        let per_label = users / (1.0 + base.def.load.pause_ms as f64 / 1000.0);
        base.def.load.model = Model::Open;
        base.users = None;
        base.rates = base.def.requests.iter().map(|r| if r.follow_up { 0.0 } else { per_label }).collect();
    }
    base.def.load.stages.clear();
    if let Some(l) = label {
        let Some(i) = base.def.requests.iter().position(|r| r.label == l) else {
            return Err(HarnessError::Config(format!("scenario {} has no label '{l}'", base.def.name)));
        };
        if base.def.requests[i].follow_up {
            return Err(HarnessError::Config(format!(
                "label {l} is a follow-up: its arrivals follow another label's answers; search that label"
            )));
        }
        for (j, r) in base.rates.iter_mut().enumerate() {
            if j != i {
                *r = 0.0;
            }
        }
    }
    Ok(base)
}

/// `ceiling`: the search, with teardown on every path.
pub async fn run(plan: CeilingPlan) -> Outcome {
    let cancel = cancel_flag();
    let dir = plan.run.out_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Outcome { code: 2, message: HarnessError::io(&dir, e).to_string(), run_dir: None };
    }
    let started_at = chrono::Utc::now();
    let mut target = match target::start(&runner::target_spec(&plan.run), &cancel).await {
        Ok(t) => t,
        Err(e) => return Outcome { code: 2, message: e.to_string(), run_dir: None },
    };
    let result = search(&plan, &mut target, &cancel, started_at).await;
    target.teardown();
    match result {
        Ok(c) => {
            let code = c.exit_code();
            Outcome { code, message: c.verdict.clone(), run_dir: Some(dir) }
        }
        Err(e) => Outcome { code: 2, message: e.to_string(), run_dir: Some(dir) },
    }
}

/// The search on a started target (seeds what the plan's fixtures still need, saves the
/// template, runs the trials, writes the output); `ab --rate-fraction` runs it on side A.
pub(crate) async fn search(
    plan: &CeilingPlan,
    target: &mut Target,
    cancel: &Arc<AtomicBool>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<Ceiling, HarnessError> {
    let wall = Instant::now();
    let pool = target::open_database(target).await?;
    let mut seeding: Option<SeedReport> = None;
    runner::seed_for(&plan.run, target, &plan.base, &mut seeding).await?;
    let pss_status = trial::prepare_pss(pool.as_ref()).await;
    let reset_note = if plan.reset {
        target.snapshot(cancel).await?;
        "every trial starts from the same database: the seeded state, cloned from a template database".to_string()
    } else if target.can_reset() {
        "--no-reset: each trial starts from the state the previous one left".to_string()
    } else {
        "external target: the harness cannot put its database back, so each trial starts from the state the \
         previous one left (rows created by earlier trials stay)"
            .to_string()
    };
    eprintln!(
        "[ceiling {}] from {:.1}/s offered{}; SLO p99 {}; trials {} s + {} s warm-up, confirmations {} × {} s",
        plan.base.def.name,
        plan.base.offered_rate(),
        plan.label.as_deref().map(|l| format!(" (label {l} alone)")).unwrap_or_default(),
        output::slo_text(&plan.base, &plan.criteria),
        plan.trial.as_secs(),
        plan.warmup.as_secs(),
        plan.params.confirmations,
        plan.confirm.as_secs()
    );
    let live = runner::start_live(&plan.run, target).await?;
    let mut cfg = runner::engine_config(&plan.run, target, cancel, live.as_ref());
    // One progress line per trial is enough during a search.
    cfg.progress = false;
    let mut s = Search::new(plan.params);
    let mut trials: Vec<TrialRecord> = Vec::new();
    while let Some((phase, factor)) = s.next_trial() {
        if cancel.load(Ordering::Relaxed) {
            return Err(HarnessError::Interrupted);
        }
        if plan.reset && !trials.is_empty() {
            target.reset(cancel).await?;
        }
        let rec = one_trial(plan, target, pool.as_ref(), &pss_status, &cfg, trials.len() + 1, phase, factor).await?;
        eprintln!("[ceiling {}] {}", plan.base.def.name, rec.progress_line());
        s.record(phase, factor, rec.passed, rec.harness_bound.is_some());
        trials.push(rec);
    }
    let c = Ceiling::new(plan, target, started_at, seeding, reset_note, &s, trials, wall.elapsed());
    output::write(&plan.run.out_dir, &c)?;
    println!("{}", c.verdict);
    println!("run directory: {}", plan.run.out_dir.display());
    Ok(c)
}

#[allow(clippy::too_many_arguments)]
async fn one_trial(
    plan: &CeilingPlan,
    target: &Target,
    pool: Option<&sqlx::PgPool>,
    pss_status: &str,
    cfg: &EngineConfig,
    n: usize,
    phase: Phase,
    factor: f64,
) -> Result<TrialRecord, HarnessError> {
    let sc = plan.trial_load(phase, factor);
    let env = TrialEnv { cfg, pool, pss_status };
    let (before, busy_before, t) = (judge::machine_ticks(), judge::runtime_busy().0, Instant::now());
    let result = trial::run(env, &sc, target.procs(), None).await?;
    let machine_busy = judge::machine_busy(before, judge::machine_ticks());
    let generator_busy = judge::runtime_busy_percent(busy_before, judge::runtime_busy(), t.elapsed());
    let hlog = format!("{}.trial-{n:02}.hlog", sc.def.name);
    result.write_hlog(&plan.run.out_dir, &hlog, &sc)?;
    let (server, generator, postgres) = trial::cpu_split(&result.observed.samples, sc.warmup.as_secs_f64());
    let cpu = CpuSplit {
        server,
        generator,
        postgres,
        machine_busy,
        generator_threads: tokio::runtime::Handle::current().metrics().num_workers(),
        generator_busy,
    };
    let (w, m) = (sc.warmup.as_secs(), (sc.duration - sc.warmup).as_secs());
    let readings = judge::readings(&sc, &result.run.labels, &result.run.schedule, w, m);
    let failures = judge::failures(&readings, &result.run.schedule, &plan.criteria);
    let harness_bound = judge::harness_bound(&failures, &readings, &plan.criteria, &cpu);
    Ok(TrialRecord {
        n,
        phase,
        factor,
        offered_rate: sc.offered_rate(),
        achieved_rate: readings.iter().filter(|r| r.offered.is_some()).map(|r| r.achieved).sum(),
        passed: failures.is_empty(),
        failures,
        harness_bound,
        cpu,
        labels: readings,
        warmup_s: w,
        measure_s: m,
        hlog,
    })
}

//! `ab`: a regression gate that compares two server builds in one job, on one machine.
//!
//! Data flow: [`AbPlan::from_args`] validates the options (starts nothing). [`run`] starts the
//! rig — embedded: one throw-away PostgreSQL with side A's server, seeded once and saved as a
//! template; external (`--a-url`/`--b-url`): two running servers — and, with
//! `--rate-fraction`, measures A's ceiling first with the `ceiling` search
//! ([`crate::ceiling::search`]). Then each round runs one [`crate::trial`] of A and one of B
//! in random order (seeded, recorded); in embedded mode every trial starts on a fresh clone of
//! the template with that side's binary and settings, and the clone's fingerprint is recorded.
//! [`compare`] turns the rounds into per label × metric ratios, tests and verdicts (adding
//! rounds up to `--max-rounds` while any is inconclusive), and [`output`] writes `ab.json`,
//! `report.md`, the ratio chart and the trials' `.hlog`s.

pub mod chart;
pub mod compare;
pub mod output;
pub mod page;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::ceiling::{self, CeilingPlan};
use crate::cli::{AbArgs, CeilingArgs, CommonArgs, MinEffects, Mode, RunArgs, RunPlan};
use crate::runner::{self, cancel_flag};
use crate::scenario::ResolvedScenario;
use crate::seed::SeedReport;
use crate::target::{self, Target, TargetSpec};
use crate::trial::{self, TrialEnv};
use crate::{HarnessError, Outcome};
use compare::{Judging, Metric};
use output::{Ab, RateInfo, Round, SideInfo, TrialRecord, Value};

/// Label of the scenario-level values (throughput).
pub const SCENARIO_LABEL: &str = "_scenario";
/// Side names, in index order.
pub const SIDES: [&str; 2] = ["a", "b"];

/// One side of the comparison.
#[derive(Debug, Clone)]
pub struct Side {
    /// Server binary (embedded mode).
    pub bin: Option<PathBuf>,
    /// Base URL (external mode).
    pub url: Option<String>,
    /// Settings for its server.
    pub env: Vec<(String, String)>,
}

/// How the trial rate is chosen.
#[derive(Debug, Clone)]
pub enum RateChoice {
    /// The profile's rates.
    Profile,
    /// A total offered rate.
    Fixed(f64),
    /// A fraction of A's ceiling, searched with this plan first.
    Fraction(f64, Box<CeilingPlan>),
}

/// A validated `ab`.
#[derive(Debug, Clone)]
pub struct AbPlan {
    /// Fleet, schedule and output options; its mode is side A's.
    pub run: RunPlan,
    /// The scenario as an open-model load at the profile's rates (drains as they are).
    pub base: ResolvedScenario,
    /// A and B.
    pub sides: [Side; 2],
    /// The trial rate.
    pub rate: RateChoice,
    /// `--rounds`.
    pub rounds: usize,
    /// `--max-rounds`.
    pub max_rounds: usize,
    /// Warm-up of each trial.
    pub warmup: Duration,
    /// Measured window of each trial.
    pub trial: Duration,
    /// Verdict parameters (incl. the seed).
    pub judging: Judging,
    /// `--strict`.
    pub strict: bool,
}

fn parse_env(list: &[String], flag: &str) -> Result<Vec<(String, String)>, HarnessError> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.to_string(), v.to_string())),
            _ => Err(HarnessError::Config(format!("{flag} wants KEY=VALUE, got '{kv}'"))),
        })
        .collect()
}

fn check_fraction(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), HarnessError> {
    if v.is_finite() && v > lo && v < hi {
        Ok(())
    } else {
        Err(HarnessError::Config(format!("{name} must be between {lo} and {hi} (exclusive), got {v}")))
    }
}

fn check_args(args: &AbArgs) -> Result<(), HarnessError> {
    if args.common.target.is_some() || args.common.server_bin.is_some() {
        return Err(HarnessError::Config(
            "ab takes its servers from --a-bin/--b-bin (or --a-url/--b-url), not --target/--server-bin".into(),
        ));
    }
    if args.common.replicas > 1 {
        return Err(HarnessError::Config("ab compares single servers: drop --replicas".into()));
    }
    let m = MinEffects {
        p50: args.min_effect_p50,
        p95: args.min_effect_p95,
        p99: args.min_effect_p99,
        error_rate: args.min_effect_errors,
        throughput: args.min_effect_throughput,
    };
    for (name, v) in [("p50", m.p50), ("p95", m.p95), ("p99", m.p99), ("errors", m.error_rate)] {
        check_fraction(&format!("--min-effect-{name}"), v, 0.0, 100.0)?;
    }
    check_fraction("--min-effect-throughput", m.throughput, 0.0, 100.0)?;
    check_fraction("--confidence", args.confidence, 0.5, 1.0)?;
    check_fraction("--alpha", args.alpha, 0.0, 1.0)?;
    if let Some(r) = args.rate {
        check_fraction("--rate", r, 0.0, 1e6)?;
    }
    if let Some(f) = args.rate_fraction {
        check_fraction("--rate-fraction", f, 0.0, 2.0)?;
    }
    if args.max_rounds.is_some_and(|m| m < args.rounds) {
        return Err(HarnessError::Config("--max-rounds must be at least --rounds".into()));
    }
    Ok(())
}

impl AbPlan {
    /// Validates `args` (reads the scenario file; starts nothing).
    pub fn from_args(args: &AbArgs) -> Result<Self, HarnessError> {
        check_args(args)?;
        let sides = [
            Side { bin: args.a_bin.clone(), url: args.a_url.clone(), env: parse_env(&args.a_env, "--a-env")? },
            Side { bin: args.b_bin.clone(), url: args.b_url.clone(), env: parse_env(&args.b_env, "--b-env")? },
        ];
        if let Some(b) = &sides[1].bin {
            crate::embedded::find_server_bin(Some(b))?;
        }
        let out = args.out.clone().unwrap_or_else(|| {
            PathBuf::from("artifacts/runs").join(format!(
                "{}-{}-ab-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                crate::host::git_commit(),
                args.scenario
            ))
        });
        let common = CommonArgs { target: args.a_url.clone(), server_bin: args.a_bin.clone(), ..args.common.clone() };
        let run_args = RunArgs {
            scenarios: vec![args.scenario.clone()],
            profile: args.profile,
            out: Some(out.clone()),
            baseline: None,
            shard: None,
            start_at: None,
            start_in: None,
            faults: Vec::new(),
            common: common.clone(),
        };
        let mut run = RunPlan::from_args(&run_args)?;
        run.progress = false;
        let sc = run.scenarios.first().ok_or_else(|| HarnessError::Config("no scenario".into()))?.clone();
        if !sc.def.faults.is_empty() {
            return Err(HarnessError::Config(format!(
                "scenario {} has [[faults]]: an A/B comparison needs steady trials — use `run`",
                sc.def.name
            )));
        }
        let drain = sc.def.scheduler_throughput.is_some();
        if drain && (args.rate.is_some() || args.rate_fraction.is_some()) {
            return Err(HarnessError::Config(format!(
                "scenario {} is a drain (one bulk renew timed to the end): it has no rate to set",
                sc.def.name
            )));
        }
        let base = if drain { sc } else { ceiling::open_load(&sc, None)? };
        let rate = match (args.rate, args.rate_fraction) {
            (Some(r), _) => RateChoice::Fixed(r),
            (None, Some(f)) => RateChoice::Fraction(f, Box::new(ceiling_plan(args, &common, &run, out)?)),
            (None, None) => RateChoice::Profile,
        };
        let rounds = args.rounds as usize;
        Ok(AbPlan {
            run,
            base,
            sides,
            rate,
            rounds,
            max_rounds: args.max_rounds.map_or(rounds, |m| m as usize),
            warmup: Duration::from_secs(args.warmup_s),
            trial: Duration::from_secs(args.trial_s),
            judging: Judging {
                min_effects: MinEffects {
                    p50: args.min_effect_p50,
                    p95: args.min_effect_p95,
                    p99: args.min_effect_p99,
                    error_rate: args.min_effect_errors,
                    throughput: args.min_effect_throughput,
                },
                confidence: args.confidence,
                alpha: args.alpha,
                seed: args.seed.unwrap_or_else(rand::random),
            },
            strict: args.strict,
        })
    }

    /// The load of every trial at `factor` × the base rates (drains as they are).
    pub fn trial_load(&self, factor: f64) -> ResolvedScenario {
        if self.base.def.scheduler_throughput.is_some() {
            return self.base.clone();
        }
        self.base.steady_trial(factor, self.warmup, self.trial)
    }
}

/// The `ceiling` search `--rate-fraction` runs on A first: ab's warm-up and trial length (twice
/// that for the confirmations), the ceiling's other defaults, written to `<out>/ceiling`,
/// against the rig `run` starts (same key; the fixtures are already applied).
fn ceiling_plan(args: &AbArgs, common: &CommonArgs, run: &RunPlan, out: PathBuf) -> Result<CeilingPlan, HarnessError> {
    use clap::{Args as _, FromArgMatches as _};
    let cmd = CeilingArgs::augment_args(clap::Command::new("ceiling"));
    let m = cmd
        .try_get_matches_from([
            "ceiling".to_string(),
            "--scenario".into(),
            args.scenario.clone(),
            "--warmup-s".into(),
            args.warmup_s.max(1).to_string(),
            "--trial-s".into(),
            args.trial_s.to_string(),
            "--confirm-s".into(),
            (2 * args.trial_s).to_string(),
        ])
        .map_err(|e| HarnessError::Config(e.to_string()))?;
    let mut c = CeilingArgs::from_arg_matches(&m).map_err(|e| HarnessError::Config(e.to_string()))?;
    c.common = common.clone();
    c.out = Some(out.join("ceiling"));
    let mut plan = CeilingPlan::from_args(&c)?;
    plan.run.api_key = run.api_key.clone();
    plan.run.fixtures.clear();
    plan.run.progress = false;
    Ok(plan)
}

/// The order of the next round, from the seeded generator: `[0, 1]` A first, `[1, 0]` B first.
pub fn next_order(rng: &mut StdRng) -> [usize; 2] {
    if rng.random_bool(0.5) { [0, 1] } else { [1, 0] }
}

/// The orders of the first `n` rounds of a comparison seeded with `seed`.
pub fn round_orders(seed: u64, n: usize) -> Vec<[usize; 2]> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| next_order(&mut rng)).collect()
}

/// What the comparison drives: one embedded environment whose server is swapped between
/// trials, or two external servers.
enum Rig {
    Shared(Box<Target>),
    Pair(Box<[Target; 2]>),
}

impl Rig {
    async fn start(plan: &AbPlan, cancel: &Arc<AtomicBool>) -> Result<Rig, HarnessError> {
        let mut spec = runner::target_spec(&plan.run);
        if matches!(plan.run.mode, Mode::Embedded { .. }) {
            spec.extra_env = plan.sides[0].env.clone();
            return Ok(Rig::Shared(Box::new(target::start(&spec, cancel).await?)));
        }
        let ext = |url: &Option<String>| TargetSpec {
            mode: Mode::External { target: url.clone().unwrap_or_default(), database_url: None },
            ..spec.clone()
        };
        let a = target::start(&ext(&plan.sides[0].url), cancel).await?;
        let b = target::start(&ext(&plan.sides[1].url), cancel).await?;
        Ok(Rig::Pair(Box::new([a, b])))
    }

    fn target(&self, side: usize) -> &Target {
        match self {
            Rig::Shared(t) => t,
            Rig::Pair(p) => &p[side],
        }
    }

    fn a_mut(&mut self) -> &mut Target {
        match self {
            Rig::Shared(t) => t,
            Rig::Pair(p) => &mut p[0],
        }
    }

    /// Puts the state back for `side`'s next trial; the database's fingerprint (embedded).
    async fn prepare(
        &mut self,
        plan: &AbPlan,
        side: usize,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Option<String>, HarnessError> {
        match self {
            Rig::Shared(t) => {
                let s = &plan.sides[side];
                let bin = s.bin.clone().ok_or_else(|| HarnessError::Config("embedded side without a binary".into()))?;
                t.reset_as(&bin, &s.env, cancel).await
            }
            Rig::Pair(_) => Ok(None),
        }
    }

    fn teardown(&mut self) {
        match self {
            Rig::Shared(t) => t.teardown(),
            Rig::Pair(p) => p.iter_mut().for_each(Target::teardown),
        }
    }
}

/// `ab`: the comparison, with teardown on every path.
pub async fn run(plan: AbPlan) -> Outcome {
    let cancel = cancel_flag();
    let dir = plan.run.out_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Outcome { code: 2, message: HarnessError::io(&dir, e).to_string(), run_dir: None };
    }
    let started_at = chrono::Utc::now();
    let mut rig = match Rig::start(&plan, &cancel).await {
        Ok(r) => r,
        Err(e) => return Outcome { code: 2, message: e.to_string(), run_dir: None },
    };
    let result = drive(&plan, &mut rig, &cancel, started_at).await;
    rig.teardown();
    match result {
        Ok(ab) => Outcome { code: ab.outcome.exit_code, message: ab.outcome.text.clone(), run_dir: Some(dir) },
        Err(e) => Outcome { code: 2, message: e.to_string(), run_dir: Some(dir) },
    }
}

/// The rig's databases and `pg_stat_statements` status, per side.
struct Databases {
    pools: [Option<PgPool>; 2],
    pss: [String; 2],
    seeding: Option<SeedReport>,
}

/// Seeds once and saves the template (embedded); opens each side's pool.
async fn prepare(plan: &AbPlan, rig: &mut Rig, cancel: &Arc<AtomicBool>) -> Result<Databases, HarnessError> {
    let mut seeding = None;
    let pools = match rig {
        Rig::Shared(t) => {
            let pool = target::open_database(t).await?;
            runner::seed_for(&plan.run, t, &plan.base, &mut seeding).await?;
            t.snapshot(cancel).await?;
            [pool.clone(), pool]
        }
        Rig::Pair(p) => {
            let [a, b] = &mut **p;
            [target::open_database(a).await?, target::open_database(b).await?]
        }
    };
    let pss = [trial::prepare_pss(pools[0].as_ref()).await, trial::prepare_pss(pools[1].as_ref()).await];
    Ok(Databases { pools, pss, seeding })
}

/// The factor of the base rates every trial runs at, and how it was chosen.
async fn choose_rate(plan: &AbPlan, rig: &mut Rig, cancel: &Arc<AtomicBool>) -> Result<(f64, RateInfo), HarnessError> {
    let base = plan.base.offered_rate();
    let info = |source: &str, rate: Option<f64>| RateInfo {
        source: source.into(),
        offered_rate: rate,
        fraction: None,
        ceiling_rate: None,
        ceiling_dir: None,
    };
    if plan.base.def.scheduler_throughput.is_some() {
        return Ok((1.0, info("drain", None)));
    }
    match &plan.rate {
        RateChoice::Profile => Ok((1.0, info("profile", Some(base)))),
        RateChoice::Fixed(r) => Ok((r / base.max(1e-12), info("fixed", Some(*r)))),
        RateChoice::Fraction(f, cp) => {
            let cdir = cp.run.out_dir.clone();
            std::fs::create_dir_all(&cdir).map_err(|e| HarnessError::io(&cdir, e))?;
            eprintln!("[ab {}] measuring A's ceiling first ({})", plan.base.def.name, cdir.display());
            let c = ceiling::search(cp, rig.a_mut(), cancel, chrono::Utc::now()).await?;
            let Some(ceil) = c.answer.rate.filter(|_| c.exit_code() == 0) else {
                return Err(HarnessError::Target(format!("no ceiling of A to take a fraction of: {}", c.verdict)));
            };
            let rate = f * ceil;
            let mut i = info("ceiling_fraction", Some(rate));
            i.fraction = Some(*f);
            i.ceiling_rate = Some(ceil);
            i.ceiling_dir = Some("ceiling".into());
            Ok((rate / base.max(1e-12), i))
        }
    }
}

async fn drive(
    plan: &AbPlan,
    rig: &mut Rig,
    cancel: &Arc<AtomicBool>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<Ab, HarnessError> {
    let wall = Instant::now();
    let dbs = prepare(plan, rig, cancel).await?;
    let (factor, rate) = choose_rate(plan, rig, cancel).await?;
    let sc = plan.trial_load(factor);
    eprintln!(
        "[ab {}] {} rounds (up to {}), {}; A {} vs B {}",
        sc.def.name,
        plan.rounds,
        plan.max_rounds,
        match rate.offered_rate {
            Some(r) =>
                format!("{r:.1}/s offered, {} s + {} s warm-up per trial", plan.trial.as_secs(), plan.warmup.as_secs()),
            None => "one drain per trial".into(),
        },
        side_name(&plan.sides[0]),
        side_name(&plan.sides[1])
    );
    let mut rng = StdRng::seed_from_u64(plan.judging.seed);
    let mut rounds: Vec<Round> = Vec::new();
    let mut comparisons = Vec::new();
    while rounds.len() < plan.rounds || compare::wants_more(&comparisons, rounds.len(), plan.max_rounds) {
        // (Comparisons of fewer than --rounds rounds are only the partial files' content.)
        let n = rounds.len() + 1;
        let order = next_order(&mut rng);
        let mut trials: [Option<TrialRecord>; 2] = [None, None];
        for side in order {
            if cancel.load(Ordering::Relaxed) {
                return Err(HarnessError::Interrupted);
            }
            let rec = one_trial(plan, rig, &dbs, &sc, cancel, n, side).await?;
            eprintln!("[ab {}] round {n} {}: {}", sc.def.name, SIDES[side].to_uppercase(), progress(&rec));
            trials[side] = Some(rec);
        }
        let [Some(a), Some(b)] = trials else { unreachable!("both sides ran") };
        rounds.push(Round { n, order: order.map(|i| SIDES[i].to_string()), a, b });
        comparisons = compare::compare_all(&rounds, &plan.judging);
        // After every round: an interrupted or timed-out comparison leaves what it measured.
        let partial = assemble(
            plan,
            rig,
            dbs.seeding.clone(),
            rate.clone(),
            rounds.clone(),
            comparisons.clone(),
            started_at,
            wall.elapsed(),
        );
        output::write(&plan.run.out_dir, &partial)?;
    }
    let ab = assemble(plan, rig, dbs.seeding, rate, rounds, comparisons, started_at, wall.elapsed());
    output::write(&plan.run.out_dir, &ab)?;
    println!("{}", output::table(&ab));
    println!("{}", ab.outcome.text);
    println!("run directory: {}", plan.run.out_dir.display());
    Ok(ab)
}

fn side_name(s: &Side) -> String {
    let what = s.bin.as_ref().map(|b| b.display().to_string()).or_else(|| s.url.clone()).unwrap_or_default();
    let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if env.is_empty() { what } else { format!("{what} ({})", env.join(" ")) }
}

fn progress(t: &TrialRecord) -> String {
    let parts: Vec<String> = t
        .values
        .iter()
        .filter(|v| matches!(v.metric, Metric::P50 | Metric::P99 | Metric::Throughput))
        .map(|v| match v.metric {
            Metric::Throughput => format!("{:.0} certificates/s", v.value),
            m => format!("{} {} {:.2} ms", v.label, m.as_str(), v.value),
        })
        .collect();
    format!("{}; {} requests in {:.1} s", parts.join(", "), t.requests, t.wall_s)
}

async fn one_trial(
    plan: &AbPlan,
    rig: &mut Rig,
    dbs: &Databases,
    sc: &ResolvedScenario,
    cancel: &Arc<AtomicBool>,
    n: usize,
    side: usize,
) -> Result<TrialRecord, HarnessError> {
    let db_fingerprint = rig.prepare(plan, side, cancel).await?;
    let target = rig.target(side);
    let cfg = runner::engine_config(&plan.run, target, cancel, None);
    let env = TrialEnv { cfg: &cfg, pool: dbs.pools[side].as_ref(), pss_status: &dbs.pss[side] };
    let result = trial::run(env, sc, target.procs(), None).await?;
    let hlog = format!("{}.round-{n:02}-{}.hlog", sc.def.name, SIDES[side]);
    result.write_hlog(&plan.run.out_dir, &hlog, sc)?;
    Ok(TrialRecord {
        side: SIDES[side].into(),
        hlog,
        db_fingerprint,
        wall_s: result.wall.as_secs_f64(),
        requests: result.run.labels.iter().map(|l| l.count()).sum(),
        values: values(sc, &result),
    })
}

/// The values a trial is compared by: per label with requests in the window, corrected
/// p50/p95/p99 and the error rate; a drain's or a fleet scenario's certificates/s.
pub fn values(sc: &ResolvedScenario, r: &trial::TrialResult) -> Vec<Value> {
    let mut out = Vec::new();
    let v = |label: &str, metric, value| Value { label: label.to_string(), metric, value };
    if let Some(st) = &r.throughput {
        if let Some(Some(x)) = st.metrics().get(crate::scenario::scheduler_throughput::RATE) {
            out.push(v(SCENARIO_LABEL, Metric::Throughput, *x));
        }
        return out;
    }
    let (w, m) = (sc.warmup.as_secs(), (sc.duration - sc.warmup).as_secs());
    for l in ceiling::judge::readings(sc, &r.run.labels, &r.run.schedule, w, m).iter().filter(|l| l.count > 0) {
        out.push(v(&l.label, Metric::P50, l.corrected.p50));
        out.push(v(&l.label, Metric::P95, l.corrected.p95));
        out.push(v(&l.label, Metric::P99, l.corrected.p99));
        out.push(v(&l.label, Metric::ErrorRate, l.error_rate));
    }
    if let Some(x) = r.observed.fleet_renewal.as_ref().and_then(|f| f.judged_rate()) {
        out.push(v(SCENARIO_LABEL, Metric::Throughput, x));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    plan: &AbPlan,
    rig: &Rig,
    seeding: Option<SeedReport>,
    rate: RateInfo,
    rounds: Vec<Round>,
    comparisons: Vec<compare::Comparison>,
    started_at: chrono::DateTime<chrono::Utc>,
    wall: Duration,
) -> Ab {
    let ts = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let fps: Vec<&String> =
        rounds.iter().flat_map(|r| [&r.a, &r.b]).filter_map(|t| t.db_fingerprint.as_ref()).collect();
    let databases_equal = (!fps.is_empty()).then(|| fps.windows(2).all(|w| w[0] == w[1]));
    let state_reset = match rig {
        Rig::Shared(_) => {
            "one PostgreSQL, seeded once; every trial on a fresh clone of the seeded template, with that \
                           side's server started on it"
        }
        Rig::Pair(_) => {
            "external servers: the harness cannot put their state back; trials start from what earlier \
                         ones left"
        }
    };
    let sides = (0..2)
        .map(|i| {
            let s = &plan.sides[i];
            let info = SideInfo {
                bin: s.bin.as_ref().map(|b| b.display().to_string()),
                url: rig.target(i).base_url.clone(),
                env: s.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            };
            (SIDES[i].to_string(), info)
        })
        .collect();
    let target = rig.target(0);
    Ab {
        schema_version: output::SCHEMA_VERSION,
        tool: format!("certctl-loadtest {}", env!("CARGO_PKG_VERSION")),
        commit: crate::host::git_commit(),
        started_at: ts(started_at),
        finished_at: ts(chrono::Utc::now()),
        duration_s: wall.as_secs_f64(),
        host: crate::host::HostInfo::detect(),
        postgres: target.postgres.clone(),
        mode: target.mode.into(),
        server_settings: target.server_env.clone(),
        seeding,
        scenario: plan.base.def.name.clone(),
        profile: plan.run.profile.clone(),
        rate,
        warmup_s: plan.warmup.as_secs(),
        trial_s: plan.trial.as_secs(),
        rounds_planned: plan.rounds,
        max_rounds: plan.max_rounds,
        seed: plan.judging.seed,
        strict: plan.strict,
        judging: plan.judging,
        sides,
        state_reset: state_reset.into(),
        databases_equal,
        outcome: output::outcome(&plan.base.def.name, &comparisons, plan.strict),
        rounds,
        comparisons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_order_is_random_but_reproducible_from_its_seed() {
        let o = round_orders(42, 200);
        assert_eq!(o, round_orders(42, 200));
        assert_ne!(o, round_orders(43, 200));
        let a_first = o.iter().filter(|x| **x == [0, 1]).count();
        // Binomial(200, ½): 100 ± 3σ (σ ≈ 7.1).
        assert!((79..=121).contains(&a_first), "{a_first} of 200 rounds A first");
        assert!(o.iter().all(|x| *x == [0, 1] || *x == [1, 0]));
    }

    #[test]
    fn settings_are_key_value_pairs() {
        assert_eq!(
            parse_env(&["CERTCTL_X=1".into(), "Y=a=b".into()], "--b-env").unwrap(),
            vec![("CERTCTL_X".into(), "1".into()), ("Y".into(), "a=b".into())]
        );
        assert!(parse_env(&["novalue".into()], "--b-env").is_err());
        assert!(parse_env(&["=1".into()], "--b-env").is_err());
    }
}

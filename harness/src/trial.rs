//! A trial — the unit every load command is built from.
//!
//! A trial is one load step against one target: target × load × observers → [`TrialResult`].
//! The load is a goose schedule (open model, constant or ramped; or a closed loop) or a drain
//! (`[scheduler_throughput]`: one bulk renew, timed until every job ended). The observers —
//! resource sampler (server, generator and PostgreSQL CPU), database counters, the fleet
//! renewal counter and the `pg_stat_statements` diff — start before the load and stop after
//! it; they live in [`Observers`] alone, so adding one touches that one place.
//!
//! `run` composes one trial per scenario; `ceiling` runs a search of trials at rising rates.
//! A [`TrialResult`] turns into the same [`ScenarioSummary`] and `.hlog` whichever command ran
//! it, so `report`, `merge` and `compare` read any of them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::HarnessError;
use crate::faults::inject::Injector;
use crate::faults::invariants::Watch;
use crate::faults::{FaultEvent, FaultsSummary, analysis};
use crate::gate;
use crate::host::git_commit;
use crate::metrics::sampler::{self, Procs, Sample};
use crate::metrics::{fleet, hlog};
use crate::report::label_summary;
use crate::report::summary::{PgStatStatements, Resources, ScenarioSummary, StatementDelta};
use crate::scenario::engine::{self, EngineConfig, ScenarioRun};
use crate::scenario::scheduler_throughput::{self, SchedulerThroughput};
use crate::scenario::{Model, ResolvedScenario};

/// What a trial runs against.
#[derive(Debug, Clone, Copy)]
pub struct TrialEnv<'a> {
    /// Where and how requests go.
    pub cfg: &'a EngineConfig,
    /// The target's database, when the harness has one.
    pub pool: Option<&'a PgPool>,
    /// `pg_stat_statements` status (`available` or why not).
    pub pss_status: &'a str,
}

/// What one trial produced.
#[derive(Debug)]
pub struct TrialResult {
    /// Histograms and schedule accounting per label.
    pub run: ScenarioRun,
    /// A drain's result.
    pub throughput: Option<SchedulerThroughput>,
    /// What the observers saw.
    pub observed: Observations,
    /// Wall time of the load.
    pub wall: Duration,
    /// A trial with faults: what was done and what held.
    pub faults: Option<FaultRun>,
}

/// The observers' readings of one trial.
#[derive(Debug, Clone)]
pub struct Observations {
    /// 1-Hz resource samples, on the trial's time zero.
    pub samples: Vec<Sample>,
    /// The fleet renewal counter, summarized (scenarios with `[fleet_renewal]`).
    pub fleet_renewal: Option<fleet::FleetRenewal>,
    /// `db_metrics` as per-second rates over the trial.
    pub db_metrics: BTreeMap<String, Option<f64>>,
    /// The `pg_stat_statements` diff over the trial.
    pub pss: PgStatStatements,
}

/// Runs one trial of `sc` against `env`, sampling `procs`; `injector` (a trial with faults)
/// causes the scenario's faults beside the load, and the fault invariants are checked after it.
pub async fn run(
    env: TrialEnv<'_>,
    sc: &ResolvedScenario,
    procs: Procs,
    injector: Option<Injector<'_>>,
) -> Result<TrialResult, HarnessError> {
    let observers = Observers::start(env, sc, procs).await;
    let watch = match (&injector, env.pool) {
        (Some(i), Some(p)) => {
            let direct = i.server_urls();
            let urls = if direct.is_empty() { &env.cfg.base_urls } else { &direct };
            Some(Watch::prepare(p, urls, env.cfg.api_key.as_deref()).await?)
        }
        _ => None,
    };
    let bounds = injector.as_ref().map(Injector::bounds);
    let (t0_tx, t0_rx) = tokio::sync::watch::channel(None);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut cfg = env.cfg.clone();
    if injector.is_some() {
        cfg.started = Some(std::sync::Arc::new(t0_tx));
    }
    let t = Instant::now();
    let load = async {
        let r = load(sc, &cfg, env.pool).await;
        done_tx.send_replace(true);
        r
    };
    let drive = async {
        match injector {
            Some(i) => Some(i.drive(t0_rx, done_rx).await),
            None => None,
        }
    };
    let (load, events) = tokio::join!(load, drive);
    let wall = t.elapsed();
    let t0 = load.as_ref().ok().map(|(r, _)| r.t0);
    let observed = observers.finish(env, sc, t0, wall).await;
    let (run, throughput) = load?;
    let faults = match events {
        Some(events) => {
            let invariants = match (watch, env.pool, bounds) {
                (Some(w), Some(p), Some(b)) => {
                    eprintln!("certctl-loadtest: checking the fault invariants");
                    w.check(p, &events, b).await?
                }
                _ => Vec::new(),
            };
            Some(FaultRun { events, invariants })
        }
        None => None,
    };
    Ok(TrialResult { run, throughput, observed, wall, faults })
}

/// The load of a trial: a drain or a goose schedule.
async fn load(
    sc: &ResolvedScenario,
    cfg: &EngineConfig,
    pool: Option<&PgPool>,
) -> Result<(ScenarioRun, Option<SchedulerThroughput>), HarnessError> {
    match &sc.def.scheduler_throughput {
        Some(d) => match scheduler_throughput::run(sc, d, cfg, pool).await {
            Ok((r, st)) => Ok((r, Some(st))),
            Err(e) => Err(HarnessError::Target(e.to_string())),
        },
        // Set-up (servers, seeding) outlasted a synchronized start: the shards would not line up.
        None if cfg.start_at.is_some_and(|at| at <= std::time::SystemTime::now()) => {
            Err(HarnessError::Config(crate::clock::start_passed(cfg.start_at)))
        }
        None => engine::run_scenario(sc, cfg).await.map(|r| (r, None)).map_err(HarnessError::from),
    }
}

/// What the fault injector did and what the invariants found.
#[derive(Debug)]
pub struct FaultRun {
    /// Each fault caused (or not), in order.
    pub events: Vec<FaultEvent>,
    /// The database invariants checked after the load (empty without a database).
    pub invariants: Vec<crate::report::summary::Invariant>,
}

/// Every observer of a trial, started before the load.
struct Observers {
    sampled_from: Instant,
    sampler: sampler::Sampler,
    fleet: Option<fleet::CounterSampler>,
    counters_before: BTreeMap<String, Option<i64>>,
    pss_before: Option<PssSnapshot>,
}

impl Observers {
    async fn start(env: TrialEnv<'_>, sc: &ResolvedScenario, procs: Procs) -> Self {
        let def = &sc.def;
        let pss_before = match (env.pool, env.pss_status == "available") {
            (Some(p), true) => pss_snapshot(p).await,
            _ => None,
        };
        let mut counters_before = BTreeMap::new();
        for m in &def.db_metrics {
            counters_before.insert(m.name.clone(), db_counter(env.pool, &m.counter_sql).await);
        }
        let sampled_from = Instant::now();
        let sampler = sampler::Sampler::start(procs, env.pool.cloned(), sampled_from);
        let fleet = match (&def.fleet_renewal, env.pool) {
            (Some(f), Some(p)) => Some(fleet::CounterSampler::start(p.clone(), f.counter_sql.clone(), sampled_from)),
            _ => None,
        };
        Observers { sampled_from, sampler, fleet, counters_before, pss_before }
    }

    /// Stops every observer; `t0` is the load's time zero (samples are shifted onto it: those
    /// taken while goose launched its users go negative).
    async fn finish(
        self,
        env: TrialEnv<'_>,
        sc: &ResolvedScenario,
        t0: Option<Instant>,
        wall: Duration,
    ) -> Observations {
        let def = &sc.def;
        let mut samples = self.sampler.stop().await;
        let readings = match self.fleet {
            Some(f) => Some(f.stop().await),
            None => None,
        };
        let shift = t0.map_or(0.0, |t0| t0.saturating_duration_since(self.sampled_from).as_secs_f64());
        for s in &mut samples {
            s.t_s -= shift;
        }
        let fleet_renewal = def.fleet_renewal.as_ref().map(|f| match &readings {
            Some(r) => {
                let shifted: Vec<(f64, i64)> = r.iter().map(|&(t, v)| (t - shift, v)).collect();
                fleet::summarize(&shifted, f.window_s)
            }
            None => fleet::FleetRenewal::unavailable("no database connection (give --database-url)", f.window_s),
        });
        let mut db_metrics = BTreeMap::new();
        for m in &def.db_metrics {
            let after = db_counter(env.pool, &m.counter_sql).await;
            let rate = match (self.counters_before.get(&m.name).copied().flatten(), after) {
                (Some(b), Some(a)) => Some((a - b) as f64 / wall.as_secs_f64().max(1e-9)),
                _ => None,
            };
            db_metrics.insert(m.name.clone(), rate);
        }
        let pss = match (env.pool, self.pss_before) {
            (Some(p), Some(before)) => match pss_snapshot(p).await {
                Some(after) => PgStatStatements { status: "available".into(), top: pss_diff(&before, &after) },
                None => PgStatStatements { status: "unavailable: snapshot failed".into(), top: vec![] },
            },
            _ => PgStatStatements { status: env.pss_status.to_string(), top: vec![] },
        };
        Observations { samples, fleet_renewal, db_metrics, pss }
    }
}

impl TrialResult {
    /// Writes the trial's interval histograms as an hlog named `name` in `dir`.
    pub fn write_hlog(&self, dir: &Path, name: &str, sc: &ResolvedScenario) -> Result<(), HarnessError> {
        let comment = format!(
            "certctl-loadtest {} scenario {} profile {} commit {}",
            env!("CARGO_PKG_VERSION"),
            sc.def.name,
            sc.profile,
            git_commit()
        );
        hlog::write(&dir.join(name), self.run.started_at, &comment, &self.run.labels)
            .map_err(|e| HarnessError::Config(format!("writing {name}: {e}")))
    }

    /// The trial as a summary section: per-label statistics over the measurement window (the
    /// whole run unless the trial had a warm-up), scenario metrics and threshold verdicts.
    pub fn summarize(&self, sc: &ResolvedScenario, hlog: String) -> ScenarioSummary {
        let def = &sc.def;
        let measured_s = (sc.duration.saturating_sub(sc.warmup)).as_secs_f64();
        let labels: Vec<_> = self
            .run
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // A drain's one call and a flow's follow-ups (their arrivals follow the
                // answers) have no planned rate; a shard plans its share of each rate.
                let target_rate = (def.load.model == Model::Open && i < sc.rates.len() && !def.requests[i].follow_up)
                    .then(|| sc.shard_rate(i));
                label_summary(l, self.run.schedule.get(i).copied().unwrap_or_default(), target_rate, measured_s)
            })
            .collect();
        let mut scenario_metrics = self.observed.db_metrics.clone();
        if let Some(f) = &self.observed.fleet_renewal {
            scenario_metrics.insert(fleet::FLEET_RENEWAL_RATE.into(), f.judged_rate());
        }
        if let Some(st) = &self.throughput {
            scenario_metrics.extend(st.metrics());
        }
        let faults = self.faults.as_ref().map(|f| self.fault_summary(sc, f));
        if let Some(f) = &faults {
            scenario_metrics.extend(fault_metrics(f));
        }
        let thresholds = gate::evaluate(&def.thresholds, &labels, &scenario_metrics);
        let users = match def.load.model {
            Model::Open => (0..def.requests.len()).map(|i| sc.open_users(i)).sum(),
            Model::Closed => sc.shard_users(),
        };
        let samples = self.observed.samples.clone();
        ScenarioSummary {
            name: def.name.clone(),
            description: def.description.clone(),
            model: match (&self.throughput, def.load.model) {
                (Some(_), _) => "drain",
                (None, Model::Open) => "open",
                (None, Model::Closed) => "closed",
            }
            .into(),
            duration_s: sc.duration.as_secs_f64(),
            elapsed_s: self.run.elapsed.as_secs_f64(),
            users,
            cancelled: self.run.cancelled,
            hlog,
            labels,
            db_metrics: self.observed.db_metrics.clone(),
            thresholds,
            resources: Resources { peaks: sampler::peaks(&samples), samples },
            pg_stat_statements: self.observed.pss.clone(),
            fleet_renewal: self.observed.fleet_renewal.clone(),
            scheduler_throughput: self.throughput.clone(),
            faults,
        }
    }

    fn fault_summary(&self, sc: &ResolvedScenario, f: &FaultRun) -> FaultsSummary {
        let (faults, errors_outside, accounting) =
            analysis::analyze(sc, &self.run, &f.events, self.throughput.is_some());
        FaultsSummary { faults, errors_outside, accounting, invariants: f.invariants.clone() }
    }
}

/// `recovery_s` (the slowest fault's recovery, only when every fault recovered) and
/// `reclaim_s` (the slowest reclaim of a SIGKILLed replica's jobs) for thresholds.
fn fault_metrics(f: &FaultsSummary) -> BTreeMap<String, Option<f64>> {
    let judged: Vec<_> = f.faults.iter().filter(|x| !x.recovery.starts_with("not judged")).collect();
    let recovery = if judged.iter().all(|x| x.recovery_s.is_some()) {
        judged.iter().filter_map(|x| x.recovery_s).reduce(f64::max)
    } else {
        None
    };
    let reclaims: Vec<_> = f.faults.iter().filter_map(|x| x.reclaim.as_ref()).collect();
    let reclaim = if reclaims.iter().all(|r| r.reclaim_s.is_some()) {
        reclaims.iter().filter_map(|r| r.reclaim_s).reduce(f64::max)
    } else {
        None
    };
    BTreeMap::from([("recovery_s".to_string(), recovery), ("reclaim_s".to_string(), reclaim)])
}

/// Mean CPU of the trial's measurement window, percent of one core: (server, generator,
/// PostgreSQL).
pub fn cpu_split(samples: &[Sample], from_s: f64) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mean = |f: fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = samples.iter().filter(|s| s.t_s >= from_s).filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    (mean(|s| s.cpu_percent), mean(|s| s.generator_cpu_percent), mean(|s| s.postgres_cpu_percent))
}

/// Creates pg_stat_statements if it can; returns the status text for the summary.
pub async fn prepare_pss(pool: Option<&PgPool>) -> String {
    let Some(pool) = pool else { return "unavailable: no database connection".into() };
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

async fn db_counter(pool: Option<&PgPool>, sql: &str) -> Option<i64> {
    fleet::read_counter(pool?, sql).await.ok()
}

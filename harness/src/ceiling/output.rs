//! What `ceiling` leaves: `ceiling.json` (versioned; schema in `harness/schema/ceiling.schema.json`),
//! `report.md` with the Capacity section, the knee chart (`<scenario>-knee.png`/`.svg`:
//! offered against achieved rate, and p50/p99 per trial) and the trials' `.hlog`s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CeilingPlan;
use super::judge::{CpuSplit, Criteria, Failure, LabelReading};
use super::search::{End, Phase, Search};
use crate::HarnessError;
use crate::host::{HostInfo, git_commit};
use crate::report::summary::PostgresInfo;
use crate::scenario::ResolvedScenario;
use crate::seed::SeedReport;
use crate::target::Target;

/// Version of `ceiling.json`'s layout.
pub const SCHEMA_VERSION: u32 = 1;
/// File name.
pub const FILE: &str = "ceiling.json";

/// One trial of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// 1-based trial number.
    pub n: usize,
    /// Probe, bisect or confirm.
    pub phase: Phase,
    /// Factor of the scenario's rates.
    pub factor: f64,
    /// Total offered rate over the scheduled labels, per second.
    pub offered_rate: f64,
    /// Total completions per second within the measured window (scheduled labels).
    pub achieved_rate: f64,
    /// Whether every criterion held.
    pub passed: bool,
    /// The criteria that failed.
    pub failures: Vec<Failure>,
    /// Why the generator, not the server, broke the criteria (when it did).
    pub harness_bound: Option<String>,
    /// CPU split over the measured window.
    pub cpu: CpuSplit,
    /// Per-label readings.
    pub labels: Vec<LabelReading>,
    /// Warm-up seconds.
    pub warmup_s: u64,
    /// Measured seconds.
    pub measure_s: u64,
    /// The trial's interval histograms.
    pub hlog: String,
}

impl TrialRecord {
    /// The progress line printed after the trial.
    pub fn progress_line(&self) -> String {
        let worst =
            self.labels.iter().filter(|l| l.count > 0).max_by(|a, b| a.corrected.p99.total_cmp(&b.corrected.p99));
        let lat = worst
            .map(|l| format!("p50 {:.2} ms, p99 {:.2} ms ({})", l.corrected.p50, l.corrected.p99, l.label))
            .unwrap_or_default();
        let verdict = match &self.harness_bound {
            Some(why) if !self.passed => format!("HARNESS-BOUND: {why}"),
            _ => self.verdict_text(),
        };
        format!(
            "trial {} {:?} ×{:.3}: offered {:.1}/s, achieved {:.1}/s, {lat}; cpu server {} generator {} postgres {} — {verdict}",
            self.n,
            self.phase,
            self.factor,
            self.offered_rate,
            self.achieved_rate,
            pct(self.cpu.server),
            pct(self.cpu.generator),
            pct(self.cpu.postgres),
        )
    }
}

impl TrialRecord {
    /// The worst label's corrected p50 and p99 (ms).
    pub fn worst_p50_p99(&self) -> (f64, f64) {
        self.labels
            .iter()
            .filter(|l| l.count > 0)
            .fold((0.0f64, 0.0f64), |(a, b), l| (a.max(l.corrected.p50), b.max(l.corrected.p99)))
    }

    /// `pass`, `harness-bound` or `fail: <criteria>`.
    pub fn verdict_text(&self) -> String {
        match (&self.harness_bound, self.passed) {
            (_, true) => "pass".into(),
            (Some(_), false) => "harness-bound".into(),
            (None, false) => {
                format!("fail: {}", self.failures.iter().map(Failure::describe).collect::<Vec<_>>().join("; "))
            }
        }
    }
}

/// A CPU share as `43 %` (`n/a` when not sampled).
pub fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} %")).unwrap_or_else(|| "n/a".into())
}

/// The answer of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// How the search ended.
    pub end: End,
    /// Highest confirmed (or, short of `found`, passing) total offered rate, per second.
    pub rate: Option<f64>,
    /// [last pass, first fail] in total offered rate per second.
    pub bracket: Option<[f64; 2]>,
    /// The criteria the first failing rate failed (`found`: the trial that set the bracket's top).
    pub failing_criteria: Vec<String>,
    /// With `harness_bound`: the offered rate at which the generator became the limit.
    pub harness_bound_at: Option<f64>,
    /// The CPU split at the answer (its last passing trial).
    pub cpu_at_answer: Option<CpuSplit>,
}

/// `ceiling.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// Layout version.
    pub schema_version: u32,
    /// `certctl-loadtest X.Y.Z`.
    pub tool: String,
    /// Commit of the harness.
    pub commit: String,
    /// When the search started (RFC 3339).
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
    /// Wall time of the whole search, seconds.
    pub duration_s: f64,
    /// The machine.
    pub host: HostInfo,
    /// PostgreSQL.
    pub postgres: Option<PostgresInfo>,
    /// `embedded` or `external`.
    pub mode: String,
    /// The server(s) driven.
    pub target: String,
    /// Server settings (embedded).
    pub server_settings: BTreeMap<String, String>,
    /// Fixtures applied.
    pub seeding: Option<SeedReport>,
    /// Scenario.
    pub scenario: String,
    /// `--label`, when one label was searched alone.
    pub label: Option<String>,
    /// Per-label rates at factor 1.0 (scenario order).
    pub base_rates: BTreeMap<String, f64>,
    /// The criteria.
    pub criteria: Criteria,
    /// Search parameters.
    pub precision: f64,
    /// Confirmations required.
    pub confirmations: usize,
    /// Warm-up, search-trial and confirmation seconds.
    pub warmup_s: u64,
    /// Measured seconds of a search trial.
    pub trial_s: u64,
    /// Measured seconds of a confirmation trial.
    pub confirm_s: u64,
    /// How trials started from a common database state, or why they could not.
    pub state_reset: String,
    /// The answer.
    pub answer: Answer,
    /// What the answer means for a fleet.
    pub meaning: Vec<String>,
    /// The one-line verdict.
    pub verdict: String,
    /// Every trial, in order.
    pub trials: Vec<TrialRecord>,
}

impl Ceiling {
    /// Assembles the result of a finished search.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &CeilingPlan,
        target: &Target,
        started_at: chrono::DateTime<chrono::Utc>,
        seeding: Option<SeedReport>,
        state_reset: String,
        s: &Search,
        trials: Vec<TrialRecord>,
        wall: Duration,
    ) -> Self {
        let answer = answer(plan, s, &trials);
        let meaning = answer.rate.map(|r| meaning(&plan.base, r)).unwrap_or_default();
        let verdict = verdict(&plan.base.def.name, &answer);
        Ceiling {
            schema_version: SCHEMA_VERSION,
            tool: format!("certctl-loadtest {}", env!("CARGO_PKG_VERSION")),
            commit: git_commit(),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            duration_s: wall.as_secs_f64(),
            host: HostInfo::detect(),
            postgres: target.postgres.clone(),
            mode: target.mode.into(),
            target: target.base_urls.join(", "),
            server_settings: target.server_env.clone(),
            seeding,
            scenario: plan.base.def.name.clone(),
            label: plan.label.clone(),
            base_rates: plan
                .base
                .def
                .requests
                .iter()
                .zip(&plan.base.rates)
                .map(|(r, x)| (r.label.clone(), *x))
                .collect(),
            criteria: plan.criteria.clone(),
            precision: plan.params.precision,
            confirmations: plan.params.confirmations,
            warmup_s: plan.warmup.as_secs(),
            trial_s: plan.trial.as_secs(),
            confirm_s: plan.confirm.as_secs(),
            state_reset,
            answer,
            meaning,
            verdict,
            trials,
        }
    }

    /// 0 found (a ceiling or a still-passing top rate), 1 the seed rate fails, 2 no answer
    /// about the server (harness-bound, trial budget exhausted).
    pub fn exit_code(&self) -> i32 {
        match self.answer.end {
            End::Found | End::MaxRate => 0,
            End::SeedFails => 1,
            End::HarnessBound | End::TrialLimit => 2,
        }
    }
}

fn answer(plan: &CeilingPlan, s: &Search, trials: &[TrialRecord]) -> Answer {
    let rate_of = |f: f64| plan.base.offered_rate() * f;
    let near = |f: f64| move |t: &&TrialRecord| (t.factor - f).abs() < 1e-9;
    let hi_trial = s.hi.and_then(|h| trials.iter().rev().find(near(h)));
    let lo_trial = s.lo.and_then(|l| trials.iter().rev().filter(|t| t.passed).find(near(l)));
    let failing_criteria = match (s.end, hi_trial) {
        (Some(End::SeedFails), _) => trials.iter().rev().find(|t| !t.passed).map(|t| &t.failures),
        (_, Some(t)) => Some(&t.failures),
        _ => None,
    }
    .map(|f| f.iter().map(Failure::describe).collect())
    .unwrap_or_default();
    let end = s.end.unwrap_or(End::TrialLimit);
    Answer {
        end,
        rate: if end == End::SeedFails { None } else { s.lo.map(rate_of) },
        bracket: match (s.lo, s.hi) {
            (Some(lo), Some(hi)) if end != End::SeedFails => Some([rate_of(lo), rate_of(hi)]),
            _ => None,
        },
        failing_criteria,
        harness_bound_at: s.harness_bound_at.map(rate_of),
        cpu_at_answer: lo_trial.map(|t| t.cpu),
    }
}

fn verdict(name: &str, a: &Answer) -> String {
    let rate = a.rate.map(|r| format!("{r:.1}/s")).unwrap_or_default();
    match a.end {
        End::Found => {
            let [lo, hi] = a.bracket.unwrap_or([0.0, 0.0]);
            format!(
                "{name}: ceiling {rate} (confirmed; bracket [{lo:.1}, {hi:.1}]/s); above it: {}",
                a.failing_criteria.join("; ")
            )
        }
        End::SeedFails => format!("{name}: the scenario's own rate already fails: {}", a.failing_criteria.join("; ")),
        End::HarnessBound => format!(
            "{name}: harness-bound at {:.1}/s — the generator, not the server, was the limit; no server ceiling is claimed \
             (the server met every criterion up to {})",
            a.harness_bound_at.unwrap_or(0.0),
            if rate.is_empty() { "no tested rate".into() } else { rate }
        ),
        End::MaxRate => format!("{name}: still passing at {rate}, the highest rate the search offers"),
        End::TrialLimit => format!("{name}: the trial budget ran out before the bracket closed (last pass {rate})"),
    }
}

/// What a rate means for a fleet: heartbeats → agents at 30-s intervals; enrollments →
/// hosts per hour; certificates/s → time to renew a 10K fleet.
pub fn meaning(sc: &ResolvedScenario, total_rate: f64) -> Vec<String> {
    let total_base = sc.offered_rate().max(1e-12);
    let mut out = Vec::new();
    for (i, r) in sc.def.requests.iter().enumerate() {
        let rate = sc.curve(i).mean() / total_base * total_rate;
        if r.follow_up || rate <= 0.0 {
            continue;
        }
        if r.label == "heartbeat" {
            out.push(format!(
                "{:.0} heartbeats/s × a 30-s heartbeat interval = {:.0} agents on one server",
                rate,
                rate * 30.0
            ));
        } else if r.flow.as_deref() == Some("acme_enrollment") {
            out.push(format!("{rate:.1} ACME enrollments/s = {:.0} hosts enrolled per hour", rate * 3600.0));
        } else if let Some(batch) = r.batch.filter(|_| r.path.contains("bulk")) {
            let certs = rate * batch as f64;
            out.push(format!(
                "{certs:.0} certificates/s requested for renewal: a 10K fleet in {:.1} s",
                10_000.0 / certs
            ));
        } else if r.label == "create" {
            out.push(format!("{rate:.0} certificates/s created: 10,000 certificates in {:.1} s", 10_000.0 / rate));
        }
    }
    out
}

/// The SLOs as one line.
pub fn slo_text(sc: &ResolvedScenario, c: &Criteria) -> String {
    let parts: Vec<String> = sc
        .def
        .requests
        .iter()
        .zip(&c.slo_p99_ms)
        .filter_map(|(r, s)| s.map(|s| format!("{} {s} ms", r.label)))
        .collect();
    parts.join(", ")
}

/// Writes `ceiling.json`, `report.md`, `report.html` and the knee chart.
pub fn write(dir: &Path, c: &Ceiling) -> Result<(), HarnessError> {
    crate::report::write_json(dir, FILE, c)?;
    render(dir)
}

/// Reads `ceiling.json` of a run directory.
pub fn read(dir: &Path) -> Result<Ceiling, HarnessError> {
    crate::report::read_json(dir, FILE)
}

/// (Re-)renders `report.md`, `report.html` and the knee chart from `ceiling.json`.
pub fn render(dir: &Path) -> Result<(), HarnessError> {
    let c = read(dir)?;
    let chart = super::chart::knee(dir, &c)?;
    let p = dir.join("report.md");
    std::fs::write(&p, markdown(&c, &chart)).map_err(|e| HarnessError::io(&p, e))?;
    crate::report::html::write(dir, &super::page::page(dir, &c, &chart))
}

/// The report: verdict, the Capacity section (answer, meaning, CPU split, trials table).
pub fn markdown(c: &Ceiling, chart: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# certctl capacity — {}\n", c.scenario);
    let _ = writeln!(s, "**{}**\n", c.verdict);
    let _ = writeln!(
        s,
        "Commit `{}`, {} mode, {} — {} cores, {}; {}. Search took {:.0} s ({} trials).\n",
        c.commit,
        c.mode,
        c.started_at,
        c.host.cores,
        c.host.cpu_model,
        c.postgres
            .as_ref()
            .map(|p| format!("{} ({})", p.version, p.durability))
            .unwrap_or_else(|| "PostgreSQL unknown".into()),
        c.duration_s,
        c.trials.len()
    );
    s.push_str(&capacity_section(c, chart));
    s
}

/// The Capacity section on its own (also for other reports).
pub fn capacity_section(c: &Ceiling, chart: &str) -> String {
    let mut s = String::from("## Capacity\n\n");
    let a = &c.answer;
    let _ = writeln!(s, "| scenario | answer | rate | bracket | failing criterion above it |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {}{} | {:?} | {} | {} | {} |\n",
        c.scenario,
        c.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default(),
        a.end,
        a.rate.map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "—".into()),
        a.bracket.map(|[l, h]| format!("[{l:.1}, {h:.1}]/s")).unwrap_or_else(|| "—".into()),
        if a.failing_criteria.is_empty() { "—".into() } else { a.failing_criteria.join("; ") }
    );
    if let Some(cpu) = cpu_sentence(c) {
        let _ = writeln!(s, "{cpu}\n");
    }
    if !c.meaning.is_empty() {
        s.push_str("What it means:\n\n");
        for m in &c.meaning {
            let _ = writeln!(s, "- {m}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "{}\n", criteria_sentence(c));
    if !chart.is_empty() {
        let _ = writeln!(s, "![knee]({chart}.png) ([SVG]({chart}.svg))\n");
    }
    s.push_str(&trials_table(c));
    s.push('\n');
    s
}

/// The criteria and trial lengths of a search, as a sentence.
pub fn criteria_sentence(c: &Ceiling) -> String {
    format!(
        "Criteria: corrected p99 ≤ SLO ({}), error rate ≤ {:.3} %, achieved ≥ 98 % of offered, no dropped starts, late \
         starts ≤ 1 %. Trials: {} s warm-up, {} s measured ({} s for the {} confirmations); bracket precision {:.0} %. \
         State: {}.",
        c.criteria
            .slo_p99_ms
            .iter()
            .zip(c.base_rates.keys())
            .filter_map(|(s, _)| *s)
            .map(|v| format!("{v} ms"))
            .collect::<Vec<_>>()
            .join(", "),
        c.criteria.max_error_rate * 100.0,
        c.warmup_s,
        c.trial_s,
        c.confirm_s,
        c.confirmations,
        c.precision * 100.0,
        c.state_reset
    )
}

/// The CPU split at the answer, as a sentence (none when there is no answer).
pub fn cpu_sentence(c: &Ceiling) -> Option<String> {
    let cpu = c.answer.cpu_at_answer.as_ref()?;
    Some(format!(
        "CPU at the answer (mean over the measured window, % of one core): server {}, generator {} ({} runtime threads), \
         PostgreSQL {}; machine {} busy of {} cores. Generator, server and PostgreSQL share the machine: read the \
         rates as this machine's, and compare builds as ratios measured in one run.",
        pct(cpu.server),
        pct(cpu.generator),
        cpu.generator_threads,
        pct(cpu.postgres),
        pct(cpu.machine_busy),
        c.host.cores
    ))
}

/// One row per trial: phase, offered and achieved rate, worst-label p50/p99, CPU, verdict.
fn trials_table(c: &Ceiling) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| # | phase | offered/s | achieved/s | worst p50 ms | worst p99 ms | server % | generator % | postgres % | verdict |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for t in &c.trials {
        let (p50, p99) = t.worst_p50_p99();
        let _ = writeln!(
            s,
            "| {} | {:?} | {:.1} | {:.1} | {p50:.2} | {p99:.2} | {} | {} | {} | {} |",
            t.n,
            t.phase,
            t.offered_rate,
            t.achieved_rate,
            pct(t.cpu.server),
            pct(t.cpu.generator),
            pct(t.cpu.postgres),
            t.verdict_text()
        );
    }
    s
}

//! What `ab` leaves: `ab.json` (versioned; schema in `harness/schema/ab.schema.json`),
//! `report.md` with the A/B section (one row per label × metric: A, B, the median ratio, its
//! interval, the p-value and the verdict), the per-round ratio chart (`<scenario>-ab.png` and
//! `.svg`) and one `.hlog` per trial.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::compare::{Comparison, Judging, Metric, Verdict};
use crate::HarnessError;
use crate::host::HostInfo;
use crate::report::summary::PostgresInfo;
use crate::seed::SeedReport;

/// Version of `ab.json`'s layout.
pub const SCHEMA_VERSION: u32 = 1;
/// File name.
pub const FILE: &str = "ab.json";

/// One measured value of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    /// Label (`_scenario` for throughput).
    pub label: String,
    /// Metric.
    pub metric: Metric,
    /// ms for latencies, a fraction for the error rate, per second for throughput.
    pub value: f64,
}

/// One trial of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// `a` or `b`.
    pub side: String,
    /// The trial's interval histograms.
    pub hlog: String,
    /// Fingerprint of the database the trial started from (embedded mode).
    pub db_fingerprint: Option<String>,
    /// Wall time of the load, seconds.
    pub wall_s: f64,
    /// Requests completed (all labels).
    pub requests: u64,
    /// The values compared.
    pub values: Vec<Value>,
}

impl TrialRecord {
    /// The value of `label` × `metric`, when measured.
    pub fn value(&self, label: &str, metric: Metric) -> Option<f64> {
        self.values.iter().find(|v| v.label == label && v.metric == metric).map(|v| v.value)
    }
}

/// One round: an A and a B trial, run in `order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// 1-based.
    pub n: usize,
    /// The order the two trials ran in (`["b", "a"]`: B first).
    pub order: [String; 2],
    /// A's trial.
    pub a: TrialRecord,
    /// B's trial.
    pub b: TrialRecord,
}

/// One side as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideInfo {
    /// Server binary (embedded mode).
    pub bin: Option<String>,
    /// Base URL (external mode: given; embedded: the port the servers kept).
    pub url: String,
    /// `--a-env`/`--b-env` settings.
    pub env: BTreeMap<String, String>,
}

/// How the trial rate was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateInfo {
    /// `profile`, `fixed` or `ceiling_fraction`; `drain` for drains (no rate).
    pub source: String,
    /// Total offered rate of each trial, per second (none for drains).
    pub offered_rate: Option<f64>,
    /// `--rate-fraction`.
    pub fraction: Option<f64>,
    /// A's measured ceiling (with `--rate-fraction`).
    pub ceiling_rate: Option<f64>,
    /// Where the ceiling search was written.
    pub ceiling_dir: Option<String>,
}

/// The overall outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// 0 nothing regressed, 1 a regression (or, with --strict, an inconclusive verdict).
    pub exit_code: i32,
    /// One line.
    pub text: String,
    /// `label metric` of each regressed comparison.
    pub regressed: Vec<String>,
    /// `label metric` of each inconclusive comparison.
    pub inconclusive: Vec<String>,
}

/// `ab.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ab {
    /// Layout version.
    pub schema_version: u32,
    /// `certctl-loadtest X.Y.Z`.
    pub tool: String,
    /// Commit of the harness.
    pub commit: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End.
    pub finished_at: String,
    /// Wall time of the whole comparison, seconds (including the ceiling search).
    pub duration_s: f64,
    /// The machine.
    pub host: HostInfo,
    /// PostgreSQL (embedded mode).
    pub postgres: Option<PostgresInfo>,
    /// `embedded` or `external`.
    pub mode: String,
    /// Server settings both sides share (embedded; each side's own settings are in `sides`).
    pub server_settings: BTreeMap<String, String>,
    /// Fixtures applied (once, before the template was saved).
    pub seeding: Option<SeedReport>,
    /// Scenario.
    pub scenario: String,
    /// Profile.
    pub profile: String,
    /// The trial rate.
    pub rate: RateInfo,
    /// Warm-up seconds of each trial.
    pub warmup_s: u64,
    /// Measured seconds of each trial (open model).
    pub trial_s: u64,
    /// `--rounds`.
    pub rounds_planned: usize,
    /// `--max-rounds`.
    pub max_rounds: usize,
    /// Seed of the round order and the bootstrap.
    pub seed: u64,
    /// `--strict`.
    pub strict: bool,
    /// How the comparison was judged.
    pub judging: Judging,
    /// Side A and side B.
    pub sides: BTreeMap<String, SideInfo>,
    /// How each trial started from the same state.
    pub state_reset: String,
    /// Whether every trial's database fingerprint was the same (`null`: not checked).
    pub databases_equal: Option<bool>,
    /// Every round, in order.
    pub rounds: Vec<Round>,
    /// Per label × metric.
    pub comparisons: Vec<Comparison>,
    /// The outcome.
    pub outcome: Outcome,
}

/// The outcome of `comparisons`.
pub fn outcome(scenario: &str, comparisons: &[Comparison], strict: bool) -> Outcome {
    let key = |c: &Comparison| format!("{} {}", c.label, c.metric.as_str());
    let of = |v: Verdict| comparisons.iter().filter(|c| c.verdict == v).map(key).collect::<Vec<_>>();
    let (regressed, inconclusive) = (of(Verdict::Regressed), of(Verdict::Inconclusive));
    let ratio = |c: &Comparison| {
        let i = c.interval.map(|[l, h]| format!(" [{l:.3}, {h:.3}]")).unwrap_or_default();
        format!("{} ×{:.3}{i}", key(c), c.median_ratio.unwrap_or(f64::NAN))
    };
    let text = if !regressed.is_empty() {
        let list: Vec<String> = comparisons.iter().filter(|c| c.verdict == Verdict::Regressed).map(ratio).collect();
        format!("ab {scenario}: B REGRESSED: {}", list.join("; "))
    } else if !inconclusive.is_empty() {
        format!(
            "ab {scenario}: no regression shown; inconclusive: {}{}",
            inconclusive.join(", "),
            if strict { " (--strict: fatal)" } else { "" }
        )
    } else {
        format!("ab {scenario}: no regression ({} comparisons decided)", comparisons.len())
    };
    let exit_code = i32::from(!regressed.is_empty() || (strict && !inconclusive.is_empty()));
    Outcome { exit_code, text, regressed, inconclusive }
}

/// Writes `ab.json`, `report.md`, `report.html` and the chart.
pub fn write(dir: &Path, ab: &Ab) -> Result<(), HarnessError> {
    crate::report::write_json(dir, FILE, ab)?;
    render(dir)
}

/// Reads `ab.json` of a directory.
pub fn read(dir: &Path) -> Result<Ab, HarnessError> {
    crate::report::read_json(dir, FILE)
}

/// (Re-)renders `report.md`, `report.html` and the chart from `ab.json`.
pub fn render(dir: &Path) -> Result<(), HarnessError> {
    let ab = read(dir)?;
    let chart = super::chart::ratios(dir, &ab)?;
    let p = dir.join("report.md");
    std::fs::write(&p, markdown(&ab, &chart)).map_err(|e| HarnessError::io(&p, e))?;
    crate::report::html::write(dir, &super::page::page(dir, &ab, &chart))
}

/// The report: the outcome, the setup, the A/B section.
pub fn markdown(ab: &Ab, chart: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# certctl A/B — {}\n", ab.scenario);
    let _ = writeln!(s, "**{}**\n", ab.outcome.text);
    let side = |k: &str| {
        ab.sides
            .get(k)
            .map(|x| {
                let env: Vec<String> = x.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let env = if env.is_empty() { String::new() } else { format!(" with {}", env.join(" ")) };
                format!("`{}`{env}", x.bin.as_deref().unwrap_or(&x.url))
            })
            .unwrap_or_default()
    };
    let _ = writeln!(s, "A: {}  \nB: {}\n", side("a"), side("b"));
    let _ = writeln!(
        s,
        "Harness commit `{}`, {} mode, {} — {} cores, {}; {}. {} rounds in {:.0} s (seed {}).\n",
        ab.commit,
        ab.mode,
        ab.started_at,
        ab.host.cores,
        ab.host.cpu_model,
        ab.postgres
            .as_ref()
            .map(|p| format!("{} ({})", p.version, p.durability))
            .unwrap_or_else(|| "PostgreSQL unknown".into()),
        ab.rounds.len(),
        ab.duration_s,
        ab.seed
    );
    s.push_str(&ab_section(ab, chart));
    s
}

/// The A/B section on its own: the table per label × metric, the method, the chart.
pub fn ab_section(ab: &Ab, chart: &str) -> String {
    let mut s = String::from("## A/B comparison\n\n");
    s.push_str(&table(ab));
    let _ = writeln!(s, "\n{}\n", method_sentence(ab));
    if !chart.is_empty() {
        let _ = writeln!(s, "![per-round ratios]({chart}.png) ([SVG]({chart}.svg))\n");
    }
    s
}

/// How the comparison was made, as one paragraph (report.md and report.html).
pub fn method_sentence(ab: &Ab) -> String {
    let rate = match ab.rate.offered_rate {
        Some(r) => format!("{r:.1}/s offered ({})", rate_source(&ab.rate)),
        None => "one drain per trial".into(),
    };
    let j = &ab.judging;
    format!(
        "Each round ran one A and one B trial in random order; the unit of comparison is the round: \
         log(B/A) of each trial's whole-window value. Verdicts: the {:.0} % bootstrap interval of the median \
         ratio against ± the minimum effect (regressed also needs signed-rank p ≤ {}). Trials: {rate}, {} s \
         warm-up, {} s measured. State: {}.{}",
        j.confidence * 100.0,
        j.alpha,
        ab.warmup_s,
        ab.trial_s,
        ab.state_reset,
        match ab.databases_equal {
            Some(true) => " Every trial's database fingerprint was equal.",
            Some(false) => " The trials' database fingerprints DIFFERED.",
            None => "",
        }
    )
}

fn rate_source(r: &RateInfo) -> String {
    match (r.source.as_str(), r.fraction, r.ceiling_rate) {
        ("ceiling_fraction", Some(f), Some(c)) => format!("{:.0} % of A's ceiling {c:.1}/s", f * 100.0),
        (src, _, _) => src.to_string(),
    }
}

/// One row per label × metric.
pub fn table(ab: &Ab) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| label | metric | A | B | median B/A | interval | p | min effect | rounds | verdict |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for c in &ab.comparisons {
        let v = |x: Option<f64>| x.map(|x| fmt_value(c.metric, x)).unwrap_or_else(|| "—".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.3} | ±{:.0} % | {} | {} |",
            c.label,
            c.metric.as_str(),
            v(c.a_median),
            v(c.b_median),
            c.median_ratio.map(|r| format!("×{r:.3}")).unwrap_or_else(|| "—".into()),
            c.interval.map(|[l, h]| format!("[{l:.3}, {h:.3}]")).unwrap_or_else(|| "—".into()),
            c.p_value,
            c.min_effect * 100.0,
            c.n,
            if c.verdict == Verdict::Regressed {
                format!("**{}**", c.verdict.as_str())
            } else {
                c.verdict.as_str().into()
            }
        );
    }
    s
}

/// A metric's value with its unit.
pub fn fmt_value(m: Metric, x: f64) -> String {
    match m {
        Metric::P50 | Metric::P95 | Metric::P99 => format!("{x:.2} ms"),
        Metric::ErrorRate => format!("{:.3} %", x * 100.0),
        Metric::Throughput => format!("{x:.0}/s"),
    }
}

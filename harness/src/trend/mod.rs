//! `trend DIR…`: how the numbers moved across runs (committed baselines, downloaded CI
//! artifacts, merged runs), with persistent shifts flagged by change-point detection.
//!
//! Data flow: [`load_runs`] reads each directory's `summary.json` (or the `ceiling.json` of a
//! `ceiling` search, in the directory or its immediate subdirectories) and orders the runs by
//! commit time (`git show -s --format=%cI COMMIT` when the commit is in the local repository,
//! else the run's `started_at`); [`series_of`] turns them into one series per scenario ×
//! label × metric (corrected p50 and p99; the judged fleet renewal rate and the scheduler's
//! certificates/s where a scenario has them; `ceiling_rate`, the confirmed ceiling of a
//! search, label `_scenario` or the searched label); [`edivisive`] finds the change points of each
//! series. [`write`] records it all as `trend.json` (schema `harness/schema/trend.schema.json`)
//! and `report.html` with one chart and one table per scenario.

pub mod edivisive;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ceiling::output::{self as ceiling_out, Ceiling};
use crate::ceiling::search::End;
use crate::cli::TrendArgs;
use crate::report::charts::{self, Axis, Chart, Panel, Series, label_groups, style};
use crate::report::html::{self, Cell, Figure, Page, PageVerdict, Section, Table, fact};
use crate::report::summary::{self, Summary};
use crate::{HarnessError, Outcome};
use edivisive::Params;

/// Version of the `trend.json` format.
pub const SCHEMA_VERSION: u32 = 1;

/// One run in the trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendRun {
    /// The directory as given.
    pub dir: String,
    /// Its commit.
    pub commit: String,
    /// The time it is ordered by, RFC 3339.
    pub time: String,
    /// `commit` (from git) or `started_at` (the commit is not in the local repository).
    pub time_source: String,
    /// The run's start.
    pub started_at: String,
    /// Its profile.
    pub profile: String,
    /// Its verdict line.
    pub verdict: String,
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Index into `runs`.
    pub run: usize,
    /// The value.
    pub value: f64,
}

/// A change point of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// Index into `runs` of the first run after the change.
    pub run: usize,
    /// That run's commit.
    pub commit: String,
    /// Mean of the segment before.
    pub before: f64,
    /// Mean of the segment after.
    pub after: f64,
    /// Relative change of the means, percent.
    pub change_pct: f64,
    /// Permutation p-value.
    pub p_value: f64,
    /// `up` or `down`.
    pub direction: String,
}

/// One scenario × label × metric over the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendSeries {
    /// Scenario.
    pub scenario: String,
    /// Label (`_scenario` for scenario-level metrics).
    pub label: String,
    /// `p50`, `p99`, `fleet_renewal_rate` or `scheduler_certs_per_s`.
    pub metric: String,
    /// `ms` or `per_s`.
    pub unit: String,
    /// The values, in run order (runs without the series are absent).
    pub points: Vec<Point>,
    /// Persistent shifts.
    pub change_points: Vec<Shift>,
}

/// `trend.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `certctl-loadtest <version>`.
    pub tool: String,
    /// When this was written, RFC 3339 UTC.
    pub generated_at: String,
    /// Change-point method and parameters.
    pub method: Method,
    /// The runs, oldest first.
    pub runs: Vec<TrendRun>,
    /// Every series.
    pub series: Vec<TrendSeries>,
}

/// How change points were found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// `e-divisive means`.
    pub name: String,
    /// Its parameters.
    pub params: Params,
}

/// The commit time of `commit` from the local repository, if it knows it.
fn commit_time(commit: &str) -> Option<String> {
    let c = commit.trim_end_matches("-dirty");
    if c.is_empty() || !c.chars().all(|x| x.is_ascii_hexdigit()) {
        return None;
    }
    let out = std::process::Command::new("git").args(["show", "-s", "--format=%cI", c]).output().ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// What one trend directory holds: a run's `summary.json`, or the `ceiling.json` of one
/// `ceiling` search (the directory itself) or of several (its immediate subdirectories, as in a
/// committed `artifacts/baselines/<date>-<sha>-ceiling/<scenario>/` set).
#[derive(Debug, Clone)]
pub enum RunData {
    Summary(Box<Summary>),
    Ceilings(Vec<Ceiling>),
}

/// The ceilings in `d` itself, else in its immediate subdirectories (sorted by name).
fn ceilings_in(d: &Path) -> Result<Vec<Ceiling>, HarnessError> {
    if d.join(ceiling_out::FILE).is_file() {
        return Ok(vec![ceiling_out::read(d)?]);
    }
    let Ok(entries) = std::fs::read_dir(d) else { return Ok(Vec::new()) };
    let mut subs: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join(ceiling_out::FILE).is_file()).collect();
    subs.sort();
    subs.iter().map(|p| ceiling_out::read(p)).collect()
}

/// The run record of one directory, or `None` (with a message) when it holds neither file.
fn load_run(d: &Path) -> Result<Option<(TrendRun, RunData)>, HarnessError> {
    let (commit, started_at, profile, verdict, data) = if d.join(summary::FILE).is_file() {
        let s = summary::read(d)?;
        (
            s.commit.clone(),
            s.started_at.clone(),
            s.profile.clone(),
            s.verdict.reason.clone(),
            RunData::Summary(Box::new(s)),
        )
    } else {
        let cs = ceilings_in(d)?;
        let Some(first) = cs.first() else {
            eprintln!("certctl-loadtest: trend: skipping {} (no summary.json or ceiling.json)", d.display());
            return Ok(None);
        };
        let verdict = cs.iter().map(|c| c.verdict.as_str()).collect::<Vec<_>>().join("; ");
        (first.commit.clone(), first.started_at.clone(), "ceiling".to_string(), verdict, RunData::Ceilings(cs))
    };
    let (time, source) = match commit_time(&commit) {
        Some(t) => (t, "commit"),
        None => (started_at.clone(), "started_at"),
    };
    let run = TrendRun {
        dir: d.display().to_string(),
        commit,
        time,
        time_source: source.into(),
        started_at,
        profile,
        verdict,
    };
    Ok(Some((run, data)))
}

/// Reads the runs among `dirs` and orders them by commit time (then start).
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<(TrendRun, RunData)>, HarnessError> {
    let mut runs = Vec::new();
    for d in dirs {
        if let Some(r) = load_run(d)? {
            runs.push(r);
        }
    }
    if runs.is_empty() {
        return Err(HarnessError::Config(
            "trend: none of the given directories holds a summary.json or a ceiling.json".into(),
        ));
    }
    let instant = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|x| x.timestamp_millis()).unwrap_or(i64::MAX);
    runs.sort_by(|(a, _), (b, _)| {
        instant(&a.time).cmp(&instant(&b.time)).then_with(|| instant(&a.started_at).cmp(&instant(&b.started_at)))
    });
    Ok(runs)
}

/// One series per scenario × label × metric, in first-seen order.
pub fn series_of(runs: &[RunData]) -> Vec<TrendSeries> {
    let mut order: Vec<(String, String, String)> = Vec::new();
    let mut by_key: BTreeMap<(String, String, String), (String, Vec<Point>)> = BTreeMap::new();
    let mut add = |sc: &str, label: &str, metric: &str, unit: &str, run: usize, value: Option<f64>| {
        let Some(value) = value.filter(|v| v.is_finite()) else { return };
        let key = (sc.to_string(), label.to_string(), metric.to_string());
        if !by_key.contains_key(&key) {
            order.push(key.clone());
        }
        by_key.entry(key).or_insert_with(|| (unit.to_string(), Vec::new())).1.push(Point { run, value });
    };
    for (i, data) in runs.iter().enumerate() {
        let s = match data {
            RunData::Summary(s) => s,
            RunData::Ceilings(cs) => {
                // A confirmed ceiling only: a harness-bound or seed-failing search has no rate
                // that belongs in the server's history.
                for c in cs.iter().filter(|c| c.answer.end == End::Found) {
                    let label = c.label.as_deref().unwrap_or("_scenario");
                    add(&c.scenario, label, "ceiling_rate", "per_s", i, c.answer.rate);
                }
                continue;
            }
        };
        for sc in &s.scenarios {
            for l in sc.labels.iter().filter(|l| l.count > 0) {
                add(&sc.name, &l.label, "p50", "ms", i, Some(l.corrected.p50));
                add(&sc.name, &l.label, "p99", "ms", i, Some(l.corrected.p99));
            }
            if let Some(f) = sc.fleet_renewal.as_ref().filter(|f| f.status == "measured") {
                add(&sc.name, "_scenario", "fleet_renewal_rate", "per_s", i, Some(f.peak_window_avg_per_s));
            }
            if let Some(t) = sc.scheduler_throughput.as_ref().filter(|t| t.status == "measured") {
                add(&sc.name, "_scenario", "scheduler_certs_per_s", "per_s", i, Some(t.certs_per_s));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| {
            let (unit, points) = by_key.remove(&k)?;
            Some(TrendSeries { scenario: k.0, label: k.1, metric: k.2, unit, points, change_points: Vec::new() })
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Finds the change points of every series.
pub fn detect(series: &mut [TrendSeries], runs: &[TrendRun], p: &Params) {
    for s in series {
        let values: Vec<f64> = s.points.iter().map(|x| x.value).collect();
        let cps = edivisive::change_points(&values, p);
        let mut bounds: Vec<usize> = vec![0];
        bounds.extend(cps.iter().map(|c| c.index));
        bounds.push(values.len());
        s.change_points = cps
            .iter()
            .enumerate()
            .map(|(k, c)| {
                // The segments either side of this change point.
                let before = mean(&values[bounds[k]..c.index]);
                let after = mean(&values[c.index..bounds[k + 2]]);
                let run = s.points[c.index].run;
                Shift {
                    run,
                    commit: runs.get(run).map(|r| r.commit.clone()).unwrap_or_default(),
                    before,
                    after,
                    change_pct: if before != 0.0 { (after - before) / before * 100.0 } else { 0.0 },
                    p_value: c.p_value,
                    direction: if after > before { "up" } else { "down" }.into(),
                }
            })
            .collect();
    }
}

/// `trend`.
pub fn trend(args: &TrendArgs) -> Result<Outcome, HarnessError> {
    let params = Params {
        alpha: args.alpha,
        permutations: args.permutations,
        min_segment: args.min_segment,
        ..Params::default()
    };
    let loaded = load_runs(&args.runs)?;
    let (runs, data): (Vec<TrendRun>, Vec<RunData>) = loaded.into_iter().unzip();
    let mut series = series_of(&data);
    detect(&mut series, &runs, &params);
    let t = Trend {
        schema_version: SCHEMA_VERSION,
        tool: format!("certctl-loadtest {}", env!("CARGO_PKG_VERSION")),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        method: Method { name: "e-divisive means".into(), params },
        runs,
        series,
    };
    write(&args.out, &t)?;
    let shifts: usize = t.series.iter().map(|s| s.change_points.len()).sum();
    let msg = format!(
        "{} runs, {} series, {shifts} change point(s); wrote {}",
        t.runs.len(),
        t.series.len(),
        args.out.join("report.html").display()
    );
    println!("{msg}");
    Ok(Outcome { code: 0, message: msg, run_dir: Some(args.out.clone()) })
}

/// Writes `trend.json`, the charts and `report.html` into `out`.
pub fn write(out: &Path, t: &Trend) -> Result<(), HarnessError> {
    std::fs::create_dir_all(out).map_err(|e| HarnessError::io(out, e))?;
    let p = out.join("trend.json");
    let text = serde_json::to_string_pretty(t).map_err(|e| HarnessError::Config(e.to_string()))?;
    std::fs::write(&p, text + "\n").map_err(|e| HarnessError::io(&p, e))?;
    let mut sections = vec![shifts_section(t), runs_section(t)];
    let mut per = Section::new("scenarios", "Scenarios");
    for sc in scenarios(t) {
        let chart = chart_of(t, &sc);
        charts::write_chart(out, &chart)?;
        let mut sec = Section::new(format!("scenario-{sc}"), sc.clone());
        sec.class = "scenario".into();
        if let Some(svg) = html::inline_svg(out, &format!("{}.svg", chart.name)) {
            sec.figures
                .push(Figure { caption: format!("{}.svg — dotted vertical lines: change points", chart.name), svg });
        }
        sec.tables.push(values_table(t, &sc));
        per.subsections.push(sec);
    }
    sections.push(per);
    let shifts: usize = t.series.iter().map(|s| s.change_points.len()).sum();
    let page = Page {
        title: "certctl performance trend".into(),
        subtitle: format!("{} runs, oldest first by commit time", t.runs.len()),
        verdict: Some(PageVerdict {
            level: if shifts == 0 { "pass" } else { "fail" }.into(),
            heading: format!("{shifts} change point(s)"),
            text: format!(
                "{} (α = {}, {} permutations, at least {} runs per segment)",
                t.method.name, t.method.params.alpha, t.method.params.permutations, t.method.params.min_segment
            ),
        }),
        facts: vec![fact("runs", t.runs.len()), fact("series", t.series.len()), fact("generated", &t.generated_at)],
        sections,
        tool: t.tool.clone(),
        source: "the runs' summary.json and ceiling.json files".into(),
    };
    html::write(out, &page)
}

fn scenarios(t: &Trend) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in &t.series {
        if !v.contains(&s.scenario) {
            v.push(s.scenario.clone());
        }
    }
    v
}

fn short(commit: &str) -> String {
    commit.chars().take(7).collect()
}

fn shifts_section(t: &Trend) -> Section {
    let mut sec = Section::new("change-points", "Change points");
    sec.paragraphs.push(
        "A change point is the first run of a persistent shift: E-Divisive means with a permutation test, \
         at least the minimum segment of runs on each side (docs/operator/scale.md, \"Trends across runs\")."
            .into(),
    );
    let mut tb = Table::new(
        "",
        &["scenario", "label", "metric", "from commit", "before#", "after#", "change#", "p#", "direction"],
    );
    for s in &t.series {
        for c in &s.change_points {
            tb.rows.push(vec![
                Cell::text(&s.scenario),
                Cell::text(&s.label),
                Cell::text(&s.metric),
                Cell::code(short(&c.commit)),
                Cell::num(format!("{:.2} {}", c.before, s.unit), c.before),
                Cell::num(format!("{:.2} {}", c.after, s.unit), c.after),
                Cell::num(format!("{:+.1} %", c.change_pct), c.change_pct),
                Cell::num(format!("{:.3}", c.p_value), c.p_value),
                Cell::verdict(if c.direction == "up" { "shift up" } else { "shift down" }),
            ]);
        }
    }
    if tb.rows.is_empty() {
        sec.paragraphs.push("None: no series shifted persistently.".into());
    } else {
        sec.tables.push(tb);
    }
    sec
}

fn runs_section(t: &Trend) -> Section {
    let mut sec = Section::new("runs", "Runs");
    let mut tb = Table::new("", &["#", "commit", "ordered by", "time", "profile", "directory", "verdict"]);
    for (i, r) in t.runs.iter().enumerate() {
        tb.rows.push(vec![
            Cell::num(i, i as f64),
            Cell::code(short(&r.commit)),
            Cell::text(&r.time_source),
            Cell::text(&r.time),
            Cell::text(&r.profile),
            Cell::code(&r.dir),
            Cell::text(&r.verdict),
        ]);
    }
    sec.tables.push(tb);
    sec
}

fn values_table(t: &Trend, sc: &str) -> Table {
    let series: Vec<&TrendSeries> = t.series.iter().filter(|s| s.scenario == sc).collect();
    let names: Vec<String> = series
        .iter()
        .map(|s| if s.label == "_scenario" { format!("{}#", s.metric) } else { format!("{} {}#", s.label, s.metric) })
        .collect();
    let mut cols: Vec<&str> = vec!["commit", "time"];
    cols.extend(names.iter().map(String::as_str));
    let mut tb = Table::new("Values by run (▲/▼ marks the first run after a change point)", &cols);
    for (i, r) in t.runs.iter().enumerate() {
        let mut row = vec![Cell::code(short(&r.commit)), Cell::text(&r.time)];
        for s in &series {
            row.push(match s.points.iter().find(|p| p.run == i) {
                Some(p) => {
                    let mark = match s.change_points.iter().find(|c| c.run == i) {
                        Some(c) if c.direction == "up" => " ▲",
                        Some(_) => " ▼",
                        None => "",
                    };
                    let mut c = Cell::num(format!("{:.2}{mark}", p.value), p.value);
                    if !mark.is_empty() {
                        c.class = "num fail".into();
                    }
                    c
                }
                None => Cell::text("–"),
            });
        }
        tb.rows.push(row);
    }
    tb
}

/// The chart of one scenario: p50 and p99 of each label over the runs (labels beyond six
/// split into groups), and the scenario-level rates; change points as dotted vertical lines.
fn chart_of(t: &Trend, sc: &str) -> Chart {
    let n = t.runs.len().max(2);
    let step = n.div_ceil(12).max(1);
    let ticks: Vec<(f64, String)> =
        t.runs.iter().enumerate().step_by(step).map(|(i, r)| (i as f64, short(&r.commit))).collect();
    let x = |desc: &str| Axis { desc: desc.into(), range: -0.3..(n as f64 - 0.7), ticks: ticks.clone() };
    let series: Vec<&TrendSeries> = t.series.iter().filter(|s| s.scenario == sc).collect();
    let labels: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for s in series.iter().filter(|s| s.label != "_scenario") {
            if !v.contains(&s.label.as_str()) {
                v.push(&s.label);
            }
        }
        v
    };
    let to_series = |s: &TrendSeries, i: usize, variant: usize| {
        let name = format!("{} {}", if s.label == "_scenario" { "" } else { &s.label }, s.metric).trim().to_string();
        let mut out = vec![Series {
            name: name.clone(),
            style: style(i, variant),
            width: 2,
            segments: false,
            points: s.points.iter().map(|p| (p.run as f64, p.value)).collect(),
        }];
        if !s.change_points.is_empty() {
            // One series for all of this line's change points: a vertical segment each.
            let top = s.points.iter().map(|p| p.value).fold(0.0f64, f64::max) * 1.1;
            out.push(Series {
                name: format!("{name}: change point"),
                style: style(i, 2),
                width: 1,
                segments: true,
                points: s.change_points.iter().flat_map(|c| [(c.run as f64, 0.0), (c.run as f64, top)]).collect(),
            });
        }
        out
    };
    let mut panels = Vec::new();
    for g in label_groups(labels.len()) {
        for (metric, variant) in [("p99", 0), ("p50", 1)] {
            let lines: Vec<Series> = labels[g.clone()]
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    series.iter().find(|s| s.label == *l && s.metric == metric).map(|s| to_series(s, i, variant))
                })
                .flatten()
                .collect();
            if lines.is_empty() {
                continue;
            }
            let ymax = lines.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
            panels.push(Panel {
                title: format!("{metric} (corrected) by commit"),
                x: x("commit (oldest first)"),
                y: Axis::linear("latency (ms)", 0.0..ymax),
                series: lines,
            });
        }
    }
    for (i, s) in series.iter().filter(|s| s.label == "_scenario").enumerate() {
        let lines = to_series(s, i, 0);
        let ymax = lines.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
        panels.push(Panel {
            title: format!("{} by commit", s.metric),
            x: x("commit (oldest first)"),
            y: Axis::linear("per second", 0.0..ymax),
            series: lines,
        });
    }
    Chart { name: format!("trend-{sc}"), title: format!("{sc} — across runs"), panels, columns: 1, row_height: 300 }
}

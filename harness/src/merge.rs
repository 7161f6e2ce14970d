//! `merge`: several generators' run directories (usually `run --shard I/N`) into one run.
//!
//! Data flow: each input's `summary.json` and `<scenario>.hlog` are read back; per scenario and
//! label the interval histograms are **added** — interval *k* of every input into merged
//! interval *k* (intervals are seconds since each generator's time zero: with a shared
//! `--start-at` that zero is one wall-clock instant, so the shards line up by index; without
//! one, only as well as they were started together, and a spread over a second is warned
//! about) — and the whole-run histogram is the sum of the merged
//! intervals. Percentiles are then read from the merged histograms; they are never averaged.
//! Counts, error classes, status codes, planned/late/dropped starts and target rates are
//! summed; achieved rates are recomputed from the merged counts; thresholds (taken from the
//! inputs' evaluated thresholds) are evaluated again on the merged figures. The result is
//! written like any run — merged `.hlog`, `summary.json` (with `merged_from`), then
//! [`crate::report::render`] for `report.md`, charts and `junit.xml` — so `report` and
//! `compare` treat it as one run.
//!
//! Database counter rates (`db_metrics`) are server-wide: every shard measured the same
//! counter, so they are averaged over the inputs rather than summed; the fleet-renewal and
//! scheduler-throughput measurements are taken from the first input that has them. Resource
//! peaks are the maximum over the inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::MergeArgs;
use crate::clock;
use crate::gate::{self, ThresholdResult};
use crate::metrics::{ErrorCounts, Interval, LabelStats, hlog};
use crate::report::summary::{self, MergedRun, Resources, ScenarioSummary, Summary};
use crate::report::{self, label_summary};
use crate::scenario::engine::ScheduleCounts;
use crate::scenario::{Shard, ThresholdDef};
use crate::{HarnessError, Outcome};

/// `merge RUN_DIR... --out DIR`.
pub fn merge(args: &MergeArgs) -> Result<Outcome, HarnessError> {
    let inputs: Vec<(PathBuf, Summary)> =
        args.runs.iter().map(|d| summary::read(d).map(|s| (d.clone(), s))).collect::<Result<_, _>>()?;
    check_consistent(&inputs)?;
    check_starts(&inputs)?;
    std::fs::create_dir_all(&args.out).map_err(|e| HarnessError::io(&args.out, e))?;
    let merged = merge_runs(&inputs, &args.out)?;
    summary::write(&args.out, &merged)?;
    report::render(&args.out)?;
    crate::runner::print_table(&merged, &args.out);
    Ok(Outcome {
        code: merged.verdict.exit_code,
        message: format!("merged {} runs: {}", inputs.len(), merged.verdict.reason),
        run_dir: Some(args.out.clone()),
    })
}

/// Refuses inputs that are not slices of one load: different profiles, scenarios, labels or
/// durations, a mix of shard counts, a shard index twice. A shard set with gaps is merged with
/// a warning (the merged run then carries less load than planned, which its rates show).
fn check_consistent(inputs: &[(PathBuf, Summary)]) -> Result<(), HarnessError> {
    let Some((first_dir, first)) = inputs.first() else {
        return Err(HarnessError::Config("merge needs at least one run directory".into()));
    };
    let shape = |s: &Summary| -> Vec<(String, String, Vec<String>)> {
        s.scenarios
            .iter()
            .map(|sc| (sc.name.clone(), sc.model.clone(), sc.labels.iter().map(|l| l.label.clone()).collect()))
            .collect()
    };
    for (dir, s) in &inputs[1..] {
        if s.profile != first.profile {
            return Err(HarnessError::Config(format!(
                "cannot merge: {} is profile {} but {} is profile {}",
                dir.display(),
                s.profile,
                first_dir.display(),
                first.profile
            )));
        }
        if shape(s) != shape(first) {
            return Err(HarnessError::Config(format!(
                "cannot merge: {} ran scenarios [{}] but {} ran [{}] (or their labels differ)",
                dir.display(),
                s.scenarios.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", "),
                first_dir.display(),
                first.scenarios.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        for (a, b) in s.scenarios.iter().zip(&first.scenarios) {
            if (a.duration_s - b.duration_s).abs() > 1e-6 {
                return Err(HarnessError::Config(format!(
                    "cannot merge: scenario {} lasts {} s in {} but {} s in {}",
                    a.name,
                    a.duration_s,
                    dir.display(),
                    b.duration_s,
                    first_dir.display()
                )));
            }
        }
    }
    let shards: Vec<Option<Shard>> = inputs.iter().map(|(_, s)| s.shard).collect();
    if shards.iter().any(Option::is_some) {
        let Some(n) = shards.iter().flatten().map(|s| s.count).next() else { return Ok(()) };
        let mut seen = BTreeMap::new();
        for ((dir, _), sh) in inputs.iter().zip(&shards) {
            let Some(sh) = sh else {
                return Err(HarnessError::Config(format!(
                    "cannot merge: {} is not a shard run but others are (--shard I/{n})",
                    dir.display()
                )));
            };
            if sh.count != n {
                return Err(HarnessError::Config(format!(
                    "cannot merge: {} is shard {sh} but others are shards of {n}",
                    dir.display()
                )));
            }
            if let Some(prev) = seen.insert(sh.index, dir.clone()) {
                // The same slice twice would double-count its slots: refuse.
                return Err(HarnessError::Config(format!(
                    "cannot merge: shard {sh} appears twice ({} and {})",
                    prev.display(),
                    dir.display()
                )));
            }
        }
        let missing: Vec<String> = (1..=n).filter(|i| !seen.contains_key(i)).map(|i| format!("{i}/{n}")).collect();
        if !missing.is_empty() {
            eprintln!("certctl-loadtest: warning: merging an incomplete shard set, missing {}", missing.join(", "));
        }
    }
    Ok(())
}

/// Refuses shards whose declared starts (`--start-at`) differ, or that mix declared and
/// undeclared starts: their intervals would be added across different seconds. Warns when
/// synchronized shards' measured clock offsets disagree beyond [`clock::OFFSET_TOLERANCE_MS`],
/// and when unsynchronized inputs' first scenarios started further apart than
/// [`clock::UNSYNCED_TOLERANCE`] (their per-second figures are then smeared by that much).
fn check_starts(inputs: &[(PathBuf, Summary)]) -> Result<(), HarnessError> {
    let Some((first_dir, first)) = inputs.first() else { return Ok(()) };
    let declared = |s: &Summary| s.start.as_ref().map(|st| st.at.clone());
    for (dir, s) in &inputs[1..] {
        if declared(s) != declared(first) {
            let show = |d: Option<String>| d.unwrap_or_else(|| "no --start-at".into());
            return Err(HarnessError::Config(format!(
                "cannot merge: {} started at {} but {} at {}: shards must share one --start-at",
                dir.display(),
                show(declared(s)),
                first_dir.display(),
                show(declared(first))
            )));
        }
    }
    if declared(first).is_some() {
        let offsets: Vec<f64> = inputs.iter().filter_map(|(_, s)| s.start.as_ref()?.clock_offset_ms).collect();
        let (lo, hi) = offsets.iter().fold((f64::MAX, f64::MIN), |(lo, hi), o| (lo.min(*o), hi.max(*o)));
        if offsets.len() > 1 && hi - lo > clock::OFFSET_TOLERANCE_MS {
            eprintln!(
                "certctl-loadtest: warning: the shards' clocks disagree by {:.0} ms (measured against the database): \
                 their intervals are misaligned by about that much",
                hi - lo
            );
        }
        return Ok(());
    }
    let starts: Vec<SystemTime> =
        inputs.iter().filter_map(|(d, s)| s.scenarios.first().and_then(|sc| hlog_start(&d.join(&sc.hlog)))).collect();
    if let (Some(lo), Some(hi)) = (starts.iter().min(), starts.iter().max())
        && let Ok(spread) = hi.duration_since(*lo)
        && spread > clock::UNSYNCED_TOLERANCE
    {
        eprintln!(
            "certctl-loadtest: warning: the inputs started {:.1} s apart without --start-at: per-second intervals \
             are added by index, so each merged second mixes seconds that far apart",
            spread.as_secs_f64()
        );
    }
    Ok(())
}

/// The wall-clock start of an hlog (its `#[StartTime: …]` header), if present.
fn hlog_start(path: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("#[StartTime: "))?;
    let secs: f64 = line.trim_start_matches("#[StartTime: ").split_whitespace().next()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
}

/// Rebuilds one input's label statistics from its hlog (histograms) and summary (errors,
/// statuses) and adds them into `acc`.
fn absorb(
    acc: &mut LabelStats,
    logged: &BTreeMap<String, Vec<hlog::LoggedInterval>>,
    l: &report::summary::LabelSummary,
) {
    let svc = hlog::service_tag(&l.label);
    for (tag, service) in [(l.label.as_str(), false), (svc.as_str(), true)] {
        for iv in logged.get(tag).map(Vec::as_slice).unwrap_or_default() {
            // Intervals are whole seconds since the generator's time zero.
            let k = iv.start_s.round().max(0.0) as usize;
            while acc.intervals.len() <= k {
                acc.intervals.push(Interval::empty());
            }
            if let Some(slot) = acc.intervals.get_mut(k) {
                // Identical bounds on both sides: adding cannot fail.
                let _ = if service { slot.service.add(&iv.histogram) } else { slot.corrected.add(&iv.histogram) };
            }
            let _ = if service { acc.service.add(&iv.histogram) } else { acc.corrected.add(&iv.histogram) };
        }
    }
    for iv in &l.intervals {
        let k = iv.t_s as usize;
        while acc.intervals.len() <= k {
            acc.intervals.push(Interval::empty());
        }
        if let Some(slot) = acc.intervals.get_mut(k) {
            slot.errors += iv.errors;
        }
    }
    acc.errors = add_errors(acc.errors, l.errors);
    for (code, n) in &l.status_counts {
        if let Ok(c) = code.parse::<u16>() {
            *acc.statuses.entry(c).or_default() += n;
        }
    }
    acc.rate_limited += l.rate_limited_429;
}

fn add_errors(a: ErrorCounts, b: ErrorCounts) -> ErrorCounts {
    ErrorCounts {
        transport: a.transport + b.transport,
        status_4xx: a.status_4xx + b.status_4xx,
        status_5xx: a.status_5xx + b.status_5xx,
        unexpected_status: a.unexpected_status + b.unexpected_status,
        body_check: a.body_check + b.body_check,
    }
}

/// The threshold definitions behind evaluated results (so a merge needs no scenario files).
fn defs_of(results: &[ThresholdResult]) -> Vec<ThresholdDef> {
    results
        .iter()
        .map(|t| {
            let (max, min) = match t.op.as_str() {
                ">=" => (None, Some(t.limit)),
                _ if t.limit.is_infinite() => (None, None),
                _ => (Some(t.limit), None),
            };
            ThresholdDef { set: t.set, label: t.label.clone(), metric: t.metric.clone(), max, min }
        })
        .collect()
}

/// Merges the inputs (already checked consistent) and writes the merged hlogs into `out`.
pub fn merge_runs(inputs: &[(PathBuf, Summary)], out: &Path) -> Result<Summary, HarnessError> {
    let Some((_, first)) = inputs.first() else {
        return Err(HarnessError::Config("merge needs at least one run directory".into()));
    };
    let mut scenarios = Vec::new();
    for (si, base) in first.scenarios.iter().enumerate() {
        let mut stats: Vec<LabelStats> = base.labels.iter().map(|l| LabelStats::empty(&l.label)).collect();
        let mut sched = vec![ScheduleCounts::default(); base.labels.len()];
        let mut rates: Vec<Option<f64>> = base.labels.iter().map(|_| Some(0.0)).collect();
        let mut started: Option<SystemTime> = None;
        let mut db: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        let (mut users, mut elapsed, mut cancelled) = (0usize, 0f64, false);
        let mut resources = Resources::default();
        let mut pss = base.pg_stat_statements.clone();
        // Server-side measurements: every shard observed the same server, so the first input
        // that has them speaks for all (like `db_metrics`, they are not summed).
        let fleet_renewal = inputs.iter().find_map(|(_, s)| s.scenarios.get(si)?.fleet_renewal.clone());
        let scheduler_throughput = inputs.iter().find_map(|(_, s)| s.scenarios.get(si)?.scheduler_throughput.clone());
        for (dir, s) in inputs {
            let Some(sc) = s.scenarios.get(si) else { continue };
            let path = dir.join(&sc.hlog);
            let logged = hlog::read(&path).map_err(|e| HarnessError::Config(format!("{}: {e}", path.display())))?;
            if let Some(t) = hlog_start(&path) {
                started = Some(started.map_or(t, |s| s.min(t)));
            }
            for (i, l) in sc.labels.iter().enumerate() {
                if let Some(acc) = stats.get_mut(i) {
                    absorb(acc, &logged, l);
                }
                if let Some(c) = sched.get_mut(i) {
                    c.planned += l.planned;
                    c.issued += l.count;
                    c.late += l.late_starts;
                    c.dropped += l.dropped_starts;
                }
                if let Some(r) = rates.get_mut(i) {
                    *r = match (*r, l.target_rate) {
                        (Some(a), Some(b)) => Some(a + b),
                        _ => None,
                    };
                }
            }
            for (name, v) in &sc.db_metrics {
                let e = db.entry(name.clone()).or_insert((0.0, 0));
                if let Some(v) = v {
                    e.0 += v;
                    e.1 += 1;
                }
            }
            users += sc.users;
            elapsed = elapsed.max(sc.elapsed_s);
            cancelled |= sc.cancelled;
            let p = &sc.resources.peaks;
            let r = &mut resources.peaks;
            r.rss_bytes = r.rss_bytes.max(p.rss_bytes);
            r.db_connections = r.db_connections.max(p.db_connections);
            r.cpu_percent = match (r.cpu_percent, p.cpu_percent) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            // One generator's samples for the chart: the series of different servers (or of
            // one server seen twice) cannot be added sample by sample.
            if resources.samples.is_empty() {
                resources.samples = sc.resources.samples.clone();
            }
            if pss.status != "available" && sc.pg_stat_statements.status == "available" {
                pss = sc.pg_stat_statements.clone();
            }
        }
        let db_metrics: BTreeMap<String, Option<f64>> =
            db.into_iter().map(|(k, (sum, n))| (k, (n > 0).then(|| sum / n as f64))).collect();
        let labels: Vec<_> = stats
            .iter()
            .zip(&sched)
            .zip(&rates)
            // A target rate is an open-model notion: the shards' sum there, none when closed.
            .map(|((st, sc), rate)| {
                let rate = if base.model == "open" { *rate } else { None };
                label_summary(st, *sc, rate, base.duration_s)
            })
            .collect();
        let mut judged = db_metrics.clone();
        if let Some(f) = &fleet_renewal {
            judged.insert(crate::metrics::fleet::FLEET_RENEWAL_RATE.into(), f.judged_rate());
        }
        if let Some(st) = &scheduler_throughput {
            judged.extend(st.metrics());
        }
        let thresholds = gate::evaluate(&defs_of(&base.thresholds), &labels, &judged);
        hlog::write(
            &out.join(&base.hlog),
            started.unwrap_or_else(SystemTime::now),
            &format!(
                "certctl-loadtest {} scenario {} profile {} merged from {} runs",
                env!("CARGO_PKG_VERSION"),
                base.name,
                first.profile,
                inputs.len()
            ),
            &stats,
        )
        .map_err(|e| HarnessError::Config(format!("writing {}: {e}", base.hlog)))?;
        scenarios.push(ScenarioSummary {
            name: base.name.clone(),
            description: base.description.clone(),
            model: base.model.clone(),
            duration_s: base.duration_s,
            elapsed_s: elapsed,
            users,
            cancelled,
            hlog: base.hlog.clone(),
            labels,
            db_metrics,
            thresholds,
            resources,
            pg_stat_statements: pss,
            fleet_renewal,
            scheduler_throughput,
            // Faults happen to one target over one run's clock: a merge of shards has no one
            // fault timeline to add up, so it reports none.
            faults: None,
        });
    }
    let commits: Vec<&str> = {
        let mut c: Vec<&str> = inputs.iter().map(|(_, s)| s.commit.as_str()).collect();
        c.dedup();
        c
    };
    let mut targets: Vec<&str> = inputs.iter().map(|(_, s)| s.target.as_str()).collect();
    targets.sort();
    targets.dedup();
    let mut s = Summary {
        schema_version: summary::SCHEMA_VERSION,
        tool: format!("certctl-loadtest {}", env!("CARGO_PKG_VERSION")),
        commit: commits.join(","),
        // RFC 3339 UTC strings of one format sort chronologically.
        started_at: inputs.iter().map(|(_, s)| s.started_at.clone()).min().unwrap_or_default(),
        finished_at: inputs.iter().map(|(_, s)| s.finished_at.clone()).max().unwrap_or_default(),
        profile: first.profile.clone(),
        mode: first.mode.clone(),
        target: targets.join(", "),
        server_settings: first.server_settings.clone(),
        host: first.host.clone(),
        postgres: first.postgres.clone(),
        seeding: inputs.iter().find_map(|(_, s)| s.seeding.clone()),
        scenarios,
        verdict: first.verdict.clone(),
        comparison: None,
        shard: None,
        merged_from: Some(
            inputs
                .iter()
                .map(|(d, s)| MergedRun {
                    dir: d.display().to_string(),
                    shard: s.shard,
                    commit: s.commit.clone(),
                    started_at: s.started_at.clone(),
                    host: format!("{} ({}, {} cores)", s.host.hostname, s.host.cpu_model, s.host.cores),
                    start_at: s.start.as_ref().map(|st| st.at.clone()),
                    clock_offset_ms: s.start.as_ref().and_then(|st| st.clock_offset_ms),
                })
                .collect(),
        ),
        replicas: None,
        // The shards' common declared start (checked equal); their offsets are per input.
        start: first.start.as_ref().map(|st| crate::clock::SyncStart {
            at: st.at.clone(),
            clock_offset_ms: None,
            clock_reference: None,
            clock_rtt_ms: None,
        }),
    };
    s.verdict = crate::runner::verdict(&s);
    Ok(s)
}

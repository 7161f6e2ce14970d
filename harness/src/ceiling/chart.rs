//! The knee chart of a ceiling search: offered against achieved rate per trial (with the
//! achieved = offered line), and each trial's worst-label p50 and p99 against the offered rate
//! with the SLO, so the knee where latency turns up is visible. Drawn with the one chart style
//! of the harness ([`crate::report::charts`]): legends beside the plots, no shared styles.

use std::path::Path;

use super::output::{Ceiling, TrialRecord};
use crate::HarnessError;
use crate::report::charts::{self, Axis, Chart, Panel, Series, style};

/// Draws `<scenario>-knee.png` and `.svg`; returns the file stem (empty: no trials).
pub fn knee(dir: &Path, c: &Ceiling) -> Result<String, HarnessError> {
    if c.trials.is_empty() {
        return Ok(String::new());
    }
    let chart = knee_chart(c);
    charts::write_chart(dir, &chart)?;
    Ok(chart.name)
}

/// The chart itself (two panels, one above the other).
pub fn knee_chart(c: &Ceiling) -> Chart {
    let xmax = c.trials.iter().map(|t| t.offered_rate.max(t.achieved_rate)).fold(1.0f64, f64::max) * 1.08;
    Chart {
        name: format!("{}-knee", c.scenario),
        title: format!("{} — capacity search, one mark per trial", c.scenario),
        panels: vec![rate_panel(c, xmax), latency_panel(c, xmax)],
        columns: 1,
        row_height: 400,
    }
}

/// `+` marks at `pts`, as pairs of segment ends, `dx`/`dy` half-widths in data units.
fn marks(pts: &[(f64, f64)], dx: f64, dy: f64) -> Vec<(f64, f64)> {
    pts.iter().flat_map(|&(x, y)| [(x - dx, y), (x + dx, y), (x, y - dy), (x, y + dy)]).collect()
}

fn rate_panel(c: &Ceiling, xmax: f64) -> Panel {
    let mut series = vec![Series {
        name: "achieved = offered".into(),
        style: style(6, 1),
        width: 1,
        segments: false,
        points: vec![(0.0, 0.0), (xmax, xmax)],
    }];
    type Member = fn(&TrialRecord) -> bool;
    let classes: [(&str, Member); 3] = [
        ("passed", |t| t.passed),
        ("failed (server)", |t| !t.passed && t.harness_bound.is_none()),
        ("harness-bound", |t| !t.passed && t.harness_bound.is_some()),
    ];
    for (k, (name, member)) in classes.iter().enumerate() {
        let pts: Vec<(f64, f64)> =
            c.trials.iter().filter(|t| member(t)).map(|t| (t.offered_rate, t.achieved_rate)).collect();
        if !pts.is_empty() {
            series.push(Series {
                name: format!("{name} trial"),
                style: style(k, 0),
                width: 2,
                segments: true,
                points: marks(&pts, xmax * 0.008, xmax * 0.016),
            });
        }
    }
    Panel {
        title: "offered vs achieved rate".into(),
        x: Axis::linear("offered (requests/s)", 0.0..xmax),
        y: Axis::linear("achieved (requests/s)", 0.0..xmax),
        series,
    }
}

/// The worst label's corrected p50 or p99 of a trial, in ms.
fn worst(t: &TrialRecord, p99: bool) -> f64 {
    let (p50, p99v) = t.worst_p50_p99();
    if p99 { p99v } else { p50 }
}

fn latency_panel(c: &Ceiling, xmax: f64) -> Panel {
    let slo = c.criteria.slo_p99_ms.iter().flatten().copied().reduce(f64::min);
    // A failed trial's p99 can be seconds; above 4 × the SLO the knee is already plain, so
    // larger values are drawn at that edge (the title says so) rather than flattening the rest.
    let cap = slo.map(|s| s * 4.0).unwrap_or(f64::INFINITY);
    let mut by_rate: Vec<&TrialRecord> = c.trials.iter().collect();
    by_rate.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    let line =
        |p99: bool| -> Vec<(f64, f64)> { by_rate.iter().map(|t| (t.offered_rate, worst(t, p99).min(cap))).collect() };
    let (p50, p99) = (line(false), line(true));
    let ymax = p99.iter().map(|p| p.1).chain(slo).fold(1.0f64, f64::max) * 1.1;
    let mut series = vec![
        Series { name: "p99 (corrected)".into(), style: style(0, 0), width: 2, segments: false, points: p99.clone() },
        Series { name: "p50 (corrected)".into(), style: style(0, 1), width: 2, segments: false, points: p50 },
        Series {
            name: "trial".into(),
            style: style(0, 0),
            width: 1,
            segments: true,
            points: marks(&p99, xmax * 0.008, ymax * 0.016),
        },
    ];
    if let Some(s) = slo {
        series.push(Series {
            name: format!("p99 SLO {} ms", charts::tick(s)),
            style: style(5, 2),
            width: 2,
            segments: false,
            points: vec![(0.0, s), (xmax, s)],
        });
    }
    let title = if cap.is_finite() {
        format!("worst label's latency per trial (above {} ms drawn at the top edge)", charts::tick(cap))
    } else {
        "worst label's latency per trial".into()
    };
    Panel {
        title,
        x: Axis::linear("offered (requests/s)", 0.0..xmax),
        y: Axis::linear("latency (ms)", 0.0..ymax),
        series,
    }
}

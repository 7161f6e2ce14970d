//! Artifacts of a run: `summary.json`, `report.md`, `report.html`, `junit.xml` and the charts.
//!
//! Data flow: the run writes `summary.json` ([`summary`]) and one `.hlog` per scenario, then
//! calls [`render`], which reads *only those files* back and produces `report.md`
//! ([`markdown`]), the self-contained `report.html` ([`html`]), `junit.xml` ([`junit`]) and the
//! PNG/SVG charts ([`charts`]). `report RUN_DIR` calls the same [`render`], so a re-rendered
//! report is exactly what the run produced. A command with sections of its own (capacity,
//! A/B, faults) calls [`render_with`].

pub mod charts;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod summary;

use std::collections::BTreeMap;
use std::path::Path;

use crate::HarnessError;
use crate::metrics::{LabelStats, Percentiles, hlog};
use crate::scenario::engine::ScheduleCounts;
use summary::{IntervalSummary, LabelSummary};

/// Builds a label's summary from what the recorder saw.
pub fn label_summary(s: &LabelStats, sched: ScheduleCounts, target_rate: Option<f64>, duration_s: f64) -> LabelSummary {
    let count = s.count();
    let frac = |n: u64| if count == 0 { 0.0 } else { n as f64 / count as f64 };
    LabelSummary {
        label: s.label.clone(),
        count,
        target_rate,
        achieved_rate: if duration_s > 0.0 { count as f64 / duration_s } else { 0.0 },
        corrected: Percentiles::of(&s.corrected),
        service: Percentiles::of(&s.service),
        errors: s.errors,
        error_rate: frac(s.errors.total()),
        error_rate_5xx: frac(s.errors.status_5xx),
        status_counts: s.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        rate_limited_429: s.rate_limited,
        planned: sched.planned,
        late_starts: sched.late,
        dropped_starts: sched.dropped,
        intervals: s
            .intervals
            .iter()
            .enumerate()
            .map(|(t, iv)| {
                let p = Percentiles::of(&iv.corrected);
                IntervalSummary { t_s: t as u64, count: iv.corrected.len(), errors: iv.errors, p50: p.p50, p99: p.p99 }
            })
            .collect(),
    }
}

/// Histograms read back from a run's hlogs: (scenario, tag) → whole-run histogram.
pub type Spectra = BTreeMap<(String, String), hdrhistogram::Histogram<u64>>;

/// Writes `value` as pretty JSON (with a final newline) to `dir/file`.
pub fn write_json<T: serde::Serialize>(dir: &Path, file: &str, value: &T) -> Result<(), HarnessError> {
    let p = dir.join(file);
    let text = serde_json::to_string_pretty(value).map_err(|e| HarnessError::Config(e.to_string()))?;
    std::fs::write(&p, text + "\n").map_err(|e| HarnessError::io(&p, e))
}

/// Reads `dir/file` as JSON of type `T` (an error names the file).
pub fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<T, HarnessError> {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).map_err(|e| HarnessError::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| HarnessError::Config(format!("{}: {e}", p.display())))
}

/// Re-renders a run directory: an `ab` directory (`ab.json`), a `ceiling` directory
/// (`ceiling.json`) or a run's.
pub fn render_any(dir: &Path) -> Result<(), HarnessError> {
    if dir.join(crate::ab::output::FILE).is_file() {
        return crate::ab::output::render(dir);
    }
    if dir.join(crate::ceiling::output::FILE).is_file() && !dir.join(summary::FILE).is_file() {
        return crate::ceiling::output::render(dir);
    }
    render(dir)
}

/// Reads the whole-run histogram of every (scenario, tag) from a run directory's hlogs.
pub fn spectra(dir: &Path, s: &summary::Summary) -> Result<Spectra, HarnessError> {
    let mut spectra = Spectra::new();
    for sc in &s.scenarios {
        let path = dir.join(&sc.hlog);
        let logged = hlog::read(&path).map_err(|e| HarnessError::Config(format!("{}: {e}", path.display())))?;
        for (tag, ivs) in &logged {
            spectra.insert((sc.name.clone(), tag.clone()), hlog::merged(ivs));
        }
    }
    Ok(spectra)
}

/// Re-renders `report.md`, `report.html`, `junit.xml` and the charts of a run directory from
/// its `summary.json` and hlogs.
pub fn render(dir: &Path) -> Result<(), HarnessError> {
    let s = summary::read(dir)?;
    render_with(dir, &s, &[])
}

/// [`render`] for a summary already in hand, with `extra` sections in `report.html` (a
/// command's own results: capacity, A/B, faults), placed after the baseline table.
pub fn render_with(dir: &Path, s: &summary::Summary, extra: &[html::Section]) -> Result<(), HarnessError> {
    let spectra = spectra(dir, s)?;
    let charts = charts::render_all(dir, s, &spectra)?;
    let md = markdown::render(s, &charts);
    let p = dir.join("report.md");
    std::fs::write(&p, md).map_err(|e| HarnessError::io(&p, e))?;
    html::write(dir, &html::run_page(dir, s, &charts, extra))?;
    let p = dir.join("junit.xml");
    std::fs::write(&p, junit::render(s)).map_err(|e| HarnessError::io(&p, e))?;
    Ok(())
}

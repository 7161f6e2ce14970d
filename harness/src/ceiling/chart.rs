//! The knee chart of a ceiling search: offered against achieved rate per trial (with the
//! achieved = offered line), and each trial's worst-label p50 and p99 against the offered rate
//! (log scale, with the SLO), so the knee where latency turns up is visible.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::output::Ceiling;
use crate::HarnessError;
use crate::report::charts::{self, DynBackend, PALETTE, Res, e};

/// Draws `<scenario>-knee.png` and `.svg`; returns the file stem.
pub fn knee(dir: &Path, c: &Ceiling) -> Result<String, HarnessError> {
    if c.trials.is_empty() {
        return Ok(String::new());
    }
    charts::ensure_font()?;
    let name = format!("{}-knee", c.scenario);
    let mut files = Vec::new();
    charts::draw_both(dir, &name, (1000, 800), &mut files, |root| draw(root, c))?;
    Ok(name)
}

fn verdict_colour(passed: bool, harness_bound: bool) -> RGBColor {
    match (passed, harness_bound) {
        (true, _) => PALETTE[2],
        (false, true) => PALETTE[1],
        (false, false) => PALETTE[3],
    }
}

fn draw(root: DrawingArea<DynBackend<'_>, Shift>, c: &Ceiling) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(400);
    let xmax = c.trials.iter().map(|t| t.offered_rate.max(t.achieved_rate)).fold(1.0f64, f64::max) * 1.08;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{} — offered vs achieved rate per trial", c.scenario), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..xmax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("offered (requests/s)")
        .y_desc("achieved (requests/s)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (xmax, xmax)], 6, 4, BLACK.mix(0.5).stroke_width(1)))
        .map_err(e)?
        .label("achieved = offered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    for (label, passed, hb) in [("pass", true, false), ("fail", false, false), ("harness-bound", false, true)] {
        let colour = verdict_colour(passed, hb);
        let pts: Vec<(f64, f64)> = c
            .trials
            .iter()
            .filter(|t| t.passed == passed && (t.harness_bound.is_some() == hb || passed))
            .map(|t| (t.offered_rate, t.achieved_rate))
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, colour.filled())))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    latency(&bottom, c, xmax)?;
    root.present().map_err(e)
}

fn latency(area: &DrawingArea<DynBackend<'_>, Shift>, c: &Ceiling, xmax: f64) -> Res {
    let worst = |t: &super::output::TrialRecord, p99: bool| {
        t.labels
            .iter()
            .filter(|l| l.count > 0)
            .map(|l| if p99 { l.corrected.p99 } else { l.corrected.p50 })
            .fold(0.0f64, f64::max)
            .max(0.01)
    };
    let ymax = c.trials.iter().map(|t| worst(t, true)).fold(1.0f64, f64::max) * 2.0;
    let ymin = c.trials.iter().map(|t| worst(t, false)).fold(f64::MAX, f64::min).min(1.0) / 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption("worst label's corrected p50 / p99 per trial", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("offered (requests/s)")
        .y_desc("latency (ms, log)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| if *v >= 10.0 { format!("{v:.0}") } else { format!("{v}") })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    let mut by_rate: Vec<&super::output::TrialRecord> = c.trials.iter().collect();
    by_rate.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    for (p99, colour, label) in [(false, PALETTE[0], "p50"), (true, PALETTE[4], "p99")] {
        let pts: Vec<(f64, f64)> = by_rate.iter().map(|t| (t.offered_rate, worst(t, p99))).collect();
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, colour.filled())))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
    }
    if let Some(slo) = c.criteria.slo_p99_ms.iter().flatten().copied().reduce(f64::min) {
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, slo), (xmax, slo)], 6, 4, PALETTE[3].stroke_width(1)))
            .map_err(e)?
            .label(format!("p99 SLO {slo} ms"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[3]));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)
}

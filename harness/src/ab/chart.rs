//! The per-round ratio chart of an `ab` comparison: one panel per label × metric, B/A of each
//! round (log scale) with the bootstrap interval of the median as a band, the median as a
//! line, ± the minimum effect dashed and the verdict in the caption.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::compare::{Comparison, Verdict};
use super::output::Ab;
use crate::HarnessError;
use crate::report::charts::{self, DynBackend, PALETTE, Res, e};

/// Height of one panel, pixels.
const PANEL: u32 = 220;

/// Draws `<scenario>-ab.png` and `.svg`; returns the file stem (empty without comparisons).
pub fn ratios(dir: &Path, ab: &Ab) -> Result<String, HarnessError> {
    let shown: Vec<&Comparison> = ab.comparisons.iter().filter(|c| c.n > 0).collect();
    if shown.is_empty() {
        return Ok(String::new());
    }
    charts::ensure_font()?;
    let name = format!("{}-ab", ab.scenario);
    let mut files = Vec::new();
    let size = (1000, PANEL * shown.len() as u32);
    charts::draw_both(dir, &name, size, &mut files, |root| draw(root, &shown))?;
    Ok(name)
}

fn draw(root: DrawingArea<DynBackend<'_>, Shift>, shown: &[&Comparison]) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let panels = root.split_evenly((shown.len(), 1));
    for (area, c) in panels.iter().zip(shown) {
        panel(area, c)?;
    }
    root.present().map_err(e)
}

fn verdict_colour(v: Verdict) -> RGBColor {
    match v {
        Verdict::Regressed => PALETTE[3],
        Verdict::NoChange => PALETTE[2],
        Verdict::Improved => PALETTE[0],
        Verdict::Inconclusive => PALETTE[1],
    }
}

fn panel(area: &DrawingArea<DynBackend<'_>, Shift>, c: &Comparison) -> Res {
    let pts: Vec<(f64, f64)> =
        c.log_ratios.iter().enumerate().filter_map(|(i, r)| r.map(|r| ((i + 1) as f64, r.exp()))).collect();
    let hi_effect = 1.0 + c.min_effect;
    let all = pts.iter().map(|p| p.1).chain(c.interval.into_iter().flatten()).chain([hi_effect, 1.0 / hi_effect]);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    let (ymin, ymax) = (lo / 1.05, hi * 1.05);
    let xmax = c.log_ratios.len().max(1) as f64 + 0.5;
    let caption = format!(
        "{} {} — median B/A ×{:.3}, p = {:.3}: {}",
        c.label,
        c.metric.as_str(),
        c.median_ratio.unwrap_or(f64::NAN),
        c.p_value,
        c.verdict.as_str()
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..xmax, (ymin..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("B / A")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    let colour = verdict_colour(c.verdict);
    if let Some([l, h]) = c.interval {
        chart.draw_series([Rectangle::new([(0.5, l), (xmax, h)], colour.mix(0.18).filled())]).map_err(e)?;
    }
    if let Some(m) = c.median_ratio {
        chart.draw_series(LineSeries::new(vec![(0.5, m), (xmax, m)], colour.stroke_width(2))).map_err(e)?;
    }
    for y in [hi_effect, 1.0 / hi_effect] {
        chart
            .draw_series(DashedLineSeries::new(vec![(0.5, y), (xmax, y)], 6, 4, BLACK.mix(0.5).stroke_width(1)))
            .map_err(e)?;
    }
    chart.draw_series(LineSeries::new(vec![(0.5, 1.0), (xmax, 1.0)], BLACK.mix(0.3))).map_err(e)?;
    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLACK.filled()))).map_err(e)?;
    Ok(())
}

//! The per-round ratio chart of an `ab` comparison: one panel per label × metric, B/A of each
//! round (a mark per round), the median ratio, the bootstrap interval of the median (its two
//! ends), ± the minimum effect and the verdict in the caption. Drawn in the harness's one chart
//! style ([`crate::report::charts`]): legends beside the plots, no two series alike.

use std::path::Path;

use super::compare::Comparison;
use super::output::Ab;
use crate::HarnessError;
use crate::report::charts::{self, Axis, Chart, Panel, Series, style};

/// Draws `<scenario>-ab.png` and `.svg`; returns the file stem (empty without comparisons).
pub fn ratios(dir: &Path, ab: &Ab) -> Result<String, HarnessError> {
    let shown: Vec<&Comparison> = ab.comparisons.iter().filter(|c| c.n > 0).collect();
    if shown.is_empty() {
        return Ok(String::new());
    }
    let chart = Chart {
        name: format!("{}-ab", ab.scenario),
        title: format!("{} — B/A per round, with the median's interval", ab.scenario),
        panels: shown.iter().map(|c| panel(c)).collect(),
        columns: 1,
        row_height: 260,
    };
    charts::write_chart(dir, &chart)?;
    Ok(chart.name)
}

fn hline(name: String, style_i: (usize, usize), width: u32, y: f64, xmax: f64) -> Series {
    Series { name, style: style(style_i.0, style_i.1), width, segments: false, points: vec![(0.5, y), (xmax, y)] }
}

fn panel(c: &Comparison) -> Panel {
    let pts: Vec<(f64, f64)> =
        c.log_ratios.iter().enumerate().filter_map(|(i, r)| r.map(|r| ((i + 1) as f64, r.exp()))).collect();
    let hi_effect = 1.0 + c.min_effect;
    let all = pts.iter().map(|p| p.1).chain(c.interval.into_iter().flatten()).chain([hi_effect, 1.0 / hi_effect]);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    let (ymin, ymax) = ((lo - (hi - lo) * 0.08).max(0.0), hi + (hi - lo) * 0.08);
    let xmax = c.log_ratios.len().max(1) as f64 + 0.5;
    let (dx, dy) = (0.12, (ymax - ymin) * 0.025);
    let mut series = vec![Series {
        name: "B/A of a round".into(),
        style: style(0, 0),
        width: 2,
        segments: true,
        points: pts.iter().flat_map(|&(x, y)| [(x - dx, y), (x + dx, y), (x, y - dy), (x, y + dy)]).collect(),
    }];
    if let Some(m) = c.median_ratio {
        series.push(hline(format!("median ×{}", charts::tick(m)), (1, 0), 2, m, xmax));
    }
    if let Some([l, h]) = c.interval {
        let band = format!("interval [{}, {}]", charts::tick(l), charts::tick(h));
        series.push(Series {
            name: band,
            style: style(1, 2),
            width: 2,
            segments: true,
            points: vec![(0.5, l), (xmax, l), (0.5, h), (xmax, h)],
        });
    }
    series.push(Series {
        name: format!("± minimum effect ({} %)", charts::tick(c.min_effect * 100.0)),
        style: style(7, 1),
        width: 1,
        segments: true,
        points: vec![(0.5, hi_effect), (xmax, hi_effect), (0.5, 1.0 / hi_effect), (xmax, 1.0 / hi_effect)],
    });
    series.push(hline("no change (×1)".into(), (6, 2), 1, 1.0, xmax));
    Panel {
        title: format!(
            "{} {} — median B/A ×{:.3}, p = {:.3}: {}",
            c.label,
            c.metric.as_str(),
            c.median_ratio.unwrap_or(f64::NAN),
            c.p_value,
            c.verdict.as_str()
        ),
        x: Axis::linear("round", 0.5..xmax),
        y: Axis::linear("B / A", ymin..ymax),
        series,
    }
}

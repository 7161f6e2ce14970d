//! Charts (PNG and SVG) drawn with plotters, with a bundled font so no system fonts are needed
//! (DejaVu Sans, `harness/assets/`, under its own free licence).
//!
//! Per scenario: the latency percentile spectrum per label (corrected and service time, x axis
//! in "nines" like HdrHistogram's plotter), p50/p99 and throughput over time, server RSS/CPU
//! over time when samples exist, and the fleet-renewal / scheduler-throughput series.
//!
//! Data flow: [`charts_of`] turns a summary (and the hlogs' histograms) into [`Chart`]s — plain
//! data: panels of named series, each with a [`SeriesStyle`] from the one palette function
//! [`style`]. [`render_all`] draws every chart twice (PNG for `report.md`, SVG for
//! `report.html`). Keeping the charts as data lets a test check what a reader relies on: no two
//! series of a panel share a colour *and* a dash pattern, no panel carries more than
//! [`MAX_LABELS_PER_PANEL`] labels (more become small multiples or a split), and the legend sits
//! beside the plot, never on it.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use super::Spectra;
use super::summary::{ScenarioSummary, Summary};
use crate::HarnessError;
use crate::metrics::fleet::FleetPoint;
use crate::metrics::hlog::service_tag;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn ensure_font() -> Result<(), HarnessError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(HarnessError::Config("bundled chart font could not be loaded".into())) }
}

/// The Okabe–Ito colour-blind-safe palette (yellow replaced by grey, which reads on white).
const COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

/// A scenario with more labels than this gets small multiples (spectrum) or a split
/// (timeline), so a panel never holds more lines than a reader can tell apart.
pub const MAX_LABELS_PER_PANEL: usize = 6;

/// Width of a legend placed to the right of its plot.
const LEGEND_W: u32 = 230;
/// Height of one legend row.
const LEGEND_ROW: i32 = 18;

/// Dash pattern of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dash {
    /// Continuous.
    Solid,
    /// Long dashes.
    Dashed,
    /// Dots.
    Dotted,
}

const DASHES: [Dash; 3] = [Dash::Solid, Dash::Dashed, Dash::Dotted];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesStyle {
    /// RGB colour.
    pub color: (u8, u8, u8),
    /// Dash pattern.
    pub dash: Dash,
}

/// The one palette of every chart: series `i` of a panel in its `variant` (0 = the main line,
/// 1 = its companion such as p50 beside p99 or service time beside corrected, 2 = a third).
/// Colours repeat only after eight series, and then with another dash pattern.
pub fn style(i: usize, variant: usize) -> SeriesStyle {
    let RGBColor(r, g, b) = COLORS[i % COLORS.len()];
    SeriesStyle { color: (r, g, b), dash: DASHES[(variant + i / COLORS.len()) % DASHES.len()] }
}

impl SeriesStyle {
    fn shape(&self, width: u32) -> ShapeStyle {
        RGBColor(self.color.0, self.color.1, self.color.2).stroke_width(width)
    }
}

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour and dash.
    pub style: SeriesStyle,
    /// Stroke width in pixels.
    pub width: u32,
    /// The points are pairs of segment ends (e.g. vertical markers), not one line.
    pub segments: bool,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// An axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Description with the unit, e.g. `latency (ms)`.
    pub desc: String,
    /// Range drawn.
    pub range: Range<f64>,
    /// Labelled ticks at given values (e.g. "nines" as 50 %, 90 %, 99 %, or commits);
    /// empty: plotters picks them (x axis only).
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// An axis with automatic ticks.
    pub fn linear(desc: &str, range: Range<f64>) -> Self {
        Axis { desc: desc.into(), range, ticks: Vec::new() }
    }
}

/// One plot with its own axes and legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Caption above the plot (empty: none).
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The lines.
    pub series: Vec<Series>,
}

/// One chart file: a title and a grid of panels.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// File stem, e.g. `api-spectrum`.
    pub name: String,
    /// Title.
    pub title: String,
    /// Panels, row by row.
    pub panels: Vec<Panel>,
    /// Panels per row.
    pub columns: usize,
    /// Height of one row of panels, pixels.
    pub row_height: u32,
}

impl Chart {
    /// Pixel size of the image.
    pub fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.columns.max(1)).max(1) as u32;
        (1000, 44 + rows * self.row_height)
    }
}

/// A tick label without meaningless decimals: `16`, `180`, `2.5`, `0.125`.
pub fn tick(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v.abs() >= 100.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// The "nines" ticks of a percentile axis, as HdrHistogram's plotter labels them.
pub const NINES_TICKS: [(f64, &str); 5] =
    [(std::f64::consts::LOG10_2, "50 %"), (1.0, "90 %"), (2.0, "99 %"), (3.0, "99.9 %"), (4.0, "99.99 %")];

type Res = Result<(), String>;

fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("{err:?}")
}

/// Every chart of a run, as data (what [`render_all`] draws).
pub fn charts_of(s: &Summary, spectra: &Spectra) -> Vec<Chart> {
    let mut out = Vec::new();
    for sc in &s.scenarios {
        out.push(spectrum_chart(sc, spectra));
        out.push(timeline_chart(sc));
        if sc.resources.samples.iter().any(|x| x.rss_bytes.is_some() || x.db_connections.is_some()) {
            out.push(resources_chart(sc));
        }
        if let Some(f) = sc.fleet_renewal.as_ref().filter(|f| !f.series.is_empty()) {
            let level =
                (f.peak_window_avg_per_s, format!("peak {}-s average {:.0}/s", f.window_s, f.peak_window_avg_per_s));
            out.push(rate_chart(
                format!("{}-fleet-renewal", sc.name),
                format!("{} — fleet renewals per second", sc.name),
                &f.series,
                &level,
            ));
        }
        if let Some(t) = sc.scheduler_throughput.as_ref().filter(|t| !t.series.is_empty()) {
            let level =
                (t.certs_per_s, format!("end to end {:.0}/s ({} in {:.1} s)", t.certs_per_s, t.completed, t.seconds));
            out.push(rate_chart(
                format!("{}-scheduler-throughput", sc.name),
                format!("{} — jobs completed per second after one bulk renew", sc.name),
                &t.series,
                &level,
            ));
        }
    }
    out
}

/// Draws every chart of a run as PNG and SVG; returns the file names written.
pub fn render_all(dir: &Path, s: &Summary, spectra: &Spectra) -> Result<Vec<String>, HarnessError> {
    ensure_font()?;
    let mut files = Vec::new();
    for c in charts_of(s, spectra) {
        draw_both(dir, &c.name, c.size(), &mut files, |root| draw_chart(root, &c))?;
    }
    Ok(files)
}

/// Splits `n` labels into balanced groups of at most [`MAX_LABELS_PER_PANEL`] (9 → 5 + 4).
pub fn label_groups(n: usize) -> Vec<Range<usize>> {
    let groups = n.div_ceil(MAX_LABELS_PER_PANEL).max(1);
    let per = n.div_ceil(groups).max(1);
    (0..n).step_by(per).map(|a| a..(a + per).min(n)).collect()
}

/// Upper end of a value axis: 10 % above the largest value, at least `floor`.
fn headroom(values: impl Iterator<Item = f64>, floor: f64) -> f64 {
    values.fold(floor, f64::max) * 1.1
}

/// The percentile spectrum of each label, corrected (solid) and service time (dashed). More
/// than [`MAX_LABELS_PER_PANEL`] labels: one small panel per label, each on its own y scale.
fn spectrum_chart(sc: &ScenarioSummary, spectra: &Spectra) -> Chart {
    let curve = |tag: &str| -> Option<Vec<(f64, f64)>> {
        let h = spectra.get(&(sc.name.clone(), tag.to_string())).filter(|h| !h.is_empty())?;
        Some(
            (0..=400)
                .map(|k| {
                    let x = k as f64 / 100.0;
                    (x, h.value_at_quantile(1.0 - 10f64.powf(-x)) as f64 / 1000.0)
                })
                .collect(),
        )
    };
    let per_label: Vec<(String, Vec<Series>)> = sc
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v = Vec::new();
            if let Some(p) = curve(&l.label) {
                v.push(Series {
                    name: format!("{} corrected", l.label),
                    style: style(i, 0),
                    width: 2,
                    segments: false,
                    points: p,
                });
            }
            if let Some(p) = curve(&service_tag(&l.label)) {
                v.push(Series {
                    name: format!("{} service", l.label),
                    style: style(i, 1),
                    width: 1,
                    segments: false,
                    points: p,
                });
            }
            (l.label.clone(), v)
        })
        .collect();
    let panel = |title: String, series: Vec<Series>| {
        let ymax = headroom(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), 1.0);
        Panel {
            title,
            x: Axis {
                desc: "percentile (x: −log10(1 − q))".into(),
                range: 0.0..4.0,
                ticks: NINES_TICKS.iter().map(|(x, t)| (*x, t.to_string())).collect(),
            },
            y: Axis::linear("latency (ms)", 0.0..ymax),
            series,
        }
    };
    let title = format!("{} — latency by percentile (solid: corrected, dashed: service time)", sc.name);
    if per_label.len() > MAX_LABELS_PER_PANEL {
        let panels = per_label
            .into_iter()
            .map(|(label, series)| {
                // Each small multiple restarts the palette: its lines are one label's pair, in
                // two colours, since in a closed model the two curves coincide.
                let series = series.into_iter().enumerate().map(|(k, s)| Series { style: style(k, k), ..s }).collect();
                panel(label, series)
            })
            .collect();
        Chart { name: format!("{}-spectrum", sc.name), title, panels, columns: 3, row_height: 300 }
    } else {
        let series = per_label.into_iter().flat_map(|(_, s)| s).collect();
        Chart {
            name: format!("{}-spectrum", sc.name),
            title,
            panels: vec![panel(String::new(), series)],
            columns: 1,
            row_height: 520,
        }
    }
}

/// p99 (solid) and p50 (dashed) per second, and completed requests per second, per label;
/// labels beyond [`MAX_LABELS_PER_PANEL`] are split into groups, each with its own pair of panels.
/// The faults of a trial on a timeline panel of height `top`: one vertical line where each fault
/// began and one where it ended (black, dotted), and one at the second it recovered (grey,
/// dotted). The series' names carry the kinds, so the legend says which fault is which.
fn fault_marks(sc: &ScenarioSummary, top: f64) -> Vec<Series> {
    let Some(f) = sc.faults.as_ref().filter(|f| !f.faults.is_empty()) else { return Vec::new() };
    let vline = |t: f64| [(t, 0.0), (t, top)];
    let kinds: Vec<String> =
        f.faults.iter().map(|x| format!("{} {}–{} s", x.kind, tick(x.started_s), tick(x.ended_s))).collect();
    let mut v = vec![Series {
        name: format!("fault: {}", kinds.join(", ")),
        style: style(6, 2),
        width: 2,
        segments: true,
        points: f.faults.iter().flat_map(|x| vline(x.started_s).into_iter().chain(vline(x.ended_s))).collect(),
    }];
    let recovered: Vec<(f64, f64)> =
        f.faults.iter().filter_map(|x| x.recovery_s.map(|r| x.ended_s + r)).flat_map(vline).collect();
    if !recovered.is_empty() {
        v.push(Series { name: "recovered".into(), style: style(7, 2), width: 2, segments: true, points: recovered });
    }
    v
}

fn timeline_chart(sc: &ScenarioSummary) -> Chart {
    let tmax = sc.labels.iter().map(|l| l.intervals.len()).max().unwrap_or(1).max(1) as f64;
    let groups = label_groups(sc.labels.len());
    let mut panels = Vec::new();
    for g in &groups {
        let labels = &sc.labels[g.clone()];
        let suffix = if groups.len() > 1 {
            format!(" — {}", labels.iter().map(|l| l.label.as_str()).collect::<Vec<_>>().join(", "))
        } else {
            String::new()
        };
        let mut lat = Vec::new();
        let mut rate = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            let done = || l.intervals.iter().filter(|x| x.count > 0);
            lat.push(Series {
                name: format!("{} p99", l.label),
                style: style(i, 0),
                width: 2,
                segments: false,
                points: done().map(|x| (x.t_s as f64, x.p99)).collect(),
            });
            lat.push(Series {
                name: format!("{} p50", l.label),
                style: style(i, 1),
                width: 1,
                segments: false,
                points: done().map(|x| (x.t_s as f64, x.p50)).collect(),
            });
            rate.push(Series {
                name: l.label.clone(),
                style: style(i, 0),
                width: 2,
                segments: false,
                points: l.intervals.iter().map(|x| (x.t_s as f64, x.count as f64)).collect(),
            });
        }
        let ymax = headroom(lat.iter().flat_map(|s| s.points.iter().map(|p| p.1)), 1.0);
        let rmax = headroom(rate.iter().flat_map(|s| s.points.iter().map(|p| p.1)), 1.0);
        lat.extend(fault_marks(sc, ymax));
        rate.extend(fault_marks(sc, rmax));
        panels.push(Panel {
            title: format!("p99 / p50 per second{suffix}"),
            x: Axis::linear("seconds since start", 0.0..tmax),
            y: Axis::linear("latency (ms)", 0.0..ymax),
            series: lat,
        });
        panels.push(Panel {
            title: format!("completed requests per second{suffix}"),
            x: Axis::linear("seconds since start", 0.0..tmax),
            y: Axis::linear("requests/s", 0.0..rmax),
            series: rate,
        });
    }
    Chart {
        name: format!("{}-timeline", sc.name),
        title: format!("{} — latency and throughput over time", sc.name),
        panels,
        columns: 1,
        row_height: 330,
    }
}

/// Server RSS (MiB), server CPU (% of one core) and database connections over time.
fn resources_chart(sc: &ScenarioSummary) -> Chart {
    let samples = &sc.resources.samples;
    let tmax = samples.iter().map(|s| s.t_s).fold(1.0f64, f64::max);
    let tmin = samples.iter().map(|s| s.t_s).fold(0.0f64, f64::min);
    let rss: Vec<(f64, f64)> =
        samples.iter().filter_map(|s| s.rss_bytes.map(|r| (s.t_s, r as f64 / 1048576.0))).collect();
    let cpu: Vec<(f64, f64)> = samples.iter().filter_map(|s| s.cpu_percent.map(|c| (s.t_s, c))).collect();
    let conns: Vec<(f64, f64)> = samples.iter().filter_map(|s| s.db_connections.map(|c| (s.t_s, c as f64))).collect();
    let rmax = headroom(rss.iter().map(|x| x.1), 1.0);
    let cmax = headroom(cpu.iter().chain(conns.iter()).map(|x| x.1), 10.0);
    Chart {
        name: format!("{}-resources", sc.name),
        title: format!("{} — server resources", sc.name),
        panels: vec![
            Panel {
                title: String::new(),
                x: Axis::linear("seconds since start", tmin..tmax),
                y: Axis::linear("RSS (MiB)", 0.0..rmax),
                series: vec![Series {
                    name: "server RSS".into(),
                    style: style(0, 0),
                    width: 2,
                    segments: false,
                    points: rss,
                }],
            },
            Panel {
                title: String::new(),
                x: Axis::linear("seconds since start", tmin..tmax),
                y: Axis::linear("CPU % of a core / connections", 0.0..cmax),
                series: vec![
                    Series { name: "server CPU %".into(), style: style(1, 0), width: 2, segments: false, points: cpu },
                    Series {
                        name: "DB connections".into(),
                        style: style(2, 0),
                        width: 2,
                        segments: false,
                        points: conns,
                    },
                ],
            },
        ],
        columns: 1,
        row_height: 280,
    }
}

/// A per-second fleet series (renewals or job completions) with a dashed line at the judged
/// rate `level` (value, legend text).
fn rate_chart(name: String, title: String, series: &[FleetPoint], level: &(f64, String)) -> Chart {
    let pts: Vec<(f64, f64)> = series.iter().map(|p| (p.t_s, p.per_s)).collect();
    let tmax = pts.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let tmin = pts.iter().map(|p| p.0).fold(0.0f64, f64::min);
    let ymax = headroom(pts.iter().map(|p| p.1), level.0.max(1.0));
    Chart {
        name,
        title,
        panels: vec![Panel {
            title: String::new(),
            x: Axis::linear("seconds since start", tmin..tmax),
            y: Axis::linear("certificate versions/s", 0.0..ymax),
            series: vec![
                Series { name: "per second".into(), style: style(0, 0), width: 2, segments: false, points: pts },
                Series {
                    name: level.1.clone(),
                    style: style(1, 1),
                    width: 2,
                    segments: false,
                    points: vec![(tmin, level.0), (tmax, level.0)],
                },
            ],
        }],
        columns: 1,
        row_height: 440,
    }
}

/// Draws a chart of data that may come from elsewhere (e.g. `trend`).
pub fn draw_chart(root: DrawingArea<DynBackend<'_>, Shift>, c: &Chart) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let body = root.titled(&c.title, ("sans-serif", 20)).map_err(e)?;
    let cols = c.columns.max(1);
    let rows = c.panels.len().div_ceil(cols).max(1);
    let areas = body.split_evenly((rows, cols));
    for (area, p) in areas.iter().zip(&c.panels) {
        draw_panel(area, p)?;
    }
    root.present().map_err(e)
}

fn draw_panel(area: &DrawingArea<DynBackend<'_>, Shift>, p: &Panel) -> Res {
    let (w, h) = area.dim_in_pixel();
    // The legend goes beside the plot when there is room, else below it: never over the data.
    let (plot, legend) = if w >= 600 {
        area.split_horizontally(w.saturating_sub(LEGEND_W))
    } else {
        let rows = p.series.len() as u32;
        area.split_vertically(h.saturating_sub(rows * LEGEND_ROW as u32 + 8))
    };
    let mut chart = ChartBuilder::on(&plot);
    // The right margin leaves room for the last x tick label ("99.99 %").
    chart.margin(8).margin_right(28).x_label_area_size(44).y_label_area_size(64);
    if !p.title.is_empty() {
        chart.caption(&p.title, ("sans-serif", 14));
    }
    let mut chart = chart.build_cartesian_2d(p.x.range.clone(), p.y.range.clone()).map_err(e)?;
    let fmt = |v: &f64| tick(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x.desc.as_str())
        .y_desc(p.y.desc.as_str())
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(244, 244, 244));
    if !p.x.ticks.is_empty() {
        mesh.x_labels(0).disable_x_mesh();
    }
    mesh.draw().map_err(e)?;
    if !p.x.ticks.is_empty() {
        custom_ticks(&plot, &mut chart, &p.x.ticks, &p.y.range)?;
    }
    for s in &p.series {
        draw_series(&mut chart, s)?;
    }
    draw_legend(&legend, &p.series, w >= 600)
}

type Ctx<'a, 'b> = ChartContext<'a, DynBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Vertical grid lines and labels at given x values (50 %, 90 %, 99 %, … of a "nines" axis).
fn custom_ticks(
    plot: &DrawingArea<DynBackend<'_>, Shift>,
    chart: &mut Ctx<'_, '_>,
    ticks: &[(f64, String)],
    y: &Range<f64>,
) -> Res {
    let base = plot.get_base_pixel();
    let label = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (x, text) in ticks {
        chart
            .draw_series(LineSeries::new([(*x, y.start), (*x, y.end)], RGBColor(215, 215, 215).stroke_width(1)))
            .map_err(e)?;
        let (px, py) = chart.backend_coord(&(*x, y.start));
        plot.draw(&Text::new(text.clone(), (px - base.0, py - base.1 + 6), label.clone())).map_err(e)?;
    }
    Ok(())
}

fn draw_series(chart: &mut Ctx<'_, '_>, s: &Series) -> Res {
    if s.segments {
        for pair in s.points.chunks(2) {
            draw_series(chart, &Series { segments: false, points: pair.to_vec(), ..s.clone() })?;
        }
        return Ok(());
    }
    let shape = s.style.shape(s.width);
    let pts = s.points.iter().copied();
    match s.style.dash {
        Dash::Solid => chart.draw_series(LineSeries::new(pts, shape)).map(|_| ()),
        Dash::Dashed => chart.draw_series(DashedLineSeries::new(pts, 9, 5, shape)).map(|_| ()),
        Dash::Dotted => chart.draw_series(DashedLineSeries::new(pts, 2, 4, shape)).map(|_| ()),
    }
    .map_err(e)
}

fn draw_legend(area: &DrawingArea<DynBackend<'_>, Shift>, series: &[Series], right: bool) -> Res {
    let (x0, y0) = if right { (6, 34) } else { (70, 4) };
    for (k, s) in series.iter().enumerate() {
        let y = y0 + LEGEND_ROW * k as i32 + LEGEND_ROW / 2;
        let pts = vec![(x0, y), (x0 + 30, y)];
        let shape = s.style.shape(s.width.max(2));
        match s.style.dash {
            Dash::Solid => area.draw(&PathElement::new(pts, shape)),
            Dash::Dashed => area.draw(&DashedPathElement::new(pts, 7, 4, shape)),
            Dash::Dotted => area.draw(&DashedPathElement::new(pts, 2, 3, shape)),
        }
        .map_err(e)?;
        let text = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(s.name.clone(), (x0 + 38, y), text)).map_err(e)?;
    }
    Ok(())
}

fn draw_both(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    files: &mut Vec<String>,
    draw: impl Fn(DrawingArea<DynBackend<'_>, Shift>) -> Res,
) -> Result<(), HarnessError> {
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = DynBackend::Bitmap(BitMapBackend::new(&png, size)).into_drawing_area();
        draw(root).map_err(|m| HarnessError::Config(format!("chart {name}.png: {m}")))?;
    }
    {
        let root = DynBackend::Svg(SVGBackend::new(&svg, size)).into_drawing_area();
        draw(root).map_err(|m| HarnessError::Config(format!("chart {name}.svg: {m}")))?;
    }
    files.push(format!("{name}.png"));
    files.push(format!("{name}.svg"));
    Ok(())
}

/// Draws `c` as PNG and SVG into `dir` (for charts built outside [`charts_of`], e.g. `trend`).
pub fn write_chart(dir: &Path, c: &Chart) -> Result<Vec<String>, HarnessError> {
    ensure_font()?;
    let mut files = Vec::new();
    draw_both(dir, &c.name, c.size(), &mut files, |root| draw_chart(root, c))?;
    Ok(files)
}

/// One backend type for both outputs, so each chart is written once.
pub enum DynBackend<'a> {
    /// PNG.
    Bitmap(BitMapBackend<'a>),
    /// SVG.
    Svg(SVGBackend<'a>),
}

/// Errors of either backend, as text.
#[derive(Debug)]
pub struct DynError(String);

impl std::fmt::Display for DynError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DynError {}

fn conv<E: std::error::Error + Send + Sync>(
    r: Result<(), DrawingErrorKind<E>>,
) -> Result<(), DrawingErrorKind<DynError>> {
    r.map_err(|err| match err {
        DrawingErrorKind::DrawingError(x) => DrawingErrorKind::DrawingError(DynError(x.to_string())),
        DrawingErrorKind::FontError(f) => DrawingErrorKind::FontError(f),
    })
}

impl DrawingBackend for DynBackend<'_> {
    type ErrorType = DynError;

    fn get_size(&self) -> (u32, u32) {
        match self {
            DynBackend::Bitmap(b) => b.get_size(),
            DynBackend::Svg(b) => b.get_size(),
        }
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.ensure_prepared()),
            DynBackend::Svg(b) => conv(b.ensure_prepared()),
        }
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.present()),
            DynBackend::Svg(b) => conv(b.present()),
        }
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.draw_pixel(point, color)),
            DynBackend::Svg(b) => conv(b.draw_pixel(point, color)),
        }
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.draw_line(from, to, style)),
            DynBackend::Svg(b) => conv(b.draw_line(from, to, style)),
        }
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        ul: BackendCoord,
        br: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.draw_rect(ul, br, style, fill)),
            DynBackend::Svg(b) => conv(b.draw_rect(ul, br, style, fill)),
        }
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.draw_path(path, style)),
            DynBackend::Svg(b) => conv(b.draw_path(path, style)),
        }
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => conv(b.draw_text(text, style, pos)),
            DynBackend::Svg(b) => conv(b.draw_text(text, style, pos)),
        }
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<DynError>> {
        match self {
            DynBackend::Bitmap(b) => b
                .estimate_text_size(text, style)
                .map_err(|_| DrawingErrorKind::DrawingError(DynError("text size".into()))),
            DynBackend::Svg(b) => b
                .estimate_text_size(text, style)
                .map_err(|_| DrawingErrorKind::DrawingError(DynError("text size".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The committed baseline: real runs of every scenario, one of them with nine labels.
    fn baseline() -> (Summary, Spectra) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/baselines/2026-11-23-4a8fa7b");
        let s = crate::report::summary::read(&dir).unwrap();
        let spectra = crate::report::spectra(&dir, &s).unwrap();
        (s, spectra)
    }

    #[test]
    fn no_chart_reuses_a_colour_and_dash_pair_within_a_panel() {
        let (s, spectra) = baseline();
        let charts = charts_of(&s, &spectra);
        assert!(charts.len() >= 2 * s.scenarios.len());
        for c in &charts {
            for p in &c.panels {
                let styles: HashSet<SeriesStyle> = p.series.iter().map(|x| x.style).collect();
                assert_eq!(styles.len(), p.series.len(), "{} panel {:?} reuses a style", c.name, p.title);
            }
        }
    }

    #[test]
    fn a_scenario_with_more_than_six_labels_gets_small_multiples_and_a_split_timeline() {
        let (s, spectra) = baseline();
        let sc = s.scenarios.iter().find(|x| x.labels.len() > MAX_LABELS_PER_PANEL).unwrap();
        let charts = charts_of(&s, &spectra);
        let spectrum = charts.iter().find(|c| c.name == format!("{}-spectrum", sc.name)).unwrap();
        assert_eq!(spectrum.panels.len(), sc.labels.len());
        let timeline = charts.iter().find(|c| c.name == format!("{}-timeline", sc.name)).unwrap();
        assert!(timeline.panels.len() >= 4);
        for c in &charts {
            for p in &c.panels {
                // Latency panels carry two lines per label.
                assert!(p.series.len() <= 2 * MAX_LABELS_PER_PANEL, "{}: {} lines", c.name, p.series.len());
            }
        }
    }

    #[test]
    fn the_palette_gives_distinct_styles_for_a_panel_of_six_labels_in_three_variants() {
        let all: HashSet<SeriesStyle> = (0..8).flat_map(|i| (0..3).map(move |v| style(i, v))).collect();
        assert_eq!(all.len(), 24);
    }

    #[test]
    fn ticks_carry_no_meaningless_decimals() {
        assert_eq!(tick(16.0), "16");
        assert_eq!(tick(180.0), "180");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(1234.56), "1235");
    }

    #[test]
    fn labels_split_into_balanced_groups_of_at_most_six() {
        assert_eq!(label_groups(3), vec![0..3]);
        assert_eq!(label_groups(6), vec![0..6]);
        assert_eq!(label_groups(9), vec![0..5, 5..9]);
        assert_eq!(label_groups(13), vec![0..5, 5..10, 10..13]);
    }

    #[test]
    fn the_spectrum_axis_is_labelled_in_nines() {
        let labels: Vec<&str> = NINES_TICKS.iter().map(|t| t.1).collect();
        assert_eq!(labels, ["50 %", "90 %", "99 %", "99.9 %", "99.99 %"]);
        for (x, t) in NINES_TICKS {
            let q: f64 = t.trim_end_matches(" %").parse::<f64>().unwrap() / 100.0;
            assert!((-(1.0 - q).log10() - x).abs() < 1e-4, "{t}");
        }
    }
}

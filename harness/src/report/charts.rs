//! Charts (PNG and SVG) drawn with plotters, with a bundled font so no system fonts are needed
//! (DejaVu Sans, `harness/assets/`, under its own free licence).
//!
//! Per scenario: the latency percentile spectrum per label (corrected and service time,
//! x axis in "nines"), p50/p99 and throughput over time, and server RSS/CPU over time when
//! samples exist.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use super::Spectra;
use super::summary::{ScenarioSummary, Summary};
use crate::HarnessError;
use crate::metrics::fleet::FleetPoint;
use crate::metrics::hlog::service_tag;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub(crate) fn ensure_font() -> Result<(), HarnessError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(HarnessError::Config("bundled chart font could not be loaded".into())) }
}

pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub(crate) type Res = Result<(), String>;

pub(crate) fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("{err:?}")
}

/// Draws every chart of a run; returns the file names written.
pub fn render_all(dir: &Path, s: &Summary, spectra: &Spectra) -> Result<Vec<String>, HarnessError> {
    ensure_font()?;
    let mut files = Vec::new();
    for sc in &s.scenarios {
        let name = format!("{}-spectrum", sc.name);
        draw_both(dir, &name, (1000, 600), &mut files, |root| spectrum(root, sc, spectra))?;
        let name = format!("{}-timeline", sc.name);
        draw_both(dir, &name, (1000, 700), &mut files, |root| timeline(root, sc))?;
        if sc.resources.samples.iter().any(|x| x.rss_bytes.is_some() || x.db_connections.is_some()) {
            let name = format!("{}-resources", sc.name);
            draw_both(dir, &name, (1000, 600), &mut files, |root| resources(root, sc))?;
        }
        if let Some(f) = sc.fleet_renewal.as_ref().filter(|f| !f.series.is_empty()) {
            let name = format!("{}-fleet-renewal", sc.name);
            let title = format!("{} — fleet renewals per second", sc.name);
            let level =
                (f.peak_window_avg_per_s, format!("peak {}-s average {:.0}/s", f.window_s, f.peak_window_avg_per_s));
            draw_both(dir, &name, (1000, 500), &mut files, |root| rate_series(root, &title, &f.series, &level))?;
        }
        if let Some(t) = sc.scheduler_throughput.as_ref().filter(|t| !t.series.is_empty()) {
            let name = format!("{}-scheduler-throughput", sc.name);
            let title = format!("{} — jobs completed per second after one bulk renew", sc.name);
            let level =
                (t.certs_per_s, format!("end to end {:.0}/s ({} in {:.1} s)", t.certs_per_s, t.completed, t.seconds));
            draw_both(dir, &name, (1000, 500), &mut files, |root| rate_series(root, &title, &t.series, &level))?;
        }
    }
    Ok(files)
}

pub(crate) fn draw_both(
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

/// Percentile spectrum: x = "nines" (−log10(1−q)), y = latency in ms.
fn spectrum(root: DrawingArea<DynBackend<'_>, Shift>, sc: &ScenarioSummary, spectra: &Spectra) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let mut series = Vec::new();
    for l in &sc.labels {
        for (tag, kind) in [(l.label.clone(), "corrected"), (service_tag(&l.label), "service")] {
            if let Some(h) = spectra.get(&(sc.name.clone(), tag)) {
                if h.is_empty() {
                    continue;
                }
                let pts: Vec<(f64, f64)> = (0..=400)
                    .map(|k| {
                        let x = k as f64 / 100.0;
                        let q = 1.0 - 10f64.powf(-x);
                        (x, h.value_at_quantile(q) as f64 / 1000.0)
                    })
                    .collect();
                series.push((format!("{} ({kind})", l.label), kind == "service", pts));
            }
        }
    }
    let ymax = series.iter().flat_map(|(_, _, p)| p.iter().map(|x| x.1)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} — latency by percentile", sc.name), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..4f64, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.2}%", (1.0 - 10f64.powf(-x)) * 100.0))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (i, (name, dashed, pts)) in series.into_iter().enumerate() {
        let color = PALETTE[(i / 2) % PALETTE.len()];
        let style = if dashed { color.mix(0.5).stroke_width(1) } else { color.stroke_width(2) };
        chart
            .draw_series(LineSeries::new(pts, style))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// p50/p99 per second (top) and completed requests per second (bottom), per label.
fn timeline(root: DrawingArea<DynBackend<'_>, Shift>, sc: &ScenarioSummary) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(420);
    let tmax = sc.labels.iter().map(|l| l.intervals.len()).max().unwrap_or(1).max(1) as f64;
    let ymax = sc.labels.iter().flat_map(|l| l.intervals.iter().map(|i| i.p99)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{} — p50 / p99 over time", sc.name), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tmax, 0f64..ymax)
        .map_err(e)?;
    chart.configure_mesh().y_desc("latency (ms)").label_style(("sans-serif", 13)).draw().map_err(e)?;
    for (i, l) in sc.labels.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let p99: Vec<(f64, f64)> = l.intervals.iter().filter(|x| x.count > 0).map(|x| (x.t_s as f64, x.p99)).collect();
        let p50: Vec<(f64, f64)> = l.intervals.iter().filter(|x| x.count > 0).map(|x| (x.t_s as f64, x.p50)).collect();
        chart
            .draw_series(LineSeries::new(p99, color.stroke_width(2)))
            .map_err(e)?
            .label(format!("{} p99", l.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(p50, color.mix(0.5)))
            .map_err(e)?
            .label(format!("{} p50", l.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.5)));
    }
    mark_faults(&mut chart, sc, ymax)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    let rmax = sc.labels.iter().flat_map(|l| l.intervals.iter().map(|i| i.count as f64)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tmax, 0f64..rmax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("requests/s")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (i, l) in sc.labels.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = l.intervals.iter().map(|x| (x.t_s as f64, x.count as f64)).collect();
        chart.draw_series(LineSeries::new(pts, color.stroke_width(2))).map_err(e)?;
    }
    root.present().map_err(e)
}

/// Each fault as a shaded band from its start to its end (at least a tenth of a second wide),
/// captioned with its kind, and a dashed line at its recovery second.
fn mark_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    sc: &ScenarioSummary,
    ymax: f64,
) -> Res {
    let Some(f) = &sc.faults else { return Ok(()) };
    let red = RGBColor(200, 30, 30);
    for x in &f.faults {
        let end = x.ended_s.max(x.started_s + 0.1);
        chart
            .draw_series(std::iter::once(Rectangle::new([(x.started_s, 0.0), (end, ymax)], red.mix(0.15).filled())))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                x.kind.clone(),
                (x.started_s, ymax * 0.97),
                ("sans-serif", 13).into_font().color(&red),
            )))
            .map_err(e)?;
        if let Some(r) = x.recovery_s {
            let t = x.ended_s + r;
            chart
                .draw_series(DashedLineSeries::new(vec![(t, 0.0), (t, ymax)], 4, 4, red.stroke_width(1)))
                .map_err(e)?;
        }
    }
    Ok(())
}

/// Server RSS (MiB) and CPU (% of one core) over time, and DB connections.
fn resources(root: DrawingArea<DynBackend<'_>, Shift>, sc: &ScenarioSummary) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(300);
    let samples = &sc.resources.samples;
    let tmax = samples.iter().map(|s| s.t_s).fold(1.0f64, f64::max);
    let tmin = samples.iter().map(|s| s.t_s).fold(0.0f64, f64::min);
    let rss: Vec<(f64, f64)> =
        samples.iter().filter_map(|s| s.rss_bytes.map(|r| (s.t_s, r as f64 / 1048576.0))).collect();
    let cpu: Vec<(f64, f64)> = samples.iter().filter_map(|s| s.cpu_percent.map(|c| (s.t_s, c))).collect();
    let conns: Vec<(f64, f64)> = samples.iter().filter_map(|s| s.db_connections.map(|c| (s.t_s, c as f64))).collect();
    let rmax = rss.iter().map(|x| x.1).fold(1.0f64, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{} — server resources", sc.name), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(tmin..tmax, 0f64..rmax)
        .map_err(e)?;
    chart.configure_mesh().y_desc("RSS (MiB)").label_style(("sans-serif", 13)).draw().map_err(e)?;
    chart.draw_series(LineSeries::new(rss, PALETTE[0].stroke_width(2))).map_err(e)?;
    let cmax = cpu.iter().chain(conns.iter()).map(|x| x.1).fold(10.0f64, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(tmin..tmax, 0f64..cmax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("CPU % / DB connections")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(cpu, PALETTE[1].stroke_width(2)))
        .map_err(e)?
        .label("server CPU %")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[1].stroke_width(2)));
    chart
        .draw_series(LineSeries::new(conns, PALETTE[2].stroke_width(2)))
        .map_err(e)?
        .label("DB connections")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[2].stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// A per-second fleet series (renewals or job completions) with a horizontal line at the judged
/// rate `level` (value, legend text).
fn rate_series(
    root: DrawingArea<DynBackend<'_>, Shift>,
    title: &str,
    series: &[FleetPoint],
    level: &(f64, String),
) -> Res {
    root.fill(&WHITE).map_err(e)?;
    let pts: Vec<(f64, f64)> = series.iter().map(|p| (p.t_s, p.per_s)).collect();
    let tmax = pts.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let tmin = pts.iter().map(|p| p.0).fold(0.0f64, f64::min);
    let ymax = pts.iter().map(|p| p.1).fold(level.0, f64::max).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(tmin..tmax, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("certificate versions/s")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(pts, PALETTE[0].stroke_width(2)))
        .map_err(e)?
        .label("per second")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[0].stroke_width(2)));
    chart
        .draw_series(LineSeries::new(vec![(tmin, level.0), (tmax, level.0)], PALETTE[1].stroke_width(1)))
        .map_err(e)?
        .label(level.1.as_str())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[1].stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

//! `report.html`: one self-contained page per run directory (and per `trend`).
//!
//! Data flow: the command builds a [`Page`] — plain data: a verdict, facts, and nested
//! [`Section`]s of [`Table`]s and inline-SVG [`Figure`]s — and [`render`] fills the template
//! `harness/templates/page.html.j2` (compiled into the binary with `include_str!`, rendered by
//! minijinja with HTML auto-escaping). The page loads nothing: its CSS and the small
//! table-sorting script are inline, the charts are the SVGs [`super::charts`] wrote, and a
//! Content-Security-Policy of `default-src 'none'` makes any stray reference fail closed.
//!
//! [`run_page`] turns a run's `summary.json` into the page. Commands with more to say (the
//! capacity search of `ceiling`, the A/B verdict of `ab`, fault injection) hand their own
//! [`Section`]s to [`super::render_with`]; they appear after the baseline table and in the
//! contents list without a template change.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use super::summary::{ScenarioSummary, Summary};
use crate::HarnessError;
use crate::gate::{CompareVerdict, ThresholdVerdict};
use crate::scenario::ThresholdSet;

/// A whole page.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Page {
    /// `<title>` and heading.
    pub title: String,
    /// One line under the heading.
    pub subtitle: String,
    /// The outcome, shown first.
    pub verdict: Option<PageVerdict>,
    /// Key facts under the heading (commit, host, …).
    pub facts: Vec<Fact>,
    /// The sections, in order; the contents list is built from them.
    pub sections: Vec<Section>,
    /// `certctl-loadtest <version>`.
    pub tool: String,
    /// What the page was built from (e.g. `summary.json and the .hlog files`).
    pub source: String,
}

/// The outcome box.
#[derive(Debug, Clone, Serialize)]
pub struct PageVerdict {
    /// `pass`, `fail` or `error` (CSS class).
    pub level: String,
    /// e.g. `PASS (exit 0)`.
    pub heading: String,
    /// Why.
    pub text: String,
}

/// A key and its value.
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// `Fact` from anything printable.
pub fn fact(key: &str, value: impl std::fmt::Display) -> Fact {
    Fact { key: key.into(), value: value.to_string() }
}

/// One section (subsections nest).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Section {
    /// Anchor (unique in the page).
    pub id: String,
    /// Heading.
    pub title: String,
    /// CSS class (`scenario` starts a new page when printed).
    pub class: String,
    /// Text paragraphs.
    pub paragraphs: Vec<String>,
    /// Key facts.
    pub facts: Vec<Fact>,
    /// Tables.
    pub tables: Vec<Table>,
    /// Charts.
    pub figures: Vec<Figure>,
    /// Nested sections.
    pub subsections: Vec<Section>,
}

impl Section {
    /// An empty section with an anchor and a heading.
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Self {
        Section { id: anchor(&id.into()), title: title.into(), ..Section::default() }
    }
}

/// A sortable table.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Table {
    /// Small heading above it (empty: none).
    pub caption: String,
    /// Column headers.
    pub columns: Vec<Column>,
    /// Rows of cells.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with `columns`; a name ending in `#` is a right-aligned numeric column (the
    /// `#` is not shown).
    pub fn new(caption: &str, columns: &[&str]) -> Self {
        Table {
            caption: caption.into(),
            columns: columns
                .iter()
                .map(|c| match c.strip_suffix('#') {
                    Some(n) => Column { name: n.into(), numeric: true },
                    None => Column { name: (*c).into(), numeric: false },
                })
                .collect(),
            rows: Vec::new(),
        }
    }
}

/// A column header.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Header text.
    pub name: String,
    /// Right-aligned number.
    pub numeric: bool,
}

/// One cell: its text, and the number it sorts by.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Shown.
    pub text: String,
    /// Sort key for numeric cells.
    pub sort: Option<f64>,
    /// CSS class: `num`, `pass`, `fail`, `warn`, `code` or empty.
    pub class: String,
}

impl Cell {
    /// Text.
    pub fn text(t: impl std::fmt::Display) -> Self {
        Cell { text: t.to_string(), sort: None, class: String::new() }
    }
    /// A number shown as `t`, sorted by `v`.
    pub fn num(t: impl std::fmt::Display, v: f64) -> Self {
        Cell { text: t.to_string(), sort: v.is_finite().then_some(v), class: "num".into() }
    }
    /// Monospace text (SQL, commits).
    pub fn code(t: impl std::fmt::Display) -> Self {
        Cell { text: t.to_string(), sort: None, class: "code".into() }
    }
    /// A verdict word coloured by its meaning.
    pub fn verdict(t: &str) -> Self {
        let class = match t {
            "pass" | "held" | "improved" => "pass",
            "fail" | "regressed" | "VIOLATED" | "shift up" => "fail",
            "not measured" | "shift down" => "warn",
            _ => "",
        };
        Cell { text: t.into(), sort: None, class: class.into() }
    }
}

/// An inline chart.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Caption under it.
    pub caption: String,
    /// `<svg …>…</svg>` markup, inserted unescaped.
    pub svg: String,
}

/// A page anchor from any text: lower-case letters, digits, `-` and `_`.
pub fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect()
}

/// Reads `dir/name` as inline SVG markup (the XML prolog, if any, dropped). `None` when the
/// file is missing.
pub fn inline_svg(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    let start = text.find("<svg")?;
    Some(text[start..].to_string())
}

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| if name.ends_with(".html.j2") { AutoEscape::Html } else { AutoEscape::None });
    env.add_template("page.html.j2", include_str!("../../templates/page.html.j2"))?;
    env.add_template("report.css", include_str!("../../templates/report.css"))?;
    env.add_template("sort.js", include_str!("../../templates/sort.js"))?;
    Ok(env)
}

/// Renders `page` to HTML.
pub fn render(page: &Page) -> Result<String, HarnessError> {
    let fail = |e: minijinja::Error| HarnessError::Config(format!("report.html template: {e:#}"));
    let env = environment().map_err(fail)?;
    let tmpl = env.get_template("page.html.j2").map_err(fail)?;
    tmpl.render(minijinja::context! { page => minijinja::Value::from(minijinja::value::Serde(page)) }).map_err(fail)
}

/// Writes `page` to `dir/report.html`.
pub fn write(dir: &Path, page: &Page) -> Result<(), HarnessError> {
    let html = render(page)?;
    let p = dir.join("report.html");
    std::fs::write(&p, html).map_err(|e| HarnessError::io(&p, e))
}

fn ms(v: f64) -> Cell {
    Cell::num(format!("{v:.2} ms"), v)
}

fn pct(frac: f64) -> Cell {
    Cell::num(format!("{:.3} %", frac * 100.0), frac)
}

fn count(n: u64) -> Cell {
    Cell::num(n, n as f64)
}

fn threshold_word(v: ThresholdVerdict) -> &'static str {
    match v {
        ThresholdVerdict::Pass => "pass",
        ThresholdVerdict::Fail => "fail",
        ThresholdVerdict::NotMeasured => "not measured",
    }
}

/// The verdict of a label under one threshold set (`–` when none applies).
fn label_verdict(sc: &ScenarioSummary, label: &str, set: ThresholdSet) -> &'static str {
    let ts: Vec<_> = sc.thresholds.iter().filter(|t| t.set == set && t.label == label).collect();
    if ts.is_empty() {
        "–"
    } else if ts.iter().any(|t| t.verdict == ThresholdVerdict::Fail) {
        "fail"
    } else if ts.iter().all(|t| t.verdict == ThresholdVerdict::Pass) {
        "pass"
    } else {
        "not measured"
    }
}

/// The page of a run directory: `s` is its summary, `charts` the chart files written (SVGs are
/// read from `dir` and inlined), `extra` the sections of the command that made it.
pub fn run_page(dir: &Path, s: &Summary, charts: &[String], extra: &[Section]) -> Page {
    let level = match s.verdict.exit_code {
        0 => "pass",
        1 => "fail",
        _ => "error",
    };
    let mut sections = vec![baseline_section(s)];
    sections.extend(extra.iter().cloned());
    if let Some(c) = &s.comparison {
        sections.push(comparison_section(c));
    }
    if let Some(r) = &s.replicas {
        let mut sec = Section::new("replicas", format!("Multi-replica invariants ({} servers)", r.count));
        let mut t = Table::new("", &["invariant", "held", "detail"]);
        for i in &r.invariants {
            t.rows.push(vec![
                Cell::code(&i.name),
                Cell::verdict(if i.held { "held" } else { "VIOLATED" }),
                Cell::text(&i.detail),
            ]);
        }
        sec.tables.push(t);
        sections.push(sec);
    }
    let scenarios: Vec<Section> = s.scenarios.iter().map(|sc| scenario_section(dir, sc, charts)).collect();
    if !scenarios.is_empty() {
        let mut all = Section::new("scenarios", "Scenarios");
        all.subsections = scenarios;
        sections.push(all);
    }
    sections.push(environment_section(s));
    Page {
        title: format!("certctl scale baseline — {} profile", s.profile),
        subtitle: format!("{} scenario(s), {} → {}", s.scenarios.len(), s.started_at, s.finished_at),
        verdict: Some(PageVerdict {
            level: level.into(),
            heading: format!("{} (exit {})", level.to_uppercase(), s.verdict.exit_code),
            text: s.verdict.reason.clone(),
        }),
        facts: header_facts(s),
        sections,
        tool: s.tool.clone(),
        source: "summary.json and the scenarios' .hlog files".into(),
    }
}

fn header_facts(s: &Summary) -> Vec<Fact> {
    let pg =
        s.postgres.as_ref().map(|p| format!("{}, {}", p.version, p.durability)).unwrap_or_else(|| "unknown".into());
    let mut f = vec![
        fact("commit", &s.commit),
        fact("run", format!("{} → {}", s.started_at, s.finished_at)),
        fact(
            "host",
            format!(
                "{} ({} cores, {:.1} GiB), kernel {}",
                s.host.cpu_model,
                s.host.cores,
                s.host.memory_bytes as f64 / 1073741824.0,
                s.host.kernel
            ),
        ),
        fact("PostgreSQL", pg),
        fact("mode", format!("{} ({})", s.mode, s.target)),
    ];
    if let Some(seed) = &s.seeding {
        f.push(fact(
            "fixtures",
            format!(
                "{} certificates, {} agents seeded in {:.2} s ({})",
                seed.certs,
                seed.agents,
                seed.seconds,
                seed.files.join(", ")
            ),
        ));
    }
    if let Some(sh) = &s.shard {
        f.push(fact("shard", format!("{sh} of the load: combine the shards' run directories with `merge`")));
    }
    if let Some(runs) = &s.merged_from {
        let list: Vec<String> = runs
            .iter()
            .map(|r| {
                let sh = r.shard.map(|x| format!("shard {x}, ")).unwrap_or_default();
                format!("{} ({sh}{}, {})", r.dir, r.commit, r.host)
            })
            .collect();
        f.push(fact("merged from", format!("{} runs (histograms added): {}", runs.len(), list.join("; "))));
    }
    f
}

fn baseline_section(s: &Summary) -> Section {
    let mut sec = Section::new("baseline", "Baseline table");
    sec.paragraphs.push(
        "Latencies are measured from each request's intended start (open model: coordinated-omission-free); \
         service time (from the actual start) is in each scenario's detail. Generator, server and database share the host."
            .into(),
    );
    let mut t = Table::new(
        "",
        &["scenario", "label", "p50#", "p95#", "p99#", "error rate#", "seed thresholds", "project targets"],
    );
    for sc in &s.scenarios {
        for l in &sc.labels {
            t.rows.push(vec![
                Cell::text(&sc.name),
                Cell::text(&l.label),
                ms(l.corrected.p50),
                ms(l.corrected.p95),
                ms(l.corrected.p99),
                pct(l.error_rate),
                Cell::verdict(label_verdict(sc, &l.label, ThresholdSet::Seed)),
                Cell::verdict(label_verdict(sc, &l.label, ThresholdSet::Target)),
            ]);
        }
    }
    sec.tables.push(t);
    sec
}

fn comparison_section(c: &crate::gate::Comparison) -> Section {
    let mut sec = Section::new("gate", "Regression gate");
    let n = &c.noise;
    sec.paragraphs.push(format!(
        "Baseline {} (commit {}); noise floors: p50 {:.0} % / {} ms, p95 {:.0} % / {} ms, p99 {:.0} % / {} ms, \
         error rate {}, throughput {:.0} %; alpha {}. Baseline and run are whole-run values; the verdict judges \
         the per-window samples, whose medians and their change are shown.",
        c.baseline,
        c.baseline_commit,
        n.rel * 100.0,
        n.abs_ms,
        n.rel_p95 * 100.0,
        n.abs_ms_p95,
        n.rel_p99 * 100.0,
        n.abs_ms_p99,
        n.abs_error_rate,
        n.rel_throughput * 100.0,
        n.alpha
    ));
    let mut t = Table::new(
        "",
        &[
            "scenario",
            "label",
            "metric",
            "baseline#",
            "run#",
            "baseline window median#",
            "run window median#",
            "change#",
            "p#",
            "verdict",
        ],
    );
    for r in &c.results {
        let v = |x: f64| match r.metric.as_str() {
            "error_rate" => pct(x),
            m if m.ends_with("_per_s") => Cell::num(format!("{x:.1}/s"), x),
            _ => ms(x),
        };
        t.rows.push(vec![
            Cell::text(&r.scenario),
            Cell::text(&r.label),
            Cell::text(&r.metric),
            v(r.baseline),
            v(r.run),
            v(r.baseline_median),
            v(r.run_median),
            r.change_pct.map(|x| Cell::num(format!("{x:+.1} %"), x)).unwrap_or_else(|| Cell::text("–")),
            r.p_value.map(|p| Cell::num(format!("{p:.3}"), p)).unwrap_or_else(|| Cell::text("–")),
            Cell::verdict(match r.verdict {
                CompareVerdict::Regressed => "regressed",
                CompareVerdict::Improved => "improved",
                _ => r.verdict.as_str(),
            }),
        ]);
    }
    sec.tables.push(t);
    sec
}

fn scenario_section(dir: &Path, sc: &ScenarioSummary, charts: &[String]) -> Section {
    let mut sec = Section::new(format!("scenario-{}", sc.name), sc.name.clone());
    sec.class = "scenario".into();
    sec.paragraphs.push(sc.description.split_whitespace().collect::<Vec<_>>().join(" "));
    sec.facts = vec![
        fact("model", &sc.model),
        fact("duration", format!("{:.0} s planned, {:.1} s measured", sc.duration_s, sc.elapsed_s)),
        fact("users", sc.users),
    ];
    if sc.cancelled {
        sec.facts.push(fact("cancelled", "yes: Ctrl-C cut the scenario short"));
    }
    sec.tables.extend(detail_tables(sc));
    let mut th = Table::new("Thresholds", &["set", "threshold", "observed#", "verdict"]);
    for t in &sc.thresholds {
        th.rows.push(vec![
            Cell::text(t.set.as_str()),
            Cell::text(t.describe()),
            t.observed.map(|v| Cell::num(format!("{v:.3}"), v)).unwrap_or_else(|| Cell::text("–")),
            Cell::verdict(threshold_word(t.verdict)),
        ]);
    }
    if !th.rows.is_empty() {
        sec.tables.push(th);
    }
    sec.tables.push(resources_table(sc));
    if let Some(f) = &sc.fleet_renewal {
        let mut t = Table::new(
            "Fleet renewal (judged: peak moving average over the window)",
            &["status", "versions#", "seconds#", "average /s#", "peak 1-s /s#", "window s#", "peak window avg /s#"],
        );
        t.rows.push(vec![
            Cell::text(&f.status),
            count(f.versions),
            Cell::num(format!("{:.1}", f.seconds), f.seconds),
            Cell::num(format!("{:.1}", f.avg_per_s), f.avg_per_s),
            Cell::num(format!("{:.1}", f.peak_per_s), f.peak_per_s),
            Cell::num(f.window_s, f64::from(f.window_s)),
            Cell::num(format!("{:.1}", f.peak_window_avg_per_s), f.peak_window_avg_per_s),
        ]);
        sec.tables.push(t);
    }
    if let Some(st) = &sc.scheduler_throughput {
        let mut t = Table::new(
            "Scheduler throughput (one bulk renew; seconds to the last job completion, database clock)",
            &["status", "selected#", "enqueued#", "completed#", "failed#", "call ms#", "seconds#", "certificates/s#"],
        );
        t.rows.push(vec![
            Cell::text(&st.status),
            count(st.selected),
            count(st.enqueued),
            count(st.completed),
            count(st.failed),
            Cell::num(format!("{:.0}", st.call_ms), st.call_ms),
            Cell::num(format!("{:.1}", st.seconds), st.seconds),
            Cell::num(format!("{:.1}", st.certs_per_s), st.certs_per_s),
        ]);
        sec.tables.push(t);
    }
    let mut q = Table::new(
        &format!("pg_stat_statements — top statements by time ({})", sc.pg_stat_statements.status),
        &["calls#", "total ms#", "mean ms#", "query"],
    );
    for st in &sc.pg_stat_statements.top {
        q.rows.push(vec![
            Cell::num(st.calls, st.calls as f64),
            Cell::num(format!("{:.1}", st.total_ms), st.total_ms),
            Cell::num(format!("{:.3}", st.mean_ms), st.mean_ms),
            Cell::code(&st.query),
        ]);
    }
    if q.rows.is_empty() {
        sec.paragraphs.push(format!("pg_stat_statements: {}.", sc.pg_stat_statements.status));
    } else {
        sec.tables.push(q);
    }
    let prefix = format!("{}-", sc.name);
    for c in charts.iter().filter(|c| c.ends_with(".svg") && c.starts_with(&prefix)) {
        // `api-…` must not pick up charts of a scenario named `api-x`: the rest is a chart kind.
        let kind = c.trim_start_matches(&prefix).trim_end_matches(".svg");
        if !CHART_KINDS.contains(&kind) {
            continue;
        }
        if let Some(svg) = inline_svg(dir, c) {
            sec.figures.push(Figure { caption: c.clone(), svg });
        }
    }
    sec
}

/// The chart kinds a scenario can have (file `<scenario>-<kind>.svg`).
const CHART_KINDS: [&str; 5] = ["spectrum", "timeline", "resources", "fleet-renewal", "scheduler-throughput"];

fn detail_tables(sc: &ScenarioSummary) -> [Table; 2] {
    let mut lat = Table::new(
        "Latency (corrected: from the intended start; service: from the actual start)",
        &[
            "label",
            "requests#",
            "rate /s#",
            "target /s#",
            "p50#",
            "p90#",
            "p99#",
            "p99.9#",
            "max#",
            "service p50#",
            "service p99#",
        ],
    );
    let mut err = Table::new(
        "Errors by class and schedule",
        &[
            "label",
            "error rate#",
            "transport#",
            "4xx#",
            "5xx#",
            "unexpected#",
            "body check#",
            "429 rateLimited#",
            "late starts#",
            "dropped starts#",
        ],
    );
    for l in &sc.labels {
        let e = &l.errors;
        lat.rows.push(vec![
            Cell::text(&l.label),
            count(l.count),
            Cell::num(format!("{:.1}", l.achieved_rate), l.achieved_rate),
            l.target_rate.map(|r| Cell::num(format!("{r:.1}"), r)).unwrap_or_else(|| Cell::text("closed")),
            ms(l.corrected.p50),
            ms(l.corrected.p90),
            ms(l.corrected.p99),
            ms(l.corrected.p999),
            ms(l.corrected.max),
            ms(l.service.p50),
            ms(l.service.p99),
        ]);
        err.rows.push(vec![
            Cell::text(&l.label),
            pct(l.error_rate),
            count(e.transport),
            count(e.status_4xx),
            count(e.status_5xx),
            count(e.unexpected_status),
            count(e.body_check),
            count(l.rate_limited_429),
            count(l.late_starts),
            count(l.dropped_starts),
        ]);
    }
    [lat, err]
}

fn resources_table(sc: &ScenarioSummary) -> Table {
    let p = &sc.resources.peaks;
    let mut t = Table::new("Resources (peaks) and database-derived rates", &["measure", "value#"]);
    if let Some(b) = p.rss_bytes {
        t.rows
            .push(vec![Cell::text("server RSS peak"), Cell::num(format!("{:.0} MiB", b as f64 / 1048576.0), b as f64)]);
    }
    if let Some(c) = p.cpu_percent {
        t.rows.push(vec![Cell::text("server CPU peak (% of a core)"), Cell::num(format!("{c:.0} %"), c)]);
    }
    if let Some(c) = p.db_connections {
        t.rows.push(vec![Cell::text("DB connections peak"), Cell::num(c, c as f64)]);
    }
    for (k, v) in &sc.db_metrics {
        t.rows.push(vec![
            Cell::text(k),
            v.map(|v| Cell::num(format!("{v:.1}/s"), v)).unwrap_or_else(|| Cell::text("not measured")),
        ]);
    }
    if t.rows.is_empty() {
        t.rows.push(vec![Cell::text("samples"), Cell::text("none (external mode without a server pid or database)")]);
    }
    t
}

fn environment_section(s: &Summary) -> Section {
    let mut sec = Section::new("environment", "Environment");
    let mut t = Table::new("Server settings (CERTCTL_*, secrets excluded)", &["setting", "value"]);
    let settings: BTreeMap<&String, &String> = s.server_settings.iter().collect();
    for (k, v) in settings {
        t.rows.push(vec![Cell::code(k), Cell::code(v)]);
    }
    if t.rows.is_empty() {
        sec.paragraphs.push("External mode: the server's settings are not known to the harness.".into());
    } else {
        sec.tables.push(t);
    }
    sec.facts = vec![
        fact("tool", &s.tool),
        fact("schema version", s.schema_version),
        fact("profile", &s.profile),
        fact("target", &s.target),
    ];
    sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_svg_is_inlined() {
        let mut sec = Section::new("a b", "<b>title</b>");
        let mut t = Table::new("", &["name", "n#"]);
        t.rows.push(vec![Cell::text("<script>x</script>"), Cell::num("1 ms", 1.0)]);
        sec.tables.push(t);
        sec.figures.push(Figure { caption: "c".into(), svg: "<svg viewBox=\"0 0 1 1\"></svg>".into() });
        let page = Page { title: "T & U".into(), sections: vec![sec], ..Page::default() };
        let html = render(&page).unwrap();
        assert!(html.contains("T &amp; U"));
        assert!(html.contains("&lt;script&gt;x&lt;"));
        assert!(!html.contains("<script>x"));
        assert!(html.contains("<svg viewBox=\"0 0 1 1\"></svg>"));
        assert!(html.contains("id=\"a-b\""));
        assert!(html.contains("href=\"#a-b\""));
        assert!(html.contains("data-sort=\"1.0\"") || html.contains("data-sort=\"1\""));
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn the_page_refers_to_nothing_outside_itself() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/baselines/2026-11-23-4a8fa7b");
        let s = crate::report::summary::read(&dir).unwrap();
        let charts: Vec<String> = s.scenarios.iter().map(|sc| format!("{}-spectrum.svg", sc.name)).collect();
        let html = render(&run_page(&dir, &s, &charts, &[])).unwrap();
        for bad in ["src=", "href=\"http", "url(", "@import", "<link", "@font-face"] {
            assert!(!html.contains(bad), "report.html contains {bad}");
        }
        for sc in &s.scenarios {
            assert!(html.contains(&format!("id=\"scenario-{}\"", anchor(&sc.name))));
        }
        assert!(html.matches("<svg").count() >= s.scenarios.len());
    }
}

//! `report.html` of an `ab` run directory: the same content as its `report.md` (outcome, the two
//! sides, the table per label × metric, the method, the per-round ratio chart inline, every round)
//! as a [`Page`] of the shared self-contained template.

use std::path::Path;

use super::compare::Verdict;
use super::output::{Ab, fmt_value, method_sentence};
use crate::report::html::{Cell, Figure, Page, PageVerdict, Section, Table, fact, inline_svg};

/// The page of an `ab` run (`chart`: the ratio chart's file stem, empty when none).
pub fn page(dir: &Path, ab: &Ab, chart: &str) -> Page {
    let level = match ab.outcome.exit_code {
        0 => "pass",
        _ => "fail",
    };
    let pg =
        ab.postgres.as_ref().map(|p| format!("{}, {}", p.version, p.durability)).unwrap_or_else(|| "unknown".into());
    let mut facts = vec![
        fact("harness commit", &ab.commit),
        fact("run", format!("{} → {}", ab.started_at, ab.finished_at)),
        fact("host", format!("{} ({} cores)", ab.host.cpu_model, ab.host.cores)),
        fact("PostgreSQL", pg),
        fact("mode", &ab.mode),
        fact("rounds", format!("{} in {:.0} s (seed {})", ab.rounds.len(), ab.duration_s, ab.seed)),
    ];
    for (k, side) in &ab.sides {
        let env: Vec<String> = side.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env = if env.is_empty() { String::new() } else { format!(" with {}", env.join(" ")) };
        facts.push(fact(
            &format!("side {}", k.to_uppercase()),
            format!("{}{env}", side.bin.as_deref().unwrap_or(&side.url)),
        ));
    }
    Page {
        title: format!("certctl A/B — {}", ab.scenario),
        subtitle: format!("{} profile, paired randomized rounds", ab.profile),
        verdict: Some(PageVerdict {
            level: level.into(),
            heading: format!("exit {}", ab.outcome.exit_code),
            text: ab.outcome.text.clone(),
        }),
        facts,
        sections: vec![comparison(dir, ab, chart)],
        tool: ab.tool.clone(),
        source: "ab.json and the trials' .hlog files".into(),
    }
}

fn comparison(dir: &Path, ab: &Ab, chart: &str) -> Section {
    let mut sec = Section::new("ab", "A/B comparison");
    let mut t = Table::new(
        "",
        &["label", "metric", "A#", "B#", "median B/A#", "interval", "p#", "min effect#", "rounds#", "verdict"],
    );
    for c in &ab.comparisons {
        let v = |x: Option<f64>| match x {
            Some(x) => Cell::num(fmt_value(c.metric, x), x),
            None => Cell::text("—"),
        };
        let verdict = match c.verdict {
            Verdict::Regressed => Cell::verdict("regressed"),
            Verdict::Improved => Cell::verdict("improved"),
            other => Cell::text(other.as_str()),
        };
        t.rows.push(vec![
            Cell::text(&c.label),
            Cell::text(c.metric.as_str()),
            v(c.a_median),
            v(c.b_median),
            c.median_ratio.map(|r| Cell::num(format!("×{r:.3}"), r)).unwrap_or_else(|| Cell::text("—")),
            Cell::text(c.interval.map(|[l, h]| format!("[{l:.3}, {h:.3}]")).unwrap_or_else(|| "—".into())),
            Cell::num(format!("{:.3}", c.p_value), c.p_value),
            Cell::num(format!("±{:.0} %", c.min_effect * 100.0), c.min_effect),
            Cell::num(c.n, c.n as f64),
            verdict,
        ]);
    }
    sec.tables.push(t);
    sec.paragraphs.push(method_sentence(ab));
    if let Some(svg) = (!chart.is_empty()).then(|| inline_svg(dir, &format!("{chart}.svg"))).flatten() {
        sec.figures
            .push(Figure { caption: "B/A per round, the median and its interval, ± the minimum effect".into(), svg });
    }
    sec
}

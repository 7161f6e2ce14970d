//! `report.html` of a ceiling run directory: the same content as its `report.md` (answer,
//! CPU split, what the figures mean, criteria, the knee chart inline, every trial) as a
//! [`Page`] of the shared self-contained template.

use std::path::Path;

use super::output::{Ceiling, cpu_sentence, criteria_sentence, pct};
use crate::report::html::{Cell, Figure, Page, PageVerdict, Section, Table, fact, inline_svg};

/// The page of a ceiling run (`chart`: the knee chart's file stem, empty when none).
pub fn page(dir: &Path, c: &Ceiling, chart: &str) -> Page {
    let level = match (c.answer.rate, c.answer.harness_bound_at) {
        (Some(_), _) => "pass",
        (None, Some(_)) => "error",
        (None, None) => "fail",
    };
    let pg =
        c.postgres.as_ref().map(|p| format!("{}, {}", p.version, p.durability)).unwrap_or_else(|| "unknown".into());
    Page {
        title: format!("certctl capacity — {}", c.scenario),
        subtitle: format!("ceiling search, {} trials in {:.0} s", c.trials.len(), c.duration_s),
        verdict: Some(PageVerdict {
            level: level.into(),
            heading: format!("{:?}", c.answer.end),
            text: c.verdict.clone(),
        }),
        facts: vec![
            fact("commit", &c.commit),
            fact("run", format!("{} → {}", c.started_at, c.finished_at)),
            fact("host", format!("{} ({} cores)", c.host.cpu_model, c.host.cores)),
            fact("PostgreSQL", pg),
            fact("mode", &c.mode),
        ],
        sections: vec![capacity(dir, c, chart), trials(c)],
        tool: c.tool.clone(),
        source: "ceiling.json and the trials' .hlog files".into(),
    }
}

fn capacity(dir: &Path, c: &Ceiling, chart: &str) -> Section {
    let a = &c.answer;
    let mut sec = Section::new("capacity", "Capacity");
    let mut t = Table::new("", &["scenario", "answer", "rate#", "bracket", "failing criterion above it"]);
    t.rows.push(vec![
        Cell::text(format!("{}{}", c.scenario, c.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())),
        Cell::text(format!("{:?}", a.end)),
        a.rate.map(|r| Cell::num(format!("{r:.1}/s"), r)).unwrap_or_else(|| Cell::text("—")),
        Cell::text(a.bracket.map(|[l, h]| format!("[{l:.1}, {h:.1}]/s")).unwrap_or_else(|| "—".into())),
        Cell::text(if a.failing_criteria.is_empty() { "—".into() } else { a.failing_criteria.join("; ") }),
    ]);
    sec.tables.push(t);
    sec.paragraphs.extend(cpu_sentence(c));
    sec.paragraphs.extend(c.meaning.iter().map(|m| format!("What it means: {m}")));
    sec.paragraphs.push(criteria_sentence(c));
    if let Some(svg) = (!chart.is_empty()).then(|| inline_svg(dir, &format!("{chart}.svg"))).flatten() {
        sec.figures.push(Figure {
            caption: "Offered vs achieved rate and the worst label's p50/p99, one mark per trial".into(),
            svg,
        });
    }
    sec
}

fn trials(c: &Ceiling) -> Section {
    let mut sec = Section::new("trials", "Trials");
    let mut t = Table::new(
        "",
        &[
            "#",
            "phase",
            "offered/s#",
            "achieved/s#",
            "worst p50 ms#",
            "worst p99 ms#",
            "server#",
            "generator#",
            "postgres#",
            "verdict",
        ],
    );
    for r in &c.trials {
        let (p50, p99) = r.worst_p50_p99();
        let cpu = |v: Option<f64>| Cell::num(pct(v), v.unwrap_or(f64::NAN));
        let v = r.verdict_text();
        let verdict = if r.passed { Cell::verdict("pass") } else { Cell { class: "fail".into(), ..Cell::text(v) } };
        t.rows.push(vec![
            Cell::num(r.n, r.n as f64),
            Cell::text(format!("{:?}", r.phase)),
            Cell::num(format!("{:.1}", r.offered_rate), r.offered_rate),
            Cell::num(format!("{:.1}", r.achieved_rate), r.achieved_rate),
            Cell::num(format!("{p50:.2}"), p50),
            Cell::num(format!("{p99:.2}"), p99),
            cpu(r.cpu.server),
            cpu(r.cpu.generator),
            cpu(r.cpu.postgres),
            verdict,
        ]);
    }
    sec.tables.push(t);
    sec
}

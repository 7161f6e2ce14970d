//! `report.md`: the baseline table, ready to paste into `docs/operator/scale-baseline.md`.

use crate::gate::{ThresholdVerdict, comparison_table};
use crate::report::summary::{ScenarioSummary, Summary};
use crate::scenario::ThresholdSet;

fn verdict_of(sc: &ScenarioSummary, label: &str, set: ThresholdSet) -> &'static str {
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

fn mb(b: Option<u64>) -> String {
    b.map(|v| format!("{:.0} MiB", v as f64 / 1048576.0)).unwrap_or_else(|| "–".into())
}

/// Renders the report. `charts` lists chart files (relative) to link.
pub fn render(s: &Summary, charts: &[String]) -> String {
    let mut o = String::new();
    o.push_str(&format!("# certctl scale baseline — {} profile\n\n", s.profile));
    let pg =
        s.postgres.as_ref().map(|p| format!("{}, {}", p.version, p.durability)).unwrap_or_else(|| "unknown".into());
    o.push_str(&format!(
        "- commit `{}`, run {} → {}\n- host: {} ({} cores, {:.1} GiB), kernel {}\n- PostgreSQL: {}\n- mode: {} ({})\n",
        s.commit,
        s.started_at,
        s.finished_at,
        s.host.cpu_model,
        s.host.cores,
        s.host.memory_bytes as f64 / 1073741824.0,
        s.host.kernel,
        pg,
        s.mode,
        s.target
    ));
    if !s.server_settings.is_empty() {
        let set: Vec<String> = s.server_settings.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        o.push_str(&format!("- server settings: {}\n", set.join(", ")));
    }
    if let Some(seed) = &s.seeding {
        o.push_str(&format!(
            "- fixtures: {} certificates, {} agents seeded in {:.2} s ({})\n",
            seed.certs,
            seed.agents,
            seed.seconds,
            seed.files.join(", ")
        ));
    }
    if let Some(sh) = &s.shard {
        o.push_str(&format!("- shard {sh} of the load: combine the shards' run directories with `merge`\n"));
    }
    if let Some(runs) = &s.merged_from {
        // A merged run's percentiles come from the added histograms: say where they came from.
        let list: Vec<String> = runs
            .iter()
            .map(|r| {
                let sh = r.shard.map(|x| format!("shard {x}, ")).unwrap_or_default();
                format!("`{}` ({sh}{}, {})", r.dir, r.commit, r.host)
            })
            .collect();
        o.push_str(&format!("- merged from {} runs (histograms added): {}\n", runs.len(), list.join("; ")));
    }
    if let Some(st) = &s.start {
        o.push_str(&format!(
            "- synchronized start (--start-at): {}{}\n",
            st.at,
            clock_note(st, s.merged_from.as_deref())
        ));
    }
    if let Some(r) = &s.replicas {
        if let Some(b) = &r.balancer {
            let served: Vec<String> =
                r.served_requests.iter().map(|n| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into())).collect();
            let served = if served.is_empty() {
                String::new()
            } else {
                format!("; requests served per replica: {}", served.join(", "))
            };
            o.push_str(&format!("- balancing: {b}{served}\n"));
        }
        o.push_str(&format!("- {} server replicas on one database; multi-replica invariants:\n", r.count));
        for i in &r.invariants {
            o.push_str(&format!("  - {} `{}`: {}\n", if i.held { "held" } else { "**VIOLATED**" }, i.name, i.detail));
        }
    }
    o.push_str(&format!("- verdict: **{}** (exit {})\n\n", s.verdict.reason, s.verdict.exit_code));
    o.push_str("Latencies are measured from each request's intended start (open model: coordinated-omission-free); \
                service time (from the actual start) is in the detail table. Generator, server and database share the host.\n\n");
    o.push_str("| scenario | label | p50 | p95 | p99 | error rate | seed thresholds | project targets |\n");
    o.push_str("|---|---|---|---|---|---|---|---|\n");
    for sc in &s.scenarios {
        for l in &sc.labels {
            o.push_str(&format!(
                "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3} % | {} | {} |\n",
                sc.name,
                l.label,
                l.corrected.p50,
                l.corrected.p95,
                l.corrected.p99,
                l.error_rate * 100.0,
                verdict_of(sc, &l.label, ThresholdSet::Seed),
                verdict_of(sc, &l.label, ThresholdSet::Target)
            ));
        }
    }
    o.push_str("\n## Detail\n\n| scenario | label | requests | rate (target) | service p50 / p99 | p99.9 / max | errors (transport/4xx/5xx/unexpected/body) | 429 rateLimited | late / dropped starts |\n|---|---|---|---|---|---|---|---|---|\n");
    for sc in &s.scenarios {
        for l in &sc.labels {
            let e = &l.errors;
            o.push_str(&format!(
                "| {} | {} | {} | {:.1}/s ({}) | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {}/{}/{}/{}/{} | {} | {} / {} |\n",
                sc.name,
                l.label,
                l.count,
                l.achieved_rate,
                l.target_rate.map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "closed".into()),
                l.service.p50,
                l.service.p99,
                l.corrected.p999,
                l.corrected.max,
                e.transport,
                e.status_4xx,
                e.status_5xx,
                e.unexpected_status,
                e.body_check,
                l.rate_limited_429,
                l.late_starts,
                l.dropped_starts
            ));
        }
    }
    o.push_str("\n## Thresholds\n\n| scenario | set | threshold | observed | verdict |\n|---|---|---|---|---|\n");
    for sc in &s.scenarios {
        for t in &sc.thresholds {
            o.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                sc.name,
                t.set.as_str(),
                t.describe(),
                t.observed.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into()),
                match t.verdict {
                    ThresholdVerdict::Pass => "pass",
                    ThresholdVerdict::Fail => "fail",
                    ThresholdVerdict::NotMeasured => "not measured",
                }
            ));
        }
    }
    o.push_str("\n## Resources\n\n| scenario | server RSS peak | server CPU peak | DB connections peak | pg_stat_statements |\n|---|---|---|---|---|\n");
    for sc in &s.scenarios {
        let p = &sc.resources.peaks;
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            sc.name,
            mb(p.rss_bytes),
            p.cpu_percent.map(|c| format!("{c:.0} %")).unwrap_or_else(|| "–".into()),
            p.db_connections.map(|c| c.to_string()).unwrap_or_else(|| "–".into()),
            sc.pg_stat_statements.status
        ));
    }
    // Database-derived rates go below the table: a line inside it would end the table there.
    let metrics: Vec<String> = s
        .scenarios
        .iter()
        .flat_map(|sc| {
            sc.db_metrics.iter().map(move |(k, v)| {
                let v = v.map(|v| format!("{v:.1}/s")).unwrap_or_else(|| "not measured".into());
                format!("- {}: {k} = {v}\n", sc.name)
            })
        })
        .collect();
    if !metrics.is_empty() {
        o.push_str("\nDatabase-derived rates over each scenario's run:\n\n");
        o.push_str(&metrics.concat());
    }
    fleet_renewal_section(&mut o, s);
    scheduler_throughput_section(&mut o, s);
    faults_section(&mut o, s);
    for sc in &s.scenarios {
        if sc.pg_stat_statements.top.is_empty() {
            continue;
        }
        o.push_str(&format!(
            "\n### {} — top statements\n\n| calls | total ms | mean ms | query |\n|---|---|---|---|\n",
            sc.name
        ));
        for q in &sc.pg_stat_statements.top {
            o.push_str(&format!(
                "| {} | {:.1} | {:.3} | `{}` |\n",
                q.calls,
                q.total_ms,
                q.mean_ms,
                q.query.replace('|', "\\|").replace('`', "'")
            ));
        }
    }
    if let Some(c) = &s.comparison {
        o.push_str("\n## Regression gate\n\n");
        o.push_str(&comparison_table(c));
    }
    if !charts.is_empty() {
        o.push_str("\n## Charts\n\n");
        for c in charts.iter().filter(|c| c.ends_with(".png")) {
            o.push_str(&format!("![{c}]({c})\n"));
        }
    }
    o
}

/// The Faults table (one row per fault), then each faulted scenario's accounting and invariants.
fn faults_section(o: &mut String, s: &Summary) {
    let faulted: Vec<_> = s.scenarios.iter().filter_map(|sc| sc.faults.as_ref().map(|f| (sc, f))).collect();
    if faulted.is_empty() {
        return;
    }
    o.push_str(
        "\n## Faults\n\nTimes in seconds from the load's start. Error window: the first and last failing request \
         attributed to the fault (their ends). Recovery: from the fault's end to the first second whose p99 and error \
         rate are back within the seed thresholds (or the scenario's `[recovery]` bounds).\n\n\
         | scenario | fault | at | duration | error window | errors (transport/4xx/5xx/unexpected/body) | recovery | reclaim | invariants |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (sc, f) in &faulted {
        let held = f.invariants.iter().filter(|i| i.held).count();
        for x in &f.faults {
            let e = &x.errors;
            o.push_str(&format!(
                "| {} | {} | {:.1} (ran {:.2}–{:.2}) | {:.1} s | {} | {} ({}/{}/{}/{}/{}) | {} | {} | {held}/{} held |\n",
                sc.name,
                x.failed.as_ref().map(|w| format!("{} — **not carried out**: {w}", x.kind)).unwrap_or(x.kind.clone()),
                x.at_s,
                x.started_s,
                x.ended_s,
                x.duration_s,
                x.error_window.map(|[a, b]| format!("{a:.2}–{b:.2}")).unwrap_or_else(|| "no errors".into()),
                e.total(),
                e.transport,
                e.status_4xx,
                e.status_5xx,
                e.unexpected_status,
                e.body_check,
                x.recovery_s.map(|r| format!("{r:.1} s")).unwrap_or_else(|| "–".into()),
                x.reclaim
                    .as_ref()
                    .map(|r| match r.reclaim_s {
                        Some(t) => format!("{} jobs in {t:.2} s (bound {:.1} s)", r.jobs, r.bound_s),
                        None => format!("{} jobs **not reclaimed** (bound {:.1} s)", r.jobs, r.bound_s),
                    })
                    .unwrap_or_else(|| "–".into()),
                f.invariants.len()
            ));
        }
    }
    for (sc, f) in &faulted {
        let a = &f.accounting;
        o.push_str(&format!(
            "\n{}: {} requests planned, {} started, {} answered, {} counted as errors, {} never started (dropped), \
             **{} unaccounted**; {} errors outside every fault's window.\n",
            sc.name, a.planned, a.issued, a.answered, a.failed, a.dropped, a.unaccounted, f.errors_outside
        ));
        for x in &f.faults {
            o.push_str(&format!("- {} at {:.1} s: {}; recovery: {}\n", x.kind, x.at_s, x.detail, x.recovery));
        }
        for i in &f.invariants {
            o.push_str(&format!("- {} `{}`: {}\n", if i.held { "held" } else { "**VIOLATED**" }, i.name, i.detail));
        }
    }
}

/// The fleet renewal table: one row per scenario that measured it.
fn fleet_renewal_section(o: &mut String, s: &Summary) {
    let rows: Vec<_> = s.scenarios.iter().filter_map(|sc| sc.fleet_renewal.as_ref().map(|f| (sc, f))).collect();
    if rows.is_empty() {
        return;
    }
    o.push_str(
        "\n## Fleet renewal\n\nNew certificate versions of the fleet, sampled once a second from the database; \
         the judged `fleet_renewal_rate` is the peak moving average over the window.\n\n\
         | scenario | versions | seconds | average /s | peak 1-s /s | window | peak window avg /s (judged) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (sc, f) in rows {
        if f.status == "measured" {
            o.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} s | {:.1} |\n",
                sc.name, f.versions, f.seconds, f.avg_per_s, f.peak_per_s, f.window_s, f.peak_window_avg_per_s
            ));
        } else {
            o.push_str(&format!("| {} | {} | – | – | – | {} s | – |\n", sc.name, f.status, f.window_s));
        }
    }
}

/// The scheduler-throughput table: one row per `[scheduler_throughput]` scenario.
fn scheduler_throughput_section(o: &mut String, s: &Summary) {
    let rows: Vec<_> = s.scenarios.iter().filter_map(|sc| sc.scheduler_throughput.as_ref().map(|t| (sc, t))).collect();
    if rows.is_empty() {
        return;
    }
    o.push_str(
        "\n## Scheduler throughput\n\nOne bulk renew of the fleet; seconds from just before the call to the last \
         job completion (database clock); certificates/s = completed / seconds.\n\n\
         | scenario | status | selected | enqueued | completed | failed | call ms | seconds | certificates/s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (sc, t) in rows {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.1} |\n",
            sc.name, t.status, t.selected, t.enqueued, t.completed, t.failed, t.call_ms, t.seconds, t.certs_per_s
        ));
    }
}

/// The clock offsets behind a synchronized start: this generator's, or each merged input's.
fn clock_note(st: &crate::clock::SyncStart, merged: Option<&[crate::report::summary::MergedRun]>) -> String {
    let offsets: Vec<String> = match merged {
        Some(runs) => runs.iter().filter_map(|r| r.clock_offset_ms.map(|o| format!("{o:+.1}"))).collect(),
        None => st.clock_offset_ms.map(|o| format!("{o:+.1}")).into_iter().collect(),
    };
    if offsets.is_empty() {
        " (clock offset not measured: no database connection)".into()
    } else {
        format!(" (generator clock offset to the database: {} ms)", offsets.join(", "))
    }
}

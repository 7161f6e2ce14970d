//! `junit.xml`: one test case per threshold, so CI test reporting shows each verdict.
//!
//! One `<testsuite>` per scenario and threshold set. A broken *seed* threshold is a
//! `<failure>` (it fails the run). A missed *project target* is reported as `<skipped>` with
//! the observed value: it is information, not a gate, and must not turn a CI reporter red on
//! its own. A threshold that could not be measured is `<skipped>` too.

use crate::gate::ThresholdVerdict;
use crate::report::summary::Summary;
use crate::scenario::ThresholdSet;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Renders the JUnit XML of a run.
pub fn render(s: &Summary) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = s.scenarios.iter().map(|sc| sc.thresholds.len()).sum();
    let failures: usize = s
        .scenarios
        .iter()
        .flat_map(|sc| &sc.thresholds)
        .filter(|t| t.set == ThresholdSet::Seed && t.verdict == ThresholdVerdict::Fail)
        .count();
    out.push_str(&format!(
        "<testsuites name=\"certctl-loadtest\" tests=\"{total}\" failures=\"{failures}\" errors=\"0\">\n"
    ));
    for sc in &s.scenarios {
        for set in [ThresholdSet::Seed, ThresholdSet::Target] {
            let ts: Vec<_> = sc.thresholds.iter().filter(|t| t.set == set).collect();
            if ts.is_empty() {
                continue;
            }
            let fails = ts.iter().filter(|t| set == ThresholdSet::Seed && t.verdict == ThresholdVerdict::Fail).count();
            let skipped = ts.len() - fails - ts.iter().filter(|t| t.verdict == ThresholdVerdict::Pass).count();
            out.push_str(&format!(
                "  <testsuite name=\"{}.{}\" tests=\"{}\" failures=\"{fails}\" errors=\"0\" skipped=\"{skipped}\">\n",
                esc(&sc.name),
                set.as_str(),
                ts.len()
            ));
            for t in ts {
                let observed = t.observed.map(|v| format!("{v:.3}")).unwrap_or_else(|| "not measured".into());
                out.push_str(&format!(
                    "    <testcase classname=\"{}.{}\" name=\"{}\">",
                    esc(&sc.name),
                    set.as_str(),
                    esc(&t.describe())
                ));
                match (t.verdict, set) {
                    (ThresholdVerdict::Pass, _) => {}
                    (ThresholdVerdict::Fail, ThresholdSet::Seed) => out.push_str(&format!(
                        "<failure message=\"observed {observed}\" type=\"threshold\">{} observed {observed}</failure>",
                        esc(&t.describe())
                    )),
                    (ThresholdVerdict::Fail, ThresholdSet::Target) => out.push_str(&format!(
                        "<skipped message=\"project target missed (reported, not gating): observed {observed}\"/>"
                    )),
                    (ThresholdVerdict::NotMeasured, _) => out.push_str("<skipped message=\"not measured\"/>"),
                }
                out.push_str("</testcase>\n");
            }
            out.push_str("  </testsuite>\n");
        }
    }
    out.push_str("</testsuites>\n");
    out
}

//! HdrHistogram interval logs (`<scenario>.hlog`).
//!
//! One file per scenario, V2 *compressed* histograms (`V2DeflateSerializer`), one line per
//! label and 1-s interval. Tags: `<label>` holds corrected latencies, `<label>.service` the
//! service times. Values are µs; the `MaxValueDivisor` of 1000 makes each line's max column read
//! in milliseconds, as Java's `HistogramLogProcessor` output does. The header carries the lines
//! that tool expects: `#[StartTime: …]`, `#[BaseTime: …]` and the column legend; interval
//! timestamps are seconds since BaseTime.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use super::LabelStats;

/// Problems writing or reading a log.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// File trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A histogram could not be encoded or decoded.
    #[error("hlog {0}")]
    Codec(String),
}

/// Tag of the service-time series of `label`.
pub fn service_tag(label: &str) -> String {
    format!("{label}.service")
}

/// Writes the interval log of one scenario.
pub fn write(path: &Path, started: SystemTime, comment: &str, labels: &[LabelStats]) -> Result<(), HlogError> {
    let epoch = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let mut buf: Vec<u8> = Vec::new();
    // Header lines written by hand: the crate's builder has no legend line, and Java's
    // HistogramLogReader expects `#[StartTime: …]` and the legend before the first interval.
    buf.extend_from_slice(format!("#{comment}\n").as_bytes());
    buf.extend_from_slice(b"#[Histogram log format version 1.3]\n");
    let date = chrono::DateTime::<chrono::Utc>::from(started).to_rfc3339();
    buf.extend_from_slice(format!("#[StartTime: {epoch:.3} (seconds since epoch), {date}]\n").as_bytes());
    buf.extend_from_slice(format!("#[BaseTime: {epoch:.3} (seconds since epoch)]\n").as_bytes());
    buf.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut writer =
            IntervalLogWriterBuilder::new().with_max_value_divisor(1000.0).begin_log_with(&mut buf, &mut serializer)?;
        let n = labels.iter().map(|l| l.intervals.len()).max().unwrap_or(0);
        // Interleave by second so the file reads in time order.
        for second in 0..n {
            for l in labels {
                let Some(iv) = l.intervals.get(second) else { continue };
                if iv.corrected.is_empty() {
                    continue;
                }
                let start = Duration::from_secs(second as u64);
                let svc = service_tag(&l.label);
                for (h, tag) in [(&iv.corrected, l.label.as_str()), (&iv.service, svc.as_str())] {
                    writer
                        .write_histogram(h, start, Duration::from_secs(1), Tag::new(tag))
                        .map_err(|e| HlogError::Codec(format!("writing {tag}: {e}")))?;
                }
            }
        }
    }
    // The builder adds `#[MaxValueDivisor: 1000.000]` (a comment to Java readers).
    std::fs::write(path, buf)?;
    Ok(())
}

/// One interval read back.
#[derive(Debug, Clone)]
pub struct LoggedInterval {
    /// Seconds since BaseTime.
    pub start_s: f64,
    /// The histogram (µs).
    pub histogram: Histogram<u64>,
}

/// Reads a log back: tag → intervals in file order.
pub fn read(path: &Path) -> Result<BTreeMap<String, Vec<LoggedInterval>>, HlogError> {
    let bytes = std::fs::read(path)?;
    let mut out: BTreeMap<String, Vec<LoggedInterval>> = BTreeMap::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| HlogError::Codec(format!("{}: {e:?}", path.display())))?;
        let LogEntry::Interval(iv) = entry else { continue };
        let tag = iv.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
        let raw = base64_decode(iv.encoded_histogram())?;
        let h: Histogram<u64> =
            de.deserialize(&mut raw.as_slice()).map_err(|e| HlogError::Codec(format!("decoding {tag}: {e:?}")))?;
        out.entry(tag).or_default().push(LoggedInterval { start_s: iv.start_timestamp().as_secs_f64(), histogram: h });
    }
    Ok(out)
}

fn base64_decode(s: &str) -> Result<Vec<u8>, HlogError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| HlogError::Codec(format!("base64: {e}")))
}

/// Sum of every interval of a tag (histograms are added, never averaged).
pub fn merged(intervals: &[LoggedInterval]) -> Histogram<u64> {
    let mut h = super::new_histogram();
    for iv in intervals {
        // Adding histograms with identical bounds cannot overflow their range.
        let _ = h.add(&iv.histogram);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Outcome, Recorder};
    use std::time::Instant;

    #[test]
    fn a_log_reads_back_to_the_same_histograms() {
        let t0 = Instant::now();
        let r = Recorder::new(&["a".into(), "b".into()]);
        r.set_t0(t0);
        for i in 0..500u64 {
            let due = t0 + Duration::from_millis(i * 7);
            r.record((i % 2) as usize, due, due, due + Duration::from_micros(100 + i * 13), Outcome::Ok(200), false);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.hlog");
        let stats = r.snapshot();
        write(&p, SystemTime::now(), "test", &stats).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("#[StartTime: ") && text.contains("#[BaseTime: ") && text.contains("\"StartTimestamp\""));
        let back = read(&p).unwrap();
        for s in &stats {
            let h = merged(&back[&s.label]);
            assert_eq!(h.len(), s.corrected.len());
            assert_eq!(h.value_at_quantile(0.99), s.corrected.value_at_quantile(0.99));
            assert_eq!(merged(&back[&service_tag(&s.label)]).max(), s.service.max());
        }
    }
}

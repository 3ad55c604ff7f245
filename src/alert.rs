//! Alerts: what a detector observed, what it was compared with, and which
//! requests are the evidence — stored in the lake and printed for people.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::time::format_ms;

/// Evidence request ids kept per alert; the count says how many there were.
pub const MAX_EVIDENCE: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable: the same input gives the same id (detector, credential,
    /// finding and window), so reruns and the streaming mode agree.
    pub alert_id: String,
    /// The detector family: `out_of_scope`, `retry_storm`, …
    pub detector: &'static str,
    /// What exactly was found, e.g. `expired_credential`.
    pub finding: String,
    pub severity: Severity,
    pub score: f64,
    pub credential_id: String,
    pub principal: Option<String>,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// One sentence: what was observed and what it was compared with.
    pub explanation: String,
    pub observed: String,
    pub baseline: String,
    /// Request ids of the evidence, at most [`MAX_EVIDENCE`].
    pub evidence: Vec<String>,
    pub evidence_count: u64,
    pub mitre_attack: Option<&'static str>,
    pub owasp_nhi: Option<&'static str>,
}

/// The stable id of an alert: a hash of what identifies it.
pub fn alert_id(detector: &str, credential_id: &str, finding: &str, window_start_ms: i64) -> String {
    let key = format!("{detector}\u{1f}{credential_id}\u{1f}{finding}\u{1f}{window_start_ms}");
    format!("ct-{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("alert_id", DataType::Utf8, false),
        Field::new("detector", DataType::Utf8, false),
        Field::new("finding", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("credential_id", DataType::Utf8, false),
        Field::new("principal", DataType::Utf8, true),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("explanation", DataType::Utf8, false),
        Field::new("observed", DataType::Utf8, false),
        Field::new("baseline", DataType::Utf8, false),
        Field::new("evidence", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        Field::new("evidence_count", DataType::UInt64, false),
        Field::new("mitre_attack", DataType::Utf8, true),
        Field::new("owasp_nhi", DataType::Utf8, true),
    ]))
}

pub fn to_batch(alerts: &[Alert]) -> RecordBatch {
    let strs =
        |f: &dyn Fn(&Alert) -> Option<&str>| -> ArrayRef { Arc::new(alerts.iter().map(f).collect::<StringArray>()) };
    let ts = |f: fn(&Alert) -> i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(alerts.iter().map(f).collect::<Vec<_>>()).with_timezone("UTC"))
    };
    let mut evidence = ListBuilder::new(StringBuilder::new());
    for a in alerts {
        for id in &a.evidence {
            evidence.values().append_value(id);
        }
        evidence.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strs(&|a| Some(&a.alert_id)),
        strs(&|a| Some(a.detector)),
        strs(&|a| Some(&a.finding)),
        strs(&|a| Some(a.severity.as_str())),
        Arc::new(alerts.iter().map(|a| a.score).collect::<Float64Array>()),
        strs(&|a| Some(&a.credential_id)),
        strs(&|a| a.principal.as_deref()),
        ts(|a| a.window_start_ms),
        ts(|a| a.window_end_ms),
        strs(&|a| Some(&a.explanation)),
        strs(&|a| Some(&a.observed)),
        strs(&|a| Some(&a.baseline)),
        Arc::new(evidence.finish()),
        Arc::new(alerts.iter().map(|a| a.evidence_count).collect::<UInt64Array>()),
        strs(&|a| a.mitre_attack),
        strs(&|a| a.owasp_nhi),
    ];
    RecordBatch::try_new(schema(), columns).expect("alert columns match their schema")
}

/// Alerts as a table for a terminal, most severe first.
pub fn format_table(alerts: &[Alert]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_width(160);
    t.set_header(["severity", "detector", "credential", "window (UTC)", "what happened", "evidence"]);
    for a in alerts {
        let window = format!("{} → {}", short_time(a.window_start_ms), short_time(a.window_end_ms));
        let evidence = match a.evidence.first() {
            Some(first) if a.evidence_count > 1 => format!("{first} +{} more", a.evidence_count - 1),
            Some(first) => first.clone(),
            None => "-".into(),
        };
        t.add_row([a.severity.as_str(), a.detector, &a.credential_id, &window, &a.explanation, &evidence]);
    }
    t.to_string()
}

fn short_time(ms: i64) -> String {
    let s = format_ms(ms);
    // 2026-11-06T12:18:17.285Z → 2026-11-06 12:18
    s.get(..16).map_or(s.clone(), |p| p.replace('T', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            alert_id: alert_id("out_of_scope", "k", "expired_credential", 5),
            detector: "out_of_scope",
            finding: "expired_credential".into(),
            severity: Severity::High,
            score: 1.0,
            credential_id: "k".into(),
            principal: None,
            window_start_ms: 5,
            window_end_ms: 9,
            explanation: "used after expiry".into(),
            observed: "3 requests".into(),
            baseline: "expired".into(),
            evidence: vec!["r1".into(), "r2".into()],
            evidence_count: 3,
            mitre_attack: Some("T1078.004"),
            owasp_nhi: None,
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(alert_id("a", "k", "f", 1), alert_id("a", "k", "f", 1));
        assert_ne!(alert_id("a", "k", "f", 1), alert_id("a", "k", "f", 2));
        assert_ne!(alert_id("a", "k1", "f", 1), alert_id("a", "k", "1f", 1));
    }

    #[test]
    fn batch_and_table() {
        let b = to_batch(&[alert(), alert()]);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), schema());
        let t = format_table(&[alert()]);
        assert!(t.contains("r1 +2 more") && t.contains("1970-01-01 00:00"));
    }
}

//! Alerts: what a detector observed, what it was compared with, and which
//! requests are the evidence — stored in the lake and printed for people.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Serialize;

/// Evidence request ids kept per alert; the count says how many there were.
pub const MAX_EVIDENCE: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
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
    pub detector: String,
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
    pub mitre_attack: Option<String>,
    pub owasp_nhi: Option<String>,
    /// What the finding is about (a resource prefix, model, tool, network…):
    /// what suppression rules match `resource` against.
    pub subject: Option<String>,
    /// Related alerts of one credential close in time share an incident.
    pub incident_id: Option<String>,
    /// The suppression rule that silenced it (kept in the lake for audit).
    pub suppressed: Option<String>,
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
        Field::new("subject", DataType::Utf8, true),
        Field::new("incident_id", DataType::Utf8, true),
        Field::new("suppressed", DataType::Utf8, true),
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
        strs(&|a| Some(&a.detector)),
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
        strs(&|a| a.mitre_attack.as_deref()),
        strs(&|a| a.owasp_nhi.as_deref()),
        strs(&|a| a.subject.as_deref()),
        strs(&|a| a.incident_id.as_deref()),
        strs(&|a| a.suppressed.as_deref()),
    ];
    RecordBatch::try_new(schema(), columns).expect("alert columns match their schema")
}

/// Window within which alerts of one credential join one incident.
pub const INCIDENT_GAP_MS: i64 = crate::time::HOUR_MS;

/// Detectors whose alerts are about the credential as a whole, not a moment:
/// they stand alone instead of joining incidents.
const STANDALONE: &[&str] = &["governance"];

/// Groups alerts into incidents: per credential, alerts whose windows lie
/// within [`INCIDENT_GAP_MS`] of each other chain into one, named after its
/// first alert so the id is as stable as the alerts'.
pub fn assign_incidents(alerts: &mut [Alert]) {
    let mut order: Vec<usize> = (0..alerts.len())
        .filter(|&i| !STANDALONE.contains(&alerts[i].detector.as_str()) && alerts[i].suppressed.is_none())
        .collect();
    order.sort_by(|&a, &b| {
        (&alerts[a].credential_id, alerts[a].window_start_ms, &alerts[a].alert_id).cmp(&(
            &alerts[b].credential_id,
            alerts[b].window_start_ms,
            &alerts[b].alert_id,
        ))
    });
    let mut current: Option<(String, i64, String)> = None; // credential, end, incident id
    for i in order {
        let a = &alerts[i];
        let joins = matches!(&current, Some((c, end, _)) if *c == a.credential_id && a.window_start_ms <= end + INCIDENT_GAP_MS);
        if !joins {
            current = Some((a.credential_id.clone(), a.window_end_ms, incident_named_after(a)));
        }
        let cur = current.as_mut().expect("an incident is open");
        cur.1 = cur.1.max(a.window_end_ms);
        alerts[i].incident_id = Some(cur.2.clone());
    }
}

/// The id of an incident whose first alert is `a`.
pub fn incident_named_after(a: &Alert) -> String {
    format!("inc-{}", a.alert_id.trim_start_matches("ct-"))
}

/// Alerts of one incident, most severe first.
pub struct Incident<'a> {
    pub id: &'a str,
    pub alerts: Vec<&'a Alert>,
}

impl Incident<'_> {
    pub fn severity(&self) -> Severity {
        self.alerts.iter().map(|a| a.severity).max().unwrap_or(Severity::Low)
    }
    pub fn start(&self) -> i64 {
        self.alerts.iter().map(|a| a.window_start_ms).min().unwrap_or(0)
    }
    pub fn end(&self) -> i64 {
        self.alerts.iter().map(|a| a.window_end_ms).max().unwrap_or(0)
    }
}

/// The incidents among `alerts` (unsuppressed, with an incident id), most
/// severe first, then by time.
pub fn incidents(alerts: &[Alert]) -> Vec<Incident<'_>> {
    let mut by_id: std::collections::BTreeMap<&str, Vec<&Alert>> = Default::default();
    for a in alerts.iter().filter(|a| a.suppressed.is_none()) {
        if let Some(id) = &a.incident_id {
            by_id.entry(id).or_default().push(a);
        }
    }
    let mut out: Vec<Incident<'_>> = by_id
        .into_iter()
        .map(|(id, mut alerts)| {
            alerts.sort_by_key(|a| (a.window_start_ms, std::cmp::Reverse(a.severity)));
            Incident { id, alerts }
        })
        .collect();
    out.sort_by_key(|i| (std::cmp::Reverse(i.severity()), i.start()));
    out
}

/// An alert as an OCSF 1.3 Detection Finding (class 2004), for SIEMs.
pub fn to_ocsf(a: &Alert) -> serde_json::Value {
    let severity_id = match a.severity {
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    };
    // Statistical detectors compare with a learned baseline; the rest are rules.
    let (analytic_type_id, analytic_type) = match a.detector.as_str() {
        "billing_spike" | "retry_storm" | "tool_chaining" => (3, "Statistical"),
        _ => (1, "Rule"),
    };
    let attacks: Vec<serde_json::Value> = a
        .mitre_attack
        .as_deref()
        .map(|m| {
            let (uid, name) = m.split_once(' ').unwrap_or((m, m));
            serde_json::json!({ "technique": { "uid": uid, "name": name } })
        })
        .into_iter()
        .collect();
    let mut severity = a.severity.as_str().to_string();
    severity[..1].make_ascii_uppercase();
    serde_json::json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": a.window_end_ms,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "risk_score": (a.score.min(100.0) * 100.0).round() / 100.0,
        "message": a.explanation,
        "metadata": {
            "version": "1.3.0",
            "uid": a.alert_id,
            "correlation_uid": a.incident_id,
            "product": { "name": "credtrail", "vendor_name": "credtrail", "version": env!("CARGO_PKG_VERSION") },
        },
        "finding_info": {
            "uid": a.alert_id,
            "title": format!("{}: {}", a.detector, a.finding),
            "desc": a.explanation,
            "types": [a.detector, a.finding],
            "first_seen_time": a.window_start_ms,
            "last_seen_time": a.window_end_ms,
            "analytic": { "uid": a.detector, "name": a.detector, "type_id": analytic_type_id, "type": analytic_type },
            "related_events": a.evidence.iter().map(|id| serde_json::json!({ "uid": id })).collect::<Vec<_>>(),
            "attacks": attacks,
        },
        "attacks": attacks,
        "actor": { "user": { "uid": a.credential_id, "name": a.principal, "credential_uid": a.credential_id } },
        "evidences": [{ "data": { "observed": a.observed, "baseline": a.baseline, "subject": a.subject } }],
        "unmapped": {
            "owasp_nhi": a.owasp_nhi,
            "evidence_count": a.evidence_count,
            "score": a.score,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert() -> Alert {
        Alert {
            alert_id: alert_id("out_of_scope", "k", "expired_credential", 5),
            detector: "out_of_scope".into(),
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
            mitre_attack: Some("T1078.004".into()),
            owasp_nhi: None,
            subject: None,
            incident_id: None,
            suppressed: None,
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(alert_id("a", "k", "f", 1), alert_id("a", "k", "f", 1));
        assert_ne!(alert_id("a", "k", "f", 1), alert_id("a", "k", "f", 2));
        assert_ne!(alert_id("a", "k1", "f", 1), alert_id("a", "k", "1f", 1));
    }

    #[test]
    fn batch() {
        let b = to_batch(&[alert(), alert()]);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), schema());
    }
}

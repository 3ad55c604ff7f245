//! Detection quality: the lake's alerts scored against labelled anomalies
//! (`labels.csv` from `credtrail sample`, or an analyst's own), per kind.
//!
//! An alert matches a label when it is on the same credential and its window
//! overlaps the label's (with a little slack). Recall counts labels with a
//! matching alert of their kind; precision counts alerts of a kind that match
//! a label of that kind. Suppressed alerts are left out; a fleet finding counts
//! through its members, for the credentials it lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::columns::{self, ShapeError};
use crate::engine::{self, EngineError};

pub mod techniques;

/// The kinds labels carry, each scored against the detector of the same name.
pub const KINDS: &[&str] = &["billing_spike", "retry_storm", "tool_chaining", "out_of_scope"];
const SLACK_MS: i64 = 5 * 60_000;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("{}: {source}", path.display())]
    Labels { path: PathBuf, source: csv::Error },
    #[error("{}: line {line}: {message}", path.display())]
    BadLabel { path: PathBuf, line: u64, message: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub id: String,
    pub kind: String,
    pub credential_id: String,
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub description: String,
    #[serde(skip)]
    start_ms: i64,
    #[serde(skip)]
    end_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ScoredAlert {
    pub alert_id: String,
    pub detector: String,
    pub credential_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindScore {
    pub kind: String,
    pub labels: usize,
    pub detected: usize,
    pub alerts: usize,
    pub true_alerts: usize,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
    /// From a label's start to the first evidence of its first matching alert.
    pub time_to_detect_median_s: Option<f64>,
    pub time_to_detect_max_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub kinds: Vec<KindScore>,
    /// Alerts of detectors no label kind covers (governance, secrets, …), by detector.
    pub unlabelled: BTreeMap<String, usize>,
    /// Labels no alert of their kind matched.
    pub missed: Vec<String>,
    /// Alerts of a labelled kind that matched no label of it: `(alert id, detector, credential, explanation)`.
    pub false_alerts: Vec<(String, String, String, String)>,
}

pub fn load_labels(path: &Path) -> Result<Vec<Label>, EvalError> {
    let err = |source| EvalError::Labels { path: path.to_path_buf(), source };
    let mut rdr = csv::Reader::from_path(path).map_err(err)?;
    let mut out = Vec::new();
    for rec in rdr.deserialize::<Label>() {
        let mut l = rec.map_err(err)?;
        let line = out.len() as u64 + 2;
        let bad = |message: String| EvalError::BadLabel { path: path.to_path_buf(), line, message };
        l.start_ms =
            crate::time::parse_ts(&l.start).ok_or_else(|| bad(format!("start {:?} is not a time", l.start)))?;
        l.end_ms = crate::time::parse_ts(&l.end).ok_or_else(|| bad(format!("end {:?} is not a time", l.end)))?;
        out.push(l);
    }
    Ok(out)
}

/// The lake's unsuppressed alerts. A fleet finding counts through its
/// members, one per credential it lists, instead of as itself.
pub async fn lake_alerts(lake: &Path) -> Result<Vec<ScoredAlert>, EvalError> {
    let filter = format!(
        "(suppressed IS NULL AND credential_id <> '{}') OR starts_with(suppressed, '{}')",
        crate::detect::FLEET,
        crate::detect::FLEET_MEMBER
    );
    let mut out = Vec::new();
    for r in alert_rows(lake, &filter).await? {
        out.push(ScoredAlert {
            alert_id: r.alert_id.unwrap_or_default(),
            detector: r.detector.unwrap_or_default(),
            credential_id: r.credential_id.unwrap_or_default(),
            start_ms: r.window_start.unwrap_or(0),
            end_ms: r.window_end.unwrap_or(0),
            explanation: r.explanation.unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| (a.start_ms, &a.alert_id).cmp(&(b.start_ms, &b.alert_id)));
    Ok(out)
}

columns::row! {
    /// An alert as both evaluation modes read it.
    struct AlertRow {
        alert_id: text,
        detector: text,
        credential_id: text,
        severity: text,
        mitre_attack: text,
        explanation: text,
        window_start: time,
        window_end: time,
        evidence: texts,
    }
}

/// The lake's alerts passing `filter` (a WHERE clause, optionally with ORDER BY).
async fn alert_rows(lake: &Path, filter: &str) -> Result<Vec<AlertRow>, EvalError> {
    let ctx = engine::context(lake).await?;
    let q = format!(
        "SELECT alert_id, detector, credential_id, severity, mitre_attack, explanation, window_start, window_end, \
         evidence FROM alerts WHERE {filter}"
    );
    let batches = engine::collect(&ctx, &q).await?;
    Ok(columns::rows::<AlertRow>(&batches, "alerts").collect::<Result<_, _>>()?)
}

fn matches(a: &ScoredAlert, l: &Label) -> bool {
    a.credential_id == l.credential_id && a.start_ms <= l.end_ms + SLACK_MS && l.start_ms <= a.end_ms + SLACK_MS
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

pub fn score(labels: &[Label], alerts: &[ScoredAlert]) -> EvalReport {
    let mut kinds = Vec::new();
    let mut missed = Vec::new();
    let mut false_alerts = Vec::new();
    for &kind in KINDS {
        let ls: Vec<&Label> = labels.iter().filter(|l| l.kind == kind).collect();
        let als: Vec<&ScoredAlert> = alerts.iter().filter(|a| a.detector == kind).collect();
        let mut ttd = Vec::new();
        let mut detected = 0;
        for l in &ls {
            match als.iter().filter(|a| matches(a, l)).map(|a| a.start_ms).min() {
                Some(first) => {
                    detected += 1;
                    ttd.push(((first - l.start_ms).max(0)) as f64 / 1000.0);
                }
                None => missed
                    .push(format!("{} {} {} {}–{}: {}", l.id, l.kind, l.credential_id, l.start, l.end, l.description)),
            }
        }
        let true_alerts = als.iter().filter(|a| ls.iter().any(|l| matches(a, l))).count();
        for a in als.iter().filter(|a| !ls.iter().any(|l| matches(a, l))) {
            false_alerts.push((a.alert_id.clone(), a.detector.clone(), a.credential_id.clone(), a.explanation.clone()));
        }
        let recall = if ls.is_empty() { 1.0 } else { detected as f64 / ls.len() as f64 };
        let precision = if als.is_empty() { 1.0 } else { true_alerts as f64 / als.len() as f64 };
        let f1 = if recall + precision > 0.0 { 2.0 * recall * precision / (recall + precision) } else { 0.0 };
        kinds.push(KindScore {
            kind: kind.to_string(),
            labels: ls.len(),
            detected,
            alerts: als.len(),
            true_alerts,
            recall,
            precision,
            f1,
            time_to_detect_max_s: ttd.iter().copied().reduce(f64::max),
            time_to_detect_median_s: median(ttd),
        });
    }
    let mut unlabelled = BTreeMap::new();
    for a in alerts.iter().filter(|a| !KINDS.contains(&a.detector.as_str())) {
        *unlabelled.entry(a.detector.clone()).or_insert(0) += 1;
    }
    EvalReport { kinds, unlabelled, missed, false_alerts }
}

impl EvalReport {
    /// Kinds below the given recall or precision.
    pub fn below(&self, recall: f64, precision: f64) -> Vec<&KindScore> {
        self.kinds.iter().filter(|k| k.recall < recall || k.precision < precision).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(kind: &str, cred: &str, start: i64, end: i64) -> Label {
        Label {
            id: "L".into(),
            kind: kind.into(),
            credential_id: cred.into(),
            start: String::new(),
            end: String::new(),
            description: String::new(),
            start_ms: start,
            end_ms: end,
        }
    }

    fn alert(det: &str, cred: &str, start: i64, end: i64) -> ScoredAlert {
        ScoredAlert {
            alert_id: format!("{det}-{cred}-{start}"),
            detector: det.into(),
            credential_id: cred.into(),
            start_ms: start,
            end_ms: end,
            explanation: String::new(),
        }
    }

    #[test]
    fn precision_recall_and_time_to_detect() {
        let labels = [label("retry_storm", "a", 1_000_000, 2_000_000), label("retry_storm", "b", 0, 10)];
        let alerts = [
            alert("retry_storm", "a", 1_060_000, 1_500_000),
            alert("retry_storm", "c", 0, 10),
            alert("governance", "a", 0, 10),
        ];
        let r = score(&labels, &alerts);
        let k = &r.kinds[1];
        assert_eq!((k.labels, k.detected, k.alerts, k.true_alerts), (2, 1, 2, 1));
        assert_eq!((k.recall, k.precision), (0.5, 0.5));
        assert_eq!(k.time_to_detect_median_s, Some(60.0));
        assert_eq!(r.missed.len(), 1);
        assert_eq!(r.false_alerts.len(), 1);
        assert_eq!(r.unlabelled["governance"], 1);
        assert_eq!(r.below(0.95, 0.9).len(), 1);
    }

    #[test]
    fn an_alert_of_another_kind_does_not_count() {
        let r = score(&[label("billing_spike", "a", 0, 100)], &[alert("retry_storm", "a", 0, 100)]);
        assert_eq!(r.kinds[0].detected, 0);
        assert_eq!(r.kinds[1].precision, 0.0);
    }
}

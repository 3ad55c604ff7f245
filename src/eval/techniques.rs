//! Technique mode: labelled attack records (one JSON object per line:
//! `technique`, `request_id`, `event_id`, `event`, as in the Stratus Red Team
//! corpus' `labels.jsonl`) scored by evidence. A technique is detected when
//! some alert's evidence holds one of its request (or event) ids; an alert holding no
//! labelled request is an alert on no attack event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;

#[derive(Debug, Clone, Deserialize)]
pub struct TechniqueLabel {
    pub technique: String,
    /// Null for records without one (a console login): ingest then keys the
    /// event by its `event_id`, which the label carries too.
    pub request_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub event: String,
}

/// An alert as technique mode sees it: its evidence.
#[derive(Debug, Clone)]
pub struct EvidenceAlert {
    pub alert_id: String,
    pub detector: String,
    pub severity: String,
    pub mitre: String,
    pub explanation: String,
    pub evidence: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TechniqueScore {
    pub technique: String,
    pub events: usize,
    /// The alerts whose evidence holds one of its events.
    pub alerts: Vec<String>,
    /// Their ATT&CK techniques.
    pub mitre: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TechniqueReport {
    pub techniques: Vec<TechniqueScore>,
    pub detected: usize,
    pub recall: f64,
    /// Alerts holding no labelled event, by severity.
    pub unlabelled_by_severity: BTreeMap<String, usize>,
    /// `(alert id, detector, severity, explanation)` of those alerts.
    pub unlabelled: Vec<(String, String, String, String)>,
}

/// Whether a labels file is in the technique (JSON lines) form.
pub fn is_technique_labels(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "jsonl")
}

pub fn load(path: &Path) -> Result<Vec<TechniqueLabel>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::BadLabel {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |message: String| EvalError::BadLabel { path: path.to_path_buf(), line: i as u64 + 1, message };
        out.push(serde_json::from_str(line).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// The lake's unsuppressed alerts with their evidence.
pub async fn lake_alerts(lake: &Path) -> Result<Vec<EvidenceAlert>, EvalError> {
    let out = super::alert_rows(lake, "suppressed IS NULL ORDER BY window_start, alert_id")
        .await?
        .into_iter()
        .map(|r| EvidenceAlert {
            alert_id: r.alert_id.unwrap_or_default(),
            detector: r.detector.unwrap_or_default(),
            severity: r.severity.unwrap_or_default(),
            mitre: r.mitre_attack.unwrap_or_default(),
            explanation: r.explanation.unwrap_or_default(),
            evidence: r.evidence,
        })
        .collect();
    Ok(out)
}

pub fn score(labels: &[TechniqueLabel], alerts: &[EvidenceAlert]) -> TechniqueReport {
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    let mut technique_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in labels {
        *events.entry(&l.technique).or_default() += 1;
        for id in l.request_id.iter().chain(&l.event_id) {
            technique_of.entry(id).or_default().push(&l.technique);
        }
    }
    let mut hits: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    let mut unlabelled = Vec::new();
    for a in alerts {
        let techniques: BTreeSet<&str> =
            a.evidence.iter().filter_map(|r| technique_of.get(r.as_str())).flatten().copied().collect();
        if techniques.is_empty() {
            unlabelled.push((a.alert_id.clone(), a.detector.clone(), a.severity.clone(), a.explanation.clone()));
        }
        for t in techniques {
            let h = hits.entry(t).or_default();
            h.0.insert(&a.alert_id);
            if !a.mitre.is_empty() {
                h.1.insert(&a.mitre);
            }
        }
    }
    let techniques: Vec<TechniqueScore> = events
        .iter()
        .map(|(t, n)| {
            let (alerts, mitre) = hits.remove(t).unwrap_or_default();
            TechniqueScore {
                technique: t.to_string(),
                events: *n,
                alerts: alerts.into_iter().map(str::to_string).collect(),
                mitre: mitre.into_iter().map(str::to_string).collect(),
            }
        })
        .collect();
    let detected = techniques.iter().filter(|t| !t.alerts.is_empty()).count();
    let recall = if techniques.is_empty() { 0.0 } else { detected as f64 / techniques.len() as f64 };
    let mut unlabelled_by_severity = BTreeMap::new();
    for (_, _, sev, _) in &unlabelled {
        *unlabelled_by_severity.entry(sev.clone()).or_insert(0) += 1;
    }
    TechniqueReport { techniques, detected, recall, unlabelled_by_severity, unlabelled }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(t: &str, r: &str) -> TechniqueLabel {
        TechniqueLabel { technique: t.into(), request_id: Some(r.into()), event_id: None, event: String::new() }
    }

    fn alert(id: &str, sev: &str, evidence: &[&str]) -> EvidenceAlert {
        EvidenceAlert {
            alert_id: id.into(),
            detector: "d".into(),
            severity: sev.into(),
            mitre: "T1 x".into(),
            explanation: String::new(),
            evidence: evidence.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn techniques_are_detected_by_evidence() {
        let labels = [label("a", "r1"), label("a", "r2"), label("b", "r3"), label("c", "r4")];
        let alerts = [alert("x", "high", &["r2", "zz"]), alert("y", "medium", &["r3"]), alert("z", "high", &["q"])];
        let r = score(&labels, &alerts);
        let found: Vec<(&str, usize)> = r.techniques.iter().map(|t| (t.technique.as_str(), t.alerts.len())).collect();
        assert_eq!(found, [("a", 1), ("b", 1), ("c", 0)]);
        assert!((r.recall - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.unlabelled.len(), 1);
        assert_eq!(r.unlabelled_by_severity.get("high"), Some(&1));
    }
}

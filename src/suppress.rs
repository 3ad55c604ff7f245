//! Suppressions: known-good behaviour that should not alert, with a reason
//! and an expiry so a silenced rule cannot be forgotten forever.
//!
//! ```toml
//! [[suppress]]
//! credential = "key_LOADTEST*"   # glob over the credential id
//! detector = "retry_storm"       # alert detector family
//! finding = "throttling"         # optional: one finding of it
//! resource = "s3://backups/*"    # optional: glob over what the alert is about
//! reason = "weekly load test against the gateway (INC-1234)"
//! expires = "2026-12-31"         # alerts after this day are no longer silenced
//! ```
//!
//! A rule covers an alert when every field it sets matches. Expiry is judged
//! against the alert's own time, so rerunning old days gives the same result.
//! Suppressed alerts stay in the lake with the rule that silenced them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alert::Alert;
use crate::pattern::name_matches;

#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{}: rule {index}: {message}", path.display())]
    Invalid { path: PathBuf, index: usize, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub credential: Option<String>,
    pub detector: Option<String>,
    pub finding: Option<String>,
    pub resource: Option<String>,
    pub reason: String,
    pub expires: Option<String>,
    #[serde(skip)]
    expires_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    suppress: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    pub rules: Vec<Rule>,
}

impl Rule {
    fn covers(&self, a: &Alert) -> bool {
        let glob = |p: &Option<String>, v: Option<&str>| match p {
            None => true,
            Some(p) => v.is_some_and(|v| name_matches(p, v)),
        };
        glob(&self.credential, Some(&a.credential_id))
            && glob(&self.detector, Some(&a.detector))
            && glob(&self.finding, Some(&a.finding))
            && glob(&self.resource, a.subject.as_deref())
            && self.expires_ms.is_none_or(|e| a.window_start_ms < e)
    }

    fn describe(&self) -> String {
        match &self.expires {
            Some(e) => format!("{} (until {e})", self.reason),
            None => self.reason.clone(),
        }
    }
}

impl Suppressions {
    pub fn load(path: &Path) -> Result<Suppressions, SuppressError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SuppressError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Suppressions, SuppressError> {
        let f: File =
            toml::from_str(text).map_err(|source| SuppressError::Parse { path: path.to_path_buf(), source })?;
        let mut rules = f.suppress;
        for (i, r) in rules.iter_mut().enumerate() {
            let invalid = |message: String| SuppressError::Invalid { path: path.to_path_buf(), index: i + 1, message };
            if r.reason.trim().is_empty() {
                return Err(invalid("`reason` is empty: say why this behaviour is known to be good".into()));
            }
            if r.credential.is_none() && r.detector.is_none() && r.finding.is_none() && r.resource.is_none() {
                return Err(invalid(
                    "it sets none of credential, detector, finding, resource and would silence everything".into(),
                ));
            }
            if let Some(e) = &r.expires {
                // A bare date lasts to the end of that day.
                let ms = match chrono::NaiveDate::parse_from_str(e, "%Y-%m-%d") {
                    Ok(d) => d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis() + crate::time::DAY_MS),
                    Err(_) => crate::time::parse_ts(e),
                };
                r.expires_ms = Some(ms.ok_or_else(|| invalid(format!("`expires` {e:?} is not a date or time")))?);
            }
        }
        Ok(Suppressions { rules })
    }

    /// Marks every alert a rule covers; returns how many were silenced.
    pub fn apply(&self, alerts: &mut [Alert]) -> usize {
        let mut n = 0;
        for a in alerts.iter_mut() {
            if let Some(r) = self.rules.iter().find(|r| r.covers(a)) {
                a.suppressed = Some(r.describe());
                n += 1;
            }
        }
        n
    }

    /// Rules that had expired by `now_ms`: worth a warning, they no longer apply.
    pub fn expired(&self, now_ms: i64) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.expires_ms.is_some_and(|e| e <= now_ms)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    fn alert(cred: &str, detector: &'static str, start: i64) -> Alert {
        Alert {
            alert_id: "a".into(),
            detector: detector.into(),
            finding: "throttling".into(),
            severity: Severity::Medium,
            score: 1.0,
            credential_id: cred.into(),
            principal: None,
            window_start_ms: start,
            window_end_ms: start,
            explanation: String::new(),
            observed: String::new(),
            baseline: String::new(),
            evidence: vec![],
            evidence_count: 0,
            mitre_attack: None,
            owasp_nhi: None,
            subject: Some("s3://backups/x/".into()),
            incident_id: None,
            suppressed: None,
        }
    }

    fn day(d: &str) -> i64 {
        crate::time::parse_date_or_ts(d).unwrap()
    }

    #[test]
    fn rules_match_every_field_they_set_until_they_expire() {
        let s = Suppressions::parse(
            r#"
            [[suppress]]
            credential = "key_LOAD*"
            detector = "retry_storm"
            resource = "s3://backups/*"
            reason = "load test"
            expires = "2026-11-05"
            "#,
            Path::new("s.toml"),
        )
        .unwrap();
        let mut a = vec![
            alert("key_LOAD1", "retry_storm", day("2026-11-05") + 1000),
            alert("key_LOAD1", "retry_storm", day("2026-11-06") + 1000),
            alert("key_OTHER", "retry_storm", day("2026-11-04")),
            alert("key_LOAD1", "billing_spike", day("2026-11-04")),
        ];
        assert_eq!(s.apply(&mut a), 1);
        assert_eq!(a[0].suppressed.as_deref(), Some("load test (until 2026-11-05)"));
        assert!(a[1].suppressed.is_none(), "the rule expired before this alert");
        assert!(a[2].suppressed.is_none() && a[3].suppressed.is_none());
        assert_eq!(s.expired(day("2026-11-07")).len(), 1);
        assert!(s.expired(day("2026-11-05")).is_empty());
    }

    #[test]
    fn bad_rules_are_refused_with_their_number() {
        let p = Path::new("s.toml");
        let e = Suppressions::parse("[[suppress]]\nreason = \"x\"\n", p).unwrap_err().to_string();
        assert!(e.contains("rule 1") && e.contains("silence everything"), "{e}");
        let e = Suppressions::parse("[[suppress]]\ndetector = \"x\"\nreason = \"\"\n", p).unwrap_err().to_string();
        assert!(e.contains("reason"), "{e}");
        let e = Suppressions::parse("[[suppress]]\ndetector = \"x\"\nreason = \"r\"\nexpires = \"soon\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("soon"), "{e}");
        assert!(Suppressions::parse("[[suppress]]\ndetectr = \"x\"\nreason = \"r\"\n", p).is_err());
    }
}

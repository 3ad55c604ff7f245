//! Governance findings as alerts: what the inventory and the lake together
//! say about credentials as a whole (ownerless, long-lived, unused, unknown
//! to the inventory). Judged as of the end of the last day detected, so a
//! rerun over the same days gives the same alerts.

use std::collections::HashMap;

use crate::alert::{self, Alert, Severity};
use crate::inventory::{self, CheckOptions, FindingKind, Inventory, Usage};
use crate::time::DAY_MS;

pub const EXPIRING_WITHIN_DAYS: u32 = 14;

pub(super) fn alerts(
    inv: &Inventory,
    usage: &HashMap<String, Usage>,
    days: &[String],
    max_age_days: u32,
) -> Vec<Alert> {
    let day_ms = |d: &str| crate::time::parse_date_or_ts(d).unwrap_or(0);
    let (start, end) = (day_ms(&days[0]), day_ms(&days[days.len() - 1]) + DAY_MS - 1);
    let opts = CheckOptions { now_ms: end, max_age_days, expiring_within_days: EXPIRING_WITHIN_DAYS };
    inventory::check(inv, Some(usage), &opts)
        .into_iter()
        // Use after expiry is an out-of-scope alert with its requests as evidence.
        .filter(|f| f.kind != FindingKind::ExpiredButUsed)
        .map(|f| {
            let (severity, owasp) = match f.kind {
                FindingKind::Unknown => (Severity::Medium, None),
                FindingKind::LongLived => (Severity::Low, Some("NHI7:2025 Long-Lived Secrets")),
                _ => (Severity::Low, Some("NHI1:2025 Improper Offboarding")),
            };
            let c = inv.get(&f.credential_id);
            Alert {
                alert_id: alert::alert_id("governance", &f.credential_id, f.kind.as_str(), start),
                detector: "governance".into(),
                finding: f.kind.as_str().to_string(),
                severity,
                score: 1.0,
                credential_id: f.credential_id.clone(),
                principal: c.and_then(|c| c.principal.clone()),
                window_start_ms: start,
                window_end_ms: end,
                explanation: format!("{}: {}", f.credential_id, f.detail),
                observed: f.detail.clone(),
                baseline: match f.kind {
                    FindingKind::LongLived => format!("policy: keys rotate within {max_age_days} days"),
                    FindingKind::Unknown => "every credential in use has an inventory entry".into(),
                    _ => "every credential has an owner, an expiry and a use".into(),
                },
                evidence: Vec::new(),
                evidence_count: 0,
                mitre_attack: None,
                owasp_nhi: owasp.map(str::to_string),
                subject: f.owner.clone(),
                incident_id: None,
                suppressed: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: &str) -> i64 {
        crate::time::parse_date_or_ts(d).unwrap()
    }

    fn used(from: &str, to: &str) -> Usage {
        Usage { first_seen_ms: ms(from), last_seen_ms: ms(to), events: 7 }
    }

    /// An inventory of one credential per governance finding, and one fine one.
    fn inventory(dir: &std::path::Path) -> Inventory {
        let path = dir.join("inventory.csv");
        let csv = "credential_id,owner,principal,kind,created_at,expires_at,allowed_actions,allowed_models,allowed_tools,allowed_resources,allowed_regions\n\
                   k_fine,a@x,app:fine,api_key,2026-10-01,2027-01-01,inference,,,,\n\
                   k_ownerless,,app:orphan,api_key,2026-10-01,2027-01-01,inference,,,,\n\
                   k_old,a@x,app:old,api_key,2026-01-01,,inference,,,,\n\
                   k_expired,a@x,app:gone,api_key,2026-10-01,2026-10-20,inference,,,,\n\
                   k_used_expired,a@x,app:zombie,api_key,2026-10-01,2026-10-20,inference,,,,\n";
        std::fs::write(&path, csv).unwrap();
        Inventory::load(&path).unwrap()
    }

    fn usage() -> HashMap<String, Usage> {
        HashMap::from([
            ("k_fine".into(), used("2026-11-02", "2026-11-03")),
            ("k_ownerless".into(), used("2026-11-02", "2026-11-02")),
            ("k_old".into(), used("2026-11-02", "2026-11-03")),
            ("k_used_expired".into(), used("2026-11-02", "2026-11-03")),
            ("k_stranger".into(), used("2026-11-03", "2026-11-03")),
        ])
    }

    #[test]
    fn each_finding_kind_becomes_one_alert_with_its_severity() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let days = ["2026-11-02".to_string(), "2026-11-03".to_string()];
        let alerts = alerts(&inv, &usage(), &days, 90);
        let mut found: Vec<(&str, &str, Severity)> =
            alerts.iter().map(|a| (a.credential_id.as_str(), a.finding.as_str(), a.severity)).collect();
        found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        assert_eq!(
            found,
            [
                ("k_expired", "expired", Severity::Low),
                ("k_old", "long_lived", Severity::Low),
                ("k_ownerless", "ownerless", Severity::Low),
                ("k_stranger", "unknown", Severity::Medium),
            ],
            "use after expiry is left to the out-of-scope detector; a fine key gives nothing"
        );
        let old = alerts.iter().find(|a| a.finding == "long_lived").unwrap();
        assert_eq!(old.owasp_nhi, Some("NHI7:2025 Long-Lived Secrets"));
        assert!(old.baseline.contains("90 days"), "{}", old.baseline);
        assert_eq!(old.principal.as_deref(), Some("app:old"));
        assert!(alerts.iter().find(|a| a.finding == "unknown").unwrap().owasp_nhi.is_none());
        // The window is the days judged, whole.
        for a in &alerts {
            assert_eq!((a.window_start_ms, a.window_end_ms), (ms("2026-11-02"), ms("2026-11-04") - 1));
            assert_eq!(a.detector, "governance");
        }
    }

    #[test]
    fn judged_as_of_the_last_day_so_reruns_agree() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let days = ["2026-11-02".to_string(), "2026-11-03".to_string()];
        let ids = |days: &[String], max_age| {
            let mut v: Vec<String> = alerts(&inv, &usage(), days, max_age).into_iter().map(|a| a.alert_id).collect();
            v.sort();
            v
        };
        assert_eq!(ids(&days, 90), ids(&days, 90));
        // Another first day is another window: other ids.
        let later = ["2026-11-03".to_string()];
        assert!(ids(&later, 90).iter().all(|id| !ids(&days, 90).contains(id)));
        // A looser age policy drops the long-lived finding only.
        assert_eq!(ids(&days, 400).len(), ids(&days, 90).len() - 1);
    }
}

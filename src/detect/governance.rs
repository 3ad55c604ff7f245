//! Governance findings as alerts: what the inventory and the lake together
//! say about credentials as a whole (ownerless, long-lived, unused, unknown
//! to the inventory). Judged as of the end of the last day detected, so a
//! rerun over the same days gives the same alerts.

use std::collections::HashMap;

use crate::alert::{self, Alert, Severity};
use crate::inventory::{self, CheckOptions, FindingKind, Inventory, Usage};

const DAY_MS: i64 = 86_400_000;
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

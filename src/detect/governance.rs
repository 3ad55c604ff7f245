//! Governance findings as alerts: what the inventory and the lake together
//! say about credentials as a whole (ownerless, long-lived, unused, unknown
//! to the inventory). Judged as of the end of the last day detected, so a
//! rerun over the same days gives the same alerts.
//!
//! Out-of-scope use that was the credential's standing behaviour through its
//! baseline is an inventory mismatch, not an attack: [`out_of_scope`] turns
//! it into one governance finding per credential and kind of finding, with
//! the same id every day, and [`merge_repeats`] keeps one per run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::RecordBatch;
use arrow::compute::{filter_record_batch, is_not_null, is_null};

use super::rule::Explainer;
use super::{Context, DetectError, explain};
use crate::alert::{self, Alert, Severity};
use crate::columns;
use crate::inventory::{self, CheckOptions, FindingKind, Inventory, Usage};
use crate::time::{DAY_MS, format_ms};

/// The governance finding of standing out-of-scope use.
pub const INVENTORY_MISMATCH: &str = FindingKind::InventoryMismatch.as_str();
/// The out-of-scope query's column telling standing use (see its header).
const STANDING: &str = "standing_since";

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

/// The out-of-scope query's rows as alerts: new out-of-scope use alerts as
/// usual; standing use (rows with `standing_since`) becomes one inventory
/// mismatch per credential and finding. A replaced query without the
/// column alerts on every row.
pub(super) fn out_of_scope(cx: &Context<'_>, q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let mut fresh = Vec::new();
    let mut standing = Vec::new();
    for b in batches {
        let Some(col) = b.column_by_name(STANDING) else {
            fresh.push(b.clone());
            continue;
        };
        let run = |e| DetectError::Run { name: q.to_string(), source: e };
        let split = |mask: arrow::error::Result<_>| {
            mask.and_then(|m| filter_record_batch(b, &m)).map_err(|e| run(datafusion::error::DataFusionError::from(e)))
        };
        fresh.push(split(is_null(col))?);
        standing.push(split(is_not_null(col))?);
    }
    let mut out = explain::grouped_alerts(cx.rule, q, explain::explainer(Explainer::OutOfScope), &fresh)?;
    out.extend(mismatches(q, &standing)?);
    Ok(out)
}

/// What one credential's standing out-of-scope use of one kind adds up to.
#[derive(Default)]
struct Mismatch {
    principal: Option<String>,
    allowed: Option<String>,
    values: BTreeSet<String>,
    since: i64,
    first: i64,
    last: i64,
    requests: u64,
    evidence: Vec<String>,
}

columns::row! {
    /// One out-of-scope request of the mismatch query.
    struct MismatchRow {
        credential_id: text,
        finding: text,
        value: text,
        allowed: text,
        principal: text,
        request_id: text,
        ts: time,
        since: time = STANDING,
    }
}

fn mismatches(q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let mut by: BTreeMap<(String, String), Mismatch> = BTreeMap::new();
    for r in columns::rows::<MismatchRow>(batches, q) {
        let r = r?;
        let (Some(c), Some(f), Some(t), Some(s)) = (r.credential_id, r.finding, r.ts, r.since) else { continue };
        let m = by.entry((c, f)).or_insert_with(|| Mismatch { since: s, first: t, last: t, ..Default::default() });
        m.principal = m.principal.take().or(r.principal);
        m.allowed = m.allowed.take().or(r.allowed);
        m.values.extend(r.value);
        (m.since, m.first, m.last) = (m.since.min(s), m.first.min(t), m.last.max(t));
        m.requests += 1;
        if let Some(req) = r.request_id
            && m.evidence.len() < alert::MAX_EVIDENCE
        {
            m.evidence.push(req);
        }
    }
    Ok(by
        .into_iter()
        .map(|((cred, finding), m)| {
            let mut a = Alert {
                // The same id every day: one finding, restated, not a new one.
                alert_id: alert::alert_id("governance", &cred, &format!("{INVENTORY_MISMATCH}:{finding}"), 0),
                detector: "governance".into(),
                finding: INVENTORY_MISMATCH.to_string(),
                severity: Severity::Low,
                score: 1.0,
                credential_id: cred,
                principal: m.principal,
                window_start_ms: m.first,
                window_end_ms: m.last,
                explanation: String::new(),
                observed: String::new(),
                // The first day of a run has the earliest standing date: merges keep it.
                baseline: format!(
                    "{finding} (the inventory allows {}), its standing use since {}",
                    m.allowed.filter(|a| !a.is_empty()).unwrap_or_else(|| "(none listed)".into()),
                    format_ms(m.since)
                ),
                evidence: m.evidence,
                evidence_count: m.requests,
                mitre_attack: None,
                owasp_nhi: Some("NHI5:2025 Overprivileged NHI".into()),
                subject: Some(m.values.into_iter().collect::<Vec<_>>().join(", ")),
                incident_id: None,
                suppressed: None,
            };
            word_mismatch(&mut a);
            a
        })
        .collect())
}

/// The mismatch's sentences, from its fields (again after [`merge_repeats`]).
fn word_mismatch(a: &mut Alert) {
    let values = a.subject.as_deref().unwrap_or_default();
    a.observed = format!("{} requests using {values}, last {}", a.evidence_count, format_ms(a.window_end_ms));
    a.explanation = format!("{}: {values}: {}: fix the inventory or the caller", a.credential_id, a.baseline);
}

/// One alert per id across the days of a run: a standing mismatch restated
/// each day becomes one finding over the days, with their requests counted
/// together.
pub(super) fn merge_repeats(alerts: Vec<Alert>) -> Vec<Alert> {
    let mut out: Vec<Alert> = Vec::with_capacity(alerts.len());
    let mut at: HashMap<String, usize> = HashMap::new();
    for a in alerts {
        if a.finding != INVENTORY_MISMATCH {
            out.push(a);
            continue;
        }
        match at.get(&a.alert_id) {
            Some(&i) => {
                let m = &mut out[i];
                m.window_start_ms = m.window_start_ms.min(a.window_start_ms);
                m.window_end_ms = m.window_end_ms.max(a.window_end_ms);
                m.evidence_count += a.evidence_count;
                let room = alert::MAX_EVIDENCE.saturating_sub(m.evidence.len());
                m.evidence.extend(a.evidence.into_iter().take(room));
                let values: BTreeSet<String> = [m.subject.take(), a.subject]
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s.split(", ").map(str::to_string).collect::<Vec<_>>())
                    .collect();
                m.subject = Some(values.into_iter().collect::<Vec<_>>().join(", "));
                word_mismatch(m);
            }
            None => {
                at.insert(a.alert_id.clone(), out.len());
                out.push(a);
            }
        }
    }
    out
}

/// The inventory mismatches `detect` recorded in the lake, one per
/// credential and finding (the latest statement of each), for
/// `inventory check --lake`.
pub async fn inventory_mismatches(lake: &std::path::Path) -> Result<Vec<inventory::Finding>, DetectError> {
    let ctx = crate::engine::context(lake).await?;
    let q = format!(
        "SELECT credential_id, explanation FROM ( \
           SELECT credential_id, explanation, row_number() OVER (PARTITION BY alert_id ORDER BY window_end DESC) AS n \
           FROM alerts WHERE detector = 'governance' AND finding = '{INVENTORY_MISMATCH}' AND suppressed IS NULL) \
         WHERE n = 1 ORDER BY credential_id, explanation"
    );
    let run = |source| DetectError::Run { name: "inventory_mismatches".into(), source };
    let batches = ctx.sql(&q).await.map_err(run)?.collect().await.map_err(run)?;
    let mut out = Vec::new();
    columns::row! {
        struct Statement {
            credential_id: text,
            explanation: text,
        }
    }
    for r in columns::rows::<Statement>(&batches, &q) {
        let r = r?;
        let (Some(c), Some(t)) = (r.credential_id, r.explanation) else { continue };
        let detail = t.strip_prefix(&format!("{c}: ")).unwrap_or(&t).to_string();
        out.push(inventory::Finding { kind: FindingKind::InventoryMismatch, credential_id: c, owner: None, detail });
    }
    Ok(out)
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
        assert_eq!(old.owasp_nhi, Some("NHI7:2025 Long-Lived Secrets".to_string()));
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

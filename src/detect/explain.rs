//! Request-level detector rows grouped into alerts, and how each such
//! detector words what it found; severities and mappings come from its rule.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;

use super::DetectError;
use super::peers::{self, MIN_PEERS};
use super::rule::{Explainer, Mapped, Rule};
use crate::alert::{self, Alert, MAX_EVIDENCE};
use crate::columns;
use crate::time::{format_ms, parse_date_or_ts};

/// Findings of the first-seen query start with this; they may fold into
/// another alert of the same credential.
pub(crate) const FIRST_SEEN_PREFIX: &str = "first_seen_";

/// One row of a detector query: a request that is evidence of something.
/// Every detector query returns these columns: `credential_id, principal,
/// ts, request_id, source_ip, finding, value, allowed`.
pub(crate) struct Row {
    ts: i64,
    request_id: Option<String>,
    source_ip: Option<String>,
    principal: Option<String>,
    value: String,
    /// What the finding was compared with (a scope, a field name, …).
    allowed: Option<String>,
}

/// Rows that make one alert: a credential, a finding, a group of values, a day.
pub(crate) struct Group<'a> {
    /// The detector's rule: what each finding maps to.
    pub rule: &'a Rule,
    pub cred: &'a str,
    pub finding: &'a str,
    pub group: &'a str,
    pub rows: &'a [Row],
    /// Up to three source addresses, for the explanation.
    pub ips: String,
}

/// How a detector words and rates one group.
pub(crate) struct Explained<'a> {
    /// Severity and mappings, from the rule.
    pub mapped: Mapped<'a>,
    pub observed: String,
    pub baseline: String,
    pub explanation: String,
}

/// Words one group of rows.
pub(crate) type Explain = for<'a> fn(&Group<'a>) -> Explained<'a>;

/// The explainer a rule names.
pub(crate) fn explainer(e: Explainer) -> Explain {
    match e {
        Explainer::OutOfScope => out_of_scope,
        Explainer::FirstSeen => first_seen,
        Explainer::SecretExposure => secret_exposure,
        Explainer::DefenseEvasion => defense_evasion,
        Explainer::Custom => custom,
    }
}

/// Where an alert groups rows: a resource by its parent "directory",
/// anything else by its value.
fn group_key(finding: &str, value: &str) -> String {
    if finding == "resource_outside_scope"
        && let Some(i) = value.trim_end_matches('/').rfind('/')
    {
        return value[..=i].to_string();
    }
    value.to_string()
}

columns::row! {
    /// One row of a request-level detector's query.
    struct FindingRow {
        credential_id: text,
        finding: text,
        value: text,
        allowed: text,
        request_id: text,
        source_ip: text,
        principal: text,
        ts: time,
    }
}

/// The one mechanism request-level detectors share: group the rows per
/// credential, finding, value group and day, and let the detector explain
/// each group.
pub(crate) fn grouped_alerts(
    rule: &Rule,
    query: &str,
    explain: Explain,
    batches: &[RecordBatch],
) -> Result<Vec<Alert>, DetectError> {
    let q = query;
    let mut groups: BTreeMap<(String, String, String, String), Vec<Row>> = BTreeMap::new();
    for r in columns::rows::<FindingRow>(batches, q) {
        let r = r?;
        let (Some(c), Some(f), Some(t)) = (r.credential_id, r.finding, r.ts) else { continue };
        let v = r.value.unwrap_or_default();
        let g = group_key(&f, &v);
        let key = (c, f, g, crate::time::day_of(t));
        groups.entry(key).or_default().push(Row {
            ts: t,
            request_id: r.request_id,
            source_ip: r.source_ip,
            principal: r.principal,
            value: v,
            allowed: r.allowed,
        });
    }
    let mut out = Vec::new();
    for ((cred, finding, group, _day), mut rows) in groups {
        rows.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
        let ips: BTreeSet<&str> = rows.iter().filter_map(|x| x.source_ip.as_deref()).collect();
        let ips = if ips.is_empty() {
            "an unknown address".to_string()
        } else {
            ips.into_iter().take(3).collect::<Vec<_>>().join(", ")
        };
        let g = Group { rule, cred: &cred, finding: &finding, group: &group, rows: &rows, ips };
        let e = explain(&g);
        let (first, last) = (&rows[0], &rows[rows.len() - 1]);
        out.push(Alert {
            alert_id: alert::alert_id(&rule.family, &cred, &format!("{finding}:{group}"), first.ts),
            detector: rule.family.clone(),
            finding: finding.clone(),
            severity: e.mapped.severity,
            score: 1.0,
            principal: first.principal.clone(),
            credential_id: cred.clone(),
            window_start_ms: first.ts,
            window_end_ms: last.ts,
            explanation: e.explanation,
            observed: e.observed,
            baseline: e.baseline,
            evidence: rows.iter().filter_map(|x| x.request_id.clone()).take(MAX_EVIDENCE).collect(),
            evidence_count: rows.len() as u64,
            mitre_attack: e.mapped.mitre(),
            owasp_nhi: e.mapped.owasp(),
            subject: Some(group.clone()),
            incident_id: None,
            suppressed: None,
        });
    }
    Ok(out)
}

pub(crate) fn out_of_scope<'a>(g: &Group<'a>) -> Explained<'a> {
    let (cred, n, ips, first) = (g.cred, g.rows.len(), &g.ips, &g.rows[0]);
    let allowed = first.allowed.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "(none listed)".into());
    let declared = parse_date_or_ts(&first.value).map(format_ms).unwrap_or_else(|| first.value.clone());
    match g.finding {
        "expired_credential" => Explained {
            mapped: g.rule.mapped(g.finding, None),
            observed: format!("{n} requests after expiry"),
            baseline: format!("inventory: expires {declared}"),
            explanation: format!(
                "{cred} was used {n} times after it expired ({declared}), from {ips}: revoke it and find who holds it"
            ),
        },
        "not_yet_valid" => Explained {
            mapped: g.rule.mapped(g.finding, None),
            observed: format!("{n} requests before the credential was issued"),
            baseline: format!("inventory: created {declared}"),
            explanation: format!("{cred} was used {n} times before it was issued ({declared}), from {ips}"),
        },
        finding => {
            let what = finding.trim_end_matches("_outside_scope");
            let shown = if what == "resource" { format!("{}…", g.group) } else { g.group.to_string() };
            // Variants the rule may rate apart: an admin action, a storage bucket.
            let variant = match what {
                "action" if first.value == "admin" => Some("admin"),
                "resource" if g.group.starts_with("s3://") => Some("s3"),
                _ => None,
            };
            Explained {
                mapped: g.rule.mapped(finding, variant),
                observed: format!("{n} requests with {what} {shown}"),
                baseline: format!("inventory allows {what}s: {allowed}"),
                explanation: format!(
                    "{cred} made {n} requests with {what} {shown}, outside its declared scope ({allowed}), from {ips}"
                ),
            }
        }
    }
}

pub(crate) fn secret_exposure<'a>(g: &Group<'a>) -> Explained<'a> {
    let n = g.rows.len();
    let (kind, fingerprint) = g.group.split_once(':').unwrap_or((g.group, "?"));
    let fields: BTreeSet<&str> = g.rows.iter().filter_map(|r| r.allowed.as_deref()).collect();
    let fields = fields.into_iter().collect::<Vec<_>>().join(", ");
    Explained {
        mapped: g.rule.mapped(g.finding, None),
        observed: format!("{n} logged requests carried a {kind} (fingerprint {fingerprint}) in {fields}"),
        baseline: "a secret never belongs in a log".into(),
        explanation: format!(
            "a {kind} (fingerprint {fingerprint}) appeared in {fields} of {n} logged requests of {}: anyone who reads \
             these logs holds it; rotate it and fix the caller that logs it (credtrail stored it redacted)",
            g.cred
        ),
    }
}

pub(crate) fn defense_evasion<'a>(g: &Group<'a>) -> Explained<'a> {
    let n = g.rows.len();
    let target = g.rows.iter().find_map(|r| r.allowed.clone()).map(|t| format!(" on {t}")).unwrap_or_default();
    let what =
        if g.group.starts_with("bedrock:") { "disabling AI logging or guardrails" } else { "disabling audit logging" };
    Explained {
        mapped: g.rule.mapped(g.finding, None),
        observed: format!("{n} × {}{target}", g.group),
        baseline: "AI guardrails and model-invocation logging are changed by change management, not by workload keys"
            .into(),
        explanation: format!(
            "{} called {}{target} {n} time(s) from {}: {what} is how a stolen key hides its use; confirm the change \
             or revoke the key",
            g.cred, g.group, g.ips
        ),
    }
}

/// A detector the user added as a query file: its rows say what they found.
pub(crate) fn custom<'a>(g: &Group<'a>) -> Explained<'a> {
    let n = g.rows.len();
    let allowed = g.rows[0].allowed.clone().unwrap_or_else(|| "(not given)".into());
    Explained {
        mapped: g.rule.mapped(g.finding, None),
        observed: format!("{n} requests: {} {}", g.finding, g.group),
        baseline: allowed.clone(),
        explanation: format!(
            "{} made {n} requests flagged {} ({}) from {}; compared with: {allowed}",
            g.cred, g.finding, g.group, g.ips
        ),
    }
}

/// A value the credential (or its principal's other learned credentials,
/// named in `allowed` when they add to it) had never used in its learned
/// history: a new source network, model, tool, action or resource prefix.
pub(crate) fn first_seen<'a>(g: &Group<'a>) -> Explained<'a> {
    let n = g.rows.len();
    let what = g.finding.trim_start_matches(FIRST_SEEN_PREFIX).replace('_', " ");
    let known = g.rows[0].allowed.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "nothing yet".into());
    let known =
        if known.chars().count() > 160 { format!("{}…", known.chars().take(160).collect::<String>()) } else { known };
    Explained {
        mapped: g.rule.mapped(g.finding, None),
        observed: format!("{n} requests with a first-seen {what}: {}", g.group),
        baseline: format!("learned {what}s: {known}"),
        explanation: format!(
            "{} used {what} {} for the first time ({n} requests from {}), never seen in its learned history (known: {known})",
            g.cred, g.group, g.ips
        ),
    }
}

/// Learned requests a credential's own history needs (or, together, its
/// principal's learned credentials') before a first-seen value is judged
/// against it alone.
pub(crate) const MIN_IDENTITY_REQUESTS: u64 = 100;

/// The level a credential's first-seen values are judged at.
enum Level<'b> {
    /// Its own learned history, or its principal's other learned
    /// credentials' (the query's rows are already new to those).
    Identity,
    /// Too little of either: its learned peers ([`peers::learned_peers`]).
    Peers(String, Vec<&'b crate::baseline::CredentialBaseline>),
}

/// The nearest level that knows `cred`'s work; `None` when none does (a
/// new key of a new role: everything it does is new, so nothing is news).
fn level<'b>(
    b: &'b crate::baseline::Baseline,
    inv: Option<&crate::inventory::Inventory>,
    cred: &str,
    principal: Option<&str>,
) -> Option<Level<'b>> {
    let learned = |c: &&crate::baseline::CredentialBaseline| !c.cold_start;
    let own = b.credentials.get(cred).filter(learned).map_or(0, |c| c.requests);
    let identity: u64 = principal.map_or(0, |p| {
        b.credentials.values().filter(learned).filter(|c| c.principal.as_deref() == Some(p)).map(|c| c.requests).sum()
    });
    if own.max(identity) >= MIN_IDENTITY_REQUESTS {
        return Some(Level::Identity);
    }
    let (group, peers) = peers::learned_peers(b, inv, cred, principal);
    (peers.len() >= MIN_PEERS).then_some(Level::Peers(group, peers))
}

/// Judges the first-seen rows' alerts at the credential's [`level`]:
///
/// - at its own or its principal's level, a value that is no news stays on
///   record, suppressed, and still joins an alert it is part of (a spend
///   spike on it) when folded: a model the credential's inventory lists
///   explicitly is a rollout, not misuse; and a value of any dimension
///   (network, model, tool, action, resource prefix, region) that
///   [`MIN_PEERS`] or more of its learned peers already used, and that its
///   inventory entry (if any) allows, is a member of the team taking up the
///   team's work;
/// - a thin or new credential is judged by its peer group: a value any
///   learned peer used is not news at that level (dropped), one none used
///   is, and says so;
/// - with no level (or no baseline) there is nothing to judge by: dropped.
pub(crate) fn judge_first_seen(
    inv: Option<&crate::inventory::Inventory>,
    base: Option<&crate::baseline::Baseline>,
    alerts: &mut Vec<Alert>,
) {
    alerts.retain_mut(|a| {
        let Some(dimension) = a.finding.strip_prefix(FIRST_SEEN_PREFIX) else { return true };
        let Some(value) = a.subject.clone() else { return true };
        let dimension = dimension.to_string();
        match base.and_then(|b| Some((b, level(b, inv, &a.credential_id, a.principal.as_deref())?))) {
            Some((b, Level::Identity)) => {
                known_first_value(inv, b, a, &dimension, &value);
                true
            }
            Some((b, Level::Peers(group, peers))) => {
                let news = peers.iter().all(|p| !b.used(&p.credential_id, &dimension, &value));
                if news {
                    say_new_to_peers(b, a, &dimension, &group, &peers);
                }
                news
            }
            None => false,
        }
    });
}

/// Says in `a` that its value is new to its peer group, listing what the
/// peers use most.
fn say_new_to_peers(
    b: &crate::baseline::Baseline,
    a: &mut Alert,
    dimension: &str,
    group: &str,
    peers: &[&crate::baseline::CredentialBaseline],
) {
    let mut known: Vec<(usize, &str)> = b
        .used_by
        .get(dimension)
        .into_iter()
        .flatten()
        .map(|(v, users)| (peers.iter().filter(|p| users.contains(&p.credential_id)).count(), v.as_str()))
        .filter(|(n, _)| *n > 0)
        .collect();
    known.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(y.1)));
    let what = dimension.replace('_', " ");
    let list = known.iter().take(8).map(|(_, v)| *v).collect::<Vec<_>>().join(", ");
    let more = if known.len() > 8 { ", …" } else { "" };
    let level = format!("its peers ({} learned credentials of {group}, its own history too thin)", peers.len());
    a.baseline = format!("learned {what}s of {level}: {list}{more}");
    a.explanation = format!(
        "{} used {what} {}, which none of {level} ever used (they use: {list}{more})",
        a.credential_id,
        a.subject.as_deref().unwrap_or_default()
    );
}

/// A first-seen value at the identity level that is no news (see
/// [`judge_first_seen`]): suppressed, with the reason.
fn known_first_value(
    inv: Option<&crate::inventory::Inventory>,
    b: &crate::baseline::Baseline,
    a: &mut Alert,
    dimension: &str,
    value: &str,
) {
    if a.suppressed.is_some() {
        return;
    }
    let entry = inv.and_then(|i| i.get(&a.credential_id));
    let allowed = entry.is_none_or(|c| match dimension {
        "model" => c.allows_model(value),
        "tool" => c.allows_tool(value),
        "action" => value.parse().is_ok_and(|x| c.allows_action(x)),
        "resource_prefix" => c.allows_resource(value),
        "region" => c.allows_region(value),
        _ => true,
    });
    if !allowed {
        return;
    }
    if dimension == "model" && entry.is_some_and(|c| !c.allowed_models.is_empty()) {
        a.suppressed = Some(format!("the inventory allows model {value}"));
        return;
    }
    let (group, peers) = peers::learned_peers(b, inv, &a.credential_id, a.principal.as_deref());
    let users: Vec<&str> =
        peers.iter().filter(|p| b.used(&p.credential_id, dimension, value)).map(|p| p.credential_id.as_str()).collect();
    if users.len() >= MIN_PEERS {
        let what = dimension.replace('_', " ");
        a.suppressed = Some(format!(
            "peers already use it: {what} {value} is used by {} of {} credentials of {group} ({}{})",
            users.len(),
            peers.len(),
            users.iter().take(3).copied().collect::<Vec<_>>().join(", "),
            if users.len() > 3 { ", …" } else { "" }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_group_by_directory() {
        assert_eq!(group_key("resource_outside_scope", "s3://finance/2026/q1.csv"), "s3://finance/2026/");
        assert_eq!(group_key("model_outside_scope", "gpt-4.5"), "gpt-4.5");
    }
}

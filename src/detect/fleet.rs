//! Fleet findings: the same change on many credentials at once (a model new
//! to a whole team, throttling across a provider's keys, a new network after
//! a NAT change) is one finding that lists the credentials, not N alerts.
//!
//! Alerts of one detector, finding and subject on at least [`MIN_CREDENTIALS`]
//! distinct credentials within one window (the hour for retry storms, which
//! are moments; the day for the rest) fold into one alert of finding
//! `fleet_<finding>` on credential [`FLEET`]. It keeps the highest severity of
//! its members — a fleet-wide spike from one new network stays critical.
//!
//! The members are kept, suppressed with the reason
//! `part of fleet finding <id>`: analysts still see them in the lake, and
//! `eval` counts them for their credentials. Folding is idempotent, so the
//! streaming mode may fold a day's alerts again at every pass.
//!
//! A fleet finding is one incident with what its members' credentials did
//! around it ([`join_incidents`]): the members, and the incidents of the
//! member credentials' own alerts within [`alert::INCIDENT_GAP_MS`] of its
//! window (the spike that came with a team's new model, say), join the
//! fleet finding's incident. Two fleet findings share one only through
//! such a member incident, not for sharing the credential [`FLEET`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::alert::{self, Alert, MAX_EVIDENCE};
use crate::time::{DAY_MS, HOUR_MS};

/// Distinct credentials from which the same finding is a fleet finding.
/// Below it, a handful of credentials are each worth their own alert.
pub const MIN_CREDENTIALS: usize = 5;
/// The `credential_id` of fleet alerts.
pub const FLEET: &str = "fleet";
/// Prefix of fleet alerts' findings.
pub const FINDING_PREFIX: &str = "fleet_";
/// Prefix of the suppression reason of a fleet finding's members.
pub const MEMBER_PREFIX: &str = "part of fleet finding ";
/// Credentials named in a fleet alert's `observed`; the count says how many.
const LISTED: usize = 20;

/// Credential-level findings (a stale key, an owner missing) stand alone.
const STANDALONE: &[&str] = &["governance"];

/// Folds fleet-wide findings among `alerts` (see the module docs). Alerts
/// already suppressed by a rule stay out; earlier fleet alerts and member
/// marks are dropped first and made again.
pub fn fold(alerts: Vec<Alert>) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = alerts.into_iter().filter(|a| !a.finding.starts_with(FINDING_PREFIX)).collect();
    for a in &mut alerts {
        if a.suppressed.as_deref().is_some_and(|s| s.starts_with(MEMBER_PREFIX)) {
            a.suppressed = None;
        }
    }
    let mut groups: BTreeMap<(String, String, String, i64), Vec<usize>> = BTreeMap::new();
    for (i, a) in alerts.iter().enumerate() {
        let Some(subject) = a.subject.as_deref() else { continue };
        if a.suppressed.is_some() || STANDALONE.contains(&a.detector.as_str()) {
            continue;
        }
        let key = (a.detector.clone(), a.finding.clone(), subject.to_string(), window_of(a));
        groups.entry(key).or_default().push(i);
    }
    let mut fleet = Vec::new();
    for ((detector, finding, subject, window), members) in groups {
        let creds: BTreeSet<&str> = members.iter().map(|&i| alerts[i].credential_id.as_str()).collect();
        if creds.len() < MIN_CREDENTIALS {
            continue;
        }
        let f = fleet_alert(
            &detector,
            &finding,
            &subject,
            window,
            &members.iter().map(|&i| &alerts[i]).collect::<Vec<_>>(),
        );
        for &i in &members {
            alerts[i].suppressed = Some(format!("{MEMBER_PREFIX}{}", f.alert_id));
        }
        fleet.push(f);
    }
    alerts.extend(fleet);
    alerts
}

/// Joins each fleet finding's incident with its members' (see the module
/// docs). Runs after [`alert::assign_incidents`]; the joined incident is
/// named after the fleet finding (the first by id, if it joins several).
pub fn join_incidents(alerts: &mut [Alert]) {
    let fleets: Vec<usize> = (0..alerts.len())
        .filter(|&i| alerts[i].credential_id == FLEET && alerts[i].suppressed.is_none())
        .filter(|&i| alerts[i].finding.starts_with(FINDING_PREFIX))
        .collect();
    if fleets.is_empty() {
        return;
    }
    // Each fleet finding starts an incident of its own: sharing the credential `fleet` relates nothing.
    for &f in &fleets {
        alerts[f].incident_id = Some(alert::incident_named_after(&alerts[f]));
    }
    let own: BTreeSet<String> = fleets.iter().map(|&f| alert::incident_named_after(&alerts[f])).collect();
    // Incident id → the incident it joined.
    let mut joined: HashMap<String, String> = HashMap::new();
    let root = |joined: &HashMap<String, String>, id: &str| {
        let mut id = id.to_string();
        while let Some(next) = joined.get(&id) {
            id = next.clone();
        }
        id
    };
    let mut members: HashMap<String, String> = HashMap::new(); // suppression reason → fleet incident
    for &f in &fleets {
        let fleet = &alerts[f];
        let own_id = alert::incident_named_after(fleet);
        let reason = format!("{MEMBER_PREFIX}{}", fleet.alert_id);
        let creds: BTreeSet<&str> = alerts
            .iter()
            .filter(|a| a.suppressed.as_deref() == Some(reason.as_str()))
            .map(|a| a.credential_id.as_str())
            .collect();
        let (from, to) = (fleet.window_start_ms - alert::INCIDENT_GAP_MS, fleet.window_end_ms + alert::INCIDENT_GAP_MS);
        let near: Vec<String> = alerts
            .iter()
            .filter(|a| a.suppressed.is_none() && creds.contains(a.credential_id.as_str()))
            .filter(|a| a.window_start_ms <= to && from <= a.window_end_ms)
            .filter_map(|a| a.incident_id.clone())
            .collect();
        for id in near {
            let (a, b) = (root(&joined, &own_id), root(&joined, &id));
            // Fleet findings' incidents win a join, the first by id among them.
            let rank = |x: &String| (!own.contains(x), x.clone());
            let (win, lose) = if rank(&a) <= rank(&b) { (a, b) } else { (b, a) };
            if win != lose {
                joined.insert(lose, win);
            }
        }
        members.insert(reason, own_id);
    }
    for a in alerts.iter_mut() {
        let id = match a.suppressed.as_deref() {
            None => a.incident_id.as_deref(),
            Some(reason) => members.get(reason).map(String::as_str),
        };
        if let Some(id) = id {
            a.incident_id = Some(root(&joined, id));
        }
    }
}

/// The start of the window an alert is grouped in.
fn window_of(a: &Alert) -> i64 {
    let width = if a.detector == "retry_storm" { HOUR_MS } else { DAY_MS };
    a.window_start_ms.div_euclid(width) * width
}

fn fleet_alert(detector: &str, finding: &str, subject: &str, window: i64, members: &[&Alert]) -> Alert {
    let mut members = members.to_vec();
    members.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.credential_id.cmp(&b.credential_id)));
    let top = members[0];
    let creds: BTreeSet<&str> = members.iter().map(|a| a.credential_id.as_str()).collect();
    let listed: Vec<&str> = creds.iter().take(LISTED).copied().collect();
    let more = if creds.len() > LISTED { format!(" and {} more", creds.len() - LISTED) } else { String::new() };
    // Evidence from every member in turn, so the sample shows the spread.
    let mut evidence = Vec::new();
    for depth in 0.. {
        let before = evidence.len();
        evidence.extend(members.iter().filter_map(|a| a.evidence.get(depth)).cloned());
        if evidence.len() == before || evidence.len() >= MAX_EVIDENCE {
            break;
        }
    }
    evidence.truncate(MAX_EVIDENCE);
    let fleet_finding = format!("{FINDING_PREFIX}{finding}");
    Alert {
        alert_id: alert::alert_id(detector, &format!("{FLEET}:{subject}"), &fleet_finding, window),
        detector: detector.to_string(),
        finding: fleet_finding,
        severity: top.severity,
        score: members.iter().map(|a| a.score).fold(f64::MIN, f64::max),
        credential_id: FLEET.to_string(),
        principal: None,
        window_start_ms: members.iter().map(|a| a.window_start_ms).min().unwrap_or(window),
        window_end_ms: members.iter().map(|a| a.window_end_ms).max().unwrap_or(window),
        explanation: format!(
            "{} credentials showed the same {} ({subject}) at once; the most severe: {}",
            creds.len(),
            finding.replace('_', " "),
            top.explanation
        ),
        observed: format!("{} credentials: {}{more}", creds.len(), listed.join(", ")),
        baseline: top.baseline.clone(),
        evidence,
        evidence_count: members.iter().map(|a| a.evidence_count).sum(),
        mitre_attack: top.mitre_attack.clone(),
        owasp_nhi: top.owasp_nhi.clone(),
        subject: Some(subject.to_string()),
        incident_id: None,
        suppressed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    const DAY: i64 = 1_764_460_800_000; // 2025-11-30T00:00Z

    fn first_model(cred: &str, at: i64, severity: Severity) -> Alert {
        let finding = "first_seen_model";
        Alert {
            alert_id: alert::alert_id("out_of_scope", cred, finding, at),
            detector: "out_of_scope".into(),
            finding: finding.into(),
            severity,
            score: 1.0,
            credential_id: cred.into(),
            principal: None,
            window_start_ms: at,
            window_end_ms: at + 1000,
            explanation: format!("{cred} used a new model"),
            observed: "1 request".into(),
            baseline: "never before".into(),
            evidence: vec![format!("{cred}-r1"), format!("{cred}-r2")],
            evidence_count: 2,
            mitre_attack: None,
            owasp_nhi: None,
            subject: Some("claude-opus".into()),
            incident_id: None,
            suppressed: None,
        }
    }

    fn team(n: usize) -> Vec<Alert> {
        (0..n)
            .map(|i| {
                let sev = if i == 3 { Severity::Critical } else { Severity::Medium };
                first_model(&format!("k{i}"), DAY + i as i64 * HOUR_MS, sev)
            })
            .collect()
    }

    #[test]
    fn five_credentials_with_one_new_model_are_one_finding() {
        let out = fold(team(5));
        let fleet: Vec<&Alert> = out.iter().filter(|a| a.suppressed.is_none()).collect();
        assert_eq!(fleet.len(), 1, "{out:#?}");
        let f = fleet[0];
        assert_eq!(
            (f.detector.as_str(), f.finding.as_str(), f.credential_id.as_str()),
            ("out_of_scope", "fleet_first_seen_model", FLEET)
        );
        assert_eq!(f.severity, Severity::Critical, "the highest of its members");
        assert!(f.observed.starts_with("5 credentials: k0, k1, k2, k3, k4"), "{}", f.observed);
        assert_eq!(f.evidence_count, 10);
        assert!(f.evidence.contains(&"k0-r1".to_string()) && f.evidence.contains(&"k4-r1".to_string()));
        assert_eq!((f.window_start_ms, f.window_end_ms), (DAY, DAY + 4 * HOUR_MS + 1000));
        let reason = format!("{MEMBER_PREFIX}{}", f.alert_id);
        assert_eq!(out.iter().filter(|a| a.suppressed.as_deref() == Some(reason.as_str())).count(), 5);
    }

    #[test]
    fn folding_again_gives_the_same_alerts() {
        let once = fold(team(6));
        assert_eq!(fold(once.clone()), once);
    }

    #[test]
    fn few_credentials_other_days_or_subjects_stand_alone() {
        assert_eq!(fold(team(2)), team(2));
        let mut spread = team(5);
        spread[4].window_start_ms += DAY_MS;
        spread[3].subject = Some("gpt-5".into());
        spread[2].suppressed = Some("load test".into());
        assert!(fold(spread).iter().all(|a| !a.finding.starts_with(FINDING_PREFIX)));
        // The same credential five times is not a fleet.
        let one: Vec<Alert> = (0..5).map(|i| first_model("k", DAY + i * HOUR_MS, Severity::Low)).collect();
        assert_eq!(fold(one.clone()), one);
    }

    #[test]
    fn ids_are_stable_per_subject_and_window() {
        let a = fold(team(5)).pop().unwrap();
        let mut later = team(5);
        for x in &mut later {
            x.window_start_ms += DAY_MS;
        }
        let b = fold(later).pop().unwrap();
        assert_eq!(a.alert_id, fold(team(5)).pop().unwrap().alert_id);
        assert_ne!(a.alert_id, b.alert_id);
    }

    /// Two fleet findings of one day are two incidents, each joined by its
    /// members' own alerts in its window; a member's alert days later is not.
    #[test]
    fn a_fleet_finding_is_one_incident_with_its_members_own_alerts() {
        let mut alerts = team(5);
        alerts.extend((0..5).map(|i| {
            let mut a = first_model(&format!("j{i}"), DAY + i as i64 * HOUR_MS, Severity::Low);
            a.subject = Some("o3".into());
            a
        }));
        let spike = |at: i64| {
            let mut a = first_model("k3", at, Severity::High);
            (a.detector, a.finding, a.subject) = ("billing_spike".into(), "spend_spike".into(), Some("tokens".into()));
            a.alert_id = alert::alert_id("billing_spike", "k3", "spend", at);
            a
        };
        alerts.push(spike(DAY + 3 * HOUR_MS + 60_000));
        alerts.push(spike(DAY + 3 * DAY_MS));
        let mut out = fold(alerts);
        alert::assign_incidents(&mut out);
        join_incidents(&mut out);
        let incident = |f: &dyn Fn(&Alert) -> bool| -> BTreeSet<Option<String>> {
            out.iter().filter(|a| f(a)).map(|a| a.incident_id.clone()).collect()
        };
        let opus = incident(&|a| a.credential_id == FLEET && a.subject.as_deref() == Some("claude-opus"));
        let o3 = incident(&|a| a.credential_id == FLEET && a.subject.as_deref() == Some("o3"));
        assert_eq!(opus.len(), 1);
        assert_ne!(opus, o3, "unrelated fleet findings are apart");
        assert_eq!(incident(&|a| a.detector == "billing_spike" && a.window_start_ms < DAY + DAY_MS), opus);
        assert_eq!(incident(&|a| a.credential_id.starts_with('k') && a.detector == "out_of_scope"), opus, "members");
        assert_ne!(incident(&|a| a.detector == "billing_spike" && a.window_start_ms > DAY + DAY_MS), opus);
        assert_eq!(alert::incidents(&out).len(), 3, "{out:#?}");
    }
}

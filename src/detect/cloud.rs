//! Cloud control-plane techniques, by behaviour: AWS API calls matched
//! against risk tiers (`models/api_risk.toml`), each judged against the
//! credential's own history and its peers', and instance-profile sessions
//! used off their instance.
//!
//! - A first use: a credential calls a tiered API that neither it nor any
//!   peer called in the learned history. Peers are the other credentials of
//!   the same principal (the keys of one IAM user; for a role, whose session
//!   keys all count as the role, the role itself): an admin whose every key
//!   rotates IAM users daily does not alert when a new key does it too. With
//!   no history at all (cold start) every tiered call is a first use.
//! - A burst: a spree over one `burst` API (many different secrets in
//!   minutes) alerts even for a credential that uses the API every day.
//! - An instance-profile session (role session named `i-<hex>`, the name EC2
//!   gives it) seen from two networks in a day, or from a public network the
//!   role never used: its keys were copied off the instance.
//!
//! Alerts group per credential, ATT&CK technique (or session) and day.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use arrow::array::RecordBatch;
use serde::Deserialize;

use super::{Context, DetectError};
use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::columns;
use crate::net::is_public;
use crate::pattern::name_matches;

const FAMILY: &str = "cloud_api_risk";
/// A burst: this many different resources (or calls naming none) of one
/// burst API within [`BURST_WINDOW_MS`]. A service rereads its own handful of
/// secrets; ten different ones in five minutes is someone enumerating them.
const BURST_RESOURCES: usize = 10;
const BURST_WINDOW_MS: i64 = 5 * 60_000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Tier {
    Medium,
    High,
}

/// Whether a tier file's API is `service:EventName` (globs allowed): a
/// mistyped one would silently never match, so loading refuses it.
fn is_api_pattern(s: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._".contains(&b));
    s.split_once(':').is_some_and(|(service, name)| part(service) && part(name))
}

/// One `[[api]]` entry of the tier file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// `service:EventName` globs, with where each sits in the file (for errors).
    apis: Vec<toml::Spanned<String>>,
    /// Substrings that must all appear in the call's requestParameters.
    #[serde(default)]
    when: Vec<String>,
    tactic: String,
    technique: String,
    tier: Tier,
    #[serde(default)]
    burst: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    api: Vec<Entry>,
}

/// The API risk tiers (`models/api_risk.toml`).
#[derive(Debug)]
pub struct ApiRisk {
    entries: Vec<Entry>,
}

/// The built-in tiers, parsed once.
static BUILTIN: LazyLock<ApiRisk> =
    LazyLock::new(|| ApiRisk::parse(include_str!("../../models/api_risk.toml")).expect("the built-in API tiers parse"));

impl ApiRisk {
    pub fn builtin() -> &'static ApiRisk {
        &BUILTIN
    }

    /// A user's tier file (`--api-risk`), in the format of `models/api_risk.toml`.
    pub fn load(path: &std::path::Path) -> Result<ApiRisk, DetectError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| DetectError::Query { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|error| DetectError::ApiRisk { path: path.to_path_buf(), error })
    }

    pub fn parse(text: &str) -> Result<ApiRisk, toml::de::Error> {
        let f: TierFile = toml::from_str(text)?;
        if let Some(p) = f.api.iter().flat_map(|e| &e.apis).find(|p| !is_api_pattern(p.get_ref())) {
            let line = text[..p.span().start].lines().count().max(1);
            return Err(serde::de::Error::custom(format!(
                "line {line}: {:?} is not an API: expected service:EventName (the eventSource without \
                 .amazonaws.com, e.g. \"iam:CreateUser\"; letters, digits, '-', '.', '_' and '*' globs)",
                p.get_ref()
            )));
        }
        // An entry without APIs, or with an empty condition, would never fire or always fire.
        if let Some(e) = f.api.iter().find(|e| e.apis.is_empty() || e.when.iter().any(String::is_empty)) {
            return Err(serde::de::Error::custom(format!(
                "the [[api]] entry of {:?} needs at least one API in `apis` and no empty `when` string",
                e.technique
            )));
        }
        Ok(ApiRisk { entries: f.api })
    }

    /// The first entry matching a call (`service:EventName`) and its requestParameters.
    fn matching(&self, tool: &str, params: Option<&str>) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.apis.iter().any(|p| name_matches(p.get_ref(), tool))
                && e.when.iter().all(|w| params.is_some_and(|p| p.contains(w.as_str())))
        })
    }

    /// A SQL condition on `column` that holds for every call some entry names
    /// (`when` is left to [`ApiRisk::matching`]), so the detector's query hands
    /// Rust its candidates only rather than every CloudTrail call. Patterns are
    /// plain names and `*` globs (checked on load): nothing to quote.
    pub fn sql_filter(&self, column: &str) -> String {
        let (globs, names): (BTreeSet<&str>, BTreeSet<&str>) =
            self.entries.iter().flat_map(|e| &e.apis).map(|p| p.get_ref().as_str()).partition(|p| p.contains('*'));
        let mut terms: Vec<String> = Vec::new();
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            terms.push(format!("{column} IN ({})", list.join(", ")));
        }
        // `_` is LIKE's one-character wildcard: it can only let more calls through to the exact match.
        terms.extend(globs.iter().map(|g| format!("{column} LIKE '{}'", g.replace('*', "%"))));
        if terms.is_empty() { "false".into() } else { format!("({})", terms.join(" OR ")) }
    }
}

/// One CloudTrail call of the query, with what the history says about it.
struct Call {
    ts: i64,
    request_id: Option<String>,
    ip: Option<String>,
    /// The caller's network (`caller_network`): none for a call AWS relayed.
    network: Option<String>,
    tool: String,
    resource: Option<String>,
    failed: bool,
    /// The tier of the entry this call matched, and whether it is a burst API:
    /// one technique can hold calls of different tiers (an admin policy attached, or another).
    tier: Tier,
    burst: bool,
    has_history: bool,
    own_used: bool,
    peers_used: i64,
    network_known: bool,
}

/// The session name EC2 gives an instance profile's role session: `i-` and
/// the instance id's hex digits.
fn instance_session(session_id: &str) -> Option<&str> {
    let name = session_id.split('/').next()?;
    let hex = name.strip_prefix("i-")?;
    (matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Whether some window of [`BURST_WINDOW_MS`] holds [`BURST_RESOURCES`]
/// different resources (calls are sorted by time).
fn burst(calls: &[&Call]) -> bool {
    let mut start = 0;
    for end in 0..calls.len() {
        while calls[end].ts - calls[start].ts > BURST_WINDOW_MS {
            start += 1;
        }
        let distinct: BTreeSet<&str> =
            calls[start..=end].iter().filter_map(|c| c.resource.as_deref().or(c.request_id.as_deref())).collect();
        if distinct.len() >= BURST_RESOURCES {
            return true;
        }
    }
    false
}

fn lower(s: Severity) -> Severity {
    match s {
        Severity::Critical => Severity::High,
        Severity::High => Severity::Medium,
        _ => Severity::Low,
    }
}

pub(super) fn score(cx: &Context<'_>, q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    score_with(cx.api_risk, cx.baseline.map(|b| b.until.as_str()), q, batches)
}

type Key<'t> = (String, &'t str, String);

columns::row! {
    /// One cloud API call of the detector's query.
    struct CallRow {
        credential_id: text,
        principal: text,
        session_id: text,
        request_id: text,
        source_ip: text,
        network: text,
        tool: text,
        resource: text,
        detail: text,
        ts: time,
        status: int,
        has_history: bool,
        own_used: bool,
        network_known: bool,
        peers_used: int,
    }
}

fn score_with(
    tiers: &ApiRisk,
    until: Option<&str>,
    q: &str,
    batches: &[RecordBatch],
) -> Result<Vec<Alert>, DetectError> {
    let mut tiered: BTreeMap<Key, (Option<String>, &Entry, Vec<Call>)> = BTreeMap::new();
    let mut sessions: BTreeMap<Key, (Option<String>, Vec<Call>)> = BTreeMap::new();
    for r in columns::rows::<CallRow>(batches, q) {
        let r = r?;
        let (Some(c), Some(t), Some(ts)) = (&r.credential_id, &r.tool, r.ts) else { continue };
        let call = |tier, burst| Call {
            ts,
            request_id: r.request_id.clone(),
            ip: r.source_ip.clone(),
            network: r.network.clone(),
            tool: t.clone(),
            resource: r.resource.clone(),
            failed: r.status.is_some_and(|s| s >= 400),
            tier,
            burst,
            has_history: r.has_history.unwrap_or(false),
            own_used: r.own_used.unwrap_or(false),
            peers_used: r.peers_used.unwrap_or(0),
            network_known: r.network_known.unwrap_or(false),
        };
        let day = crate::time::day_of(ts);
        if let Some(e) = tiers.matching(t, r.detail.as_deref()) {
            let key = (c.clone(), e.technique.as_str(), day.clone());
            tiered.entry(key).or_insert_with(|| (r.principal.clone(), e, Vec::new())).2.push(call(e.tier, e.burst));
        }
        if let Some(name) = r.session_id.as_deref().and_then(instance_session)
            && r.source_ip.as_deref().and_then(crate::net::parse_ip).is_some()
        {
            let key = (c.clone(), "", format!("{name}\u{1f}{day}"));
            sessions.entry(key).or_insert_with(|| (r.principal.clone(), Vec::new())).1.push(call(Tier::Medium, false));
        }
    }
    let mut out = Vec::new();
    for ((cred, technique, _), (principal, entry, mut calls)) in tiered {
        calls.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
        if let Some(a) = judge_tiered(&cred, principal, technique, entry, &calls, until) {
            out.push(a);
        }
    }
    for ((cred, _, session), (principal, mut calls)) in sessions {
        calls.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
        let name = session.split('\u{1f}').next().unwrap_or_default();
        if let Some(a) = judge_instance(&cred, principal, name, &calls) {
            out.push(a);
        }
    }
    Ok(out)
}

fn ips(calls: &[Call]) -> String {
    let set: BTreeSet<&str> = calls.iter().filter_map(|c| c.ip.as_deref()).collect();
    if set.is_empty() { "an unknown address".into() } else { set.into_iter().take(3).collect::<Vec<_>>().join(", ") }
}

/// What was judged of a credential's calls, in words and grades, before it
/// is an alert.
struct Verdict<'a> {
    finding: &'a str,
    subject: &'a str,
    severity: Severity,
    mitre: &'a str,
    observed: String,
    baseline: String,
    explanation: String,
}

fn build(cred: &str, principal: Option<String>, calls: &[Call], v: Verdict) -> Alert {
    let (first, last) = (&calls[0], &calls[calls.len() - 1]);
    let Verdict { finding, subject, severity, mitre, observed, baseline, explanation } = v;
    Alert {
        alert_id: alert::alert_id(FAMILY, cred, &format!("{finding}:{subject}"), first.ts),
        detector: FAMILY.into(),
        finding: finding.to_string(),
        severity,
        score: 1.0,
        principal,
        credential_id: cred.to_string(),
        window_start_ms: first.ts,
        window_end_ms: last.ts,
        explanation,
        observed,
        baseline,
        evidence: calls.iter().filter_map(|c| c.request_id.clone()).take(MAX_EVIDENCE).collect(),
        evidence_count: calls.len() as u64,
        mitre_attack: Some(mitre.into()),
        owasp_nhi: Some("NHI5:2025 Overprivileged NHI".into()),
        subject: Some(subject.to_string()),
        incident_id: None,
        suppressed: None,
    }
}

/// A technique's calls of one credential and day: a first use, a burst, or nothing.
fn judge_tiered(
    cred: &str,
    principal: Option<String>,
    technique: &str,
    e: &Entry,
    calls: &[Call],
    until: Option<&str>,
) -> Option<Alert> {
    let new: Vec<&Call> = calls.iter().filter(|c| !c.own_used && c.peers_used == 0).collect();
    let spree = {
        let bursty: Vec<&Call> = calls.iter().filter(|c| c.burst).collect();
        burst(&bursty)
    };
    if new.is_empty() && !spree {
        return None;
    }
    let severity_of = |c: &Call| {
        let tier = match c.tier {
            Tier::High => Severity::High,
            Tier::Medium => Severity::Medium,
        };
        // A refused call is an attempt: one grade lower than one that worked.
        if c.failed { lower(tier) } else { tier }
    };
    let first_use = new.iter().map(|c| severity_of(c)).max();
    let severity = if spree { Severity::High.max(first_use.unwrap_or(Severity::Low)) } else { first_use? };
    let apis: BTreeSet<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
    let apis = apis.into_iter().collect::<Vec<_>>().join(", ");
    let n = calls.len();
    let failed = calls.iter().filter(|c| c.failed).count();
    let refused = if failed > 0 { format!(" ({failed} refused)") } else { String::new() };
    let against = match (until, new.first()) {
        (_, None) => "its own and its peers' history: used routinely".to_string(),
        (None, _) => "cold start: the lake holds no history before this day".to_string(),
        (Some(u), Some(c)) if !c.has_history => {
            format!(
                "no history for this credential; no other credential of its principal called it (baseline until {u})"
            )
        }
        (Some(u), Some(_)) => {
            format!("never called by this credential nor by other credentials of its principal (baseline until {u})")
        }
    };
    let what = if spree {
        format!("a burst of {apis} ({n} calls, {BURST_RESOURCES}+ different resources within 5 minutes)")
    } else {
        format!("a first use of {apis}")
    };
    let finding = if spree && new.is_empty() { "sensitive_api_burst" } else { "high_risk_api_first_use" };
    let verdict = Verdict {
        finding,
        subject: technique.split(' ').next().unwrap_or(technique),
        severity,
        mitre: technique,
        observed: format!("{n} × {apis}{refused}"),
        explanation: format!(
            "{cred} made {what}{refused} from {}: {} ({}); judged against {against}",
            ips(calls),
            technique,
            e.tactic
        ),
        baseline: against,
    };
    Some(build(cred, principal, calls, verdict))
}

/// An instance-profile session's calls of one day: flagged when they come
/// from two networks, or from a public network the role's history lacks.
fn judge_instance(cred: &str, principal: Option<String>, session: &str, calls: &[Call]) -> Option<Alert> {
    let nets: BTreeSet<&str> = calls.iter().filter_map(|c| c.network.as_deref()).collect();
    // A public address is never a relay of AWS's, so it always has a caller network.
    let unknown: Vec<&Call> =
        calls.iter().filter(|c| c.has_history && !c.network_known && c.ip.as_deref().is_some_and(is_public)).collect();
    let why = if nets.len() >= 2 {
        format!("an instance has one address, yet this session came from {} networks", nets.len())
    } else if !unknown.is_empty() {
        "a public network the role's instance sessions never used".to_string()
    } else {
        return None;
    };
    let n = calls.len();
    let verdict = Verdict {
        finding: "instance_credentials_off_instance",
        subject: session,
        severity: Severity::High,
        mitre: "T1552.005 Unsecured Credentials: Cloud Instance Metadata API",
        observed: format!("{n} calls of instance session {session} from {}", ips(calls)),
        explanation: format!(
            "instance-profile credentials of {session} ({cred}) were used from {}: {why}; they were likely taken \
             from the instance metadata service and used elsewhere",
            ips(calls)
        ),
        baseline: why,
    };
    Some(build(cred, principal, calls, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ts: i64, resource: &str, own_used: bool, peers_used: i64) -> Call {
        Call {
            ts,
            request_id: Some(format!("r{ts}")),
            ip: Some("198.51.100.7".into()),
            network: Some("198.51.100.0/24".into()),
            tool: "secretsmanager:GetSecretValue".into(),
            resource: Some(resource.into()),
            failed: false,
            tier: Tier::Medium,
            burst: true,
            has_history: true,
            own_used,
            peers_used,
            network_known: true,
        }
    }

    fn entry(tool: &str) -> &'static Entry {
        BUILTIN.matching(tool, None).unwrap()
    }

    #[test]
    fn tiers_match_apis_and_conditions() {
        let t = &*BUILTIN;
        assert_eq!(t.matching("iam:CreateAccessKey", None).unwrap().technique.split(' ').next(), Some("T1098.001"));
        assert!(t.matching("iam:AttachUserPolicy", None).is_some(), "any attachment is tiered");
        assert!(t.matching("iam:ListUsers", None).is_none(), "reads are not tiered");
        let share = r#"{"createVolumePermission":{"add":{"items":[{"userId":"1"}]}}}"#;
        let unshare = r#"{"createVolumePermission":{"remove":{"items":[{"userId":"1"}]}}}"#;
        assert_eq!(t.matching("ec2:ModifySnapshotAttribute", Some(share)).unwrap().tactic, "exfiltration");
        assert!(t.matching("ec2:ModifySnapshotAttribute", Some(unshare)).is_none());
        assert!(t.matching("ec2:ModifySnapshotAttribute", None).is_none(), "a condition needs parameters");
        assert!(t.matching("ssm:GetParameters", Some(r#"{"names":["a"],"withDecryption":true}"#)).is_some());
        assert!(t.matching("ssm:GetParameters", Some(r#"{"names":["a"]}"#)).is_none());
    }

    #[test]
    fn defense_evasion_calls_are_left_to_their_detector() {
        for tool in ["cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "bedrock:DeleteGuardrail"] {
            assert!(include_str!("../../queries/defense_evasion.sql").contains(tool));
            assert!(BUILTIN.matching(tool, None).is_none(), "{tool} would alert twice");
        }
    }

    #[test]
    fn first_use_against_own_peers_and_cold_start() {
        let e = entry("iam:CreateUser");
        let c = |own, peers| Call { tier: e.tier, burst: e.burst, ..call(0, "u", own, peers) };
        assert!(judge_tiered("k", None, "T1136.003 x", e, &[c(true, 0)], Some("2026-01-01")).is_none());
        assert!(judge_tiered("k", None, "T1136.003 x", e, &[c(false, 2)], Some("2026-01-01")).is_none(), "peers do it");
        let a = judge_tiered("k", None, "T1136.003 x", e, &[c(false, 0)], Some("2026-01-01")).unwrap();
        assert_eq!(a.severity, Severity::High);
        assert!(a.baseline.contains("never called"), "{}", a.baseline);
        let cold = judge_tiered("k", None, "T1136.003 x", e, &[c(false, 0)], None).unwrap();
        assert!(cold.baseline.starts_with("cold start"));
        let mut refused = c(false, 0);
        refused.failed = true;
        assert_eq!(judge_tiered("k", None, "T", e, &[refused], None).unwrap().severity, Severity::Medium);
    }

    #[test]
    fn a_routine_api_alerts_only_as_a_burst() {
        let e = entry("secretsmanager:GetSecretValue");
        let same: Vec<Call> = (0..30).map(|i| call(i * 1000, "db", true, 0)).collect();
        assert!(judge_tiered("k", None, "T", e, &same, Some("d")).is_none(), "one secret reread");
        let slow: Vec<Call> = (0..30).map(|i| call(i * 3_600_000, &format!("s{i}"), true, 0)).collect();
        assert!(judge_tiered("k", None, "T", e, &slow, Some("d")).is_none(), "spread over the day");
        let spree: Vec<Call> = (0..12).map(|i| call(i * 1000, &format!("s{i}"), true, 0)).collect();
        let a = judge_tiered("k", None, "T", e, &spree, Some("d")).unwrap();
        assert_eq!((a.finding.as_str(), a.severity), ("sensitive_api_burst", Severity::High));
    }

    #[test]
    fn instance_sessions() {
        assert_eq!(instance_session("i-0abc1234def567890/ASIAX"), Some("i-0abc1234def567890"));
        assert_eq!(instance_session("i-786a3A8B5C0d92eF4/ASIAX"), Some("i-786a3A8B5C0d92eF4"));
        assert_eq!(instance_session("deploy-bot/ASIAX"), None);
        assert_eq!(instance_session("i-nothex00/ASIAX"), None);
        let at = |ip: &str, known| Call {
            ip: Some(ip.into()),
            network: crate::engine::udf::network_of(ip),
            network_known: known,
            ..call(0, "x", true, 0)
        };
        assert!(judge_instance("r", None, "i-1", &[at("10.0.0.5", true), at("10.0.0.5", true)]).is_none());
        assert!(judge_instance("r", None, "i-1", &[at("10.0.0.5", true), at("203.0.113.9", true)]).is_some());
        assert!(judge_instance("r", None, "i-1", &[at("203.0.113.9", false)]).is_some(), "a public network never used");
        assert!(judge_instance("r", None, "i-1", &[at("10.1.2.3", false)]).is_none(), "a new private subnet");
        // A call AWS relayed for the session has no caller network: not a second one.
        let relayed = Call { network: None, ..at("10.8.8.10", false) };
        assert!(judge_instance("r", None, "i-1", &[at("10.0.0.5", true), relayed]).is_none());
    }

    #[test]
    fn an_alert_takes_the_tier_of_its_riskiest_call() {
        let t = &*BUILTIN;
        let admin = r#"{"policyArn":"arn:aws:iam::aws:policy/AdministratorAccess","userName":"u"}"#;
        let reader = r#"{"policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess","userName":"u"}"#;
        let high = t.matching("iam:AttachUserPolicy", Some(admin)).unwrap();
        let medium = t.matching("iam:AttachUserPolicy", Some(reader)).unwrap();
        assert_eq!((high.tier, medium.tier), (Tier::High, Tier::Medium));
        assert_eq!(high.technique, medium.technique, "one technique, one alert");
        let c = |ts, e: &Entry| Call { tier: e.tier, burst: e.burst, ..call(ts, "u", false, 0) };
        let a = judge_tiered("k", None, "T1098.003 x", medium, &[c(0, medium), c(1, high)], None).unwrap();
        assert_eq!(a.severity, Severity::High, "the admin policy attached second still counts");
        let a = judge_tiered("k", None, "T1098.003 x", medium, &[c(0, medium)], None).unwrap();
        assert_eq!(a.severity, Severity::Medium);
        assert!(t.matching("iam:PutPolicy", None).is_none(), "inline policy calls are named, not globbed");
    }

    #[test]
    fn a_user_tier_file_is_checked_and_becomes_a_sql_filter() {
        let apis = "apis = [\"iam:CreateUser\", \"lambda:Update*\"]";
        let ok = format!("[[api]]\ntactic = \"t\"\ntechnique = \"T1 x\"\ntier = \"high\"\n{apis}\n");
        let ok = ok.as_str();
        let tiers = ApiRisk::parse(ok).unwrap();
        assert_eq!(tiers.sql_filter("tool"), "(tool IN ('iam:CreateUser') OR tool LIKE 'lambda:Update%')");
        let bad = ok.replace("iam:CreateUser", "iam:Create User");
        let e = ApiRisk::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("is not an API"), "{e}");
        let e = ApiRisk::parse(&ok.replace(apis, "apis = []")).unwrap_err();
        assert!(e.to_string().contains("at least one API"), "{e}");
        let e = ApiRisk::parse(&format!("{ok}severity = \"high\"\n")).unwrap_err();
        assert!(e.to_string().contains("severity"), "unknown keys are typos: {e}");
        // The built-in filter names every tiered API.
        let builtin = ApiRisk::builtin().sql_filter("tool");
        for name in ["'iam:CreateUser'", "'iam:AttachUserPolicy'", "'lambda:UpdateFunctionCode%'"] {
            assert!(builtin.contains(name), "{name} missing from {builtin}");
        }
    }
}

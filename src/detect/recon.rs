//! The cloud-audit path's intrusion chains.
//!
//! LLMjacking: a stolen AWS key is tried against Bedrock — first-ever
//! control-plane calls (is invocation logging on, which models exist, can
//! they be enabled), `InvokeModel` probes failing with
//! `ValidationException`, sometimes the invocation log deleted, then
//! inference from an address the key never used. The steps become one
//! alert (of the tool-chaining family: it is a chain of calls) that lists
//! them in order; out-of-scope and first-seen findings inside it are steps
//! of the same chain and join it.
//!
//! Session-key reuse: a temporary key used from a second network.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;

use super::{Context, DetectError};
use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::columns;
use crate::time::format_ms;

/// The finding of an LLMjacking chain alert.
pub(crate) const RECON_FINDING: &str = "llmjacking_recon";

/// The finding of a session key used from a second network.
const REUSE_FINDING: &str = "session_key_from_second_network";

struct Step {
    ts: i64,
    request_id: Option<String>,
    ip: Option<String>,
    tool: String,
    model: Option<String>,
    kind: String,
}

fn hm(ms: i64) -> String {
    format_ms(ms).get(11..16).unwrap_or("").to_string()
}

/// Runs of the same step (the same call, or inference from one address) as one line.
fn describe(steps: &[&Step]) -> Vec<String> {
    let mut lines: Vec<(String, usize, i64, i64)> = Vec::new();
    for s in steps {
        let what = match s.kind.as_str() {
            "recon" => format!("first-ever {}", s.tool),
            "probe" => format!(
                "{} probe failed with ValidationException{}",
                s.tool,
                s.model.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            "evasion" => format!("defence evasion: {}", s.tool),
            _ => format!(
                "{} from {}, an address it never used{}",
                s.tool,
                s.ip.as_deref().unwrap_or("?"),
                s.model.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
            ),
        };
        match lines.last_mut() {
            Some(l) if l.0 == what => {
                l.1 += 1;
                l.3 = s.ts;
            }
            _ => lines.push((what, 1, s.ts, s.ts)),
        }
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, (what, n, a, b))| match n {
            1 => format!("{}) {} {what}", i + 1, hm(a)),
            _ => format!("{}) {}–{} {what} ×{n}", i + 1, hm(a), hm(b)),
        })
        .collect()
}

columns::row! {
    /// One row of the recon step query.
    struct StepRow {
        credential_id: text,
        principal: text,
        ts: time,
        request_id: text,
        source_ip: text,
        tool: text,
        model: text,
        step: text,
    }
}

pub(super) fn score(cx: &Context<'_>, q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let mut by_cred: BTreeMap<String, (Option<String>, Vec<Step>)> = BTreeMap::new();
    for r in columns::rows::<StepRow>(batches, q) {
        let r = r?;
        let (Some(c), Some(t), Some(k)) = (r.credential_id, r.ts, r.step) else { continue };
        let e = by_cred.entry(c).or_insert_with(|| (r.principal, Vec::new()));
        e.1.push(Step {
            ts: t,
            request_id: r.request_id,
            ip: r.source_ip,
            tool: r.tool.unwrap_or_default(),
            model: r.model,
            kind: k,
        });
    }
    let mapped = cx.rule.mapped(RECON_FINDING, None);
    let mut out = Vec::new();
    for (cred, (principal, mut steps)) in by_cred {
        steps.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
        let Some(first_recon) = steps.iter().position(|s| s.kind == "recon") else { continue };
        // The chain starts at its first recon call; what came before is not part of it.
        let chain: Vec<&Step> = steps[first_recon..].iter().collect();
        let count = |k: &str| chain.iter().filter(|s| s.kind == k).count();
        let recon_tools: std::collections::BTreeSet<&str> =
            chain.iter().filter(|s| s.kind == "recon").map(|s| s.tool.as_str()).collect();
        let (probes, evasion, abuse) = (count("probe"), count("evasion"), count("new_address_inference"));
        // One stray console look is not a chain: two different recon calls, or one with what follows it.
        if recon_tools.len() < 2 && probes + evasion + abuse == 0 {
            continue;
        }
        let severity = if abuse > 0 || evasion > 0 { Severity::Critical } else { Severity::High };
        let start = chain[0].ts;
        let end = chain.last().map_or(start, |s| s.ts);
        let listed = describe(&chain);
        let shown: Vec<String> = if listed.len() > 12 {
            let mut v = listed[..11].to_vec();
            v.push(format!("… {} more step(s)", listed.len() - 11));
            v
        } else {
            listed
        };
        let action = if evasion > 0 {
            "revoke the key, restore Bedrock invocation logging and guardrails, and check the Bedrock bill"
        } else if abuse > 0 {
            "revoke the key and check the Bedrock bill and who holds the key"
        } else {
            "confirm who is exploring Bedrock with this key, or revoke it before it is used for inference"
        };
        let observed = format!(
            "{} first-ever Bedrock control-plane call(s) ({}), {probes} failed InvokeModel probe(s), {evasion} defence-evasion call(s), {abuse} inference call(s) from new addresses",
            recon_tools.len(),
            recon_tools.iter().copied().collect::<Vec<_>>().join(", ")
        );
        let explanation =
            format!("{cred} went through the LLMjacking recon chain on Bedrock: {} — {action}", shown.join("; "));
        let evidence: Vec<String> = chain.iter().filter_map(|s| s.request_id.clone()).collect();
        out.push(Alert {
            alert_id: alert::alert_id(&cx.rule.family, &cred, RECON_FINDING, start),
            detector: cx.rule.family.clone(),
            finding: RECON_FINDING.to_string(),
            severity,
            score: (recon_tools.len() + probes.min(5) + 5 * evasion.min(1) + 5 * abuse.min(1)) as f64,
            credential_id: cred,
            principal,
            window_start_ms: start,
            window_end_ms: end,
            explanation,
            observed,
            baseline: "the key had never called these Bedrock control-plane APIs nor used these addresses in its learned history".into(),
            evidence_count: evidence.len() as u64,
            evidence: evidence.into_iter().take(MAX_EVIDENCE).collect(),
            mitre_attack: mapped.mitre(),
            owasp_nhi: mapped.owasp(),
            subject: recon_tools.first().map(|s| s.to_string()),
            incident_id: None,
            suppressed: None,
        });
    }
    Ok(out)
}

/// Out-of-scope and first-seen alerts of a credential that fall inside its
/// LLMjacking chain are steps of it: they join the chain's alert (named in
/// what it observed) instead of standing alone. Runs before first-seen
/// values are folded into other alerts, so the chain's own first-ever calls
/// stay with it.
pub(super) fn absorb_into_chains(alerts: Vec<Alert>) -> Vec<Alert> {
    const SLACK_MS: i64 = 10 * 60_000;
    let (mut chains, rest): (Vec<Alert>, Vec<Alert>) = alerts.into_iter().partition(|a| a.finding == RECON_FINDING);
    if chains.is_empty() {
        return rest;
    }
    let mut out = Vec::new();
    for a in rest {
        let host = (a.detector == "out_of_scope")
            .then(|| {
                chains.iter_mut().find(|c| {
                    c.credential_id == a.credential_id
                        && a.window_start_ms >= c.window_start_ms - SLACK_MS
                        && a.window_start_ms <= c.window_end_ms + SLACK_MS
                })
            })
            .flatten();
        match host {
            Some(c) => {
                // A first-ever call the chain already lists needs no second mention.
                let subject = a.subject.as_deref().unwrap_or("");
                if subject.is_empty() || !c.explanation.contains(subject) {
                    let what = a.finding.replace('_', " ").replace("first seen", "first-seen");
                    c.observed = format!("{}; {what} {subject}", c.observed);
                }
            }
            None => out.push(a),
        }
    }
    out.extend(chains);
    out
}

/// Session keys used from a second network.
pub(super) fn score_session_reuse(
    cx: &Context<'_>,
    q: &str,
    batches: &[RecordBatch],
) -> Result<Vec<Alert>, DetectError> {
    struct Use {
        principal: Option<String>,
        network: String,
        first: i64,
        last: i64,
        requests: i64,
        ips: Vec<String>,
        evidence: Vec<String>,
        /// First used on the day(s) detected (the look-back day was judged the day before).
        in_range: bool,
    }
    columns::row! {
        struct UseRow {
            credential_id: text,
            session_id: text,
            network: text,
            principal: text,
            first_ts: time,
            last_ts: time,
            requests: int,
            source_ips: texts,
            evidence: texts,
            in_range: bool,
        }
    }
    let mut sessions: BTreeMap<(String, String), Vec<Use>> = BTreeMap::new();
    for r in columns::rows::<UseRow>(batches, q) {
        let r = r?;
        let (Some(c), Some(s), Some(n), Some(f), Some(l)) =
            (r.credential_id, r.session_id, r.network, r.first_ts, r.last_ts)
        else {
            continue;
        };
        sessions.entry((c, s)).or_default().push(Use {
            principal: r.principal,
            network: n,
            first: f,
            last: l,
            requests: r.requests.unwrap_or(0),
            ips: r.source_ips,
            evidence: r.evidence,
            in_range: r.in_range.unwrap_or(false),
        });
    }
    let mapped = cx.rule.mapped(REUSE_FINDING, None);
    let mut out = Vec::new();
    for ((cred, session), mut uses) in sessions {
        uses.sort_by_key(|u| u.first);
        let owner = &uses[0];
        for u in uses.iter().skip(1).filter(|u| u.in_range) {
            let key = session.rsplit('/').next().unwrap_or(&session);
            let explanation = format!(
                "session key {key} of {cred} (session {session}) was used from {} ({}) {} request(s) from {} after it \
                 started on {} ({}) at {}: a temporary key belongs to the host that assumed the role — revoke the \
                 role's active sessions and find where the key leaked",
                u.network,
                u.ips.join(", "),
                u.requests,
                format_ms(u.first),
                owner.network,
                owner.ips.join(", "),
                format_ms(owner.first),
            );
            out.push(Alert {
                alert_id: alert::alert_id(&cx.rule.family, &cred, &session, u.first),
                detector: cx.rule.family.clone(),
                finding: REUSE_FINDING.into(),
                severity: mapped.severity,
                score: u.requests as f64,
                credential_id: cred.clone(),
                principal: u.principal.clone(),
                window_start_ms: u.first,
                window_end_ms: u.last,
                explanation,
                observed: format!("{} request(s) with session key {key} from {}", u.requests, u.network),
                baseline: format!("the session started from {} and was used only from there", owner.network),
                evidence: u.evidence.iter().take(MAX_EVIDENCE).cloned().collect(),
                evidence_count: u.requests.max(0) as u64,
                mitre_attack: mapped.mitre(),
                owasp_nhi: mapped.owasp(),
                subject: Some(key.to_string()),
                incident_id: None,
                suppressed: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};

    use super::*;
    use crate::detect::ToolCategories;

    const T0: i64 = 1_793_869_200_000; // 2026-11-05 09:00 UTC
    const MIN: i64 = 60_000;

    /// A row of the recon query: (credential, minute after T0, ip, tool, model, step).
    type Row<'a> = (&'a str, i64, &'a str, &'a str, Option<&'a str>, &'a str);

    fn batch(rows: &[Row]) -> RecordBatch {
        let text = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
            Arc::new((0..rows.len()).map(f).collect::<StringArray>())
        };
        let ts: TimestampMillisecondArray = rows.iter().map(|r| Some(T0 + r.1 * MIN)).collect();
        RecordBatch::try_from_iter([
            ("credential_id", text(&|i| Some(rows[i].0.to_string()))),
            ("principal", text(&|i| Some(format!("arn:aws:iam::1:user/{}", rows[i].0)))),
            ("ts", Arc::new(ts.with_timezone("UTC")) as ArrayRef),
            ("request_id", text(&|i| Some(format!("r{i}")))),
            ("source_ip", text(&|i| Some(rows[i].2.to_string()))),
            ("tool", text(&|i| Some(rows[i].3.to_string()))),
            ("model", text(&|i| rows[i].4.map(str::to_string))),
            ("step", text(&|i| Some(rows[i].5.to_string()))),
        ])
        .unwrap()
    }

    fn score_rows(rows: &[Row]) -> Vec<Alert> {
        let categories = ToolCategories::builtin();
        let cx = Context {
            baseline: None,
            categories: &categories,
            api_risk: crate::detect::ApiRisk::builtin(),
            inventory: None,
            rule: crate::detect::builtin_rule("llmjacking_recon"),
            chaining: Default::default(),
        };
        score(&cx, "recon", &[batch(rows)]).unwrap()
    }

    #[test]
    fn a_whole_chain_is_one_critical_alert_listing_its_steps_in_order() {
        let ip = "10.0.0.1";
        let new = "198.51.100.7";
        // Given out of order: the chain is sorted by time.
        let alerts = score_rows(&[
            ("k", 30, new, "bedrock:InvokeModel", Some("claude-3-opus"), "new_address_inference"),
            ("k", 0, ip, "bedrock:GetModelInvocationLoggingConfiguration", None, "recon"),
            ("k", 2, ip, "bedrock:ListFoundationModels", None, "recon"),
            ("k", 10, ip, "bedrock:InvokeModel", Some("claude-3-opus"), "probe"),
            ("k", 11, ip, "bedrock:InvokeModel", Some("claude-3-opus"), "probe"),
            ("k", 31, new, "bedrock:InvokeModel", Some("claude-3-opus"), "new_address_inference"),
        ]);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(
            (a.detector.as_str(), a.finding.as_str(), a.severity),
            ("tool_chaining", RECON_FINDING, Severity::Critical)
        );
        // Two recon tools + two probes + the abuse bonus.
        assert_eq!(a.score, (2 + 2 + 5) as f64);
        assert_eq!((a.window_start_ms, a.window_end_ms), (T0, T0 + 31 * MIN));
        assert_eq!(a.evidence_count, 6);
        assert_eq!(a.subject.as_deref(), Some("bedrock:GetModelInvocationLoggingConfiguration"));
        // Repeated steps fold into one numbered line with a count.
        let e = &a.explanation;
        assert!(e.contains("1) 09:00 first-ever bedrock:GetModelInvocationLoggingConfiguration"), "{e}");
        assert!(e.contains("3) 09:10–09:11 bedrock:InvokeModel probe failed with ValidationException"), "{e}");
        assert!(e.contains("×2"), "{e}");
        assert!(e.contains(&format!("4) 09:30–09:31 bedrock:InvokeModel from {new}")), "{e}");
        assert!(a.observed.starts_with("2 first-ever Bedrock control-plane call(s)"), "{}", a.observed);
        assert!(a.observed.contains("2 failed InvokeModel probe(s)"), "{}", a.observed);
    }

    #[test]
    fn recon_alone_is_high_and_one_stray_look_is_nothing() {
        let ip = "10.0.0.1";
        let alerts = score_rows(&[
            // Only one recon call: no chain.
            ("stray", 0, ip, "bedrock:ListFoundationModels", None, "recon"),
            // A probe before any recon is not part of a chain: still no chain.
            ("early", 0, ip, "bedrock:InvokeModel", None, "probe"),
            ("early", 5, ip, "bedrock:ListFoundationModels", None, "recon"),
            // Two different recon calls are a chain without abuse: high.
            ("curious", 0, ip, "bedrock:ListFoundationModels", None, "recon"),
            ("curious", 1, ip, "bedrock:GetFoundationModelAvailability", None, "recon"),
        ]);
        let found: Vec<(&str, Severity)> = alerts.iter().map(|a| (a.credential_id.as_str(), a.severity)).collect();
        assert_eq!(found, [("curious", Severity::High)]);
        assert_eq!(alerts[0].score, 2.0);
        assert!(alerts[0].explanation.contains("before it is used for inference"), "{}", alerts[0].explanation);
    }

    #[test]
    fn out_of_scope_alerts_inside_a_chain_join_it() {
        let chain = score_rows(&[
            ("k", 0, "10.0.0.1", "bedrock:ListFoundationModels", None, "recon"),
            ("k", 5, "10.0.0.1", "bedrock:InvokeModel", None, "probe"),
        ])
        .remove(0);
        let mut inside = chain.clone();
        (inside.detector, inside.finding, inside.subject) =
            ("out_of_scope".into(), "region".into(), Some("eu-west-3".into()));
        let mut later = inside.clone();
        later.window_start_ms += 3 * 60 * MIN;
        let mut other_key = inside.clone();
        other_key.credential_id = "other".into();
        let out = absorb_into_chains(vec![inside, later.clone(), other_key, chain]);
        assert_eq!(out.len(), 3, "only the alert inside the chain's window joined it");
        let host = out.iter().find(|a| a.finding == RECON_FINDING).unwrap();
        assert!(host.observed.ends_with("; region eu-west-3"), "{}", host.observed);
        assert!(out.iter().any(|a| a.window_start_ms == later.window_start_ms && a.detector == "out_of_scope"));
    }
}

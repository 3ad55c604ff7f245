//! Tool chaining: agent sessions whose sequence of tools is improbable for
//! their principal, and known-dangerous chains (data read → external send,
//! read → shell, privilege change mid-session).
//!
//! A chain rule alone would flag every workflow that legitimately reads and
//! then posts; the learned model alone cannot say why a step is dangerous.
//! So a dangerous chain alerts when its dangerous step is also improbable
//! under the principal's Markov model (or the principal has no model yet),
//! and an improbable session without a known chain alerts when it reaches a
//! tool the principal never used.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use serde::Deserialize;

use super::{Context, DetectError, Rule};
use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::baseline::Markov;
use crate::columns;
use crate::pattern::name_matches;

/// Sessions a principal needs before its model is trusted.
const MIN_SESSIONS: u64 = 20;
/// Times a tool must have been left before "never followed by X" means something.
const MIN_SUPPORT: u64 = 20;
/// A seen transition rarer than this is improbable too.
const MAX_PROBABILITY: f64 = 0.01;

#[derive(Debug, Deserialize)]
struct Chain {
    name: String,
    after: Vec<String>,
    then: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct CategoriesFile {
    categories: BTreeMap<String, Vec<String>>,
    chains: Vec<Chain>,
}

/// Tool categories and dangerous chains (`models/tool_categories.toml`).
#[derive(Debug)]
pub struct ToolCategories {
    categories: BTreeMap<String, Vec<String>>,
    chains: Vec<Chain>,
}

impl ToolCategories {
    pub fn builtin() -> ToolCategories {
        Self::parse(include_str!("../../models/tool_categories.toml")).expect("the built-in tool categories parse")
    }

    /// A user's categories file, in the format of `models/tool_categories.toml`.
    pub fn load(path: &std::path::Path) -> Result<ToolCategories, DetectError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| DetectError::Query { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|source| DetectError::Categories { path: path.to_path_buf(), source })
    }

    pub fn parse(text: &str) -> Result<ToolCategories, toml::de::Error> {
        let f: CategoriesFile = toml::from_str(text)?;
        // A chain naming a category that does not exist would silently never fire.
        for c in &f.chains {
            for cat in c.after.iter().chain(std::iter::once(&c.then)) {
                if cat != "any" && !f.categories.contains_key(cat) {
                    return Err(serde::de::Error::custom(format!(
                        "chain {:?} names category {cat:?}, which [categories] does not define",
                        c.name
                    )));
                }
            }
        }
        Ok(ToolCategories { categories: f.categories, chains: f.chains })
    }

    fn is(&self, category: &str, value: &str) -> bool {
        self.categories.get(category).is_some_and(|pats| pats.iter().any(|p| name_matches(p, value)))
    }

    fn sensitive(&self, resource: Option<&str>) -> bool {
        resource.is_some_and(|r| self.is("sensitive_resources", r))
    }

    /// The first chain whose dangerous step is `steps[i]`, with the earlier step that arms it.
    fn chain_at<'c>(&'c self, steps: &[Step], i: usize) -> Option<(&'c Chain, usize)> {
        self.chains.iter().filter(|c| self.is(&c.then, &steps[i].tool)).find_map(|c| {
            let armed = (0..i).find(|&j| c.after.iter().any(|a| a == "any" || self.is(a, &steps[j].tool)));
            armed.map(|j| (c, j))
        })
    }
}

struct Step {
    ts: i64,
    request_id: Option<String>,
    ip: Option<String>,
    tool: String,
    resource: Option<String>,
}

struct Session {
    cred: String,
    principal: String,
    id: String,
    steps: Vec<Step>,
}

pub(super) fn score(cx: &Context<'_>, q: &str, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let mut sessions: BTreeMap<(String, String), Session> = BTreeMap::new();
    for b in batches {
        let cred = columns::strings(b, q, "credential_id")?;
        let principal = columns::strings(b, q, "principal")?;
        let sid = columns::strings(b, q, "session_id")?;
        let ts = columns::times(b, q, "ts")?;
        let req = columns::strings(b, q, "request_id")?;
        let ip = columns::strings(b, q, "source_ip")?;
        let tool = columns::strings(b, q, "tool")?;
        let resource = columns::strings(b, q, "resource")?;
        for i in 0..b.num_rows() {
            let (Some(c), Some(s), Some(t), Some(tool)) = (&cred[i], &sid[i], ts[i], &tool[i]) else { continue };
            let session = sessions.entry((c.clone(), s.clone())).or_insert_with(|| Session {
                cred: c.clone(),
                principal: principal[i].clone().unwrap_or_else(|| c.clone()),
                id: s.clone(),
                steps: Vec::new(),
            });
            session.steps.push(Step {
                ts: t,
                request_id: req[i].clone(),
                ip: ip[i].clone(),
                tool: tool.clone(),
                resource: resource[i].clone(),
            });
        }
    }
    let empty = Markov::default();
    let mut out = Vec::new();
    for s in sessions.values_mut() {
        s.steps.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
        let markov = cx.baseline.and_then(|b| b.markov.get(&s.principal)).unwrap_or(&empty);
        if let Some(a) = judge(s, markov, cx.categories, cx.rule) {
            out.push(a);
        }
    }
    Ok(out)
}

/// How unusual one step is for the principal.
struct StepView {
    from: String,
    p: f64,
    improbable: bool,
    new_tool: bool,
}

fn view(markov: &Markov, learned: bool, from: &str, to: &str) -> StepView {
    let (p, support, seen) = (markov.probability(from, to), markov.support(from), markov.count(from, to));
    let new_tool = learned && !markov.knows_tool(to);
    let improbable =
        !learned || new_tool || markov.is_rare(to) || (support >= MIN_SUPPORT && (seen == 0 || p < MAX_PROBABILITY));
    StepView { from: from.to_string(), p, improbable, new_tool }
}

fn judge(s: &Session, markov: &Markov, cats: &ToolCategories, rule: &Rule) -> Option<Alert> {
    let learned = markov.sessions >= MIN_SESSIONS;
    let views: Vec<StepView> = s
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| view(markov, learned, if i == 0 { "^" } else { &s.steps[i - 1].tool }, &st.tool))
        .collect();
    // The first dangerous step that is also improbable; else the first new tool.
    let chain = (0..s.steps.len())
        .find_map(|i| cats.chain_at(&s.steps, i).filter(|_| views[i].improbable).map(|(c, j)| (i, j, c)));
    let (at, finding, severity, why) = match chain {
        Some((i, j, c)) => {
            let sensitive = (0..i).find(|&k| cats.sensitive(s.steps[k].resource.as_deref()));
            let mut why = format!("{} ({} → {})", c.text, s.steps[j].tool, s.steps[i].tool);
            if let Some(k) = sensitive {
                why.push_str(&format!(" after reading {}", s.steps[k].resource.as_deref().unwrap_or("")));
            }
            // A dangerous step right after a sensitive read is the attack itself.
            let severity = if sensitive.is_some() && learned { Severity::Critical } else { Severity::High };
            (i, c.name.clone(), severity, why)
        }
        None => {
            let i = views.iter().position(|v| v.new_tool)?;
            let why = format!("a tool the principal never used ({})", s.steps[i].tool);
            (i, "unusual_tool".to_string(), Severity::Medium, why)
        }
    };
    let v = &views[at];
    let mapped = rule.mapped(&finding, None);
    let path = s.steps.iter().map(|x| x.tool.as_str()).collect::<Vec<_>>().join(" → ");
    let model = if learned {
        let usual = markov
            .top_next(&v.from, 3)
            .into_iter()
            .map(|(t, share)| format!("{t} {:.0}%", share * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{}: {} learned sessions; after {} it calls {usual}; P({} | {}) = {:.4}",
            s.principal, markov.sessions, v.from, s.steps[at].tool, v.from, v.p
        )
    } else {
        format!("{}: no learned sessions yet (cold start): judged by the dangerous-chain rules alone", s.principal)
    };
    let ips: std::collections::BTreeSet<&str> = s.steps.iter().filter_map(|x| x.ip.as_deref()).collect();
    let explanation = format!(
        "{} session {} of {} did {why}: {path}{}",
        s.cred,
        s.id,
        s.principal,
        if learned {
            format!(" — a step with probability {:.4} under its learned behaviour", v.p)
        } else {
            String::new()
        }
    );
    Some(Alert {
        alert_id: alert::alert_id(&rule.family, &s.cred, &format!("{finding}:{}", s.id), s.steps[0].ts),
        detector: rule.family.clone(),
        finding,
        severity,
        score: -v.p.max(1e-300).log10(),
        credential_id: s.cred.clone(),
        principal: Some(s.principal.clone()),
        window_start_ms: s.steps[0].ts,
        window_end_ms: s.steps[s.steps.len() - 1].ts,
        explanation: format!("{explanation} (from {})", ips.into_iter().take(3).collect::<Vec<_>>().join(", ")),
        observed: format!("session {}: {path}", s.id),
        baseline: model,
        evidence: s.steps.iter().filter_map(|x| x.request_id.clone()).take(MAX_EVIDENCE).collect(),
        evidence_count: s.steps.len() as u64,
        mitre_attack: mapped.mitre(),
        owasp_nhi: mapped.owasp(),
        subject: Some(s.steps[at].tool.clone()),
        incident_id: None,
        suppressed: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> &'static Rule {
        crate::detect::builtin_rule("tool_chaining")
    }

    fn step(tool: &str, resource: Option<&str>) -> Step {
        Step { ts: 0, request_id: None, ip: None, tool: tool.into(), resource: resource.map(Into::into) }
    }

    fn session(tools: &[(&str, Option<&str>)]) -> Session {
        Session {
            cred: "k".into(),
            principal: "agent:a".into(),
            id: "s".into(),
            steps: tools.iter().map(|(t, r)| step(t, *r)).collect(),
        }
    }

    fn trained() -> Markov {
        let mut m = Markov::default();
        m.add("^", "db.query", 100);
        m.add("db.query", "db.query", 60);
        m.add("db.query", "slack.post_message", 100);
        m.add("slack.post_message", "$", 100);
        m
    }

    #[test]
    fn builtin_categories_classify_tools() {
        let c = ToolCategories::builtin();
        assert!(c.is("read", "github.get_file") && c.is("exec", "shell.exec") && c.is("egress", "email.send"));
        assert!(c.is("privilege", "github.add_collaborator") && c.is("secrets", "k8s.get_secrets"));
        assert!(!c.is("egress", "slack.post_message"));
        assert!(c.sensitive(Some("github://acme/helpdesk/.env")));
    }

    #[test]
    fn a_chain_with_an_unknown_category_is_refused() {
        let e = ToolCategories::parse(
            "[categories]\nread = [\"*.get*\"]\n[[chains]]\nname = \"x\"\nafter = [\"read\"]\nthen = \"exfil\"\ntext = \"t\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"exfil\""), "{e}");
    }

    #[test]
    fn a_learned_workflow_does_not_alert_but_a_new_exfiltration_does() {
        let (m, c) = (trained(), ToolCategories::builtin());
        assert!(judge(&session(&[("db.query", None), ("slack.post_message", None)]), &m, &c, rule()).is_none());
        let a = judge(&session(&[("db.query", Some("db://x/customers_pii")), ("email.send", None)]), &m, &c, rule())
            .unwrap();
        assert_eq!(a.finding, "exfiltration");
        assert_eq!(a.severity, Severity::Critical, "a sensitive read before the send");
        assert!(a.explanation.contains("db.query → email.send"), "{}", a.explanation);
    }

    #[test]
    fn a_chain_the_principal_runs_every_day_is_learned() {
        let mut m = trained();
        m.add("db.query", "email.send", 100);
        m.add("email.send", "$", 100);
        assert!(
            judge(&session(&[("db.query", None), ("email.send", None)]), &m, &ToolCategories::builtin(), rule())
                .is_none()
        );
    }

    #[test]
    fn a_chain_seen_once_before_is_still_dangerous() {
        let mut m = trained();
        m.add("db.query", "email.send", 1);
        m.add("email.send", "$", 1);
        let a = judge(&session(&[("db.query", None), ("email.send", None)]), &m, &ToolCategories::builtin(), rule())
            .unwrap();
        assert_eq!(a.finding, "exfiltration");
    }

    #[test]
    fn cold_start_principals_are_judged_by_the_rules() {
        let c = ToolCategories::builtin();
        let a = judge(&session(&[("github.get_file", None), ("shell.exec", None)]), &Markov::default(), &c, rule())
            .unwrap();
        assert_eq!(a.finding, "read_then_exec");
        assert!(a.baseline.contains("cold start"));
        assert!(
            judge(&session(&[("jira.search", None), ("jira.add_comment", None)]), &Markov::default(), &c, rule())
                .is_none()
        );
    }

    #[test]
    fn an_unknown_tool_is_unusual() {
        let a = judge(
            &session(&[("db.query", None), ("db.drop_table", None)]),
            &trained(),
            &ToolCategories::builtin(),
            rule(),
        )
        .unwrap();
        assert_eq!(a.finding, "unusual_tool");
    }
}

//! Tool chaining: agent sessions whose sequence of tools is improbable for
//! their principal, and known-dangerous chains (data read → external send,
//! read → shell, privilege change mid-session).
//!
//! A chain rule alone would flag every workflow that legitimately reads and
//! then posts; the learned model alone cannot say why a step is dangerous.
//! So a dangerous chain alerts when its dangerous step is also improbable
//! under the principal's Markov model, and an improbable session without a
//! known chain alerts when it reaches a tool the principal never used.
//!
//! A principal with thin history (fewer than [`MIN_SESSIONS`] learned
//! sessions) is judged against a wider level, the first with enough history:
//!
//! 1. its **peers**: the other principals of its peer group ([`super::peers`]:
//!    the credential's inventory kind and owner, else the principal's role).
//! 2. the **fleet**: every other principal.
//!
//! At these levels a step is improbable as under the own model, and also
//! when fewer than [`MIN_PEERS`] of the level's principals ever made that
//! transition: everyday work of the group stays quiet, a step no peer makes
//! (or only one, perhaps an earlier attack) alerts, unless the principal's
//! own thin history already made it [`MIN_PEERS`] times or more: a few
//! sessions a week that do the same thing each time are its routine, even
//! when no peer shares it. Only with neither level learned is a session
//! judged by the dangerous-chain rules alone.
//! The alert's `baseline` says which level it was compared against. A new
//! tool alone (`unusual_tool`) and a critical severity stay own-model
//! findings: peers do not know what the principal itself never does.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use arrow::array::RecordBatch;
use serde::Deserialize;

use super::peers::{MIN_PEERS, group};
use super::{Context, DetectError, Rule};
use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::baseline::{Baseline, Markov};
use crate::columns;
use crate::inventory::Inventory;
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

    /// Each step's part in each chain: (its dangerous step, a step that arms
    /// it). Matched once per distinct tool (`known` holds those matched
    /// before): the patterns are globs, and sessions call a few tools many times.
    fn roles(&self, steps: &[Step], known: &mut HashMap<String, Roles>) -> Vec<Roles> {
        let part = |tool: &str| -> Roles {
            let arms = |c: &Chain| c.after.iter().any(|a| a == "any" || self.is(a, tool));
            self.chains.iter().map(|c| (self.is(&c.then, tool), arms(c))).collect()
        };
        steps
            .iter()
            .map(|st| match known.get(&st.tool) {
                Some(r) => Rc::clone(r),
                None => Rc::clone(known.entry(st.tool.clone()).or_insert_with(|| part(&st.tool))),
            })
            .collect()
    }

    /// The first chain whose dangerous step is step `i` (of the steps whose
    /// [`roles`](Self::roles) these are), with the earlier step that arms it.
    fn chain_at(&self, roles: &[Roles], i: usize) -> Option<(&Chain, usize)> {
        self.chains
            .iter()
            .enumerate()
            .filter(|&(k, _)| roles[i][k].0)
            .find_map(|(k, c)| (0..i).find(|&j| roles[j][k].1).map(|j| (c, j)))
    }
}

/// A tool's part in each chain, in order: (the chain's dangerous step, a step that arms it).
type Roles = Rc<[(bool, bool)]>;

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
    columns::row! {
        struct CallRow {
            credential_id: text,
            principal: text,
            session_id: text,
            ts: time,
            request_id: text,
            source_ip: text,
            tool: text,
            resource: text,
        }
    }
    for r in columns::rows::<CallRow>(batches, q) {
        let r = r?;
        let (Some(c), Some(s), Some(t), Some(tool)) = (r.credential_id, r.session_id, r.ts, r.tool) else { continue };
        let session = sessions.entry((c, s)).or_insert_with_key(|(c, s)| Session {
            principal: r.principal.unwrap_or_else(|| c.clone()),
            cred: c.clone(),
            id: s.clone(),
            steps: Vec::new(),
        });
        session.steps.push(Step { ts: t, request_id: r.request_id, ip: r.source_ip, tool, resource: r.resource });
    }
    let empty = Markov::default();
    let mut out = Vec::new();
    for s in sessions.values_mut() {
        s.steps.sort_by(|a, b| (a.ts, &a.request_id).cmp(&(b.ts, &b.request_id)));
        let markov = cx.baseline.and_then(|b| b.markov.get(&s.principal)).unwrap_or(&empty);
        let own = Reference::own(markov);
        let r = match cx.baseline {
            Some(b) if !own.learned => cx.chaining.wider(b, cx.inventory, &s.cred, &s.principal),
            _ => None,
        };
        let roles = cx.categories.roles(&s.steps, &mut cx.chaining.roles.borrow_mut());
        if let Some(a) = judge(s, &roles, r.as_deref().unwrap_or(&own), cx.categories, cx.rule) {
            out.push(a);
        }
    }
    Ok(out)
}

/// What judging sessions against one baseline computes once, however many
/// calls of [`score`] share the [`Context`]: `watch` scores each moved session
/// on its own, and a session costs a few steps, far less than merging models.
#[derive(Default)]
pub(crate) struct Memo<'b> {
    groups: OnceCell<Groups<'b>>,
    wider: RefCell<Levels<'b>>,
    /// Each tool's [`Roles`], by tool.
    roles: RefCell<HashMap<String, Roles>>,
}

/// The wider level of each (peer group, principal), `None` when neither has history.
type Levels<'b> = BTreeMap<(String, String), Option<Rc<Reference<'b>>>>;

impl<'b> Memo<'b> {
    /// The peer or fleet level judging `principal`'s sessions, if one has history.
    fn wider(
        &self,
        b: &'b Baseline,
        inventory: Option<&Inventory>,
        cred: &str,
        principal: &str,
    ) -> Option<Rc<Reference<'b>>> {
        let groups = self.groups.get_or_init(|| Groups::of(b, inventory));
        let group = group(inventory, cred, principal);
        let key = (group, principal.to_string());
        if let Some(r) = self.wider.borrow().get(&key) {
            return r.clone();
        }
        let r = Reference::wider(b, groups, &key.0, principal).map(Rc::new);
        self.wider.borrow_mut().insert(key, r.clone());
        r
    }
}

/// Peer groups of the baseline's principals (see the module doc).
struct Groups<'b> {
    members: BTreeMap<String, Vec<&'b str>>,
}

impl<'b> Groups<'b> {
    fn of(b: &'b Baseline, inventory: Option<&Inventory>) -> Groups<'b> {
        let mut group_of: BTreeMap<&'b str, String> = BTreeMap::new();
        let mut creds: Vec<_> = b.credentials.values().collect();
        creds.sort_by(|x, y| x.credential_id.cmp(&y.credential_id));
        for c in creds {
            let p = c.principal.as_deref().unwrap_or(&c.credential_id);
            if let Some((principal, _)) = b.markov.get_key_value(p) {
                group_of.entry(principal).or_insert_with(|| group(inventory, &c.credential_id, p));
            }
        }
        let mut members: BTreeMap<String, Vec<&'b str>> = BTreeMap::new();
        for p in b.markov.keys() {
            let g = group_of.remove(p.as_str()).unwrap_or_else(|| group(None, p, p));
            members.entry(g).or_default().push(p);
        }
        members.values_mut().for_each(|v| v.sort_unstable());
        Groups { members }
    }
}

/// The model a session is judged against, and at which level.
struct Reference<'m> {
    markov: std::borrow::Cow<'m, Markov>,
    /// The principals' own models behind a peer or fleet level (empty for the own level).
    members: Vec<&'m Markov>,
    learned: bool,
    /// Empty for the own level; else `peers: …` or `fleet: …`.
    level: String,
    /// At a peer or fleet level, the principal's own thin model: steps it
    /// made often enough are its routine.
    habits: Option<&'m Markov>,
}

impl<'m> Reference<'m> {
    fn own(markov: &'m Markov) -> Reference<'m> {
        let learned = markov.sessions >= MIN_SESSIONS;
        let markov = std::borrow::Cow::Borrowed(markov);
        Reference { markov, members: Vec::new(), learned, level: String::new(), habits: None }
    }

    /// The peer level if it has enough history, else the fleet, else none.
    fn wider(b: &'m Baseline, g: &Groups<'_>, group: &str, principal: &str) -> Option<Reference<'m>> {
        let others = |names: &mut dyn Iterator<Item = &str>| -> Vec<&'m Markov> {
            names.filter(|n| *n != principal).filter_map(|n| b.markov.get(n)).collect()
        };
        let peers = others(&mut g.members.get(group).into_iter().flatten().copied());
        let fleet = others(&mut b.markov.keys().map(String::as_str));
        let peers_label = format!("peers: {} principals of {group}", peers.len());
        let fleet_label = format!("fleet: {} principals", fleet.len());
        let habits = b.markov.get(principal);
        [(peers, peers_label), (fleet, fleet_label)].into_iter().find_map(|(members, level)| {
            let mut markov = Markov::default();
            members.iter().for_each(|m| markov.merge(m));
            let learned = members.len() >= MIN_PEERS && markov.sessions >= MIN_SESSIONS;
            let markov = std::borrow::Cow::Owned(markov);
            learned.then_some(Reference { markov, members, learned, level, habits })
        })
    }

    fn is_own(&self) -> bool {
        self.level.is_empty()
    }
}

/// How unusual one step is for the principal.
struct StepView<'s> {
    from: &'s str,
    p: f64,
    improbable: bool,
    new_tool: bool,
}

fn view<'s>(r: &Reference<'_>, from: &'s str, to: &str) -> StepView<'s> {
    let (markov, learned) = (&r.markov, r.learned);
    let (p, support, seen) = (markov.probability(from, to), markov.support(from), markov.count(from, to));
    let new_tool = learned && r.is_own() && !markov.knows_tool(to);
    let uncommon = !r.is_own() && r.members.iter().filter(|m| m.count(from, to) > 0).count() < MIN_PEERS;
    let routine = r.habits.is_some_and(|h| h.count(from, to) >= MIN_PEERS as u64);
    let improbable = !routine
        && (!learned
            || new_tool
            || uncommon
            || markov.is_rare(to)
            || (support >= MIN_SUPPORT && (seen == 0 || p < MAX_PROBABILITY)));
    StepView { from, p, improbable, new_tool }
}

fn judge(s: &Session, roles: &[Roles], r: &Reference<'_>, cats: &ToolCategories, rule: &Rule) -> Option<Alert> {
    let (markov, learned) = (&r.markov, r.learned);
    let views: Vec<StepView> = s
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| view(r, if i == 0 { "^" } else { &s.steps[i - 1].tool }, &st.tool))
        .collect();
    // The first dangerous step that is also improbable; else the first new tool.
    let chain = (0..s.steps.len())
        .find_map(|i| cats.chain_at(roles, i).filter(|_| views[i].improbable).map(|(c, j)| (i, j, c)));
    let (at, finding, severity, why) = match chain {
        Some((i, j, c)) => {
            let sensitive = (0..i).find(|&k| cats.sensitive(s.steps[k].resource.as_deref()));
            let mut why = format!("{} ({} → {})", c.text, s.steps[j].tool, s.steps[i].tool);
            if let Some(k) = sensitive {
                why.push_str(&format!(" after reading {}", s.steps[k].resource.as_deref().unwrap_or("")));
            }
            // A dangerous step right after a sensitive read is the attack itself.
            let severity =
                if sensitive.is_some() && learned && r.is_own() { Severity::Critical } else { Severity::High };
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
            .top_next(v.from, 3)
            .into_iter()
            .map(|(t, share)| format!("{t} {:.0}%", share * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        let (who, it) = if r.is_own() { (s.principal.clone(), "it calls") } else { (r.level.clone(), "they call") };
        let doers = if r.is_own() {
            String::new()
        } else {
            let n = r.members.iter().filter(|m| m.count(v.from, &s.steps[at].tool) > 0).count();
            format!("; {n} of them made this step")
        };
        format!(
            "{who}: {} learned sessions; after {} {it} {usual}; P({} | {}) = {:.4}{doers}",
            markov.sessions, v.from, s.steps[at].tool, v.from, v.p
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
            let whose = match r.level.split(':').next() {
                Some("peers") => "its peers'",
                Some("fleet") => "the fleet's",
                _ => "its",
            };
            format!(" — a step with probability {:.4} under {whose} learned behaviour", v.p)
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

    fn judge_own(s: &Session, m: &Markov, c: &ToolCategories, rule: &Rule) -> Option<Alert> {
        judge(s, &c.roles(&s.steps, &mut HashMap::new()), &Reference::own(m), c, rule)
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
        assert!(judge_own(&session(&[("db.query", None), ("slack.post_message", None)]), &m, &c, rule()).is_none());
        let a =
            judge_own(&session(&[("db.query", Some("db://x/customers_pii")), ("email.send", None)]), &m, &c, rule())
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
            judge_own(&session(&[("db.query", None), ("email.send", None)]), &m, &ToolCategories::builtin(), rule())
                .is_none()
        );
    }

    #[test]
    fn a_chain_seen_once_before_is_still_dangerous() {
        let mut m = trained();
        m.add("db.query", "email.send", 1);
        m.add("email.send", "$", 1);
        let a =
            judge_own(&session(&[("db.query", None), ("email.send", None)]), &m, &ToolCategories::builtin(), rule())
                .unwrap();
        assert_eq!(a.finding, "exfiltration");
    }

    #[test]
    fn cold_start_principals_are_judged_by_the_rules() {
        let c = ToolCategories::builtin();
        let a = judge_own(&session(&[("github.get_file", None), ("shell.exec", None)]), &Markov::default(), &c, rule())
            .unwrap();
        assert_eq!(a.finding, "read_then_exec");
        assert!(a.baseline.contains("cold start"));
        assert!(
            judge_own(&session(&[("jira.search", None), ("jira.add_comment", None)]), &Markov::default(), &c, rule())
                .is_none()
        );
    }

    #[test]
    fn an_unknown_tool_is_unusual() {
        let a = judge_own(
            &session(&[("db.query", None), ("db.drop_table", None)]),
            &trained(),
            &ToolCategories::builtin(),
            rule(),
        )
        .unwrap();
        assert_eq!(a.finding, "unusual_tool");
    }
    /// A principal's model: `n` sessions of `tools`.
    fn sessions_of(tools: &[&str], n: u64) -> Markov {
        let mut m = Markov::default();
        let path: Vec<&str> = std::iter::once("^").chain(tools.iter().copied()).chain(std::iter::once("$")).collect();
        path.windows(2).for_each(|w| m.add(w[0], w[1], n));
        m
    }

    /// Judged as `score` does: the own model, else the peers, else the fleet.
    fn judge_in(b: &Baseline, inv: Option<&Inventory>, s: &Session) -> Option<Alert> {
        let empty = Markov::default();
        let own = Reference::own(b.markov.get(&s.principal).unwrap_or(&empty));
        let wider = Reference::wider(b, &Groups::of(b, inv), &group(inv, &s.cred, &s.principal), &s.principal);
        let cats = ToolCategories::builtin();
        let roles = cats.roles(&s.steps, &mut HashMap::new());
        judge(s, &roles, wider.as_ref().filter(|_| !own.learned).unwrap_or(&own), &cats, rule())
    }

    fn thin_support_team() -> Baseline {
        let mut b = Baseline::default();
        for (p, n) in [("agent:support-1", 8), ("agent:support-2", 9), ("agent:support-3", 7), ("agent:support-9", 2)] {
            b.markov.insert(p.into(), sessions_of(&["web.search", "email.send"], n));
        }
        b.markov.insert("svc:etl".into(), sessions_of(&["db.query", "s3.put_object"], 50));
        b
    }

    fn thin_session(tools: &[(&str, Option<&str>)]) -> Session {
        Session { principal: "agent:support-9".into(), ..session(tools) }
    }

    #[test]
    fn a_thin_principal_doing_its_peers_everyday_work_does_not_alert() {
        let b = thin_support_team();
        let s = thin_session(&[("web.search", None), ("email.send", None)]);
        let a = judge_own(&s, &b.markov["agent:support-9"], &ToolCategories::builtin(), rule());
        assert_eq!(a.map(|a| a.finding).as_deref(), Some("exfiltration"), "by the rules alone it alerts");
        assert!(judge_in(&b, None, &s).is_none(), "its peers all do it");
    }

    /// A thin principal's own few sessions that make the same step are its
    /// routine; once is not (it could be an earlier attack).
    #[test]
    fn a_thin_principals_own_routine_does_not_alert_where_no_peer_shares_it() {
        let mut b = thin_support_team();
        let s = thin_session(&[("db.query", None), ("email.send", None)]);
        b.markov.get_mut("agent:support-9").unwrap().add("db.query", "email.send", 1);
        assert!(judge_in(&b, None, &s).is_some(), "once is not a routine");
        b.markov.get_mut("agent:support-9").unwrap().add("db.query", "email.send", 1);
        assert!(judge_in(&b, None, &s).is_none(), "its own sessions make this step");
        // Not a licence for the next step: a step its routine never made still alerts.
        let exec = thin_session(&[("db.query", None), ("email.send", None), ("shell.exec", None)]);
        assert!(judge_in(&b, None, &exec).is_some());
    }

    #[test]
    fn a_step_no_peer_makes_alerts_and_names_the_peer_level() {
        let b = thin_support_team();
        let a = judge_in(&b, None, &thin_session(&[("db.query", None), ("email.send", None)])).unwrap();
        assert_eq!(a.finding, "exfiltration");
        assert!(a.baseline.starts_with("peers: 3 principals of role agent:support"), "{}", a.baseline);
        assert!(a.baseline.contains("0 of them made this step"), "{}", a.baseline);
    }

    #[test]
    fn a_step_one_peer_made_once_is_not_yet_common() {
        let mut b = thin_support_team();
        b.markov.get_mut("agent:support-1").unwrap().add("db.query", "email.send", 1);
        let a = judge_in(&b, None, &thin_session(&[("db.query", None), ("email.send", None)])).unwrap();
        assert!(a.baseline.contains("1 of them made this step"), "{}", a.baseline);
    }

    #[test]
    fn without_peers_the_fleet_is_the_level_and_without_either_the_rules() {
        let mut b = thin_support_team();
        // Neither its peers nor its own sessions (those would be its routine).
        b.markov.retain(|p, _| !["agent:support-2", "agent:support-3", "agent:support-9"].contains(&p.as_str()));
        let s = thin_session(&[("web.search", None), ("email.send", None)]);
        let a = judge_in(&b, None, &s).unwrap();
        assert!(a.baseline.starts_with("fleet: 2 principals"), "one peer is not a group: {}", a.baseline);
        b.markov.retain(|p, _| p == "agent:support-9");
        assert!(judge_in(&b, None, &s).unwrap().baseline.contains("cold start"));
    }

    #[test]
    fn with_an_inventory_peers_share_kind_and_owner() {
        use crate::baseline::{CredentialBaseline, MODEL_VERSION};
        let mut b = thin_support_team();
        // Renamed principals: only the inventory says they do one job.
        for (i, p) in ["agent:support-1", "agent:support-2", "agent:support-3", "agent:support-9"].iter().enumerate() {
            let m = b.markov.remove(*p).unwrap();
            let (cred, principal) = (format!("k{i}"), format!("agent:x{i}y"));
            b.markov.insert(principal.clone(), m);
            let c = CredentialBaseline {
                model_version: MODEL_VERSION,
                credential_id: cred.clone(),
                principal: Some(principal),
                history_from: String::new(),
                history_to: String::new(),
                days_seen: 1,
                hours: 1,
                requests: 1,
                cold_start: true,
                requests_per_hour: Default::default(),
                tokens_per_hour: Default::default(),
                cost_per_hour: Default::default(),
                errors_per_hour: Default::default(),
                error_rate: 0.0,
                error_minute_max: 0.0,
                error_minute_p99: 0.0,
            };
            b.credentials.insert(cred, c);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.csv");
        let rows: String = (0..4).map(|i| format!("k{i},support@example.com,agent:x{i}y,agent_token\n")).collect();
        std::fs::write(&path, format!("credential_id,owner,principal,kind\n{rows}")).unwrap();
        let inv = Inventory::load(&path).unwrap();
        let s = Session { cred: "k3".into(), principal: "agent:x3y".into(), ..session(&[]) };
        let everyday = Session { steps: thin_session(&[("web.search", None), ("email.send", None)]).steps, ..s };
        assert!(judge_in(&b, Some(&inv), &everyday).is_none());
        let s = Session {
            cred: "k3".into(),
            principal: "agent:x3y".into(),
            ..session(&[("db.query", None), ("email.send", None)])
        };
        let a = judge_in(&b, Some(&inv), &s).unwrap();
        assert!(
            a.baseline.starts_with("peers: 3 principals of kind agent_token owned by support@example.com"),
            "{}",
            a.baseline
        );
        assert!(judge_in(&b, None, &s).unwrap().baseline.starts_with("fleet:"), "no inventory, no shared role");
    }
}

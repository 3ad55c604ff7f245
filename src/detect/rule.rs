//! A detector's rule: its query file holds the whole of it. The leading
//! comment block of `queries/<detector>.sql` carries, besides the prose, a
//! TOML header on lines starting `---` (see `queries/README.md`): the
//! detector family, the tables it reads, how `watch` runs it, which Rust
//! scorer turns its rows into alerts, and the default severity with the
//! MITRE ATT&CK technique and OWASP NHI risk of each finding.
//!
//! The built-in rules are parsed once from the compiled-in files; a query in
//! `--queries DIR` is parsed from its own file. Both are loaded by [`load`],
//! which also expands the shared SQL fragments, so every detector's text is
//! complete before any caller sees it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LiveMode;
use crate::alert::Severity;
use crate::engine::udf::{Derive, SCOPE_DIMENSIONS, ScopeDimension};

/// A rule header that does not parse, or holds a key credtrail does not know.
#[derive(Debug, thiserror::Error)]
#[error("{file}: rule header: {source}")]
pub struct RuleError {
    pub file: String,
    pub source: toml::de::Error,
}

/// What a detector is, as its query file's header declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The family its alerts carry (several queries may share one).
    pub family: String,
    /// The tables the query reads; `credentials` needs the inventory.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The events the query reads, as an SQL condition on an `events` row.
    /// A day none of whose events meets it is not planned: the query could
    /// only return nothing, and planning costs more than a small day's
    /// scan. A shortcut, so it may match too much, never too little.
    pub events: Option<String>,
    /// The query compares with learned history and finds nothing while no
    /// credential of the baseline is out of cold start: such a day does
    /// not plan it.
    #[serde(default)]
    pub needs_history: bool,
    /// Which side of each join the planner hashes.
    #[serde(default)]
    pub joins: Joins,
    /// How `watch` judges it as events arrive.
    #[serde(default = "day")]
    pub live: LiveMode,
    /// Which new events `watch` hands a per-event query.
    #[serde(default)]
    pub live_events: LiveEvents,
    /// Which scorer turns its rows into alerts.
    #[serde(default = "custom")]
    pub scoring: Scorer,
    /// What every finding maps to unless `findings` says otherwise.
    pub severity: Option<Severity>,
    pub mitre: Option<String>,
    pub owasp: Option<String>,
    /// Per finding (`[findings.<finding>]`), or per variant of one a scorer
    /// tells apart (`[findings."<finding>/<variant>"]`).
    #[serde(default)]
    pub findings: BTreeMap<String, Mapping>,
}

/// Which side of each of a query's joins is hashed (built) and which is
/// streamed past it (probed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Joins {
    /// DataFusion swaps a join's sides to hash the one it estimates smaller.
    #[default]
    Estimated,
    /// The left side of each join is hashed, as the query is written. For a
    /// query whose small sides are few rows derived by aggregates from many:
    /// the planner carries the many rows' count through every `GROUP BY`
    /// as an upper bound, and then hashes the events to probe them with a
    /// dozen rows.
    AsWritten,
}

/// Which of the new events `watch` hands a per-event query. A shortcut the
/// rule's author vouches for: the query's rows must be the same from these
/// events as from all of them. It may hand too many, never too few.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveEvents {
    #[default]
    All,
    /// The events with a value, in one of these scope dimensions, that the
    /// credential's own learned scope lacks (as `scope_value` derives it),
    /// and one event of each credential and principal pair, so the query
    /// still knows who called. For a query that reports only what a
    /// credential never used: most events use what their credential always did.
    NewToScope(Vec<ScopeDim>),
}

/// A text scope dimension a rule names (`network`, `model`, …), one of
/// [`SCOPE_DIMENSIONS`] but the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ScopeDim(pub &'static ScopeDimension);

impl TryFrom<String> for ScopeDim {
    type Error = String;

    fn try_from(name: String) -> Result<ScopeDim, String> {
        let text = || SCOPE_DIMENSIONS.iter().filter(|d| d.derive != Derive::Hour);
        text().find(|d| d.name == name).map(ScopeDim).ok_or_else(|| {
            let names: Vec<&str> = text().map(|d| d.name).collect();
            format!("unknown scope dimension {name:?}: one of {}", names.join(", "))
        })
    }
}

fn day() -> LiveMode {
    LiveMode::Day
}

fn custom() -> Scorer {
    Scorer::Rows(Explainer::Custom)
}

/// Severity (a scorer that grades computes its own), ATT&CK technique and
/// OWASP NHI risk; each unset field falls back to the broader entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub severity: Option<Severity>,
    pub mitre: Option<String>,
    pub owasp: Option<String>,
}

/// The Rust scorer a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    Billing,
    Storm,
    Chaining,
    Recon,
    SessionReuse,
    /// Out-of-scope rows: new use alerts (worded as `rows = "out_of_scope"`),
    /// standing use becomes one governance finding per credential.
    OutOfScope,
    /// Cloud control-plane calls judged against the API risk tiers (`models/api_risk.toml`).
    Cloud,
    /// Request-level rows grouped into alerts, each group worded by the explainer.
    Rows(Explainer),
}

/// How a request-level detector words a group of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Explainer {
    OutOfScope,
    FirstSeen,
    SecretExposure,
    DefenseEvasion,
    /// The rows say what they found (a query the user added).
    Custom,
}

/// A finding's resolved mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped<'a> {
    pub severity: Severity,
    pub mitre: Option<&'a str>,
    pub owasp: Option<&'a str>,
}

impl Mapped<'_> {
    pub fn mitre(&self) -> Option<String> {
        self.mitre.map(str::to_string)
    }

    pub fn owasp(&self) -> Option<String> {
        self.owasp.map(str::to_string)
    }
}

/// A detector query file as loaded: its SQL, the shared fragments
/// (`{billed_events}`) expanded, [`MAX_EVIDENCE`] filled in and its own
/// placeholders (`{from}`, `{to}`, …) left for each run, and the rule its
/// header declares, if any.
pub struct Loaded {
    pub sql: String,
    pub rule: Option<Rule>,
}

/// The placeholder for how many request ids an alert keeps as evidence
/// ([`crate::alert::MAX_EVIDENCE`]): a query need not collect more.
const MAX_EVIDENCE: &str = "{max_evidence}";

/// Loads the detector query `text` of `file` (named in errors).
pub fn load(file: &str, text: &str) -> Result<Loaded, RuleError> {
    let sql = crate::engine::expand_fragments(text).replace(MAX_EVIDENCE, &crate::alert::MAX_EVIDENCE.to_string());
    Ok(Loaded { rule: Rule::parse(file, text)?, sql })
}

impl Rule {
    /// The rule in `text`'s header, `None` when it has none. `file` names
    /// the file in errors.
    pub fn parse(file: &str, text: &str) -> Result<Option<Rule>, RuleError> {
        let Some(header) = header(text) else { return Ok(None) };
        let err = |source| RuleError { file: file.to_string(), source };
        let rule: Rule = toml::from_str(&header).map_err(err)?;
        if rule.live_events != LiveEvents::All && !matches!(rule.live, LiveMode::PerEvent(_)) {
            let msg =
                "`live_events` is for a query run per event: add `live = { per_event = \"credential\" }` or remove it";
            return Err(err(serde::de::Error::custom(msg)));
        }
        Ok(Some(rule))
    }

    /// A rule with the defaults of a query without a header: its family is its name.
    pub fn plain(name: &str) -> Rule {
        Rule {
            family: name.to_string(),
            inputs: Vec::new(),
            events: None,
            needs_history: false,
            joins: Joins::Estimated,
            live: LiveMode::Day,
            live_events: LiveEvents::All,
            scoring: custom(),
            severity: None,
            mitre: None,
            owasp: None,
            findings: BTreeMap::new(),
        }
    }

    pub fn needs_inventory(&self) -> bool {
        self.inputs.iter().any(|t| t == "credentials")
    }

    /// What `finding` maps to: its `variant` entry first, then the
    /// finding's, then the rule's; severity medium when none says.
    pub fn mapped(&self, finding: &str, variant: Option<&str>) -> Mapped<'_> {
        let variant = variant.and_then(|v| self.findings.get(&format!("{finding}/{v}")));
        let levels = [variant, self.findings.get(finding)];
        let levels = levels.iter().flatten();
        Mapped {
            severity: levels.clone().find_map(|m| m.severity).or(self.severity).unwrap_or(Severity::Medium),
            mitre: levels.clone().find_map(|m| m.mitre.as_deref()).or(self.mitre.as_deref()),
            owasp: levels.clone().find_map(|m| m.owasp.as_deref()).or(self.owasp.as_deref()),
        }
    }
}

/// The TOML of a query's header: the `---` lines of its leading comment
/// block, without the marker. `None` when there are none.
fn header(text: &str) -> Option<String> {
    let mut toml = Vec::new();
    for line in text.lines().map(str::trim_end).take_while(|l| l.starts_with("--")) {
        if line == "---" {
            toml.push("");
        } else if let Some(rest) = line.strip_prefix("--- ") {
            toml.push(rest);
        }
    }
    (!toml.is_empty()).then(|| toml.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Gate;

    #[test]
    fn a_header_is_read_from_the_leading_comment() {
        let text = "-- mine: prose\n---\n--- family = \"mine\"\n--- live = { gated = \"storm\" }\n--- \
                    severity = \"high\"\n--- [findings.x]\n--- mitre = \"T1\"\n-- more prose\nSELECT 1\n--- family = 1";
        let r = Rule::parse("mine.sql", text).unwrap().unwrap();
        assert_eq!(r.family, "mine");
        assert_eq!(r.live, LiveMode::Gated(Gate::Storm));
        assert_eq!(r.events, None);
        assert_eq!(r.scoring, Scorer::Rows(Explainer::Custom));
        assert_eq!(r.mapped("x", None), Mapped { severity: Severity::High, mitre: Some("T1"), owasp: None });
        assert_eq!(r.mapped("y", Some("v")).mitre, None);
        assert!(!r.needs_inventory());
        assert!(Rule::parse("plain.sql", "-- prose only\nSELECT 1").unwrap().is_none());
        let gated = Rule::parse("g.sql", "--- family = \"g\"\n--- events = \"status >= 500\"").unwrap().unwrap();
        assert_eq!(gated.events.as_deref(), Some("status >= 500"));
        assert_eq!(gated.joins, Joins::Estimated);
        let written = Rule::parse("w.sql", "--- family = \"w\"\n--- joins = \"as_written\"").unwrap().unwrap();
        assert_eq!(written.joins, Joins::AsWritten);
        assert!(Rule::parse("w.sql", "--- family = \"w\"\n--- joins = \"left\"").is_err());
    }

    #[test]
    fn variants_fall_back_to_their_finding_then_the_rule() {
        let text = "--- family = \"f\"\n--- owasp = \"O\"\n--- [findings.a]\n--- severity = \"low\"\n--- mitre = \
                    \"A\"\n--- [findings.\"a/v\"]\n--- mitre = \"AV\"";
        let r = Rule::parse("f.sql", text).unwrap().unwrap();
        assert_eq!(r.mapped("a", Some("v")), Mapped { severity: Severity::Low, mitre: Some("AV"), owasp: Some("O") });
        assert_eq!(r.mapped("a", Some("w")).mitre, Some("A"));
        assert_eq!(r.mapped("b", None).severity, Severity::Medium);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file() {
        for text in ["--- family = \"f\"\n--- colour = \"red\"", "--- family = \"f\"\n--- [findings.a]\n--- sev = 1"] {
            let e = Rule::parse("dir/odd.sql", text).unwrap_err().to_string();
            assert!(e.starts_with("dir/odd.sql: rule header"), "{e}");
            assert!(e.contains("colour") || e.contains("sev"), "{e}");
        }
        let e = Rule::parse("x.sql", "--- family = \"f\"\n--- scoring = { rows = \"nope\" }").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn live_events_name_scope_dimensions_of_a_per_event_query() {
        let head = "--- family = \"f\"\n--- live = { per_event = \"credential\" }\n";
        let r = Rule::parse("f.sql", &format!("{head}--- live_events = {{ new_to_scope = [\"network\", \"model\"] }}"));
        let LiveEvents::NewToScope(dims) = r.unwrap().unwrap().live_events else { panic!("new_to_scope") };
        let names: Vec<&str> = dims.iter().map(|d| d.0.name).collect();
        assert_eq!(names, ["network", "model"]);
        assert_eq!(dims[0].0.column, "source_ip");
        assert_eq!(Rule::parse("f.sql", head).unwrap().unwrap().live_events, LiveEvents::All);
        // The hour is not a text dimension, and a typo names the ones there are.
        for dim in ["hour", "modle"] {
            let text = format!("{head}--- live_events = {{ new_to_scope = [\"{dim}\"] }}");
            let e = Rule::parse("f.sql", &text).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown scope dimension \"{dim}\"")) && e.contains("resource_prefix"), "{e}");
        }
        // Only a query run per event is handed a subset of the new events.
        let text = "--- family = \"f\"\n--- live_events = { new_to_scope = [\"tool\"] }";
        let e = Rule::parse("dir/f.sql", text).unwrap_err().to_string();
        assert!(e.starts_with("dir/f.sql: rule header") && e.contains("per_event"), "{e}");
    }
}

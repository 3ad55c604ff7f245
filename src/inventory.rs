//! The credential inventory: who owns each credential, what it may do, and
//! when it expires — the declared scope that detectors compare use against —
//! and, from the lake, how each credential was used.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::engine::udf::{PIN, pattern_matches, scope_allows};
use crate::engine::{self, EngineError};
use crate::schema::Action;
use crate::time::{DAY_MS, format_ms, parse_date_or_ts};

/// The SQL name of the inventory's table.
pub const TABLE: &str = "credentials";

/// One problem in an inventory file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct InventoryError {
    pub file: String,
    /// The line in the file (CSV), or the 1-based `[[credential]]` entry (TOML);
    /// 0 when the problem is with the file as a whole.
    pub line: u64,
    pub field: String,
    pub message: String,
}

/// Every problem found in an inventory, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InventoryErrors(pub Vec<InventoryError>);

impl fmt::Display for InventoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the inventory has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub credential_id: String,
    pub owner: Option<String>,
    pub principal: Option<String>,
    /// Lowercase: api_key, agent_token, aws_access_key, aws_role, service_account, oauth_token, …
    pub kind: Option<String>,
    pub created_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub allowed_actions: Vec<Action>,
    pub allowed_models: Vec<String>,
    pub allowed_tools: Vec<String>,
    pub allowed_resources: Vec<String>,
    pub allowed_regions: Vec<String>,
    /// Where it was declared (CSV line or TOML entry), for messages.
    pub line: u64,
}

/// An `allowed_resources` pattern as [`scope_allows`] reads it. Resources
/// are declared as prefixes (`mailto:` allows `mailto:team@acme.com`,
/// `slack://#data` allows `slack://#data-eng`), as people write them; `=`
/// pins one exact resource. Models, tools, actions and regions stay exact
/// unless they end in `*`: a model name that is a prefix of another is a
/// different model.
pub fn resource_pattern(p: &str) -> String {
    if p.starts_with(PIN) || p.ends_with('*') { p.to_string() } else { format!("{p}*") }
}

/// Whether `allowed_resources` patterns allow a resource (prefixes, `=` pins).
pub fn resource_allows<S: AsRef<str>>(patterns: &[S], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| pattern_matches(&resource_pattern(p.as_ref()), value))
}

impl Credential {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_ms)
    }

    pub fn is_not_yet_valid(&self, now_ms: i64) -> bool {
        self.created_at.is_some_and(|c| c > now_ms)
    }

    pub fn allows_action(&self, a: Action) -> bool {
        self.allowed_actions.is_empty() || self.allowed_actions.contains(&a)
    }

    pub fn allows_model(&self, m: &str) -> bool {
        scope_allows(&self.allowed_models, m)
    }

    pub fn allows_tool(&self, t: &str) -> bool {
        scope_allows(&self.allowed_tools, t)
    }

    pub fn allows_resource(&self, r: &str) -> bool {
        resource_allows(&self.allowed_resources, r)
    }

    pub fn allows_region(&self, r: &str) -> bool {
        scope_allows(&self.allowed_regions, r)
    }
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub credentials: Vec<Credential>,
    index: HashMap<String, usize>,
}

/// One row as written, before validation; shared by CSV and TOML.
#[derive(Debug, Default, Deserialize)]
struct RawRow {
    credential_id: Option<String>,
    owner: Option<String>,
    principal: Option<String>,
    kind: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    allowed_actions: Option<StrOrList>,
    #[serde(default)]
    allowed_models: Option<StrOrList>,
    #[serde(default)]
    allowed_tools: Option<StrOrList>,
    #[serde(default)]
    allowed_resources: Option<StrOrList>,
    #[serde(default)]
    allowed_regions: Option<StrOrList>,
}

/// TOML rows are strict about their keys (a typo must not silently widen a scope).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlRow {
    credential_id: Option<String>,
    owner: Option<String>,
    principal: Option<String>,
    kind: Option<String>,
    created_at: Option<toml::Value>,
    expires_at: Option<toml::Value>,
    allowed_actions: Option<StrOrList>,
    allowed_models: Option<StrOrList>,
    allowed_tools: Option<StrOrList>,
    allowed_resources: Option<StrOrList>,
    allowed_regions: Option<StrOrList>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StrOrList {
    One(String),
    Many(Vec<String>),
}

impl StrOrList {
    /// CSV cells (and TOML strings) list entries separated by `;` or `|`.
    fn items(self) -> Vec<String> {
        let v = match self {
            StrOrList::One(s) => s.split([';', '|']).map(str::to_string).collect(),
            StrOrList::Many(v) => v,
        };
        v.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    credential: Vec<TomlRow>,
}

fn toml_date(v: Option<toml::Value>) -> Option<String> {
    match v? {
        toml::Value::String(s) => Some(s),
        toml::Value::Datetime(d) => Some(d.to_string()),
        other => Some(other.to_string()),
    }
}

impl Inventory {
    /// Loads and validates an inventory (`.csv` or `.toml`), reporting every problem.
    pub fn load(path: &Path) -> Result<Inventory, InventoryErrors> {
        let file = path.display().to_string();
        let err = |line, field: &str, message: String| InventoryError {
            file: file.clone(),
            line,
            field: field.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| InventoryErrors(vec![err(0, "file", e.to_string())]))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let rows: Vec<(u64, RawRow)> = match ext.as_str() {
            "toml" => {
                let parsed: TomlFile = toml::from_str(&text).map_err(|e| {
                    let line = e.span().map_or(0, |s| text[..s.start].lines().count().max(1) as u64);
                    InventoryErrors(vec![err(line, "toml", e.message().to_string())])
                })?;
                parsed
                    .credential
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let raw = RawRow {
                            credential_id: r.credential_id,
                            owner: r.owner,
                            principal: r.principal,
                            kind: r.kind,
                            created_at: toml_date(r.created_at),
                            expires_at: toml_date(r.expires_at),
                            allowed_actions: r.allowed_actions,
                            allowed_models: r.allowed_models,
                            allowed_tools: r.allowed_tools,
                            allowed_resources: r.allowed_resources,
                            allowed_regions: r.allowed_regions,
                        };
                        (i as u64 + 1, raw)
                    })
                    .collect()
            }
            "csv" => {
                let mut rdr =
                    csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(text.as_bytes());
                let headers =
                    rdr.headers().map_err(|e| InventoryErrors(vec![err(1, "header", e.to_string())]))?.clone();
                if !headers.iter().any(|h| h == "credential_id") {
                    return Err(InventoryErrors(vec![err(
                        1,
                        "header",
                        "missing the required column `credential_id`".into(),
                    )]));
                }
                let mut rows = Vec::new();
                let mut problems = Vec::new();
                for rec in rdr.records() {
                    match rec {
                        Ok(r) => {
                            let line = r.position().map_or(0, |p| p.line());
                            let get = |name: &str| {
                                headers.iter().position(|h| h == name).and_then(|i| r.get(i)).map(str::to_string)
                            };
                            let list = |name: &str| get(name).map(StrOrList::One);
                            rows.push((
                                line,
                                RawRow {
                                    credential_id: get("credential_id"),
                                    owner: get("owner"),
                                    principal: get("principal"),
                                    kind: get("kind"),
                                    created_at: get("created_at"),
                                    expires_at: get("expires_at"),
                                    allowed_actions: list("allowed_actions"),
                                    allowed_models: list("allowed_models"),
                                    allowed_tools: list("allowed_tools"),
                                    allowed_resources: list("allowed_resources"),
                                    allowed_regions: list("allowed_regions"),
                                },
                            ));
                        }
                        Err(e) => {
                            let line = e.position().map_or(0, |p| p.line());
                            problems.push(err(line, "row", e.to_string()));
                        }
                    }
                }
                if !problems.is_empty() {
                    return Err(InventoryErrors(problems));
                }
                rows
            }
            other => {
                return Err(InventoryErrors(vec![err(
                    0,
                    "file",
                    format!("unsupported inventory format {other:?}: use .csv or .toml"),
                )]));
            }
        };

        let mut problems = Vec::new();
        let mut credentials: Vec<Credential> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (line, raw) in rows {
            let before = problems.len();
            let id = raw.credential_id.unwrap_or_default().trim().to_string();
            if id.is_empty() {
                problems.push(err(line, "credential_id", "is empty".into()));
            } else if let Some(&first) = index.get(&id) {
                let first_line = credentials[first].line;
                problems.push(err(
                    line,
                    "credential_id",
                    format!("{id:?} is listed twice (first at line {first_line})"),
                ));
            }
            let mut date = |field: &str, v: Option<String>| -> Option<i64> {
                let v = v.filter(|s| !s.trim().is_empty())?;
                let parsed = parse_date_or_ts(&v);
                if parsed.is_none() {
                    problems.push(err(line, field, format!("{v:?} is not a date (use YYYY-MM-DD or RFC 3339)")));
                }
                parsed
            };
            let created_at = date("created_at", raw.created_at);
            let expires_at = date("expires_at", raw.expires_at);
            if let (Some(c), Some(e)) = (created_at, expires_at)
                && e < c
            {
                problems.push(err(
                    line,
                    "expires_at",
                    format!("{} is before created_at {}", format_ms(e), format_ms(c)),
                ));
            }
            let mut allowed_actions = Vec::new();
            for a in raw.allowed_actions.map(StrOrList::items).unwrap_or_default() {
                match a.parse::<Action>() {
                    Ok(a) => allowed_actions.push(a),
                    Err(e) => problems.push(err(line, "allowed_actions", e.to_string())),
                }
            }
            if problems.len() > before {
                continue;
            }
            let text = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
            index.insert(id.clone(), credentials.len());
            credentials.push(Credential {
                credential_id: id,
                owner: text(raw.owner),
                principal: text(raw.principal),
                kind: text(raw.kind).map(|k| k.to_ascii_lowercase()),
                created_at,
                expires_at,
                allowed_actions,
                allowed_models: raw.allowed_models.map(StrOrList::items).unwrap_or_default(),
                allowed_tools: raw.allowed_tools.map(StrOrList::items).unwrap_or_default(),
                allowed_resources: raw.allowed_resources.map(StrOrList::items).unwrap_or_default(),
                allowed_regions: raw.allowed_regions.map(StrOrList::items).unwrap_or_default(),
                line,
            });
        }
        if !problems.is_empty() {
            return Err(InventoryErrors(problems));
        }
        Ok(Inventory { path: path.to_path_buf(), credentials, index })
    }

    pub fn get(&self, credential_id: &str) -> Option<&Credential> {
        self.index.get(credential_id).map(|&i| &self.credentials[i])
    }

    pub fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        Arc::new(Schema::new(vec![
            Field::new("credential_id", DataType::Utf8, false),
            Field::new("owner", DataType::Utf8, true),
            Field::new("principal", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, true),
            Field::new("created_at", ts.clone(), true),
            Field::new("expires_at", ts, true),
            Field::new("allowed_actions", list(), false),
            Field::new("allowed_models", list(), false),
            Field::new("allowed_tools", list(), false),
            Field::new("allowed_resources", list(), false),
            Field::new("allowed_regions", list(), false),
            // `allowed_resources` as `scope_allows` reads them (prefixes made explicit).
            Field::new("resource_scope", list(), false),
        ]))
    }

    /// The inventory as a table (for the lake's `credentials` table).
    pub fn to_record_batch(&self) -> RecordBatch {
        let c = &self.credentials;
        let strs =
            |f: fn(&Credential) -> Option<&str>| -> ArrayRef { Arc::new(c.iter().map(f).collect::<StringArray>()) };
        let times = |f: fn(&Credential) -> Option<i64>| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(c.iter().map(f).collect::<Vec<_>>()).with_timezone("UTC"))
        };
        let lists = |f: &dyn Fn(&Credential) -> Vec<String>| -> ArrayRef {
            let mut b = ListBuilder::new(StringBuilder::new());
            for cred in c {
                for v in f(cred) {
                    b.values().append_value(v);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        };
        let columns = vec![
            strs(|x| Some(&x.credential_id)),
            strs(|x| x.owner.as_deref()),
            strs(|x| x.principal.as_deref()),
            strs(|x| x.kind.as_deref()),
            times(|x| x.created_at),
            times(|x| x.expires_at),
            lists(&|x| x.allowed_actions.iter().map(|a| a.to_string()).collect()),
            lists(&|x| x.allowed_models.clone()),
            lists(&|x| x.allowed_tools.clone()),
            lists(&|x| x.allowed_resources.clone()),
            lists(&|x| x.allowed_regions.clone()),
            lists(&|x| x.allowed_resources.iter().map(|p| resource_pattern(p)).collect()),
        ];
        RecordBatch::try_new(Self::schema(), columns).expect("inventory columns match their schema")
    }

    /// Registers the inventory in a session as the [`TABLE`] `credentials`.
    pub fn register(&self, ctx: &SessionContext) -> Result<(), EngineError> {
        engine::replace_table(ctx, TABLE, Self::schema(), vec![self.to_record_batch()])
    }
}

/// How a credential was used, as the lake saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub events: u64,
}

/// First and last use and event count of every credential in the lake,
/// queried as `sessions` say.
pub async fn credential_usage(
    root: &Path,
    sessions: &engine::EngineOptions,
) -> Result<HashMap<String, Usage>, EngineError> {
    let ctx = engine::context_with(root, sessions).await?;
    let sql = "SELECT credential_id AS id, min(ts) AS first_seen, max(ts) AS last_seen, \
               count(*) AS events FROM events GROUP BY 1";
    let batches = engine::collect(&ctx, sql).await?;
    let mut out = HashMap::new();
    for b in &batches {
        // Cast rather than assume: DataFusion may hand back dictionary or view arrays.
        let utf8 = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let id = utf8(0)?;
        let id = id.as_string::<i32>();
        let first = b.column(1).as_primitive::<TimestampMillisecondType>();
        let last = b.column(2).as_primitive::<TimestampMillisecondType>();
        let n = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if id.is_null(i) {
                continue;
            }
            out.insert(
                id.value(i).to_string(),
                Usage { first_seen_ms: first.value(i), last_seen_ms: last.value(i), events: n.value(i) as u64 },
            );
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub now_ms: i64,
    pub max_age_days: u32,
    pub expiring_within_days: u32,
}

/// Governance findings, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    ExpiredButUsed,
    Unknown,
    Expired,
    Ownerless,
    LongLived,
    ExpiringSoon,
    NeverUsed,
    /// Out-of-scope use that is the credential's standing behaviour (as
    /// `detect` found it): the inventory or the caller is wrong.
    InventoryMismatch,
}

impl FindingKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FindingKind::ExpiredButUsed => "expired_but_used",
            FindingKind::Unknown => "unknown",
            FindingKind::Expired => "expired",
            FindingKind::Ownerless => "ownerless",
            FindingKind::LongLived => "long_lived",
            FindingKind::ExpiringSoon => "expiring_soon",
            FindingKind::NeverUsed => "never_used",
            FindingKind::InventoryMismatch => "inventory_mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub credential_id: String,
    pub owner: Option<String>,
    /// One sentence a person can act on, with the numbers.
    pub detail: String,
}

fn day(ms: i64) -> String {
    crate::time::day_of(ms)
}

/// Reports what the inventory (and, given usage from the lake, the traffic)
/// says needs attention. `usage` is `None` when no lake was given: the
/// usage-based findings are then not evaluated.
pub fn check(inv: &Inventory, usage: Option<&HashMap<String, Usage>>, opts: &CheckOptions) -> Vec<Finding> {
    let now = opts.now_ms;
    let mut out = Vec::new();
    let mut push = |kind, c: &Credential, detail: String| {
        out.push(Finding { kind, credential_id: c.credential_id.clone(), owner: c.owner.clone(), detail })
    };
    for c in &inv.credentials {
        let used = usage.and_then(|u| u.get(&c.credential_id));
        if c.owner.is_none() {
            push(FindingKind::Ownerless, c, "no owner: nobody is accountable for rotating or revoking it".into());
        }
        if let Some(exp) = c.expires_at {
            if exp <= now {
                let ago = (now - exp) / DAY_MS;
                match used.filter(|u| u.last_seen_ms > exp) {
                    Some(u) => push(
                        FindingKind::ExpiredButUsed,
                        c,
                        format!(
                            "expired {} but used until {} ({} events in the lake): the key still works or the inventory is wrong",
                            day(exp),
                            format_ms(u.last_seen_ms),
                            u.events
                        ),
                    ),
                    None => push(
                        FindingKind::Expired,
                        c,
                        format!("expired {} ({ago} days ago): revoke it and remove it", day(exp)),
                    ),
                }
            } else if exp - now < opts.expiring_within_days as i64 * DAY_MS {
                let days = (exp - now) / DAY_MS;
                push(FindingKind::ExpiringSoon, c, format!("expires {} (in {days} days): plan the rotation", day(exp)));
            }
        }
        if let Some(created) = c.created_at {
            let age = (now - created) / DAY_MS;
            if age > opts.max_age_days as i64 && !c.is_expired(now) {
                let expiry = match c.expires_at {
                    Some(e) => format!("expires {}", day(e)),
                    None => "no expiry".to_string(),
                };
                push(
                    FindingKind::LongLived,
                    c,
                    format!(
                        "created {}, {age} days ago (max age {} days), {expiry}: rotate it",
                        day(created),
                        opts.max_age_days
                    ),
                );
            }
        }
        if let Some(u) = usage
            && !u.contains_key(&c.credential_id)
            && !c.is_expired(now)
        {
            push(FindingKind::NeverUsed, c, "no events in the lake: if nothing needs it, revoke it".into());
        }
    }
    if let Some(u) = usage {
        let mut unknown: Vec<(&String, &Usage)> = u.iter().filter(|(id, _)| inv.get(id).is_none()).collect();
        unknown.sort_by(|a, b| a.0.cmp(b.0));
        for (id, us) in unknown {
            out.push(Finding {
                kind: FindingKind::Unknown,
                credential_id: id.clone(),
                owner: None,
                detail: format!(
                    "not in the inventory but used {} times from {} to {}: find its owner or revoke it",
                    us.events,
                    format_ms(us.first_seen_ms),
                    format_ms(us.last_seen_ms)
                ),
            });
        }
    }
    out.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.credential_id.cmp(&b.credential_id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    const HEADER: &str = "credential_id,owner,principal,kind,created_at,expires_at,allowed_actions,allowed_models,allowed_tools,allowed_resources,allowed_regions\n";

    #[test]
    fn loads_csv_and_toml_alike() {
        let csv = format!(
            "{HEADER}key_a,ml@example.com,agent:triage,Agent_Token,2026-01-01,2027-01-01,inference;tool_call,gpt-4o*,github.*|jira.search,s3://team/,eu-west-1\nkey_b,,svc:etl,api_key,2026-02-01T10:00:00Z,,,,,,\n"
        );
        let (_d, p) = write("inv.csv", &csv);
        let inv = Inventory::load(&p).unwrap();
        let toml_text = r#"
[[credential]]
credential_id = "key_a"
owner = "ml@example.com"
principal = "agent:triage"
kind = "Agent_Token"
created_at = 2026-01-01
expires_at = "2027-01-01"
allowed_actions = ["inference", "tool_call"]
allowed_models = "gpt-4o*"
allowed_tools = ["github.*", "jira.search"]
allowed_resources = ["s3://team/"]
allowed_regions = ["eu-west-1"]

[[credential]]
credential_id = "key_b"
principal = "svc:etl"
kind = "api_key"
created_at = "2026-02-01T10:00:00Z"
"#;
        let (_d2, p2) = write("inv.toml", toml_text);
        let inv2 = Inventory::load(&p2).unwrap();
        for inv in [&inv, &inv2] {
            let a = inv.get("key_a").unwrap();
            assert_eq!(a.kind.as_deref(), Some("agent_token"));
            assert_eq!(a.allowed_actions, vec![Action::Inference, Action::ToolCall]);
            assert_eq!(a.allowed_tools, vec!["github.*", "jira.search"]);
            assert_eq!(a.expires_at, parse_date_or_ts("2027-01-01"));
            let b = inv.get("key_b").unwrap();
            assert_eq!((b.owner.as_ref(), b.expires_at), (None, None));
            assert!(b.allowed_models.is_empty());
        }
        assert_eq!(inv.get("key_a").unwrap().line, 2);
        assert_eq!(inv.to_record_batch().num_rows(), 2);
    }

    #[test]
    fn every_problem_is_reported_with_line_and_field() {
        let csv = format!(
            "{HEADER}key_a,o,p,api_key,2026-01-01,,,,,,\n,o,p,api_key,,,,,,,\nkey_c,o,p,api_key,2026-13-01,,,,,,\nkey_d,o,p,api_key,2026-05-01,2026-04-01,delete,,,,\nkey_a,o,p,api_key,,,,,,,\n"
        );
        let (_d, p) = write("bad.csv", &csv);
        let errs = Inventory::load(&p).unwrap_err().0;
        let got: Vec<(u64, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (3, "credential_id"),
                (4, "created_at"),
                (5, "expires_at"),
                (5, "allowed_actions"),
                (6, "credential_id")
            ]
        );
        assert!(errs[4].message.contains("first at line 2"));
        assert!(errs[0].to_string().starts_with(&format!("{}:3: credential_id:", p.display())));
        let (_d, p) = write("nohdr.csv", "id,owner\nx,y\n");
        assert!(Inventory::load(&p).unwrap_err().0[0].message.contains("credential_id"));
        let (_d, p) = write("typo.toml", "[[credential]]\ncredential_id = \"k\"\nallowed_tool = [\"x\"]\n");
        assert!(Inventory::load(&p).unwrap_err().to_string().contains("allowed_tool"));
    }

    #[test]
    fn scope_patterns() {
        let c = Credential {
            credential_id: "k".into(),
            owner: None,
            principal: None,
            kind: None,
            created_at: None,
            expires_at: None,
            allowed_actions: vec![Action::Read],
            allowed_models: vec!["gpt-4o*".into(), "claude-haiku-4".into()],
            allowed_tools: vec![],
            allowed_resources: vec![
                "s3://team/".into(),
                "github://acme/*".into(),
                "=db://exact".into(),
                "mailto:".into(),
                "slack://#data".into(),
            ],
            allowed_regions: vec![],
            line: 1,
        };
        assert!(c.allows_action(Action::Read) && !c.allows_action(Action::Admin));
        assert!(c.allows_model("gpt-4o-mini") && c.allows_model("claude-haiku-4"));
        assert!(!c.allows_model("claude-haiku-4-5") && !c.allows_model("gpt-4"));
        assert!(c.allows_tool("anything"), "an empty list does not restrict");
        assert!(c.allows_resource("s3://team/a/b.csv") && c.allows_resource("github://acme/x"));
        assert!(!c.allows_resource("s3://teamx/a"));
        // Resources are prefixes as written; `=` pins one exact value.
        assert!(c.allows_resource("mailto:team@acme.com") && c.allows_resource("slack://#data-eng"));
        assert!(c.allows_resource("db://exact") && !c.allows_resource("db://exactly"));
        assert!(!c.allows_resource("slack://#random") && !c.allows_resource("mail:x"));
        // A pin is exact even where the plain pattern would be a prefix.
        assert!(scope_allows(&["=s3://b/"], "s3://b/") && !scope_allows(&["=s3://b/"], "s3://b/k"));
        assert!(resource_allows(&["=gpt*"], "gpt*") && !resource_allows(&["=gpt*"], "gpt-4"));
        // The table's `resource_scope` column is what the SQL function matches resources with.
        let sql_patterns: Vec<String> = c.allowed_resources.iter().map(|p| resource_pattern(p)).collect();
        for v in ["mailto:a@b", "db://exactly", "db://exact", "s3://team/x", "s3://teamx/a", "slack://#dat"] {
            assert_eq!(scope_allows(&sql_patterns, v), c.allows_resource(v), "{v}");
        }
    }

    #[test]
    fn check_reports_each_kind_and_nothing_for_a_healthy_key() {
        let now = parse_date_or_ts("2026-11-25").unwrap();
        let csv = format!(
            "{HEADER}healthy,a@x,p,api_key,2026-11-01,2027-01-30,,,,,\n\
             ownerless,,p,api_key,2026-11-01,2027-01-30,,,,,\n\
             expired,a@x,p,api_key,2026-10-01,2026-11-10,,,,,\n\
             expired_used,a@x,p,api_key,2026-10-01,2026-11-10,,,,,\n\
             soon,a@x,p,api_key,2026-11-01,2026-12-01,,,,,\n\
             old,a@x,p,api_key,2025-01-01,,,,,,\n\
             idle,a@x,p,api_key,2026-11-01,2027-01-30,,,,,\n"
        );
        let (_d, p) = write("inv.csv", &csv);
        let inv = Inventory::load(&p).unwrap();
        let u = |last: &str| Usage {
            first_seen_ms: now - 5 * DAY_MS,
            last_seen_ms: parse_date_or_ts(last).unwrap(),
            events: 7,
        };
        let usage: HashMap<String, Usage> = [
            ("healthy", u("2026-11-24")),
            ("ownerless", u("2026-11-24")),
            ("expired", u("2026-11-09")),
            ("expired_used", u("2026-11-20")),
            ("soon", u("2026-11-24")),
            ("old", u("2026-11-24")),
            ("shadow", u("2026-11-24")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let opts = CheckOptions { now_ms: now, max_age_days: 90, expiring_within_days: 14 };
        let got: Vec<(FindingKind, String)> =
            check(&inv, Some(&usage), &opts).into_iter().map(|f| (f.kind, f.credential_id)).collect();
        let want = vec![
            (FindingKind::ExpiredButUsed, "expired_used".to_string()),
            (FindingKind::Unknown, "shadow".into()),
            (FindingKind::Expired, "expired".into()),
            (FindingKind::Ownerless, "ownerless".into()),
            (FindingKind::LongLived, "old".into()),
            (FindingKind::ExpiringSoon, "soon".into()),
            (FindingKind::NeverUsed, "idle".into()),
        ];
        assert_eq!(got, want);
        // Without a lake, usage findings are not guessed.
        let kinds: Vec<FindingKind> = check(&inv, None, &opts).into_iter().map(|f| f.kind).collect();
        assert!(!kinds.contains(&FindingKind::NeverUsed) && !kinds.contains(&FindingKind::Unknown));
        assert!(kinds.contains(&FindingKind::Expired));
    }
}

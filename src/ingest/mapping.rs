//! Field mappings: a small TOML file of JSON paths → canonical fields, so a
//! log of another source ingests without code changes.
//!
//! ```toml
//! name = "acme-proxy"                 # becomes the events' `source`
//! description = "what this log is"
//!
//! [match]                             # how a file of this source is recognised (all must hold)
//! has = ["when", "key.id"]            # paths that must be present and not null
//! equals = { object = "audit_log" }   # paths that must hold these strings
//!
//! [fields]
//! ts = { path = "when", time = "epoch_ms" }    # auto | rfc3339 | epoch_s | epoch_ms | epoch_us | a strftime pattern
//! request_id = "rid"                           # one path (dots separate keys, numbers index arrays)
//! credential_id = ["key.id", "user.id"]        # the first path that is present wins
//! provider = { value = "internal" }            # a constant
//! tool = { path = "route", template = "acme:{}" }
//! action = { path = "verb", map = { "GET" = "read", "POST*" = "write" }, default = "tool_call" }
//! cost_usd = { path = "micros", scale = 0.000001 }
//! ```
//!
//! A table spec takes `path` or `paths`, or `value`; then optionally `map`
//! (keys are exact values or globs with `*`; an exact key wins, then the
//! longest pattern), `default` (when nothing resolved or nothing in `map`
//! matched), `template` (`{}` is the value), `time` (for `ts`) and `scale`
//! (for numbers). `ts` and `credential_id` are required; a record without a
//! credential falls back to its `principal`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::pattern::name_matches;
use crate::schema::{Action, Event, Rejected};
use crate::time::{self, TimeFormat};

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("{origin}: {source}")]
    Io { origin: String, source: std::io::Error },
    #[error("{origin}: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: field `{field}`: {message}")]
    Field { origin: String, field: String, message: String },
}

/// The canonical fields a mapping can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ts,
    RequestId,
    CredentialId,
    Principal,
    SessionId,
    SourceIp,
    UserAgent,
    Provider,
    Model,
    Action,
    Tool,
    Resource,
    Status,
    ErrorCode,
    LatencyMs,
    TokensIn,
    TokensOut,
    CostUsd,
    Region,
    AccountId,
    Detail,
}

const TARGETS: &[(&str, Target)] = &[
    ("ts", Target::Ts),
    ("request_id", Target::RequestId),
    ("credential_id", Target::CredentialId),
    ("principal", Target::Principal),
    ("session_id", Target::SessionId),
    ("source_ip", Target::SourceIp),
    ("user_agent", Target::UserAgent),
    ("provider", Target::Provider),
    ("model", Target::Model),
    ("action", Target::Action),
    ("tool", Target::Tool),
    ("resource", Target::Resource),
    ("status", Target::Status),
    ("error_code", Target::ErrorCode),
    ("latency_ms", Target::LatencyMs),
    ("tokens_in", Target::TokensIn),
    ("tokens_out", Target::TokensOut),
    ("cost_usd", Target::CostUsd),
    ("region", Target::Region),
    ("account_id", Target::AccountId),
    ("detail", Target::Detail),
];

impl Target {
    fn is_numeric(self) -> bool {
        matches!(self, Target::Status | Target::LatencyMs | Target::TokensIn | Target::TokensOut | Target::CostUsd)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

type JsonPath = Vec<Seg>;

fn parse_path(p: &str) -> JsonPath {
    p.split('.')
        .map(|s| match s.parse::<usize>() {
            Ok(i) => Seg::Index(i),
            Err(_) => Seg::Key(s.to_string()),
        })
        .collect()
}

fn lookup<'a>(v: &'a Value, path: &JsonPath) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Object(m)) => m.get(k)?,
            // A numeric segment may also be an object key ("0").
            (Seg::Index(i), Value::Object(m)) => m.get(&i.to_string())?,
            (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// How one canonical field is computed from a record.
#[derive(Debug, Clone)]
struct FieldSpec {
    target: Target,
    paths: Vec<JsonPath>,
    path_names: Vec<String>,
    constant: Option<String>,
    /// (pattern, value), exact patterns first, then longer before shorter.
    map: Vec<(String, String)>,
    default: Option<String>,
    template: Option<String>,
    time: TimeFormat,
    scale: Option<f64>,
}

/// A value as resolved from a record, before it is typed for its field.
enum Resolved<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Json(&'a Value),
}

impl Resolved<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            Resolved::Str(s) => Cow::Borrowed(s),
            Resolved::Num(n) => Cow::Owned(n.to_string()),
            Resolved::Json(v) => Cow::Owned(v.to_string()),
        }
    }
}

impl FieldSpec {
    fn resolve<'a>(&self, v: &'a Value) -> Option<Resolved<'a>> {
        let raw: Option<Resolved<'a>> = match &self.constant {
            Some(c) => Some(Resolved::Str(Cow::Owned(c.clone()))),
            None => self.paths.iter().find_map(|p| match lookup(v, p)? {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(Resolved::Str(Cow::Borrowed(s.as_str()))),
                Value::Number(n) => n.as_f64().map(Resolved::Num),
                Value::Bool(b) => Some(Resolved::Str(Cow::Borrowed(if *b { "true" } else { "false" }))),
                other => Some(Resolved::Json(other)),
            }),
        };
        let value = if self.map.is_empty() {
            raw
        } else {
            raw.and_then(|r| {
                let key = r.text();
                self.map
                    .iter()
                    .find(|(p, _)| name_matches(p, &key))
                    .map(|(_, out)| Resolved::Str(Cow::Owned(out.clone())))
            })
        };
        let value = value.or_else(|| self.default.clone().map(|d| Resolved::Str(Cow::Owned(d))))?;
        match &self.template {
            Some(t) => Some(Resolved::Str(Cow::Owned(t.replace("{}", &value.text())))),
            None => Some(value),
        }
    }

    fn tried(&self) -> String {
        if self.path_names.is_empty() { "its constant".to_string() } else { self.path_names.join(", ") }
    }
}

/// A loaded field mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub name: String,
    pub description: Option<String>,
    has: Vec<JsonPath>,
    equals: Vec<(JsonPath, String)>,
    fields: Vec<FieldSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    name: String,
    description: Option<String>,
    #[serde(rename = "match", default)]
    matcher: MatchFile,
    fields: toml::Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    #[serde(default)]
    has: Vec<String>,
    #[serde(default)]
    equals: BTreeMap<String, String>,
}

const SPEC_KEYS: &[&str] = &["path", "paths", "value", "map", "default", "template", "time", "scale"];

fn scalar_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Mapping {
    pub fn from_file(path: &Path) -> Result<Mapping, MappingError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| MappingError::Io { origin: origin.clone(), source })?;
        Mapping::from_toml(&text, &origin)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Mapping, MappingError> {
        let file: MappingFile = toml::from_str(text)
            .map_err(|e| MappingError::Toml { origin: origin.to_string(), message: e.to_string() })?;
        let field_err = |field: &str, message: String| MappingError::Field {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let mut fields = Vec::new();
        for (name, spec) in &file.fields {
            let target = TARGETS.iter().find(|(n, _)| n == name).map(|(_, t)| *t).ok_or_else(|| {
                let known: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
                field_err(name, format!("not a canonical field (known: {})", known.join(", ")))
            })?;
            fields.push(parse_spec(target, spec).map_err(|m| field_err(name, m))?);
        }
        for required in [Target::Ts, Target::CredentialId] {
            if !fields.iter().any(|f| f.target == required) {
                let name = TARGETS.iter().find(|(_, t)| *t == required).map_or("?", |(n, _)| n);
                return Err(field_err(name, "is required in every mapping".into()));
            }
        }
        Ok(Mapping {
            name: file.name,
            description: file.description,
            has: file.matcher.has.iter().map(|p| parse_path(p)).collect(),
            equals: file.matcher.equals.iter().map(|(p, v)| (parse_path(p), v.clone())).collect(),
            fields,
        })
    }

    /// Whether a record is of this mapping's source. A mapping with an
    /// empty `[match]` never claims a record: it must be chosen with `--format`.
    pub fn matches(&self, v: &Value) -> bool {
        if self.has.is_empty() && self.equals.is_empty() {
            return false;
        }
        self.has.iter().all(|p| lookup(v, p).is_some_and(|x| !x.is_null()))
            && self.equals.iter().all(|(p, want)| lookup(v, p).and_then(Value::as_str) == Some(want.as_str()))
    }

    pub fn map<'a>(&self, v: &'a Value) -> Result<Event<'a>, Rejected> {
        if !v.is_object() {
            return Err(Rejected::new("not a JSON object"));
        }
        let mut e = Event::default();
        let mut have_ts = false;
        for f in &self.fields {
            let Some(r) = f.resolve(v) else {
                if f.target == Target::Ts {
                    return Err(Rejected(format!("ts: no value at {}", f.tried())));
                }
                continue;
            };
            apply(f, r, &mut e).map_err(|m| Rejected(format!("{}: {m}", target_name(f.target))))?;
            have_ts |= f.target == Target::Ts;
        }
        debug_assert!(have_ts);
        if e.credential_id.is_empty() {
            match &e.principal {
                Some(p) => e.credential_id = p.clone(),
                None => {
                    let spec = self.fields.iter().find(|f| f.target == Target::CredentialId).expect("checked at load");
                    return Err(Rejected(format!("credential_id: no value at {} and no principal", spec.tried())));
                }
            }
        }
        Ok(e)
    }
}

fn target_name(t: Target) -> &'static str {
    TARGETS.iter().find(|(_, x)| *x == t).map_or("?", |(n, _)| n)
}

fn parse_spec(target: Target, spec: &toml::Value) -> Result<FieldSpec, String> {
    let mut f = FieldSpec {
        target,
        paths: Vec::new(),
        path_names: Vec::new(),
        constant: None,
        map: Vec::new(),
        default: None,
        template: None,
        time: TimeFormat::Auto,
        scale: None,
    };
    let strings = |v: &toml::Value| -> Result<Vec<String>, String> {
        match v {
            toml::Value::String(s) => Ok(vec![s.clone()]),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(|| "paths must be strings".to_string()))
                .collect(),
            _ => Err("expected a path string or an array of paths".into()),
        }
    };
    match spec {
        toml::Value::String(_) | toml::Value::Array(_) => f.path_names = strings(spec)?,
        toml::Value::Table(t) => {
            if let Some(bad) = t.keys().find(|k| !SPEC_KEYS.contains(&k.as_str())) {
                return Err(format!("unknown key `{bad}` (expected one of {})", SPEC_KEYS.join(", ")));
            }
            for key in ["path", "paths"] {
                if let Some(p) = t.get(key) {
                    f.path_names.extend(strings(p)?);
                }
            }
            if let Some(c) = t.get("value") {
                f.constant = Some(scalar_string(c).ok_or("`value` must be a string, number or boolean")?);
            }
            if let Some(d) = t.get("default") {
                f.default = Some(scalar_string(d).ok_or("`default` must be a string, number or boolean")?);
            }
            if let Some(tpl) = t.get("template") {
                let tpl = tpl.as_str().ok_or("`template` must be a string")?;
                if !tpl.contains("{}") {
                    return Err("`template` must contain `{}` where the value goes".into());
                }
                f.template = Some(tpl.to_string());
            }
            if let Some(m) = t.get("map") {
                let m = m.as_table().ok_or("`map` must be a table of pattern = value")?;
                for (k, v) in m {
                    f.map.push((k.clone(), scalar_string(v).ok_or("`map` values must be strings or numbers")?));
                }
                // Exact keys first, then the most specific (longest) pattern.
                f.map.sort_by(|(a, _), (b, _)| {
                    a.contains('*').cmp(&b.contains('*')).then(b.len().cmp(&a.len())).then(a.cmp(b))
                });
            }
            if let Some(tf) = t.get("time") {
                if target != Target::Ts {
                    return Err("`time` applies to `ts` only".into());
                }
                f.time = TimeFormat::deserialize(tf.clone()).map_err(|e| format!("bad `time`: {e}"))?;
            }
            if let Some(s) = t.get("scale") {
                if !target.is_numeric() {
                    return Err("`scale` applies to numeric fields only".into());
                }
                f.scale = Some(match s {
                    toml::Value::Float(x) => *x,
                    toml::Value::Integer(i) => *i as f64,
                    _ => return Err("`scale` must be a number".into()),
                });
            }
        }
        _ => return Err("expected a path, an array of paths, or a table".into()),
    }
    if f.path_names.is_empty() && f.constant.is_none() && f.default.is_none() {
        return Err("needs a `path`, `paths`, `value` or `default`".into());
    }
    if f.constant.is_some() && !f.path_names.is_empty() {
        return Err("has both a constant `value` and paths".into());
    }
    f.paths = f.path_names.iter().map(|p| parse_path(p)).collect();
    if target == Target::Action {
        // Every value the field can take must be an action, checked now.
        let fixed = f.constant.iter().chain(f.default.iter()).chain(f.map.iter().map(|(_, v)| v));
        for v in fixed {
            if f.template.is_none() {
                v.parse::<Action>().map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(f)
}

fn number(r: &Resolved<'_>, scale: Option<f64>) -> Result<f64, String> {
    let n = match r {
        Resolved::Num(n) => *n,
        Resolved::Str(s) => s.trim().parse::<f64>().map_err(|_| format!("{:?} is not a number", short(s)))?,
        Resolved::Json(v) => return Err(format!("{} is not a number", short(&v.to_string()))),
    };
    let n = n * scale.unwrap_or(1.0);
    if n.is_finite() { Ok(n) } else { Err("is not a finite number".into()) }
}

fn short(s: &str) -> &str {
    crate::ingest::gateway::truncate(s, 64)
}

fn whole<T: TryFrom<i64>>(n: f64, what: &str) -> Result<T, String> {
    if n < 0.0 {
        return Err(format!("{n} is negative"));
    }
    T::try_from(n.round() as i64).map_err(|_| format!("{n} is out of range for {what}"))
}

fn apply<'a>(f: &FieldSpec, r: Resolved<'a>, e: &mut Event<'a>) -> Result<(), String> {
    let s = |r: Resolved<'a>| -> Cow<'a, str> {
        match r {
            Resolved::Str(s) => s,
            Resolved::Num(n) => Cow::Owned(n.to_string()),
            Resolved::Json(v) => Cow::Owned(v.to_string()),
        }
    };
    match f.target {
        Target::Ts => {
            e.ts_ms = match &r {
                Resolved::Num(n) => time::from_epoch_number(*n, &f.time),
                Resolved::Str(t) => time::parse_with(t, &f.time),
                Resolved::Json(_) => None,
            }
            .ok_or_else(|| format!("{:?} is not a timestamp", short(&r.text())))?;
        }
        Target::RequestId => e.request_id = Some(s(r)),
        Target::CredentialId => e.credential_id = s(r),
        Target::Principal => e.principal = Some(s(r)),
        Target::SessionId => e.session_id = Some(s(r)),
        Target::SourceIp => e.source_ip = Some(s(r)),
        Target::UserAgent => e.user_agent = Some(s(r)),
        Target::Provider => e.provider = Some(s(r)),
        Target::Model => e.model = Some(s(r)),
        Target::Action => e.action = Some(r.text().parse::<Action>().map_err(|err| err.to_string())?),
        Target::Tool => e.tool = Some(s(r)),
        Target::Resource => e.resource = Some(s(r)),
        Target::ErrorCode => e.error_code = Some(s(r)),
        Target::Region => e.region = Some(s(r)),
        Target::AccountId => e.account_id = Some(s(r)),
        Target::Detail => e.detail = Some(s(r)),
        Target::Status => e.status = Some(whole(number(&r, f.scale)?, "an HTTP status")?),
        Target::LatencyMs => e.latency_ms = Some(whole(number(&r, f.scale)?, "milliseconds")?),
        Target::TokensIn => e.tokens_in = Some(whole(number(&r, f.scale)?, "tokens")?),
        Target::TokensOut => e.tokens_out = Some(whole(number(&r, f.scale)?, "tokens")?),
        Target::CostUsd => {
            let c = number(&r, f.scale)?;
            if c < 0.0 {
                return Err(format!("{c} is negative"));
            }
            e.cost_usd = Some(c);
        }
    }
    Ok(())
}

/// The mappings shipped in `mappings/`, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("mappings/bedrock-invocation.toml", include_str!("../../mappings/bedrock-invocation.toml")),
    ("mappings/openai-audit.toml", include_str!("../../mappings/openai-audit.toml")),
    ("mappings/anthropic-activity.toml", include_str!("../../mappings/anthropic-activity.toml")),
    ("mappings/litellm-spend.toml", include_str!("../../mappings/litellm-spend.toml")),
];

pub fn builtin() -> Vec<Mapping> {
    BUILTIN
        .iter()
        .map(|(origin, text)| Mapping::from_toml(text, origin).expect("built-in mappings are valid (tested)"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn jsonl_gz(name: &str) -> Vec<Value> {
        let path = format!("{}/tests/fixtures/panther/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn by_name(name: &str) -> Mapping {
        builtin().into_iter().find(|m| m.name == name).unwrap()
    }

    #[test]
    fn each_panther_sample_matches_only_its_mapping_and_maps_whole() {
        for (file, name, count) in [
            ("bedrock-invocation.jsonl.gz", "bedrock-invocation", 8),
            ("openai-audit.jsonl.gz", "openai-audit", 33),
            ("anthropic-activity.jsonl.gz", "anthropic-activity", 38),
        ] {
            let records = jsonl_gz(file);
            assert_eq!(records.len(), count);
            for r in &records {
                for m in builtin() {
                    assert_eq!(m.matches(r), m.name == name, "{} on a {name} record", m.name);
                }
                let e = by_name(name).map(r).unwrap_or_else(|err| panic!("{name}: {err}: {r}"));
                assert!(!e.credential_id.is_empty());
                assert!(e.action.is_some() && e.tool.is_some());
            }
        }
    }

    #[test]
    fn cloudtrail_records_match_no_mapping() {
        let path = format!("{}/tests/fixtures/panther/cloudtrail.json.gz", env!("CARGO_MANIFEST_DIR"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        for r in doc["Records"].as_array().unwrap() {
            assert!(builtin().iter().all(|m| !m.matches(r)));
        }
    }

    #[test]
    fn openai_fields_by_hand() {
        let records = jsonl_gz("openai-audit.jsonl.gz");
        let m = by_name("openai-audit");
        let session = m.map(&records[0]).unwrap();
        assert_eq!(session.ts_ms, 1_702_857_600_000);
        assert_eq!(session.credential_id, "user-admin123");
        assert_eq!(session.principal.as_deref(), Some("admin@company.com"));
        assert_eq!(session.source_ip.as_deref(), Some("203.0.113.100"));
        assert_eq!(session.tool.as_deref(), Some("openai:role.assignment.created"));
        assert_eq!(session.action, Some(Action::Admin));
        let by_key = records.iter().find(|r| r["actor"]["type"] == "api_key").unwrap();
        let e = m.map(by_key).unwrap();
        assert!(e.credential_id.starts_with("key-"), "{}", e.credential_id);
        let failed = records.iter().find(|r| r["type"] == "login.failed").unwrap();
        let e = m.map(failed).unwrap();
        assert_eq!((e.action, e.status), (Some(Action::Auth), Some(401)));
    }

    #[test]
    fn anthropic_unauthenticated_actor_still_maps() {
        let records = jsonl_gz("anthropic-activity.jsonl.gz");
        let m = by_name("anthropic-activity");
        let r = records.iter().find(|r| r["actor"]["type"] == "unauthenticated_user_actor").unwrap();
        let e = m.map(r).unwrap();
        assert_eq!(e.credential_id, "unauthenticated");
        assert_eq!(e.status, Some(401));
        let api = records.iter().find(|r| r["actor"]["type"] == "api_actor").unwrap();
        assert_eq!(m.map(api).unwrap().credential_id, api["actor"]["api_key_id"].as_str().unwrap());
    }

    #[test]
    fn bedrock_tokens_and_model() {
        let records = jsonl_gz("bedrock-invocation.jsonl.gz");
        let e = by_name("bedrock-invocation").map(&records[0]).unwrap();
        assert_eq!(e.model.as_deref(), Some("anthropic.claude-3-haiku-20240307-v1:0"));
        assert_eq!(e.action, Some(Action::Inference));
        assert_eq!(e.tool.as_deref(), Some("bedrock:Converse"));
        assert_eq!(e.latency_ms, Some(249));
        assert_eq!(e.ts_ms, time::parse_ts("2025-05-15T14:17:22Z").unwrap());
        let list = records.iter().find(|r| r["operation"] == "ListModels").unwrap();
        assert_eq!(by_name("bedrock-invocation").map(list).unwrap().action, Some(Action::Read));
    }

    #[test]
    fn litellm_spend_logs() {
        let path = format!("{}/tests/fixtures/litellm/spend_logs.jsonl", env!("CARGO_MANIFEST_DIR"));
        let m = by_name("litellm-spend");
        let text = std::fs::read_to_string(path).unwrap();
        let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(records.len() >= 3);
        let mut failures = 0;
        for r in &records {
            assert!(m.matches(r));
            let e = m.map(r).unwrap();
            assert!(e.cost_usd.is_some() && e.tokens_in.is_some() && e.model.is_some());
            assert_eq!(e.credential_id, r["api_key"].as_str().unwrap());
            failures += (e.status == Some(500)) as usize;
        }
        assert_eq!(failures, 1);
    }

    const TOY: &str = r#"
name = "toy"
[match]
has = ["t"]
equals = { kind = "toy" }
[fields]
ts = { path = "t", time = "epoch_s" }
credential_id = ["key.id", "key.alt"]
principal = "who"
action = { path = "verb", map = { "get" = "read", "get*" = "tool_call", "*" = "write" } }
tool = { path = "verb", template = "toy:{}" }
cost_usd = { path = "micros", scale = 0.000001 }
status = "code"
provider = { value = "internal" }
"#;

    #[test]
    fn spec_forms_and_precedence() {
        let m = Mapping::from_toml(TOY, "toy.toml").unwrap();
        let v = serde_json::json!({"kind": "toy", "t": 1700000000, "key": {"alt": "k2"}, "verb": "get", "micros": 2500, "code": "404"});
        assert!(m.matches(&v));
        assert!(!m.matches(&serde_json::json!({"kind": "other", "t": 1})));
        let e = m.map(&v).unwrap();
        assert_eq!(e.credential_id, "k2");
        assert_eq!(e.action, Some(Action::Read), "exact key beats patterns");
        assert_eq!(e.tool.as_deref(), Some("toy:get"));
        assert_eq!(e.cost_usd, Some(0.0025));
        assert_eq!(e.status, Some(404));
        assert_eq!(e.provider.as_deref(), Some("internal"));
        let v2 = serde_json::json!({"t": 1700000000, "key": {"id": "k1"}, "verb": "getx"});
        assert_eq!(m.map(&v2).unwrap().action, Some(Action::ToolCall), "longer pattern beats `*`");
        // Principal stands in for a missing credential.
        let v3 = serde_json::json!({"t": 1700000000, "who": "svc:a", "verb": "put"});
        assert_eq!(m.map(&v3).unwrap().credential_id, "svc:a");
        let none = serde_json::json!({"t": 1700000000});
        assert!(m.map(&none).unwrap_err().0.contains("credential_id"));
        let bad_ts = serde_json::json!({"t": "soon", "key": {"id": "k"}});
        assert!(m.map(&bad_ts).unwrap_err().0.starts_with("ts:"));
        let no_ts = serde_json::json!({"key": {"id": "k"}});
        assert!(m.map(&no_ts).unwrap_err().0.starts_with("ts:"));
        let neg = serde_json::json!({"t": 1, "key": {"id": "k"}, "code": -1});
        assert!(m.map(&neg).unwrap_err().0.starts_with("status:"));
    }

    #[test]
    fn bad_mappings_name_the_field() {
        let cases = [
            (TOY.replace("principal = \"who\"", "principle = \"who\""), "principle"),
            (TOY.replace("credential_id = [\"key.id\", \"key.alt\"]", ""), "credential_id"),
            (TOY.replace("\"*\" = \"write\"", "\"*\" = \"delete\""), "action"),
            (TOY.replace("template = \"toy:{}\"", "template = \"toy\""), "tool"),
            (TOY.replace("scale = 0.000001", "scale = 0.000001, colour = 1"), "cost_usd"),
            (TOY.replace("name = \"toy\"", "name = \"toy\"\nnmae = 1"), "nmae"),
        ];
        for (text, needle) in cases {
            let err = Mapping::from_toml(&text, "toy.toml").unwrap_err().to_string();
            assert!(err.contains(needle) && err.starts_with("toy.toml"), "{needle}: {err}");
        }
    }
}

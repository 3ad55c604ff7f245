//! Batch detection: each detector is a SQL query (kept in `queries/`,
//! compiled in, overridable from a directory) whose rows Rust turns into
//! explainable alerts, written to the lake's `alerts/` a day at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, TimestampMillisecondType};

use crate::alert::{self, Alert, MAX_EVIDENCE, Severity};
use crate::inventory::{Inventory, InventoryErrors};
use crate::lake::{self, Lake, LakeError};
use crate::sql::{self, SqlError};
use crate::time::{format_ms, parse_date_or_ts};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Inventory(#[from] InventoryErrors),
    #[error("{0:?} is not a date (YYYY-MM-DD)")]
    BadDate(String),
    #[error("--from {0} is after --to {1}")]
    EmptyRange(String, String),
    #[error("{path}: {source}")]
    Query { path: PathBuf, source: std::io::Error },
    #[error("query {name}: column {column} is missing or of the wrong type")]
    Shape { name: String, column: String },
}

#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub lake: PathBuf,
    /// First and last day (YYYY-MM-DD, inclusive).
    pub from: String,
    pub to: String,
    pub inventory: Option<PathBuf>,
    /// A directory of `<detector>.sql` files that replace the built-in queries.
    pub queries: Option<PathBuf>,
}

#[derive(Debug)]
pub struct DetectReport {
    pub alerts: Vec<Alert>,
    pub days: Vec<String>,
    /// Detectors that could not run, and why (e.g. no inventory).
    pub skipped: Vec<(String, String)>,
}

/// A detector: its query and how it explains a group of the query's rows.
struct Detector {
    name: &'static str,
    sql: &'static str,
    needs_inventory: bool,
    explain: fn(&Group<'_>) -> Explained,
}

const DETECTORS: &[Detector] = &[
    Detector {
        name: "out_of_scope",
        sql: include_str!("../queries/out_of_scope.sql"),
        needs_inventory: true,
        explain: explain_out_of_scope,
    },
    Detector {
        name: "secret_exposure",
        sql: include_str!("../queries/secret_exposure.sql"),
        needs_inventory: false,
        explain: explain_secret_exposure,
    },
    Detector {
        name: "defense_evasion",
        sql: include_str!("../queries/defense_evasion.sql"),
        needs_inventory: false,
        explain: explain_defense_evasion,
    },
];

fn day_list(from: &str, to: &str) -> Result<Vec<String>, DetectError> {
    let parse =
        |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| DetectError::BadDate(s.to_string()));
    let (a, b) = (parse(from)?, parse(to)?);
    if a > b {
        return Err(DetectError::EmptyRange(from.into(), to.into()));
    }
    Ok(a.iter_days().take_while(|d| *d <= b).map(|d| d.format("%Y-%m-%d").to_string()).collect())
}

/// Runs every detector over the days and replaces those days' alerts in the lake.
pub async fn detect(opts: &DetectOptions) -> Result<DetectReport, DetectError> {
    let days = day_list(&opts.from, &opts.to)?;
    let ctx = sql::context(&opts.lake).await?;
    let inventory = opts.inventory.as_deref().map(Inventory::load).transpose()?;
    if let Some(inv) = &inventory {
        sql::register_inventory(&ctx, inv)?;
    }
    let mut alerts = Vec::new();
    let mut skipped = Vec::new();
    for d in DETECTORS {
        if d.needs_inventory && inventory.is_none() {
            skipped.push((d.name.to_string(), "needs a credential inventory (--inventory)".to_string()));
            continue;
        }
        let text = query_text(d, opts.queries.as_deref())?;
        let text = text.replace("{from}", &days[0]).replace("{to}", &days[days.len() - 1]);
        let batches = ctx.sql(&text).await.map_err(SqlError::from)?.collect().await.map_err(SqlError::from)?;
        alerts.extend(grouped_alerts(d, &batches)?);
    }
    alerts.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then(a.window_start_ms.cmp(&b.window_start_ms)).then(a.alert_id.cmp(&b.alert_id))
    });
    write_alerts(&opts.lake, &days, &alerts)?;
    Ok(DetectReport { alerts, days, skipped })
}

/// Every built-in detector's name and query (with its `{from}`/`{to}` day
/// placeholders), for the SQL shell's `detector_<name>` views.
pub fn detector_queries() -> Vec<(&'static str, &'static str)> {
    DETECTORS.iter().map(|d| (d.name, d.sql)).collect()
}

fn query_text(d: &Detector, dir: Option<&Path>) -> Result<String, DetectError> {
    if let Some(dir) = dir {
        let path = dir.join(format!("{}.sql", d.name));
        if path.exists() {
            return std::fs::read_to_string(&path).map_err(|source| DetectError::Query { path, source });
        }
    }
    Ok(d.sql.to_string())
}

/// Replaces the alerts of `days` with `alerts`, atomically.
fn write_alerts(root: &Path, days: &[String], alerts: &[Alert]) -> Result<(), DetectError> {
    let lake = Lake::open(root)?;
    let txn = lake.begin()?;
    let mut by_day: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
    for a in alerts {
        by_day.entry(crate::time::day_of(a.window_start_ms)).or_default().push(a.clone());
    }
    for day in days {
        let dir = format!("{}/date={day}", lake::ALERTS);
        txn.replace(lake::committed_files(&lake, &dir, "parquet"));
        if let Some(list) = by_day.get(day) {
            let rel = txn.reserve(&dir, "parquet");
            let batch = alert::to_batch(list);
            lake::write_parquet_staged(&lake, &rel, batch.schema(), &[batch], lake::writer_properties(&[]))?;
        }
    }
    txn.commit(Vec::new())?;
    Ok(())
}

/// Column `name` of a query result as strings, whatever string encoding
/// DataFusion chose.
fn strings(b: &RecordBatch, query: &str, name: &str) -> Result<StringArray, DetectError> {
    let shape = || DetectError::Shape { name: query.into(), column: name.into() };
    let col = b.column_by_name(name).ok_or_else(shape)?;
    let cast = arrow::compute::cast(col, &DataType::Utf8).map_err(|_| shape())?;
    Ok(cast.as_string::<i32>().clone())
}

fn times(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<i64>, DetectError> {
    let shape = || DetectError::Shape { name: query.into(), column: name.into() };
    let col = b.column_by_name(name).ok_or_else(shape)?;
    let ms = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into()));
    let cast = arrow::compute::cast(col, &ms).map_err(|_| shape())?;
    Ok(cast.as_primitive::<TimestampMillisecondType>().values().to_vec())
}

/// One row of a detector query: a request that is evidence of something.
/// Every detector query returns these columns: `credential_id, principal,
/// ts, request_id, source_ip, finding, value, allowed`.
struct Row {
    ts: i64,
    request_id: Option<String>,
    source_ip: Option<String>,
    principal: Option<String>,
    value: String,
    /// What the finding was compared with (a scope, a field name, …).
    allowed: Option<String>,
}

/// Rows that make one alert: a credential, a finding, a group of values, a day.
struct Group<'a> {
    cred: &'a str,
    finding: &'a str,
    group: &'a str,
    rows: &'a [Row],
    /// Up to three source addresses, for the explanation.
    ips: String,
}

/// How a detector words and rates one group.
struct Explained {
    severity: Severity,
    observed: String,
    baseline: String,
    explanation: String,
    mitre: &'static str,
    owasp: &'static str,
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

/// The one mechanism every detector shares: group its rows per credential,
/// finding, value group and day, and let it explain each group.
fn grouped_alerts(d: &Detector, batches: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
    let q = d.name;
    let mut groups: BTreeMap<(String, String, String, String), Vec<Row>> = BTreeMap::new();
    for b in batches {
        let cred = strings(b, q, "credential_id")?;
        let finding = strings(b, q, "finding")?;
        let value = strings(b, q, "value")?;
        let allowed = strings(b, q, "allowed")?;
        let req = strings(b, q, "request_id")?;
        let ip = strings(b, q, "source_ip")?;
        let principal = strings(b, q, "principal")?;
        let ts = times(b, q, "ts")?;
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        for (i, &t) in ts.iter().enumerate() {
            if cred.is_null(i) || finding.is_null(i) {
                continue;
            }
            let v = opt(&value, i).unwrap_or_default();
            let key = (
                cred.value(i).to_string(),
                finding.value(i).to_string(),
                group_key(finding.value(i), &v),
                crate::time::day_of(t),
            );
            groups.entry(key).or_default().push(Row {
                ts: t,
                request_id: opt(&req, i),
                source_ip: opt(&ip, i),
                principal: opt(&principal, i),
                value: v,
                allowed: opt(&allowed, i),
            });
        }
    }
    let mut out = Vec::new();
    for ((cred, finding, group, _day), mut rows) in groups {
        rows.sort_by_key(|x| x.ts);
        let ips: std::collections::BTreeSet<&str> = rows.iter().filter_map(|x| x.source_ip.as_deref()).collect();
        let ips = if ips.is_empty() {
            "an unknown address".to_string()
        } else {
            ips.into_iter().take(3).collect::<Vec<_>>().join(", ")
        };
        let g = Group { cred: &cred, finding: &finding, group: &group, rows: &rows, ips };
        let e = (d.explain)(&g);
        let (first, last) = (&rows[0], &rows[rows.len() - 1]);
        out.push(Alert {
            alert_id: alert::alert_id(d.name, &cred, &format!("{finding}:{group}"), first.ts),
            detector: d.name,
            finding: finding.clone(),
            severity: e.severity,
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
            mitre_attack: Some(e.mitre),
            owasp_nhi: Some(e.owasp),
        });
    }
    Ok(out)
}

fn explain_out_of_scope(g: &Group<'_>) -> Explained {
    let (cred, n, ips, first) = (g.cred, g.rows.len(), &g.ips, &g.rows[0]);
    let allowed = first.allowed.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "(none listed)".into());
    let declared = parse_date_or_ts(&first.value).map(format_ms).unwrap_or_else(|| first.value.clone());
    match g.finding {
        "expired_credential" => Explained {
            severity: Severity::High,
            observed: format!("{n} requests after expiry"),
            baseline: format!("inventory: expires {declared}"),
            explanation: format!(
                "{cred} was used {n} times after it expired ({declared}), from {ips}: revoke it and find who holds it"
            ),
            mitre: "T1078.004 Valid Accounts: Cloud Accounts",
            owasp: "NHI1:2025 Improper Offboarding",
        },
        "not_yet_valid" => Explained {
            severity: Severity::High,
            observed: format!("{n} requests before the credential was issued"),
            baseline: format!("inventory: created {declared}"),
            explanation: format!("{cred} was used {n} times before it was issued ({declared}), from {ips}"),
            mitre: "T1078.004 Valid Accounts: Cloud Accounts",
            owasp: "NHI4:2025 Insecure Authentication",
        },
        finding => {
            let what = finding.trim_end_matches("_outside_scope");
            let shown = if what == "resource" { format!("{}…", g.group) } else { g.group.to_string() };
            Explained {
                severity: match (what, first.value.as_str()) {
                    ("action", "admin") | ("resource", _) => Severity::High,
                    _ => Severity::Medium,
                },
                observed: format!("{n} requests with {what} {shown}"),
                baseline: format!("inventory allows {what}s: {allowed}"),
                explanation: format!(
                    "{cred} made {n} requests with {what} {shown}, outside its declared scope ({allowed}), from {ips}"
                ),
                mitre: match what {
                    "resource" if g.group.starts_with("s3://") => "T1530 Data from Cloud Storage",
                    "resource" => "T1213 Data from Information Repositories",
                    "action" => "T1098 Account Manipulation",
                    _ => "T1078.004 Valid Accounts: Cloud Accounts",
                },
                owasp: "NHI5:2025 Overprivileged NHI",
            }
        }
    }
}

fn explain_secret_exposure(g: &Group<'_>) -> Explained {
    let n = g.rows.len();
    let (kind, fingerprint) = g.group.split_once(':').unwrap_or((g.group, "?"));
    let fields: std::collections::BTreeSet<&str> = g.rows.iter().filter_map(|r| r.allowed.as_deref()).collect();
    let fields = fields.into_iter().collect::<Vec<_>>().join(", ");
    Explained {
        severity: Severity::Critical,
        observed: format!("{n} logged requests carried a {kind} (fingerprint {fingerprint}) in {fields}"),
        baseline: "a secret never belongs in a log".into(),
        explanation: format!(
            "a {kind} (fingerprint {fingerprint}) appeared in {fields} of {n} logged requests of {}: anyone who reads \
             these logs holds it; rotate it and fix the caller that logs it (credtrail stored it redacted)",
            g.cred
        ),
        mitre: "T1552.001 Unsecured Credentials: Credentials In Files",
        owasp: "NHI2:2025 Secret Leakage",
    }
}

fn explain_defense_evasion(g: &Group<'_>) -> Explained {
    let n = g.rows.len();
    let target = g.rows.iter().find_map(|r| r.allowed.clone()).map(|t| format!(" on {t}")).unwrap_or_default();
    let what =
        if g.group.starts_with("bedrock:") { "disabling AI logging or guardrails" } else { "disabling audit logging" };
    Explained {
        severity: Severity::High,
        observed: format!("{n} × {}{target}", g.group),
        baseline: "AI guardrails and model-invocation logging are changed by change management, not by workload keys"
            .into(),
        explanation: format!(
            "{} called {}{target} {n} time(s) from {}: {what} is how a stolen key hides its use; confirm the change \
             or revoke the key",
            g.cred, g.group, g.ips
        ),
        mitre: "T1562.008 Impair Defenses: Disable or Modify Cloud Logs",
        owasp: "NHI5:2025 Overprivileged NHI",
    }
}

/// The first and last day that hold events, for detecting a whole lake.
pub async fn lake_days(root: &Path) -> Result<Option<(String, String)>, DetectError> {
    let ctx = sql::context(root).await?;
    let b = ctx
        .sql("SELECT min(date) AS a, max(date) AS b FROM events")
        .await
        .map_err(SqlError::from)?
        .collect()
        .await
        .map_err(SqlError::from)?;
    let Some(b) = b.first() else { return Ok(None) };
    let a = strings(b, "days", "a")?;
    let z = strings(b, "days", "b")?;
    if a.is_empty() || a.is_null(0) {
        return Ok(None);
    }
    Ok(Some((a.value(0).to_string(), z.value(0).to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_ranges() {
        assert_eq!(day_list("2026-11-30", "2026-12-02").unwrap(), vec!["2026-11-30", "2026-12-01", "2026-12-02"]);
        assert!(matches!(day_list("2026-12-02", "2026-11-30"), Err(DetectError::EmptyRange(..))));
        assert!(matches!(day_list("yesterday", "2026-11-30"), Err(DetectError::BadDate(_))));
    }

    #[test]
    fn resources_group_by_directory() {
        assert_eq!(group_key("resource_outside_scope", "s3://finance/2026/q1.csv"), "s3://finance/2026/");
        assert_eq!(group_key("model_outside_scope", "gpt-4.5"), "gpt-4.5");
    }
}

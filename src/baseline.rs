//! Per-credential baselines learned from the lake's history: what normal
//! looks like for each key, so detectors compare a day with the key's own
//! past instead of with fixed thresholds.
//!
//! `credtrail baseline --until D` learns from the days before and including
//! D and saves a version of four tables under the lake's `models/`, keyed by
//! `until=D` (so detecting day D+1 uses exactly the history before it, and
//! analysts can query every version):
//!
//! ```text
//! models/credentials/until=D/…parquet   hourly volume, tokens, cost, errors: robust statistics
//! models/profile/until=D/…parquet       the same per hour of day / hour of week (seasonality)
//! models/scope/until=D/…parquet         learned scope: networks, models, tools, resources, …
//! models/transitions/until=D/…parquet   tool-transition counts of agent sessions per principal
//! ```
//!
//! The window's rows come from per-day partial aggregates ([`daily`], under
//! `models/daily/`): each day's events are aggregated once, when a baseline
//! first needs the day, and a version merges its window's partials, so a
//! nightly baseline scans one new day. Events committed into a day later
//! recompute that day's partials only. `BaselineOptions::rescan`
//! (`credtrail baseline --rescan`) learns from one scan of the window's
//! events instead: the reference the partials are tested against.
//!
//! **Tolerance.** The partials are exact (hourly rows, per-minute error
//! counts, scope values with counts, transition counts; no sketches), so a
//! merged version equals a rescan's value for value, with two exceptions:
//! - floating-point sums (cost per hour, and the statistics over them) may
//!   differ in the last bits, as DataFusion may add in another order; the
//!   test allows a relative 1e-9, which two rescans can differ by as well;
//! - a Bedrock call whose CloudTrail record and invocation-log record fall on
//!   two UTC days (seconds apart around midnight) is de-duplicated within a
//!   day only, so its tokens and cost count once on each day's record
//!   instead of once on the key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{Datelike, NaiveDate, Timelike};
use datafusion::prelude::SessionContext;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, Median, OrderStatistics};

use crate::columns::{self, ShapeError};
use crate::engine::catalog::{self, BASELINE_CREDENTIALS};
use crate::engine::{self, EngineError, EngineOptions};
use crate::lake::{self, Lake, LakeError};
use crate::time::{DAY_MS, HOUR_MS};

pub mod daily;

/// Bumped when the meaning or layout of the model tables changes.
pub const MODEL_VERSION: u32 = 1;
/// Below these a credential is in cold start: its statistics say too little.
pub const MIN_DAYS: u32 = 2;
pub const MIN_REQUESTS: u64 = 10;
/// Observations a seasonal slot needs before it is trusted over the overall figure.
const MIN_SLOT_OBSERVATIONS: usize = 3;

/// As written: [`hourly_sql`] is the text that runs.
const HOURLY_TEMPLATE: &str = include_str!("../queries/baseline_hourly.sql");
const ERROR_MINUTES_SQL: &str = include_str!("../queries/baseline_error_minutes.sql");
const SCOPE_SQL: &str = include_str!("../queries/baseline_scope.sql");
const TRANSITIONS_SQL: &str = include_str!("../queries/baseline_transitions.sql");

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("{0:?} is not a date (YYYY-MM-DD)")]
    BadDate(String),
    #[error("--days must be at least 1")]
    NoDays,
    #[error("--days {0} reaches before the first date credtrail can represent; pass fewer days")]
    TooManyDays(u32),
    #[error("the lake has no events up to {0}: nothing to learn a baseline from")]
    NoHistory(String),
    #[error("building model table {table}: {source}")]
    Arrow { table: &'static str, source: arrow::error::ArrowError },
    #[error("reading model table {table}: {source}")]
    Read { table: &'static str, source: serde_json::Error },
    #[error(
        "{}: baseline until={until} was written by model version {found}; this credtrail reads version {MODEL_VERSION} — rerun `credtrail baseline`",
        path.display()
    )]
    Version { path: PathBuf, until: String, found: u32 },
    #[error("a baseline task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub lake: PathBuf,
    /// The last day of history (inclusive).
    pub until: String,
    /// How many days of history, ending at `until`.
    pub days: u32,
    /// Learn from one scan of the whole window's events (the exact reference
    /// the per-day partials are checked against) instead of merging them.
    pub rescan: bool,
    /// Where the queries run (a cluster, say).
    pub engine: EngineOptions,
}

/// Robust statistics of one hourly metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    /// Median absolute deviation (unscaled).
    pub mad: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        let mut d = Data::new(values.to_vec());
        let median = d.median();
        let dev = Data::new(values.iter().map(|v| (v - median).abs()).collect::<Vec<_>>());
        Stats {
            median,
            mad: dev.median(),
            p95: d.quantile(0.95),
            p99: d.quantile(0.99),
            max: values.iter().copied().fold(f64::MIN, f64::max),
            mean: values.iter().sum::<f64>() / values.len() as f64,
        }
    }
}

/// One credential's baseline: a row of `models/credentials`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CredentialBaseline {
    pub model_version: u32,
    pub credential_id: String,
    pub principal: Option<String>,
    pub history_from: String,
    pub history_to: String,
    /// Days with at least one request.
    pub days_seen: u32,
    /// Hours from the first request in the window to its end: the hours
    /// the statistics are over (quiet hours count, as zeros).
    pub hours: u32,
    pub requests: u64,
    /// Too little history to judge by: detectors fall back to absolute floors
    /// and do not report first-seen values.
    pub cold_start: bool,
    pub requests_per_hour: Stats,
    pub tokens_per_hour: Stats,
    pub cost_per_hour: Stats,
    pub errors_per_hour: Stats,
    /// Errors per request over the whole history.
    pub error_rate: f64,
    /// The largest and the 99th-percentile error count in one minute.
    pub error_minute_max: f64,
    pub error_minute_p99: f64,
}

/// Seasonality: a metric's level in one slot of the day or week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSlot {
    pub credential_id: String,
    /// `hour_of_day` (0–23) or `hour_of_week` (0 = Monday 00:00 UTC … 167).
    pub slot_kind: String,
    pub slot: u32,
    pub observations: u32,
    pub tokens_median: f64,
    pub tokens_high: f64,
    pub cost_median: f64,
    pub cost_high: f64,
    pub requests_median: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub principal: String,
    pub from_tool: String,
    pub to_tool: String,
    pub count: u64,
}

/// A principal's tool-transition model: a first-order Markov chain over
/// tools, with `^` (session start) and `$` (session end) as states.
#[derive(Debug, Clone, Default)]
pub struct Markov {
    counts: HashMap<(String, String), u64>,
    out: HashMap<String, u64>,
    /// Calls of each tool, and of all tools.
    calls: HashMap<String, u64>,
    total_calls: u64,
    /// Tools the principal has been seen calling.
    tools: std::collections::BTreeSet<String>,
    pub sessions: u64,
}

/// Add-α smoothing: an unseen transition keeps a small, nonzero probability.
const ALPHA: f64 = 0.1;

impl Markov {
    pub fn add(&mut self, from: &str, to: &str, n: u64) {
        *self.counts.entry((from.to_string(), to.to_string())).or_default() += n;
        *self.out.entry(from.to_string()).or_default() += n;
        if to != "$" {
            *self.calls.entry(to.to_string()).or_default() += n;
            self.total_calls += n;
        }
        for t in [from, to] {
            if t != "^" && t != "$" {
                self.tools.insert(t.to_string());
            }
        }
        if from == "^" {
            self.sessions += n;
        }
    }

    /// Adds another principal's counts: a peer group's or the fleet's model.
    pub fn merge(&mut self, other: &Markov) {
        for ((from, to), n) in &other.counts {
            self.add(from, to, *n);
        }
    }

    pub fn count(&self, from: &str, to: &str) -> u64 {
        self.counts.get(&(from.to_string(), to.to_string())).copied().unwrap_or(0)
    }

    /// How often `from` was left: the support behind its probabilities.
    pub fn support(&self, from: &str) -> u64 {
        self.out.get(from).copied().unwrap_or(0)
    }

    /// The most frequent next states after `from`, with their shares.
    pub fn top_next(&self, from: &str, n: usize) -> Vec<(String, f64)> {
        let total = self.support(from).max(1) as f64;
        let mut v: Vec<(String, f64)> = self
            .counts
            .iter()
            .filter(|((f, _), _)| f == from)
            .map(|((_, t), c)| (t.clone(), *c as f64 / total))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Whether the principal (almost) never calls `tool`: a handful of calls,
    /// or a tiny share of all. Such a tool in a dangerous chain stays
    /// suspicious even if an earlier attack on another key taught it once.
    pub fn is_rare(&self, tool: &str) -> bool {
        let n = self.calls.get(tool).copied().unwrap_or(0) as f64;
        n < 3.0_f64.max(0.002 * self.total_calls as f64)
    }

    pub fn knows_tool(&self, tool: &str) -> bool {
        self.tools.contains(tool)
    }

    /// Smoothed P(to | from).
    pub fn probability(&self, from: &str, to: &str) -> f64 {
        // Every known tool and the end state, plus one for the unseen.
        let states = self.tools.len() as f64 + 2.0;
        (self.count(from, to) as f64 + ALPHA) / (self.support(from) as f64 + ALPHA * states)
    }
}

/// A baseline version as the detectors use it.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub until: String,
    pub credentials: HashMap<String, CredentialBaseline>,
    /// Per credential: slot key ([`slot_key`]) → slot.
    pub profile: HashMap<String, HashMap<(bool, u32), ProfileSlot>>,
    pub markov: HashMap<String, Markov>,
    /// The learned scope by value: dimension → value → the credentials that
    /// used it (which peers already use a credential's first-seen value).
    pub used_by: HashMap<String, HashMap<String, std::collections::HashSet<String>>>,
}

/// `(is_hour_of_week, slot)` of a time.
pub fn slot_keys(ts_ms: i64) -> [(bool, u32); 2] {
    let t = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
    let hour = t.hour();
    [(true, t.weekday().num_days_from_monday() * 24 + hour), (false, hour)]
}

impl Baseline {
    /// Whether `cred` used `value` of `dimension` in its learned history.
    pub fn used(&self, cred: &str, dimension: &str, value: &str) -> bool {
        self.used_by.get(dimension).and_then(|v| v.get(value)).is_some_and(|users| users.contains(cred))
    }

    /// The most specific trusted seasonal slot for a credential at a time.
    pub fn slot(&self, credential_id: &str, ts_ms: i64) -> Option<&ProfileSlot> {
        let p = self.profile.get(credential_id)?;
        slot_keys(ts_ms).iter().find_map(|k| p.get(k))
    }
}

#[derive(Debug, Serialize)]
pub struct BaselineSummary {
    pub until: String,
    pub history_from: String,
    pub credentials: usize,
    pub cold_start: usize,
    pub principals: usize,
    pub transitions: usize,
    pub scope_values: usize,
    pub files: Vec<String>,
}

fn parse_day(s: &str) -> Result<NaiveDate, BaselineError> {
    crate::time::parse_day(s).ok_or_else(|| BaselineError::BadDate(s.to_string()))
}

fn day_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis()
}

/// The hourly query with its shared fragments expanded, once (as the
/// detectors' queries are at load).
fn hourly_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| engine::expand_fragments(HOURLY_TEMPLATE));
    &SQL
}

/// Runs `text` (fragments already expanded) over the days `from` to `to`.
async fn query(ctx: &SessionContext, text: &str, from: &str, to: &str) -> Result<Vec<RecordBatch>, BaselineError> {
    let text = text.replace("{from}", from).replace("{to}", to);
    Ok(engine::collect(ctx, &text).await?)
}

/// Where a baseline's hourly, error-minute and scope rows come from: the
/// events of the whole window ([`Source::window`]), or the window's per-day
/// partials ([`daily::MERGED`]).
struct Source {
    hourly: &'static str,
    error_minutes: &'static str,
    scope: &'static str,
}

impl Source {
    fn window() -> Source {
        Source { hourly: hourly_sql(), error_minutes: ERROR_MINUTES_SQL, scope: SCOPE_SQL }
    }
}

/// Learns a baseline from `[until - days + 1, until]` and saves it as
/// version `until`, replacing an earlier one of the same `until`.
pub async fn learn(opts: &BaselineOptions) -> Result<BaselineSummary, BaselineError> {
    if opts.days == 0 {
        return Err(BaselineError::NoDays);
    }
    let until = parse_day(&opts.until)?;
    let from =
        until.checked_sub_days(chrono::Days::new(opts.days as u64 - 1)).ok_or(BaselineError::TooManyDays(opts.days))?;
    let (from_s, until_s) = (from.format("%Y-%m-%d").to_string(), opts.until.clone());
    let window_end = day_ms(until) + DAY_MS;
    let lake = Lake::open(&opts.lake, lake::Open::Read)?;
    let src = if opts.rescan {
        Source::window()
    } else {
        daily::refresh(&lake, from, until, &opts.engine).await?;
        daily::MERGED
    };
    // Opened after the refresh, so the session knows the partials just committed.
    let ctx = engine::context_with(&opts.lake, &opts.engine).await?;
    // The window's four reads are independent: they run together.
    let (batches, minute_batches, scope_batches, mut transitions) = futures::future::try_join4(
        query(&ctx, src.hourly, &from_s, &until_s),
        query(&ctx, src.error_minutes, &from_s, &until_s),
        query(&ctx, src.scope, &from_s, &until_s),
        async {
            match opts.rescan {
                true => window_transitions(&ctx, &from_s, &until_s).await,
                false => daily::transitions(&ctx, &from_s, &until_s).await,
            }
        },
    )
    .await?;

    // Hourly series, zero-filled from each credential's first hour in the window.
    // Per credential: its principal (that of its first hour naming one, and
    // that hour), and hour → [requests, tokens, cost, errors].
    type Series = (Option<(i64, String)>, BTreeMap<i64, [f64; 4]>);
    let mut hourly: BTreeMap<String, Series> = BTreeMap::new();
    columns::row! {
        struct HourRow {
            credential_id: text,
            principal: text,
            hour: time,
            requests: float,
            tokens: float,
            cost: float,
            errors: float,
        }
    }
    for r in columns::rows::<HourRow>(&batches, "baseline_hourly") {
        let r = r?;
        let (Some(c), Some(h)) = (r.credential_id, r.hour) else { continue };
        let e = hourly.entry(c).or_insert_with(|| (None, BTreeMap::new()));
        if let Some(p) = r.principal
            && e.0.as_ref().is_none_or(|(at, _)| h < *at)
        {
            e.0 = Some((h, p));
        }
        let f = |v: Option<f64>| v.unwrap_or(0.0);
        e.1.insert(h, [f(r.requests), f(r.tokens), f(r.cost), f(r.errors)]);
    }
    drop(batches);
    if hourly.is_empty() {
        return Err(BaselineError::NoHistory(until_s));
    }
    let mut error_minutes: HashMap<String, Vec<f64>> = HashMap::new();
    columns::row! {
        struct MinuteRow { credential_id: text, errors: float }
    }
    for r in columns::rows::<MinuteRow>(&minute_batches, "baseline_error_minutes") {
        if let MinuteRow { credential_id: Some(c), errors: Some(n) } = r? {
            error_minutes.entry(c).or_default().push(n);
        }
    }
    drop(minute_batches);

    // Each credential's statistics are its own: computed on every core.
    let learned: Vec<(CredentialBaseline, Vec<ProfileSlot>)> = hourly
        .par_iter()
        .map(|(cred, (principal, hours))| {
            let first = *hours.keys().next().expect("a credential has an hour");
            let span: Vec<i64> = (0..).map(|k| first + k * HOUR_MS).take_while(|h| *h < window_end).collect();
            let series = |m: usize| -> Vec<f64> { span.iter().map(|h| hours.get(h).map_or(0.0, |v| v[m])).collect() };
            let (req, tok, cost, err) = (series(0), series(1), series(2), series(3));
            let requests = req.iter().sum::<f64>() as u64;
            let days_seen = {
                let days: std::collections::BTreeSet<i64> = hours.keys().map(|h| h.div_euclid(DAY_MS)).collect();
                days.len() as u32
            };
            let minutes = error_minutes.get(cred).cloned().unwrap_or_default();
            let minute_stats = Stats::of(&minutes);
            let c = CredentialBaseline {
                model_version: MODEL_VERSION,
                credential_id: cred.clone(),
                principal: principal.as_ref().map(|(_, p)| p.clone()),
                history_from: from_s.clone(),
                history_to: until_s.clone(),
                days_seen,
                hours: span.len() as u32,
                requests,
                cold_start: days_seen < MIN_DAYS || requests < MIN_REQUESTS,
                requests_per_hour: Stats::of(&req),
                tokens_per_hour: Stats::of(&tok),
                cost_per_hour: Stats::of(&cost),
                errors_per_hour: Stats::of(&err),
                error_rate: if requests > 0 { err.iter().sum::<f64>() / requests as f64 } else { 0.0 },
                error_minute_max: minute_stats.max.max(0.0),
                error_minute_p99: minute_stats.p99,
            };
            (c, seasonality(cred, &span, &tok, &cost, &req))
        })
        .collect();
    let (creds, profile): (Vec<_>, Vec<_>) = learned.into_iter().unzip();
    let profile: Vec<ProfileSlot> = profile.into_iter().flatten().collect();

    let scope_values = scope_batches.iter().map(RecordBatch::num_rows).sum();
    transitions.sort_by(|a, b| (&a.principal, &a.from_tool, &a.to_tool).cmp(&(&b.principal, &b.from_tool, &b.to_tool)));
    let principals = transitions.iter().map(|t| &t.principal).collect::<std::collections::BTreeSet<_>>().len();

    let scope = scope_table(&scope_batches)?;
    let tables = [
        (BASELINE_CREDENTIALS, credentials_batch(&creds)?),
        (catalog::BASELINE_PROFILE, to_batch("profile", (catalog::BASELINE_PROFILE.schema)(), &profile)?),
        (catalog::BASELINE_SCOPE, scope),
        (
            catalog::BASELINE_TRANSITIONS,
            to_batch("transitions", (catalog::BASELINE_TRANSITIONS.schema)(), &transitions)?,
        ),
    ];
    let files = save(&Lake::open(&opts.lake, lake::Open::Write)?, &format!("{}={until_s}", catalog::UNTIL), tables)?;
    Ok(BaselineSummary {
        until: until_s,
        history_from: from_s,
        credentials: creds.len(),
        cold_start: creds.iter().filter(|c| c.cold_start).count(),
        principals,
        transitions: transitions.len(),
        scope_values,
        files,
    })
}

/// The transition counts of the window's sessions, by one window query over its events.
async fn window_transitions(ctx: &SessionContext, from: &str, to: &str) -> Result<Vec<Transition>, BaselineError> {
    columns::row! {
        struct TransitionRow { principal: text, from_tool: text, to_tool: text, count: int }
    }
    let mut transitions = Vec::new();
    let batches = query(ctx, TRANSITIONS_SQL, from, to).await?;
    for r in columns::rows::<TransitionRow>(&batches, "baseline_transitions") {
        if let TransitionRow { principal: Some(p), from_tool: Some(f), to_tool: Some(t), count: Some(n) } = r? {
            transitions.push(Transition { principal: p, from_tool: f, to_tool: t, count: n as u64 });
        }
    }
    Ok(transitions)
}

/// Saves one batch per table under `<table dir>/<partition>/` in one commit,
/// replacing what that partition held. Returns the files written.
fn save(
    lake: &Lake,
    partition: &str,
    tables: impl IntoIterator<Item = (catalog::Table, RecordBatch)>,
) -> Result<Vec<String>, BaselineError> {
    let txn = lake.begin()?;
    let mut files = Vec::new();
    for (table, batch) in tables {
        let dir = format!("{}/{partition}", table.dir);
        txn.replace(lake::committed_files(lake, &dir, "parquet")?);
        let rel = txn.reserve(&dir, "parquet");
        lake::write_parquet_staged(lake, &rel, batch.schema(), &[batch], lake::writer_properties())?;
        files.push(rel);
    }
    txn.commit(Vec::new())?;
    Ok(files)
}

/// Hour-of-day slots once every hour has been seen a few times; hour-of-week
/// slots once there are a few weeks. Credentials with less get none and are
/// judged by their overall statistics.
fn seasonality(cred: &str, span: &[i64], tok: &[f64], cost: &[f64], req: &[f64]) -> Vec<ProfileSlot> {
    let mut out = Vec::new();
    for week in [false, true] {
        let mut slots: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, h) in span.iter().enumerate() {
            let [(_, w), (_, d)] = slot_keys(*h);
            slots.entry(if week { w } else { d }).or_default().push(i);
        }
        for (slot, idx) in slots {
            if idx.len() < MIN_SLOT_OBSERVATIONS {
                continue;
            }
            let pick = |v: &[f64]| Stats::of(&idx.iter().map(|&i| v[i]).collect::<Vec<_>>());
            let (t, c, r) = (pick(tok), pick(cost), pick(req));
            out.push(ProfileSlot {
                credential_id: cred.to_string(),
                slot_kind: if week { "hour_of_week" } else { "hour_of_day" }.to_string(),
                slot,
                observations: idx.len() as u32,
                tokens_median: t.median,
                tokens_high: t.max,
                cost_median: c.median,
                cost_high: c.max,
                requests_median: r.median,
            });
        }
    }
    out
}

/// Rows of a flat serde struct as a batch of `schema`, serialized straight
/// into the columns (no JSON in between).
fn to_batch<T: Serialize>(table: &'static str, schema: SchemaRef, rows: &[T]) -> Result<RecordBatch, BaselineError> {
    let err = |source| BaselineError::Arrow { table, source };
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone()).build_decoder().map_err(err)?;
    decoder.serialize(rows).map_err(err)?;
    Ok(decoder.flush().map_err(err)?.unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// [`to_batch`] of credential baselines: their nested [`Stats`] become
/// `<field>_<stat>` columns.
fn credentials_batch(creds: &[CredentialBaseline]) -> Result<RecordBatch, BaselineError> {
    let flat: Vec<serde_json::Value> =
        creds.iter().map(|c| flatten(serde_json::to_value(c).expect("rows serialize"))).collect();
    to_batch("credentials", (BASELINE_CREDENTIALS.schema)(), &flat)
}

fn flatten(v: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(m) = v else { return v };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        match v {
            serde_json::Value::Object(inner) => {
                for (ik, iv) in inner {
                    out.insert(format!("{k}_{ik}"), iv);
                }
            }
            v => {
                out.insert(k, v);
            }
        }
    }
    serde_json::Value::Object(out)
}

/// The inverse of [`flatten`] for [`CredentialBaseline`].
fn unflatten(v: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(m) = v else { return v };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        let nested = ["requests_per_hour", "tokens_per_hour", "cost_per_hour", "errors_per_hour"]
            .iter()
            .find_map(|p| k.strip_prefix(p).and_then(|s| s.strip_prefix('_')).map(|s| (*p, s.to_string())));
        match nested {
            Some((p, s)) => {
                let e = out.entry(p.to_string()).or_insert_with(|| serde_json::Value::Object(Default::default()));
                e.as_object_mut().expect("an object").insert(s, v);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    serde_json::Value::Object(out)
}

fn scope_table(batches: &[RecordBatch]) -> Result<RecordBatch, BaselineError> {
    let all = conform("scope", (catalog::BASELINE_SCOPE.schema)(), batches)?;
    let err = |source| BaselineError::Arrow { table: "scope", source };
    // Sorted so a credential's scope is one contiguous, prunable run.
    let sort = arrow::compute::lexsort_to_indices(
        &[0, 1, 2].map(|i| arrow::compute::SortColumn { values: all.column(i).clone(), options: None }),
        None,
    )
    .map_err(err)?;
    arrow::compute::take_record_batch(&all, &sort).map_err(err)
}

/// A query's batches as one batch of `schema`, each column found by name and
/// cast as a whole (query types such as dictionaries or counts become the table's).
fn conform(table: &'static str, schema: SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, BaselineError> {
    let err = |source| BaselineError::Arrow { table, source };
    let mut cast = Vec::new();
    for b in batches {
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                let c = b.column_by_name(f.name()).ok_or_else(|| {
                    err(arrow::error::ArrowError::SchemaError(format!("the {table} query has no column {}", f.name())))
                })?;
                arrow::compute::cast(c, f.data_type()).map_err(err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        cast.push(RecordBatch::try_new(schema.clone(), cols).map_err(err)?);
    }
    arrow::compute::concat_batches(&schema, &cast).map_err(err)
}

/// Rows of a query as serde structs (through JSON: the model tables are small).
fn rows<T: serde::de::DeserializeOwned>(
    table: &'static str,
    batches: &[RecordBatch],
    map: fn(serde_json::Value) -> serde_json::Value,
) -> Result<Vec<T>, BaselineError> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    for b in batches {
        w.write(b).map_err(|source| BaselineError::Arrow { table, source })?;
    }
    w.finish().map_err(|source| BaselineError::Arrow { table, source })?;
    let bytes = w.into_inner();
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_slice(line).map_err(|source| BaselineError::Read { table, source })?;
        out.push(serde_json::from_value(map(v)).map_err(|source| BaselineError::Read { table, source })?);
    }
    Ok(out)
}

/// The versions (`until` days) saved in the lake, oldest first.
pub async fn versions(root: &Path) -> Vec<String> {
    let names = match Lake::open(root, lake::Open::Read) {
        Ok(lake) => lake.subdirs(BASELINE_CREDENTIALS.dir).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut v: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.strip_prefix("until=").map(str::to_string))
        .filter(|d| parse_day(d).is_ok())
        .collect();
    v.sort();
    v
}

/// Whether version `until` predates events it should have learned from:
/// logs that arrived late for a day of its history. Judged by file times, so
/// a late ingest makes the next `detect` relearn instead of judging with a
/// stale baseline.
pub fn is_stale(root: &Path, until: &str) -> bool {
    let Ok(lake) = Lake::open(root, lake::Open::Read) else { return true };
    let learned = lake.list(&format!("{}/until={until}", BASELINE_CREDENTIALS.dir), "parquet");
    let Some(learned) = learned.ok().and_then(|files| files.into_iter().map(|(_, t)| t).max()) else {
        return true;
    };
    let events = lake.list(lake::EVENTS, "parquet").unwrap_or_default();
    // `events/date=D/…`: a day up to `until` written after the baseline.
    events.into_iter().any(|(rel, t)| {
        t > learned && rel.split('/').nth(1).and_then(|d| d.strip_prefix("date=")).is_some_and(|d| d <= until)
    })
}

/// Loads version `until` through a session that has the model tables registered.
pub async fn load(ctx: &SessionContext, root: &Path, until: &str) -> Result<Baseline, BaselineError> {
    let select = |t: &str| format!("SELECT * EXCEPT (until) FROM {t} WHERE until = '{until}'");
    let get =
        async |t: &str| -> Result<Vec<RecordBatch>, BaselineError> { Ok(engine::collect(ctx, &select(t)).await?) };
    let scope_sql =
        format!("SELECT credential_id, dimension, value FROM {} WHERE until = '{until}'", catalog::BASELINE_SCOPE.name);
    // The tables are independent: read together, so one decodes while another is read.
    let (creds, slots, transitions, scope) = futures::future::try_join4(
        get(BASELINE_CREDENTIALS.name),
        get(catalog::BASELINE_PROFILE.name),
        get(catalog::BASELINE_TRANSITIONS.name),
        async { Ok(engine::collect(ctx, &scope_sql).await?) },
    )
    .await?;
    let creds: Vec<CredentialBaseline> = rows("credentials", &creds, unflatten)?;
    if let Some(c) = creds.iter().find(|c| c.model_version != MODEL_VERSION) {
        return Err(BaselineError::Version {
            path: root.join(BASELINE_CREDENTIALS.dir),
            until: until.into(),
            found: c.model_version,
        });
    }
    let slots = profile_slots(&slots)?;
    let transitions: Vec<Transition> = rows("transitions", &transitions, |v| v)?;
    let mut b = Baseline { until: until.to_string(), ..Default::default() };
    for s in slots {
        b.profile.entry(s.credential_id.clone()).or_default().insert((s.slot_kind == "hour_of_week", s.slot), s);
    }
    for t in transitions {
        b.markov.entry(t.principal.clone()).or_default().add(&t.from_tool, &t.to_tool, t.count);
    }
    for batch in scope {
        let q = "scope";
        let cred = columns::strings(&batch, q, "credential_id")?;
        let (dimension, value) = (columns::strings(&batch, q, "dimension")?, columns::strings(&batch, q, "value")?);
        for ((c, d), v) in cred.into_iter().zip(dimension).zip(value) {
            if let (Some(c), Some(d), Some(v)) = (c, d, v) {
                b.used_by.entry(d).or_default().entry(v).or_default().insert(c);
            }
        }
    }
    b.credentials = creds.into_iter().map(|c| (c.credential_id.clone(), c)).collect();
    Ok(b)
}

/// The profile table's rows, read column by column: a profile has hundreds
/// of rows per credential, too many to decode through JSON values.
fn profile_slots(batches: &[RecordBatch]) -> Result<Vec<ProfileSlot>, BaselineError> {
    columns::row! {
        struct SlotRow {
            credential_id: text,
            slot_kind: text,
            slot: int,
            observations: int,
            tokens_median: float,
            tokens_high: float,
            cost_median: float,
            cost_high: float,
            requests_median: float,
        }
    }
    columns::rows::<SlotRow>(batches, "profile")
        .map(|r| {
            let r = r?;
            Ok(ProfileSlot {
                credential_id: r.credential_id.unwrap_or_default(),
                slot_kind: r.slot_kind.unwrap_or_default(),
                slot: r.slot.unwrap_or_default() as u32,
                observations: r.observations.unwrap_or_default() as u32,
                tokens_median: r.tokens_median.unwrap_or_default(),
                tokens_high: r.tokens_high.unwrap_or_default(),
                cost_median: r.cost_median.unwrap_or_default(),
                cost_high: r.cost_high.unwrap_or_default(),
                requests_median: r.requests_median.unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_stats() {
        let s = Stats::of(&[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.mad, 1.0);
        assert_eq!(s.max, 100.0);
        assert!(s.p95 > 4.0);
        assert_eq!(Stats::of(&[]), Stats::default());
    }

    #[test]
    fn markov_smooths_and_counts() {
        let mut m = Markov::default();
        m.add("^", "a", 10);
        m.add("a", "b", 9);
        m.add("a", "a", 1);
        m.add("b", "$", 10);
        assert_eq!(m.sessions, 10);
        assert!(m.probability("a", "b") > 0.8);
        let unseen = m.probability("a", "shell.exec");
        assert!(unseen > 0.0 && unseen < 0.02, "{unseen}");
        assert!(m.knows_tool("a") && !m.knows_tool("shell.exec"));
        assert!(m.is_rare("shell.exec") && !m.is_rare("b"));
        m.add("a", "shell.exec", 1);
        assert!(m.knows_tool("shell.exec") && m.is_rare("shell.exec"), "one call is still rare");
    }

    #[test]
    fn merged_models_sum_their_counts() {
        let (mut a, mut b) = (Markov::default(), Markov::default());
        a.add("^", "x", 3);
        a.add("x", "y", 2);
        b.add("^", "x", 4);
        b.add("x", "z", 5);
        let mut m = Markov::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!((m.sessions, m.count("x", "y"), m.count("x", "z"), m.support("x")), (7, 2, 5, 7));
        assert!(m.knows_tool("y") && m.knows_tool("z"));
    }

    #[test]
    fn flatten_round_trips() {
        let c = CredentialBaseline {
            model_version: MODEL_VERSION,
            credential_id: "k".into(),
            principal: None,
            history_from: "2026-11-01".into(),
            history_to: "2026-11-02".into(),
            days_seen: 2,
            hours: 30,
            requests: 40,
            cold_start: false,
            requests_per_hour: Stats::of(&[1.0, 2.0]),
            tokens_per_hour: Stats::default(),
            cost_per_hour: Stats::default(),
            errors_per_hour: Stats::default(),
            error_rate: 0.1,
            error_minute_max: 3.0,
            error_minute_p99: 2.5,
        };
        let batch = credentials_batch(std::slice::from_ref(&c)).unwrap();
        let back: Vec<CredentialBaseline> = rows("credentials", &[batch], unflatten).unwrap();
        assert_eq!(back, vec![c]);
    }

    #[test]
    fn profile_slots_round_trip_through_their_table() {
        let span: Vec<i64> = (0..24 * 21).map(|h| h * HOUR_MS).collect();
        let tok: Vec<f64> = span.iter().enumerate().map(|(i, _)| (i % 24) as f64 * 10.0 + 0.5).collect();
        let cost: Vec<f64> = tok.iter().map(|t| t / 1000.0).collect();
        let req: Vec<f64> = tok.iter().map(|t| (t / 10.0).floor()).collect();
        let slots = seasonality("k", &span, &tok, &cost, &req);
        assert!(slots.iter().any(|s| s.slot_kind == "hour_of_week") && slots.iter().any(|s| s.slot > 0));
        let batch = to_batch("profile", (catalog::BASELINE_PROFILE.schema)(), &slots).unwrap();
        assert_eq!(profile_slots(&[batch]).unwrap(), slots);
    }

    #[test]
    fn the_hourly_query_runs_with_its_fragments_expanded() {
        assert!(HOURLY_TEMPLATE.contains("{billed_events}"));
        let sql = hourly_sql();
        assert!(!sql.contains("{billed_events}") && sql.contains("{from}"), "{sql}");
        assert!(std::ptr::eq(sql, hourly_sql()), "expanded once");
    }
}

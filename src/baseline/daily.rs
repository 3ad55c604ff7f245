//! Per-day partial aggregates: what a baseline window needs from each day,
//! computed once per day and merged, so a nightly baseline scans one new day
//! instead of the whole window.
//!
//! Each day of events gets one file per table, written in one commit:
//!
//! ```text
//! models/daily/hourly/date=D/…parquet         per credential and hour: requests, tokens, cost, errors
//! models/daily/error_minutes/date=D/…parquet  per credential and minute with errors: how many
//! models/daily/scope/date=D/…parquet          per credential, dimension and value: first/last seen, requests
//! models/daily/transitions/date=D/…parquet    per principal: tool-transition counts, the day's sessions alone
//! models/daily/sessions/date=D/…parquet       each session's first and last call of the day
//! models/daily/sources/date=D/…parquet        the event files the day's partials were computed from
//! ```
//!
//! Every partial is exact (no sketches): hourly rows are at most 24 per
//! credential and day, so the window's medians, MADs and percentiles are
//! computed from the merged rows as before; error minutes are kept as a
//! per-minute histogram; scope merges by min/max/sum; transition counts add,
//! and a session that crosses midnight is stitched from its days' first and
//! last calls (its `last → $` and `^ → first` at the day boundary become
//! `last → first`). See the baseline module docs for the tolerance.
//!
//! A day's partials are current while `sources` lists exactly the day's
//! committed event files (and this [`DAILY_VERSION`]): events committed into
//! the day later add a file, so only that day is recomputed.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use hashbrown::HashMap;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{BaselineError, Source, Transition, conform, query, save};
use crate::columns::{self, Names, Text};
use crate::engine::udf::{self, Derive};
use crate::engine::{self, EngineOptions, catalog};
use crate::lake::{self, Lake, LakeError};
use crate::schema::col;
use crate::time::HOUR_MS;

/// Bumped when a partial's meaning or layout changes: older partials are recomputed.
pub const DAILY_VERSION: u32 = 2;

/// The window's rows, merged from its days' partials.
pub(super) const MERGED: Source = Source {
    hourly: "SELECT credential_id, principal, hour, requests, tokens, cost, errors \
             FROM daily_hourly WHERE date BETWEEN '{from}' AND '{to}'",
    error_minutes: "SELECT credential_id, errors FROM daily_error_minutes WHERE date BETWEEN '{from}' AND '{to}'",
    scope: "SELECT credential_id, dimension, value, min(first_seen) AS first_seen, max(last_seen) AS last_seen, \
            sum(requests) AS requests FROM daily_scope WHERE date BETWEEN '{from}' AND '{to}' GROUP BY 1, 2, 3",
};

/// One tool call of an agent session, as the day's events give it.
const CALLS_SQL: &str = "SELECT credential_id, session_id, ts, request_id, tool, principal FROM events \
                         WHERE date BETWEEN '{from}' AND '{to}' AND session_id IS NOT NULL AND tool IS NOT NULL";

/// The columns scope is learned from (queries/baseline_scope.sql says how),
/// read once for every dimension.
const SCOPE_COLUMNS_SQL: &str = "SELECT credential_id, ts, source_ip, user_agent, model, tool, action, resource, region \
                                 FROM events WHERE date BETWEEN '{from}' AND '{to}' AND credential_id IS NOT NULL";

/// Sessions of the window seen on more than one day, each day's first and last call in order.
const SPLIT_SESSIONS_SQL: &str = "WITH s AS (SELECT * FROM daily_sessions WHERE date BETWEEN '{from}' AND '{to}'), \
     multi AS (SELECT credential_id, session_id FROM s GROUP BY 1, 2 HAVING count(*) > 1) \
     SELECT s.first_tool, s.first_principal, s.last_tool, s.last_principal, s.credential_id, s.session_id \
     FROM s JOIN multi m ON (s.credential_id IS NOT DISTINCT FROM m.credential_id) AND s.session_id = m.session_id \
     ORDER BY s.credential_id, s.session_id, s.date";

/// How many days' partials are computed at once. A day's queries use every
/// core only part of the time (its scope and sessions passes are one core
/// each), so a second day fills the gaps; more would hold more days'
/// columns in memory without more to gain.
const DAYS_AT_ONCE: usize = 2;

/// Makes the partials of every day in `[from, until]` current, computing
/// those missing or outdated. Returns how many days were computed.
pub async fn refresh(
    lake: &Lake,
    from: NaiveDate,
    until: NaiveDate,
    engine: &EngineOptions,
) -> Result<usize, BaselineError> {
    let mut stale = Vec::new();
    for day in from.iter_days().take_while(|d| *d <= until) {
        let day = day.format("%Y-%m-%d").to_string();
        let files = lake::committed_files(lake, &lake::events_partition(&day), "parquet")?;
        let current = match covered(lake, &day)? {
            Covered::Nothing => files.is_empty(),
            Covered::Outdated => false,
            Covered::Files(covered) => covered == files,
        };
        if !current {
            stale.push((day, files));
        }
    }
    let computed = stale.len();
    if computed > 0 {
        let ctx = engine::context_with(lake.root(), engine).await?;
        // Each day on a task of its own; committed one at a time, in day order.
        let mut days = futures::stream::iter(stale)
            .map(|(day, files)| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let tables = compute(&ctx, &day, files).await?;
                    Ok::<_, BaselineError>((day, tables))
                })
            })
            .buffered(DAYS_AT_ONCE);
        while let Some(done) = days.next().await {
            let (day, tables) = done.map_err(|e| BaselineError::Task(e.to_string()))??;
            save(lake, &format!("{}={day}", col::DATE), tables)?;
        }
    }
    tracing::debug!(computed, "per-day baseline partials refreshed");
    Ok(computed)
}

/// What a day's partials were computed from.
enum Covered {
    /// The day has no partials.
    Nothing,
    /// Partials of another [`DAILY_VERSION`].
    Outdated,
    /// These event files (sorted).
    Files(Vec<String>),
}

fn covered(lake: &Lake, day: &str) -> Result<Covered, BaselineError> {
    let dir = format!("{}/{}={day}", catalog::DAILY_SOURCES.dir, col::DATE);
    let mut files = Vec::new();
    let mut any = false;
    for rel in lake::committed_files(lake, &dir, "parquet")? {
        let path = lake.path(&rel);
        let parquet = |source| LakeError::Parquet { path: path.clone(), source };
        // Replaced between listing and reading: the day is recomputed.
        let Some(bytes) = lake.read(&rel)? else { return Ok(Covered::Outdated) };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .map_err(parquet)?
            .build()
            .map_err(parquet)?;
        for batch in reader {
            let batch = batch.map_err(|e| parquet(e.into()))?;
            let q = "daily_sources";
            if columns::ints(&batch, q, "model_version")?.iter().any(|v| *v != Some(DAILY_VERSION as i64)) {
                return Ok(Covered::Outdated);
            }
            files.extend(columns::strings(&batch, q, "file")?.into_iter().flatten());
        }
        any = true;
    }
    files.sort();
    Ok(if any { Covered::Files(files) } else { Covered::Nothing })
}

/// A day's partials, computed from its events (which are `files`), as the
/// tables to commit.
async fn compute(
    ctx: &SessionContext,
    day: &str,
    files: Vec<String>,
) -> Result<[(catalog::Table, RecordBatch); 6], BaselineError> {
    // The day's four reads are independent: they run together, and the
    // scope pass (plain Rust, one core) beside the sessions pass.
    let (hourly, minutes, scope, calls) = futures::future::try_join4(
        query(ctx, super::hourly_sql(), day, day),
        query(ctx, super::ERROR_MINUTES_SQL, day, day),
        query(ctx, SCOPE_COLUMNS_SQL, day, day),
        query(ctx, CALLS_SQL, day, day),
    )
    .await?;
    let scope = tokio::task::spawn_blocking(move || day_scope(&scope));
    let hourly = conform("daily_hourly", (catalog::DAILY_HOURLY.schema)(), &hourly)?;
    let minutes = conform("daily_error_minutes", (catalog::DAILY_ERROR_MINUTES.schema)(), &minutes)?;
    let (transitions, sessions) = day_sessions(&calls)?;
    drop(calls);
    let scope = scope.await.map_err(|e| BaselineError::Task(e.to_string()))??;
    let sources = RecordBatch::try_new(
        (catalog::DAILY_SOURCES.schema)(),
        vec![Arc::new(UInt32Array::from(vec![DAILY_VERSION; files.len()])), Arc::new(StringArray::from(files))],
    )
    .map_err(|source| BaselineError::Arrow { table: "daily_sources", source })?;
    Ok([
        (catalog::DAILY_HOURLY, hourly),
        (catalog::DAILY_ERROR_MINUTES, minutes),
        (catalog::DAILY_SCOPE, scope),
        (catalog::DAILY_TRANSITIONS, transitions),
        (catalog::DAILY_SESSIONS, sessions),
        // Last: a day whose sources are written has all its partials.
        (catalog::DAILY_SOURCES, sources),
    ])
}

/// First seen, last seen and requests of one scope value.
#[derive(Clone, Copy)]
struct Seen(i64, i64, i64);

impl Seen {
    fn add(&mut self, o: Seen) {
        *self = Seen(self.0.min(o.0), self.1.max(o.1), self.2 + o.2);
    }
}

/// The day's scope, as queries/baseline_scope.sql learns it over a window,
/// in one pass over the columns. Rows are counted by interned ids: a
/// dictionary column's values are hashed once per batch, not once per row
/// and dimension. Networks and resource prefixes are derived once per
/// distinct value.
fn day_scope(batches: &[RecordBatch]) -> Result<RecordBatch, BaselineError> {
    let err = |source| BaselineError::Arrow { table: "daily_scope", source };
    let mut names = Names::default();
    let hours: Vec<u32> = (0..24).map(|h| names.id(&h.to_string())).collect();
    // Per dimension: (credential, raw value) → seen.
    let mut counts: [HashMap<(u32, u32), Seen>; udf::SCOPE_DIMENSIONS.len()] = Default::default();
    for b in batches {
        let column = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| err(arrow::error::ArrowError::SchemaError(format!("the scope columns lack {name}"))))
        };
        let ts = arrow::compute::cast(column("ts")?, &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))
            .map_err(err)?;
        let ts = ts.as_primitive::<TimestampMillisecondType>();
        let cred = Text::of(column("credential_id")?).map_err(err)?.ids(&mut names);
        // Rows whose call AWS relayed for the caller: no caller network (`caller_network`).
        let relayed = udf::relayed_rows(column(col::SOURCE_IP)?, column(col::USER_AGENT)?)
            .map_err(|e| BaselineError::Engine(e.into()))?;
        let relayed = |i: usize| relayed.as_ref().is_some_and(|r| r.value(i));
        for (dimension, counts) in udf::SCOPE_DIMENSIONS.iter().zip(&mut counts) {
            let network = dimension.derive == Derive::Network;
            let values = match dimension.derive {
                Derive::Hour => None,
                _ => Some(Text::of(column(dimension.column)?).map_err(err)?.ids(&mut names)),
            };
            for i in 0..b.num_rows() {
                let (Some(c), false) = (cred[i], ts.is_null(i)) else { continue };
                let t = ts.value(i);
                let value = match &values {
                    Some(_) if network && relayed(i) => None,
                    Some(values) => values[i],
                    None => Some(hours[(t.div_euclid(HOUR_MS)).rem_euclid(24) as usize]),
                };
                if let Some(v) = value {
                    counts.entry((c, v)).or_insert(Seen(t, t, 0)).add(Seen(t, t, 1));
                }
            }
        }
    }
    // Networks and resource prefixes of each distinct raw value, then merged per derived value.
    let mut scope: BTreeMap<(&str, &str, String), Seen> = BTreeMap::new();
    for (dimension, counts) in udf::SCOPE_DIMENSIONS.iter().zip(counts) {
        let mut derived: HashMap<u32, Option<String>> = HashMap::new();
        for ((c, raw), seen) in counts {
            let value = match dimension.derive {
                // Hours are counted as their names already.
                Derive::AsIs | Derive::Hour => Some(names.name(raw).to_string()),
                derive => derived.entry(raw).or_insert_with(|| derive.of(names.name(raw))).clone(),
            };
            if let Some(v) = value {
                scope.entry((names.name(c), dimension.name, v)).and_modify(|s| s.add(seen)).or_insert(seen);
            }
        }
    }
    let ms = |v: Vec<i64>| TimestampMillisecondArray::from(v).with_timezone("UTC");
    let (mut cols, mut first, mut last, mut requests) = ([vec![], vec![], vec![]], vec![], vec![], vec![]);
    for ((c, d, v), Seen(f, l, n)) in scope {
        cols[0].push(c.to_string());
        cols[1].push(d.to_string());
        cols[2].push(v);
        first.push(f);
        last.push(l);
        requests.push(n);
    }
    let [c, d, v] = cols.map(|t| Arc::new(StringArray::from(t)) as ArrayRef);
    let columns: Vec<ArrayRef> =
        vec![c, d, v, Arc::new(ms(first)), Arc::new(ms(last)), Arc::new(Int64Array::from(requests))];
    RecordBatch::try_new((catalog::DAILY_SCOPE.schema)(), columns).map_err(err)
}

/// One tool call of a session: its time, where its row is (batch, row: for
/// the request id, which breaks ties of time), its tool and principal.
struct Call {
    ts: i64,
    at: (usize, usize),
    tool: u32,
    principal: Option<u32>,
}

/// The day's transition counts (each session taken alone, from `^` to `$`)
/// and each session's first and last call, from its tool calls in any order:
/// one pass over the calls, then each session's few calls put in order.
fn day_sessions(batches: &[RecordBatch]) -> Result<(RecordBatch, RecordBatch), BaselineError> {
    let err = |table| move |source| BaselineError::Arrow { table, source };
    let missing =
        |name: &str| err("daily_sessions")(arrow::error::ArrowError::SchemaError(format!("no column {name}")));
    let mut names = Names::default();
    let (start, end) = (names.id("^"), names.id("$"));
    let mut request_ids = Vec::new();
    // (credential, session) → calls.
    let mut sessions: HashMap<(Option<u32>, u32), Vec<Call>> = HashMap::new();
    for (bi, b) in batches.iter().enumerate() {
        let text =
            |name: &str| Text::of(b.column_by_name(name).ok_or_else(|| missing(name))?).map_err(err("daily_sessions"));
        let (cred, session, tool, principal) =
            (text("credential_id")?, text("session_id")?, text("tool")?, text("principal")?);
        let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let ts = arrow::compute::cast(b.column_by_name("ts").ok_or_else(|| missing("ts"))?, &ms)
            .map_err(err("daily_sessions"))?;
        let ts = ts.as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            let (Some(s), Some(t), true) = (session.get(i), tool.get(i), ts.is_valid(i)) else { continue };
            let c = cred.get(i).map(|c| names.id(c));
            let call = Call {
                ts: ts.value(i),
                at: (bi, i),
                tool: names.id(t),
                principal: principal.get(i).map(|p| names.id(p)).or(c),
            };
            sessions.entry((c, names.id(s))).or_default().push(call);
        }
        request_ids.push(text("request_id")?);
    }
    let request_id = |(b, i): (usize, usize)| request_ids[b].get(i);
    let mut counts: HashMap<(u32, u32, u32), u64> = HashMap::new();
    let mut add = |p: Option<u32>, from: u32, to: u32| {
        if let Some(p) = p {
            *counts.entry((p, from, to)).or_default() += 1;
        }
    };
    let mut firsts_lasts: Vec<[Option<u32>; 6]> = Vec::with_capacity(sessions.len());
    for ((cred, session), mut calls) in sessions {
        // The order of the window query: time, then request id with nulls last.
        calls.sort_by(|a, b| {
            let (ra, rb) = (request_id(a.at), request_id(b.at));
            (a.ts, ra.is_none(), ra).cmp(&(b.ts, rb.is_none(), rb))
        });
        let mut prev = start;
        for c in &calls {
            add(c.principal, prev, c.tool);
            prev = c.tool;
        }
        let (first, last) = (&calls[0], &calls[calls.len() - 1]);
        add(last.principal, last.tool, end);
        firsts_lasts.push([cred, Some(session), Some(first.tool), first.principal, Some(last.tool), last.principal]);
    }
    let name = |id: u32| names.name(id).to_string();
    let counts = counts.into_iter().map(|((p, f, t), n)| ((name(p), name(f), name(t)), n)).collect();
    let text = |i: usize| {
        Arc::new(firsts_lasts.iter().map(|r| r[i].map(|id| names.name(id))).collect::<StringArray>()) as ArrayRef
    };
    let sessions = RecordBatch::try_new((catalog::DAILY_SESSIONS.schema)(), (0..6).map(text).collect())
        .map_err(err("daily_sessions"))?;
    Ok((transitions_batch(counts).map_err(err("daily_transitions"))?, sessions))
}

fn transitions_batch(counts: BTreeMap<(String, String, String), u64>) -> Result<RecordBatch, arrow::error::ArrowError> {
    let (mut p, mut f, mut t, mut n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((principal, from, to), count) in counts {
        p.push(principal);
        f.push(from);
        t.push(to);
        n.push(count);
    }
    RecordBatch::try_new(
        (catalog::DAILY_TRANSITIONS.schema)(),
        vec![
            Arc::new(StringArray::from(p)),
            Arc::new(StringArray::from(f)),
            Arc::new(StringArray::from(t)),
            Arc::new(UInt64Array::from(n)),
        ],
    )
}

/// The window's transition counts: the days' counts added, with each session
/// seen on several days stitched across its day boundaries.
pub(super) async fn transitions(ctx: &SessionContext, from: &str, to: &str) -> Result<Vec<Transition>, BaselineError> {
    columns::row! {
        struct CountRow { principal: text, from_tool: text, to_tool: text, count: int }
    }
    let mut counts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let sum = "SELECT principal, from_tool, to_tool, sum(count) AS count FROM daily_transitions \
               WHERE date BETWEEN '{from}' AND '{to}' GROUP BY 1, 2, 3";
    for r in columns::rows::<CountRow>(&query(ctx, sum, from, to).await?, "daily_transitions") {
        if let CountRow { principal: Some(p), from_tool: Some(f), to_tool: Some(t), count: Some(n) } = r? {
            counts.insert((p, f, t), n);
        }
    }
    columns::row! {
        struct SplitRow {
            credential_id: text,
            session_id: text,
            first_tool: text,
            first_principal: text,
            last_tool: text,
            last_principal: text,
        }
    }
    let mut change = |p: &Option<String>, f: &Option<String>, t: &Option<String>, by: i64| {
        if let (Some(p), Some(f), Some(t)) = (p, f, t) {
            *counts.entry((p.clone(), f.clone(), t.clone())).or_default() += by;
        }
    };
    let (start, end) = (Some("^".to_string()), Some("$".to_string()));
    let mut prev: Option<SplitRow> = None;
    for r in columns::rows::<SplitRow>(&query(ctx, SPLIT_SESSIONS_SQL, from, to).await?, "daily_sessions") {
        let r = r?;
        if let Some(a) =
            prev.as_ref().filter(|a| (&a.credential_id, &a.session_id) == (&r.credential_id, &r.session_id))
        {
            // One session: its end on the earlier day was not an end, its start on the later day not a start.
            change(&a.last_principal, &a.last_tool, &end, -1);
            change(&r.first_principal, &start, &r.first_tool, -1);
            change(&r.first_principal, &a.last_tool, &r.first_tool, 1);
        }
        prev = Some(r);
    }
    Ok(counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((principal, from_tool, to_tool), n)| Transition { principal, from_tool, to_tool, count: n as u64 })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::DictionaryArray;
    use arrow::datatypes::{Field, Int32Type, Schema};

    /// The scope pass's columns from rows of space-separated values ("-" for
    /// null), every text column plain or dictionary-encoded.
    fn batch(dict: bool, rows: &[&str], ts: &[i64]) -> RecordBatch {
        let names = ["credential_id", "source_ip", "user_agent", "model", "tool", "action", "resource", "region"];
        let rows: Vec<Vec<Option<&str>>> =
            rows.iter().map(|r| r.split(' ').map(|v| (v != "-").then_some(v)).collect()).collect();
        let text = |c: usize| -> ArrayRef {
            let values: Vec<Option<&str>> = rows.iter().map(|r| r[c]).collect();
            if dict {
                // Values in another order than the rows', and one no row uses.
                let mut d: Vec<&str> = values.iter().flatten().copied().collect();
                d.push("unused");
                d.sort();
                d.dedup();
                d.reverse();
                let keys = values.iter().map(|v| v.map(|v| d.iter().position(|x| *x == v).unwrap() as i32));
                let keys = arrow::array::Int32Array::from_iter(keys);
                Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(StringArray::from(d))).unwrap())
            } else {
                Arc::new(StringArray::from(values))
            }
        };
        let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let mut fields = vec![Field::new("ts", ms, false)];
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(TimestampMillisecondArray::from(ts.to_vec()).with_timezone("UTC"))];
        for (c, name) in names.iter().enumerate() {
            let a = text(c);
            fields.push(Field::new(*name, a.data_type().clone(), true));
            columns.push(a);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// The scope rows as (credential, dimension, value, first, last, requests).
    fn rows(b: &RecordBatch) -> Vec<(String, String, String, i64, i64, i64)> {
        let s = |c: usize| b.column(c).as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>();
        let t = |c: usize| b.column(c).as_primitive::<TimestampMillisecondType>().values().to_vec();
        let (cred, dim, value, first, last) = (s(0), s(1), s(2), t(3), t(4));
        let requests = b.column(5).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec();
        (0..b.num_rows())
            .map(|i| (cred[i].clone(), dim[i].clone(), value[i].clone(), first[i], last[i], requests[i]))
            .collect()
    }

    #[test]
    fn the_scope_pass_counts_values_not_dictionary_keys() {
        let rows_of = [
            "key_a 203.0.113.9 bot/1 gpt-4o search chat arn:aws:s3:::b/x -",
            "key_b 203.0.113.9 bot/1 - read chat arn:aws:s3:::b/y us-east-1",
            "key_a 198.51.100.4 bot/2 gpt-4o search embed - us-east-1",
            "- 192.0.2.1 bot/3 o1 write chat - -",
        ];
        let ts = [3_600_000, 7_200_000, 10_800_000, 14_400_000];
        let plain = rows(&day_scope(&[batch(false, &rows_of, &ts)]).unwrap());
        let dict = rows(&day_scope(&[batch(true, &rows_of, &ts)]).unwrap());
        assert_eq!(plain, dict, "a dictionary's keys and unused values change nothing");
        assert!(!plain.iter().any(|r| r.2 == "unused" || r.2 == "bot/3"), "no row, no value: {plain:?}");
        let at =
            |c: &str, d: &str, v: &str| plain.iter().find(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()) == (c, d, v));
        assert_eq!(at("key_a", "tool", "search").map(|r| (r.3, r.4, r.5)), Some((3_600_000, 10_800_000, 2)));
        assert_eq!(at("key_a", "hour", "3").map(|r| r.5), Some(1));
        // The same rows again in the other encoding: one value across both, counted twice.
        let both = rows(&day_scope(&[batch(true, &rows_of, &ts), batch(false, &rows_of, &ts)]).unwrap());
        assert_eq!(both.len(), plain.len());
        for (x, y) in plain.iter().zip(&both) {
            assert_eq!((&x.0, &x.1, &x.2, x.3, x.4, x.5 * 2), (&y.0, &y.1, &y.2, y.3, y.4, y.5));
        }
    }
}

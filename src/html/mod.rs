//! `credtrail report`: one self-contained HTML file of a lake's incidents
//! for a day or range, readable offline and as an email attachment.
//!
//! This module reads what the page shows from the lake — the alerts `detect`
//! stored, the evidence events, the series each chart plots and the baseline
//! each day was judged against — into [`Report`]; [`page`] writes it as HTML
//! (every value escaped, a CSP that loads nothing) and [`chart`] draws the
//! SVG charts. It sits above `detect` and below `cli`.
//!
//! Size is bounded: at most [`MAX_DETAILED`] incidents get charts and
//! evidence tables (the rest are listed with their explanation and rule), and
//! each alert shows at most [`EVIDENCE_ROWS`] evidence events, with "+N more"
//! and the SQL that lists them all.

pub mod chart;
pub mod page;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;

use crate::alert::{self, Alert, Severity};
use crate::baseline::{self, Baseline, BaselineError};
use crate::columns::{self, ShapeError};
use crate::engine::{self, EngineError};
use crate::time::{DAY_MS, HOUR_MS, day_of, format_ms};
use chart::{Band, Chart, ChartError, Kind, Series, TimeAxis};

/// Incidents drawn in full; past this the page lists them without charts.
pub const MAX_DETAILED: usize = 50;
/// Evidence events shown per alert.
pub const EVIDENCE_ROWS: usize = 10;
/// Days of the activity strip of each credential.
pub const STRIP_DAYS: i64 = 14;

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    #[error("{0:?} is not a date (YYYY-MM-DD)")]
    BadDate(String),
    #[error("--from {0} is after --to {1}")]
    EmptyRange(String, String),
    #[error("{}: the lake has no events: ingest logs first (credtrail ingest or credtrail run)", .0.display())]
    NoEvents(PathBuf),
    #[error("writing the report {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// What to report on: a lake and a range of days (none: the whole lake).
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub lake: PathBuf,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Everything the page shows, read from the lake.
#[derive(Debug)]
pub struct Report {
    pub from: String,
    pub to: String,
    /// The first and last day of the lake's events.
    pub span: (String, String),
    /// Per day with events in the range, the baseline version it was judged against (None: cold start).
    pub baselines: Vec<(String, Option<String>)>,
    /// Every alert of the range, suppressed ones included.
    pub alerts: Vec<Alert>,
    /// The incidents drawn in full, most severe first.
    pub detailed: Vec<IncidentPage>,
}

/// One incident drawn in full.
#[derive(Debug)]
pub struct IncidentPage {
    pub id: String,
    pub alerts: Vec<AlertPage>,
    /// Per credential of the incident, its activity strip.
    pub strips: Vec<Strip>,
}

/// A credential's requests per day over [`STRIP_DAYS`] days.
#[derive(Debug)]
pub struct Strip {
    pub credential: String,
    pub svg: String,
    /// Requests over all the days.
    pub requests: f64,
    pub from: String,
    pub to: String,
}

#[derive(Debug)]
pub struct AlertPage {
    pub alert: Alert,
    /// Captioned charts fitted to the detector.
    pub charts: Vec<(String, String)>,
    /// The rows a chart is drawn from, when a table says it better (a
    /// session's steps, the known values): a header row, then the rows.
    pub rows: Vec<Vec<String>>,
    pub evidence: Evidence,
}

/// The first evidence events of an alert, as text.
#[derive(Debug, Default)]
pub struct Evidence {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// Evidence events not shown.
    pub more: u64,
    /// The SQL that lists every event of the alert's credential and window.
    pub sql: String,
}

/// Reads the report of `opts` from the lake.
pub async fn load(opts: &ReportOptions) -> Result<Report, HtmlError> {
    let ctx = engine::context(&opts.lake).await?;
    let span = crate::detect::lake_days(&opts.lake).await?.ok_or_else(|| HtmlError::NoEvents(opts.lake.clone()))?;
    let from = opts.from.clone().unwrap_or_else(|| span.0.clone());
    let to = opts.to.clone().unwrap_or_else(|| span.1.clone());
    for d in [&from, &to] {
        crate::time::parse_day(d).ok_or_else(|| HtmlError::BadDate(d.clone()))?;
    }
    if from > to {
        return Err(HtmlError::EmptyRange(from, to));
    }
    let alerts = read_alerts(&ctx, &from, &to).await?;
    let versions = baseline::versions(&opts.lake).await;
    let q =
        format!("SELECT DISTINCT date FROM events WHERE date BETWEEN {} AND {} ORDER BY date", lit(&from), lit(&to));
    let mut baselines = Vec::new();
    for b in engine::collect(&ctx, &q).await? {
        for day in columns::strings(&b, "report days", "date")?.into_iter().flatten() {
            let until = previous_day(&day)?;
            baselines.push((day, versions.contains(&until).then_some(until)));
        }
    }
    let mut models: BTreeMap<String, Option<Baseline>> = BTreeMap::new();
    let mut detailed = Vec::new();
    for inc in alert::incidents(&alerts).into_iter().take(MAX_DETAILED) {
        let mut pages = Vec::new();
        for a in &inc.alerts {
            let until = previous_day(&day_of(a.window_start_ms))?;
            if !models.contains_key(&until) {
                let m = match versions.contains(&until) {
                    true => Some(baseline::load(&ctx, &opts.lake, &until).await?),
                    false => None,
                };
                models.insert(until.clone(), m);
            }
            let model = models.get(&until).and_then(Option::as_ref);
            pages.push(alert_page(&ctx, a, model).await?);
        }
        let mut strips = Vec::new();
        let mut creds: Vec<&str> = inc.alerts.iter().map(|a| a.credential_id.as_str()).collect();
        creds.dedup();
        for c in creds {
            strips.push(strip(&ctx, c, inc.end()).await?);
        }
        detailed.push(IncidentPage { id: inc.id.to_string(), alerts: pages, strips });
    }
    Ok(Report { from, to, span, baselines, alerts, detailed })
}

/// Writes the report of `opts` to `out` (through a temporary file, so a
/// failed run leaves no half page).
pub async fn write(opts: &ReportOptions, out: &Path) -> Result<Report, HtmlError> {
    let report = load(opts).await?;
    let html = page::render(&report);
    let err = |source| HtmlError::Write { path: out.to_path_buf(), source };
    let tmp = out.with_extension("html.partial");
    std::fs::write(&tmp, html).map_err(err)?;
    std::fs::rename(&tmp, out).map_err(err)?;
    Ok(report)
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL timestamp literal of `ms`.
fn ts_lit(ms: i64) -> String {
    format!("TIMESTAMP '{}'", format_ms(ms))
}

/// The baseline version that judges `day`, as `detect` picks it.
fn previous_day(day: &str) -> Result<String, HtmlError> {
    Ok(crate::detect::previous_day(day)?)
}

columns::row! {
    struct AlertRow {
        alert_id: text,
        detector: text,
        finding: text,
        severity: text,
        score: float,
        credential_id: text,
        principal: text,
        window_start: time,
        window_end: time,
        explanation: text,
        observed: text,
        baseline: text,
        evidence: texts,
        evidence_count: int,
        mitre_attack: text,
        owasp_nhi: text,
        subject: text,
        incident_id: text,
        suppressed: text,
    }
}

/// The alerts `detect` stored for the range, in its order (most severe first).
async fn read_alerts(ctx: &datafusion::prelude::SessionContext, from: &str, to: &str) -> Result<Vec<Alert>, HtmlError> {
    let q = format!(
        "SELECT * FROM alerts WHERE date BETWEEN {} AND {} ORDER BY window_start, alert_id",
        lit(from),
        lit(to)
    );
    let batches = engine::collect(ctx, &q).await?;
    let rows: Vec<AlertRow> = columns::rows(&batches, "alerts").collect::<Result<_, _>>()?;
    let mut out: Vec<Alert> = rows
        .into_iter()
        .map(|r| Alert {
            alert_id: r.alert_id.unwrap_or_default(),
            detector: r.detector.unwrap_or_default(),
            finding: r.finding.unwrap_or_default(),
            severity: match r.severity.as_deref() {
                Some("critical") => Severity::Critical,
                Some("high") => Severity::High,
                Some("medium") => Severity::Medium,
                _ => Severity::Low,
            },
            score: r.score.unwrap_or_default(),
            credential_id: r.credential_id.unwrap_or_default(),
            principal: r.principal,
            window_start_ms: r.window_start.unwrap_or_default(),
            window_end_ms: r.window_end.unwrap_or_default(),
            explanation: r.explanation.unwrap_or_default(),
            observed: r.observed.unwrap_or_default(),
            baseline: r.baseline.unwrap_or_default(),
            evidence: r.evidence,
            evidence_count: r.evidence_count.unwrap_or_default().max(0) as u64,
            mitre_attack: r.mitre_attack,
            owasp_nhi: r.owasp_nhi,
            subject: r.subject,
            incident_id: r.incident_id,
            suppressed: r.suppressed,
        })
        .collect();
    out.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then(a.window_start_ms.cmp(&b.window_start_ms)).then(a.alert_id.cmp(&b.alert_id))
    });
    Ok(out)
}

/// The WHERE clause of a credential's events in `[start, end]` (days pruned by partition).
fn window_filter(credential: &str, start: i64, end: i64) -> String {
    format!(
        "credential_id = {} AND date BETWEEN {} AND {} AND ts BETWEEN {} AND {}",
        lit(credential),
        lit(&day_of(start)),
        lit(&day_of(end)),
        ts_lit(start),
        ts_lit(end)
    )
}

async fn alert_page(
    ctx: &datafusion::prelude::SessionContext,
    a: &Alert,
    model: Option<&Baseline>,
) -> Result<AlertPage, HtmlError> {
    let (charts, rows) = match a.detector.as_str() {
        "billing_spike" => (billing_charts(ctx, a, model).await?, Vec::new()),
        "retry_storm" => (vec![storm_chart(ctx, a, model).await?], Vec::new()),
        "tool_chaining" => session_chart(ctx, a, model).await?,
        _ => match scope_dimension(&a.finding) {
            Some(dim) if a.subject.is_some() && model.is_some() => scope_chart(ctx, a, dim, model).await?,
            _ => (vec![activity_chart(ctx, a).await?], Vec::new()),
        },
    };
    Ok(AlertPage { alert: a.clone(), charts, rows, evidence: evidence(ctx, a).await? })
}

/// Per hour of the alert's days: the credential's tokens and cost, against
/// its baseline median, p99 and seasonal band.
async fn billing_charts(
    ctx: &datafusion::prelude::SessionContext,
    a: &Alert,
    model: Option<&Baseline>,
) -> Result<Vec<(String, String)>, HtmlError> {
    let start = a.window_start_ms - a.window_start_ms.rem_euclid(DAY_MS);
    let end = a.window_end_ms - a.window_end_ms.rem_euclid(DAY_MS) + DAY_MS - 1;
    let q = format!(
        "SELECT date_trunc('hour', ts) AS hour, \
           sum(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)) AS tokens, sum(coalesce(cost_usd, 0)) AS cost \
         FROM events WHERE {} GROUP BY 1 ORDER BY 1",
        window_filter(&a.credential_id, start, end)
    );
    let batches = engine::collect(ctx, &q).await?;
    let hours = read_series(&batches, "billing hours", "hour", &["tokens", "cost"])?;
    let base = model.and_then(|m| m.credentials.get(&a.credential_id));
    let mut out = Vec::new();
    for (i, (metric, unit)) in [("tokens", "tokens"), ("cost", "USD")].into_iter().enumerate() {
        // Quiet hours are zeros, as the baseline counts them.
        let points: Vec<(i64, f64)> = (0..(end - start + 1) / HOUR_MS)
            .map(|h| start + h * HOUR_MS)
            .map(|t| (t, hours.iter().find(|p| p.0 == t).map_or(0.0, |p| p.1[i])))
            .collect();
        let mut rules = Vec::new();
        let mut band = None;
        if let Some(b) = base {
            let s = if i == 0 { &b.tokens_per_hour } else { &b.cost_per_hour };
            rules = vec![("baseline median".to_string(), s.median), ("baseline p99".to_string(), s.p99)];
            let m = model.expect("a credential baseline comes from a model");
            let slots: Vec<(i64, f64, f64)> = (0..(end - start + 1) / HOUR_MS)
                .map(|h| start + h * HOUR_MS)
                .filter_map(|t| {
                    let s = m.slot(&a.credential_id, t)?;
                    let (lo, hi) = if i == 0 { (s.tokens_median, s.tokens_high) } else { (s.cost_median, s.cost_high) };
                    Some((t, lo, hi))
                })
                .collect();
            band = Some(Band { label: "seasonal band (median to high)".to_string(), slots });
        }
        let c = Chart {
            title: format!("{metric} per hour (UTC)"),
            y_label: unit.into(),
            x: (start, end),
            axis: TimeAxis::Hours,
            series: vec![Series { label: metric.into(), kind: Kind::Line, points }],
            band,
            rules,
            marks: Vec::new(),
            log_y: true,
        };
        let caption = match base {
            Some(_) => format!("{metric} per hour (log scale) against the baseline's median, p99 and seasonal band"),
            None => format!("{metric} per hour (no baseline: cold start)"),
        };
        out.push((caption, chart::svg(&c, (720, 260))?));
    }
    Ok(out)
}

/// Requests per minute of the alert's credential around its window: what any detector's finding looked like.
async fn activity_chart(ctx: &datafusion::prelude::SessionContext, a: &Alert) -> Result<(String, String), HtmlError> {
    let pad = 10 * 60_000;
    let (start, end) = (a.window_start_ms - pad, a.window_end_ms + pad);
    let q = format!(
        "SELECT date_trunc('minute', ts) AS minute, count(*) AS requests, \
           sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS failed \
         FROM events WHERE {} GROUP BY 1 ORDER BY 1",
        window_filter(&a.credential_id, start, end)
    );
    let rows = read_series(&engine::collect(ctx, &q).await?, "activity", "minute", &["requests", "failed"])?;
    let series = ["requests", "failed (status ≥ 400)"]
        .iter()
        .enumerate()
        .map(|(i, label)| Series {
            label: label.to_string(),
            kind: Kind::Bars { width: 60_000 },
            points: rows.iter().map(|(t, v)| (*t, v[i])).collect(),
        })
        .collect();
    let c = Chart {
        title: "requests per minute (UTC)".into(),
        y_label: "requests".into(),
        x: (start, end),
        axis: TimeAxis::Minutes,
        series,
        band: None,
        rules: Vec::new(),
        marks: Vec::new(),
        log_y: false,
    };
    Ok(("the credential's requests per minute around the alert".into(), chart::svg(&c, (720, 240))?))
}

type Figures = (Vec<(String, String)>, Vec<Vec<String>>);

/// Failures per minute around a retry storm, by class, against the
/// credential's usual rate and the least burst that alerts.
async fn storm_chart(
    ctx: &datafusion::prelude::SessionContext,
    a: &Alert,
    model: Option<&Baseline>,
) -> Result<(String, String), HtmlError> {
    let pad = 10 * 60_000;
    let (start, end) = (a.window_start_ms - pad, a.window_end_ms + pad);
    let q = format!(
        "SELECT date_trunc('minute', ts) AS minute, \
           sum(CASE WHEN status IN (401, 403) THEN 1 ELSE 0 END) AS auth, \
           sum(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS throttled, \
           sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS server, \
           sum(CASE WHEN status NOT IN (401, 403, 429) AND status < 500 THEN 1 ELSE 0 END) AS other \
         FROM events WHERE {} AND status >= 400 GROUP BY 1 ORDER BY 1",
        window_filter(&a.credential_id, start, end)
    );
    let classes = ["auth", "throttled", "server", "other"];
    let rows = read_series(&engine::collect(ctx, &q).await?, "storm minutes", "minute", &classes)?;
    let labels = ["401/403 (auth)", "429 (throttled)", "5xx (server)", "other 4xx"];
    let minutes: Vec<i64> =
        (0..=(end - start) / 60_000).map(|m| start - start.rem_euclid(60_000) + m * 60_000).collect();
    let series = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| rows.iter().any(|r| r.1[*i] > 0.0))
        .map(|(i, label)| Series {
            label: label.to_string(),
            kind: Kind::Line,
            points: minutes.iter().map(|t| (*t, rows.iter().find(|r| r.0 == *t).map_or(0.0, |r| r.1[i]))).collect(),
        })
        .collect();
    // The rate and floor the detector judged by.
    let base = model.and_then(|m| m.credentials.get(&a.credential_id));
    let rules = vec![
        ("usual failures/min".to_string(), crate::detect::usual_rate(base)),
        ("least burst that alerts".to_string(), crate::detect::least_burst(base)),
    ];
    let c = Chart {
        title: "failed requests per minute (UTC)".into(),
        y_label: "failures".into(),
        x: (start, end),
        axis: TimeAxis::Minutes,
        series,
        band: None,
        rules,
        marks: Vec::new(),
        log_y: false,
    };
    Ok(("failures per minute by class, against the credential's usual rate".into(), chart::svg(&c, (720, 260))?))
}

/// The steps of the alert's agent sessions in time, each with its
/// probability under the principal's learned tool-transition model.
async fn session_chart(
    ctx: &datafusion::prelude::SessionContext,
    a: &Alert,
    model: Option<&Baseline>,
) -> Result<Figures, HtmlError> {
    let ids: Vec<String> = a.evidence.iter().map(|id| lit(id)).collect();
    if ids.is_empty() {
        return Ok((vec![activity_chart(ctx, a).await?], Vec::new()));
    }
    let days = format!(
        "credential_id = {} AND date BETWEEN {} AND {}",
        lit(&a.credential_id),
        lit(&day_of(a.window_start_ms - DAY_MS)),
        lit(&day_of(a.window_end_ms + DAY_MS))
    );
    let q = format!(
        "SELECT ts, CAST(tool AS VARCHAR) AS tool, session_id FROM events \
         WHERE {days} AND tool IS NOT NULL AND session_id IN \
           (SELECT session_id FROM events WHERE {days} AND request_id IN ({})) \
         ORDER BY session_id, ts, request_id LIMIT 200",
        ids.join(", ")
    );
    let markov = model.zip(a.principal.as_ref()).and_then(|(m, p)| m.markov.get(p));
    let mut steps: Vec<(i64, String, Option<f64>)> = Vec::new();
    let mut previous: Option<String> = None;
    for b in engine::collect(ctx, &q).await? {
        let ts = columns::times(&b, "session steps", "ts")?;
        let tools = columns::strings(&b, "session steps", "tool")?;
        let sessions = columns::strings(&b, "session steps", "session_id")?;
        for ((t, tool), session) in ts.into_iter().zip(tools).zip(sessions) {
            let (Some(t), Some(tool)) = (t, tool) else { continue };
            // Session start is the model's `^` state.
            let from = match (&previous, steps.is_empty()) {
                (Some(p), false) if p == session.as_deref().unwrap_or("") => steps.last().map_or("^", |s| &s.1),
                _ => "^",
            }
            .to_string();
            previous = session;
            steps.push((t, tool.clone(), markov.map(|m| m.probability(&from, &tool))));
        }
    }
    let fmt_p = |p: Option<f64>| p.map_or("no model".to_string(), |p| format!("{p:.4}"));
    let mut rows = vec![vec!["time (UTC)".to_string(), "tool".to_string(), "probability of the step".to_string()]];
    rows.extend(steps.iter().map(|(t, tool, p)| vec![format_ms(*t), tool.clone(), fmt_p(*p)]));
    let (x0, x1) = match (steps.first(), steps.last()) {
        (Some(f), Some(l)) => (f.0 - 30_000, l.0 + 30_000),
        _ => (a.window_start_ms - 60_000, a.window_end_ms + 60_000),
    };
    let points: Vec<(i64, f64)> = steps.iter().map(|s| (s.0, s.2.unwrap_or(0.0))).collect();
    let c = Chart {
        title: "session steps and their probability under the learned model".into(),
        y_label: "probability".into(),
        x: (x0, x1),
        axis: TimeAxis::Minutes,
        series: vec![Series { label: "step probability".into(), kind: Kind::Line, points }],
        band: None,
        rules: Vec::new(),
        marks: steps.iter().map(|s| (s.0, s.2.unwrap_or(0.0), format!("{} p={}", s.1, fmt_p(s.2)))).collect(),
        log_y: false,
    };
    let caption = match markov {
        Some(_) => "each step of the session, at the probability the principal's learned behaviour gives it",
        None => "each step of the session (no learned model for this principal yet)",
    };
    Ok((vec![(caption.into(), chart::svg(&c, (720, 280))?)], rows))
}

/// The scope dimension a first-seen or out-of-scope finding is about, if any.
fn scope_dimension(finding: &str) -> Option<&'static str> {
    let f = finding.strip_prefix(crate::detect::FIRST_SEEN_PREFIX).unwrap_or(finding);
    ["network", "resource_prefix", "user_agent", "model", "tool", "action", "region"]
        .into_iter()
        .find(|d| f == *d || f.starts_with(&format!("{d}_")))
}

/// The new value beside the ones the credential used before, each from its
/// first to its last use: its own, and (as first-seen values are judged) its
/// principal's other learned credentials'.
async fn scope_chart(
    ctx: &datafusion::prelude::SessionContext,
    a: &Alert,
    dimension: &str,
    model: Option<&Baseline>,
) -> Result<Figures, HtmlError> {
    let until = lit(&model.map_or(String::new(), |m| m.until.clone()));
    let siblings = match &a.principal {
        Some(p) => format!(
            " UNION SELECT credential_id FROM {} WHERE until = {until} AND principal = {} AND NOT cold_start",
            crate::engine::catalog::BASELINE_CREDENTIALS.name,
            lit(p)
        ),
        None => String::new(),
    };
    let q = format!(
        "SELECT s.value, min(s.first_seen) AS first_seen, max(s.last_seen) AS last_seen, sum(s.requests) AS requests \
         FROM {} s JOIN (SELECT {} AS credential_id{siblings}) w ON s.credential_id = w.credential_id \
         WHERE s.until = {until} AND s.dimension = {} GROUP BY s.value ORDER BY requests DESC, s.value LIMIT 12",
        crate::engine::catalog::BASELINE_SCOPE.name,
        lit(&a.credential_id),
        lit(dimension)
    );
    let mut known: Vec<(String, i64, i64, f64)> = Vec::new();
    for b in engine::collect(ctx, &q).await? {
        let v = columns::strings(&b, "known values", "value")?;
        let f = columns::times(&b, "known values", "first_seen")?;
        let l = columns::times(&b, "known values", "last_seen")?;
        let n = columns::floats(&b, "known values", "requests")?;
        for i in 0..b.num_rows() {
            if let (Some(v), Some(f), Some(l)) = (v[i].clone(), f[i], l[i]) {
                known.push((v, f, l, n[i].unwrap_or(0.0)));
            }
        }
    }
    let new = a.subject.clone().unwrap_or_default();
    let mut all = known.clone();
    all.push((format!("{new} (new)"), a.window_start_ms, a.window_end_ms, a.evidence_count as f64));
    let x0 = all.iter().map(|v| v.1).min().unwrap_or(a.window_start_ms);
    let x1 = all.iter().map(|v| v.2).max().unwrap_or(a.window_end_ms).max(x0 + HOUR_MS);
    let series = all
        .iter()
        .enumerate()
        .map(|(i, v)| Series {
            label: String::new(),
            kind: Kind::Line,
            points: vec![(v.1, i as f64 + 1.0), (v.2.max(v.1 + (x1 - x0) / 200), i as f64 + 1.0)],
        })
        .collect();
    let c = Chart {
        title: format!("{} used by the credential, first to last seen", dimension.replace('_', " ")),
        y_label: String::new(),
        x: (x0, x1),
        axis: TimeAxis::Days,
        series,
        band: None,
        rules: Vec::new(),
        marks: all.iter().enumerate().map(|(i, v)| (v.1, i as f64 + 1.0, v.0.clone())).collect(),
        log_y: false,
    };
    let mut rows = vec![["value", "first seen", "last seen", "requests"].map(String::from).to_vec()];
    rows.extend(all.iter().map(|v| vec![v.0.clone(), format_ms(v.1), format_ms(v.2), format!("{}", v.3)]));
    let caption = format!("the new {} beside the {} known one(s)", dimension.replace('_', " "), known.len());
    Ok((vec![(caption, chart::svg(&c, (720, 120 + 24 * all.len() as u32))?)], rows))
}

/// A time column and number columns of a query, as (time, values) rows.
fn read_series(
    batches: &[RecordBatch],
    query: &str,
    time: &str,
    values: &[&str],
) -> Result<Vec<(i64, Vec<f64>)>, HtmlError> {
    let mut out = Vec::new();
    for b in batches {
        let t = columns::times(b, query, time)?;
        let cols: Vec<Vec<Option<f64>>> =
            values.iter().map(|v| columns::floats(b, query, v)).collect::<Result<_, _>>()?;
        for (i, t) in t.into_iter().enumerate() {
            if let Some(t) = t {
                out.push((t, cols.iter().map(|c| c[i].unwrap_or(0.0)).collect()));
            }
        }
    }
    Ok(out)
}

/// The columns of an evidence table.
const EVIDENCE_COLUMNS: [&str; 12] = [
    "ts",
    "request_id",
    "source_ip",
    "user_agent",
    "model",
    "action",
    "tool",
    "resource",
    "status",
    "error_code",
    "tokens",
    "cost_usd",
];

/// The alert's first evidence events from the lake, and how to get the rest.
async fn evidence(ctx: &datafusion::prelude::SessionContext, a: &Alert) -> Result<Evidence, HtmlError> {
    let filter = window_filter(&a.credential_id, a.window_start_ms, a.window_end_ms);
    let sql = format!("SELECT * FROM events WHERE {filter} ORDER BY ts");
    let mut ev = Evidence { columns: EVIDENCE_COLUMNS.to_vec(), rows: Vec::new(), more: a.evidence_count, sql };
    let ids: Vec<String> = a.evidence.iter().take(EVIDENCE_ROWS).map(|id| lit(id)).collect();
    if ids.is_empty() {
        return Ok(ev);
    }
    let q = format!(
        "SELECT ts, request_id, source_ip, user_agent, model, action, tool, resource, status, error_code, \
           coalesce(tokens_in, 0) + coalesce(tokens_out, 0) AS tokens, cost_usd \
         FROM events WHERE credential_id = {} AND date BETWEEN {} AND {} AND request_id IN ({}) \
         ORDER BY ts, request_id LIMIT {EVIDENCE_ROWS}",
        lit(&a.credential_id),
        lit(&day_of(a.window_start_ms - DAY_MS)),
        lit(&day_of(a.window_end_ms + DAY_MS)),
        ids.join(", ")
    );
    for b in engine::collect(ctx, &q).await? {
        let ts = columns::times(&b, "evidence", "ts")?;
        let mut cols = vec![ts.into_iter().map(|t| t.map(format_ms)).collect::<Vec<_>>()];
        for c in &EVIDENCE_COLUMNS[1..] {
            cols.push(columns::strings(&b, "evidence", c)?);
        }
        for i in 0..b.num_rows() {
            ev.rows.push(cols.iter().map(|c| c[i].clone().unwrap_or_default()).collect());
        }
    }
    ev.more = a.evidence_count.saturating_sub(ev.rows.len() as u64);
    Ok(ev)
}

/// Requests per day of a credential over the [`STRIP_DAYS`] days ending on `end`'s day.
async fn strip(ctx: &datafusion::prelude::SessionContext, credential: &str, end: i64) -> Result<Strip, HtmlError> {
    let last = end - end.rem_euclid(DAY_MS);
    let first = last - (STRIP_DAYS - 1) * DAY_MS;
    let q = format!(
        "SELECT CAST(date AS TIMESTAMP) AS day, count(*) AS requests FROM events \
         WHERE credential_id = {} AND date BETWEEN {} AND {} GROUP BY 1 ORDER BY 1",
        lit(credential),
        lit(&day_of(first)),
        lit(&day_of(last))
    );
    let days = read_series(&engine::collect(ctx, &q).await?, "activity strip", "day", &["requests"])?;
    let points: Vec<(i64, f64)> = days.iter().map(|(t, v)| (*t, v[0])).collect();
    let requests = points.iter().map(|p| p.1).sum();
    let c = Chart {
        title: format!("{credential}: requests per day"),
        y_label: "requests".into(),
        x: (first, last + DAY_MS),
        axis: TimeAxis::Days,
        series: vec![Series { label: "requests per day".into(), kind: Kind::Bars { width: DAY_MS }, points }],
        band: None,
        rules: Vec::new(),
        marks: Vec::new(),
        log_y: false,
    };
    Ok(Strip {
        credential: credential.to_string(),
        svg: chart::svg(&c, (280, 48))?,
        requests,
        from: day_of(first),
        to: day_of(last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_name_their_scope_dimension() {
        assert_eq!(scope_dimension("first_seen_resource_prefix"), Some("resource_prefix"));
        assert_eq!(scope_dimension("first_seen_model"), Some("model"));
        assert_eq!(scope_dimension("action_outside_scope"), Some("action"));
        assert_eq!(scope_dimension("expired_credential"), None);
    }

    #[test]
    fn sql_literals_cannot_be_broken_out_of() {
        assert_eq!(lit("a'; DROP TABLE x; --"), "'a''; DROP TABLE x; --'");
        assert_eq!(previous_day("2026-11-01").unwrap(), "2026-10-31");
    }
}

//! Batch detection: each detector is a SQL query (kept in `queries/`,
//! compiled in, overridable from a directory) that selects candidates, and
//! Rust turns its rows into explainable alerts — by grouping request-level
//! rows, or by scoring aggregates against the credential's baseline.
//!
//! A query file holds its detector's whole rule: a TOML header in its leading
//! comment (`rule.rs`, `queries/README.md`) names the family, the tables it
//! reads, how `watch` runs it, which scorer (`billing.rs`, `storm.rs`,
//! `chaining.rs`, `recon.rs`, or `explain.rs` for request-level rows) turns
//! its rows into alerts, and each finding's severity, ATT&CK technique and
//! OWASP NHI risk.
//!
//! Day D is judged against the baseline learned from the days before it
//! (version `until = D-1`), learned on the spot when missing, so a batch over
//! a week and seven nightly runs give the same alerts.

mod billing;
mod chaining;
mod cloud;
mod explain;
mod fleet;
mod governance;
mod peers;
mod recon;
mod rule;
mod storm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, collect, execution_plan::reset_plan_states};

use crate::alert::{self, Alert, Severity};
use crate::baseline::{self, Baseline, BaselineError, BaselineOptions};
use crate::columns::{self, ShapeError};
use crate::engine::{self, EngineError, EngineOptions};
use crate::inventory::{self, Inventory, InventoryErrors};
use crate::lake::{self, Lake, LakeError};
use crate::suppress::Suppressions;
use crate::time::{NS_SAFE_FIRST_DAY, NS_SAFE_LAST_DAY};

pub use chaining::ToolCategories;
pub use cloud::ApiRisk;
pub use fleet::{FLEET, MEMBER_PREFIX as FLEET_MEMBER, fold as fold_fleet, join_incidents as join_fleet_incidents};
pub use governance::inventory_mismatches;
pub use rule::{Joins, LiveEvents, Rule, RuleError, ScopeDim, Scorer};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Inventory(#[from] InventoryErrors),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("{0:?} is not a date (YYYY-MM-DD)")]
    BadDate(String),
    #[error("--from {0} is after --to {1}")]
    EmptyRange(String, String),
    #[error("{path}: {source}")]
    Query { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Categories { path: PathBuf, source: toml::de::Error },
    /// Not `source`: the message already holds it, and a chain would print it twice.
    #[error("{}: {error}fix the API risk tier file (format of models/api_risk.toml)", path.display())]
    ApiRisk { path: PathBuf, error: toml::de::Error },
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("a detection task failed: {0}")]
    Task(String),
    #[error("query {name}: {source}")]
    Run { name: String, source: datafusion::error::DataFusionError },
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
    /// Days of history a baseline learned on the spot covers.
    pub baseline_days: u32,
    pub suppressions: Option<Suppressions>,
    /// Credentials older than this are long-lived (governance).
    pub max_age_days: u32,
    /// Tool categories and dangerous chains replacing the built-in ones.
    pub tool_categories: Option<PathBuf>,
    /// API risk tiers (cloud_api_risk) replacing the built-in ones.
    pub api_risk: Option<PathBuf>,
    /// Where the queries run (a cluster, say).
    pub engine: EngineOptions,
}

#[derive(Debug)]
pub struct DetectReport {
    /// Every alert, suppressed ones included (they carry the rule).
    pub alerts: Vec<Alert>,
    /// The range asked for, and the days in it that hold events (the days detected).
    pub from: String,
    pub to: String,
    pub days: Vec<String>,
    /// Detectors that could not run, and why (e.g. no inventory).
    pub skipped: Vec<(String, String)>,
    /// Baseline versions learned on the way (`until` days).
    pub learned: Vec<String>,
    /// Per day, the baseline version it was judged against (None: cold start).
    pub baselines: Vec<(String, Option<String>)>,
}

impl DetectReport {
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| a.suppressed.is_none())
    }
}

/// What a scoring detector gets besides its query's rows.
pub(crate) struct Context<'a> {
    pub baseline: Option<&'a Baseline>,
    pub categories: &'a ToolCategories,
    /// The API risk tiers cloud_api_risk matches calls against.
    pub api_risk: &'a ApiRisk,
    /// The credential inventory, if any: peer groups are its kind and owner.
    pub inventory: Option<&'a Inventory>,
    /// Its rule: the family its alerts carry, and what each finding maps to.
    pub rule: &'a Rule,
    /// Tool chaining's peer levels, made once for every call sharing the context.
    pub chaining: chaining::Memo<'a>,
}

/// How `watch` judges a detector as events arrive, so that a pass costs in
/// proportion to the new events rather than to the live day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveMode {
    /// Each row of the query comes from one event (given the fixed baseline
    /// and inventory): the query runs over the new events only, its rows are
    /// kept, and those of one [`Unit`] are scored together.
    PerEvent(Unit),
    /// The query needs a credential's whole day, but its rows cannot fire
    /// for the credential unless its windowed state passes the gate.
    Gated(Gate),
    /// The whole day of every credential that moved, each pass: queries
    /// whose shape credtrail does not know (custom or replaced ones).
    Day,
}

/// What a per-event detector's rows are scored together by. Units score
/// independently, so `watch` scores again only those with new rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// All of a credential's rows.
    Credential,
    /// The rows of one agent session (the query's `session_id` column).
    Session,
}

impl Unit {
    /// The row column that tells units of one credential apart, if any.
    pub fn column(self) -> Option<&'static str> {
        match self {
            Unit::Credential => None,
            Unit::Session => Some("session_id"),
        }
    }
}

/// What windowed per-credential state must show before a gated detector can
/// alert on the credential. Gates may open too often, never too rarely: they
/// only spare the query credentials it would raise nothing for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// A minute with as many failures as a burst needs ([`least_burst`]), or
    /// a fixed [`SUSTAINED_MINUTES`] window with half as many as a sustained
    /// storm needs ([`least_sustained`]).
    Storm,
    /// An hour whose spend may fire a billing spike ([`least_spend`]), by
    /// the bar its callers allow: lower once one came from a new network.
    Spend,
    /// A CloudTrail call with a temporary (ASIA…) session key.
    SessionKey,
}

pub use billing::{LeastSpend, least_spend, new_network};
pub(crate) use explain::FIRST_SEEN_PREFIX;
#[cfg(test)]
pub(crate) use storm::alerts_for as storm_alerts_for;
pub use storm::{SUSTAINED_MINUTES, least_burst, least_sustained, usual_rate};

/// The built-in detectors: each query file's name and text, whose header holds its rule.
const BUILTIN: &[(&str, &str)] = &[
    ("billing_spike", include_str!("../../queries/billing_spike.sql")),
    ("retry_storm", include_str!("../../queries/retry_storm.sql")),
    ("tool_chaining", include_str!("../../queries/tool_chaining.sql")),
    ("out_of_scope", include_str!("../../queries/out_of_scope.sql")),
    ("first_seen", include_str!("../../queries/first_seen.sql")),
    ("secret_exposure", include_str!("../../queries/secret_exposure.sql")),
    ("llmjacking_recon", include_str!("../../queries/llmjacking_recon.sql")),
    ("session_key_reuse", include_str!("../../queries/session_key_reuse.sql")),
    ("defense_evasion", include_str!("../../queries/defense_evasion.sql")),
    ("cloud_api_risk", include_str!("../../queries/cloud_api_risk.sql")),
];

/// A built-in detector: its query and the rule its header declares.
struct Builtin {
    name: &'static str,
    sql: String,
    rule: Rule,
}

/// The built-in detectors, their headers parsed once.
fn builtins() -> &'static [Builtin] {
    static PARSED: OnceLock<Vec<Builtin>> = OnceLock::new();
    PARSED.get_or_init(|| {
        BUILTIN
            .iter()
            .map(|&(name, sql)| {
                let file = format!("queries/{name}.sql");
                // Compiled in and checked by a test: a broken header is a build mistake.
                let rule::Loaded { sql, rule } = rule::load(&file, sql).unwrap_or_else(|e| panic!("{e}"));
                Builtin { name, sql, rule: rule.unwrap_or_else(|| panic!("{file} has no rule header")) }
            })
            .collect()
    })
}

/// The rule of the built-in detector `name`.
#[cfg(test)]
pub(crate) fn builtin_rule(name: &str) -> &'static Rule {
    &builtins().iter().find(|d| d.name == name).expect("a built-in detector").rule
}

/// Every built-in detector's name and query (fragments expanded, with its `{from}`/`{to}` day
/// and `{baseline}` version placeholders; `{api_risk}` filled in with the
/// built-in tiers), for the SQL shell's views.
pub fn detector_queries() -> Vec<(&'static str, String)> {
    let tiers = api_risk_filter(ApiRisk::builtin());
    builtins().iter().map(|d| (d.name, d.sql.replace(API_RISK, &tiers))).collect()
}

/// The placeholder a query uses for "the call is one the API risk tiers name"
/// (over its `tool` column): cloud_api_risk filters its calls in SQL with it.
const API_RISK: &str = "{api_risk}";

fn api_risk_filter(tiers: &ApiRisk) -> String {
    // The lake's dictionary column as it is: LIKE and IN test each distinct
    // tool once, where a cast would first copy every event's.
    tiers.sql_filter("tool")
}

fn parse_day(s: &str) -> Result<chrono::NaiveDate, DetectError> {
    crate::time::parse_day(s).ok_or_else(|| DetectError::BadDate(s.to_string()))
}

/// The distinct values of string lists, sorted: the addresses, models or
/// codes of the rows an alert covers.
pub(crate) fn union<'a>(lists: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> = lists.into_iter().flatten().collect();
    set.into_iter().cloned().collect()
}

fn day_list(from: &str, to: &str) -> Result<Vec<String>, DetectError> {
    let (a, b) = (parse_day(from)?, parse_day(to)?);
    if a > b {
        return Err(DetectError::EmptyRange(from.into(), to.into()));
    }
    Ok(a.iter_days().take_while(|d| *d <= b).map(|d| d.format("%Y-%m-%d").to_string()).collect())
}

pub(crate) fn previous_day(day: &str) -> Result<String, DetectError> {
    Ok((parse_day(day)? - chrono::Days::new(1)).format("%Y-%m-%d").to_string())
}

/// The detectors of a run, ready to judge days: their resolved queries, the
/// inventory and tool categories. Batch `detect` and streaming `watch` judge
/// a day through the same engine, so they raise the same alerts.
pub struct Engine {
    plans: Vec<Plan>,
    inventory: Option<Inventory>,
    categories: ToolCategories,
    /// A user's API risk tiers (None: the built-in ones), and their SQL filter.
    api_risk: Option<ApiRisk>,
    api_risk_sql: String,
    /// How its sessions (and the baselines it learns) run.
    sessions: EngineOptions,
}

impl Engine {
    pub fn new(
        queries: Option<&Path>,
        inventory: Option<&Path>,
        tool_categories: Option<&Path>,
        api_risk: Option<&Path>,
    ) -> Result<Engine, DetectError> {
        let inventory = inventory.map(Inventory::load).transpose()?;
        let categories = match tool_categories {
            Some(path) => ToolCategories::load(path)?,
            None => ToolCategories::builtin(),
        };
        let api_risk = api_risk.map(ApiRisk::load).transpose()?;
        let api_risk_sql = api_risk_filter(api_risk.as_ref().unwrap_or(ApiRisk::builtin()));
        let sessions = EngineOptions::default();
        Ok(Engine { plans: plan(queries)?, inventory, categories, api_risk, api_risk_sql, sessions })
    }

    /// The engine with its sessions run as `sessions` say (on a cluster, say).
    pub fn with_sessions(self, sessions: EngineOptions) -> Engine {
        Engine { sessions, ..self }
    }

    pub fn inventory(&self) -> Option<&Inventory> {
        self.inventory.as_ref()
    }

    /// Detectors that cannot run, and why.
    pub fn skipped(&self) -> Vec<(String, String)> {
        let why = "needs a credential inventory (--inventory)".to_string();
        self.plans
            .iter()
            .filter(|d| d.rule.needs_inventory() && self.inventory.is_none())
            .map(|d| (d.name.clone(), why.clone()))
            .collect()
    }

    /// A session over the lake with the inventory registered as `credentials`.
    pub async fn session(&self, lake: &Path) -> Result<datafusion::prelude::SessionContext, DetectError> {
        let ctx = engine::context_with(lake, &self.sessions).await?;
        if let Some(inv) = &self.inventory {
            inv.register(&ctx)?;
        }
        Ok(ctx)
    }

    /// Makes sure the baseline judging `day` (version `day - 1`) exists and
    /// is current, learning it when missing or stale. Returns the version, or
    /// `None` when the lake has no history before the day (cold start), and
    /// whether it was learned now.
    pub async fn prepare_baseline(
        &self,
        lake: &Path,
        day: &str,
        baseline_days: u32,
    ) -> Result<(Option<String>, bool), DetectError> {
        let until = previous_day(day)?;
        if baseline::versions(lake).await.contains(&until) && !baseline::is_stale(lake, &until) {
            return Ok((Some(until), false));
        }
        let o = BaselineOptions {
            lake: lake.to_path_buf(),
            until: until.clone(),
            days: baseline_days,
            rescan: false,
            engine: self.sessions.clone(),
        };
        match baseline::learn(&o).await {
            Ok(_) => Ok((Some(until), true)),
            // The first day of a lake has no history: everything is in cold start.
            Err(BaselineError::NoHistory(_)) => Ok((None, false)),
            Err(e) => Err(e.into()),
        }
    }

    /// Every detector's alerts for `day` in `ctx`, whose `events` may be the
    /// lake's or any table of the same columns, judged against `base`; none
    /// from the detectors in `day.idle`, which the day holds no events for,
    /// nor from those that need history when `base` has learned none.
    pub async fn judge_day(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        day: &Day,
        base: Option<&Baseline>,
    ) -> Result<Vec<Alert>, DetectError> {
        let history = base.is_some_and(|b| b.credentials.values().any(|c| !c.cold_start));
        let detectors: Vec<_> = self
            .detectors()
            .filter(|(d, _)| !day.idle.contains(d) && (history || !self.plans[*d].rule.needs_history))
            .collect();
        // Each query plans and runs on a task of its own: planning is CPU
        // work, and on one task the queries would take turns on one core.
        let mut tasks = Vec::new();
        for &(d, _) in &detectors {
            let (name, sql, ctx) = (self.plans[d].name.clone(), self.sql_for(d, &day.date)?, ctx.clone());
            let (date, joins) = (day.date.clone(), self.plans[d].rule.joins);
            tasks.push(tokio::spawn(async move {
                let plan = plan_sql(&ctx, &name, &date, &sql, joins).await?;
                execute_plan(&ctx, &name, &date, &plan).await
            }));
        }
        let mut today = Vec::new();
        for (d, task) in detectors.into_iter().zip(tasks) {
            let rows = task.await.map_err(|e| DetectError::Task(e.to_string()))??;
            today.extend(self.score(d, base, &rows)?);
        }
        Ok(finish(today))
    }

    /// The days in `[from, to]` that hold events, each with how many and the
    /// detectors whose rule's `events` none of them meets.
    pub async fn days(&self, lake: &Path, from: &str, to: &str) -> Result<Vec<Day>, DetectError> {
        let ctx = engine::context_with(lake, &self.sessions).await?;
        // Not a day whose times overflow the nanoseconds date functions compute
        // in (a poisoned record of year 9999 in an older lake): every query over
        // it would fail, and with it the whole run.
        let (from, to) = (from.max(NS_SAFE_FIRST_DAY), to.min(NS_SAFE_LAST_DAY));
        let filtered: Vec<(usize, String)> = self
            .detectors()
            .filter_map(|(d, _)| Some((d, self.plans[d].rule.events.as_deref()?.replace(API_RISK, &self.api_risk_sql))))
            .collect();
        let meets: String =
            filtered.iter().map(|(d, cond)| format!(", bool_or(coalesce(({cond}), false)) AS d{d}")).collect();
        let q = format!(
            "SELECT date, count(*) AS n{meets} FROM events WHERE date BETWEEN '{from}' AND '{to}' GROUP BY date ORDER BY date"
        );
        let batches = match engine::collect(&ctx, &q).await {
            Ok(b) => b,
            Err(e) => {
                // Name the rule whose condition is wrong, when one is.
                for (d, cond) in &filtered {
                    if let Err(source) = ctx.sql(&format!("SELECT 1 FROM events WHERE {cond}")).await {
                        let name = format!("{} (its rule's `events` condition)", self.plans[*d].name);
                        return Err(DetectError::Run { name, source });
                    }
                }
                return Err(e.into());
            }
        };
        let mut days = Vec::new();
        for b in &batches {
            let dates = columns::strings(b, "days", "date")?;
            let counts = columns::ints(b, "days", "n")?;
            let meets = filtered
                .iter()
                .map(|(d, _)| Ok((*d, columns::bools(b, "days", &format!("d{d}"))?)))
                .collect::<Result<Vec<_>, ShapeError>>()?;
            for (i, (date, n)) in dates.into_iter().zip(counts).enumerate() {
                let idle: Vec<usize> = meets.iter().filter(|(_, m)| m[i] != Some(true)).map(|(d, _)| *d).collect();
                let names: Vec<&str> = idle.iter().map(|&d| self.plans[d].name.as_str()).collect();
                tracing::debug!(day = date.as_deref().unwrap_or_default(), idle = ?names, "detectors without events to read");
                days.push(Day { date: date.unwrap_or_default(), events: n.unwrap_or(0) as u64, idle });
            }
        }
        Ok(days)
    }

    /// The detectors that can run (those needing an inventory only with one),
    /// with how `watch` judges each.
    pub fn detectors(&self) -> impl Iterator<Item = (usize, LiveMode)> + '_ {
        self.plans
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.rule.needs_inventory() || self.inventory.is_some())
            .map(|(i, d)| (i, d.rule.live))
    }

    /// Detector `d`'s name (its query file's, without `.sql`).
    pub fn name(&self, d: usize) -> &str {
        &self.plans[d].name
    }

    /// Which new events `watch` hands detector `d` when it runs per event.
    pub fn live_events(&self, d: usize) -> &LiveEvents {
        &self.plans[d].rule.live_events
    }

    /// Detector `d`'s (from [`Engine::detectors`]) physical plan for `day` in
    /// `ctx`. Planning costs more than running a query over a few new events,
    /// so `watch` plans once per day and scale of its stages and runs the plan
    /// again while the tables under it change.
    pub async fn plan(
        &self,
        (d, _): (usize, LiveMode),
        ctx: &datafusion::prelude::SessionContext,
        day: &str,
    ) -> Result<Arc<dyn ExecutionPlan>, DetectError> {
        let p = &self.plans[d];
        plan_sql(ctx, &p.name, day, &self.sql_for(d, day)?, p.rule.joins).await
    }

    /// Detector `d`'s SQL for `day`, its placeholders filled in.
    fn sql_for(&self, d: usize, day: &str) -> Result<String, DetectError> {
        let until = previous_day(day)?;
        Ok(self.plans[d]
            .sql
            .replace("{from}", day)
            .replace("{to}", day)
            .replace("{baseline}", &until)
            .replace(API_RISK, &self.api_risk_sql))
    }

    /// Runs a plan from [`Engine::plan`], from a clean state each time.
    pub async fn execute(
        &self,
        (d, _): (usize, LiveMode),
        plan: &Arc<dyn ExecutionPlan>,
        ctx: &datafusion::prelude::SessionContext,
        day: &str,
    ) -> Result<Vec<RecordBatch>, DetectError> {
        execute_plan(ctx, &self.plans[d].name, day, plan).await
    }

    /// Detector `d`'s alerts from its rows, judged against `base`. Scoring
    /// sorts what it needs, so rows may come in any order.
    pub fn score(
        &self,
        d: (usize, LiveMode),
        base: Option<&Baseline>,
        rows: &[RecordBatch],
    ) -> Result<Vec<Alert>, DetectError> {
        let cx = self.context(d.0, base);
        self.score_in(&cx, d.0, rows)
    }

    /// Detector `d`'s alerts for each unit's rows on its own (as [`Engine::score`]
    /// of each), sharing what scoring learns of the baseline across units.
    pub fn score_units<K>(
        &self,
        d: (usize, LiveMode),
        base: Option<&Baseline>,
        units: Vec<(K, Vec<RecordBatch>)>,
    ) -> Result<Vec<(K, Vec<Alert>)>, DetectError> {
        let cx = self.context(d.0, base);
        units.into_iter().map(|(k, rows)| Ok((k, self.score_in(&cx, d.0, &rows)?))).collect()
    }

    fn context<'a>(&'a self, d: usize, base: Option<&'a Baseline>) -> Context<'a> {
        Context {
            baseline: base,
            categories: &self.categories,
            api_risk: self.api_risk.as_ref().unwrap_or(ApiRisk::builtin()),
            inventory: self.inventory.as_ref(),
            rule: &self.plans[d].rule,
            chaining: Default::default(),
        }
    }

    fn score_in(&self, cx: &Context<'_>, d: usize, rows: &[RecordBatch]) -> Result<Vec<Alert>, DetectError> {
        let d = &self.plans[d];
        let q = &d.name;
        let mut alerts = match d.rule.scoring {
            Scorer::Rows(e) => explain::grouped_alerts(&d.rule, q, explain::explainer(e), rows),
            Scorer::Billing => billing::score(cx, q, rows),
            Scorer::Storm => storm::score(cx, q, rows),
            Scorer::Chaining => chaining::score(cx, q, rows),
            Scorer::Recon => recon::score(cx, q, rows),
            Scorer::SessionReuse => recon::score_session_reuse(cx, q, rows),
            Scorer::OutOfScope => governance::out_of_scope(cx, q, rows),
            Scorer::Cloud => cloud::score(cx, q, rows),
        }?;
        explain::judge_first_seen(self.inventory.as_ref(), cx.baseline, &mut alerts);
        Ok(alerts)
    }
}

/// The alerts of one or more credentials' detectors, put together: chains
/// absorb their recon steps, and first-seen values join the alerts they belong to.
pub fn finish(alerts: Vec<Alert>) -> Vec<Alert> {
    fold_first_seen(recon::absorb_into_chains(alerts))
}

/// Detector `name`'s physical plan of `sql` for `day` in `ctx`.
async fn plan_sql(
    ctx: &datafusion::prelude::SessionContext,
    name: &str,
    day: &str,
    sql: &str,
    joins: Joins,
) -> Result<Arc<dyn ExecutionPlan>, DetectError> {
    let run = |source| DetectError::Run { name: name.to_string(), source };
    let started = std::time::Instant::now();
    let (mut state, logical) = ctx.sql(sql).await.map_err(run)?.into_parts();
    if joins == Joins::AsWritten {
        // The plan's own copy of the session's settings: the detectors planned beside it keep theirs.
        state.config_mut().options_mut().optimizer.join_reordering = false;
    }
    let plan = state.create_physical_plan(&logical).await.map_err(run)?;
    tracing::debug!(detector = %name, day, ms = started.elapsed().as_millis() as u64, "planned a detector");
    Ok(plan)
}

/// Runs detector `name`'s plan from [`plan_sql`], from a clean state each time.
async fn execute_plan(
    ctx: &datafusion::prelude::SessionContext,
    name: &str,
    day: &str,
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<Vec<RecordBatch>, DetectError> {
    let run = |source| DetectError::Run { name: name.to_string(), source };
    let started = std::time::Instant::now();
    // Joins and sorts keep what they built in the plan: a rerun starts from fresh ones.
    let plan = reset_plan_states(Arc::clone(plan)).map_err(run)?;
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.map_err(run)?;
    tracing::debug!(detector = %name, day, ms = started.elapsed().as_millis() as u64, "ran a detector");
    tracing::trace!(
        detector = %name,
        plan = %datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true),
        "the run's plan"
    );
    Ok(batches)
}

/// Runs every detector over the days and replaces those days' alerts in the lake.
pub async fn detect(opts: &DetectOptions) -> Result<DetectReport, DetectError> {
    day_list(&opts.from, &opts.to)?;
    let (queries, inventory) = (opts.queries.as_deref(), opts.inventory.as_deref());
    let engine = Engine::new(queries, inventory, opts.tool_categories.as_deref(), opts.api_risk.as_deref())?
        .with_sessions(opts.engine.clone());
    // Only days with events: a lake with one stray record from 1970 must not
    // make a whole-lake run walk fifty years.
    let days = engine.days(&opts.lake, &opts.from, &opts.to).await?;
    // Governance's scan of every credential's use runs beside the days' detection.
    let usage = (engine.inventory().is_some() && !days.is_empty()).then(|| {
        let (lake, sessions) = (opts.lake.clone(), opts.engine.clone());
        tokio::spawn(async move { inventory::credential_usage(&lake, &sessions).await })
    });
    let mut alerts = Vec::new();
    let mut learned = Vec::new();
    let mut baselines = Vec::new();
    for day in &days {
        let (version, fresh) = engine.prepare_baseline(&opts.lake, &day.date, opts.baseline_days).await?;
        if fresh {
            learned.extend(version.clone());
        }
        // A fresh session per day: the model tables just learned must be listed.
        let ctx = engine.session(&opts.lake).await?;
        if day.events < SMALL_DAY && opts.engine.cluster.is_none() {
            // Spreading a few thousand rows over every core costs more in
            // planning and exchanges than it saves; the detectors run side by side anyway.
            ctx.state_ref().write().config_mut().options_mut().execution.target_partitions = 1;
        }
        let base = match &version {
            Some(until) => Some(baseline::load(&ctx, &opts.lake, until).await?),
            None => None,
        };
        baselines.push((day.date.clone(), version));
        alerts.extend(engine.judge_day(&ctx, day, base.as_ref()).await?);
    }
    let days: Vec<String> = days.into_iter().map(|d| d.date).collect();
    let mut alerts = governance::merge_repeats(alerts);
    if let (Some(inv), Some(usage)) = (engine.inventory(), usage) {
        let usage = usage.await.map_err(|e| DetectError::Task(e.to_string()))??;
        alerts.extend(governance::alerts(inv, &usage, &days, opts.max_age_days));
    }
    if let Some(s) = &opts.suppressions {
        s.apply(&mut alerts);
    }
    let mut alerts = fleet::fold(alerts);
    alert::assign_incidents(&mut alerts);
    fleet::join_incidents(&mut alerts);
    alerts.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then(a.window_start_ms.cmp(&b.window_start_ms)).then(a.alert_id.cmp(&b.alert_id))
    });
    write_alerts(&opts.lake, &opts.from, &opts.to, &days, &alerts)?;
    let skipped = engine.skipped();
    Ok(DetectReport { alerts, from: opts.from.clone(), to: opts.to.clone(), days, skipped, learned, baselines })
}

/// First-seen values that are part of another alert of the same credential
/// (the new model of an LLMjacking spike, the new tool of a dangerous chain,
/// the new bucket of an out-of-scope read) join that alert instead of
/// standing alone; the rest stand as out-of-scope findings of their own.
fn fold_first_seen(alerts: Vec<Alert>) -> Vec<Alert> {
    const SLACK_MS: i64 = 10 * 60_000;
    let (seen, mut rest): (Vec<Alert>, Vec<Alert>) =
        alerts.into_iter().partition(|a| a.finding.starts_with(explain::FIRST_SEEN_PREFIX));
    let mut out = Vec::new();
    for f in seen {
        // Not into a standing mismatch: a new value is news, not part of it.
        let host = rest.iter_mut().find(|a| {
            a.detector != "governance"
                && a.credential_id == f.credential_id
                && f.window_start_ms <= a.window_end_ms + SLACK_MS
                && a.window_start_ms <= f.window_end_ms + SLACK_MS
        });
        match host {
            Some(a) => {
                let what = f.finding.trim_start_matches(explain::FIRST_SEEN_PREFIX).replace('_', " ");
                let value = f.subject.clone().unwrap_or_default();
                a.observed = format!("{}; first-seen {what} {value}", a.observed);
            }
            None => out.push(f),
        }
    }
    rest.extend(out);
    rest
}

/// A day of events to detect.
#[derive(Debug, Clone)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// How many events the lake holds for it.
    pub events: u64,
    /// The detectors (indices of [`Engine::detectors`]) whose rule's
    /// `events` none of the day's events meets: they are not run.
    pub idle: Vec<usize>,
}

/// Days with fewer events are planned for one partition.
const SMALL_DAY: u64 = 100_000;

/// A detector ready to run: its query text and rule resolved.
struct Plan {
    name: String,
    sql: String,
    rule: Rule,
}

/// The built-in detectors, each replaced by `DIR/<name>.sql` when present,
/// plus every other `DIR/*.sql` as a detector of its own. A file's header
/// gives its rule; a replacement without one keeps the built-in rule but is
/// judged a whole day at a time (its rows may not keep the shape the live
/// mode relies on), and another file without one returns the request-level
/// columns and its alerts carry its file name.
fn plan(dir: Option<&Path>) -> Result<Vec<Plan>, DetectError> {
    let read = |path: &Path| {
        let text = std::fs::read_to_string(path).map_err(|source| DetectError::Query { path: path.into(), source })?;
        let rule::Loaded { sql, rule } = rule::load(&path.display().to_string(), &text)?;
        Ok::<_, DetectError>((sql, rule))
    };
    let mut plans = Vec::new();
    for d in builtins() {
        let own = dir.map(|dir| dir.join(format!("{}.sql", d.name))).filter(|p| p.exists());
        let (sql, rule) = match own {
            Some(p) => {
                let (sql, rule) = read(&p)?;
                // What the built-in rule says of its query's inputs is not said of this one.
                let own = |d: &Builtin| Rule {
                    live: LiveMode::Day,
                    live_events: LiveEvents::All,
                    events: None,
                    needs_history: false,
                    joins: Joins::Estimated,
                    ..d.rule.clone()
                };
                (sql, rule.unwrap_or_else(|| own(d)))
            }
            None => (d.sql.clone(), d.rule.clone()),
        };
        plans.push(Plan { name: d.name.to_string(), sql, rule });
    }
    let Some(dir) = dir else { return Ok(plans) };
    let entries = std::fs::read_dir(dir).map_err(|source| DetectError::Query { path: dir.to_path_buf(), source })?;
    let mut extra: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .filter(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            !builtins().iter().any(|d| d.name == stem) && !stem.starts_with("baseline_")
        })
        .collect();
    extra.sort();
    for p in extra {
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("custom").to_string();
        let (sql, rule) = read(&p)?;
        let rule = rule.unwrap_or_else(|| Rule::plain(&name));
        plans.push(Plan { name, sql, rule });
    }
    Ok(plans)
}

/// Replaces the alerts of the range with `alerts`, atomically: the days
/// detected, and any day in the range that holds alerts from an earlier run.
fn write_alerts(root: &Path, from: &str, to: &str, days: &[String], alerts: &[Alert]) -> Result<(), DetectError> {
    let lake = Lake::open(root, lake::Open::Write)?;
    let txn = lake.begin()?;
    let mut by_day: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
    for a in alerts {
        by_day.entry(crate::time::day_of(a.window_start_ms)).or_default().push(a.clone());
    }
    let mut all: std::collections::BTreeSet<String> = days.iter().cloned().collect();
    all.extend(by_day.keys().cloned());
    for name in lake.subdirs(lake::ALERTS)? {
        if let Some(d) = name.strip_prefix("date=")
            && (from..=to).contains(&d)
        {
            all.insert(d.to_string());
        }
    }
    for day in &all {
        stage_day_alerts(&txn, day, by_day.get(day).map_or(&[], Vec::as_slice))?;
    }
    txn.commit(Vec::new())?;
    Ok(())
}

/// Stages `alerts` as the whole of `day`'s alerts: whatever the day holds
/// now (from any run) is replaced when `txn` commits.
pub(crate) fn stage_day_alerts(txn: &lake::Txn, day: &str, alerts: &[Alert]) -> Result<(), DetectError> {
    let lake = txn.lake();
    let dir = format!("{}/date={day}", lake::ALERTS);
    txn.replace(lake::committed_files(lake, &dir, "parquet")?);
    if !alerts.is_empty() {
        let rel = txn.reserve(&dir, "parquet");
        let batch = alert::to_batch(alerts);
        lake::write_parquet_staged(lake, &rel, batch.schema(), &[batch], lake::writer_properties())?;
    }
    Ok(())
}

/// Severity from a score on a detector's own scale: `(medium, high, critical)` cut-offs.
pub(crate) fn grade(score: f64, cuts: (f64, f64, f64)) -> Severity {
    if score >= cuts.2 {
        Severity::Critical
    } else if score >= cuts.1 {
        Severity::High
    } else if score >= cuts.0 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

/// The first and last day that hold events, for detecting a whole lake.
pub async fn lake_days(root: &Path) -> Result<Option<(String, String)>, DetectError> {
    let ctx = engine::context(root).await?;
    let b = engine::collect(&ctx, "SELECT min(date) AS a, max(date) AS b FROM events").await?;
    let Some(b) = b.first() else { return Ok(None) };
    let a = columns::strings(b, "days", "a")?;
    let z = columns::strings(b, "days", "b")?;
    match (a.first().cloned().flatten(), z.first().cloned().flatten()) {
        (Some(a), Some(z)) => Ok(Some((a, z))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_ranges() {
        assert_eq!(day_list("2026-11-30", "2026-12-02").unwrap(), vec!["2026-11-30", "2026-12-01", "2026-12-02"]);
        assert!(matches!(day_list("2026-12-02", "2026-11-30"), Err(DetectError::EmptyRange(..))));
        assert!(matches!(day_list("yesterday", "2026-11-30"), Err(DetectError::BadDate(_))));
        assert_eq!(previous_day("2026-12-01").unwrap(), "2026-11-30");
    }

    #[test]
    fn built_in_rules_parse() {
        for d in builtins() {
            assert_eq!(d.rule.needs_inventory(), d.name == "out_of_scope", "{}", d.name);
        }
        assert_eq!(builtin_rule("llmjacking_recon").family, "tool_chaining");
        assert_eq!(builtin_rule("tool_chaining").live, LiveMode::PerEvent(Unit::Session));
        assert_eq!(builtin_rule("session_key_reuse").live, LiveMode::Gated(Gate::SessionKey));
    }

    /// A request-level row batch, as a custom query returns it.
    fn request_rows(cred: &str, finding: &str, ts: i64) -> RecordBatch {
        use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let ts = Arc::new(TimestampMillisecondArray::from(vec![ts]).with_timezone("UTC")) as ArrayRef;
        RecordBatch::try_from_iter([
            ("credential_id", s(cred)),
            ("principal", s("svc")),
            ("ts", ts),
            ("request_id", s("r1")),
            ("source_ip", s("10.0.0.1")),
            ("finding", s(finding)),
            ("value", s("v")),
            ("allowed", s("w")),
        ])
        .unwrap()
    }

    #[test]
    fn custom_queries_carry_their_header() {
        let dir = tempfile::tempdir().unwrap();
        let sql = "-- mine: prose\n--- family = \"my_family\"\n--- severity = \"high\"\n--- mitre = \"T1 X\"\n\
                   --- [findings.odd]\n--- severity = \"critical\"\nSELECT 1";
        std::fs::write(dir.path().join("mine.sql"), sql).unwrap();
        std::fs::write(dir.path().join("plain.sql"), "-- no header\nSELECT 1").unwrap();
        let engine = Engine::new(Some(dir.path()), None, None, None).unwrap();
        let score = |name: &str, finding: &str| {
            let i = engine.plans.iter().position(|p| p.name == name).unwrap();
            let rows = request_rows("k", finding, 1_700_000_000_000);
            engine.score((i, engine.plans[i].rule.live), None, &[rows]).unwrap().remove(0)
        };
        let a = score("mine", "x");
        assert_eq!(
            (a.detector.as_str(), a.severity, a.mitre_attack.as_deref()),
            ("my_family", Severity::High, Some("T1 X"))
        );
        assert_eq!(a.alert_id, alert::alert_id("my_family", "k", "x:v", 1_700_000_000_000));
        assert_eq!(score("mine", "odd").severity, Severity::Critical);
        let a = score("plain", "x");
        assert_eq!((a.detector.as_str(), a.severity, a.mitre_attack), ("plain", Severity::Medium, None));

        std::fs::write(dir.path().join("bad.sql"), "--- family = \"b\"\n--- colour = \"red\"\nSELECT 1").unwrap();
        let e = Engine::new(Some(dir.path()), None, None, None).err().unwrap().to_string();
        assert!(e.contains("bad.sql") && e.contains("colour"), "{e}");
    }

    /// A cluster's scheduler decodes a job's logical plan with protobuf's
    /// recursion limit (100 levels: two a plan node, and Ballista's job
    /// message around the plan). `first_seen` at 36 nodes deep, as counted
    /// here, ran on a cluster; a version with twelve more levels by
    /// `EXPLAIN`'s count failed to decode. So no built-in detector may be
    /// deeper than the 36 known to run.
    #[tokio::test]
    async fn built_in_plans_stay_shallow_enough_for_a_cluster() {
        const MAX_DEPTH: usize = 36;
        fn depth(p: &datafusion::logical_expr::LogicalPlan) -> usize {
            1 + p.inputs().into_iter().map(depth).max().unwrap_or(0)
        }
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.csv");
        std::fs::write(&inv, "credential_id,owner,principal,kind\nk1,o@x,svc:a,api_key\n").unwrap();
        let engine = Engine::new(None, Some(&inv), None, None).unwrap();
        let lake = dir.path().join("lake");
        crate::lake::Lake::open(&lake, crate::lake::Open::Write).unwrap();
        let ctx = engine.session(&lake).await.unwrap();
        for (i, d) in engine.plans.iter().enumerate() {
            let sql = engine.sql_for(i, "2026-11-08").unwrap();
            let plan = ctx.state().create_logical_plan(&sql).await.unwrap();
            assert!(depth(&plan) <= MAX_DEPTH, "{} plans {} nodes deep", d.name, depth(&plan));
        }
    }

    /// `joins = "as_written"` hashes each join's left side, where the
    /// planner's estimates would hash the side they wrongly think smaller.
    #[tokio::test]
    async fn as_written_joins_hash_the_left_side() {
        use arrow::array::Int64Array;
        use datafusion::physical_plan::joins::HashJoinExec;
        fn join(p: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
            p.downcast_ref::<HashJoinExec>().or_else(|| p.children().into_iter().find_map(join))
        }
        fn aggregates(p: &Arc<dyn ExecutionPlan>) -> bool {
            p.name() == "AggregateExec" || p.children().into_iter().any(aggregates)
        }
        let ctx = datafusion::prelude::SessionContext::new();
        let n = 10_000;
        let ids = Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 10))) as _;
        let vals = Arc::new(Int64Array::from_iter_values(0..n)) as _;
        let big = RecordBatch::try_from_iter([("k", ids), ("v", vals)]).unwrap();
        ctx.register_batch("big", big).unwrap();
        // Ten rows on the left, which the planner estimates at more than the right's 10,000.
        let sql = "SELECT s.k, count(*) AS n FROM (SELECT DISTINCT k FROM big UNION ALL SELECT DISTINCT k FROM big) s \
                   JOIN big b ON b.k = s.k GROUP BY s.k ORDER BY s.k";
        let mut counts = Vec::new();
        for (joins, hashes_aggregate) in [(Joins::Estimated, false), (Joins::AsWritten, true)] {
            let plan = plan_sql(&ctx, "t", "2026-11-08", sql, joins).await.unwrap();
            let built = join(&plan).expect("a hash join").left();
            assert_eq!(aggregates(built), hashes_aggregate, "{joins:?}");
            counts.push(execute_plan(&ctx, "t", "2026-11-08", &plan).await.unwrap());
        }
        assert_eq!(counts[0], counts[1]);
        assert_eq!(counts[0].iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
    }

    #[test]
    fn grades() {
        assert_eq!(grade(1.0, (2.0, 5.0, 9.0)), Severity::Low);
        assert_eq!(grade(5.0, (2.0, 5.0, 9.0)), Severity::High);
        assert_eq!(grade(10.0, (2.0, 5.0, 9.0)), Severity::Critical);
    }

    #[test]
    fn every_detector_is_loaded_with_its_fragments_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let mine = "--- family = \"mine\"\nWITH {billed_events} SELECT * FROM billed";
        std::fs::write(dir.path().join("mine.sql"), mine).unwrap();
        let engine = Engine::new(Some(dir.path()), None, None, None).unwrap();
        let shared = "invocation AS (";
        for p in &engine.plans {
            assert!(!p.sql.contains("{billed_events}"), "{}", p.name);
        }
        let sql = |name: &str| &engine.plans.iter().find(|p| p.name == name).unwrap().sql;
        assert!(sql("mine").contains(shared) && sql("billing_spike").contains(shared));
        // The views the shell builds take the same loaded text.
        let (_, billing) = detector_queries().into_iter().find(|(n, _)| *n == "billing_spike").unwrap();
        assert_eq!(&billing, sql("billing_spike"));
    }
}

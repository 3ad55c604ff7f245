//! Incremental detection: the batch detectors' own queries and scoring, fed
//! so that a pass costs in proportion to what is new, not to the live day.
//!
//! Each day being watched keeps its events in memory (seeded from the lake,
//! so a restart loses no context) with its baseline (version `day - 1`, the
//! one batch `detect` uses). A pass judges the credentials that received
//! events, each detector as its [`LiveMode`] allows:
//!
//! - per-event queries run over the new events only (or those of them their
//!   rule asks for: [`scope`](super::scope)); each credential's rows are
//!   kept, and all of them are scored together, as the batch job does;
//! - gated queries (minute and hour windows, session keys) run over the day of
//!   the credentials whose windowed state ([`windows`](super::windows)) shows
//!   they may have a row;
//! - anything else runs over the day of every credential that moved.
//!
//! So a credential's alerts are those the batch job would raise over the same
//! events: the same queries and scoring, not a second implementation.
//!
//! Memory follows what may alert, not the day: once events are committed to
//! the lake, a day keeps in memory only the events of credentials whose gate
//! is open; a credential whose gate opens later has its day read back from
//! the lake. Only the two newest days are judged; older events still reach
//! the lake but are left to the batch job.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, filter_record_batch, interleave_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;

use super::scope;
use super::windows::Windows;
use crate::alert::{self, Alert};
use crate::baseline::{self, Baseline};
use crate::detect::{self, DetectError, Engine, LiveEvents, LiveMode, Unit};
use crate::engine::counted::CountedTable;
use crate::engine::{self, EngineError, catalog};
use crate::schema::{col, event_schema, shrink_dictionaries};
use crate::secrets::{self, ExposureRow};
use crate::suppress::Suppressions;

/// Days judged live: today and yesterday (for late events around midnight).
const LIVE_DAYS: usize = 2;
/// Batches of a day merged into one once there are more than this many.
const MAX_BATCHES: usize = 16;

/// What a per-event detector keeps for one credential: its rows so far, and
/// the alerts of each scoring [`Unit`] (the credential, or one session) as
/// of its last scoring.
#[derive(Default)]
struct Kept {
    rows: Vec<RecordBatch>,
    /// Where each unit's rows are in `rows` (batch, row), in the order kept,
    /// when units are finer than the credential: a unit that moved is
    /// gathered from its own rows, not found again among all of them.
    at: HashMap<String, Vec<(usize, usize)>>,
    /// By unit, in order: a pass finds them in the same order as the last.
    alerts: BTreeMap<String, Vec<Alert>>,
    /// Units with rows not scored yet.
    moved: HashSet<String>,
}

impl Kept {
    /// Adds a credential's new rows, split into units by `unit`'s column.
    fn add(&mut self, unit: Unit, rows: RecordBatch) -> Result<(), DetectError> {
        let batch = self.rows.len();
        match unit.column() {
            Some(column) => {
                for (row, u) in text(&rows, column)?.iter().enumerate() {
                    let u = u.unwrap_or("");
                    match self.at.get_mut(u) {
                        Some(at) => at.push((batch, row)),
                        None => _ = self.at.insert(u.to_string(), vec![(batch, row)]),
                    }
                    if !self.moved.contains(u) {
                        self.moved.insert(u.to_string());
                    }
                }
            }
            None => _ = self.moved.insert(String::new()),
        }
        self.rows.push(rows);
        if self.rows.len() > MAX_BATCHES {
            // Batch b's row r is now row offset(b) + r of the one batch.
            let offsets: Vec<usize> = self
                .rows
                .iter()
                .scan(0, |n, b| {
                    let at = *n;
                    *n += b.num_rows();
                    Some(at)
                })
                .collect();
            let merged = concat_batches(&self.rows[0].schema(), self.rows.iter()).map_err(arrow_err)?;
            self.rows = vec![merged];
            for at in self.at.values_mut().flatten() {
                *at = (0, offsets[at.0] + at.1);
            }
        }
        Ok(())
    }

    /// The units with rows not scored yet, each with all its rows.
    fn moved(&mut self, unit: Unit) -> Result<Vec<(String, Vec<RecordBatch>)>, DetectError> {
        if self.moved.is_empty() {
            return Ok(Vec::new());
        }
        let moved = std::mem::take(&mut self.moved);
        if unit.column().is_none() {
            return Ok(vec![(String::new(), self.rows.clone())]);
        }
        let batches: Vec<&RecordBatch> = self.rows.iter().collect();
        moved
            .into_iter()
            .map(|u| {
                let rows = interleave_record_batch(&batches, &self.at[&u]).map_err(arrow_err)?;
                Ok((u, vec![rows]))
            })
            .collect()
    }

    /// A unit's alerts as of its latest scoring.
    fn scored(&mut self, key: String, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            self.alerts.remove(&key);
        } else {
            self.alerts.insert(key, alerts);
        }
    }
}

/// One day being judged live.
struct Day {
    ctx: SessionContext,
    baseline: Option<Baseline>,
    /// Events of the day with the lake's `date` column: every credential's
    /// since the last commit, and the whole day of those in `whole`.
    events: Vec<RecordBatch>,
    rows: usize,
    /// Credentials whose whole day is in `events`; `None`: every credential
    /// (until the first commit).
    whole: Option<HashSet<String>>,
    exposures: Vec<RecordBatch>,
    /// Events and secrets not yet judged.
    fresh: Vec<RecordBatch>,
    fresh_exposures: Vec<RecordBatch>,
    /// What the day's detectors read: the new events for per-event
    /// detectors, then the selected days.
    tables: Tables,
    /// Credentials with events not yet judged.
    touched: HashSet<String>,
    windows: Windows,
    /// Per per-event detector (by its index in the engine), per credential.
    kept: HashMap<usize, HashMap<String, Kept>>,
    /// The day's alerts by credential, as of the last pass.
    alerts: BTreeMap<String, Vec<Alert>>,
    /// Governance alerts the batch job stored for the day, kept when the day's alerts are rewritten.
    governance: Vec<RecordBatch>,
    /// Alerts changed since they were last written to the lake.
    dirty: bool,
}

/// What a pass found.
#[derive(Default)]
pub struct PassResult {
    /// Alerts not emitted before (unsuppressed), in time order.
    pub new: Vec<Alert>,
    pub judged_credentials: usize,
    /// Events judged for the first time.
    pub judged_events: u64,
}

/// A live day's alerts to write to the lake.
pub struct DayAlerts {
    pub day: String,
    pub alerts: Vec<Alert>,
    pub governance: Vec<RecordBatch>,
}

pub struct Live {
    lake: PathBuf,
    engine: Engine,
    suppressions: Option<Suppressions>,
    baseline_days: u32,
    days: BTreeMap<String, Day>,
    emitted: HashSet<String>,
    /// Events of days older than the live ones, left to the batch job.
    pub late_events: u64,
}

impl Live {
    pub fn new(
        lake: PathBuf,
        engine: Engine,
        suppressions: Option<Suppressions>,
        baseline_days: u32,
        emitted: HashSet<String>,
    ) -> Live {
        Live { lake, engine, suppressions, baseline_days, days: BTreeMap::new(), emitted, late_events: 0 }
    }

    /// Events held in memory.
    pub fn rows(&self) -> usize {
        self.days.values().map(|d| d.rows).sum()
    }

    /// Days in `events` that would start a new live day. The caller flushes
    /// its pending events first, so the day's seed from the lake is complete.
    pub fn new_days(&self, events: &RecordBatch) -> Vec<String> {
        let newest = self.days.keys().next_back().cloned();
        let mut out: Vec<String> = day_parts(events)
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| !self.days.contains_key(d) && self.is_live(d, newest.as_deref()))
            .collect();
        out.dedup();
        out
    }

    fn is_live(&self, day: &str, newest: Option<&str>) -> bool {
        match newest {
            None => true,
            Some(n) if day >= n => true,
            Some(n) => crate::detect::previous_day(n).is_ok_and(|y| day >= y.as_str()),
        }
    }

    /// Adds new events (and the secrets found in their lines), opening days
    /// as needed. `committed` says they are in the lake already: a day opened
    /// now is seeded with them, so they are not added twice.
    pub async fn add(
        &mut self,
        updates: &[(RecordBatch, Vec<ExposureRow>)],
        committed: bool,
    ) -> Result<(), DetectError> {
        let mut opened = HashSet::new();
        for (events, exposures) in updates {
            self.add_one(events, exposures, committed, &mut opened).await?;
        }
        Ok(())
    }

    async fn add_one(
        &mut self,
        events: &RecordBatch,
        exposures: &[ExposureRow],
        committed: bool,
        opened: &mut HashSet<String>,
    ) -> Result<(), DetectError> {
        for (day, part) in day_parts(events) {
            let newest = self.days.keys().next_back().cloned();
            if !self.days.contains_key(&day) {
                if !self.is_live(&day, newest.as_deref()) {
                    self.late_events += part.num_rows() as u64;
                    continue;
                }
                let seeded = self.open_day(&day).await?;
                self.days.insert(day.clone(), seeded);
                opened.insert(day.clone());
                while self.days.len() > LIVE_DAYS {
                    let (old, _) = self.days.pop_first().expect("more than LIVE_DAYS days");
                    tracing::info!(day = %old, "no longer judging a day live; the batch job covers it");
                }
                if !self.days.contains_key(&day) {
                    self.late_events += part.num_rows() as u64;
                    continue;
                }
            }
            if committed && opened.contains(&day) {
                continue;
            }
            let d = self.days.get_mut(&day).expect("day was just opened");
            let part = dated(&part, &day)?;
            d.take(part)?;
        }
        let rows: Vec<&ExposureRow> = exposures.iter().filter(|e| e.ts_ms.is_some()).collect();
        for e in rows {
            let day = crate::time::day_of(e.ts_ms.expect("filtered"));
            if committed && opened.contains(&day) {
                continue;
            }
            if let Some(d) = self.days.get_mut(&day) {
                let b = secrets::exposures_batch(std::slice::from_ref(e));
                d.exposures.push(b.clone());
                d.fresh_exposures.push(b);
                d.touched.extend(e.credential_id.clone());
            }
        }
        Ok(())
    }

    /// Seeds a day from the lake and readies its baseline: learned on the
    /// spot, like batch `detect`, when missing or stale.
    async fn open_day(&self, day: &str) -> Result<Day, DetectError> {
        let (version, learned) = self.engine.prepare_baseline(&self.lake, day, self.baseline_days).await?;
        let ctx = self.engine.session(&self.lake).await?;
        // The day's baseline does not change while it is live: hold it in
        // memory rather than read the models' files again in every pass
        // (the scoring baseline below is loaded from these copies too).
        if let Some(until) = &version {
            for table in catalog::models() {
                let name = table.name;
                let schema = ctx.table_provider(name).await.map_err(EngineError::from)?.schema();
                let rows = engine::collect(&ctx, &format!("SELECT * FROM {name} WHERE until = '{until}'")).await?;
                engine::replace_table(&ctx, name, schema, rows)?;
            }
        }
        let baseline = match &version {
            Some(until) => Some(baseline::load(&ctx, &self.lake, until).await?),
            None => None,
        };
        let q = format!("SELECT {} FROM events WHERE date = '{day}'", event_columns());
        let events = engine::collect(&ctx, &q).await?;
        let q = format!("SELECT * FROM secret_exposures WHERE ts IS NOT NULL AND CAST(ts AS DATE) = DATE '{day}'");
        let exposures = engine::collect(&ctx, &q).await?;
        let q = format!("SELECT * EXCEPT (date) FROM alerts WHERE date = '{day}' AND detector = 'governance'");
        let governance = engine::collect(&ctx, &q).await?;
        // From here on, the day's detectors read what the live day stages.
        let tables = Tables::new(&ctx)?;
        let mut d = Day {
            ctx,
            baseline,
            events: Vec::new(),
            rows: 0,
            whole: None,
            exposures: exposures.clone(),
            // Everything already in the lake is judged on the first pass.
            fresh: Vec::new(),
            fresh_exposures: exposures,
            tables,
            touched: HashSet::new(),
            windows: Windows::default(),
            kept: HashMap::new(),
            alerts: BTreeMap::new(),
            governance,
            dirty: false,
        };
        for b in events {
            d.take(dated(&b, day)?)?;
        }
        tracing::info!(
            day,
            seeded = d.rows,
            baseline = version.as_deref().unwrap_or("none (cold start)"),
            learned,
            "judging a new day live"
        );
        Ok(d)
    }

    /// Whether a pass has anything to judge.
    pub fn pending(&self) -> bool {
        self.days.values().any(|d| !d.touched.is_empty())
    }

    /// Judges the credentials that received events since the last pass.
    pub async fn pass(&mut self) -> Result<PassResult, DetectError> {
        let mut result = PassResult::default();
        for (day, d) in &mut self.days {
            if d.touched.is_empty() {
                continue;
            }
            let touched = std::mem::take(&mut d.touched);
            let touched: HashSet<String> = d
                .windows
                .with_bedrock(touched.iter().map(String::as_str).collect())
                .into_iter()
                .map(str::to_string)
                .collect();
            result.judged_credentials += touched.len();
            result.judged_events += d.fresh.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let found = d.judge(&self.engine, &self.lake, day, &touched).await?;
            let mut by_cred: HashMap<String, Vec<Alert>> = HashMap::new();
            for a in found {
                by_cred.entry(a.credential_id.clone()).or_default().push(a);
            }
            for c in &touched {
                let now = by_cred.remove(c).unwrap_or_default();
                let before = d.alerts.get(c).map_or(&[][..], Vec::as_slice);
                if !same(&now, before) {
                    d.dirty = true;
                }
                if now.is_empty() {
                    d.alerts.remove(c);
                } else {
                    d.alerts.insert(c.clone(), now);
                }
            }
        }
        // Suppression and incidents over each whole day, as the batch job sees it.
        for d in self.days.values_mut() {
            let mut all: Vec<Alert> = d.alerts.values().flatten().cloned().collect();
            if let Some(s) = &self.suppressions {
                s.apply(&mut all);
            }
            // Members emitted before their fold stay emitted: the fold's window is the day, and
            // holding first-seen alerts for a decision hours away would delay them as much.
            let mut all = detect::fold_fleet(all);
            alert::assign_incidents(&mut all);
            detect::join_fleet_incidents(&mut all);
            // Fleet alerts are the day's, not a credential's: kept under their own key, made anew each pass.
            let fleet: Vec<Alert> = all.iter().filter(|a| a.credential_id == detect::FLEET).cloned().collect();
            if d.alerts.get(detect::FLEET).map_or(&[][..], Vec::as_slice) != fleet.as_slice() {
                d.dirty = true;
            }
            if fleet.is_empty() {
                d.alerts.remove(detect::FLEET);
            } else {
                d.alerts.insert(detect::FLEET.to_string(), fleet);
            }
            for a in all {
                if a.suppressed.is_none() && !self.emitted.contains(&a.alert_id) {
                    self.emitted.insert(a.alert_id.clone());
                    result.new.push(a.clone());
                }
                if let Some(list) = d.alerts.get_mut(&a.credential_id)
                    && let Some(slot) = list.iter_mut().find(|x| x.alert_id == a.alert_id)
                {
                    *slot = a;
                }
            }
        }
        result.new.sort_by(|a, b| a.window_start_ms.cmp(&b.window_start_ms).then(a.alert_id.cmp(&b.alert_id)));
        Ok(result)
    }

    /// Says that every event added so far is committed to the lake, so the
    /// days may let go of those no gated query needs.
    pub fn committed(&mut self) -> Result<(), DetectError> {
        let every_day = self.engine.detectors().any(|(_, m)| m == LiveMode::Day);
        for d in self.days.values_mut() {
            d.committed(every_day)?;
        }
        Ok(())
    }

    /// The days whose alerts changed since they were last taken, marking them written.
    pub fn take_dirty(&mut self) -> Vec<DayAlerts> {
        let mut out = Vec::new();
        for (day, d) in &mut self.days {
            if d.dirty {
                d.dirty = false;
                out.push(DayAlerts {
                    day: day.clone(),
                    alerts: d.alerts.values().flatten().cloned().collect(),
                    governance: d.governance.clone(),
                });
            }
        }
        out
    }
}

impl Day {
    /// Takes in new events (with their `date` column).
    fn take(&mut self, events: RecordBatch) -> Result<(), DetectError> {
        self.windows.observe(&events, self.baseline.as_ref());
        self.touched.extend(credentials(&events));
        self.rows += events.num_rows();
        self.events.push(events.clone());
        self.fresh.push(events);
        if self.events.len() > MAX_BATCHES {
            compact(&mut self.events)?;
        }
        Ok(())
    }

    /// Everything taken so far is in the lake: keep only what gated queries
    /// may read again (all of it while a detector reads every credential's day).
    fn committed(&mut self, reads_every_day: bool) -> Result<(), DetectError> {
        if reads_every_day {
            return Ok(());
        }
        let keep: HashSet<String> = match self.whole.take() {
            Some(whole) => whole,
            None => self.windows.open_credentials(),
        };
        let wanted = keep.iter().map(String::as_str).collect();
        let mut held = Vec::new();
        for b in &self.events {
            for kept in select(std::slice::from_ref(b), &wanted)? {
                // Rows let go of leave their values in the dictionaries: shrink only a batch that lost some.
                held.push(if kept.num_rows() < b.num_rows() { shrink_dictionaries(&kept) } else { kept });
            }
        }
        self.rows = held.iter().map(RecordBatch::num_rows).sum();
        self.events = held;
        compact(&mut self.events)?;
        self.whole = Some(keep);
        Ok(())
    }

    /// Every alert of the `touched` credentials over the day so far.
    async fn judge(
        &mut self,
        engine: &Engine,
        lake: &std::path::Path,
        day: &str,
        touched: &HashSet<String>,
    ) -> Result<Vec<Alert>, DetectError> {
        let base = self.baseline.as_ref();
        let detectors: Vec<(usize, LiveMode)> = engine.detectors().collect();
        let mut found = Vec::new();

        // Per-event queries read only what is new; the rows are kept.
        let fresh = std::mem::take(&mut self.fresh);
        let fresh_exposures = std::mem::take(&mut self.fresh_exposures);
        // Those given every new event run first, then each given fewer its own.
        let mut per_event: Vec<(usize, LiveMode, Unit)> = detectors
            .iter()
            .filter_map(|&(i, m)| if let LiveMode::PerEvent(unit) = m { Some((i, m, unit)) } else { None })
            .collect();
        per_event.sort_by_key(|&(i, ..)| *engine.live_events(i) != LiveEvents::All);
        let mut staged = None;
        for (i, mode, unit) in per_event {
            let events = engine.live_events(i);
            if staged != Some(events) {
                let rows = match events {
                    LiveEvents::All => fresh.clone(),
                    LiveEvents::NewToScope(dims) => {
                        let rows = scope::new_to_scope(&fresh, base, dims).map_err(EngineError::from)?;
                        let count = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
                        tracing::debug!(
                            day,
                            events = count(&rows),
                            of = count(&fresh),
                            "events new to their credential's scope"
                        );
                        rows
                    }
                };
                self.tables.stage(rows, fresh_exposures.clone());
                staged = Some(events);
            }
            let rows = self.tables.run(&self.ctx, engine, (i, mode), day).await?;
            keep(self.kept.entry(i).or_default(), unit, &rows)?;
        }
        // Only the units (credentials, sessions) with new rows are scored again,
        // all in one call: what scoring derives from the baseline is made once.
        for &(i, mode) in &detectors {
            let LiveMode::PerEvent(unit) = mode else { continue };
            let Some(kept) = self.kept.get_mut(&i) else { continue };
            let started = std::time::Instant::now();
            let mut units = Vec::new();
            for c in touched {
                let Some(k) = kept.get_mut(c) else { continue };
                units.extend(k.moved(unit)?.into_iter().map(|(key, rows)| ((c, key), rows)));
            }
            let scored = units.len();
            for ((c, key), alerts) in engine.score_units((i, mode), base, units)? {
                kept.get_mut(c).expect("a unit of a kept credential").scored(key, alerts);
            }
            found.extend(touched.iter().filter_map(|c| kept.get(c)).flat_map(|k| k.alerts.values().flatten()).cloned());
            tracing::debug!(
                day,
                detector = %engine.name(i),
                units = scored,
                ms = started.elapsed().as_millis() as u64,
                "scored the per-event rows"
            );
        }

        // The others read the day of the credentials they may alert on.
        let wanted: Vec<((usize, LiveMode), HashSet<&str>)> = detectors
            .iter()
            .filter(|(_, m)| !matches!(m, LiveMode::PerEvent(_)))
            .map(|&d| {
                let creds = touched.iter().map(String::as_str).filter(|c| match d.1 {
                    LiveMode::Gated(gate) => self.windows.open(c, gate),
                    _ => true,
                });
                (d, creds.collect())
            })
            .filter(|(_, creds): &(_, HashSet<&str>)| !creds.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(detect::finish(found));
        }
        let selected = self.windows.with_bedrock(wanted.iter().flat_map(|(_, c)| c.iter().copied()).collect());
        if let Some(whole) = &mut self.whole {
            // Their committed events are in the lake; those since are here.
            let missing: Vec<&str> = selected.iter().copied().filter(|c| !whole.contains(*c)).collect();
            if !missing.is_empty() {
                let held = select(&self.events, &missing.iter().copied().collect())?;
                let read = read_back(lake, engine, day, &missing, &held).await?;
                tracing::debug!(day, credentials = missing.len(), events = read.len(), "read a day back from the lake");
                whole.extend(missing.iter().map(|c| c.to_string()));
                for b in read {
                    self.rows += b.num_rows();
                    self.events.push(dated(&b, day)?);
                }
            }
        }
        let events = select(&self.events, &selected)?;
        let rows: usize = events.iter().map(RecordBatch::num_rows).sum();
        tracing::debug!(
            day,
            credentials = selected.len(),
            events = rows,
            "reading the day of credentials that may alert"
        );
        self.tables.stage(events, self.exposures.clone());
        for (d, creds) in &wanted {
            let rows = self.tables.run(&self.ctx, engine, *d, day).await?;
            let alerts = engine.score(*d, base, &rows)?;
            found.extend(alerts.into_iter().filter(|a| creds.contains(a.credential_id.as_str())));
        }
        Ok(detect::finish(found))
    }
}

/// Rows from which a stage's detectors are planned with its statistics.
/// Plans made without them cost nothing on a second's events; on many rows,
/// the planner's choice of join sides matters more than the time planning takes.
const REPLAN_ROWS: usize = 64 * 1024;

/// The scale of a stage of `rows`: `None` below [`REPLAN_ROWS`], else which
/// power of four times it. A plan is kept for stages of its own scale, the
/// statistics of which choose the same join sides, and made again for another.
fn scale(rows: usize) -> Option<u32> {
    (rows >= REPLAN_ROWS).then(|| (rows / REPLAN_ROWS).ilog2() / 2)
}

/// The `events` and `secret_exposures` tables of a live day's detectors.
struct Tables {
    events: LiveTable,
    exposures: LiveTable,
    /// The [`scale`] of the staged events.
    scale: Option<u32>,
    /// Each detector's plan over the swappable tables, by the scale it was
    /// made for; made on its first run at that scale.
    plans: HashMap<(usize, Option<u32>), Arc<dyn ExecutionPlan>>,
    /// Whether the tables registered for planning are the staged rows'.
    registered: bool,
}

impl Tables {
    fn new(ctx: &SessionContext) -> Result<Tables, DetectError> {
        // A plan is run many times: a join's filter pushed into a scan would
        // outlive the run that set it.
        let options = ctx.state_ref();
        options
            .write()
            .config_mut()
            .options_mut()
            .set("datafusion.optimizer.enable_dynamic_filter_pushdown", "false")
            .map_err(EngineError::from)?;
        Ok(Tables {
            events: LiveTable::new(ctx, catalog::EVENTS.name, dated_schema())?,
            exposures: LiveTable::new(ctx, catalog::SECRET_EXPOSURES.name, (catalog::SECRET_EXPOSURES.schema)())?,
            scale: None,
            plans: HashMap::new(),
            registered: false,
        })
    }

    /// Puts rows under the detectors run next.
    fn stage(&mut self, events: Vec<RecordBatch>, exposures: Vec<RecordBatch>) {
        self.scale = scale(events.iter().map(RecordBatch::num_rows).sum());
        self.events.swap(events);
        self.exposures.swap(exposures);
        self.registered = false;
    }

    /// Detector `d`'s rows over the staged rows.
    async fn run(
        &mut self,
        ctx: &SessionContext,
        engine: &Engine,
        d: (usize, LiveMode),
        day: &str,
    ) -> Result<Vec<RecordBatch>, DetectError> {
        let plan = match self.plans.get(&(d.0, self.scale)) {
            Some(plan) => Arc::clone(plan),
            None => {
                // Registered only to plan: a kept plan reads the swapped rows as they are.
                if !self.registered {
                    let counted = self.scale.is_some();
                    self.events.register(ctx, counted)?;
                    self.exposures.register(ctx, counted)?;
                    self.registered = true;
                }
                let plan = engine.plan(d, ctx, day).await?;
                self.plans.insert((d.0, self.scale), Arc::clone(&plan));
                plan
            }
        };
        engine.execute(d, &plan, ctx, day).await
    }
}

/// One table of a live day: rows swapped under the plans that read them,
/// registered for the plans made next with or without their statistics
/// ([`CountedTable`]).
struct LiveTable {
    name: &'static str,
    rows: Arc<Swappable>,
    swappable: Arc<StreamingTable>,
}

impl LiveTable {
    fn new(ctx: &SessionContext, name: &'static str, schema: SchemaRef) -> Result<LiveTable, DetectError> {
        let rows = Arc::new(Swappable { schema: Arc::clone(&schema), batches: Default::default() });
        let swappable = StreamingTable::try_new(schema, vec![Arc::clone(&rows) as Arc<dyn PartitionStream>])
            .map_err(EngineError::from)?;
        let t = LiveTable { name, rows, swappable: Arc::new(swappable) };
        t.register(ctx, false)?;
        Ok(t)
    }

    /// Puts `batches` under every plan that reads this table.
    fn swap(&self, batches: Vec<RecordBatch>) {
        *self.rows.batches.write().expect("no panic while swapping") = batches;
    }

    /// Registers the table for the plans made next, with the statistics
    /// of the rows it holds now when `counted`.
    fn register(&self, ctx: &SessionContext, counted: bool) -> Result<(), DetectError> {
        let table: Arc<dyn TableProvider> = if counted {
            let batches = self.rows.batches.read().expect("no panic while swapping");
            Arc::new(CountedTable::over(Arc::clone(&self.swappable) as _, &batches))
        } else {
            Arc::clone(&self.swappable) as _
        };
        ctx.deregister_table(self.name).map_err(EngineError::from)?;
        ctx.register_table(self.name, table).map_err(EngineError::from)?;
        Ok(())
    }
}

/// Rows swapped between runs of the plans that read them: a plan reads what
/// is here when it runs, not what was here when it was made.
#[derive(Debug)]
struct Swappable {
    schema: SchemaRef,
    batches: std::sync::RwLock<Vec<RecordBatch>>,
}

impl PartitionStream for Swappable {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self.batches.read().expect("no panic while swapping").clone();
        let stream = futures::stream::iter(batches.into_iter().map(Ok));
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream))
    }
}

/// The event columns, quoted, for a `SELECT` from the lake without its `date` column.
fn event_columns() -> String {
    let cols: Vec<String> = event_schema().fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
    cols.join(", ")
}

/// An event's source file and line, time and request: what tells two apart.
type LineKey = (String, i64, i64, Option<String>);

/// The day's committed events of some credentials, from the lake, less
/// those `held` already (known by their source line, time and request).
async fn read_back(
    lake: &std::path::Path,
    engine: &Engine,
    day: &str,
    credentials: &[&str],
    held: &[RecordBatch],
) -> Result<Vec<RecordBatch>, DetectError> {
    let ctx = engine.session(lake).await?;
    let list: Vec<String> = credentials.iter().map(|c| format!("'{}'", c.replace('\'', "''"))).collect();
    let q = format!(
        "SELECT {} FROM events WHERE date = '{day}' AND CAST(credential_id AS VARCHAR) IN ({})",
        event_columns(),
        list.join(", ")
    );
    // A rotated file's lines repeat its name and numbers: the time and request tell them apart.
    crate::columns::row! {
        struct LineRow {
            file: text = col::SOURCE_FILE,
            record: int = col::SOURCE_RECORD,
            ts: time = col::TS,
            request: text = col::REQUEST_ID,
        }
    }
    let lines = |b: &RecordBatch| -> Result<Vec<Option<LineKey>>, DetectError> {
        let rows = <LineRow as crate::columns::FromRow>::read(b, "events")?;
        Ok(rows.into_iter().map(|r| Some((r.file?, r.record?, r.ts?, r.request))).collect())
    };
    let mut known = HashSet::new();
    for b in held {
        known.extend(lines(b)?.into_iter().flatten());
    }
    let mut out = Vec::new();
    for b in engine::collect(&ctx, &q).await? {
        let mask: BooleanArray = lines(&b)?.into_iter().map(|l| Some(l.is_none_or(|l| !known.contains(&l)))).collect();
        out.push(filter_record_batch(&b, &mask).map_err(arrow_err)?);
    }
    Ok(out)
}

/// Adds a per-event query's rows to each credential's, marking their units moved.
fn keep(kept: &mut HashMap<String, Kept>, unit: Unit, rows: &[RecordBatch]) -> Result<(), DetectError> {
    for b in rows.iter().filter(|b| b.num_rows() > 0) {
        for (cred, part) in split(b, col::CREDENTIAL_ID, |c| c.is_some())? {
            kept.entry(cred).or_default().add(unit, part)?;
        }
    }
    Ok(())
}

/// A batch's rows split by the text of `column` (null as ""), for the values `take` accepts.
fn split(
    b: &RecordBatch,
    column: &str,
    take: impl Fn(Option<&str>) -> bool,
) -> Result<Vec<(String, RecordBatch)>, DetectError> {
    let keys = text(b, column)?;
    let mut by_key: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        if take(k) {
            by_key.entry(k.unwrap_or("")).or_default().push(i as u32);
        }
    }
    let mut out = Vec::with_capacity(by_key.len());
    for (k, idx) in by_key {
        out.push((k.to_string(), take_record_batch(b, &UInt32Array::from(idx)).map_err(arrow_err)?));
    }
    Ok(out)
}

/// A column as text, without a string per row.
fn text(b: &RecordBatch, column: &str) -> Result<StringArray, DetectError> {
    let shape =
        || crate::columns::ShapeError { query: "a per-event detector".into(), column: column.into(), wanted: "text" };
    let c = b.column_by_name(column).ok_or_else(shape)?;
    Ok(cast(c, &DataType::Utf8).map_err(|_| shape())?.as_string::<i32>().clone())
}

/// Whether two passes found the same alerts (incidents and suppression are assigned later).
fn same(a: &[Alert], b: &[Alert]) -> bool {
    let bare = |x: &Alert| Alert { incident_id: None, suppressed: None, ..x.clone() };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bare(x) == bare(y))
}

fn arrow_err(e: arrow::error::ArrowError) -> DetectError {
    DetectError::Engine(EngineError::Format(e))
}

/// A batch's events split by UTC day.
fn day_parts(events: &RecordBatch) -> Vec<(String, RecordBatch)> {
    crate::lake::split_by_day(events).unwrap_or_default()
}

/// The distinct credentials of a batch. From the dictionary's values that
/// rows use when it has one (parsed batches do), so a batch costs a string
/// per credential, not per row.
fn credentials(b: &RecordBatch) -> HashSet<String> {
    let Some(c) = b.column_by_name(col::CREDENTIAL_ID) else { return HashSet::new() };
    if let Some(dict) = c.as_dictionary_opt::<Int32Type>() {
        let values = dict.values().as_string::<i32>();
        let mut used = vec![false; values.len()];
        dict.keys().iter().flatten().for_each(|k| used[k as usize] = true);
        return values.iter().zip(used).filter(|(_, u)| *u).filter_map(|(v, _)| v.map(str::to_string)).collect();
    }
    let Ok(c) = cast(c, &DataType::Utf8) else { return HashSet::new() };
    c.as_string::<i32>().iter().flatten().map(str::to_string).collect()
}

/// The events of the `touched` credentials.
fn select(events: &[RecordBatch], touched: &HashSet<&str>) -> Result<Vec<RecordBatch>, DetectError> {
    let mut out = Vec::new();
    for b in events {
        let c = b.column_by_name(col::CREDENTIAL_ID).expect("events have credential_id");
        let mask: BooleanArray = match c.as_dictionary_opt::<Int32Type>() {
            Some(dict) => {
                let values = dict.values().as_string::<i32>();
                let hit: Vec<bool> = values.iter().map(|v| v.is_some_and(|v| touched.contains(v))).collect();
                dict.keys().iter().map(|k| Some(k.is_some_and(|k| hit[k as usize]))).collect()
            }
            None => {
                let s = cast(c, &DataType::Utf8).map_err(arrow_err)?;
                s.as_string::<i32>().iter().map(|v| Some(v.is_some_and(|v| touched.contains(v)))).collect()
            }
        };
        let f = filter_record_batch(b, &mask).map_err(arrow_err)?;
        if f.num_rows() > 0 {
            out.push(f);
        }
    }
    Ok(out)
}

/// The `events` table's schema: the event columns and the lake's `date` partition column.
fn dated_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields: Vec<Arc<Field>> = event_schema().fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(col::DATE, DataType::Utf8, false)));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Events of `day` with its `date` column, as the `events` table has them.
fn dated(events: &RecordBatch, day: &str) -> Result<RecordBatch, DetectError> {
    let mut cols: Vec<ArrayRef> = events.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec![day; events.num_rows()])));
    RecordBatch::try_new(dated_schema(), cols).map_err(arrow_err)
}

/// Merges a day's small batches so a pass scans a few large ones.
fn compact(events: &mut Vec<RecordBatch>) -> Result<(), DetectError> {
    const LARGE: usize = 64 * 1024;
    let (large, small): (Vec<RecordBatch>, Vec<RecordBatch>) = events.drain(..).partition(|b| b.num_rows() >= LARGE);
    events.extend(large);
    if let Some(first) = small.first() {
        events.push(shrink_dictionaries(&concat_batches(&first.schema(), &small).map_err(arrow_err)?));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::write::tests::batch;

    #[test]
    fn selects_only_touched_credentials() {
        let b = batch(&[("a", 1), ("b", 2), ("a", 3), ("c", 4)]);
        let touched: HashSet<&str> = ["a", "c"].into();
        let out = select(&[b], &touched).unwrap();
        let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 3);
        assert_eq!(credentials(&out[0]), ["a".to_string(), "c".to_string()].into());
    }

    #[tokio::test]
    async fn a_kept_plan_reads_what_the_table_holds_when_it_runs() {
        // A self-join: its build side must be rebuilt on each run, not kept from the first.
        let q = "SELECT a.credential_id AS c, count(*) AS n FROM events a JOIN events b \
                 ON a.credential_id = b.credential_id GROUP BY 1 ORDER BY 1";
        let counts = |out: Vec<RecordBatch>| {
            let out = concat_batches(&out[0].schema(), &out).unwrap();
            let c = crate::columns::strings(&out, "t", "c").unwrap();
            let n = crate::columns::ints(&out, "t", "n").unwrap();
            c.into_iter().zip(n).map(|(c, n)| (c.unwrap(), n.unwrap())).collect::<Vec<_>>()
        };
        let days: [&[(&str, i64)]; 2] = [&[("a", 1), ("a", 2), ("b", 3)], &[("b", 1), ("c", 2)]];
        // Planned without statistics, and with those of the first rows.
        for counted in [false, true] {
            let ctx = SessionContext::new();
            let table = LiveTable::new(&ctx, "events", event_schema()).unwrap();
            table.swap(vec![batch(days[0])]);
            table.register(&ctx, counted).unwrap();
            let plan = ctx.sql(q).await.unwrap().create_physical_plan().await.unwrap();
            for rows in days {
                table.swap(vec![batch(rows)]);
                let run = datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(&plan)).unwrap();
                let kept = counts(datafusion::physical_plan::collect(run, ctx.task_ctx()).await.unwrap());
                // The same rows, planned for them.
                table.register(&ctx, counted).unwrap();
                let planned = counts(ctx.sql(q).await.unwrap().collect().await.unwrap());
                assert_eq!(kept, planned);
                assert_eq!(kept.iter().map(|(_, n)| n).sum::<i64>(), if rows.len() == 3 { 5 } else { 2 });
            }
        }
    }

    #[test]
    fn a_plan_is_made_again_at_four_times_the_rows() {
        assert_eq!(scale(REPLAN_ROWS - 1), None);
        assert_eq!(scale(REPLAN_ROWS), Some(0));
        assert_eq!(scale(4 * REPLAN_ROWS - 1), Some(0));
        assert_eq!(scale(4 * REPLAN_ROWS), Some(1));
        assert_eq!(scale(16 * REPLAN_ROWS - 1), Some(1));
        assert_eq!(scale(16 * REPLAN_ROWS), Some(2));
    }

    /// Rows of (session, ts) as a per-session detector's query returns them.
    fn calls(rows: &[(&str, i64)]) -> RecordBatch {
        let sessions: StringArray = rows.iter().map(|r| Some(r.0)).collect();
        let ts = arrow::array::Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        RecordBatch::try_from_iter([("session_id", Arc::new(sessions) as ArrayRef), ("ts", Arc::new(ts) as ArrayRef)])
            .unwrap()
    }

    #[test]
    fn a_moved_session_gets_all_its_rows_in_order_across_merges() {
        let mut k = Kept::default();
        // Passes until the batches are merged, and a few after: s1 moves in every one, s2 in every third.
        let passes = MAX_BATCHES as i64 + 4;
        let mut want: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for p in 0..passes {
            let mut rows = vec![("s1", 10 * p), ("s1", 10 * p + 1)];
            if p % 3 == 0 {
                rows.insert(1, ("s2", 10 * p));
            }
            for r in &rows {
                want.entry(r.0).or_default().push(r.1);
            }
            k.add(Unit::Session, calls(&rows)).unwrap();
            let moved: BTreeMap<String, Vec<i64>> = k
                .moved(Unit::Session)
                .unwrap()
                .into_iter()
                .map(|(u, rows)| {
                    let ts = rows.iter().flat_map(|b| crate::columns::ints(b, "t", "ts").unwrap()).flatten();
                    (u, ts.collect())
                })
                .collect();
            let expected: BTreeMap<String, Vec<i64>> = want
                .iter()
                .filter(|(u, _)| **u == "s1" || p % 3 == 0)
                .map(|(u, ts)| (u.to_string(), ts.clone()))
                .collect();
            assert_eq!(moved, expected, "pass {p}");
        }
        assert!(k.rows.len() < MAX_BATCHES, "merged: {} batches", k.rows.len());
        assert!(k.moved(Unit::Session).unwrap().is_empty(), "nothing moved since");
    }

    #[test]
    fn compaction_keeps_every_row() {
        let mut v: Vec<RecordBatch> = (0..20).map(|i| batch(&[("a", i), ("b", i)])).collect();
        compact(&mut v).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].num_rows(), 40);
        let d = dated(&v[0], "1970-01-01").unwrap();
        assert_eq!(d.schema().field(d.num_columns() - 1).name(), "date");
        assert_eq!(d.num_rows(), 40);
    }
}

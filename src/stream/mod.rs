//! `credtrail watch`: follow gateway logs, alert while an attack is under
//! way, and feed the lake exactly once.
//!
//! Source → transform → sinks, as in a log shipper:
//!
//! - a reader thread follows the files ([`tail`]) and parses complete lines
//!   with ingest's own transform (redaction, format detection, quarantine);
//! - the async loop hands new events to [`live`] detection, which judges the
//!   credentials that moved with the batch detectors (per event, or once
//!   their [`windows`] state shows they may alert; per-event queries that
//!   judge only what is new to a credential get the events [`scope`] finds
//!   new), and sends new alerts to stdout and the [`sinks`];
//! - events are committed to the lake in micro-batches, each one atomic with
//!   the checkpoint of the read positions it covers, so after a crash (even
//!   `kill -9`) a restart resumes exactly after the last committed line:
//!   nothing lost, nothing twice.
//!
//! The sinks append each delivery to `_stream/<name>/delivered.jsonl` as it
//! happens. On an object-store lake, where nothing can be appended, that
//! file is in the lake's local scratch directory, and the lines it gained
//! are committed with the next micro-batch (and once more at shutdown) as
//! `_stream/<name>/delivered/part-<run>-<n>.jsonl`; a restart reads both.
//! Lines not yet committed at a crash only mean those alerts are sent again,
//! as deliveries lost to a crash already are.

pub mod live;
pub mod metrics;
pub mod scope;
pub mod sinks;
pub mod tail;
pub mod windows;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::detect::{self, DetectError, Engine};
use crate::ingest::source::{CHUNK_BYTES, Chunk};
use crate::ingest::{IngestError, LineFormat, LineParser, Parsed};
use crate::lake::{self, Lake, LakeError, LakeWriter, QuarantineEntry};
use crate::secrets::{ExposureRow, PemLines};
use crate::suppress::Suppressions;
use live::{DayAlerts, Live};
use metrics::Metrics;
use sinks::{AlertFormat, SinkOptions};
use tail::{Follower, Position, StartAt};

/// Where a watcher keeps its state in the lake: `_stream/<name>/`.
pub const STREAM_DIR: &str = "_stream";
/// Parsed updates queued between the reader and the loop (backpressure beyond).
const QUEUE: usize = 64;
/// Shortest time between two detection passes while the reader is behind.
/// Then a pass also waits as long as the last one took, so detection never
/// takes more than half the loop and reading catches up; new events are
/// judged in larger groups instead.
const PASS_SPACING: Duration = Duration::from_millis(100);
/// How soon an alert should follow the line that completes it.
const LATENCY_GOAL: Duration = Duration::from_secs(1);

/// When the loop runs the next detection pass.
///
/// Caught up with the files and with passes short enough for the one-second
/// goal, a pass runs at once: a line waits for at most the pass under way and
/// its own. Otherwise passes are spaced by their own length, so detection
/// never starves reading, except once the input has gone quiet: with nothing
/// left to read, waiting only delays the last events' judgement.
struct Pacing {
    /// When the last pass ended, and how long it took.
    last_end: Instant,
    last_len: Duration,
    /// When the reader last handed over lines.
    input: Instant,
    /// No lines for this long is quiet: two polls of the files, so a steady
    /// stream (lines at every poll) is never taken for the end of a burst.
    quiet_after: Duration,
}

impl Pacing {
    fn new(poll: Duration) -> Pacing {
        let now = Instant::now();
        Pacing {
            last_end: now - PASS_SPACING,
            last_len: Duration::ZERO,
            input: now,
            quiet_after: 2 * poll.max(PASS_SPACING),
        }
    }

    fn due(&self, now: Instant, caught_up: bool) -> bool {
        let quick = self.last_len <= LATENCY_GOAL / 2;
        let quiet = now.saturating_duration_since(self.input) >= self.quiet_after;
        (caught_up && (quick || quiet))
            || now.saturating_duration_since(self.last_end) >= PASS_SPACING.max(self.last_len)
    }

    fn ran(&mut self, started: Instant) {
        self.last_end = Instant::now();
        self.last_len = self.last_end - started;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{path}: checkpoint is not valid: {source}")]
    Checkpoint { path: PathBuf, source: serde_json::Error },
    #[error("nothing to follow: give files, globs or - (stdin)")]
    NoInputs,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StreamError {
    let what = what.into();
    move |source| StreamError::Io { what, source }
}

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Files and glob patterns to follow; `-` reads stdin.
    pub follow: Vec<String>,
    pub lake: PathBuf,
    /// Names the checkpoint, so two watchers can feed one lake.
    pub name: String,
    /// Read files already present at the first start from their beginning (default: their end).
    pub from_beginning: bool,
    pub mappings: Vec<PathBuf>,
    pub format: Option<String>,
    /// A Bedrock pricing table replacing the shipped one.
    pub pricing: Option<PathBuf>,
    /// Event times accepted; lines timed outside are quarantined.
    pub ts_window: crate::time::TsWindow,
    pub inventory: Option<PathBuf>,
    pub queries: Option<PathBuf>,
    pub tool_categories: Option<PathBuf>,
    pub api_risk: Option<PathBuf>,
    pub suppressions: Option<Suppressions>,
    pub baseline_days: u32,
    /// Commit a micro-batch once this many events are pending…
    pub flush_events: usize,
    /// …or once the oldest pending one is this old.
    pub flush_interval: Duration,
    /// How often files are checked for new lines.
    pub poll_interval: Duration,
    /// How alerts are printed on stdout (and written to the alerts file).
    pub output: AlertFormat,
    pub sinks: SinkOptions,
    pub metrics: Option<SocketAddr>,
    /// How often progress is logged.
    pub progress_every: Duration,
}

/// What a watch did, reported when it stops.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchSummary {
    pub lines: u64,
    pub events: u64,
    pub quarantined: u64,
    pub redacted: u64,
    pub alerts: u64,
    pub flushes: u64,
    pub late_events: u64,
}

/// The format version of the checkpoints this build writes.
pub const CHECKPOINT_VERSION: u32 = 2;

/// A watcher's committed read positions, `_stream/<name>/part-<run>-<n>.json`.
///
/// `version` is [`CHECKPOINT_VERSION`] when written; checkpoints from before
/// it existed read as 1. Bump it when older builds could misread one (a
/// field removed, renamed or changing meaning); a new field with a serde
/// default needs no bump. A reader refuses a version newer than it knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(default = "lake::version_1")]
    pub version: u32,
    pub name: String,
    pub committed_at: String,
    pub files: Vec<Position>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint { version: CHECKPOINT_VERSION, name: String::new(), committed_at: String::new(), files: Vec::new() }
    }
}

impl Checkpoint {
    fn dir(name: &str) -> String {
        format!("{STREAM_DIR}/{name}")
    }

    /// The checkpoint of watcher `name`, if it committed one.
    pub fn load(lake: &Lake, name: &str) -> Result<Option<Checkpoint>, StreamError> {
        let Some(rel) = lake::committed_files(lake, &Self::dir(name), "json")?.pop() else {
            return Ok(None);
        };
        let path = lake.path(&rel);
        let Some(bytes) = lake.read(&rel)? else { return Ok(None) };
        let text = String::from_utf8_lossy(&bytes);
        let mut c: Checkpoint = serde_json::from_str(text.trim())
            .map_err(|source| StreamError::Checkpoint { path: path.clone(), source })?;
        lake::check_version(&path, c.version, CHECKPOINT_VERSION)?;
        // Older builds stored followed paths as they were: redacted now, the
        // next commit (which replaces this file) keeps no secret they held.
        for p in &mut c.files {
            p.path = crate::secrets::redact_path(&p.path).into_owned();
        }
        Ok(Some(c))
    }
}

/// What the reader hands the loop: the parse of one poll's new lines, and
/// the read positions after them (none for stdin, which cannot resume).
struct Update {
    parsed: Vec<Parsed>,
    positions: Option<Vec<Position>>,
}

/// Parsed lines waiting for the next commit.
#[derive(Default)]
struct Pending {
    events: Vec<RecordBatch>,
    quarantine: Vec<QuarantineEntry>,
    exposures: Vec<ExposureRow>,
    rows: usize,
    since: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.quarantine.is_empty() && self.exposures.is_empty()
    }
}

/// Follows the inputs until `shutdown` resolves (or stdin ends when stdin
/// is the only input), then commits what is pending and returns.
pub async fn watch(opts: WatchOptions, shutdown: impl Future<Output = ()>) -> Result<WatchSummary, StreamError> {
    if opts.follow.is_empty() {
        return Err(StreamError::NoInputs);
    }
    let lake = Lake::open(&opts.lake, lake::Open::Write)?;
    for path in opts.follow.iter().filter_map(|p| glob::glob(p).ok()).flatten().flatten() {
        lake::refuse_inside(&opts.lake, &path)?;
    }
    // Take the lock once now: repairs whatever a crashed run (or watcher) left.
    drop(lake.begin()?);
    let checkpoint = Checkpoint::load(&lake, &opts.name)?.unwrap_or_default();
    let delivery_log = lake.local_path(&format!("{}/delivered.jsonl", Checkpoint::dir(&opts.name)));
    let mut delivered = sinks::delivered(&delivery_log).map_err(io(delivery_log.display().to_string()))?;
    for rel in lake::committed_files(&lake, &Deliveries::dir(&opts.name), "jsonl")? {
        let bytes = lake.read(&rel)?.unwrap_or_default();
        delivered.extend(sinks::delivered_in(&bytes[..]).map_err(io(rel))?);
    }
    // Only an object-store lake commits the log's lines (a local one holds the file itself).
    let deliveries = lake.remote().map(|_| Deliveries { log: delivery_log.clone(), committed: 0 });
    let (queries, inventory) = (opts.queries.as_deref(), opts.inventory.as_deref());
    let engine = Engine::new(queries, inventory, opts.tool_categories.as_deref(), opts.api_risk.as_deref())?;
    for (name, why) in engine.skipped() {
        tracing::warn!(detector = %name, "skipped: {why}");
    }
    let parser = Arc::new(
        LineParser::new(&opts.mappings, opts.format.as_deref(), opts.pricing.as_deref())?
            .with_ts_window(opts.ts_window),
    );
    let metrics = Metrics::new();
    if let Some(addr) = opts.metrics {
        let bound = metrics::serve(addr, metrics.clone()).await.map_err(io(format!("--metrics {addr}")))?;
        tracing::warn!("metrics on http://{bound}/metrics");
    }
    let (alert_tx, sink_task) =
        sinks::spawn(opts.sinks.clone(), opts.output, delivery_log.clone()).map_err(io("opening alert sinks"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Update>(QUEUE);
    let run_id = format!("watch-{}-{}", opts.name, chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let files: Vec<String> = opts.follow.iter().filter(|p| *p != "-").cloned().collect();
    let mut readers = Vec::new();
    if !files.is_empty() {
        // Only the very first start skips what is there; after that, a file
        // the checkpoint does not know appeared while the watcher was down.
        let first_start = checkpoint.files.is_empty() && checkpoint.name.is_empty();
        let start = if opts.from_beginning || !first_start { StartAt::Beginning } else { StartAt::End };
        let follower = Follower::new(files, checkpoint.files.clone(), start);
        let (tx, stop, parser, m, run_id) = (tx.clone(), stop.clone(), parser.clone(), metrics.clone(), run_id.clone());
        let poll = opts.poll_interval;
        readers.push(std::thread::spawn(move || read_files(follower, &parser, &tx, &stop, poll, &m, &run_id)));
    }
    if opts.follow.iter().any(|p| p == "-") {
        let (tx, stop, parser, run_id) = (tx.clone(), stop.clone(), parser.clone(), run_id.clone());
        // Not joined: a blocked read of stdin cannot be interrupted.
        std::thread::spawn(move || read_stdin(&parser, &tx, &stop, &run_id));
    }
    drop(tx);

    let mut w = Watcher {
        lake,
        deliveries,
        name: opts.name.clone(),
        positions: checkpoint.files,
        pending: Pending::default(),
        live: Live::new(opts.lake.clone(), engine, opts.suppressions.clone(), opts.baseline_days, delivered),
        metrics: metrics.clone(),
        summary: WatchSummary::default(),
        output: opts.output,
        alert_tx,
    };
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(opts.poll_interval.min(Duration::from_millis(100)));
    let mut pacing = Pacing::new(opts.poll_interval);
    let mut last_progress = (Instant::now(), 0u64);
    let mut stdin_done = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                tracing::warn!("stopping: committing what is pending");
                break;
            }
            u = rx.recv() => match u {
                Some(u) => {
                    pacing.input = Instant::now();
                    w.take(u).await?;
                    // Whatever else is queued joins this pass.
                    while w.pending.rows < opts.flush_events {
                        match rx.try_recv() {
                            Ok(u) => w.take(u).await?,
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    stdin_done = true;
                    break;
                }
            },
            _ = tick.tick() => {}
        }
        let caught_up = rx.is_empty() && metrics.lag_bytes.get() == 0;
        if w.live.pending() && pacing.due(Instant::now(), caught_up) {
            let started = Instant::now();
            w.pass().await?;
            pacing.ran(started);
        }
        let due = w.pending.since.is_some_and(|t| t.elapsed() >= opts.flush_interval);
        if w.pending.rows >= opts.flush_events || due {
            w.flush().await?;
        }
        if last_progress.0.elapsed() >= opts.progress_every {
            let secs = last_progress.0.elapsed().as_secs_f64();
            let rate = (w.summary.events - last_progress.1) as f64 / secs;
            tracing::info!(
                events_per_sec = rate.round(),
                lag_bytes = metrics.lag_bytes.get(),
                files = metrics.files.get(),
                live_events = w.live.rows(),
                events = w.summary.events,
                alerts = w.summary.alerts,
                "progress"
            );
            last_progress = (Instant::now(), w.summary.events);
        }
    }
    // Stop reading, take what was already parsed, judge it and commit it.
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        // Wakes a reader waiting out a long --poll-interval.
        r.thread().unpark();
        // A reader blocked on a full queue ends only once the queue moves.
        while !r.is_finished() {
            match rx.try_recv() {
                Ok(u) => w.take(u).await?,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let _ = r.join();
    }
    while let Ok(u) = rx.try_recv() {
        w.take(u).await?;
    }
    if w.live.pending() {
        w.pass().await?;
    }
    w.flush().await?;
    if stdin_done {
        tracing::info!("input ended");
    }
    let summary = w.summary.clone();
    let (lake, name, deliveries) = (w.lake.clone(), w.name.clone(), w.deliveries.take());
    drop(w);
    if tokio::time::timeout(Duration::from_secs(30), sink_task).await.is_err() {
        tracing::error!("alert sinks did not finish within 30 s; undelivered alerts are sent again on restart");
    }
    if let Some(mut d) = deliveries {
        // What the sinks delivered after the last micro-batch.
        tokio::task::spawn_blocking(move || -> Result<(), StreamError> {
            if d.pending()? {
                let txn = lake.begin()?;
                d.stage(&txn, &name)?;
                txn.commit_folded()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StreamError::Io { what: "committing to the lake".into(), source: std::io::Error::other(e) })??;
    }
    Ok(summary)
}

/// The delivery log of a watcher on an object-store lake: a local file, of
/// which the first `committed` bytes are in the lake.
struct Deliveries {
    log: PathBuf,
    committed: u64,
}

impl Deliveries {
    fn dir(name: &str) -> String {
        format!("{}/delivered", Checkpoint::dir(name))
    }

    /// The whole lines the log gained since the last commit, read from
    /// there on: the log grows all day, and this runs at every micro-batch.
    fn new_lines(&self) -> Result<Vec<u8>, StreamError> {
        use std::io::{Read, Seek, SeekFrom};
        let what = || self.log.display().to_string();
        let mut file = match std::fs::File::open(&self.log) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(what())(e)),
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(self.committed)).and_then(|_| file.read_to_end(&mut bytes)).map_err(io(what()))?;
        bytes.truncate(bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
        Ok(bytes)
    }

    fn pending(&self) -> Result<bool, StreamError> {
        Ok(!self.new_lines()?.is_empty())
    }

    /// Stages the new lines into `txn`; counted as committed from here on
    /// (a failed commit fails the watcher, and a restart starts afresh).
    fn stage(&mut self, txn: &lake::Txn, name: &str) -> Result<(), StreamError> {
        let lines = self.new_lines()?;
        if lines.is_empty() {
            return Ok(());
        }
        let rel = txn.reserve(&Self::dir(name), "jsonl");
        let path = lake::staged_path(txn.lake(), &rel)?;
        std::fs::write(&path, &lines).map_err(io(path.display().to_string()))?;
        self.committed += lines.len() as u64;
        Ok(())
    }
}

/// The loop's state.
struct Watcher {
    lake: Lake,
    /// Set on an object-store lake: the delivery log's lines to commit.
    deliveries: Option<Deliveries>,
    name: String,
    /// Read positions after everything taken so far: the next checkpoint.
    positions: Vec<Position>,
    pending: Pending,
    live: Live,
    metrics: Metrics,
    summary: WatchSummary,
    output: AlertFormat,
    alert_tx: mpsc::UnboundedSender<crate::alert::Alert>,
}

impl Watcher {
    async fn take(&mut self, u: Update) -> Result<(), StreamError> {
        // A new live day learns its baseline from the days before it and is
        // seeded from the lake, so everything read so far (this update too)
        // is committed first, with the positions after it.
        let opens_day = u.parsed.iter().any(|p| p.events.num_rows() > 0 && !self.live.new_days(&p.events).is_empty());
        let mut live = Vec::with_capacity(u.parsed.len());
        for p in u.parsed {
            self.summary.lines += p.read;
            self.summary.events += p.ingested;
            self.summary.quarantined += p.quarantine.len() as u64;
            self.summary.redacted += p.exposures.len() as u64;
            self.metrics.lines.inc_by(p.read);
            self.metrics.events.inc_by(p.ingested);
            self.metrics.quarantined.inc_by(p.quarantine.len() as u64);
            self.metrics.redacted.inc_by(p.exposures.len() as u64);
            if p.events.num_rows() > 0 || !p.exposures.is_empty() {
                live.push((p.events.clone(), p.exposures.clone()));
            }
            self.pending.rows += p.events.num_rows();
            if p.events.num_rows() > 0 {
                self.pending.events.push(p.events);
            }
            self.pending.quarantine.extend(p.quarantine);
            self.pending.exposures.extend(p.exposures);
        }
        if let Some(p) = u.positions {
            self.positions = p;
        }
        self.pending.since.get_or_insert_with(Instant::now);
        if opens_day {
            self.flush().await?;
        }
        let late = self.live.late_events;
        self.live.add(&live, opens_day).await?;
        if opens_day {
            // This update was committed before it was added.
            self.live.committed()?;
        }
        self.metrics.late_events.inc_by(self.live.late_events - late);
        self.summary.late_events = self.live.late_events;
        self.metrics.live_events.set(self.live.rows() as i64);
        Ok(())
    }

    async fn pass(&mut self) -> Result<(), StreamError> {
        let started = Instant::now();
        let found = self.live.pass().await?;
        self.metrics.pass_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.judged_events.inc_by(found.judged_events);
        if found.new.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        for a in found.new {
            self.summary.alerts += 1;
            let labels =
                vec![("detector".to_string(), a.detector.to_string()), ("severity".into(), a.severity.as_str().into())];
            self.metrics.alerts.get_or_create(&labels).inc();
            // A closed stdout (a pipe whose reader left) must not stop the watch.
            let _ = writeln!(out, "{}", self.output.render(&a)).and_then(|_| out.flush());
            let _ = self.alert_tx.send(a);
        }
        Ok(())
    }

    /// Commits pending events, quarantined lines, secrets found, the live
    /// days' alerts and the read positions in one lake transaction.
    async fn flush(&mut self) -> Result<(), StreamError> {
        let alerts = self.live.take_dirty();
        if self.pending.is_empty() && alerts.is_empty() {
            self.pending.since = None;
            return Ok(());
        }
        let started = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        let rows = pending.rows as u64;
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            name: self.name.clone(),
            committed_at: crate::time::format_ms(chrono::Utc::now().timestamp_millis()),
            files: self.positions.clone(),
        };
        let (lake, mut deliveries, name) = (self.lake.clone(), self.deliveries.take(), self.name.clone());
        self.deliveries = tokio::task::spawn_blocking(move || {
            let staged = |txn: &lake::Txn| deliveries.as_mut().map_or(Ok(()), |d| d.stage(txn, &name));
            commit(&lake, pending, alerts, &checkpoint, staged).map(|()| deliveries)
        })
        .await
        .map_err(|e| StreamError::Io { what: "committing to the lake".into(), source: std::io::Error::other(e) })??;
        self.live.committed()?;
        self.metrics.live_events.set(self.live.rows() as i64);
        self.summary.flushes += 1;
        self.metrics.flushes.inc();
        self.metrics.flushed_events.inc_by(rows);
        self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.last_flush_seconds.set(chrono::Utc::now().timestamp());
        tracing::debug!(events = rows, seconds = started.elapsed().as_secs_f64(), "committed a micro-batch");
        Ok(())
    }
}

/// One lake transaction: a crash before it commits leaves nothing (the
/// positions are not advanced either), after it everything.
fn commit(
    lake: &Lake,
    p: Pending,
    alerts: Vec<DayAlerts>,
    checkpoint: &Checkpoint,
    also: impl FnOnce(&lake::Txn) -> Result<(), StreamError>,
) -> Result<(), StreamError> {
    let txn = lake.begin()?;
    also(&txn)?;
    let w = LakeWriter::new(&txn);
    for events in &p.events {
        w.push(events, &[], &[])?;
    }
    w.push(&RecordBatch::new_empty(crate::schema::event_schema()), &p.quarantine, &p.exposures)?;
    let days = w.finish()?;
    // One file per micro-batch would pile up all day: small ones are merged as they do.
    lake::compact::compact(&txn, &days, lake::compact::Policy::Tiered)?;
    for d in &alerts {
        detect::stage_day_alerts(&txn, &d.day, &d.alerts)?;
        if !d.governance.is_empty() {
            let rel = txn.reserve(&format!("{}/date={}", lake::ALERTS, d.day), "parquet");
            let schema = d.governance[0].schema();
            lake::write_parquet_staged(lake, &rel, schema, &d.governance, lake::writer_properties())?;
        }
    }
    let dir = Checkpoint::dir(&checkpoint.name);
    txn.replace(lake::committed_files(lake, &dir, "json")?);
    let rel = txn.reserve(&dir, "json");
    lake::write_jsonl_staged(lake, &rel, std::slice::from_ref(checkpoint))?;
    // A watcher commits all day long: one record stands for all its commits.
    txn.commit_folded()?;
    Ok(())
}

/// The reader thread for files: poll, parse, hand on; sleep when idle.
fn read_files(
    mut follower: Follower,
    parser: &LineParser,
    tx: &mpsc::Sender<Update>,
    stop: &AtomicBool,
    poll: Duration,
    metrics: &Metrics,
    run_id: &str,
) {
    let mut formats: std::collections::HashMap<String, LineFormat> = Default::default();
    // Per file, where a private key block its last poll ended in stands.
    let mut pems: std::collections::HashMap<String, PemLines> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let new = follower.poll();
        metrics.files.set(follower.files() as i64);
        metrics.lag_bytes.set(follower.lag_bytes() as i64);
        if new.is_empty() {
            // Parked, not asleep: stopping unparks it at once.
            std::thread::park_timeout(poll);
            continue;
        }
        let mut parsed = Vec::with_capacity(new.len());
        for lines in new {
            let format = match formats.get(&lines.fingerprint) {
                Some(f) => Some(*f),
                None => {
                    let f = parser.detect(&lines.chunk.bytes);
                    if let Some(f) = f {
                        tracing::info!(file = %lines.path, format = parser.format_name(f), "recognised");
                        formats.insert(lines.fingerprint.clone(), f);
                    }
                    f
                }
            };
            let pem = pems.entry(lines.fingerprint.clone()).or_default();
            parsed.push(parser.parse_after(format, &lines.path, run_id, &lines.chunk, pem));
            for (line, head) in &lines.oversized {
                parsed.push(parser.oversized(format, &lines.path, run_id, *line, head));
            }
        }
        // One update per poll, so a commit never holds positions past the events it holds.
        if tx.blocking_send(Update { parsed, positions: Some(follower.positions()) }).is_err() {
            return;
        }
    }
}

/// The reader thread for stdin: whole lines as they arrive, until EOF.
///
/// A second thread reads the pipe in pieces of what it holds; this one takes
/// every piece already waiting (up to ingest's chunk size) as one chunk. So a
/// busy pipe is parsed in large chunks, as ingest parses a file, and a quiet
/// one line by line, with no wait for more.
fn read_stdin(parser: &LineParser, tx: &mpsc::Sender<Update>, stop: &AtomicBool, run_id: &str) {
    use std::sync::mpsc::TryRecvError;
    /// What one read of stdin asks for: a pipe's whole buffer, more from a redirected file.
    const PIECE: usize = 1 << 18;
    let (pieces, arrived) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(64);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0; PIECE];
        loop {
            let read = match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            if pieces.send(read).is_err() || failed {
                return;
            }
        }
    });
    let mut carry: Vec<u8> = Vec::new();
    let mut next_line = 1u64;
    let mut format = None;
    let mut pem = PemLines::default();
    while !stop.load(Ordering::Relaxed) {
        let mut eof = arrived.recv().map_or(true, |piece| append(piece, &mut carry));
        while !eof && carry.len() < CHUNK_BYTES {
            match arrived.try_recv() {
                Ok(piece) => eof = append(piece, &mut carry),
                Err(TryRecvError::Disconnected) => eof = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        let bytes = if eof {
            std::mem::take(&mut carry)
        } else {
            match memchr::memrchr(b'\n', &carry) {
                Some(end) => {
                    let rest = carry.split_off(end + 1);
                    std::mem::replace(&mut carry, rest)
                }
                None => continue,
            }
        };
        if !bytes.is_empty() {
            let chunk = Chunk { bytes, first_line: next_line };
            next_line += memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64;
            format = format.or_else(|| parser.detect(&chunk.bytes));
            let parsed = parser.parse_after(format, "<stdin>", run_id, &chunk, &mut pem);
            if tx.blocking_send(Update { parsed: vec![parsed], positions: None }).is_err() {
                return;
            }
        }
        if eof {
            return;
        }
    }
}

/// Adds one read of stdin to `carry`; true when stdin can give no more.
fn append(piece: std::io::Result<Vec<u8>>, carry: &mut Vec<u8>) -> bool {
    match piece {
        Ok(p) => {
            carry.extend_from_slice(&p);
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "reading stdin");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_pass_waits_while_lines_arrive_but_not_once_the_input_is_quiet() {
        let poll = Duration::from_millis(100);
        let mut p = Pacing::new(poll);
        let t0 = Instant::now();
        // A pass of 2 s just ended; the reader is caught up.
        (p.last_end, p.last_len, p.input) = (t0, Duration::from_secs(2), t0);
        // Lines still arriving at every poll: spaced by the pass's length.
        for ms in [100, 500, 1_000, 1_900] {
            let now = t0 + Duration::from_millis(ms);
            p.input = now - poll / 2;
            assert!(!p.due(now, true), "{ms} ms after a long pass, input flowing");
        }
        assert!(p.due(t0 + Duration::from_secs(2), true), "spaced by its length");
        // The burst ended with the pass: due two polls later, not 2 s later.
        p.input = t0;
        assert!(!p.due(t0 + Duration::from_millis(150), true));
        assert!(p.due(t0 + Duration::from_millis(200), true));
        // Still reading (lag or a full queue): quiet or not, the spacing holds.
        assert!(!p.due(t0 + Duration::from_millis(1_500), false));
        // A short pass runs again at once when caught up, however busy the input.
        (p.last_len, p.input) = (Duration::from_millis(300), t0 + Duration::from_millis(10));
        assert!(p.due(t0 + Duration::from_millis(10), true));
        assert!(!p.due(t0 + Duration::from_millis(10), false));
        assert!(p.due(t0 + Duration::from_millis(300), false), "behind: spaced by its length");
    }

    #[test]
    fn checkpoints_before_versions_load_redacted_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), lake::Open::Write).unwrap();
        let state = lake.path(&Checkpoint::dir("w"));
        std::fs::create_dir_all(&state).unwrap();
        // Older builds stored a followed file's path as it was, secrets and all.
        let secret = "sk-proj-FiLeNaMe0123456789abcdefghij";
        let old = r#"{"name":"w","committed_at":"2025-01-01T00:00:00Z","files":[{"fingerprint":"ab","path":"logs/SECRET.log","offset":10,"line":2}]}"#
            .replace("SECRET", secret);
        std::fs::write(state.join("part-a-00001.json"), format!("{old}\n")).unwrap();
        let c = Checkpoint::load(&lake, "w").unwrap().unwrap();
        assert_eq!((c.version, c.files.len(), c.files[0].offset), (1, 1, 10));
        let p = &c.files[0];
        assert!(!p.path.contains(&secret[8..]) && p.path.starts_with("logs/[REDACTED:"), "{}", p.path);
        assert_eq!((p.fingerprint.as_str(), p.line), ("ab", 2), "what resuming matches on is kept");

        let future = old.replacen('{', &format!("{{\"version\":{},", CHECKPOINT_VERSION + 1), 1);
        let path = state.join("part-b-00001.json");
        std::fs::write(&path, future).unwrap();
        let err = Checkpoint::load(&lake, "w").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("upgrade credtrail"), "{err}");
    }

    #[test]
    fn a_delivery_log_commits_each_whole_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&dir.path().join("lake"), lake::Open::Write).unwrap();
        let log = dir.path().join("delivered.jsonl");
        let mut d = Deliveries { log: log.clone(), committed: 0 };
        assert!(!d.pending().unwrap(), "no log yet");
        // A line the sink is still writing is left for later.
        std::fs::write(&log, "{\"alert_id\":\"a1\"}\n{\"alert_id\":\"a2").unwrap();
        let txn = lake.begin().unwrap();
        d.stage(&txn, "w").unwrap();
        let c = txn.commit(Vec::new()).unwrap();
        assert_eq!(c.files.len(), 1);
        assert_eq!(lake.read(&c.files[0]).unwrap().unwrap(), b"{\"alert_id\":\"a1\"}\n");
        assert!(!d.pending().unwrap());
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"\"}\n").unwrap();
        assert_eq!(d.new_lines().unwrap(), b"{\"alert_id\":\"a2\"}\n");
        let parts = lake::committed_files(&lake, &Deliveries::dir("w"), "jsonl").unwrap();
        assert_eq!(parts, c.files);
    }
}

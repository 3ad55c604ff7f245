//! Ingest: input files → normalised events → the lake.
//!
//! Files are processed in parallel, and each file in parallel chunks: a
//! reader cuts the (decompressed) stream into chunks of whole lines, workers
//! redact, parse and append them to columnar builders, and a shared sink
//! partitions the batches by day and writes sorted Parquet files as buffers
//! fill. Everything a run writes is committed at once (see [`crate::lake`]).

pub mod cloudtrail;
pub mod gateway;
pub mod mapping;
pub mod pricing;
pub mod source;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::lake::{self, Lake, LakeError, SourceRecord, Txn};
use crate::schema::{Event, EventBuilder, Lineage, Rejected, event_schema};
use crate::secrets::{self, Exposure, ExposureRow};
use mapping::{Mapping, MappingError};
use pricing::{Pricing, PricingError};
use source::{Chunks, Container};

/// The raw text kept for a quarantined record, at most.
const QUARANTINE_RAW_BYTES: usize = 64 << 10;
/// Rows of one day buffered before they are written as one sorted file.
const FILE_ROWS: usize = 512 * 1024;
/// Rows buffered across all days before the largest buffer is written early,
/// which bounds memory whatever the size and spread of the input.
const BUFFER_ROWS: usize = 1 << 20;
/// File extensions picked up when walking a directory.
const LOG_EXTENSIONS: &[&str] = &["json", "jsonl", "ndjson", "log", "gz", "txt"];

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("{}: no such file or directory", .0.display())]
    MissingInput(PathBuf),
    #[error("unknown format {0:?}; known: {1}")]
    UnknownFormat(String, String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Files or directories (walked recursively for log files).
    pub inputs: Vec<PathBuf>,
    pub lake: PathBuf,
    /// Field-mapping TOML files, tried before the built-in ones.
    pub mappings: Vec<PathBuf>,
    /// Force a format by name instead of detecting it per file.
    pub format: Option<String>,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
    /// A Bedrock pricing table replacing `models/bedrock_pricing.toml`.
    pub pricing: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Ingested,
    /// Already in the lake (same bytes, under any name).
    Skipped,
    /// Damaged or truncated: what could be read was ingested.
    Partial,
    /// Could not be read at all.
    Failed,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Ingested => "ingested",
            FileStatus::Skipped => "skipped",
            FileStatus::Partial => "partial",
            FileStatus::Failed => "failed",
        }
    }
}

/// What happened to one input file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub status: FileStatus,
    pub format: Option<String>,
    pub read: u64,
    pub ingested: u64,
    pub quarantined: u64,
    pub redacted: u64,
    pub bytes: u64,
    /// Set when the file grew since an earlier run and only the new lines
    /// after this one were read.
    pub resumed_after_line: Option<u64>,
    pub error: Option<String>,
}

/// The result of a run, printed for people or as one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    pub run_id: Option<String>,
    pub lake: String,
    pub files: u64,
    pub skipped_files: u64,
    pub failed_files: u64,
    pub read: u64,
    pub ingested: u64,
    pub quarantined: u64,
    pub redacted: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub days: Vec<String>,
    pub per_file: Vec<FileReport>,
}

impl IngestSummary {
    /// Whether anything needs a person's attention (drives the exit status).
    pub fn has_problems(&self) -> bool {
        self.quarantined > 0 || self.failed_files > 0
    }

    pub fn render_text(&self) -> String {
        let mut s = format!(
            "ingested {} of {} records from {} file(s) ({} already ingested, {} failed) into {}\n\
             quarantined {}, secrets redacted {}, {} in {:.2}s ({:.0} events/s)\n",
            self.ingested,
            self.read,
            self.files,
            self.skipped_files,
            self.failed_files,
            self.lake,
            self.quarantined,
            self.redacted,
            human_bytes(self.bytes),
            self.seconds,
            self.events_per_sec,
        );
        for f in self.per_file.iter().filter(|f| matches!(f.status, FileStatus::Partial | FileStatus::Failed)) {
            s.push_str(&format!("  {}: {}: {}\n", f.status.as_str(), f.path, f.error.as_deref().unwrap_or("")));
        }
        if self.quarantined > 0 {
            s.push_str(&format!("  quarantined records: {}/{}/\n", self.lake, lake::QUARANTINE));
        }
        if self.redacted > 0 {
            s.push_str(&format!(
                "  credential secrets were found in the logs and redacted: see {}/{}/\n",
                self.lake,
                lake::SECRET_EXPOSURES
            ));
        }
        s
    }
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// A record the lake could not take, kept with where it came from and why.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineEntry {
    pub run_id: String,
    pub source_file: String,
    /// Line number (1-based) or index in a `Records` array (0-based); none
    /// when the whole file could not be read.
    pub record: Option<u64>,
    pub format: Option<String>,
    pub reason: String,
    /// The record's text with secrets redacted, cut at 64 KiB.
    pub raw: String,
    pub raw_truncated: bool,
}

/// The formats a run can read: the two built into code and every mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Gateway,
    CloudTrail,
    Mapped(usize),
}

struct Formats {
    /// The user's mappings first, then the built-in ones.
    mappings: Vec<Mapping>,
    user: usize,
    /// Prices Bedrock inference the log leaves unpriced.
    pricing: Pricing,
}

impl Formats {
    fn load(user: &[PathBuf], pricing: Option<&Path>) -> Result<Formats, IngestError> {
        let mut mappings = user.iter().map(|p| Mapping::from_file(p)).collect::<Result<Vec<_>, _>>()?;
        let user = mappings.len();
        mappings.extend(mapping::builtin());
        Ok(Formats { mappings, user, pricing: Pricing::load(pricing)? })
    }

    fn name(&self, f: Format) -> &str {
        match f {
            Format::Gateway => "gateway",
            Format::CloudTrail => "cloudtrail",
            Format::Mapped(i) => &self.mappings[i].name,
        }
    }

    fn names(&self) -> String {
        let mut v = vec!["gateway".to_string(), "cloudtrail".to_string()];
        v.extend(self.mappings.iter().map(|m| m.name.clone()));
        v.join(", ")
    }

    fn by_name(&self, name: &str) -> Option<Format> {
        match name {
            "gateway" => Some(Format::Gateway),
            "cloudtrail" => Some(Format::CloudTrail),
            _ => self.mappings.iter().position(|m| m.name == name).map(Format::Mapped),
        }
    }

    /// The format of a record, from its shape. Mappings the user supplied
    /// come first so they can claim records a built-in would also match.
    fn detect(&self, v: &Value) -> Option<Format> {
        if !v.is_object() {
            return None;
        }
        let mapped =
            |mut range: std::ops::Range<usize>| range.find(|&i| self.mappings[i].matches(v)).map(Format::Mapped);
        if let Some(f) = mapped(0..self.user) {
            return Some(f);
        }
        if gateway::looks_like_gateway(v) {
            return Some(Format::Gateway);
        }
        if cloudtrail::looks_like_cloudtrail(v) {
            return Some(Format::CloudTrail);
        }
        mapped(self.user..self.mappings.len())
    }
}

/// One worker's share of a file: events, rejects and secrets found.
struct Output {
    events: EventBuilder,
    quarantine: Vec<QuarantineEntry>,
    exposures: Vec<ExposureRow>,
    read: u64,
    ingested: u64,
}

impl Output {
    fn new() -> Self {
        Output { events: EventBuilder::new(), quarantine: Vec::new(), exposures: Vec::new(), read: 0, ingested: 0 }
    }
}

/// Everything a worker needs to turn records of one file into events.
struct FileCtx<'r> {
    formats: &'r Formats,
    /// `None` when no record of the file was recognised.
    format: Option<Format>,
    file: &'r str,
    run_id: &'r str,
}

impl FileCtx<'_> {
    fn format_name(&self) -> Option<String> {
        self.format.map(|f| self.formats.name(f).to_string())
    }

    fn quarantine(&self, out: &mut Output, record: Option<u64>, reason: String, raw: &str) {
        let cut = gateway::truncate(raw, QUARANTINE_RAW_BYTES);
        out.quarantine.push(QuarantineEntry {
            run_id: self.run_id.to_string(),
            source_file: self.file.to_string(),
            record,
            format: self.format_name(),
            reason,
            raw: cut.to_string(),
            raw_truncated: cut.len() < raw.len(),
        });
    }

    /// The whole per-record transform: redact, parse, map, append or quarantine.
    fn record(&self, raw: &str, record_no: u64, out: &mut Output) {
        out.read += 1;
        let red = secrets::redact(raw);
        let text: &str = &red.text;
        let Some(format) = self.format else {
            let reason = match serde_json::from_str::<Value>(text) {
                Ok(v) => unrecognised(&v, self.formats),
                Err(e) => format!("not JSON: {e}"),
            };
            self.record_exposures(&red.exposures, text, None, record_no, out);
            self.quarantine(out, Some(record_no), reason, text);
            return;
        };
        let value: Result<Option<Value>, Rejected> = match format {
            // Both built-in formats parse their own text (typed, borrowing).
            Format::Gateway | Format::CloudTrail => Ok(None),
            _ => serde_json::from_str(text).map(Some).map_err(|e| Rejected(format!("not JSON: {e}"))),
        };
        let result: Result<Event<'_>, Rejected> = match (&value, format) {
            (Err(r), _) => Err(r.clone()),
            (Ok(_), Format::Gateway) => gateway::parse(text),
            (Ok(_), Format::CloudTrail) => cloudtrail::map_text(text),
            (Ok(Some(v)), Format::Mapped(i)) => self.formats.mappings[i].map(v),
            (Ok(None), _) => Err(Rejected::new("record was not parsed")),
        };
        self.record_exposures(&red.exposures, text, result.as_ref().ok(), record_no, out);
        match result {
            Ok(mut e) => {
                self.formats.pricing.apply(&mut e);
                let lineage = Lineage { source: self.formats.name(format), source_file: self.file };
                out.events.append(&e, lineage, record_no);
                out.ingested += 1;
            }
            Err(r) => self.quarantine(out, Some(record_no), r.0, text),
        }
    }

    fn record_exposures(
        &self,
        exposures: &[Exposure],
        text: &str,
        event: Option<&Event<'_>>,
        record_no: u64,
        out: &mut Output,
    ) {
        if exposures.is_empty() {
            return;
        }
        let value: Option<Value> = serde_json::from_str(text).ok();
        let fields = secrets::exposure_fields(exposures, value.as_ref());
        for (e, field) in exposures.iter().zip(fields) {
            // Redacted all the same, but AWS's own record names no suspect.
            if self.format == Some(Format::CloudTrail)
                && value.as_ref().is_some_and(|v| cloudtrail::aws_own_secret(v, field.as_deref(), e.kind))
            {
                continue;
            }
            out.exposures.push(ExposureRow {
                ts_ms: event.map(|e| e.ts_ms),
                credential_id: event.map(|e| e.credential_id.to_string()),
                request_id: event.and_then(|e| e.request_id.as_deref().map(str::to_string)),
                source: self.format_name(),
                source_file: self.file.to_string(),
                source_record: record_no,
                field,
                kind: e.kind,
                fingerprint: e.fingerprint.clone(),
                run_id: self.run_id.to_string(),
            });
        }
    }

    /// Processes a chunk of whole lines.
    fn lines(&self, chunk: &source::Chunk) -> Output {
        let mut out = Output::new();
        for (n, line) in (chunk.first_line..).zip(chunk.bytes.split(|&b| b == b'\n')) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(line) {
                Ok(text) => self.record(text, n, &mut out),
                Err(e) => {
                    out.read += 1;
                    let lossy = String::from_utf8_lossy(line);
                    let red = secrets::redact(&lossy);
                    self.record_exposures(&red.exposures, &red.text, None, n, &mut out);
                    self.quarantine(&mut out, Some(n), format!("not UTF-8 text: {e}"), &red.text);
                }
            }
        }
        out
    }
}

fn unrecognised(v: &Value, formats: &Formats) -> String {
    let keys: Vec<&str> = v.as_object().map(|m| m.keys().take(12).map(String::as_str).collect()).unwrap_or_default();
    format!(
        "unrecognised record format (top-level keys: {}); known formats: {}; add a field mapping with --mapping",
        keys.join(", "),
        formats.names()
    )
}

/// Gathers results from workers and writes them into the run's staged files.
struct Sink<'t> {
    txn: &'t Txn,
    buffers: Mutex<Buffers>,
    quarantine: Mutex<Option<(String, BufWriter<File>)>>,
    exposures: Mutex<Vec<ExposureRow>>,
    days: Mutex<BTreeSet<String>>,
}

#[derive(Default)]
struct Buffers {
    by_day: HashMap<String, (Vec<RecordBatch>, usize)>,
    total: usize,
}

impl<'t> Sink<'t> {
    fn new(txn: &'t Txn) -> Self {
        Sink {
            txn,
            buffers: Mutex::default(),
            quarantine: Mutex::new(None),
            exposures: Mutex::default(),
            days: Mutex::default(),
        }
    }

    fn push(&self, mut out: Output) -> Result<(), IngestError> {
        let events = if out.events.is_empty() { None } else { Some(out.events.finish()) };
        self.push_parts(events.as_ref(), &out.quarantine, &mut out.exposures)
    }

    fn push_parts(
        &self,
        events: Option<&RecordBatch>,
        quarantine: &[QuarantineEntry],
        exposures: &mut Vec<ExposureRow>,
    ) -> Result<(), IngestError> {
        if !quarantine.is_empty() {
            self.write_quarantine(quarantine)?;
        }
        if !exposures.is_empty() {
            self.exposures.lock().expect("sink lock").append(exposures);
        }
        let Some(events) = events.filter(|b| b.num_rows() > 0) else {
            return Ok(());
        };
        for (day, part) in lake::split_by_day(events)? {
            let full = {
                let mut b = self.buffers.lock().expect("sink lock");
                let rows = part.num_rows();
                let entry = b.by_day.entry(day.clone()).or_default();
                entry.0.push(part);
                entry.1 += rows;
                b.total += rows;
                if b.by_day[&day].1 >= FILE_ROWS {
                    take_day(&mut b, &day)
                } else if b.total >= BUFFER_ROWS {
                    let largest = b.by_day.iter().max_by_key(|(_, v)| v.1).map(|(k, _)| k.clone());
                    largest.and_then(|d| take_day(&mut b, &d))
                } else {
                    None
                }
            };
            if let Some((day, batches)) = full {
                self.write_day(&day, &batches)?;
            }
        }
        Ok(())
    }

    fn write_day(&self, day: &str, batches: &[RecordBatch]) -> Result<(), IngestError> {
        let schema = event_schema();
        let sorted = lake::sort_events(&schema, batches)?;
        let rel = self.txn.reserve(&lake::events_partition(day), "parquet");
        let props = lake::writer_properties(&[crate::schema::col::REQUEST_ID]);
        lake::write_parquet_staged(self.txn.lake(), &rel, schema, &[sorted], props)?;
        self.days.lock().expect("sink lock").insert(day.to_string());
        Ok(())
    }

    fn write_quarantine(&self, entries: &[QuarantineEntry]) -> Result<(), IngestError> {
        let mut q = self.quarantine.lock().expect("sink lock");
        if q.is_none() {
            let rel = self.txn.reserve(lake::QUARANTINE, "jsonl");
            let path = lake::staged_path(self.txn.lake(), &rel);
            let f = File::create(&path).map_err(|source| IngestError::Io { path, source })?;
            *q = Some((rel, BufWriter::new(f)));
        }
        let (rel, w) = q.as_mut().expect("quarantine writer was just opened");
        let path = lake::staged_path(self.txn.lake(), rel);
        for e in entries {
            serde_json::to_writer(&mut *w, e).map_err(|e| IngestError::Io { path: path.clone(), source: e.into() })?;
            w.write_all(b"\n").map_err(|source| IngestError::Io { path: path.clone(), source })?;
        }
        Ok(())
    }

    /// Writes what is still buffered; returns the days written.
    fn finish(self) -> Result<Vec<String>, IngestError> {
        let rest: Vec<(String, Vec<RecordBatch>)> =
            self.buffers.into_inner().expect("sink lock").by_day.into_iter().map(|(d, (b, _))| (d, b)).collect();
        let me = Sink { buffers: Mutex::default(), ..self };
        rest.par_iter().try_for_each(|(day, batches)| me.write_day(day, batches))?;
        if let Some((rel, w)) = me.quarantine.into_inner().expect("sink lock") {
            let path = lake::staged_path(me.txn.lake(), &rel);
            let f = w.into_inner().map_err(|e| IngestError::Io { path: path.clone(), source: e.into_error() })?;
            f.sync_all().map_err(|source| IngestError::Io { path, source })?;
        }
        let exposures = me.exposures.into_inner().expect("sink lock");
        if !exposures.is_empty() {
            let rel = me.txn.reserve(lake::SECRET_EXPOSURES, "parquet");
            let batch = secrets::exposures_batch(&exposures);
            lake::write_parquet_staged(me.txn.lake(), &rel, batch.schema(), &[batch], lake::writer_properties(&[]))?;
        }
        Ok(me.days.into_inner().expect("sink lock").into_iter().collect())
    }
}

fn take_day(b: &mut Buffers, day: &str) -> Option<(String, Vec<RecordBatch>)> {
    let (batches, rows) = b.by_day.remove(day)?;
    b.total -= rows;
    Some((day.to_string(), batches))
}

/// An input file found on disk.
struct Input {
    path: PathBuf,
    display: String,
    size: u64,
    mtime_ns: i128,
}

/// The files under `inputs`, never descending into the lake itself (so
/// `ingest . --lake lake` does not ingest its own quarantine).
fn collect_inputs(inputs: &[PathBuf], lake: &Path) -> Result<Vec<Input>, IngestError> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let lake = lake.canonicalize().ok();
    for root in inputs {
        if !root.exists() {
            return Err(IngestError::MissingInput(root.clone()));
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| lake.is_none() || e.path().canonicalize().ok() != lake);
        for entry in walker {
            let entry = entry.map_err(|e| IngestError::Io {
                path: e.path().unwrap_or(root).to_path_buf(),
                source: e.into_io_error().unwrap_or_else(|| io::Error::other("filesystem loop")),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let p = entry.path();
            let explicit = entry.depth() == 0;
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !explicit && (name.starts_with('.') || !LOG_EXTENSIONS.contains(&ext)) {
                continue;
            }
            let canonical = p.canonicalize().map_err(|source| IngestError::Io { path: p.to_path_buf(), source })?;
            if !seen.insert(canonical.clone()) {
                continue;
            }
            let meta = entry.metadata().map_err(|e| IngestError::Io {
                path: p.to_path_buf(),
                source: e.into_io_error().unwrap_or_else(|| io::Error::other("metadata")),
            })?;
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            files.push(Input {
                display: canonical.to_string_lossy().into_owned(),
                path: canonical,
                size: meta.len(),
                mtime_ns,
            });
        }
    }
    Ok(files)
}

/// xxh3-128 of a file's bytes, and of its first `prefix` bytes when asked
/// (to recognise a file that grew since it was ingested), in one read.
fn fingerprint(path: &Path, prefix: Option<u64>) -> io::Result<(String, Option<String>)> {
    let mut f = File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut prefix_print = None;
    loop {
        let want = match prefix {
            Some(p) if prefix_print.is_none() => (p - done).min(buf.len() as u64) as usize,
            _ => buf.len(),
        };
        if want == 0 {
            prefix_print = Some(hex128(h.digest128()));
            continue;
        }
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok((hex128(h.digest128()), prefix_print))
}

fn hex128(v: u128) -> String {
    format!("{v:032x}")
}

/// Where to pick up a JSON-lines file that grew since an earlier run.
#[derive(Debug, Clone, Copy)]
struct Resume {
    lines: u64,
}

/// Counts bytes read from the underlying (possibly compressed) file.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Runs one ingest into the lake.
pub fn ingest(opts: &IngestOptions) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    let formats = Formats::load(&opts.mappings, opts.pricing.as_deref())?;
    let forced = match &opts.format {
        Some(name) => {
            Some(formats.by_name(name).ok_or_else(|| IngestError::UnknownFormat(name.clone(), formats.names()))?)
        }
        None => None,
    };
    let inputs = collect_inputs(&opts.inputs, &opts.lake)?;
    let lake = Lake::open(&opts.lake)?;
    let txn = lake.begin()?;

    // Skip what an earlier run took: same path, size and mtime without
    // reading it, otherwise the same bytes under any name. A file whose
    // beginning is exactly what an earlier run took resumes after it.
    let commits = lake.commits()?;
    let sources = commits.iter().flat_map(|c| &c.sources);
    let known_paths: HashSet<(&str, u64, i128)> =
        sources.clone().map(|s| (s.path.as_str(), s.size, s.mtime_ns)).collect();
    let known_prints: HashSet<&str> = sources.clone().map(|s| s.fingerprint.as_str()).collect();
    // Later commits overwrite earlier ones: the newest record of a path wins.
    let latest: HashMap<&str, &SourceRecord> = sources.map(|s| (s.path.as_str(), s)).collect();

    enum Plan {
        Skip,
        Fail(String),
        Ingest(String, Option<Resume>),
    }
    let planned: Vec<(Input, Plan)> = inputs
        .into_par_iter()
        .map(|i| {
            if known_paths.contains(&(i.display.as_str(), i.size, i.mtime_ns)) {
                return (i, Plan::Skip);
            }
            let prev = latest.get(i.display.as_str()).filter(|p| p.lines.is_some() && p.size < i.size);
            let plan = match fingerprint(&i.path, prev.map(|p| p.size)) {
                Err(e) => Plan::Fail(format!("cannot read: {e}")),
                Ok((fp, _)) if known_prints.contains(fp.as_str()) => Plan::Skip,
                Ok((fp, Some(prefix))) if prev.is_some_and(|p| p.fingerprint == prefix) => {
                    Plan::Ingest(fp, prev.and_then(|p| p.lines).map(|lines| Resume { lines }))
                }
                Ok((fp, _)) => Plan::Ingest(fp, None),
            };
            (i, plan)
        })
        .collect();

    let mut reports: Vec<FileReport> = Vec::new();
    let mut todo: Vec<(Input, String, Option<Resume>)> = Vec::new();
    let mut this_run = HashSet::new();
    for (input, plan) in planned {
        let report = |status, error: Option<String>| FileReport {
            path: input.display.clone(),
            status,
            format: None,
            read: 0,
            ingested: 0,
            quarantined: 0,
            redacted: 0,
            bytes: input.size,
            resumed_after_line: None,
            error,
        };
        match plan {
            Plan::Skip => reports.push(report(FileStatus::Skipped, None)),
            // Two copies of one file in the same run: the second is a skip.
            Plan::Ingest(fp, _) if !this_run.insert(fp.clone()) => reports.push(report(FileStatus::Skipped, None)),
            Plan::Ingest(fp, resume) => todo.push((input, fp, resume)),
            Plan::Fail(e) => reports.push(report(FileStatus::Failed, Some(e))),
        }
    }

    let total_bytes: u64 = todo.iter().map(|(i, _, _)| i.size).sum();
    let bar = if opts.progress {
        let b = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{spinner} ingest [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("progress template is valid")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let sink = Sink::new(&txn);
    let results: Vec<Result<(FileReport, SourceRecord), IngestError>> = todo
        .par_iter()
        .map(|(input, fp, resume)| {
            let (report, lines) = ingest_file(input, *resume, &formats, forced, &sink, txn.run_id(), &bar)?;
            let src = SourceRecord {
                path: input.display.clone(),
                size: input.size,
                mtime_ns: input.mtime_ns,
                fingerprint: fp.clone(),
                read: report.read,
                ingested: report.ingested,
                quarantined: report.quarantined,
                lines,
            };
            Ok((report, src))
        })
        .collect();
    bar.finish_and_clear();

    let mut sources = Vec::new();
    for r in results {
        let (report, src) = r?;
        // A file that could not be opened is not recorded, so a rerun retries it.
        if report.status != FileStatus::Failed {
            sources.push(src);
        }
        reports.push(report);
    }
    // Files that failed outright still leave a trace beside the records.
    let failures: Vec<QuarantineEntry> = reports
        .iter()
        .filter(|r| r.status == FileStatus::Failed)
        .map(|r| QuarantineEntry {
            run_id: txn.run_id().to_string(),
            source_file: r.path.clone(),
            record: None,
            format: r.format.clone(),
            reason: r.error.clone().unwrap_or_default(),
            raw: String::new(),
            raw_truncated: false,
        })
        .collect();
    if !failures.is_empty() {
        sink.write_quarantine(&failures)?;
    }
    let days = sink.finish()?;
    let run_id = txn.run_id().to_string();
    let committed = !sources.is_empty() || !failures.is_empty();
    if committed {
        txn.commit(sources)?;
    }
    reports.sort_by(|a, b| a.path.cmp(&b.path));

    let sum = |f: fn(&FileReport) -> u64| reports.iter().map(f).sum::<u64>();
    let seconds = started.elapsed().as_secs_f64();
    let ingested = sum(|r| r.ingested);
    Ok(IngestSummary {
        run_id: committed.then_some(run_id),
        lake: opts.lake.display().to_string(),
        files: reports.len() as u64,
        skipped_files: reports.iter().filter(|r| r.status == FileStatus::Skipped).count() as u64,
        failed_files: reports.iter().filter(|r| r.status == FileStatus::Failed).count() as u64,
        read: sum(|r| r.read),
        ingested,
        quarantined: sum(|r| r.quarantined),
        redacted: sum(|r| r.redacted),
        bytes: sum(|r| if r.status == FileStatus::Skipped { 0 } else { r.bytes }),
        seconds,
        events_per_sec: if seconds > 0.0 { ingested as f64 / seconds } else { 0.0 },
        days,
        per_file: reports,
    })
}

/// Reads one file to the end, sending its records through the sink.
/// Problems with the file itself end up in its report, not as an error:
/// only a failure to write the lake stops the run. Returns the report and,
/// for JSON lines, how many lines the file had.
fn ingest_file(
    input: &Input,
    resume: Option<Resume>,
    formats: &Formats,
    forced: Option<Format>,
    sink: &Sink<'_>,
    run_id: &str,
    bar: &ProgressBar,
) -> Result<(FileReport, Option<u64>), IngestError> {
    let mut report = FileReport {
        path: input.display.clone(),
        status: FileStatus::Ingested,
        format: None,
        read: 0,
        ingested: 0,
        quarantined: 0,
        redacted: 0,
        bytes: input.size,
        resumed_after_line: resume.map(|r| r.lines),
        error: None,
    };
    let mut lines = None;
    let opened = File::open(&input.path).and_then(|f| {
        let counted = Counting { inner: f, bar: bar.clone() };
        source::open_reader(counted)
    });
    let skipped = resume.map_or(0, |r| r.lines);
    let head = opened.and_then(|mut r| {
        source::skip_lines(&mut r, skipped)?;
        let head = r.fill_buf()?.to_vec();
        Ok((r, head))
    });
    let (mut reader, head) = match head {
        Ok(rh) => rh,
        Err(e) => {
            report.status = FileStatus::Failed;
            report.error = Some(format!("cannot read: {e}"));
            return Ok((report, None));
        }
    };
    let tally = Mutex::new((0u64, 0u64, 0u64, 0u64));
    let account = |out: &Output| {
        let mut t = tally.lock().expect("tally lock");
        t.0 += out.read;
        t.1 += out.ingested;
        t.2 += out.quarantine.len() as u64;
        t.3 += out.exposures.len() as u64;
    };
    let mut ctx = FileCtx { formats, format: forced, file: &input.display, run_id };

    let container = if resume.is_some() { Container::Lines } else { source::sniff_container(&head) };
    match container {
        Container::Lines => {
            let mut chunks = Chunks::new(reader, skipped + 1);
            let first = chunks.next();
            if ctx.format.is_none() {
                ctx.format = first.as_ref().and_then(|c| detect_in_lines(&c.bytes, formats));
            }
            let result: Result<(), IngestError> =
                first.into_iter().chain(chunks.by_ref()).par_bridge().try_for_each(|chunk| {
                    let out = ctx.lines(&chunk);
                    account(&out);
                    sink.push(out)
                });
            result?;
            let mut tail = Output::new();
            for (line, head) in std::mem::take(&mut chunks.oversized) {
                tail.read += 1;
                let text = String::from_utf8_lossy(&head);
                let red = secrets::redact(&text);
                let reason = format!("line longer than {} MiB", source::MAX_LINE_BYTES >> 20);
                ctx.quarantine(&mut tail, Some(line), reason, &red.text);
            }
            if let Some(failure) = chunks.failure.take() {
                report.status = FileStatus::Partial;
                report.error = Some(format!("stopped reading: {}", failure.error));
                if let Some((line, bytes)) = failure.partial {
                    tail.read += 1;
                    let text = String::from_utf8_lossy(&bytes);
                    let red = secrets::redact(&text);
                    let reason = format!("record cut off where the file ends early: {}", failure.error);
                    ctx.quarantine(&mut tail, Some(line), reason, &red.text);
                }
            }
            account(&tail);
            sink.push(tail)?;
            lines = Some(chunks.lines_consumed());
        }
        Container::Array => {
            let mut bytes = Vec::with_capacity(input.size as usize);
            if let Err(e) = reader.read_to_end(&mut bytes) {
                report.status = FileStatus::Partial;
                report.error = Some(format!("stopped reading: {e}"));
            }
            let doc = String::from_utf8_lossy(&bytes);
            let (items, damage) = source::array_records(&doc);
            if ctx.format.is_none() {
                ctx.format = items
                    .iter()
                    .take(64)
                    .find_map(|i| serde_json::from_str::<Value>(i.raw.get()).ok().and_then(|v| formats.detect(&v)));
            }
            items.par_chunks(2048).try_for_each(|group| {
                let mut out = Output::new();
                for item in group {
                    ctx.record(item.raw.get(), item.index, &mut out);
                }
                account(&out);
                sink.push(out)
            })?;
            if let Some(damage) = damage {
                report.status = FileStatus::Partial;
                report.error.get_or_insert_with(|| format!("document damaged: {damage}"));
                let mut tail = Output::new();
                tail.read += 1;
                let consumed: usize = items
                    .last()
                    .map_or(0, |i| i.raw.get().as_ptr() as usize - doc.as_ptr() as usize + i.raw.get().len());
                let rest = &doc[consumed..];
                let red = secrets::redact(gateway::truncate(rest, QUARANTINE_RAW_BYTES));
                ctx.quarantine(&mut tail, Some(items.len() as u64), format!("document damaged: {damage}"), &red.text);
                account(&tail);
                sink.push(tail)?;
            }
        }
    }
    let t = tally.into_inner().expect("tally lock");
    report.read = t.0;
    report.ingested = t.1;
    report.quarantined = t.2;
    report.redacted = t.3;
    report.format = ctx.format_name();
    if ctx.format.is_none() && report.read > 0 {
        report.error.get_or_insert_with(|| "no record of a known format".into());
    }
    Ok((report, lines))
}

/// The format of the first recognisable line of the first chunk.
fn detect_in_lines(bytes: &[u8], formats: &Formats) -> Option<Format> {
    bytes
        .split(|&b| b == b'\n')
        .take(1000)
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find_map(|v| formats.detect(&v))
}

/// Ingest's per-line transform — redact, detect the format, parse, map or
/// quarantine — for sources that arrive as lines over time (`watch`).
pub struct LineParser {
    formats: Formats,
    forced: Option<Format>,
}

/// A followed file's format, once [`LineParser::detect`] has recognised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineFormat(Format);

/// What a run of lines became.
pub struct Parsed {
    /// Events, in line order (empty when none).
    pub events: RecordBatch,
    pub quarantine: Vec<QuarantineEntry>,
    pub exposures: Vec<ExposureRow>,
    pub read: u64,
    pub ingested: u64,
}

impl LineParser {
    pub fn new(mappings: &[PathBuf], format: Option<&str>, pricing: Option<&Path>) -> Result<LineParser, IngestError> {
        let formats = Formats::load(mappings, pricing)?;
        let forced = match format {
            Some(name) => Some(
                formats.by_name(name).ok_or_else(|| IngestError::UnknownFormat(name.to_string(), formats.names()))?,
            ),
            None => None,
        };
        Ok(LineParser { formats, forced })
    }

    /// The format of a file from its first complete lines (or the forced one).
    pub fn detect(&self, lines: &[u8]) -> Option<LineFormat> {
        self.forced.or_else(|| detect_in_lines(lines, &self.formats)).map(LineFormat)
    }

    pub fn format_name(&self, f: LineFormat) -> &str {
        self.formats.name(f.0)
    }

    /// Parses complete lines (`first_line` is the 1-based number of the first).
    /// `format` is `None` while a file's format is unknown: its lines are quarantined.
    pub fn parse(&self, format: Option<LineFormat>, file: &str, run_id: &str, chunk: &source::Chunk) -> Parsed {
        let ctx = FileCtx { formats: &self.formats, format: format.map(|f| f.0), file, run_id };
        parsed(ctx.lines(chunk))
    }

    /// Quarantines a line too long to hold, from its head.
    pub fn oversized(&self, format: Option<LineFormat>, file: &str, run_id: &str, line: u64, head: &[u8]) -> Parsed {
        let ctx = FileCtx { formats: &self.formats, format: format.map(|f| f.0), file, run_id };
        let mut out = Output::new();
        out.read += 1;
        let text = String::from_utf8_lossy(head);
        let red = secrets::redact(&text);
        let reason = format!("line longer than {} MiB", source::MAX_LINE_BYTES >> 20);
        ctx.quarantine(&mut out, Some(line), reason, &red.text);
        parsed(out)
    }
}

fn parsed(mut out: Output) -> Parsed {
    Parsed {
        events: out.events.finish(),
        quarantine: out.quarantine,
        exposures: out.exposures,
        read: out.read,
        ingested: out.ingested,
    }
}

/// Stages events, quarantined records and secret exposures into a run, the
/// way ingest does: events split by day, sorted, written as Parquet.
pub struct LakeWriter<'t>(Sink<'t>);

impl<'t> LakeWriter<'t> {
    pub fn new(txn: &'t Txn) -> Self {
        LakeWriter(Sink::new(txn))
    }

    pub fn push(
        &self,
        events: &RecordBatch,
        quarantine: &[QuarantineEntry],
        exposures: &[ExposureRow],
    ) -> Result<(), IngestError> {
        self.0.push_parts(Some(events), quarantine, &mut exposures.to_vec())
    }

    /// Writes what is buffered; returns the days that received events.
    pub fn finish(self) -> Result<Vec<String>, IngestError> {
        self.0.finish()
    }
}

//! Ingest: input files → normalised events → the lake.
//!
//! Source → transform → sink, as in a log shipper:
//!
//! - [`plan`] lists the input files (walking directories, listing
//!   `s3://bucket/prefix` objects alike), fingerprints them and decides per
//!   input: skip (already in the lake), resume (it grew) or ingest;
//!   [`source`] reads a file or a streamed object (decompressed) as chunks of
//!   whole lines or the records of a JSON document;
//! - [`transform`] redacts each record, detects its format ([`gateway`],
//!   [`cloudtrail`], a [`mapping`]), parses it into columnar builders, prices
//!   it ([`pricing`]) or quarantines it; `watch` shares it as [`LineParser`];
//! - [`sink`] hands the results to the lake's writer ([`LakeWriter`]), which
//!   partitions them by day and writes sorted Parquet files as buffers fill.
//!
//! Files are processed in parallel, and each file in parallel chunks.
//! Everything a run writes is committed at once (see [`crate::lake`]).

pub mod cloudtrail;
pub mod gateway;
pub mod mapping;
mod plan;
pub mod pricing;
mod sink;
pub mod source;
pub mod transform;

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::lake::{self, Lake, LakeError, SourceRecord};
pub use crate::lake::{LakeWriter, QuarantineEntry};
use crate::store::{Location, StoreError};
use mapping::MappingError;
pub use plan::SkippedEntry;
use plan::{Input, Plan, Resume};
use pricing::PricingError;
use source::{Chunks, Container};
use transform::{FileCtx, Format, Formats, Output, QUARANTINE_RAW_BYTES, detect_in_lines};
pub use transform::{LineFormat, LineParser, Parsed};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: no such file or directory", .0.display())]
    MissingInput(PathBuf),
    #[error("unknown format {0:?}; known: {1}")]
    UnknownFormat(String, String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Files or directories (walked recursively for log files), or
    /// `s3://bucket/prefix` (the objects under it, listed alike).
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
    /// Event times accepted; records outside are quarantined.
    pub ts_window: crate::time::TsWindow,
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
    /// The last line, when it has no newline after it and is not yet a whole
    /// record (a writer is still appending it): counted in `read`, neither
    /// ingested nor quarantined, and read again by a later run once complete.
    pub pending: u64,
    pub bytes: u64,
    /// Set when the file grew since an earlier run and only the new lines
    /// after this one were read.
    pub resumed_after_line: Option<u64>,
    pub error: Option<String>,
}

impl FileReport {
    /// A report of `input` before any of it is read.
    fn new(input: &Input, status: FileStatus) -> FileReport {
        FileReport {
            path: input.display.clone(),
            status,
            format: None,
            read: 0,
            ingested: 0,
            quarantined: 0,
            redacted: 0,
            pending: 0,
            bytes: input.size,
            resumed_after_line: None,
            error: None,
        }
    }
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
    /// Incomplete last lines left for a later run (see [`FileReport::pending`]).
    pub pending: u64,
    /// Records read but neither ingested, quarantined nor pending: always 0
    /// unless ingest has a bug, which this makes visible instead of silent.
    pub unaccounted: u64,
    /// Directory entries the walk could not take (dangling symlinks, loops,
    /// unreadable directories); everything else was ingested.
    pub skipped_entries: Vec<SkippedEntry>,
    pub bytes: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub days: Vec<String>,
    pub per_file: Vec<FileReport>,
}

impl IngestSummary {
    /// Whether anything needs a person's attention (drives the exit status).
    pub fn has_problems(&self) -> bool {
        self.quarantined > 0 || self.failed_files > 0 || self.unaccounted > 0 || !self.skipped_entries.is_empty()
    }
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
    let formats = Formats::load(&opts.mappings, opts.pricing.as_deref())?.with_ts_window(opts.ts_window);
    let forced = formats.forced(opts.format.as_deref())?;
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for input in &opts.inputs {
        match Location::parse(&input.to_string_lossy())? {
            Location::Local(path) => {
                lake::refuse_inside(&opts.lake, &path)?;
                local.push(path);
            }
            Location::Remote(r) => remote.push(r),
        }
    }
    let (mut inputs, skipped_entries) = plan::collect_inputs(&local, &opts.lake)?;
    for r in &remote {
        inputs.extend(plan::list_objects(r)?);
    }
    // The one place a file's name is cleaned: every record of it (events,
    // commits, quarantine, exposures, the summary) takes this name.
    for i in &mut inputs {
        i.display = crate::secrets::redact_path(&i.display).into_owned();
    }
    let lake = Lake::open(&opts.lake, lake::Open::Write)?;
    let txn = lake.begin()?;

    let known = plan::Known::new(txn.commits());
    let planned = plan::plan(inputs, &known);

    let mut reports: Vec<FileReport> = Vec::new();
    let mut todo: Vec<(Input, Plan)> = Vec::new();
    // Two copies of one input in the same run: the second is a skip, recorded
    // as a copy once the first is recorded as taken (see below).
    let this_run = Mutex::new(HashSet::new());
    let copies = Mutex::new(Vec::new());
    let second_copy = |input: &Input, fp: &str| {
        let second = !this_run.lock().expect("run lock").insert(fp.to_string());
        if second {
            copies.lock().expect("copies lock").push(input.copy_record(fp.to_string()));
        }
        second
    };
    let mut sources = Vec::new();
    for (input, plan) in planned {
        let report = |status, error: Option<String>| FileReport { error, ..FileReport::new(&input, status) };
        match plan {
            Plan::Skip => reports.push(report(FileStatus::Skipped, None)),
            Plan::Copy(fp) => {
                reports.push(report(FileStatus::Skipped, None));
                sources.push(input.copy_record(fp));
            }
            Plan::Ingest(fp, _) if second_copy(&input, &fp) => reports.push(report(FileStatus::Skipped, None)),
            Plan::Fail(e) => reports.push(report(FileStatus::Failed, Some(e))),
            Plan::Ingest(..) | Plan::Fetch => todo.push((input, plan)),
        }
    }

    let total_bytes: u64 = todo.iter().map(|(i, _)| i.size).sum();
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

    let writer = LakeWriter::new(&txn);
    let budget = plan::Budget::new();
    let results: Vec<Result<(FileReport, Option<SourceRecord>), IngestError>> = todo
        .into_par_iter()
        .map(|(input, plan)| {
            // An object held in memory is read once, here, and decided from those bytes.
            let fetched = matches!(plan, Plan::Fetch);
            let (input, plan) = match plan {
                Plan::Fetch => match input.fetch(&budget) {
                    Some(Ok(held)) => {
                        let plan = known.decide(&held);
                        (held, plan)
                    }
                    Some(Err(e)) => (input, Plan::Fail(format!("cannot read: {e}"))),
                    // No room now: read to decide, and again to ingest.
                    None => {
                        let plan = known.decide(&input);
                        (input, plan)
                    }
                },
                plan => (input, plan),
            };
            // Not read after all: the bar moves past it.
            let done = |status, error| {
                bar.inc(input.size);
                Ok((FileReport { error, ..FileReport::new(&input, status) }, None))
            };
            let (fp, resume) = match plan {
                Plan::Ingest(fp, resume) => (fp, resume),
                Plan::Fail(e) => return done(FileStatus::Failed, Some(e)),
                Plan::Copy(fp) => {
                    let src = input.copy_record(fp);
                    return done(FileStatus::Skipped, None).map(|(report, _)| (report, Some(src)));
                }
                Plan::Skip | Plan::Fetch => return done(FileStatus::Skipped, None),
            };
            // A fetched input meets the run's other copies only now (the others did above).
            if fetched && second_copy(&input, &fp) {
                return done(FileStatus::Skipped, None);
            }
            let (report, lines) = ingest_file(&input, resume, &formats, forced, &writer, txn.run_id(), &bar)?;
            let src = SourceRecord {
                path: input.display.clone(),
                size: input.size,
                mtime_ns: input.mtime_ns,
                fingerprint: fp,
                // A pending line is not taken yet: a later run reads it.
                read: report.read - report.pending,
                ingested: report.ingested,
                quarantined: report.quarantined,
                lines,
            };
            // A file that could not be opened is not recorded, so a rerun retries it.
            let src = (report.status != FileStatus::Failed).then_some(src);
            Ok((report, src))
        })
        .collect();
    bar.finish_and_clear();

    for r in results {
        let (report, src) = r?;
        sources.extend(src);
        reports.push(report);
    }
    // A copy is taken when its twin is: one that failed leaves both to a rerun.
    let taken: HashSet<String> = sources.iter().map(|s| s.fingerprint.clone()).collect();
    sources.extend(copies.into_inner().expect("copies lock").into_iter().filter(|c| taken.contains(&c.fingerprint)));
    let failed = sink::quarantine_failures(&writer, txn.run_id(), &reports)?;
    let days = writer.finish()?;
    let run_id = txn.run_id().to_string();
    let committed = !sources.is_empty() || failed;
    if committed {
        // Runs in small steps (hourly, a growing log) would pile up small files per day.
        lake::compact::compact(&txn, &days, lake::compact::Policy::Tiered)?;
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
        pending: sum(|r| r.pending),
        unaccounted: sum(|r| r.read.abs_diff(r.ingested + r.quarantined + r.pending)),
        skipped_entries,
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
    writer: &LakeWriter<'_>,
    run_id: &str,
    bar: &ProgressBar,
) -> Result<(FileReport, Option<u64>), IngestError> {
    let mut report =
        FileReport { resumed_after_line: resume.map(|r| r.lines), ..FileReport::new(input, FileStatus::Ingested) };
    let opened = input.open().and_then(|f| {
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
    let mut run = FileRun {
        ctx: FileCtx { formats, format: forced, file: &input.display, run_id },
        writer,
        tally: Mutex::new(Tally::default()),
    };

    let container = if resume.is_some() { Container::Lines } else { source::sniff_container(&head) };
    let lines = match container {
        Container::Lines => Some(run.lines(reader, skipped + 1, &mut report)?),
        Container::Array => {
            let mut bytes = Vec::with_capacity(input.size as usize);
            if let Err(e) = reader.read_to_end(&mut bytes) {
                report.status = FileStatus::Partial;
                report.error = Some(format!("stopped reading: {e}"));
            }
            run.document_or_lines(&bytes, &mut report)?
        }
    };
    let t = run.tally.into_inner().expect("tally lock");
    report.read = t.read;
    report.ingested = t.ingested;
    report.quarantined = t.quarantined;
    report.redacted = t.redacted;
    report.format = run.ctx.format_name();
    if run.ctx.format.is_none() && report.read > report.pending {
        report.error.get_or_insert_with(|| "no record of a known format".into());
    }
    Ok((report, lines))
}

/// Counts of what a file's records became, across its workers.
#[derive(Default)]
struct Tally {
    read: u64,
    ingested: u64,
    quarantined: u64,
    redacted: u64,
}

/// One file being read: its transform, the sink and the running counts.
struct FileRun<'r> {
    ctx: FileCtx<'r>,
    writer: &'r LakeWriter<'r>,
    tally: Mutex<Tally>,
}

impl FileRun<'_> {
    /// Counts a worker's output and hands it to the sink.
    fn push(&self, out: Output) -> Result<(), IngestError> {
        {
            let mut t = self.tally.lock().expect("tally lock");
            t.read += out.read;
            t.ingested += out.ingested;
            t.quarantined += out.quarantine.len() as u64;
            t.redacted += out.exposures.len() as u64;
        }
        sink::push(self.writer, out)
    }

    /// Reads JSON lines (from line number `first_line` on) in parallel chunks;
    /// returns the number of the last line consumed.
    fn lines<R: Read + Send>(
        &mut self,
        reader: R,
        first_line: u64,
        report: &mut FileReport,
    ) -> Result<u64, IngestError> {
        let formats = self.ctx.formats;
        let mut chunks = Chunks::new(reader, first_line);
        let first = chunks.next();
        if self.ctx.format.is_none() {
            self.ctx.format = first.as_ref().and_then(|c| detect_in_lines(&c.bytes, formats));
        }
        let this = &*self;
        first
            .into_iter()
            .chain(chunks.by_ref())
            .par_bridge()
            .try_for_each(|chunk| this.push(this.ctx.lines(&chunk)))?;
        let mut tail = Output::new();
        for o in std::mem::take(&mut chunks.oversized) {
            self.ctx.oversized(&mut tail, o.line, &o.head, Some(o.bytes));
        }
        if let Some(failure) = chunks.failure.take() {
            report.status = FileStatus::Partial;
            report.error = Some(format!("stopped reading: {}", failure.error));
            if let Some((line, bytes)) = failure.partial {
                let reason = format!("record cut off where the file ends early: {}", failure.error);
                self.ctx.quarantine_bytes(&mut tail, line, reason, &bytes, Some(bytes.len() as u64));
            }
        }
        let mut consumed = chunks.lines_consumed();
        // The last line without a newline after it. If it is a whole JSON
        // value it is taken like any line: appending cannot change a complete
        // value into another one, and a rerun skips it with the newline the
        // writer adds next, so nothing is counted twice. Otherwise the writer
        // is still at it (or gave up): it stays pending, not consumed, so a
        // later run reads it again once the file grew and it is complete.
        if let Some((line, bytes)) = chunks.unterminated.take() {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
                if self.ctx.format.is_none() {
                    self.ctx.format = detect_in_lines(&bytes, formats);
                }
                let out = self.ctx.lines(&source::Chunk { bytes, first_line: line });
                self.push(out)?;
                consumed += 1;
            } else if !bytes.iter().all(u8::is_ascii_whitespace) {
                tail.read += 1;
                report.pending += 1;
            }
        }
        self.push(tail)?;
        Ok(consumed)
    }

    /// Reads a file that starts like a JSON document (`[` or `{"Records"`):
    /// as one, unless it is damaged and its lines, each on its own, hold more
    /// records than the document walk salvaged — a JSON-lines log whose first
    /// line happens to start like a document. Returns the lines consumed when
    /// read as lines.
    fn document_or_lines(&mut self, bytes: &[u8], report: &mut FileReport) -> Result<Option<u64>, IngestError> {
        let formats = self.ctx.formats;
        let doc = String::from_utf8_lossy(bytes);
        let (items, damage) = source::array_records(&doc);
        let forced = self.ctx.format.is_some();
        if damage.is_some() && transform::records_in_lines(bytes, formats, forced, items.len()) > items.len() {
            return Ok(Some(self.lines(bytes, 1, report)?));
        }
        if self.ctx.format.is_none() {
            self.ctx.format = items
                .iter()
                .take(64)
                .find_map(|i| serde_json::from_str::<Value>(i.raw.get()).ok().and_then(|v| formats.detect(&v)));
        }
        items.par_chunks(2048).try_for_each(|group| {
            let mut out = Output::new();
            for item in group {
                self.ctx.record(item.raw.get(), item.index, &mut out);
            }
            self.push(out)
        })?;
        if let Some(damage) = damage {
            report.status = FileStatus::Partial;
            report.error.get_or_insert_with(|| format!("document damaged: {damage}"));
            let consumed: usize =
                items.last().map_or(0, |i| i.raw.get().as_ptr() as usize - doc.as_ptr() as usize + i.raw.get().len());
            let rest = &doc[consumed..];
            // Only the head is redacted and kept: the rest may be huge.
            let head = gateway::truncate(rest, QUARANTINE_RAW_BYTES);
            let mut tail = Output::new();
            let (record, reason) = (items.len() as u64, format!("document damaged: {damage}"));
            self.ctx.quarantine_bytes(&mut tail, record, reason, head.as_bytes(), Some(rest.len() as u64));
            self.push(tail)?;
        }
        Ok(None)
    }
}

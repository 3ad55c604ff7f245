//! Ingest: input files → normalised events → the lake.
//!
//! Source → transform → sink, as in a log shipper:
//!
//! - [`plan`] lists the input files (walking directories), fingerprints them
//!   and decides per file: skip (already in the lake), resume (it grew) or
//!   ingest; [`source`] reads a file (decompressed) as chunks of whole lines
//!   or the records of a JSON document;
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
use std::fs::File;
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
use crate::secrets;
use mapping::MappingError;
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
    for input in &opts.inputs {
        lake::refuse_inside(&opts.lake, input)?;
    }
    let mut inputs = plan::collect_inputs(&opts.inputs, &opts.lake)?;
    // The one place a file's name is cleaned: every record of it (events,
    // commits, quarantine, exposures, the summary) takes this name.
    for i in &mut inputs {
        i.display = secrets::redact_path(&i.display).into_owned();
    }
    let lake = Lake::open(&opts.lake)?;
    let txn = lake.begin()?;

    let planned = plan::plan(inputs, &lake.commits()?);

    let mut reports: Vec<FileReport> = Vec::new();
    let mut todo: Vec<(Input, String, Option<Resume>)> = Vec::new();
    let mut this_run = HashSet::new();
    for (input, plan) in planned {
        let report = |status, error: Option<String>| FileReport { error, ..FileReport::new(&input, status) };
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

    let writer = LakeWriter::new(&txn);
    let results: Vec<Result<(FileReport, SourceRecord), IngestError>> = todo
        .par_iter()
        .map(|(input, fp, resume)| {
            let (report, lines) = ingest_file(input, *resume, &formats, forced, &writer, txn.run_id(), &bar)?;
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
    let failed = sink::quarantine_failures(&writer, txn.run_id(), &reports)?;
    let days = writer.finish()?;
    let run_id = txn.run_id().to_string();
    let committed = !sources.is_empty() || failed;
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
    writer: &LakeWriter<'_>,
    run_id: &str,
    bar: &ProgressBar,
) -> Result<(FileReport, Option<u64>), IngestError> {
    let mut report =
        FileReport { resumed_after_line: resume.map(|r| r.lines), ..FileReport::new(input, FileStatus::Ingested) };
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
                    sink::push(writer, out)
                });
            result?;
            let mut tail = Output::new();
            for (line, head) in std::mem::take(&mut chunks.oversized) {
                ctx.oversized(&mut tail, line, &head);
            }
            if let Some(failure) = chunks.failure.take() {
                report.status = FileStatus::Partial;
                report.error = Some(format!("stopped reading: {}", failure.error));
                if let Some((line, bytes)) = failure.partial {
                    let reason = format!("record cut off where the file ends early: {}", failure.error);
                    ctx.quarantine_bytes(&mut tail, line, reason, &bytes);
                }
            }
            account(&tail);
            sink::push(writer, tail)?;
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
                sink::push(writer, out)
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
                sink::push(writer, tail)?;
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
